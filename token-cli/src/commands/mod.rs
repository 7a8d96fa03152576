//! The subcommands, one module each, and what they share: the keystore and its passphrase,
//! reading a PIN, picking a domain and printing a result.

pub mod add_domain;
pub mod list;
pub mod passcode;
pub mod remove;

use std::io::{self, BufRead, Write as _};
use std::path::PathBuf;

use anyhow::{anyhow, bail};
use rand::Rng as _;
use tessera_protocol::DomainCode;
use tessera_protocol::wire::b64;
use zeroize::Zeroizing;

use crate::keystore::{self, Contents, Domain, KdfCost, OpenError};

/// The environment variable that supplies the keystore passphrase non-interactively.
pub const PASSPHRASE_ENV: &str = "TESSERA_TOKEN_PASSPHRASE";

/// A passphrase or PIN, wiped from memory when dropped.
pub type Secret = Zeroizing<String>;

/// The keystore file the commands work on.
pub struct Store {
    pub path: PathBuf,
}

impl Store {
    /// Opens an existing keystore; a missing one is an error that says how to create it.
    pub fn open(&self) -> anyhow::Result<(Contents, Secret)> {
        if !self.path.exists() {
            return Err(OpenError::Missing(self.path.clone()).into());
        }
        let passphrase = passphrase(false, self)?;
        Ok((keystore::open(&self.path, &passphrase)?, passphrase))
    }

    /// Opens the keystore, or starts an empty one (written on the first save) with a new
    /// passphrase when there is none yet.
    pub fn open_or_new(&self) -> anyhow::Result<(Contents, Secret)> {
        if self.path.exists() {
            return self.open();
        }
        Ok((Contents::default(), passphrase(true, self)?))
    }

    /// Applies `change` to the keystore as it is on disk now (empty if there is none yet) and
    /// saves it, under the keystore's lock ([`keystore::lock`]): what another token wrote
    /// since this one opened the keystore is kept, not overwritten.
    pub fn update(
        &self,
        passphrase: &str,
        change: impl FnOnce(&mut Contents) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let _lock = keystore::lock(&self.path)?;
        let mut contents = match keystore::open(&self.path, passphrase) {
            Ok(contents) => contents,
            Err(OpenError::Missing(_)) => Contents::default(),
            Err(e) => return Err(e.into()),
        };
        change(&mut contents)?;
        keystore::save(&self.path, passphrase, &contents, KdfCost::PRODUCTION)
    }

    /// An error for a keystore entry that decrypted but does not make sense.
    pub fn corrupt(&self, why: impl std::fmt::Display) -> anyhow::Error {
        OpenError::Corrupt(self.path.clone(), why.to_string()).into()
    }
}

/// The passphrase from the environment, else from the terminal (twice for a new keystore).
fn passphrase(new_store: bool, store: &Store) -> anyhow::Result<Secret> {
    if let Some(value) = std::env::var_os(PASSPHRASE_ENV) {
        let value = Zeroizing::new(value.into_string().map_err(|_| anyhow!("{PASSPHRASE_ENV} is not valid UTF-8"))?);
        if new_store && value.is_empty() {
            bail!("{PASSPHRASE_ENV} is empty: a new keystore needs a passphrase");
        }
        return Ok(value);
    }
    if !has_terminal() {
        bail!("no terminal to ask for the keystore passphrase: set {PASSPHRASE_ENV}");
    }
    if !new_store {
        return ask("Keystore passphrase: ");
    }
    eprintln!("Creating a new keystore at {}.", store.path.display());
    let first = ask("New keystore passphrase: ")?;
    if first.is_empty() {
        bail!("the passphrase must not be empty");
    }
    if *ask("Repeat the passphrase: ")? != *first {
        bail!("the passphrases do not match");
    }
    Ok(first)
}

