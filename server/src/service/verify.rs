//! Verifying a passcode for a network client: the RADIUS use-case.

use std::net::SocketAddr;

use crate::db::audit::Entry;
use crate::domain::Username;
use crate::domain::passcode::hashes_equal;
use crate::state::AppState;

/// The answer to give; the reason is for the log and the audit trail only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept,
    Reject(&'static str),
}

/// Who is asking: a network client and the domain whose users it may check.
pub struct Asker<'a> {
    pub client_name: &'a str,
    pub domain_id: i64,
    pub domain_code: &'a str,
    pub source: SocketAddr,
}

/// Checks `passcode` for `username` in the asker's domain and consumes it on success.
pub async fn verify_passcode(
    state: &AppState,
    asker: &Asker<'_>,
    username: &str,
    passcode: &str,
) -> anyhow::Result<Decision> {
    let decision = decide(state, asker, username, passcode).await?;
    let (kind, detail) = match &decision {
        Decision::Accept => ("radius.accept", "passcode accepted".to_owned()),
        Decision::Reject(why) => ("radius.reject", (*why).to_owned()),
    };
    let actor = format!("radius:{}", asker.client_name);
    let entry = Entry {
        actor: &actor,
        kind,
        domain_code: Some(asker.domain_code),
        username: Some(username),
        source: Some(asker.source.ip().to_string()),
        detail: detail.clone(),
    };
    state.store.audit(entry).await?;
    match &decision {
        Decision::Accept => tracing::info!(client = asker.client_name, user = username, "Access-Accept"),
        Decision::Reject(why) => {
            tracing::info!(client = asker.client_name, user = username, reason = why, "Access-Reject")
        }
    }
    Ok(decision)
}

async fn decide(state: &AppState, asker: &Asker<'_>, username: &str, passcode: &str) -> anyhow::Result<Decision> {
    let Ok(username) = Username::parse(username) else {
        return Ok(Decision::Reject("malformed username"));
    };
    let Some(user) = state.store.user_by_name(asker.domain_id, username.as_str()).await? else {
        return Ok(Decision::Reject("unknown user in this client's domain"));
    };
    if user.disabled != 0 {
        return Ok(Decision::Reject("user disabled"));
    }
    let hash = state.passcode_key.hash(user.id, passcode);
    let now = crate::now();
    // Compare against every recent passcode in constant time, then act on the match.
    let mut matched = None;
    for row in state.store.recent_passcodes(user.id).await? {
        if hashes_equal(&row.hash, &hash) {
            matched = Some(row);
        }
    }
    let Some(row) = matched else {
        return Ok(Decision::Reject("wrong passcode"));
    };
    if row.used != 0 {
        return Ok(Decision::Reject("passcode already used"));
    }
    if row.expires_at <= now {
        return Ok(Decision::Reject("passcode expired"));
    }
    if row.device_disabled != 0 {
        return Ok(Decision::Reject("device disabled"));
    }
    if state.store.consume_passcode(row.id, now).await? {
        Ok(Decision::Accept)
    } else {
        Ok(Decision::Reject("passcode already used"))
    }
}
