//! `add-domain`: registers this token with a domain and prints the registration code.
//!
//! Trust on first use: the server key fetched here is pinned in the keystore, and the
//! registration code is derived from that key, so a token handed a substituted key prints a
//! code the real server will never validate.

use anyhow::{Context as _, anyhow, bail};
use tessera_protocol::DomainCode;
use tessera_protocol::device::{self, DeviceKey};
use tessera_protocol::envelope::{KEY_LEN, Purpose};
use tessera_protocol::request::seal_signed;
use tessera_protocol::wire::{DomainInfo, RegisterBody, Registered, b64, paths, unb64};
use zeroize::{Zeroize as _, Zeroizing};

use super::{Secret, Store, parse_code, print_result, read_pin, request_nonce, unix_now};
use crate::client::Client;
use crate::keystore::Domain;

/// Register this token with a domain.
///
/// Fetches the domain's public key and settings, shows the server key's fingerprint, asks
/// for a new PIN (twice), generates a device key and registers it. Prints the registration
/// code alone on stdout: read it out to your administrator, who binds it to your username.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The 12-digit domain code from your administrator, e.g. 127000000001.
    #[arg(value_name = "CODE")]
    pub code: String,
    /// Token API URL, instead of the address the domain code stands for (port 8388),
    /// e.g. http://127.0.0.1:40123.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// One-time enrollment code from your administrator: the registration is then
    /// validated at once.
    #[arg(long, value_name = "EC")]
    pub enrollment_code: Option<String>,
    /// Read the new PIN as one line of standard input instead of asking on the terminal.
    #[arg(long)]
    pub pin_stdin: bool,
}

pub fn run(store: &Store, args: Args) -> anyhow::Result<()> {
    let code = parse_code(&args.code)?;
    let server = args.server.unwrap_or_else(|| code.default_server_url()).trim_end_matches('/').to_owned();
    let (contents, passphrase) = store.open_or_new()?;
    if contents.find(&code.to_string()).is_some() {
        bail!("already registered with domain {code}; `tessera-token remove {code}` first");
    }
    let client = Client::new(&server);
    let info = client.domain_info(code)?;
    let server_key = check_domain_info(code, &info)?;
    eprintln!("Domain: {} ({})", info.name, info.device_name);
    eprintln!("Server key fingerprint: {}", info.fingerprint);
    let pin = new_pin(args.pin_stdin, &info)?;

    eprintln!("Generating device key…");
    let key = DeviceKey::generate();
    let request = Registration { client: &client, code, server_key: &server_key, key: &key };
    let (registered, device_id) = request.send(&pin, args.enrollment_code)?;
    let server_nonce = unb64(&registered.server_nonce).context("the server's nonce is not valid base64")?;
    let registration_code = device::registration_code(&server_key, &device_id, &server_nonce);

    // Saved only now: a failed registration leaves no half-registered domain behind.
    let domain = Domain {
        code: code.to_string(),
        name: info.name.clone(),
        device_name: info.device_name,
        server_url: server,
        server_public_key: b64(&server_key),
        fingerprint: info.fingerprint,
        device_id,
        private_key: b64(&key.to_pkcs8_der()),
        registered_at: u64::try_from(unix_now()).unwrap_or_default(),
    };
    store.update(&passphrase, |contents| {
        if contents.find(&domain.code).is_some() {
            bail!(
                "another tessera-token registered with domain {code} meanwhile; this registration is not kept \
                 (ask your administrator to delete its device if it was validated)"
            );
        }
        contents.domains.push(domain);
        Ok(())
    })?;
    print_result(&registration_code)?;
    match registered.validated_username {
        Some(user) => eprintln!("Registered with {} and validated automatically as {user}.", info.name),
        None => eprintln!(
            "Registered with {}. Give this registration code to your administrator: it expires in {}.",
            info.name,
            duration_words(registered.expires_in_secs)
        ),
    }
    Ok(())
}

