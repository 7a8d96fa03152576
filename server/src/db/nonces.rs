//! Replay protection for token requests, shared by every node through the database.

use rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY;
use rusqlite::{Connection, params};

use super::Store;
use super::engine::sqlite_sql;
use crate::error::is_unique_violation;

const RECORD: &str = "INSERT INTO request_nonces (device_key_id, nonce, expires_at) VALUES ($1, $2, $3)";

impl Store {
    /// Records a request nonce; false when it was seen before (a replay).
    pub async fn record_nonce(&self, device_key_id: &str, nonce: &str, expires_at: i64) -> sqlx::Result<bool> {
        let _turn = self.write_turn().await;
        let r = sqlx::query(RECORD)
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

/// [`Store::record_nonce`] on the SQLite engine's connection (`db::engine::Engine::write`).
pub fn record_nonce_in(conn: &Connection, device_key_id: &str, nonce: &str, expires_at: i64) -> rusqlite::Result<bool> {
    match conn.prepare_cached(&sqlite_sql(RECORD))?.execute(params![device_key_id, nonce, expires_at]) {
        Ok(_) => Ok(true),
        // The primary key (device, nonce): seen before.
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.extended_code == SQLITE_CONSTRAINT_PRIMARYKEY => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_db::migrated;

    #[test]
    fn a_nonce_is_fresh_once_per_device() {
        let (_dir, conn) = migrated();
        assert!(record_nonce_in(&conn, "device-a", "nonce-1", 100).unwrap());
        assert!(!record_nonce_in(&conn, "device-a", "nonce-1", 100).unwrap(), "a replay");
        assert!(record_nonce_in(&conn, "device-b", "nonce-1", 100).unwrap(), "another device's");
        assert!(record_nonce_in(&conn, "device-a", "nonce-2", 100).unwrap());
    }
}
