//! Device keys and the values both sides derive from keys.
//!
//! A token holds one RSA-3072 key pair per domain and signs each request with RSA-PSS
//! (SHA-256). The server only ever *verifies* (a public-key operation): it never runs an RSA
//! private-key operation on anything a network peer sends (RUSTSEC-2023-0071).
//!
//! Signing, and the parsing and checking of keys, use `rsa`; the server's verification uses
//! `ring`, whose Montgomery multiplication is assembly: a 3072-bit verify took 121 µs with
//! `rsa` and 47 µs with `ring` on one machine, and the token API verifies one signature per
//! request (BENCHMARKS.md, Next steps item 29).

use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::pss::SigningKey;
use rsa::sha2::{Digest, Sha256};
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rsa::traits::PublicKeyParts as _;
use rsa::{RsaPrivateKey, RsaPublicKey};
use zeroize::Zeroizing;

use crate::envelope::Purpose;

/// Refusals from key handling; deliberately terse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceKeyError {
    #[error("the device public key is not a valid RSA key of the expected size")]
    BadPublicKey,
    #[error("the device private key is not valid")]
    BadPrivateKey,
    #[error("the signature does not verify")]
    BadSignature,
}

/// The bytes a device signs: a purpose label, the HPKE encapsulated key of the envelope the
/// body travels in (so a signed body cannot be moved into another envelope) and the body.
pub fn signed_message(purpose: Purpose, enc: &[u8], body: &[u8]) -> Vec<u8> {
    let label: &[u8] = match purpose {
        Purpose::Register => b"tessera/v1/sign/register\0",
        Purpose::Passcode => b"tessera/v1/sign/passcode\0",
    };
    let mut msg = Vec::with_capacity(label.len() + enc.len() + body.len() + 1);
    msg.extend_from_slice(label);
    msg.extend_from_slice(enc);
    msg.push(0);
    msg.extend_from_slice(body);
    msg
}

/// A token's private key for one domain.
pub struct DeviceKey(RsaPrivateKey);

impl DeviceKey {
    /// Generates a fresh RSA-3072 key pair (slow: a few hundred milliseconds).
    pub fn generate() -> Self {
        let key = RsaPrivateKey::new(&mut rand::rng(), crate::DEVICE_KEY_BITS)
            .expect("RSA key generation with a valid size cannot fail");
        Self(key)
    }

    /// PKCS#8 DER of the private key, for the encrypted keystore.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let doc = self.0.to_pkcs8_der().expect("encoding an RSA key cannot fail");
        Zeroizing::new(doc.as_bytes().to_vec())
    }

    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, DeviceKeyError> {
        RsaPrivateKey::from_pkcs8_der(der).map(Self).map_err(|_| DeviceKeyError::BadPrivateKey)
    }

    /// SubjectPublicKeyInfo DER of the public half, as sent to the server.
    pub fn public_key_der(&self) -> Vec<u8> {
        let public = RsaPublicKey::from(&self.0);
        public.to_public_key_der().expect("encoding an RSA public key cannot fail").as_bytes().to_vec()
    }

    /// RSA-PSS (SHA-256) signature over `msg`.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let signer = SigningKey::<Sha256>::new(self.0.clone());
        signer.sign_with_rng(&mut rand::rng(), msg).to_vec()
    }
}

/// A device's public key as the server stores and uses it: its modulus and exponent, big-endian
/// without leading zeros, as `ring` takes them.
pub struct DevicePublicKey {
    n: Box<[u8]>,
    e: Box<[u8]>,
}

