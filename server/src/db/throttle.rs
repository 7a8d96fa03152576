//! Guessing limits: a domain's policy and the wrong-passcode rows counted against it.
//!
//! One row per failure rather than a counter, so concurrent failures on several nodes never
//! lose an update, and the count is simply the rows inside the window (rows with
//! `cleared = 1` are reset markers, not failures). On a SQLite file the RADIUS path counts
//! in the engine's memory instead (`db::failures`); these queries serve PostgreSQL.

use super::Store;
use super::verify::{CLEAR_FAILURES, FORGET_OLD_FAILURES, MARK_CLEARED, RECORD_FAILURE};

impl Store {
    /// A domain's `(max_passcode_failures, passcode_failure_window_secs)`.
    pub async fn throttle_policy(&self, domain_id: i64) -> sqlx::Result<Option<(i64, i64)>> {
        sqlx::query_as("SELECT max_passcode_failures, passcode_failure_window_secs FROM domains WHERE id = $1")
            .bind(domain_id)
            .fetch_optional(self.pool())
            .await
    }

    /// Sets a domain's guessing limit.
    pub async fn set_throttle_policy(&self, domain_id: i64, max_failures: i64, window_secs: i64) -> sqlx::Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE domains SET max_passcode_failures = $1, passcode_failure_window_secs = $2 WHERE id = $3")
            .bind(max_failures)
            .bind(window_secs)
            .bind(domain_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Wrong passcodes of a user since `since` (Unix seconds) and since the last reset.
    pub async fn passcode_failures_since(&self, user_id: i64, since: i64) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM passcode_failures WHERE user_id = $1 AND cleared = 0 AND at > $2 \
             AND id > COALESCE((SELECT MAX(id) FROM passcode_failures WHERE user_id = $1 AND cleared = 1), 0)",
        )
        .bind(user_id)
        .bind(since)
        .fetch_one(self.pool())
        .await
    }

    /// Records one wrong passcode and forgets this user's failures older than `forget_before`,
    /// so the table holds at most one window's worth per user.
    pub async fn record_passcode_failure(&self, user_id: i64, now: i64, forget_before: i64) -> sqlx::Result<()> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool().begin().await?;
        sqlx::query(FORGET_OLD_FAILURES).bind(user_id).bind(forget_before).execute(&mut *tx).await?;
        sqlx::query(RECORD_FAILURE).bind(user_id).bind(now).execute(&mut *tx).await?;
        tx.commit().await
    }

    /// Forgets a user's wrong passcodes (a right passcode, or an administrator's unlock)
    /// with a marker row that every count skips past (`db::failures` on a SQLite file).
    /// Where the pool counts in SQL (PostgreSQL, SQLite in memory) the user's rows are
    /// deleted as well. On a SQLite file they are not: the log has no index by user
    /// (migration 0007), so that DELETE read the whole log while holding the write lock the
    /// verification engine needs (`user unlock` with 3,000,000 rows in the log, as a
    /// guessing attack on many users leaves: 0.10-0.19 s, against 0.007 s with the marker
    /// alone); the rows leave with the log's front at a prune.
    pub async fn clear_passcode_failures(&self, user_id: i64) -> sqlx::Result<()> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool().begin().await?;
        if self.sqlite_file().is_none() {
            sqlx::query(CLEAR_FAILURES).bind(user_id).execute(&mut *tx).await?;
        }
        sqlx::query(MARK_CLEARED).bind(user_id).bind(crate::now()).execute(&mut *tx).await?;
        tx.commit().await
    }
}
