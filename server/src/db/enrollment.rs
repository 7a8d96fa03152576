//! Enrollment codes: issued for a username ahead of registration, redeemed once by the token
//! that registers with one, which is then validated in the same transaction.

use sqlx::FromRow;

use super::Store;

/// An outstanding enrollment code (its hash is not read back).
#[derive(Clone, Debug, FromRow)]
pub struct EnrollmentRow {
    pub id: i64,
    pub username: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A code to store.
pub struct NewEnrollment<'a> {
    pub domain_id: i64,
    pub username: &'a str,
    pub code_hash: &'a [u8],
    pub created_by: &'a str,
    pub expires_at: i64,
}

/// A device registering with an enrollment code.
pub struct EnrolledDevice<'a> {
    pub domain_id: i64,
    pub code_hash: &'a [u8],
    pub device_key_id: &'a str,
    pub public_key: &'a [u8],
    pub pin_hash: &'a str,
}

/// Why a redemption did not happen.
#[derive(Debug)]
pub enum Redeem {
    /// Validated as this user.
    Validated(String),
    /// No unused, unrevoked, unexpired code with that hash in the domain.
    NoSuchCode,
    /// The device key is already registered with the domain (the code stays unused).
    DeviceExists,
}

impl Store {
    pub async fn insert_enrollment(&self, e: NewEnrollment<'_>) -> sqlx::Result<i64> {
        let _turn = self.write_turn().await;
        sqlx::query_scalar(
            "INSERT INTO enrollment_codes (domain_id, username, code_hash, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(e.domain_id)
        .bind(e.username.to_owned())
        .bind(e.code_hash.to_vec())
        .bind(e.created_by.to_owned())
        .bind(crate::now())
        .bind(e.expires_at)
        .fetch_one(self.pool())
        .await
    }

    /// Codes of a domain that can still be redeemed, newest first.
    pub async fn outstanding_enrollments(&self, domain_id: i64, now: i64) -> sqlx::Result<Vec<EnrollmentRow>> {
        sqlx::query_as(
            "SELECT id, username, created_by, created_at, expires_at FROM enrollment_codes \
             WHERE domain_id = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at >= $2 \
             ORDER BY id DESC LIMIT 500",
        )
        .bind(domain_id)
        .bind(now)
        .fetch_all(self.pool())
        .await
    }

    /// Revokes an outstanding code; returns its username, or `None` when there was none.
    pub async fn revoke_enrollment(&self, domain_id: i64, id: i64, now: i64) -> sqlx::Result<Option<String>> {
        let _turn = self.write_turn().await;
        sqlx::query_scalar(
            "UPDATE enrollment_codes SET revoked_at = $1 \
             WHERE id = $2 AND domain_id = $3 AND used_at IS NULL AND revoked_at IS NULL RETURNING username",
        )
        .bind(now)
        .bind(id)
        .bind(domain_id)
        .fetch_optional(self.pool())
        .await
    }

    /// Consumes a code and stores the device, validated, for its user, all in one
    /// transaction: two tokens racing with one code yield one validated device.
    pub async fn redeem_enrollment(&self, d: EnrolledDevice<'_>, now: i64) -> sqlx::Result<Redeem> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool().begin().await?;
        let username: Option<String> = sqlx::query_scalar(
            "UPDATE enrollment_codes SET used_at = $1 WHERE domain_id = $2 AND code_hash = $3 \
             AND used_at IS NULL AND revoked_at IS NULL AND expires_at >= $1 RETURNING username",
        )
        .bind(now)
        .bind(d.domain_id)
        .bind(d.code_hash.to_vec())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(username) = username else {
            tx.rollback().await?;
            return Ok(Redeem::NoSuchCode);
        };
        sqlx::query(
            "INSERT INTO users (domain_id, username, disabled, created_at) VALUES ($1, $2, 0, $3) \
             ON CONFLICT (domain_id, username) DO NOTHING",
        )
        .bind(d.domain_id)
        .bind(username.clone())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO devices (domain_id, device_key_id, user_id, public_key, pin_hash, created_at, validated_at) \
             VALUES ($1, $2, (SELECT id FROM users WHERE domain_id = $1 AND username = $3), $4, $5, $6, $6)",
        )
        .bind(d.domain_id)
        .bind(d.device_key_id.to_owned())
        .bind(username.clone())
        .bind(d.public_key.to_vec())
        .bind(d.pin_hash.to_owned())
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {
                tx.commit().await?;
                Ok(Redeem::Validated(username))
            }
            Err(e) if crate::error::is_unique_violation(&e) => {
                tx.rollback().await?;
                Ok(Redeem::DeviceExists)
            }
            Err(e) => Err(e),
        }
    }
}