impl DevicePublicKey {
    /// Parses SubjectPublicKeyInfo DER and insists on the protocol's key size, so a peer
    /// cannot register a weak key or a huge one that is expensive to verify with, and on the
    /// token's own encoding (rsaEncryption), so that one key has one [`device_id`]: `rsa`
    /// also accepts the same key under id-RSASSA-PSS, which would give it a second id and
    /// let its holder register it twice (found by the `token_fields` fuzz target).
    pub fn from_der(der: &[u8]) -> Result<Self, DeviceKeyError> {
        let key = RsaPublicKey::from_public_key_der(der).map_err(|_| DeviceKeyError::BadPublicKey)?;
        // The modulus's own length: `size()` is in whole bytes, which let a modulus a few
        // bits short through.
        if key.n().bits() as usize != crate::DEVICE_KEY_BITS {
            return Err(DeviceKeyError::BadPublicKey);
        }
        let canonical = key.to_public_key_der().map_err(|_| DeviceKeyError::BadPublicKey)?;
        if canonical.as_bytes() != der {
            return Err(DeviceKeyError::BadPublicKey);
        }
        // `rsa` has refused an even exponent or one outside 2..=2^33-1, so it is odd and
        // from 3, as `ring` wants: a key `ring` cannot verify with never gets this far.
        Ok(Self { n: key.n_bytes(), e: key.e_bytes() })
    }

    /// Decodes a key that [`from_der`](Self::from_der) accepted when its device registered
    /// (the server keeps only such keys), without `rsa`'s big-number set-up: that parse was
    /// about a tenth of the crypto threads' CPU a passcode. It still insists on the
    /// token's encoding and the protocol's key size, and `ring` checks the modulus and
    /// the exponent again at every [`verify`](Self::verify).
    pub fn from_registered_der(der: &[u8]) -> Result<Self, DeviceKeyError> {
        use rsa::pkcs8::der::Decode as _;
        let spki = rsa::pkcs8::SubjectPublicKeyInfoRef::from_der(der).map_err(|_| DeviceKeyError::BadPublicKey)?;
        if spki.algorithm != rsa::pkcs1::ALGORITHM_ID {
            return Err(DeviceKeyError::BadPublicKey);
        }
        let bits = spki.subject_public_key.as_bytes().ok_or(DeviceKeyError::BadPublicKey)?;
        let key = rsa::pkcs1::RsaPublicKeyRef::from_der(bits).map_err(|_| DeviceKeyError::BadPublicKey)?;
        let (n, e) = (key.modulus.as_bytes(), key.public_exponent.as_bytes());
        // DER integers carry no leading zero byte, so the first byte holds the top bit.
        if n.len() * 8 != crate::DEVICE_KEY_BITS || n[0] < 0x80 {
            return Err(DeviceKeyError::BadPublicKey);
        }
        Ok(Self { n: n.into(), e: e.into() })
    }

    /// Verifies an RSA-PSS signature (SHA-256, MGF1 with SHA-256, a salt as long as the
    /// digest: what [`DeviceKey::sign`] makes); a public-key operation only.
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> Result<(), DeviceKeyError> {
        let key = ring::signature::RsaPublicKeyComponents { n: &self.n, e: &self.e };
        key.verify(&ring::signature::RSA_PSS_2048_8192_SHA256, msg, signature).map_err(|_| DeviceKeyError::BadSignature)
    }
}

/// A device's identifier: hex SHA-256 of its public key DER.
pub fn device_id(public_key_der: &[u8]) -> String {
    hex::encode(Sha256::digest(public_key_der))
}

/// The fingerprint of a domain's server key that tokens, `domain list` and the console show:
/// the first 20 bytes of SHA-256 over the key, in groups of four hex digits.
pub fn fingerprint(server_public: &[u8]) -> String {
    let digest = Sha256::digest(server_public);
    let hex = hex::encode(&digest[..20]);
    hex.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).expect("hex is ASCII")).collect::<Vec<_>>().join(":")
}

