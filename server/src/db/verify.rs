//! The statements of a passcode check, shared by the two ledgers that run them: [`PoolLedger`]
//! here (sqlx, any engine) and the SQLite engine's (`db::engine`). Written with `$N`
//! placeholders, which PostgreSQL takes as they are and the engine turns into SQLite's `?N`.

use crate::db::Store;
use crate::db::audit::{Entry, clip_str};
use crate::db::passcodes::PasscodeRow;
use crate::service::throttle::ThrottlePolicy;
use crate::service::verify::{Ledger, UserFacts};

/// A user with its domain's guessing limit and its wrong passcodes inside that window:
/// `$1` domain id, `$2` username, `$3` now. One statement instead of three on the hot path.
pub const USER_FACTS: &str = "SELECT u.id, u.disabled, d.max_passcode_failures, d.passcode_failure_window_secs, \
     (SELECT COUNT(*) FROM passcode_failures f \
       WHERE f.user_id = u.id AND f.cleared = 0 AND f.at > $3 - d.passcode_failure_window_secs) \
     FROM users u JOIN domains d ON d.id = u.domain_id WHERE u.domain_id = $1 AND u.username = $2";

/// [`USER_FACTS`] without the count, for the SQLite engine, which counts failures in memory
/// (`db::failures`).
pub const ENGINE_USER_FACTS: &str = "SELECT u.id, u.disabled, d.max_passcode_failures, \
     d.passcode_failure_window_secs FROM users u JOIN domains d ON d.id = u.domain_id \
     WHERE u.domain_id = $1 AND u.username = $2";

/// What the SQLite engine reads of a user its index in memory knows (`db::user_index`): the
/// domain's guessing limit and window (`$1` domain id), and whether the user (`$2`) is
/// disabled, from the index of disabled users alone (migration 0010), which stays in the
/// CPU's caches, rather than from the user's row. `INDEXED BY` makes a missing index fail
/// the engine's start. No row when the domain is gone.
pub const ENGINE_USER_BY_ID: &str = "SELECT max_passcode_failures, passcode_failure_window_secs, \
     EXISTS (SELECT 1 FROM users INDEXED BY users_disabled WHERE id = $2 AND disabled != 0) \
     FROM domains WHERE id = $1";

/// A user's most recent passcodes (live, used and recently expired), newest first, with
/// their devices' `disabled` flags: one round trip to PostgreSQL.
pub const RECENT_PASSCODES: &str = "SELECT p.id, p.hash, p.expires_at, p.used, p.device_id, d.disabled AS device_disabled \
     FROM passcodes p JOIN devices d ON d.id = p.device_id WHERE p.user_id = $1 ORDER BY p.id DESC LIMIT 32";

/// [`RECENT_PASSCODES`] without the devices, for the SQLite engine: it reads a device only
/// for a passcode that matched ([`DEVICE_DISABLED`]). A wrong passcode matches nothing, so a
/// Reject no longer reads a device's row from a page of its own (BENCHMARKS.md).
pub const ENGINE_RECENT_PASSCODES: &str = "SELECT id, hash, expires_at, used, device_id FROM passcodes \
     WHERE user_id = $1 ORDER BY id DESC LIMIT 32";

/// A device's `disabled` flag.
pub const DEVICE_DISABLED: &str = "SELECT disabled FROM devices WHERE id = $1";

/// Whether a device is disabled, for the SQLite engine: a row if it is, none otherwise,
/// read from the index of disabled devices alone (migration 0008), which stays in the
/// CPU's caches, rather than from the device's row, a page of its own among a million.
/// `INDEXED BY` makes the statement fail to prepare, at the engine's start, if the index
/// is missing, rather than fall back to the table. A device that was removed reads as
/// enabled here, but its passcodes went with it (`ON DELETE CASCADE`, with foreign keys
/// on in every connection), so no passcode of one is left to match.
pub const ENGINE_DEVICE_DISABLED: &str =
    "SELECT 1 FROM devices INDEXED BY devices_disabled WHERE id = $1 AND disabled != 0";

/// The single-use step: of any number of concurrent callers, on one node or many, exactly
/// one changes the row.
pub const CONSUME_PASSCODE: &str = "UPDATE passcodes SET used = 1 WHERE id = $1 AND used = 0 AND expires_at > $2";

