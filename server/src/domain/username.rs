//! Usernames as RADIUS clients send them and administrators type them.

use std::fmt;

/// A username: 1 to 64 characters, no control characters, no surrounding whitespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    /// Parses a username; the message says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("a username cannot be empty".into());
        }
        if s.chars().count() > 64 {
            return Err("a username has at most 64 characters".into());
        }
        if s.trim() != s {
            return Err("a username cannot start or end with whitespace".into());
        }
        if s.chars().any(char::is_control) {
            return Err("a username cannot contain control characters".into());
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_checked() {
        for ok in ["alice", "bob.smith@example.com", "Ünïcødé", &"x".repeat(64)] {
            assert!(Username::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", " alice", "alice ", "al\u{0}ice", "a\nb", &"x".repeat(65)] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
    }
}
