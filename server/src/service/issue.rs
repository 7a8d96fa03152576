//! Issuing a passcode to a registered device that proves its key and its user's PIN.

use std::net::IpAddr;

use tessera_protocol::envelope::Purpose;
use tessera_protocol::request::Opened;
use tessera_protocol::wire::{ErrorKind, Passcode, PasscodeBody, Reply, SealedBody, TokenError};

use super::token::{
    Answer, Unopened, check_fresh, check_time, internal, open, parse_body, refuse, replay, verify_signature,
};
use crate::db::audit::Entry;
use crate::db::devices::DeviceRow;
use crate::db::domains::DomainRow;
use crate::db::passcodes::NewPasscode;
use crate::domain::{passcode, pin};
use crate::state::{Admission, AppState, Nonce};

/// Handles `POST /v1/passcode`.
pub async fn issue_passcode(
    state: &AppState,
    sealed: &SealedBody,
    source: IpAddr,
) -> Result<Answer<Passcode>, Unopened> {
    let (domain, opened) = open(state, Purpose::Passcode, sealed, source).await?;
    let reply = match issued(state, &domain, &opened, source).await {
        Ok(p) => Reply::Ok(p),
        Err(e) => Reply::Error(e),
    };
    Ok(Answer { key: opened.response_key, reply })
}

async fn issued(state: &AppState, domain: &DomainRow, opened: &Opened, source: IpAddr) -> Result<Passcode, TokenError> {
    let body: PasscodeBody = parse_body(opened)?;
    let store = &state.store;
    let device = store
        .device_by_key(domain.id, &body.device_id)
        .await
        .map_err(|e| internal("device lookup failed", e))?
        .ok_or_else(|| refuse(ErrorKind::UnknownDevice, "this device is not registered with the domain"))?;
    verify_signature(state, opened, &device.public_key).await?;
    let now = crate::now();
    let (user_id, username) = match usable(&device, now) {
        Ok(user) => user,
        Err(refusal) => {
            // A replay is refused as such whatever the device's state.
            check_fresh(state, &body.device_id, body.timestamp, &body.nonce).await?;
            return Err(refusal);
        }
    };
    let nonce = Nonce {
        device_key_id: body.device_id.clone(),
        nonce: body.nonce.clone(),
        expires_at: check_time(body.timestamp, &body.nonce)?,
    };
    let audit = |kind: &'static str, detail: String| Entry {
        actor: "token",
        kind,
        domain_code: Some(&domain.code),
        username: Some(username),
        source: Some(source.to_string()),
        detail,
    };

    // Take the attempt before checking, so parallel guesses cannot exceed the limit.
    let limit = domain.max_pin_failures;
    let count = match state
        .admit_pin_check(nonce, device.id, limit)
        .await
        .map_err(|e| internal("recording the nonce and the PIN attempt failed", e))?
    {
        Admission::Attempt(count) => count,
        Admission::Locked => return Err(locked()),
        Admission::Replay => return Err(replay()),
    };
    let (pin, hash) = (body.pin.clone(), device.pin_hash.clone());
    let right = state.argon2(move || pin::verify(&pin, &hash)).await.map_err(|e| internal("PIN check failed", e))?;
    if !right {
        let left = (limit - count).max(0) as u32;
        let detail = if left == 0 { "wrong PIN; device locked".to_owned() } else { format!("wrong PIN; {left} left") };
        store.audit(audit("token.wrong_pin", detail)).await.map_err(|e| internal("audit write failed", e))?;
        tracing::warn!(domain = %domain.code, user = username, %source, attempts_left = left, "wrong PIN");
        if left == 0 {
            return Err(locked());
        }
        return Err(TokenError { kind: ErrorKind::WrongPin, message: "wrong PIN".into(), attempts_left: Some(left) });
    }

    let code = passcode::generate(domain.passcode_length as u32);
    let hash = state.passcode_key.hash(user_id, &code);
    let new = NewPasscode {
        user_id,
        device_id: device.id,
        hash: &hash,
        expires_at: now + domain.passcode_lifetime_secs,
        now,
    };
    let detail = format!("passcode issued, valid {} s", domain.passcode_lifetime_secs);
    state.insert_passcode(new, audit("token.passcode", detail)).await.map_err(|e| internal("storing failed", e))?;
    tracing::info!(domain = %domain.code, user = username, %source, "passcode issued");
    Ok(Passcode { passcode: code.to_string(), expires_in_secs: domain.passcode_lifetime_secs as u64 })
}

/// The device's user, or why the device cannot have a passcode.
fn usable(device: &DeviceRow, now: i64) -> Result<(i64, &str), TokenError> {
    let (Some(user_id), Some(username)) = (device.user_id, device.username.as_deref()) else {
        if device.registration_expires_at.is_some_and(|t| t < now) {
            return Err(refuse(ErrorKind::UnknownDevice, "this registration expired before it was validated"));
        }
        return Err(refuse(ErrorKind::PendingValidation, "the registration has not been validated yet"));
    };
    if device.disabled != 0 || device.user_disabled.unwrap_or(0) != 0 {
        return Err(refuse(ErrorKind::Disabled, "this user or device is disabled"));
    }
    Ok((user_id, username))
}

fn locked() -> TokenError {
    refuse(ErrorKind::Locked, "this device is locked after too many wrong PINs")
}
