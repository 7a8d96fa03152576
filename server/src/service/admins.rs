//! Console administrators: accounts, sign-in with throttling, and server-side sessions.
//!
//! A session is a random 32-byte token in a cookie; the database keeps only its SHA-256, so
//! reading the database does not let anyone sign in. Sessions end after 30 minutes idle or
//! 12 hours in all, whichever comes first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::admin::audit;
use crate::db::Store;
use crate::db::admins::SessionRow;
use crate::domain::{Username, password};
use crate::error::{Error, Result, is_unique_violation};
use crate::state::AppState;

/// A session unused this long is over.
pub const IDLE_SECS: i64 = 30 * 60;
/// A session older than this is over however busy it is.
pub const ABSOLUTE_SECS: i64 = 12 * 3600;

/// Creates an administrator; the password is hashed with argon2id off the runtime.
pub async fn add_admin(store: &Store, actor: &str, username: &str, password: String) -> Result<()> {
    let name = Username::parse(username).map_err(Error::Refused)?;
    password::check_policy(&password).map_err(Error::Refused)?;
    let hash = tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(anyhow::Error::from)?
        .map_err(Error::Internal)?;
    match store.insert_admin(name.as_str(), &hash).await {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::refused(format!("an administrator named {:?} already exists", name.as_str())));
        }
        Err(e) => return Err(e.into()),
    }
    audit(store, actor, "admin.add", None, None, format!("administrator {:?} created", name.as_str())).await
}

/// Why a sign-in failed. The two wrong-credential cases are one variant on purpose.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("wrong name or password")]
    Wrong,
    #[error("too many failed sign-ins: wait {0} minutes and try again")]
    Throttled(u64),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Counts failed sign-ins per address and per name in a sliding window.
pub struct LoginThrottle {
    window: Duration,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

/// Failures allowed per name in the window (an attacker guessing one admin's password).
const PER_NAME: usize = 5;
/// Failures allowed per address (an attacker spraying many names).
const PER_ADDRESS: usize = 10;

impl Default for LoginThrottle {
    fn default() -> Self {
        Self { window: Duration::from_secs(15 * 60), failures: Mutex::new(HashMap::new()) }
    }
}

impl LoginThrottle {
    fn keys(source: IpAddr, username: &str) -> [(String, usize); 2] {
        [(format!("ip:{source}"), PER_ADDRESS), (format!("name:{}", username.to_lowercase()), PER_NAME)]
    }

    /// Minutes to wait when either key is over its limit.
    fn blocked(&self, source: IpAddr, username: &str) -> Option<u64> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.window;
        map.retain(|_, times| {
            times.retain(|t| t.elapsed() < window);
            !times.is_empty()
        });
        Self::keys(source, username).iter().find_map(|(key, limit)| {
            let times = map.get(key)?;
            (times.len() >= *limit).then(|| (window.saturating_sub(times[0].elapsed()).as_secs() / 60).max(1))
        })
    }

    fn record(&self, source: IpAddr, username: &str, failed: bool) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for (key, _) in Self::keys(source, username) {
            if failed {
                map.entry(key).or_default().push(Instant::now());
            } else if key.starts_with("name:") {
                map.remove(&key);
            }
        }
    }
}

/// Checks a name and password; on success opens a session and returns its cookie token.
/// An unknown name costs the same argon2 work as a wrong password and gets the same answer.
pub async fn login(
    state: &AppState,
    throttle: &LoginThrottle,
    username: &str,
    password: String,
    source: IpAddr,
) -> std::result::Result<String, LoginError> {
    if let Some(minutes) = throttle.blocked(source, username) {
        tracing::warn!(%source, "console sign-in refused: too many failures");
        return Err(LoginError::Throttled(minutes));
    }
    let admin = state.store.admin_by_name(username).await.map_err(anyhow::Error::from)?;
    let stored = admin.as_ref().map(|a| a.password_hash.clone());
    let ok = state.blocking(move || password::verify(&password, stored.as_deref())).await?;
    let entry_source = Some(source.to_string());
    let Some(admin) = admin.filter(|_| ok) else {
        throttle.record(source, username, true);
        tracing::debug!(%source, "console sign-in failed");
        let detail = format!("failed sign-in as {username:?}");
        let entry = crate::db::audit::Entry {
            actor: "console",
            kind: "admin.login_failed",
            source: entry_source,
            detail,
            ..Default::default()
        };
        state.store.audit(entry).await.map_err(anyhow::Error::from)?;
        return Err(LoginError::Wrong);
    };
    throttle.record(source, username, false);
    let token = random_hex();
    let now = crate::now();
    state.store.insert_session(&token_hash(&token), admin.id, &random_hex(), now).await.map_err(anyhow::Error::from)?;
    let entry = crate::db::audit::Entry {
        actor: &admin.username,
        kind: "admin.login",
        source: entry_source,
        detail: "signed in to the console".into(),
        ..Default::default()
    };
    state.store.audit(entry).await.map_err(anyhow::Error::from)?;
    Ok(token)
}

/// The live session for a cookie token, if any.
pub async fn session(store: &Store, token: &str) -> anyhow::Result<Option<SessionRow>> {
    let now = crate::now();
    Ok(store.live_session(&token_hash(token), now - IDLE_SECS, now - ABSOLUTE_SECS, now).await?)
}

/// Ends a session.
pub async fn logout(store: &Store, session_id: i64, admin: &str, source: IpAddr) -> anyhow::Result<()> {
    store.delete_session(session_id).await?;
    let entry = crate::db::audit::Entry {
        actor: admin,
        kind: "admin.logout",
        source: Some(source.to_string()),
        detail: "signed out".into(),
        ..Default::default()
    };
    Ok(store.audit(entry).await?)
}

/// 32 random bytes, hex-encoded: session tokens and CSRF tokens.
pub fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut bytes);
    hex::encode(bytes)
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_for_a_name_block_it_and_a_success_clears_it() {
        let t = LoginThrottle::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..5 {
            assert!(t.blocked(ip, "root").is_none());
            t.record(ip, "root", true);
        }
        assert!(t.blocked(ip, "ROOT").is_some(), "names are compared without case");
        assert!(t.blocked("10.0.0.2".parse().unwrap(), "other").is_none());
        t.record(ip, "root", false);
        assert!(t.blocked(ip, "root").is_none());
    }
}