/// The registration code a user reads out to the administrator.
///
/// It is derived from the server's answer (`server_nonce`), the device and the server key
/// the token *used*: a token that was handed a substituted key derives a different code
/// from the one the real server stored, so the registration cannot be validated.
pub fn registration_code(server_public: &[u8], device_id: &str, server_nonce: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"tessera/v1/registration-code\0");
    h.update(server_public);
    h.update(device_id.as_bytes());
    h.update([0]);
    h.update(server_nonce);
    let digest = h.finalize();
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % 1_000_000_000_000;
    format!("{n:012}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn key() -> &'static DeviceKey {
        static KEY: OnceLock<DeviceKey> = OnceLock::new();
        KEY.get_or_init(DeviceKey::generate)
    }

    #[test]
    fn a_signature_verifies_only_for_its_message_and_key() {
        let der = key().public_key_der();
        let public = DevicePublicKey::from_der(&der).unwrap();
        let msg = signed_message(Purpose::Passcode, b"enc", b"body");
        let sig = key().sign(&msg);
        assert!(public.verify(&msg, &sig).is_ok());
        let other = signed_message(Purpose::Register, b"enc", b"body");
        assert_eq!(public.verify(&other, &sig), Err(DeviceKeyError::BadSignature));
        let mut bad = sig.clone();
        bad[5] ^= 1;
        assert_eq!(public.verify(&msg, &bad), Err(DeviceKeyError::BadSignature));
        assert_eq!(public.verify(&msg, &sig[..10]), Err(DeviceKeyError::BadSignature));
    }

    #[test]
    fn a_key_is_accepted_only_in_the_tokens_encoding() {
        let der = key().public_key_der();
        // The same key under id-RSASSA-PSS without parameters: AlgorithmIdentifier
        // SEQUENCE { OID 1.2.840.113549.1.1.10 } instead of { rsaEncryption, NULL }.
        let rsa_encryption = [0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
        assert_eq!(&der[4..19], &rsa_encryption);
        let outer = u16::from_be_bytes([der[2], der[3]]) - 2;
        let mut pss = vec![0x30, 0x82];
        pss.extend(outer.to_be_bytes());
        pss.extend([0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a]);
        pss.extend(&der[19..]);
        assert!(RsaPublicKey::from_public_key_der(&pss).is_ok(), "rsa itself takes this encoding");
        assert!(DevicePublicKey::from_der(&der).is_ok());
        assert_eq!(DevicePublicKey::from_der(&pss).err(), Some(DeviceKeyError::BadPublicKey));
    }

    #[test]
    fn a_registered_key_decodes_without_rsa_to_the_same_key() {
        let der = key().public_key_der();
        let (full, light) =
            (DevicePublicKey::from_der(&der).unwrap(), DevicePublicKey::from_registered_der(&der).unwrap());
        assert_eq!((&full.n, &full.e), (&light.n, &light.e));
        let msg = signed_message(Purpose::Passcode, b"enc", b"body");
        assert!(light.verify(&msg, &key().sign(&msg)).is_ok());
        // What the light decode still refuses: another encoding, another size, trailing
        // bytes, a truncated key.
        let mut pss = der.clone();
        pss[16] = 0x0a; // rsaEncryption's OID ends in 1; 10 is id-RSASSA-PSS.
        assert!(DevicePublicKey::from_registered_der(&pss).is_err());
        let with_n = |top: u8, bytes: usize| {
            let mut n = vec![0xff; bytes];
            n[0] = top;
            let n = rsa::BoxedUint::from_be_slice(&n, bytes as u32 * 8).unwrap();
            let public = RsaPublicKey::new_unchecked(n, rsa::BoxedUint::from(65_537u64));
            DevicePublicKey::from_registered_der(public.to_public_key_der().unwrap().as_bytes()).map(|_| ())
        };
        assert_eq!(with_n(0x80, 384), Ok(()), "3072 bits");
        assert!(with_n(0x7f, 384).is_err(), "3071 bits");
        assert!(with_n(0xff, 256).is_err(), "2048 bits");
        assert!(with_n(0x80, 512).is_err(), "4096 bits");
        let mut longer = der.clone();
        longer.push(0);
        assert!(DevicePublicKey::from_registered_der(&longer).is_err());
        assert!(DevicePublicKey::from_registered_der(&der[..der.len() - 1]).is_err());
    }

    #[test]
    fn only_the_tokens_padding_verifies() {
        let public = DevicePublicKey::from_der(&key().public_key_der()).unwrap();
        let msg = signed_message(Purpose::Passcode, b"enc", b"body");
        // PSS with a 20-byte salt: valid RSA-PSS, but not what a token makes.
        let short_salt = SigningKey::<Sha256>::new_with_salt_len(key().0.clone(), 20);
        let sig = short_salt.sign_with_rng(&mut rand::rng(), &msg).to_vec();
        assert_eq!(public.verify(&msg, &sig), Err(DeviceKeyError::BadSignature));
        // PKCS #1 v1.5 over the same message.
        let v15 = rsa::pkcs1v15::SigningKey::<Sha256>::new(key().0.clone());
        let sig = rsa::signature::Signer::sign(&v15, &msg).to_vec();
        assert_eq!(public.verify(&msg, &sig), Err(DeviceKeyError::BadSignature));
    }

    #[test]
    fn an_exponent_ring_cannot_verify_with_is_refused_when_parsed() {
        let n = RsaPublicKey::from(&key().0).n().as_ref().clone();
        // Encoded without `rsa`'s checks, as a peer could send it.
        let with_e = |e: u64| {
            let public = RsaPublicKey::new_unchecked(n.clone(), rsa::BoxedUint::from(e));
            DevicePublicKey::from_der(public.to_public_key_der().unwrap().as_bytes()).map(|_| ())
        };
        assert_eq!(with_e(65_537), Ok(()));
        assert_eq!(with_e(3), Ok(()));
        assert_eq!(with_e(65_536), Err(DeviceKeyError::BadPublicKey), "even");
        assert_eq!(with_e(1), Err(DeviceKeyError::BadPublicKey), "below 3");
        assert_eq!(with_e(1 << 33 | 1), Err(DeviceKeyError::BadPublicKey), "above 2^33 - 1");
    }

    #[test]
    fn private_keys_round_trip_through_pkcs8() {
        let der = key().to_pkcs8_der();
        let again = DeviceKey::from_pkcs8_der(&der).unwrap();
        assert_eq!(again.public_key_der(), key().public_key_der());
        assert!(DeviceKey::from_pkcs8_der(b"garbage").is_err());
    }

    #[test]
    fn malformed_or_weak_public_keys_are_refused() {
        assert!(DevicePublicKey::from_der(b"not a key").is_err());
        let small = RsaPrivateKey::new(&mut rand::rng(), 1024).unwrap();
        let der = RsaPublicKey::from(&small).to_public_key_der().unwrap();
        assert!(DevicePublicKey::from_der(der.as_bytes()).is_err());
        // As many bytes as the protocol's size, two bits short.
        let short = RsaPrivateKey::new(&mut rand::rng(), crate::DEVICE_KEY_BITS - 2).unwrap();
        let der = RsaPublicKey::from(&short).to_public_key_der().unwrap();
        assert_eq!(rsa::traits::PublicKeyParts::size(&RsaPublicKey::from(&short)) * 8, crate::DEVICE_KEY_BITS);
        assert!(DevicePublicKey::from_der(der.as_bytes()).is_err());
    }

    #[test]
    fn registration_code_depends_on_the_server_key_used() {
        let a = registration_code(&[1u8; 32], "dev", b"nonce");
        assert_eq!(a.len(), 12);
        assert!(a.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(a, registration_code(&[1u8; 32], "dev", b"nonce"));
        assert_ne!(a, registration_code(&[2u8; 32], "dev", b"nonce"));
        assert_ne!(a, registration_code(&[1u8; 32], "dev", b"other"));
    }

    #[test]
    fn fingerprints_are_grouped_hex() {
        let fp = fingerprint(&[7u8; 32]);
        assert_eq!(fp.len(), 10 * 4 + 9);
        assert_eq!(fp.split(':').count(), 10);
    }
}
