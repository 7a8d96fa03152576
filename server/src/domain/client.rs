//! Network client rules: source addresses and the Message-Authenticator mode.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// How a network client must use Message-Authenticator (RFC 3579), the BlastRADIUS defence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageAuthenticatorMode {
    /// Requests without one are dropped.
    Require,
    /// Required from the first request that carries one (remembered in the database).
    Auto,
    /// Checked when present, never required.
    Off,
}

impl MessageAuthenticatorMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Require => "require",
            Self::Auto => "auto",
            Self::Off => "off",
        }
    }
}

impl FromStr for MessageAuthenticatorMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "require" => Ok(Self::Require),
            "auto" => Ok(Self::Auto),
            "off" => Ok(Self::Off),
            _ => Err(format!("unknown Message-Authenticator mode {s:?}: use require, auto or off")),
        }
    }
}

impl fmt::Display for MessageAuthenticatorMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client's source: one address or a CIDR block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(IpNet);

impl ClientAddress {
    /// Parses `10.0.0.5`, `10.0.0.0/24` or an IPv6 form; host bits in a CIDR are refused.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self(IpNet::from(ip)));
        }
        let net: IpNet = s.parse().map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        if net.trunc() != net {
            return Err(format!("{s:?} has host bits set; did you mean {}?", net.trunc()));
        }
        Ok(Self(net))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical(ip))
    }

    /// Longer prefixes are more specific and win when several clients match.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) compare as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_blocks_parse_and_match() {
        let one = ClientAddress::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(one.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert_eq!(one.to_string(), "127.0.0.1");
        let block = ClientAddress::parse("10.1.0.0/16").unwrap();
        assert!(block.contains("10.1.200.3".parse().unwrap()));
        assert!(!block.contains("10.2.0.1".parse().unwrap()));
        assert_eq!(block.prefix_len(), 16);
        assert!(ClientAddress::parse("::1").is_ok());
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in ["", "localhost", "10.0.0.1/33", "10.0.0.1/24", "1.2.3"] {
            assert!(ClientAddress::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn modes_parse() {
        assert_eq!("auto".parse::<MessageAuthenticatorMode>().unwrap(), MessageAuthenticatorMode::Auto);
        assert!("yes".parse::<MessageAuthenticatorMode>().is_err());
    }
}
