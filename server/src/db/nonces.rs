//! Replay protection for token requests, shared by every node through the database.

use super::Store;
use crate::error::is_unique_violation;

impl Store {
    /// Records a request nonce; false when it was seen before (a replay).
    pub async fn record_nonce(&self, device_key_id: &str, nonce: &str, expires_at: i64) -> sqlx::Result<bool> {
        let _turn = self.write_turn().await;
        let r = sqlx::query("INSERT INTO request_nonces (device_key_id, nonce, expires_at) VALUES ($1, $2, $3)")
            .bind(device_key_id.to_owned())
            .bind(nonce.to_owned())
            .bind(expires_at)
            .execute(self.pool())
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
