//! Registering a token: a new device key and PIN become a pending registration whose code
//! the administrator binds to a user.

use std::net::IpAddr;

use tessera_protocol::device::{device_id, registration_code};
use tessera_protocol::envelope::Purpose;
use tessera_protocol::wire::{ErrorKind, RegisterBody, Registered, Reply, SealedBody, TokenError, b64, unb64};

use super::enroll;
use super::token::{Answer, Unopened, check_fresh, internal, open, parse_body, refuse, verify_signature};
use crate::db::audit::Entry;
use crate::db::devices::NewDevice;
use crate::db::domains::DomainRow;
use crate::domain::pin;
use crate::error::is_unique_violation;
use crate::state::AppState;

/// Handles `POST /v1/register`.
pub async fn register(state: &AppState, sealed: &SealedBody, source: IpAddr) -> Result<Answer<Registered>, Unopened> {
    // Each registration costs an argon2 hash: limit them per address before any work.
    if !state.registration_limiter.allow(source) {
        tracing::warn!(%source, "registration rate limit reached");
        return Err(Unopened::RateLimited);
    }
    let (domain, opened) = open(state, Purpose::Register, sealed, source).await?;
    let reply = match registered(state, &domain, &opened, source).await {
        Ok(r) => Reply::Ok(r),
        Err(e) => Reply::Error(e),
    };
    Ok(Answer { key: opened.response_key, reply })
}

async fn registered(
    state: &AppState,
    domain: &DomainRow,
    opened: &tessera_protocol::request::Opened,
    source: IpAddr,
) -> Result<Registered, TokenError> {
    let body: RegisterBody = parse_body(opened)?;
    let der = unb64(&body.device_public_key)
        .map_err(|_| refuse(ErrorKind::BadRequest, "the device public key is not valid base64"))?;
    // Proof of possession: the registration is signed by the key it registers.
    verify_signature(state, opened, &der).await?;
    let key_id = device_id(&der);
    check_fresh(state, &key_id, body.timestamp, &body.nonce).await?;
    pin::check_policy(&body.pin, domain.pin_min_length as u32).map_err(|m| refuse(ErrorKind::PinPolicy, m))?;
    let pin = body.pin.clone();
    let pin_hash =
        state.argon2(move || pin::hash(&pin)).await.and_then(|r| r).map_err(|e| internal("hashing a PIN failed", e))?;

    let now = crate::now();
    let mut server_nonce = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut server_nonce);
    if let Some(ec) = body.enrollment_code.as_deref() {
        // Automated validation: the code is consumed and the device bound in one transaction.
        let user = enroll::redeem(state, domain, (&key_id, &der, &pin_hash), ec, source).await?;
        return Ok(Registered {
            device_id: key_id,
            server_nonce: b64(&server_nonce),
            expires_in_secs: 0,
            validated_username: Some(user),
        });
    }
    let code = registration_code(&domain.public_key, &key_id, &server_nonce);
    let expires_at = now + domain.registration_ttl_secs;
    let store = &state.store;
    store.delete_expired_registration(domain.id, &key_id, now).await.map_err(|e| internal("pruning failed", e))?;
    let new = NewDevice {
        domain_id: domain.id,
        device_key_id: &key_id,
        public_key: &der,
        pin_hash: &pin_hash,
        registration_code: &code,
        registration_expires_at: expires_at,
    };
    match store.insert_pending_device(new).await {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(refuse(ErrorKind::BadRequest, "this device key is already registered with the domain"));
        }
        Err(e) => return Err(internal("storing a registration failed", e)),
    }
    let entry = Entry {
        actor: "token",
        kind: "registration.new",
        domain_code: Some(&domain.code),
        source: Some(source.to_string()),
        detail: format!("device {} registered; waiting for validation", &key_id[..16]),
        ..Default::default()
    };
    store.audit(entry).await.map_err(|e| internal("audit write failed", e))?;
    tracing::info!(domain = %domain.code, device = &key_id[..16], %source, "new registration pending validation");
    Ok(Registered {
        device_id: key_id,
        server_nonce: b64(&server_nonce),
        expires_in_secs: domain.registration_ttl_secs as u64,
        validated_username: None,
    })
}
