//! JSON messages of the token API.
//!
//! Outer messages travel in clear ([`DomainInfo`], [`SealedBody`], [`PlainError`]). Everything
//! that matters travels sealed: a request body is a [`SignedRequest`] inside the HPKE envelope,
//! and its answer is a [`Reply`] under the exported response key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Paths of the token API.
pub mod paths {
    /// `GET` a domain's public information: `/v1/domains/{code}`.
    pub const DOMAIN: &str = "/v1/domains/{code}";
    /// `POST` a sealed registration.
    pub const REGISTER: &str = "/v1/register";
    /// `POST` a sealed passcode request.
    pub const PASSCODE: &str = "/v1/passcode";
}

/// Base64 (standard alphabet, padded) for binary fields.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes a base64 field.
pub fn unb64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(s)
}

/// A domain's public key and the settings a token needs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DomainInfo {
    pub code: String,
    pub name: String,
    pub device_name: String,
    /// X25519 public key, base64.
    pub public_key: String,
    pub fingerprint: String,
    pub pin_min_length: u32,
    pub passcode_length: u32,
    pub passcode_lifetime_secs: u32,
}

/// The body of `POST /v1/register` and `POST /v1/passcode`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedBody {
    pub domain: String,
    /// HPKE encapsulated key, base64.
    pub enc: String,
    /// HPKE ciphertext of a [`SignedRequest`] in JSON, base64.
    pub ciphertext: String,
}

/// What the envelope carries: a JSON body (as a string, so the signature covers exact bytes)
/// and the device's RSA-PSS signature over [`crate::device::signed_message`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRequest {
    pub body: String,
    pub signature: String,
}

/// Registration body: the new device key and the PIN the user chose.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// SubjectPublicKeyInfo DER, base64.
    pub device_public_key: String,
    pub pin: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// 16 random bytes, base64; with the timestamp, stops replays.
    pub nonce: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_code: Option<String>,
}

/// Passcode request body.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasscodeBody {
    pub device_id: String,
    pub pin: String,
    pub timestamp: i64,
    pub nonce: String,
}

/// A sealed answer: `{"sealed": base64}` where the plaintext is a JSON [`Reply`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedReply {
    pub sealed: String,
}

/// The plaintext of a sealed answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply<T> {
    Ok(T),
    Error(TokenError),
}

/// A successful registration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registered {
    pub device_id: String,
    /// 32 random bytes, base64; input to [`crate::device::registration_code`].
    pub server_nonce: String,
    /// Seconds until an unvalidated registration expires.
    pub expires_in_secs: u64,
    /// Set when an enrollment code validated the registration at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validated_username: Option<String>,
}

/// A fresh passcode.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Passcode {
    pub passcode: String,
    pub expires_in_secs: u64,
}

/// Why the server refused a request it could open.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    WrongPin,
    Locked,
    PendingValidation,
    Disabled,
    UnknownDevice,
    Replay,
    ClockSkew,
    BadRequest,
    PinPolicy,
    RateLimited,
    Internal,
}

/// A refusal, sealed when the request could be opened.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenError {
    pub kind: ErrorKind,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts_left: Option<u32>,
}

/// A refusal in clear, for requests that could not be opened at all.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlainError {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_have_a_stable_json_shape() {
        let ok: Reply<Passcode> = Reply::Ok(Passcode { passcode: "123456".into(), expires_in_secs: 60 });
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"ok":{"passcode":"123456","expires_in_secs":60}}"#);
        let err: Reply<Passcode> =
            Reply::Error(TokenError { kind: ErrorKind::WrongPin, message: "wrong PIN".into(), attempts_left: Some(3) });
        let json = serde_json::to_string(&err).unwrap();
        assert_eq!(json, r#"{"error":{"kind":"wrong_pin","message":"wrong PIN","attempts_left":3}}"#);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let bad = r#"{"domain":"127000000001","enc":"","ciphertext":"","extra":1}"#;
        assert!(serde_json::from_str::<SealedBody>(bad).is_err());
    }
}
