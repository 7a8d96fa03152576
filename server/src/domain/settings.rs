//! A domain's settings and their allowed ranges.

/// Per-domain settings, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainSettings {
    pub passcode_lifetime_secs: u32,
    pub pin_min_length: u32,
    pub passcode_length: u32,
    pub max_pin_failures: u32,
    pub registration_ttl_secs: u32,
}

impl Default for DomainSettings {
    fn default() -> Self {
        Self {
            passcode_lifetime_secs: 60,
            pin_min_length: 6,
            passcode_length: 6,
            max_pin_failures: 5,
            registration_ttl_secs: 24 * 3600,
        }
    }
}

impl DomainSettings {
    /// Checks every setting against its range; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        check("passcode lifetime (seconds)", self.passcode_lifetime_secs, 1, 3600)?;
        // A PIN shorter than 4 is guessable even with lockout.
        check("minimum PIN length", self.pin_min_length, 4, 64)?;
        check("passcode length", self.passcode_length, 4, 12)?;
        check("wrong-PIN limit", self.max_pin_failures, 1, 100)?;
        check("registration lifetime (seconds)", self.registration_ttl_secs, 60, 30 * 24 * 3600)?;
        Ok(())
    }
}

fn check(what: &str, value: u32, min: u32, max: u32) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!("{what} must be between {min} and {max}, not {value}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ranges_are_enforced() {
        assert!(DomainSettings::default().validate().is_ok());
        let bad = [
            DomainSettings { pin_min_length: 3, ..Default::default() },
            DomainSettings { passcode_length: 3, ..Default::default() },
            DomainSettings { passcode_length: 13, ..Default::default() },
            DomainSettings { passcode_lifetime_secs: 0, ..Default::default() },
            DomainSettings { max_pin_failures: 0, ..Default::default() },
        ];
        for s in bad {
            assert!(s.validate().is_err(), "{s:?}");
        }
    }
}
