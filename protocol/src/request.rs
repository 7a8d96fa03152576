//! Signed requests in sealed envelopes, and sealed replies: the one place where the token
//! and the server agree on how the pieces fit together.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::DomainCode;
use crate::device::{DeviceKey, DeviceKeyError, DevicePublicKey, signed_message};
use crate::envelope::{EnvelopeError, Purpose, ResponseKey, Sealer, ServerKeyPair, info};
use crate::wire::{Reply, SealedBody, SealedReply, SignedRequest, b64, unb64};

/// Token side: signs `body` (JSON) with the device key and seals it to the domain.
pub fn seal_signed(
    purpose: Purpose,
    domain: DomainCode,
    server_public: &[u8],
    body: &str,
    key: &DeviceKey,
) -> Result<(SealedBody, ResponseKey), EnvelopeError> {
    let sealer = Sealer::new(server_public, &info(purpose, domain))?;
    let signature = key.sign(&signed_message(purpose, sealer.enc(), body.as_bytes()));
    let inner = SignedRequest { body: body.to_owned(), signature: b64(&signature) };
    let inner = serde_json::to_vec(&inner).map_err(|_| EnvelopeError)?;
    let (req, response_key) = sealer.seal(&inner)?;
    let sealed = SealedBody { domain: domain.to_string(), enc: b64(&req.enc), ciphertext: b64(&req.ciphertext) };
    Ok((sealed, response_key))
}

/// Server side: an opened envelope whose signature is not yet checked (the server must first
/// find the key it should verify with).
pub struct Opened {
    pub body: String,
    signature: Vec<u8>,
    enc: Vec<u8>,
    purpose: Purpose,
    pub response_key: ResponseKey,
}

impl Opened {
    /// Verifies the device signature over the body and this envelope.
    pub fn verify(&self, key: &DevicePublicKey) -> Result<(), DeviceKeyError> {
        key.verify(&self.signed_message(), &self.signature)
    }

    /// The exact bytes the device must have signed.
    pub fn signed_message(&self) -> Vec<u8> {
        signed_message(self.purpose, &self.enc, self.body.as_bytes())
    }

    /// The signature that came with the body.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

/// Server side: opens a sealed body with the domain's key pair.
pub fn open_signed(
    purpose: Purpose,
    domain: DomainCode,
    keys: &ServerKeyPair,
    sealed: &SealedBody,
) -> Result<Opened, EnvelopeError> {
    let enc = unb64(&sealed.enc).map_err(|_| EnvelopeError)?;
    let ciphertext = unb64(&sealed.ciphertext).map_err(|_| EnvelopeError)?;
    let (plain, response_key) = keys.open(&info(purpose, domain), &enc, &ciphertext)?;
    let inner: SignedRequest = serde_json::from_slice(&plain).map_err(|_| EnvelopeError)?;
    let signature = unb64(&inner.signature).map_err(|_| EnvelopeError)?;
    Ok(Opened { body: inner.body, signature, enc, purpose, response_key })
}

/// Seals a reply under a request's response key.
pub fn seal_reply<T: Serialize>(key: &ResponseKey, reply: &Reply<T>) -> SealedReply {
    let json = serde_json::to_vec(reply).expect("reply types serialise");
    SealedReply { sealed: b64(&key.seal(&json)) }
}

/// Opens a sealed reply.
pub fn open_reply<T: DeserializeOwned>(key: &ResponseKey, reply: &SealedReply) -> Result<Reply<T>, EnvelopeError> {
    let sealed = unb64(&reply.sealed).map_err(|_| EnvelopeError)?;
    let plain = key.open(&sealed)?;
    serde_json::from_slice(&plain).map_err(|_| EnvelopeError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Passcode;

    #[test]
    fn a_signed_request_round_trips_and_only_verifies_with_its_key() {
        let domain = DomainCode::parse("127000000001").unwrap();
        let server = ServerKeyPair::generate();
        let device = DeviceKey::generate();
        let (sealed, client_key) =
            seal_signed(Purpose::Passcode, domain, &server.public_bytes(), "{\"x\":1}", &device).unwrap();
        let opened = open_signed(Purpose::Passcode, domain, &server, &sealed).unwrap();
        assert_eq!(opened.body, "{\"x\":1}");
        let public = DevicePublicKey::from_der(&device.public_key_der()).unwrap();
        assert!(opened.verify(&public).is_ok());
        let reply = seal_reply(&opened.response_key, &Reply::Ok(Passcode { passcode: "1".into(), expires_in_secs: 5 }));
        match open_reply::<Passcode>(&client_key, &reply).unwrap() {
            Reply::Ok(p) => assert_eq!(p.passcode, "1"),
            Reply::Error(e) => panic!("unexpected {e:?}"),
        }
        assert!(open_signed(Purpose::Register, domain, &server, &sealed).is_err());
    }
}
