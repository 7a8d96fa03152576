//! Outstanding passcodes (keyed hashes) and their single-use consumption.

use sqlx::FromRow;

use super::Store;

/// A stored passcode hash with its state.
#[derive(Clone, Debug, FromRow)]
pub struct PasscodeRow {
    pub id: i64,
    pub hash: Vec<u8>,
    pub expires_at: i64,
    pub used: i64,
    pub device_disabled: i64,
}

impl Store {
    /// Stores a new passcode for a device, replacing its unused ones: a token holds one live
    /// passcode at a time.
    pub async fn insert_passcode(
        &self,
        user_id: i64,
        device_id: i64,
        hash: &[u8],
        expires_at: i64,
        now: i64,
    ) -> sqlx::Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM passcodes WHERE device_id = $1 AND used = 0")
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO passcodes (user_id, device_id, hash, expires_at, used, created_at) VALUES ($1, $2, $3, $4, 0, $5)")
            .bind(user_id)
            .bind(device_id)
            .bind(hash.to_vec())
            .bind(expires_at)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// A user's most recent passcodes (live, used and recently expired), newest first.
    pub async fn recent_passcodes(&self, user_id: i64) -> sqlx::Result<Vec<PasscodeRow>> {
        sqlx::query_as(
            "SELECT p.id, p.hash, p.expires_at, p.used, d.disabled AS device_disabled \
             FROM passcodes p JOIN devices d ON d.id = p.device_id \
             WHERE p.user_id = $1 ORDER BY p.id DESC LIMIT 32",
        )
        .bind(user_id)
        .fetch_all(self.pool())
        .await
    }

    /// Consumes a passcode if it is still unused and unexpired. The single conditional UPDATE
    /// is the atomic step: of any number of concurrent callers, on one node or many, exactly
    /// one sees `true`.
    pub async fn consume_passcode(&self, passcode_id: i64, now: i64) -> sqlx::Result<bool> {
        let r = sqlx::query("UPDATE passcodes SET used = 1 WHERE id = $1 AND used = 0 AND expires_at > $2")
            .bind(passcode_id)
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() == 1)
    }
}