/// A new PIN, checked against the domain's minimum length before anything is sent.
fn new_pin(from_stdin: bool, info: &DomainInfo) -> anyhow::Result<Secret> {
    let prompt = format!("New PIN for {} (at least {} characters): ", info.name, info.pin_min_length);
    let pin = read_pin(from_stdin, &prompt, true)?;
    if pin.chars().count() < usize::try_from(info.pin_min_length).unwrap_or(usize::MAX) {
        bail!("the PIN must be at least {} characters long", info.pin_min_length);
    }
    Ok(pin)
}

/// One registration request: what it is sealed to and signed with.
struct Registration<'a> {
    client: &'a Client,
    code: DomainCode,
    server_key: &'a [u8; KEY_LEN],
    key: &'a DeviceKey,
}

impl Registration<'_> {
    /// Sends the sealed registration; returns the server's answer and this device's id,
    /// which the answer must be about.
    fn send(&self, pin: &str, enrollment_code: Option<String>) -> anyhow::Result<(Registered, String)> {
        let public_der = self.key.public_key_der();
        let body = RegisterBody {
            device_public_key: b64(&public_der),
            pin: pin.to_owned(),
            timestamp: unix_now(),
            nonce: request_nonce(),
            enrollment_code,
        };
        let body = to_json_wiping_pin(body)?;
        let (sealed, response_key) = seal_signed(Purpose::Register, self.code, self.server_key, &body, self.key)
            .map_err(|_| anyhow!("cannot seal the registration to the server key"))?;
        let registered: Registered = self.client.post_sealed(paths::REGISTER, &sealed, &response_key)?;
        let device_id = device::device_id(&public_der);
        if registered.device_id != device_id {
            bail!("the server registered another device id than this device's; nothing was saved");
        }
        Ok((registered, device_id))
    }
}

/// Checks that the answer is for the domain asked about and that its fingerprint matches
/// its key; returns the key.
fn check_domain_info(code: DomainCode, info: &DomainInfo) -> anyhow::Result<[u8; KEY_LEN]> {
    if info.code != code.to_string() {
        bail!("the server answered for domain {} instead of {code}", info.code);
    }
    let key: [u8; KEY_LEN] = unb64(&info.public_key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| anyhow!("the server's public key for {code} is malformed"))?;
    if device::fingerprint(&key) != info.fingerprint {
        bail!("the server's key for {code} does not match the fingerprint it announced");
    }
    Ok(key)
}

/// The body as JSON; the PIN's copies in the body are wiped before returning.
fn to_json_wiping_pin(mut body: RegisterBody) -> anyhow::Result<Zeroizing<String>> {
    let json = serde_json::to_string(&body).map(Zeroizing::new);
    body.pin.zeroize();
    Ok(json?)
}

/// `86400` → "24 hours", `5400` → "90 minutes".
fn duration_words(secs: u64) -> String {
    let plural = |n: u64, unit: &str| if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") };
    if secs >= 3600 && secs.is_multiple_of(3600) {
        plural(secs / 3600, "hour")
    } else if secs >= 60 && secs.is_multiple_of(60) {
        plural(secs / 60, "minute")
    } else {
        plural(secs, "second")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_reads_naturally() {
        assert_eq!(duration_words(86_400), "24 hours");
        assert_eq!(duration_words(3_600), "1 hour");
        assert_eq!(duration_words(5_400), "90 minutes");
        assert_eq!(duration_words(59), "59 seconds");
    }

    #[test]
    fn domain_info_must_match_its_fingerprint_and_code() {
        let code = DomainCode::parse("127000000001").unwrap();
        let key = [9u8; KEY_LEN];
        let mut info = DomainInfo {
            code: code.to_string(),
            name: "Example".into(),
            device_name: "example.com".into(),
            public_key: b64(&key),
            fingerprint: device::fingerprint(&key),
            pin_min_length: 6,
            passcode_length: 6,
            passcode_lifetime_secs: 60,
        };
        assert_eq!(check_domain_info(code, &info).unwrap(), key);
        info.fingerprint = device::fingerprint(&[8u8; KEY_LEN]);
        assert!(check_domain_info(code, &info).is_err());
        info.fingerprint = device::fingerprint(&key);
        info.public_key = b64(&[9u8; 31]);
        assert!(check_domain_info(code, &info).is_err());
        info.public_key = b64(&key);
        info.code = "127000000002".into();
        assert!(check_domain_info(code, &info).is_err());
    }
}
