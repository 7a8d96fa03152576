//! Devices (token public keys): pending registrations, validation and wrong-PIN counting.

use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension as _, params};
use sqlx::FromRow;

use super::Store;
use super::engine::sqlite_sql;

/// Takes a PIN attempt: `$1` device id, `$2` the domain's limit; the new count, no row once locked.
const RESERVE_PIN_ATTEMPT: &str =
    "UPDATE devices SET wrong_pins = wrong_pins + 1 WHERE id = $1 AND wrong_pins < $2 RETURNING wrong_pins";

/// A device and its user's state by domain and key id: `$1` domain id, `$2` key id.
const DEVICE_BY_KEY: &str = "SELECT d.id, d.user_id, u.username AS username, u.disabled AS user_disabled, \
            d.public_key, d.pin_hash, d.registration_expires_at, d.wrong_pins, d.disabled \
     FROM devices d LEFT JOIN users u ON u.id = d.user_id \
     WHERE d.domain_id = $1 AND d.device_key_id = $2";
/// [`DEVICE_BY_KEY`] in SQLite's numbered form, made once: the token API runs it per request.
static DEVICE_BY_KEY_SQLITE: LazyLock<String> = LazyLock::new(|| sqlite_sql(DEVICE_BY_KEY));

/// A device with the state of its user, as the passcode flow needs it.
#[derive(Clone, Debug, FromRow)]
pub struct DeviceRow {
    pub id: i64,
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub user_disabled: Option<i64>,
    pub public_key: Vec<u8>,
    pub pin_hash: String,
    pub registration_expires_at: Option<i64>,
    pub wrong_pins: i64,
    pub disabled: i64,
}

/// A registration waiting for validation.
pub struct NewDevice<'a> {
    pub domain_id: i64,
    pub device_key_id: &'a str,
    pub public_key: &'a [u8],
    pub pin_hash: &'a str,
    pub registration_code: &'a str,
    pub registration_expires_at: i64,
}

impl Store {
    pub async fn insert_pending_device(&self, d: NewDevice<'_>) -> sqlx::Result<i64> {
        let _turn = self.write_turn().await;
        sqlx::query_scalar(
            "INSERT INTO devices (domain_id, device_key_id, public_key, pin_hash, registration_code, \
             registration_expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(d.domain_id)
        .bind(d.device_key_id.to_owned())
        .bind(d.public_key.to_vec())
        .bind(d.pin_hash.to_owned())
        .bind(d.registration_code.to_owned())
        .bind(d.registration_expires_at)
        .bind(crate::now())
        .fetch_one(self.pool())
        .await
    }

    /// Removes a pending registration that expired, so the same key may register again.
    pub async fn delete_expired_registration(&self, domain_id: i64, device_key_id: &str, now: i64) -> sqlx::Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "DELETE FROM devices WHERE domain_id = $1 AND device_key_id = $2 AND user_id IS NULL \
             AND registration_expires_at < $3",
        )
        .bind(domain_id)
        .bind(device_key_id.to_owned())
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The device with key id `device_key_id` in the domain. On a SQLite file read on this
    /// thread (`db::reader`).
    pub async fn device_by_key(&self, domain_id: i64, device_key_id: &str) -> anyhow::Result<Option<DeviceRow>> {
        let read = |conn: &Connection| {
            conn.prepare_cached(&DEVICE_BY_KEY_SQLITE)?
                .query_row(params![domain_id, device_key_id], |r| {
                    Ok(DeviceRow {
                        id: r.get(0)?,
                        user_id: r.get(1)?,
                        username: r.get(2)?,
                        user_disabled: r.get(3)?,
                        public_key: r.get(4)?,
                        pin_hash: r.get(5)?,
                        registration_expires_at: r.get(6)?,
                        wrong_pins: r.get(7)?,
                        disabled: r.get(8)?,
                    })
                })
                .optional()
        };
        if let Some(row) = self.read_here(read)? {
            return Ok(row);
        }
        Ok(sqlx::query_as(DEVICE_BY_KEY)
            .bind(domain_id)
            .bind(device_key_id.to_owned())
            .fetch_optional(self.pool())
            .await?)
    }

    /// Binds an unexpired pending registration to `username` (created if new), atomically.
    /// Returns false when no such registration is pending.
    pub async fn validate_registration(
        &self,
        domain_id: i64,
        registration_code: &str,
        username: &str,
        now: i64,
    ) -> sqlx::Result<bool> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO users (domain_id, username, disabled, created_at) VALUES ($1, $2, 0, $3) \
             ON CONFLICT (domain_id, username) DO NOTHING",
        )
        .bind(domain_id)
        .bind(username.to_owned())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let r = sqlx::query(
            "UPDATE devices SET user_id = (SELECT id FROM users WHERE domain_id = $1 AND username = $2), \
                    registration_code = NULL, registration_expires_at = NULL, validated_at = $3 \
             WHERE domain_id = $1 AND registration_code = $4 AND user_id IS NULL AND registration_expires_at >= $3",
        )
        .bind(domain_id)
        .bind(username.to_owned())
        .bind(now)
        .bind(registration_code.to_owned())
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 1 {
            tx.commit().await?;
            Ok(true)
        } else {
            tx.rollback().await?;
            Ok(false)
        }
    }

    /// Takes one PIN attempt *before* the PIN is checked, so parallel guesses cannot exceed
    /// the limit. Returns the new count, or `None` when the device is already locked.
    pub async fn reserve_pin_attempt(&self, device_id: i64, limit: i64) -> sqlx::Result<Option<i64>> {
        let _turn = self.write_turn().await;
        sqlx::query_scalar(RESERVE_PIN_ATTEMPT).bind(device_id).bind(limit).fetch_optional(self.pool()).await
    }
}

/// [`Store::reserve_pin_attempt`] on the SQLite engine's connection (`db::engine::Engine::write`).
pub fn reserve_pin_attempt_in(conn: &Connection, device_id: i64, limit: i64) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(&sqlite_sql(RESERVE_PIN_ATTEMPT))?.query_row(params![device_id, limit], |r| r.get(0)).optional()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_db::{DOMAIN_AND_ALICE, migrated};

    #[test]
    fn pin_attempts_are_taken_up_to_the_limit() {
        let (_dir, conn) = migrated();
        conn.execute_batch(DOMAIN_AND_ALICE).unwrap();
        conn.execute_batch(
            "INSERT INTO devices (id, domain_id, device_key_id, user_id, public_key, pin_hash, created_at) \
             VALUES (1, 1, 'k', 1, x'00', 'h', 0)",
        )
        .unwrap();
        let taken: Vec<_> = (0..4).map(|_| reserve_pin_attempt_in(&conn, 1, 3).unwrap()).collect();
        assert_eq!(taken, vec![Some(1), Some(2), Some(3), None], "locked at the limit");
        assert_eq!(reserve_pin_attempt_in(&conn, 2, 3).unwrap(), None, "no such device");
    }
}
