//! PIN hashing with argon2id. Callers run these on a blocking thread: each costs ~16 ms.

use argon2::password_hash::phc::PasswordHash;
use std::sync::Mutex;

use argon2::{Algorithm, Argon2, Block, Params, PasswordHasher, Version};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

/// Hashes a PIN to a PHC string (argon2id, default parameters, random salt).
pub fn hash(pin: &str) -> anyhow::Result<String> {
    let hash =
        Argon2::default().hash_password(pin.as_bytes()).map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))?;
    Ok(hash.to_string())
}

/// True when `pin` matches the stored PHC string; a corrupt hash never matches. The
/// comparison is in constant time.
///
/// argon2's own `verify_password` allocates its 19 MiB of blocks zeroed for every call, and
/// on the server's blocking pool that memory went back to the kernel and was faulted in
/// again each time: about 10 % of issuance CPU. Here the blocks come from [`MEMORY`], a few
/// buffers kept for reuse (argon2 overwrites every block before reading it).
pub fn verify(pin: &str, stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else { return false };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else { return false };
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(parsed.algorithm.as_str()), Params::try_from(&parsed))
    else {
        return false;
    };
    let Ok(version) = Version::try_from(parsed.version.unwrap_or(Version::V0x13 as u32)) else { return false };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    let mut blocks = MEMORY.take(params.block_count());
    let done = argon2.hash_password_into_with_memory(pin.as_bytes(), salt, &mut out, blocks.as_mut_slice()).is_ok();
    MEMORY.give_back(blocks);
    done && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

/// argon2 working memory kept between verifies: at most [`KEPT_BUFFERS`] buffers (19 MiB
/// each with the default parameters), one per concurrent verify.
static MEMORY: BlockPool = BlockPool(Mutex::new(Vec::new()));
const KEPT_BUFFERS: usize = 8;

struct BlockPool(Mutex<Vec<Vec<Block>>>);

impl BlockPool {
    fn take(&self, blocks: usize) -> Vec<Block> {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match kept {
            Some(mut buffer) => {
                buffer.resize(blocks, Block::default());
                buffer
            }
            None => vec![Block::default(); blocks],
        }
    }

    fn give_back(&self, buffer: Vec<Block>) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < KEPT_BUFFERS {
            kept.push(buffer);
        }
    }
}

/// Checks a new PIN against the domain's policy.
pub fn check_policy(pin: &str, min_len: u32) -> Result<(), String> {
    let len = pin.chars().count();
    if len < min_len as usize {
        return Err(format!("the PIN must have at least {min_len} characters"));
    }
    if len > 64 {
        return Err("the PIN must have at most 64 characters".into());
    }
    if pin.chars().any(char::is_control) {
        return Err("the PIN cannot contain control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_pin_verifies_and_others_do_not() {
        let h = hash("246810").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("246810", &h));
        assert!(!verify("246811", &h));
        assert!(!verify("246810", "not a hash"));
    }

    #[test]
    fn verifies_agree_with_argon2s_own_and_reuse_memory_safely() {
        use argon2::PasswordVerifier as _;
        let a = hash("111111").unwrap();
        let b = hash("222222").unwrap();
        // Alternating hashes through the same kept buffers: no state leaks from one to the next.
        for _ in 0..3 {
            assert!(verify("111111", &a) && verify("222222", &b));
            assert!(!verify("222222", &a) && !verify("111111", &b));
        }
        let parsed = PasswordHash::new(&a).unwrap();
        assert!(Argon2::default().verify_password(b"111111", &parsed).is_ok());
        // Other parameters than the defaults are honoured, as stored in the hash.
        let params = Params::new(64, 1, 1, None).unwrap();
        let light = Argon2::new(Algorithm::Argon2id, Version::V0x13, params).hash_password(b"333333").unwrap();
        let light = light.to_string();
        assert!(light.contains("m=64,t=1,p=1"), "{light}");
        assert!(verify("333333", &light) && !verify("333334", &light));
        assert!(verify("111111", &a), "the default-size buffer still works after a small one");
    }

    #[test]
    fn pin_policy() {
        assert!(check_policy("123456", 6).is_ok());
        assert!(check_policy("12345", 6).is_err());
        assert!(check_policy(&"1".repeat(65), 6).is_err());
        assert!(check_policy("12345\n", 4).is_err());
    }
}
