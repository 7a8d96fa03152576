//! Settings in layers: built-in defaults, then the TOML file (`--config`), then environment
//! variables and flags (clap reads `TESSERA_*` for the flags that have one). Unknown keys in
//! the file are an error, so a typo cannot silently fall back to a default.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

pub const DEFAULT_DATABASE: &str = "sqlite://tessera.db";
pub const DEFAULT_RADIUS_LISTEN: &str = "0.0.0.0:1812";
pub const DEFAULT_TOKEN_LISTEN: &str = "0.0.0.0:8388";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8080";

/// The TOML file; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub database: Option<String>,
    pub radius_listen: Option<SocketAddr>,
    pub token_listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
}

impl FileConfig {
    /// Reads the file, or the empty configuration when no file is given.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else { return Ok(Self::default()) };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read configuration {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid configuration in {}", path.display()))
    }
}

/// Where `serve` listens.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub radius_listen: SocketAddr,
    pub token_listen: SocketAddr,
    pub admin_listen: SocketAddr,
}

/// Picks the flag, else the file, else the default.
pub fn layer(flag: Option<SocketAddr>, file: Option<SocketAddr>, default: &str) -> SocketAddr {
    flag.or(file).unwrap_or_else(|| default.parse().expect("default addresses parse"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_and_known_ones_read() {
        let ok: FileConfig = toml::from_str("radius_listen = \"127.0.0.1:1\"").unwrap();
        assert_eq!(ok.radius_listen, Some("127.0.0.1:1".parse().unwrap()));
        assert!(toml::from_str::<FileConfig>("radius_lisen = \"127.0.0.1:1\"").is_err());
    }

    #[test]
    fn flags_win_over_the_file() {
        let flag: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let file: SocketAddr = "127.0.0.1:3".parse().unwrap();
        assert_eq!(layer(Some(flag), Some(file), DEFAULT_RADIUS_LISTEN), flag);
        assert_eq!(layer(None, Some(file), DEFAULT_RADIUS_LISTEN), file);
        assert_eq!(layer(None, None, DEFAULT_RADIUS_LISTEN).port(), 1812);
    }
}
