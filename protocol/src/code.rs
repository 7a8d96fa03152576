//! The 12-digit domain code: the token API's IPv4 address, each octet zero-padded to three
//! digits (`127.0.0.1` is `127000000001`), as WiKID defined it.

use std::fmt;
use std::net::Ipv4Addr;

/// A validated domain code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DomainCode([u8; 4]);

/// Why a string is not a domain code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DomainCodeError {
    #[error("a domain code is exactly 12 digits (for example 127000000001)")]
    Shape,
    #[error("each 3-digit group of a domain code is an IPv4 octet (000-255)")]
    Octet,
}

impl DomainCode {
    /// Parses `"127000000001"`; surrounding whitespace is ignored.
    pub fn parse(s: &str) -> Result<Self, DomainCodeError> {
        let s = s.trim();
        if s.len() != 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DomainCodeError::Shape);
        }
        let mut octets = [0u8; 4];
        for (i, octet) in octets.iter_mut().enumerate() {
            let group: u16 = s[i * 3..i * 3 + 3].parse().map_err(|_| DomainCodeError::Shape)?;
            *octet = u8::try_from(group).map_err(|_| DomainCodeError::Octet)?;
        }
        Ok(Self(octets))
    }

    /// The code for the token API at `addr`.
    pub fn from_ipv4(addr: Ipv4Addr) -> Self {
        Self(addr.octets())
    }

    /// The IPv4 address the code stands for.
    pub fn ipv4(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.0)
    }

    /// The token API URL a token uses when no `--server` is given.
    pub fn default_server_url(&self) -> String {
        format!("http://{}:8388", self.ipv4())
    }
}

impl fmt::Display for DomainCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a:03}{b:03}{c:03}{d:03}")
    }
}

impl std::str::FromStr for DomainCode {
    type Err = DomainCodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_codes_round_trip() {
        for (code, ip) in [
            ("127000000001", "127.0.0.1"),
            ("192168001010", "192.168.1.10"),
            ("000000000000", "0.0.0.0"),
            ("255255255255", "255.255.255.255"),
        ] {
            let parsed = DomainCode::parse(code).unwrap();
            assert_eq!(parsed.ipv4().to_string(), ip);
            assert_eq!(parsed.to_string(), code);
            assert_eq!(DomainCode::from_ipv4(ip.parse().unwrap()), parsed);
        }
    }

    #[test]
    fn malformed_codes_are_refused() {
        for (bad, err) in [
            ("", DomainCodeError::Shape),
            ("12700000001", DomainCodeError::Shape),
            ("1270000000011", DomainCodeError::Shape),
            ("12700000000a", DomainCodeError::Shape),
            ("+27000000001", DomainCodeError::Shape),
            ("256000000001", DomainCodeError::Octet),
            ("127000000999", DomainCodeError::Octet),
        ] {
            assert_eq!(DomainCode::parse(bad), Err(err), "{bad:?}");
        }
    }

    #[test]
    fn default_url_uses_the_token_api_port() {
        let code = DomainCode::parse("192168001010").unwrap();
        assert_eq!(code.default_server_url(), "http://192.168.1.10:8388");
    }
}
