//! Console administrators: accounts, sign-in with throttling, and server-side sessions.
//!
//! A session is a random 32-byte token in a cookie; the database keeps only its SHA-256, so
//! reading the database does not let anyone sign in. Sessions end after 30 minutes idle or
//! 12 hours in all, whichever comes first.

use std::net::IpAddr;

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

/// Counts failed sign-ins per address and per name in a sliding window. The failures live in
/// the database, so every node sharing it enforces the same limits.
pub struct LoginThrottle {
    window_secs: i64,
}

/// Failures allowed per name in the window (an attacker guessing one admin's password).
const PER_NAME: i64 = 5;
/// Failures allowed per address (an attacker spraying many names).
const PER_ADDRESS: i64 = 10;

impl Default for LoginThrottle {
    fn default() -> Self {
        Self { window_secs: 15 * 60 }
    }
}

impl LoginThrottle {
    /// Minutes to wait when the name or the address is over its limit.
    async fn blocked(&self, store: &Store, source: IpAddr, username: &str) -> anyhow::Result<Option<u64>> {
        let now = crate::now();
        let name = username.to_lowercase();
        let ((by_name, name_oldest), (by_source, source_oldest)) =
            store.login_failures_since(&name, &source.to_string(), now - self.window_secs).await?;
        let oldest = if by_name >= PER_NAME {
            name_oldest
        } else if by_source >= PER_ADDRESS {
            source_oldest
        } else {
            return Ok(None);
        };
        let left = (oldest.unwrap_or(now) + self.window_secs - now).max(0) as u64;
        Ok(Some(left.div_ceil(60).max(1)))
    }

    async fn record(&self, store: &Store, source: IpAddr, username: &str, failed: bool) -> anyhow::Result<()> {
        let name = username.to_lowercase();
        if failed {
            store.record_login_failure(&name, &source.to_string(), crate::now()).await?;
        } else {
            store.clear_login_failures(&name).await?;
        }
        Ok(())
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
    if let Some(minutes) = throttle.blocked(&state.store, source, username).await? {
        tracing::warn!(%source, "console sign-in refused: too many failures");
        return Err(LoginError::Throttled(minutes));
    }
    let admin = state.store.admin_by_name(username).await.map_err(anyhow::Error::from)?;
    let stored = admin.as_ref().map(|a| a.password_hash.clone());
    let ok = state.argon2(move || password::verify(&password, stored.as_deref())).await?;
    let entry_source = Some(source.to_string());
    let Some(admin) = admin.filter(|_| ok) else {
        throttle.record(&state.store, source, username, true).await?;
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
    throttle.record(&state.store, source, username, false).await?;
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

    #[tokio::test]
    async fn five_failures_for_a_name_block_it_on_every_node_and_a_success_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        // Two throttles over one database stand for two nodes.
        let (a, b) = (LoginThrottle::default(), LoginThrottle::default());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for i in 0..5 {
            assert!(a.blocked(&store, ip, "root").await.unwrap().is_none());
            let node = if i % 2 == 0 { &a } else { &b };
            node.record(&store, ip, "root", true).await.unwrap();
        }
        assert!(a.blocked(&store, ip, "ROOT").await.unwrap().is_some(), "names are compared without case");
        assert!(b.blocked(&store, ip, "root").await.unwrap().is_some(), "the other node agrees");
        assert!(b.blocked(&store, "10.0.0.2".parse().unwrap(), "other").await.unwrap().is_none());
        a.record(&store, ip, "root", false).await.unwrap();
        assert!(b.blocked(&store, ip, "root").await.unwrap().is_none());
    }
}
