//! The request envelope: HPKE (RFC 9180, DHKEM X25519 / HKDF-SHA256 / AES-256-GCM, base mode)
//! to the domain's server key, and a response key exported from the same HPKE context.
//!
//! Only the holder of the domain's X25519 private key can read a request, and only the token
//! that sealed it can read the answer, because the response key comes out of that very
//! context. The `info` string binds a ciphertext to one purpose and one domain, so a sealed
//! registration cannot be replayed as a passcode request or against another domain.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use rand::Rng;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::DomainCode;

type Kem = X25519HkdfSha256;
/// Length of an X25519 public or private key.
pub const KEY_LEN: usize = 32;
const RESPONSE_EXPORT_CONTEXT: &[u8] = b"tessera/v1/response-key";
const RESPONSE_NONCE_LEN: usize = 12;

/// What a sealed request is for; part of the HPKE `info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Register,
    Passcode,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::Register => "register",
            Purpose::Passcode => "passcode",
        }
    }
}

/// HPKE `info`: protocol version, purpose and domain.
pub fn info(purpose: Purpose, domain: DomainCode) -> Vec<u8> {
    format!("tessera/v1/{}/{domain}", purpose.label()).into_bytes()
}

/// Any failure to open or seal; deliberately without detail (no oracle).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the encrypted message could not be opened")]
pub struct EnvelopeError;

/// A domain's X25519 key pair, as stored by the server.
pub struct ServerKeyPair {
    private: [u8; KEY_LEN],
    public: [u8; KEY_LEN],
}

impl Drop for ServerKeyPair {
    fn drop(&mut self) {
        self.private.zeroize();
    }
}

impl ServerKeyPair {
    /// A fresh key pair from the OS random generator.
    pub fn generate() -> Self {
        let (sk, pk) = Kem::gen_keypair();
        Self::from_parts(&sk.to_bytes(), &pk.to_bytes())
    }

    /// Rebuilds a stored key pair; fails if either half has the wrong length.
    pub fn from_bytes(private: &[u8], public: &[u8]) -> Result<Self, EnvelopeError> {
        <Kem as hpke::Kem>::PrivateKey::from_bytes(private).map_err(|_| EnvelopeError)?;
        <Kem as hpke::Kem>::PublicKey::from_bytes(public).map_err(|_| EnvelopeError)?;
        Ok(Self::from_parts(private, public))
    }

    fn from_parts(private: &[u8], public: &[u8]) -> Self {
        let mut pair = Self { private: [0; KEY_LEN], public: [0; KEY_LEN] };
        pair.private.copy_from_slice(private);
        pair.public.copy_from_slice(public);
        pair
    }

    pub fn public_bytes(&self) -> [u8; KEY_LEN] {
        self.public
    }

    /// The private half, for storage only.
    pub fn private_bytes(&self) -> &[u8; KEY_LEN] {
        &self.private
    }

    /// Opens a request sealed to this key; returns the plaintext and the response key.
    pub fn open(&self, info: &[u8], enc: &[u8], ciphertext: &[u8]) -> Result<(Vec<u8>, ResponseKey), EnvelopeError> {
        let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(&self.private).map_err(|_| EnvelopeError)?;
        let encapped = <Kem as hpke::Kem>::EncappedKey::from_bytes(enc).map_err(|_| EnvelopeError)?;
        let mut ctx = hpke::setup_receiver::<AesGcm256, HkdfSha256, Kem>(&OpModeR::Base, &sk, &encapped, info)
            .map_err(|_| EnvelopeError)?;
        let plaintext = ctx.open(ciphertext, b"").map_err(|_| EnvelopeError)?;
        let mut key = [0u8; KEY_LEN];
        ctx.export(RESPONSE_EXPORT_CONTEXT, &mut key).map_err(|_| EnvelopeError)?;
        Ok((plaintext, ResponseKey(key)))
    }
}

/// A request sealed by a token: the encapsulated key and the ciphertext.
pub struct SealedRequest {
    pub enc: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// The sender's half of an HPKE context. Its encapsulated key is known before anything is
/// sealed, so a device can sign over it and put the signature inside the envelope.
pub struct Sealer {
    enc: Vec<u8>,
    ctx: hpke::aead::AeadCtxS<AesGcm256, HkdfSha256, Kem>,
}

impl Sealer {
    /// Sets up a context to a domain's public key.
    pub fn new(server_public: &[u8], info: &[u8]) -> Result<Self, EnvelopeError> {
        let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(server_public).map_err(|_| EnvelopeError)?;
        let (encapped, ctx) =
            hpke::setup_sender::<AesGcm256, HkdfSha256, Kem>(&OpModeS::Base, &pk, info).map_err(|_| EnvelopeError)?;
        Ok(Self { enc: encapped.to_bytes().to_vec(), ctx })
    }

    /// The encapsulated key that will travel with the request.
    pub fn enc(&self) -> &[u8] {
        &self.enc
    }