/// Whether there is a terminal to prompt on: rpassword talks to `/dev/tty`, not to stdin,
/// so piping stdin (for `--pin-stdin`) still leaves the terminal usable for the passphrase.
fn has_terminal() -> bool {
    #[cfg(unix)]
    {
        std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").is_ok()
    }
    #[cfg(not(unix))]
    {
        std::io::IsTerminal::is_terminal(&io::stdin())
    }
}

/// Prompts on the terminal without echo.
fn ask(prompt: &str) -> anyhow::Result<Secret> {
    rpassword::prompt_password(prompt).map(Zeroizing::new).map_err(|e| anyhow!("cannot read from the terminal: {e}"))
}

/// A PIN: one line of stdin with `--pin-stdin`, else asked on the terminal (twice when
/// `confirm`). An empty PIN is refused here rather than spent as a wrong PIN at the server.
pub fn read_pin(from_stdin: bool, prompt: &str, confirm: bool) -> anyhow::Result<Secret> {
    let pin = if from_stdin {
        read_secret_line(&mut io::stdin().lock())?
    } else {
        if !has_terminal() {
            bail!("no terminal to ask for the PIN: give it as one line of standard input with --pin-stdin");
        }
        let pin = ask(prompt)?;
        if confirm && *ask("Repeat the PIN: ")? != *pin {
            bail!("the PINs do not match");
        }
        pin
    };
    if pin.is_empty() {
        bail!("the PIN is empty");
    }
    Ok(pin)
}

/// Reads one line and strips its line ending (`\n` or `\r\n`).
pub fn read_secret_line(reader: &mut impl BufRead) -> anyhow::Result<Secret> {
    let mut line = Zeroizing::new(String::new());
    let read = reader.read_line(&mut line).map_err(|e| anyhow!("cannot read the PIN from standard input: {e}"))?;
    if read == 0 {
        bail!("no PIN on standard input (expected one line)");
    }
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
    Ok(line)
}

/// Parses a domain code given on the command line.
pub fn parse_code(code: &str) -> anyhow::Result<DomainCode> {
    DomainCode::parse(code).map_err(|e| anyhow!("invalid domain code {code:?}: {e}"))
}

/// The domain named by `code`, or the only one when `code` is left out.
pub fn pick<'a>(contents: &'a Contents, code: Option<&str>) -> anyhow::Result<&'a Domain> {
    let codes = || contents.domains.iter().map(|d| d.code.as_str()).collect::<Vec<_>>().join(", ");
    if let Some(code) = code {
        let code = parse_code(code)?.to_string();
        return contents.find(&code).ok_or_else(|| match contents.domains.len() {
            0 => no_domain(),
            _ => anyhow!("domain {code} is not in the keystore (it holds {})", codes()),
        });
    }
    match contents.domains.as_slice() {
        [] => Err(no_domain()),
        [only] => Ok(only),
        _ => Err(anyhow!(
            "the keystore holds several domains ({}); name one, e.g. `tessera-token passcode CODE`",
            codes()
        )),
    }
}

fn no_domain() -> anyhow::Error {
    anyhow!("the keystore holds no domain; run `tessera-token add-domain CODE` first")
}

/// Prints a result alone on stdout. Errors (a closed pipe) are returned, not panicked on.
pub fn print_result(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_secs()).unwrap_or(i64::MAX)
}

/// A request nonce: 16 random bytes, base64.
pub fn request_nonce() -> String {
    let mut nonce = [0u8; 16];
    rand::rng().fill_bytes(&mut nonce);
    b64(&nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_line_loses_its_line_ending() {
        for (input, pin) in
            [("1234\n", "1234"), ("1234\r\n", "1234"), ("1234", "1234"), ("12 34\nsecond line\n", "12 34"), ("\n", "")]
        {
            assert_eq!(read_secret_line(&mut input.as_bytes()).unwrap().as_str(), pin, "{input:?}");
        }
    }

    #[test]
    fn an_empty_stdin_is_an_error() {
        let err = read_secret_line(&mut "".as_bytes()).unwrap_err();
        assert!(err.to_string().contains("no PIN on standard input"), "{err}");
    }
}
