//! PIN hashing with argon2id. Callers run these on a blocking thread: each costs ~16 ms.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};

/// Hashes a PIN to a PHC string (argon2id, default parameters, random salt).
pub fn hash(pin: &str) -> anyhow::Result<String> {
    let hash =
        Argon2::default().hash_password(pin.as_bytes()).map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))?;
    Ok(hash.to_string())
}

/// True when `pin` matches the stored PHC string; a corrupt hash never matches.
pub fn verify(pin: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default().verify_password(pin.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
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
    fn pin_policy() {
        assert!(check_policy("123456", 6).is_ok());
        assert!(check_policy("12345", 6).is_err());
        assert!(check_policy(&"1".repeat(65), 6).is_err());
        assert!(check_policy("12345\n", 4).is_err());
    }
}
