//! `passcode`: asks the server for a one-time passcode and prints it.
//!
//! The PIN is checked by the server, never on the device, so a stolen keystore without the
//! PIN yields nothing and PIN guessing is online only (and locks the device).

use anyhow::anyhow;
use tessera_protocol::device::DeviceKey;
use tessera_protocol::envelope::Purpose;
use tessera_protocol::request::seal_signed;
use tessera_protocol::wire::{Passcode, PasscodeBody, paths, unb64};
use tessera_protocol::{DomainCode, envelope::KEY_LEN};
use zeroize::{Zeroize as _, Zeroizing};

use super::{Store, pick, print_result, read_pin, request_nonce, unix_now};
use crate::client::Client;
use crate::keystore::Domain;

/// Get a one-time passcode.
///
/// Asks for your PIN and prints the passcode alone on stdout. Type it where you are asked for
/// a password; it is valid once, for a short time.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The domain code; may be left out when the keystore holds one domain.
    #[arg(value_name = "CODE")]
    pub code: Option<String>,
    /// Read the PIN as one line of standard input instead of asking on the terminal.
    #[arg(long)]
    pub pin_stdin: bool,
}

pub fn run(store: &Store, args: Args) -> anyhow::Result<()> {
    let (contents, _passphrase) = store.open()?;
    let domain = pick(&contents, args.code.as_deref())?;
    let (code, server_key, key) = load_domain(store, domain)?;
    let pin = read_pin(args.pin_stdin, &format!("PIN for {}: ", domain.name), false)?;
    let mut body = PasscodeBody {
        device_id: domain.device_id.clone(),
        pin: pin.to_string(),
        timestamp: unix_now(),
        nonce: request_nonce(),
    };
    let json = serde_json::to_string(&body).map(Zeroizing::new);
    body.pin.zeroize();
    let (sealed, response_key) = seal_signed(Purpose::Passcode, code, &server_key, &json?, &key)
        .map_err(|_| anyhow!("cannot seal the request to the server key"))?;
    let client = Client::new(&domain.server_url);
    let passcode: Passcode = client.post_sealed(paths::PASSCODE, &sealed, &response_key)?;
    print_result(&passcode.passcode)?;
    eprintln!("valid for {} seconds", passcode.expires_in_secs);
    Ok(())
}

/// The domain code, pinned server key and device key of a keystore entry.
fn load_domain(store: &Store, domain: &Domain) -> anyhow::Result<(DomainCode, [u8; KEY_LEN], DeviceKey)> {
    let code = DomainCode::parse(&domain.code).map_err(|e| store.corrupt(format!("bad domain code: {e}")))?;
    let server_key = unb64(&domain.server_public_key)
        .ok()
        .and_then(|k| <[u8; KEY_LEN]>::try_from(k).ok())
        .ok_or_else(|| store.corrupt(format!("the server key of {code} is malformed")))?;
    let der = Zeroizing::new(
        unb64(&domain.private_key).map_err(|_| store.corrupt(format!("the device key of {code} is malformed")))?,
    );
    let key = DeviceKey::from_pkcs8_der(&der).map_err(|e| store.corrupt(format!("device key of {code}: {e}")))?;
    Ok((code, server_key, key))
}
