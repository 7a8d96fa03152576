//! Enrollment codes (WiKID's "automated initial validation"): an administrator issues a
//! one-time code for a username; a token that registers with it is validated at once.
//!
//! A code is 20 characters from a 32-letter alphabet (100 bits), shown once and stored only as
//! its SHA-256: guessing one online is hopeless, and the database does not reveal them.

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use tessera_protocol::wire::{ErrorKind, TokenError};

use super::admin::{audit, domain};
use super::token::{internal, refuse};
use crate::db::Store;
use crate::db::audit::Entry;
use crate::db::domains::DomainRow;
use crate::db::enrollment::{EnrolledDevice, EnrollmentRow, NewEnrollment, Redeem};
use crate::domain::Username;
use crate::error::{Error, Result};
use crate::state::AppState;

/// Days a code stays valid unless the administrator says otherwise.
pub const DEFAULT_DAYS: u32 = 7;

/// No 0/O or 1/I, so a code read over the phone survives; 32 letters, so `byte % 32` is unbiased.
const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// Issues a code for `username` in a domain; returns it (the only time it is seen).
pub async fn issue(store: &Store, actor: &str, domain_code: &str, username: &str, days: u32) -> Result<String> {
    let domain = domain(store, domain_code).await?;
    let name = Username::parse(username).map_err(Error::Refused)?;
    if !(1..=90).contains(&days) {
        return Err(Error::refused("an enrollment code lasts 1 to 90 days"));
    }
    let code = generate();
    let new = NewEnrollment {
        domain_id: domain.id,
        username: name.as_str(),
        code_hash: &hash(&code),
        created_by: actor,
        expires_at: crate::now() + i64::from(days) * 86_400,
    };
    store.insert_enrollment(new).await?;
    let detail = format!("enrollment code issued, valid {days} day(s)");
    audit(store, actor, "enrollment.issue", Some(&domain.code), Some(name.as_str()), detail).await?;
    Ok(code)
}

/// Codes of a domain that can still be redeemed.
pub async fn outstanding(store: &Store, domain_code: &str) -> Result<Vec<EnrollmentRow>> {
    let domain = domain(store, domain_code).await?;
    Ok(store.outstanding_enrollments(domain.id, crate::now()).await?)
}

/// Revokes an outstanding code.
pub async fn revoke(store: &Store, actor: &str, domain_code: &str, id: i64) -> Result<String> {
    let domain = domain(store, domain_code).await?;
    let Some(username) = store.revoke_enrollment(domain.id, id, crate::now()).await? else {
        return Err(Error::refused("no such outstanding enrollment code (already used or revoked?)"));
    };
    audit(store, actor, "enrollment.revoke", Some(&domain.code), Some(&username), "enrollment code revoked".into())
        .await?;
    Ok(username)
}

/// A registering device with a code: consumes the code and stores the device validated for
/// the code's user, atomically. Returns the username.
pub async fn redeem(
    state: &AppState,
    domain: &DomainRow,
    device: (&str, &[u8], &str),
    code: &str,
    source: IpAddr,
) -> std::result::Result<String, TokenError> {
    let (device_key_id, public_key, pin_hash) = device;
    let d = EnrolledDevice { domain_id: domain.id, code_hash: &hash(code), device_key_id, public_key, pin_hash };
    let username = match state.store.redeem_enrollment(d, crate::now()).await {
        Ok(Redeem::Validated(u)) => u,
        Ok(Redeem::NoSuchCode) => {
            tracing::info!(domain = %domain.code, %source, "registration with an unknown, used or expired enrollment code");
            return Err(refuse(ErrorKind::BadRequest, "the enrollment code is wrong, expired or already used"));
        }
        Ok(Redeem::DeviceExists) => {
            return Err(refuse(ErrorKind::BadRequest, "this device key is already registered with the domain"));
        }
        Err(e) => return Err(internal("redeeming an enrollment code failed", e)),
    };
    let entry = Entry {
        actor: "token",
        kind: "registration.enrolled",
        domain_code: Some(&domain.code),
        username: Some(&username),
        source: Some(source.to_string()),
        detail: format!("device {} registered and validated by enrollment code", &device_key_id[..16]),
    };
    state.store.audit(entry).await.map_err(|e| internal("audit write failed", e))?;
    tracing::info!(domain = %domain.code, user = %username, %source, "registration validated by enrollment code");
    Ok(username)
}

/// A fresh code, grouped by fours: `ABCD-EFGH-JKMN-PQRS-TUVW`.
fn generate() -> String {
    let mut bytes = [0u8; 20];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut bytes);
    let letters: Vec<char> = bytes.iter().map(|b| ALPHABET[usize::from(*b) % 32] as char).collect();
    letters.chunks(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join("-")
}

/// The stored form: SHA-256 of the code without separators, in capitals.
pub fn hash(code: &str) -> Vec<u8> {
    let normal: String = code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect();
    Sha256::digest(normal.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_grouped_and_hash_alike_however_typed() {
        let code = generate();
        assert_eq!(code.len(), 24);
        assert_eq!(code.matches('-').count(), 4);
        assert_eq!(hash(&code), hash(&code.to_lowercase().replace('-', " ")));
        assert_ne!(generate(), code);
    }
}
