//! `remove`: forgets a domain and its device key.

use super::{Store, pick};

/// Forget a domain: deletes its device key from the keystore.
///
/// The server keeps the device until your administrator deletes it; after this the token
/// can register with the domain again.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The domain code to forget.
    #[arg(value_name = "CODE")]
    pub code: String,
}

pub fn run(store: &Store, args: Args) -> anyhow::Result<()> {
    let (contents, passphrase) = store.open()?;
    let domain = pick(&contents, Some(&args.code))?;
    let (code, name) = (domain.code.clone(), domain.name.clone());
    store.update(&passphrase, |contents| {
        contents.domains.retain(|d| d.code != code);
        Ok(())
    })?;
    eprintln!("Removed domain {code} ({name}) and its device key from the keystore.");
    Ok(())
}
