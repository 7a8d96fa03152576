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
use crate::state::{AppState, Nonce, PinCheck, PinChecked};

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
    let device = state
        .store
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

    // The attempt is taken before the PIN is checked, so parallel guesses cannot exceed the limit.
    let limit = domain.max_pin_failures;
    let check = PinCheck {
        nonce,
        device_id: device.id,
        user_id,
        limit,
        pin: body.pin.clone(),
        pin_hash: device.pin_hash.clone(),
        passcode_length: domain.passcode_length as u32,
        expires_at: now + domain.passcode_lifetime_secs,
        now,
    };
    let detail = format!("passcode issued, valid {} s", domain.passcode_lifetime_secs);
    let checked = state.check_pin_and_issue(check, audit("token.passcode", detail)).await;
    match checked.map_err(|e| internal("a passcode request's PIN check failed", e))? {
        PinChecked::Issued(code) => {
            tracing::info!(domain = %domain.code, user = username, %source, "passcode issued");
            Ok(Passcode { passcode: code.to_string(), expires_in_secs: domain.passcode_lifetime_secs as u64 })
        }
        PinChecked::Wrong { attempts } => {
            let left = (limit - attempts).max(0) as u32;
            let detail =
                if left == 0 { "wrong PIN; device locked".to_owned() } else { format!("wrong PIN; {left} left") };
            state.store.audit(audit("token.wrong_pin", detail)).await.map_err(|e| internal("audit write failed", e))?;
            tracing::warn!(domain = %domain.code, user = username, %source, attempts_left = left, "wrong PIN");
            if left == 0 {
                return Err(locked());
            }
            Err(TokenError { kind: ErrorKind::WrongPin, message: "wrong PIN".into(), attempts_left: Some(left) })
        }
        PinChecked::Locked => Err(locked()),
        PinChecked::Replay => Err(replay()),
    }
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
