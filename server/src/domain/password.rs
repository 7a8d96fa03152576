//! Administrator passwords: policy and argon2id hashing. Callers run hashing and verifying on
//! a blocking thread (each costs ~16 ms).

use std::sync::LazyLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};

/// Shortest password accepted for an administrator.
pub const MIN_LENGTH: usize = 12;

/// Checks a new administrator password.
pub fn check_policy(password: &str) -> Result<(), String> {
    let len = password.chars().count();
    if len < MIN_LENGTH {
        return Err(format!("the password must have at least {MIN_LENGTH} characters"));
    }
    if len > 256 {
        return Err("the password must have at most 256 characters".into());
    }
    if password.chars().any(char::is_control) {
        return Err("the password cannot contain control characters".into());
    }
    Ok(())
}

/// Hashes a password to a PHC string (argon2id, default parameters, random salt).
pub fn hash(password: &str) -> anyhow::Result<String> {
    let hash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))?;
    Ok(hash.to_string())
}

/// A hash of no one's password, verified against when the name is unknown so that an unknown
/// administrator costs the same work as a wrong password (no timing oracle).
static DUMMY: LazyLock<String> = LazyLock::new(|| hash("dummy password that matches nothing").unwrap_or_default());

/// Verifies `password` against `stored`, or against a dummy hash when there is no account;
/// false in the second case whatever the password.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    let (hash, real) = match stored {
        Some(h) => (h, true),
        None => (DUMMY.as_str(), false),
    };
    let ok = match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    };
    ok && real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_password_verifies_and_others_do_not() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", Some(&h)));
        assert!(!verify("correct horse batterx", Some(&h)));
        assert!(!verify("correct horse battery", None));
        assert!(!verify("correct horse battery", Some("not a hash")));
    }

    #[test]
    fn password_policy() {
        assert!(check_policy("twelve chars").is_ok());
        assert!(check_policy("eleven char").is_err());
        assert!(check_policy(&"x".repeat(257)).is_err());
        assert!(check_policy("twelve chars\n").is_err());
    }
}
