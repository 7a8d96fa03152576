//! `list`: the domains in the keystore, one per line on stdout.

use super::{Store, print_result};

/// List the domains this token is registered with.
///
/// One line per domain: code, name, server URL and the pinned server key fingerprint
/// (compare it with what your administrator sees in `tessera-server domain list`).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(store: &Store, _args: Args) -> anyhow::Result<()> {
    let (contents, _passphrase) = store.open()?;
    if contents.domains.is_empty() {
        eprintln!("The keystore holds no domain; run `tessera-token add-domain CODE` to add one.");
    }
    for d in &contents.domains {
        print_result(&format!("{}  {}  {}  fingerprint {}", d.code, d.name, d.server_url, d.fingerprint))?;
    }
    Ok(())
}
