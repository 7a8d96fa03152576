//! The encrypted keystore: one JSON file holding every domain the token is registered with.
//!
//! The file carries the argon2id parameters and salt in clear and the domain list encrypted
//! with AES-256-GCM under the key derived from the passphrase. The private keys never touch
//! the disk unencrypted, and every write replaces the file atomically (temp file, fsync,
//! rename) so a crash cannot leave half a keystore.

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tessera_protocol::wire::{b64, unb64};
use zeroize::{Zeroize, Zeroizing};

const FORMAT_VERSION: u32 = 1;
const KDF_ALGORITHM: &str = "argon2id";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
/// Upper bounds on stored KDF parameters: a tampered file must not make us allocate
/// unbounded memory or spin forever before the passphrase check can fail.
const MAX_M_COST: u32 = 1 << 20;
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 16;

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfCost {
    pub m_cost: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl KdfCost {
    /// The cost used for every write: argon2's recommended defaults (19 MiB, 2 passes, 1 lane).
    pub const PRODUCTION: KdfCost = KdfCost { m_cost: 19 * 1024, t_cost: 2, p_cost: 1 };
}

/// One domain the token is registered with.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    pub code: String,
    pub name: String,
    pub device_name: String,
    pub server_url: String,
    /// The pinned X25519 server key, base64.
    pub server_public_key: String,
    pub fingerprint: String,
    pub device_id: String,
    /// PKCS#8 DER of the device's RSA key, base64.
    pub private_key: String,
    /// Unix seconds.
    pub registered_at: u64,
}

impl Drop for Domain {
    fn drop(&mut self) {
        self.private_key.zeroize();
    }
}

