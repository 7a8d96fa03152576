//! What the two token use-cases share: finding the domain, opening the envelope, checking
//! freshness and replays, and the refusals they produce.

use std::net::IpAddr;

use tessera_protocol::device::DevicePublicKey;
use tessera_protocol::envelope::{EnvelopeError, Purpose, ResponseKey, ServerKeyPair};
use tessera_protocol::request::{Opened, open_signed};
use tessera_protocol::wire::{ErrorKind, Reply, SealedBody, TokenError, unb64};
use tessera_protocol::{DomainCode, MAX_CLOCK_SKEW_SECS};

use crate::db::domains::DomainRow;
use crate::state::AppState;

/// A request refused before it could be opened: the answer goes back in clear.
#[derive(Debug, thiserror::Error)]
pub enum Unopened {
    #[error("unknown domain")]
    UnknownDomain,
    #[error("the request could not be opened")]
    Unreadable,
    #[error("too many requests from this address; try again later")]
    RateLimited,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// A sealed answer and the key to seal it with.
pub struct Answer<T> {
    pub key: ResponseKey,
    pub reply: Reply<T>,
}

/// A refusal to seal.
pub fn refuse(kind: ErrorKind, message: impl Into<String>) -> TokenError {
    TokenError { kind, message: message.into(), attempts_left: None }
}

/// An internal failure: logged with its cause, reported to the token without detail.
pub fn internal(context: &str, e: impl Into<anyhow::Error>) -> TokenError {
    tracing::error!(error = format!("{:#}", e.into()), "{context}");
    refuse(ErrorKind::Internal, "internal server error")
}

/// The domain a request names, with its key pair.
pub async fn load_domain(state: &AppState, code: &str) -> Result<(DomainCode, DomainRow, ServerKeyPair), Unopened> {
    let code = DomainCode::parse(code).map_err(|_| Unopened::UnknownDomain)?;
    let row = state
        .store
        .domain_by_code(&code.to_string())
        .await
        .map_err(Unopened::Internal)?
        .ok_or(Unopened::UnknownDomain)?;
    let keys = ServerKeyPair::from_bytes(&row.private_key, &row.public_key)
        .map_err(|_| Unopened::Internal(anyhow::anyhow!("stored key pair of domain {code} is invalid")))?;
    Ok((code, row, keys))
}

/// Opens a sealed request to a domain.
pub async fn open(
    state: &AppState,
    purpose: Purpose,
    sealed: &SealedBody,
    source: IpAddr,
) -> Result<(DomainRow, Opened), Unopened> {
    let (code, row, keys) = load_domain(state, &sealed.domain).await?;
    let sealed = sealed.clone();
    let opened =
        state.blocking(move || open_signed(purpose, code, &keys, &sealed)).await.map_err(Unopened::Internal)?.map_err(
            |EnvelopeError| {
                tracing::info!(%source, domain = %code, "token request could not be opened");
                Unopened::Unreadable
            },
        )?;
    Ok((row, opened))
}

/// Parses the signed body.
pub fn parse_body<T: serde::de::DeserializeOwned>(opened: &Opened) -> Result<T, TokenError> {
    serde_json::from_str(&opened.body).map_err(|e| refuse(ErrorKind::BadRequest, format!("malformed request: {e}")))
}

/// Verifies the device signature on the crypto threads. The key is decoded there too, as
/// registered (`from_registered_der`: no big-number work; `ring` computes the modulus's
/// constants in the verify).
pub async fn verify_signature(state: &AppState, opened: &Opened, public_key_der: &[u8]) -> Result<(), TokenError> {
    let (der, msg, sig) = (public_key_der.to_vec(), opened.signed_message(), opened.signature().to_vec());
    let checked = state
        .blocking(move || DevicePublicKey::from_registered_der(&der).map(|key| key.verify(&msg, &sig)))
        .await
        .map_err(|e| internal("signature check failed", e))?;
    checked
        .map_err(|_| refuse(ErrorKind::BadRequest, "the device public key is not acceptable"))?
        .map_err(|_| refuse(ErrorKind::BadRequest, "the device signature does not verify"))
}

/// Refuses stale requests and replays (the nonce table is shared by every node).
pub async fn check_fresh(state: &AppState, device_key_id: &str, timestamp: i64, nonce: &str) -> Result<(), TokenError> {
    let expires_at = check_time(timestamp, nonce)?;
    let fresh = state
        .record_nonce(device_key_id, nonce, expires_at)
        .await
        .map_err(|e| internal("recording a request nonce failed", e))?;
    if fresh { Ok(()) } else { Err(replay()) }
}

/// Refuses stale requests and malformed nonces; the time until which the nonce must be
/// remembered (past it, the request is stale anyway).
pub fn check_time(timestamp: i64, nonce: &str) -> Result<i64, TokenError> {
    let now = crate::now();
    if (now - timestamp).abs() > MAX_CLOCK_SKEW_SECS {
        return Err(refuse(
            ErrorKind::ClockSkew,
            format!("the request time is more than {MAX_CLOCK_SKEW_SECS} s from the server's clock; check the clock"),
        ));
    }
    let valid_nonce = nonce.len() <= 64 && unb64(nonce).is_ok_and(|n| n.len() >= 16);
    if !valid_nonce {
        return Err(refuse(ErrorKind::BadRequest, "the request nonce is malformed"));
    }
    Ok(now + 2 * MAX_CLOCK_SKEW_SECS)
}

/// The refusal of a request whose nonce was seen before.
pub fn replay() -> TokenError {
    refuse(ErrorKind::Replay, "this request was already received (replay refused)")
}
