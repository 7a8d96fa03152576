//! Outstanding passcodes (keyed hashes) and their single-use consumption.

use rusqlite::{Connection, params};
use sqlx::FromRow;

use super::Store;
use super::audit::Entry;
use super::engine::sqlite_sql;
use super::verify::{AUDIT_INSERT, AuditValues};

/// Storing an issued passcode, in this order: `$1` the device: its wrong-PIN count reset,
/// its unused passcodes replaced; then the new row.
const RESET_WRONG_PINS: &str = "UPDATE devices SET wrong_pins = 0 WHERE id = $1 AND wrong_pins <> 0";
const REPLACE_UNUSED: &str = "DELETE FROM passcodes WHERE device_id = $1 AND used = 0";
const INSERT: &str =
    "INSERT INTO passcodes (user_id, device_id, hash, expires_at, used, created_at) VALUES ($1, $2, $3, $4, 0, $5)";

/// A stored passcode hash with its state.
#[derive(Clone, Debug, FromRow)]
pub struct PasscodeRow {
    pub id: i64,
    pub hash: Vec<u8>,
    pub expires_at: i64,
    pub used: i64,
    pub device_id: i64,
    /// The device's `disabled` flag where the query joined it (the pool's); `None` from the
    /// SQLite engine, which reads it only for a passcode that matched (`Ledger::device_disabled`).
    pub device_disabled: Option<i64>,
}

/// A passcode to store: its keyed hash, whose it is, until when.
pub struct NewPasscode<'a> {
    pub user_id: i64,
    pub device_id: i64,
    pub hash: &'a [u8],
    pub expires_at: i64,
    pub now: i64,
}

impl Store {
    /// Stores a passcode issued after a right PIN, in one transaction (one commit instead
    /// of three): the device's wrong-PIN count reset, its unused passcodes replaced (a token
    /// holds one live passcode at a time), the audit entry written.
    pub async fn insert_passcode(&self, p: NewPasscode<'_>, audit: Entry<'_>) -> sqlx::Result<()> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool().begin().await?;
        sqlx::query(RESET_WRONG_PINS).bind(p.device_id).execute(&mut *tx).await?;
        sqlx::query(REPLACE_UNUSED).bind(p.device_id).execute(&mut *tx).await?;
        sqlx::query(INSERT)
            .bind(p.user_id)
            .bind(p.device_id)
            .bind(p.hash.to_vec())
            .bind(p.expires_at)
            .bind(p.now)
            .execute(&mut *tx)
            .await?;
        super::audit::write(&mut *tx, &audit).await?;
        tx.commit().await
    }

    /// A user's most recent passcodes (live, used and recently expired), newest first.
    pub async fn recent_passcodes(&self, user_id: i64) -> sqlx::Result<Vec<PasscodeRow>> {
        sqlx::query_as(super::verify::RECENT_PASSCODES).bind(user_id).fetch_all(self.pool()).await
    }

    /// Consumes a passcode if it is still unused and unexpired: true for exactly one of any
    /// number of concurrent callers ([`super::verify::CONSUME_PASSCODE`]).
    pub async fn consume_passcode(&self, passcode_id: i64, now: i64) -> sqlx::Result<bool> {
        let _turn = self.write_turn().await;
        let r = sqlx::query(super::verify::CONSUME_PASSCODE).bind(passcode_id).bind(now).execute(self.pool()).await?;
        Ok(r.rows_affected() == 1)
    }
}

/// [`Store::insert_passcode`] inside a transaction of a rusqlite connection: the SQLite
/// engine's (`db::engine::Engine::write`) and the benchmark seeder's. `audit` from
/// [`audit_values`](super::verify::audit_values).
pub fn insert_passcode_in(conn: &Connection, p: &NewPasscode<'_>, audit: &AuditValues) -> rusqlite::Result<()> {
    let prepare = |sql: &str| conn.prepare_cached(&sqlite_sql(sql));
    prepare(RESET_WRONG_PINS)?.execute(params![p.device_id])?;
    prepare(REPLACE_UNUSED)?.execute(params![p.device_id])?;
    prepare(INSERT)?.execute(params![p.user_id, p.device_id, p.hash, p.expires_at, p.now])?;
    let (at, actor, kind, domain_code, username, source, detail) = audit;
    prepare(AUDIT_INSERT)?.execute(params![at, actor, kind, domain_code, username, source, detail])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::devices::NewDevice;
    use crate::domain::DomainSettings;
    use crate::service::admin::{DomainSpec, add_domain, validate};

    /// A store on a fresh SQLite file with one validated device; returns (store, user, device).
    async fn store_with_device() -> (Store, tempfile::TempDir, i64, i64) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        let spec = DomainSpec {
            name: "Test".into(),
            code: "127000000001".into(),
            device_name: None,
            settings: DomainSettings::default(),
        };
        let domain = add_domain(&store, "test", spec).await.unwrap();
        let new = NewDevice {
            domain_id: domain.id,
            device_key_id: "dev1",
            public_key: b"key",
            pin_hash: "hash",
            registration_code: "111122223333",
            registration_expires_at: crate::now() + 60,
        };
        let device_id = store.insert_pending_device(new).await.unwrap();
        validate(&store, "test", "127000000001", "111122223333", "alice").await.unwrap();
        let user = store.user_by_name(domain.id, "alice").await.unwrap().unwrap();
        (store, dir, user.id, device_id)
    }

    async fn issue(store: &Store, user_id: i64, device_id: i64, hash: &[u8], expires_at: i64, now: i64) {
        let p = NewPasscode { user_id, device_id, hash, expires_at, now };
        store.insert_passcode(p, Entry { actor: "test", kind: "token.passcode", ..Entry::default() }).await.unwrap();
    }

    #[tokio::test]
    async fn a_passcode_is_consumed_exactly_once() {
        let (store, _dir, user, device) = store_with_device().await;
        let now = crate::now();
        issue(&store, user, device, &[1; 32], now + 60, now).await;
        let rows = store.recent_passcodes(user).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].hash, vec![1; 32]);
        assert!(store.consume_passcode(rows[0].id, now).await.unwrap());
        assert!(!store.consume_passcode(rows[0].id, now).await.unwrap());
        assert_eq!(store.recent_passcodes(user).await.unwrap()[0].used, 1);
    }

    #[tokio::test]
    async fn an_expired_passcode_cannot_be_consumed() {
        let (store, _dir, user, device) = store_with_device().await;
        let now = crate::now();
        issue(&store, user, device, &[2; 32], now - 1, now - 61).await;
        let id = store.recent_passcodes(user).await.unwrap()[0].id;
        assert!(!store.consume_passcode(id, now).await.unwrap());
    }

    #[tokio::test]
    async fn a_new_passcode_replaces_the_devices_unused_one() {
        let (store, _dir, user, device) = store_with_device().await;
        let now = crate::now();
        issue(&store, user, device, &[3; 32], now + 60, now).await;
        issue(&store, user, device, &[4; 32], now + 60, now).await;
        let rows = store.recent_passcodes(user).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].hash, vec![4; 32]);
    }

    #[tokio::test]
    async fn concurrent_consumers_get_one_success() {
        let (store, _dir, user, device) = store_with_device().await;
        let now = crate::now();
        issue(&store, user, device, &[5; 32], now + 60, now).await;
        let id = store.recent_passcodes(user).await.unwrap()[0].id;
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move { s.consume_passcode(id, now).await.unwrap() })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            wins += usize::from(t.await.unwrap());
        }
        assert_eq!(wins, 1);
    }
}
