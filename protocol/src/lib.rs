//! Tessera's wire protocol, shared by the server and the software token.
//!
//! Pure code with no I/O: the JSON message types, the HPKE request envelope with its
//! exported response key, device signatures, domain codes and the derivations both sides
//! must agree on (registration codes, key fingerprints).

pub mod code;
pub mod device;
pub mod envelope;
pub mod request;
pub mod wire;

pub use code::DomainCode;

/// How far a request's timestamp may be from the server clock, in seconds, either way.
pub const MAX_CLOCK_SKEW_SECS: i64 = 120;

/// Bits of the RSA key a token generates per domain.
pub const DEVICE_KEY_BITS: usize = 3072;
