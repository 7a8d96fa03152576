//! Verifying a passcode for a network client: the RADIUS use-case, with the guessing limit
//! (`service::throttle`) and a deadline so a locked or slow database yields a Reject, never
//! a hang.

use std::net::SocketAddr;
use std::time::Duration;

use crate::db::audit::Entry;
use crate::domain::Username;
use crate::domain::passcode::hashes_equal;
use crate::service::throttle::ThrottlePolicy;
use crate::state::AppState;

/// The answer to give; the reason is for the log and the audit trail only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept,
    Reject(&'static str),
}

/// Why a user was rejected without checking the passcode.
pub const THROTTLED: &str = "throttled: too many wrong passcodes";
/// The reason for a passcode that matches none of the user's: the only one that counts as a guess.
pub const WRONG_PASSCODE: &str = "wrong passcode";

/// Attempts at a decision when the database is briefly unavailable (locked, busy, pool
/// exhausted, connection lost). The caller bounds the whole with a deadline.
pub const ATTEMPTS: u32 = 3;

/// Who is asking: a network client and the domain whose users it may check.
pub struct Asker<'a> {
    pub client_name: &'a str,
    pub domain_id: i64,
    pub domain_code: &'a str,
    pub source: SocketAddr,
}

/// [`verify_passcode`] with bounded retries when the database is briefly unavailable; any
/// other error, or the last one, is returned (the caller rejects). Retrying is safe because
/// a passcode is consumed by one conditional UPDATE: a retry after a consumption that did
/// commit sees it used and rejects (fail closed); it never accepts twice.
pub async fn verify_with_retries(
    state: &AppState,
    asker: &Asker<'_>,
    username: &str,
    passcode: &str,
) -> anyhow::Result<Decision> {
    let mut attempt = 1;
    loop {
        match verify_passcode(state, asker, username, passcode).await {
            Err(e) if attempt < ATTEMPTS && transient(&e) => {
                tracing::warn!(
                    client = asker.client_name,
                    attempt,
                    error = format!("{e:#}"),
                    "database busy; retrying"
                );
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Errors worth another try: the database is unreachable, or SQLite is busy or locked.
fn transient(e: &anyhow::Error) -> bool {
    crate::db::is_unavailable(e)
        || e.chain().any(|c| {
            matches!(c.downcast_ref::<sqlx::Error>(), Some(sqlx::Error::Database(d))
                if matches!(d.code().as_deref(), Some("5" | "6" | "517" | "262")))
        })
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
        Decision::Reject(why) if *why == THROTTLED => ("radius.throttled", (*why).to_owned()),
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
    let now = crate::now();
    let policy = ThrottlePolicy::load(&state.store, asker.domain_id).await?;
    if policy.throttled(&state.store, user.id, now).await? {
        // Not even compared: a throttled user's guesses teach an attacker nothing.
        return Ok(Decision::Reject(THROTTLED));
    }
    let decision = check(state, user.id, passcode, now).await?;
    match decision {
        Decision::Accept => state.store.clear_passcode_failures(user.id).await?,
        // Only a passcode that matches nothing is a guess. A used or expired one is a real
        // passcode sent again (retransmissions, a client trying several servers, a slow
        // user): counting those would lock out users nobody attacked.
        Decision::Reject(WRONG_PASSCODE) => policy.record_failure(&state.store, user.id, now).await?,
        Decision::Reject(_) => {}
    }
    Ok(decision)
}

/// Compares a passcode with the user's recent ones and consumes it when right.
async fn check(state: &AppState, user_id: i64, passcode: &str, now: i64) -> anyhow::Result<Decision> {
    let hash = state.passcode_key.hash(user_id, passcode);
    // Compare against every recent passcode in constant time, then act on the match.
    let mut matched = None;
    for row in state.store.recent_passcodes(user_id).await? {
        if hashes_equal(&row.hash, &hash) {
            matched = Some(row);
        }
    }
    let Some(row) = matched else {
        return Ok(Decision::Reject(WRONG_PASSCODE));
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
