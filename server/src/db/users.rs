//! Users of a domain.

use sqlx::FromRow;

use super::Store;

/// A user as stored.
#[derive(Clone, Debug, FromRow)]
pub struct UserRow {
    pub id: i64,
    pub domain_id: i64,
    pub username: String,
    pub disabled: i64,
}

/// One line of `user list`: a user with one of its devices (or none), or a pending device.
#[derive(Clone, Debug, FromRow)]
pub struct UserDeviceRow {
    pub username: Option<String>,
    pub user_disabled: Option<i64>,
    pub device_key_id: Option<String>,
    pub wrong_pins: Option<i64>,
    pub device_disabled: Option<i64>,
    pub registration_code: Option<String>,
    pub registration_expires_at: Option<i64>,
    pub created_at: Option<i64>,
}

impl Store {
    pub async fn user_by_name(&self, domain_id: i64, username: &str) -> sqlx::Result<Option<UserRow>> {
        sqlx::query_as("SELECT id, domain_id, username, disabled FROM users WHERE domain_id = $1 AND username = $2")
            .bind(domain_id)
            .bind(username.to_owned())
            .fetch_optional(self.pool())
            .await
    }

    /// Sets a user's disabled flag; false when there is no such user.
    pub async fn set_user_disabled(&self, domain_id: i64, username: &str, disabled: bool) -> sqlx::Result<bool> {
        let _turn = self.write_turn().await;
        let r = sqlx::query("UPDATE users SET disabled = $1 WHERE domain_id = $2 AND username = $3")
            .bind(i64::from(disabled))
            .bind(domain_id)
            .bind(username.to_owned())
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Clears the wrong-PIN count of every device of a user; returns how many were locked
    /// or had failures.
    pub async fn unlock_user_devices(&self, user_id: i64) -> sqlx::Result<u64> {
        let _turn = self.write_turn().await;
        let r = sqlx::query("UPDATE devices SET wrong_pins = 0 WHERE user_id = $1 AND wrong_pins > 0")
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected())
    }

    /// Users with their devices, then pending registrations, of one domain.
    pub async fn user_listing(&self, domain_id: i64) -> sqlx::Result<Vec<UserDeviceRow>> {
        sqlx::query_as(
            "SELECT u.username AS username, u.disabled AS user_disabled, d.device_key_id AS device_key_id, \
                    d.wrong_pins AS wrong_pins, d.disabled AS device_disabled, d.registration_code AS registration_code, \
                    d.registration_expires_at AS registration_expires_at, d.created_at AS created_at \
             FROM users u LEFT JOIN devices d ON d.user_id = u.id WHERE u.domain_id = $1 \
             UNION ALL \
             SELECT NULL, NULL, d.device_key_id, d.wrong_pins, d.disabled, d.registration_code, \
                    d.registration_expires_at, d.created_at \
             FROM devices d WHERE d.domain_id = $1 AND d.user_id IS NULL \
             ORDER BY username, created_at",
        )
        .bind(domain_id)
        .fetch_all(self.pool())
        .await
    }
}