pub const CLEAR_FAILURES: &str = "DELETE FROM passcode_failures WHERE user_id = $1";
/// The marker a reset leaves, for the SQLite engine, which reads only rows it has not seen.
pub const MARK_CLEARED: &str = "INSERT INTO passcode_failures (user_id, at, cleared) VALUES ($1, $2, 1)";
pub const FORGET_OLD_FAILURES: &str = "DELETE FROM passcode_failures WHERE user_id = $1 AND at <= $2";
pub const RECORD_FAILURE: &str = "INSERT INTO passcode_failures (user_id, at) VALUES ($1, $2)";

pub const AUDIT_INSERT: &str = "INSERT INTO audit_log (at, actor, kind, domain_code, username, source, detail) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// The columns of [`USER_FACTS`] as stored.
pub type UserFactsRow = (i64, i64, i64, i64, i64);

/// Turns a [`USER_FACTS`] row into the service's view.
pub fn user_facts((id, disabled, max_failures, window_secs, recent_failures): UserFactsRow) -> UserFacts {
    let defaults = ThrottlePolicy::default();
    UserFacts {
        id,
        disabled: disabled != 0,
        policy: ThrottlePolicy {
            max_failures: u32::try_from(max_failures).unwrap_or(defaults.max_failures),
            window_secs: u32::try_from(window_secs).unwrap_or(defaults.window_secs),
        },
        recent_failures,
    }
}

/// The ledger over the sqlx pool: each statement commits on its own, as a multi-node
/// PostgreSQL deployment needs (no lock is held between statements).
pub struct PoolLedger<'a>(pub &'a Store);

impl Ledger for PoolLedger<'_> {
    async fn user(&mut self, domain_id: i64, username: &str, now: i64) -> anyhow::Result<Option<UserFacts>> {
        let row: Option<UserFactsRow> = sqlx::query_as(USER_FACTS)
            .bind(domain_id)
            .bind(username.to_owned())
            .bind(now)
            .fetch_optional(self.0.pool())
            .await?;
        Ok(row.map(user_facts))
    }

    async fn recent_passcodes(&mut self, user_id: i64) -> anyhow::Result<Vec<PasscodeRow>> {
        Ok(self.0.recent_passcodes(user_id).await?)
    }

    async fn device_disabled(&mut self, device_id: i64) -> anyhow::Result<bool> {
        let disabled: Option<i64> =
            sqlx::query_scalar(DEVICE_DISABLED).bind(device_id).fetch_optional(self.0.pool()).await?;
        // A device removed since: as good as disabled.
        Ok(disabled.is_none_or(|d| d != 0))
    }

    async fn consume(&mut self, passcode_id: i64, now: i64) -> anyhow::Result<bool> {
        Ok(self.0.consume_passcode(passcode_id, now).await?)
    }

    async fn clear_failures(&mut self, user_id: i64) -> anyhow::Result<()> {
        Ok(self.0.clear_passcode_failures(user_id).await?)
    }

    async fn record_failure(&mut self, user_id: i64, now: i64, forget_before: i64) -> anyhow::Result<()> {
        Ok(self.0.record_passcode_failure(user_id, now, forget_before).await?)
    }

    async fn audit(&mut self, entry: Entry<'_>) -> anyhow::Result<()> {
        Ok(self.0.audit(entry).await?)
    }
}

/// The seven values of [`AUDIT_INSERT`], owned.
pub type AuditValues = (i64, String, String, Option<String>, Option<String>, Option<String>, String);

/// The seven values of [`AUDIT_INSERT`], borrowed from the entry.
pub type AuditRefs<'a> = (i64, &'a str, &'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>, &'a str);

/// The seven values of [`AUDIT_INSERT`], clipped so a peer cannot bloat the log, borrowed:
/// the engine binds them as they are, without a copy of each (BENCHMARKS.md).
pub fn audit_refs<'a>(e: &'a Entry<'_>, at: i64) -> AuditRefs<'a> {
    (
        at,
        clip_str(e.actor),
        clip_str(e.kind),
        e.domain_code.map(clip_str),
        e.username.map(clip_str),
        e.source.as_deref().map(clip_str),
        clip_str(&e.detail),
    )
}

/// [`audit_refs`], owned.
pub fn audit_values(e: &Entry<'_>, at: i64) -> AuditValues {
    let (at, actor, kind, domain_code, username, source, detail) = audit_refs(e, at);
    (
        at,
        actor.to_owned(),
        kind.to_owned(),
        domain_code.map(str::to_owned),
        username.map(str::to_owned),
        source.map(str::to_owned),
        detail.to_owned(),
    )
}