    /// Seals the one plaintext of this context; returns the request and the key that will
    /// open its response.
    pub fn seal(mut self, plaintext: &[u8]) -> Result<(SealedRequest, ResponseKey), EnvelopeError> {
        let ciphertext = self.ctx.seal(plaintext, b"").map_err(|_| EnvelopeError)?;
        let mut key = [0u8; KEY_LEN];
        self.ctx.export(RESPONSE_EXPORT_CONTEXT, &mut key).map_err(|_| EnvelopeError)?;
        Ok((SealedRequest { enc: self.enc, ciphertext }, ResponseKey(key)))
    }
}

/// Seals `plaintext` to a domain's public key in one step.
pub fn seal(
    server_public: &[u8],
    info: &[u8],
    plaintext: &[u8],
) -> Result<(SealedRequest, ResponseKey), EnvelopeError> {
    Sealer::new(server_public, info)?.seal(plaintext)
}

/// The AES-256-GCM key for one request's response, exported from its HPKE context.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct ResponseKey([u8; KEY_LEN]);

impl ResponseKey {
    /// Encrypts a response: a random 12-byte nonce followed by the ciphertext and tag.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let cipher = Aes256Gcm::new_from_slice(&self.0).expect("32-byte key");
        let mut nonce = [0u8; RESPONSE_NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(&Nonce::from(nonce), plaintext)
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypts a response sealed by [`ResponseKey::seal`].
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        if sealed.len() < RESPONSE_NONCE_LEN + 16 {
            return Err(EnvelopeError);
        }
        let (nonce, ct) = sealed.split_at(RESPONSE_NONCE_LEN);
        let nonce: [u8; RESPONSE_NONCE_LEN] = nonce.try_into().map_err(|_| EnvelopeError)?;
        let cipher = Aes256Gcm::new_from_slice(&self.0).map_err(|_| EnvelopeError)?;
        cipher.decrypt(&Nonce::from(nonce), ct).map_err(|_| EnvelopeError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain() -> DomainCode {
        DomainCode::parse("127000000001").unwrap()
    }

    #[test]
    fn a_sealed_request_opens_and_both_sides_share_the_response_key() {
        let server = ServerKeyPair::generate();
        let info = info(Purpose::Passcode, domain());
        let (req, client_key) = seal(&server.public_bytes(), &info, b"hello").unwrap();
        let (plain, server_key) = server.open(&info, &req.enc, &req.ciphertext).unwrap();
        assert_eq!(plain, b"hello");
        let response = server_key.seal(b"passcode 123456");
        assert_eq!(client_key.open(&response).unwrap(), b"passcode 123456");
    }

    #[test]
    fn tampered_ciphertext_enc_or_info_is_refused() {
        let server = ServerKeyPair::generate();
        let info_p = info(Purpose::Passcode, domain());
        let (req, _) = seal(&server.public_bytes(), &info_p, b"hello").unwrap();
        let mut ct = req.ciphertext.clone();
        ct[0] ^= 1;
        assert!(server.open(&info_p, &req.enc, &ct).is_err());
        let mut enc = req.enc.clone();
        enc[3] ^= 1;
        assert!(server.open(&info_p, &enc, &req.ciphertext).is_err());
        assert!(server.open(&info_p, &req.enc[..10], &req.ciphertext).is_err());
        let info_r = info(Purpose::Register, domain());
        assert!(server.open(&info_r, &req.enc, &req.ciphertext).is_err());
    }

    #[test]
    fn another_servers_key_cannot_open_a_request() {
        let server = ServerKeyPair::generate();
        let other = ServerKeyPair::generate();
        let info = info(Purpose::Register, domain());
        let (req, _) = seal(&server.public_bytes(), &info, b"pin").unwrap();
        assert!(other.open(&info, &req.enc, &req.ciphertext).is_err());
    }

    #[test]
    fn a_tampered_or_short_response_is_refused() {
        let server = ServerKeyPair::generate();
        let info = info(Purpose::Passcode, domain());
        let (req, client_key) = seal(&server.public_bytes(), &info, b"x").unwrap();
        let (_, server_key) = server.open(&info, &req.enc, &req.ciphertext).unwrap();
        let mut response = server_key.seal(b"secret");
        *response.last_mut().unwrap() ^= 1;
        assert!(client_key.open(&response).is_err());
        assert!(client_key.open(&[0u8; 10]).is_err());
    }

    #[test]
    fn stored_key_pairs_round_trip_and_bad_lengths_are_refused() {
        let pair = ServerKeyPair::generate();
        let again = ServerKeyPair::from_bytes(pair.private_bytes(), &pair.public_bytes()).unwrap();
        assert_eq!(again.public_bytes(), pair.public_bytes());
        assert!(ServerKeyPair::from_bytes(&[1u8; 31], &pair.public_bytes()).is_err());
    }
}
