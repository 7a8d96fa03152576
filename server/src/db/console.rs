//! Statements only the console needs: editing domains and clients, paged user listings,
//! deleting devices and the filtered audit log.

use sqlx::FromRow;

use super::Store;
use super::audit::Row as AuditRow;
use crate::domain::DomainSettings;

/// A user with one of its devices (or none), for one page of the Users tab.
#[derive(Clone, Debug, FromRow)]
pub struct UserDevice {
    pub user_id: i64,
    pub username: String,
    pub user_disabled: i64,
    pub device_id: Option<i64>,
    pub device_key_id: Option<String>,
    pub wrong_pins: Option<i64>,
    pub device_disabled: Option<i64>,
    pub validated_at: Option<i64>,
}

/// A registration waiting for validation.
#[derive(Clone, Debug, FromRow)]
pub struct PendingRow {
    pub id: i64,
    pub device_key_id: String,
    pub registration_code: Option<String>,
    pub registration_expires_at: Option<i64>,
    pub created_at: i64,
}

/// Filters of the Logs tab; empty strings match everything.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub username: String,
    pub domain_code: String,
    /// A kind or a kind prefix such as `radius.`.
    pub kind: String,
}

impl Store {
    /// Changes a domain's name, device name and settings (its code and key stay).
    pub async fn update_domain(
        &self,
        id: i64,
        name: &str,
        device_name: &str,
        s: &DomainSettings,
    ) -> sqlx::Result<bool> {
        let _turn = self.write_turn().await;
        let r = sqlx::query(
            "UPDATE domains SET name = $1, device_name = $2, passcode_lifetime_secs = $3, pin_min_length = $4, \
             passcode_length = $5, max_pin_failures = $6, registration_ttl_secs = $7 WHERE id = $8",
        )
        .bind(name.to_owned())
        .bind(device_name.to_owned())
        .bind(i64::from(s.passcode_lifetime_secs))
        .bind(i64::from(s.pin_min_length))
        .bind(i64::from(s.passcode_length))
        .bind(i64::from(s.max_pin_failures))
        .bind(i64::from(s.registration_ttl_secs))
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Changes a client; `secret` `None` keeps the current one. A changed mode forgets `seen`.
    pub async fn update_client(
        &self,
        id: i64,
        address: &str,
        secret: Option<&str>,
        domain_id: i64,
        ma_mode: &str,
    ) -> sqlx::Result<bool> {
        let _turn = self.write_turn().await;
        let r = sqlx::query(
            "UPDATE network_clients SET address = $1, secret = COALESCE($2, secret), domain_id = $3, \
             ma_seen = CASE WHEN ma_mode = $4 THEN ma_seen ELSE 0 END, ma_mode = $4 WHERE id = $5",
        )
        .bind(address.to_owned())
        .bind(secret.map(str::to_owned))
        .bind(domain_id)
        .bind(ma_mode.to_owned())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Up to `limit` users of a domain whose name starts with `prefix`, after `after` in
    /// name order (keyset pagination: fast on page 1 000 as on page 1), with their devices.
    pub async fn users_page(
        &self,
        domain_id: i64,
        prefix: &str,
        after: &str,
        limit: i64,
    ) -> sqlx::Result<Vec<UserDevice>> {
        let pattern = format!("{}%", prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        sqlx::query_as(
            "SELECT u.id AS user_id, u.username AS username, u.disabled AS user_disabled, d.id AS device_id, \
                    d.device_key_id AS device_key_id, d.wrong_pins AS wrong_pins, d.disabled AS device_disabled, \
                    d.validated_at AS validated_at \
             FROM (SELECT id, username, disabled FROM users \
                   WHERE domain_id = $1 AND username > $2 AND username LIKE $3 ESCAPE '\\' \
                   ORDER BY username LIMIT $4) u \
             LEFT JOIN devices d ON d.user_id = u.id ORDER BY u.username, d.id",
        )
        .bind(domain_id)
        .bind(after.to_owned())
        .bind(pattern)
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }

    /// Unexpired registrations of a domain waiting for validation, oldest first.
    pub async fn pending_registrations(&self, domain_id: i64, now: i64) -> sqlx::Result<Vec<PendingRow>> {
        sqlx::query_as(
            "SELECT id, device_key_id, registration_code, registration_expires_at, created_at FROM devices \
             WHERE domain_id = $1 AND user_id IS NULL AND registration_expires_at >= $2 ORDER BY id LIMIT 200",
        )
        .bind(domain_id)
        .bind(now)
        .fetch_all(self.pool())
        .await
    }

    /// The user's name and key id of a validated device of a domain.
    pub async fn device_owner(&self, domain_id: i64, device_id: i64) -> sqlx::Result<Option<(String, String)>> {
        sqlx::query_as(
            "SELECT u.username, d.device_key_id FROM devices d JOIN users u ON u.id = d.user_id \
             WHERE d.id = $1 AND d.domain_id = $2",
        )
        .bind(device_id)
        .bind(domain_id)
        .fetch_optional(self.pool())
        .await
    }

    /// Deletes a device of a domain (its passcodes go with it).
    pub async fn delete_device(&self, domain_id: i64, device_id: i64) -> sqlx::Result<bool> {
        let _turn = self.write_turn().await;
        let r = sqlx::query("DELETE FROM devices WHERE id = $1 AND domain_id = $2")
            .bind(device_id)
            .bind(domain_id)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Sets the disabled flag of one device of a domain; false when there is none.
    pub async fn set_device_disabled(&self, domain_id: i64, device_id: i64, disabled: bool) -> sqlx::Result<bool> {
        let _turn = self.write_turn().await;
        let r =
            sqlx::query("UPDATE devices SET disabled = $1 WHERE id = $2 AND domain_id = $3 AND user_id IS NOT NULL")
                .bind(i64::from(disabled))
                .bind(device_id)
                .bind(domain_id)
                .execute(self.pool())
                .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Up to `limit` audit entries older than `before` (0: from the newest), newest first.
    pub async fn audit_page(&self, f: &AuditFilter, before: i64, limit: i64) -> sqlx::Result<Vec<AuditRow>> {
        let before = if before <= 0 { i64::MAX } else { before };
        let kind = if f.kind.is_empty() { String::new() } else { format!("{}%", f.kind) };
        sqlx::query_as(
            "SELECT id, at, actor, kind, domain_code, username, source, detail FROM audit_log \
             WHERE id < $1 AND ($2 = '' OR username = $2) AND ($3 = '' OR domain_code = $3) \
             AND ($4 = '' OR kind LIKE $4) ORDER BY id DESC LIMIT $5",
        )
        .bind(before)
        .bind(f.username.clone())
        .bind(f.domain_code.clone())
        .bind(kind)
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }
}