impl fmt::Debug for Domain {
    /// Never prints the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Domain")
            .field("code", &self.code)
            .field("name", &self.name)
            .field("server_url", &self.server_url)
            .field("fingerprint", &self.fingerprint)
            .field("device_id", &self.device_id)
            .field("private_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The decrypted contents of a keystore.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contents {
    pub domains: Vec<Domain>,
}

impl Contents {
    pub fn find(&self, code: &str) -> Option<&Domain> {
        self.domains.iter().find(|d| d.code == code)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfHeader {
    algorithm: String,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: u32,
    kdf: KdfHeader,
    nonce: String,
    ciphertext: String,
}

/// Why a keystore could not be opened.
#[derive(Debug)]
pub enum OpenError {
    Missing(PathBuf),
    /// AES-GCM refused: a wrong passphrase and a modified file look the same, by design.
    WrongPassphrase,
    Corrupt(PathBuf, String),
    Io(PathBuf, io::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Missing(p) => {
                write!(f, "no keystore at {}; run `tessera-token add-domain CODE` first", p.display())
            }
            OpenError::WrongPassphrase => f.write_str("wrong passphrase (or the keystore was modified)"),
            OpenError::Corrupt(p, why) => write!(f, "keystore at {} is corrupt: {why}", p.display()),
            OpenError::Io(p, e) => write!(f, "cannot read the keystore at {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for OpenError {}

/// Opens and decrypts the keystore at `path`.
pub fn open(path: &Path, passphrase: &str) -> Result<Contents, OpenError> {
    let raw = match fs::read(path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OpenError::Missing(path.to_owned())),
        Err(e) => return Err(OpenError::Io(path.to_owned(), e)),
    };
    let corrupt = |why: String| OpenError::Corrupt(path.to_owned(), why);
    let file: StoreFile = serde_json::from_slice(&raw).map_err(|e| corrupt(e.to_string()))?;
    let key = derive_key_from_header(&file, passphrase).map_err(corrupt)?;
    let nonce: [u8; NONCE_LEN] = decode(&file.nonce, "nonce")
        .and_then(|n| n.try_into().map_err(|_| "the nonce has the wrong length".to_owned()))
        .map_err(corrupt)?;
    let ciphertext = decode(&file.ciphertext, "ciphertext").map_err(corrupt)?;
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).expect("32-byte key");
    let plain = Zeroizing::new(
        cipher.decrypt(&Nonce::from(nonce), ciphertext.as_slice()).map_err(|_| OpenError::WrongPassphrase)?,
    );
    serde_json::from_slice(&plain).map_err(|e| corrupt(format!("the decrypted contents are invalid: {e}")))
}

fn decode(field: &str, name: &str) -> Result<Vec<u8>, String> {
    unb64(field).map_err(|e| format!("the {name} is not valid base64: {e}"))
}

fn derive_key_from_header(file: &StoreFile, passphrase: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    if file.version != FORMAT_VERSION {
        return Err(format!("unsupported keystore version {}", file.version));
    }
    let kdf = &file.kdf;
    if kdf.algorithm != KDF_ALGORITHM {
        return Err(format!("unsupported key derivation {:?}", kdf.algorithm));
    }
    if kdf.m_cost > MAX_M_COST || kdf.t_cost > MAX_T_COST || kdf.p_cost > MAX_P_COST {
        return Err("the key derivation parameters are out of range".to_owned());
    }
    let salt = decode(&kdf.salt, "salt")?;
    let cost = KdfCost { m_cost: kdf.m_cost, t_cost: kdf.t_cost, p_cost: kdf.p_cost };
    derive_key(passphrase, &salt, cost)
}

fn derive_key(passphrase: &str, salt: &[u8], cost: KdfCost) -> Result<Zeroizing<[u8; 32]>, String> {
    let params = Params::new(cost.m_cost, cost.t_cost, cost.p_cost, Some(32))
        .map_err(|e| format!("invalid key derivation parameters: {e}"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
        .map_err(|e| format!("key derivation failed: {e}"))?;
    Ok(key)
}

/// Encrypts `contents` under `passphrase` with a fresh salt and nonce and replaces the file
/// at `path` atomically, creating its directory (mode 0700) when needed.
pub fn save(path: &Path, passphrase: &str, contents: &Contents, cost: KdfCost) -> anyhow::Result<()> {
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut salt);
    rand::rng().fill_bytes(&mut nonce);
    let key = derive_key(passphrase, &salt, cost).map_err(anyhow::Error::msg)?;
    let plain = Zeroizing::new(serde_json::to_vec(contents)?);
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).expect("32-byte key");
    let ciphertext = cipher
        .encrypt(&Nonce::from(nonce), plain.as_slice())
        .map_err(|_| anyhow::anyhow!("encrypting the keystore failed"))?;
    let file = StoreFile {
        version: FORMAT_VERSION,
        kdf: KdfHeader {
            algorithm: KDF_ALGORITHM.to_owned(),
            m_cost: cost.m_cost,
            t_cost: cost.t_cost,
            p_cost: cost.p_cost,
            salt: b64(&salt),
        },
        nonce: b64(&nonce),
        ciphertext: b64(&ciphertext),
    };
    let mut json = serde_json::to_vec_pretty(&file)?;
    json.push(b'\n');
    write_atomically(path, &json).map_err(|e| anyhow::anyhow!("cannot write the keystore at {}: {e}", path.display()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    create_private_dir(&dir)?;
    let file_name = path.file_name().ok_or_else(|| io::Error::other("the keystore path has no file name"))?;
    let mut suffix = [0u8; 8];
    rand::rng().fill_bytes(&mut suffix);
    let tmp = dir.join(format!(".{}.tmp-{}", file_name.to_string_lossy(), hex::encode(suffix)));
    let result = write_and_rename(&tmp, path, bytes);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(&dir);
    Ok(())
}

/// The directory holding the keystore at `path` (the current one for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn write_and_rename(tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Takes the keystore's lock: an exclusive lock on `.NAME.lock` beside it (created, mode
/// 0600, and never removed, so two processes always lock the same file). Held from reading
/// the keystore to writing it back, so two tokens changing it at once (two `add-domain`s)
/// cannot lose each other's domain; readers need no lock, since every write is one rename.
/// Says so on stderr when it has to wait. Released when the returned file is dropped.
pub fn lock(path: &Path) -> anyhow::Result<fs::File> {
    let fail = |e: io::Error| anyhow::anyhow!("cannot lock the keystore at {}: {e}", path.display());
    let dir = parent_dir(path);
    create_private_dir(&dir).map_err(fail)?;
    let file_name = path.file_name().ok_or_else(|| anyhow::anyhow!("the keystore path has no file name"))?;
    let mut options = fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(dir.join(format!(".{}.lock", file_name.to_string_lossy()))).map_err(fail)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            eprintln!("Waiting for another tessera-token to finish with {}…", path.display());
            file.lock().map_err(fail)?;
        }
        Err(fs::TryLockError::Error(e)) => return Err(fail(e)),
    }
    Ok(file)
}

/// Makes the rename durable; best effort, since not every platform can fsync a directory.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests;
