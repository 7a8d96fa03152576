//! One-time passcodes: drawn from the OS random generator, stored only as a keyed hash.

use hmac::{Hmac, KeyInit, Mac};
use rand::RngExt;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A fresh passcode of `len` decimal digits, each uniform, straight from the OS generator.
pub fn generate(len: u32) -> Zeroizing<String> {
    let mut rng = UnwrapErr(SysRng);
    let mut code = Zeroizing::new(String::with_capacity(len as usize));
    for _ in 0..len {
        let digit: u8 = rng.random_range(0..10);
        code.push(char::from(b'0' + digit));
    }
    code
}

/// The server secret under which passcodes are hashed (HMAC-SHA-256). A database dump alone
/// gives no passcode, and a hash is useless for another user.
#[derive(Clone)]
pub struct PasscodeKey(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for PasscodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasscodeKey(<redacted>)")
    }
}

impl PasscodeKey {
    pub fn new(secret: Vec<u8>) -> Self {
        Self(Zeroizing::new(secret))
    }

    /// The keyed hash of `passcode` for the user with database id `user_id`.
    pub fn hash(&self, user_id: i64, passcode: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"tessera/v1/passcode\0");
        mac.update(&user_id.to_be_bytes());
        mac.update(passcode.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// Constant-time equality of two stored hashes.
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passcodes_have_the_requested_length_and_only_digits() {
        for len in [4, 6, 8, 12] {
            let p = generate(len);
            assert_eq!(p.len(), len as usize);
            assert!(p.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn passcodes_are_not_repeated() {
        let a: Vec<_> = (0..50).map(|_| generate(12).to_string()).collect();
        let mut b = a.clone();
        b.sort();
        b.dedup();
        assert_eq!(a.len(), b.len());
    }

    #[test]
    fn every_digit_appears() {
        let mut seen = [false; 10];
        for _ in 0..200 {
            for b in generate(6).bytes() {
                seen[(b - b'0') as usize] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn hashes_depend_on_key_user_and_passcode() {
        let k = PasscodeKey::new(vec![1; 32]);
        let h = k.hash(7, "123456");
        assert!(hashes_equal(&h, &k.hash(7, "123456")));
        assert!(!hashes_equal(&h, &k.hash(8, "123456")));
        assert!(!hashes_equal(&h, &k.hash(7, "123457")));
        assert!(!hashes_equal(&h, &PasscodeKey::new(vec![2; 32]).hash(7, "123456")));
        assert!(!hashes_equal(&h, &h[..31]));
    }

    #[test]
    fn the_key_is_not_printed() {
        assert_eq!(format!("{:?}", PasscodeKey::new(vec![9; 32])), "PasscodeKey(<redacted>)");
    }
}
