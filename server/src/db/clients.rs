//! RADIUS network clients.

use sqlx::FromRow;

use super::Store;

/// A network client as stored, with its domain's code.
#[derive(Clone, FromRow)]
pub struct ClientRow {
    pub id: i64,
    pub name: String,
    pub address: String,
    pub secret: String,
    pub domain_id: i64,
    pub domain_code: String,
    pub ma_mode: String,
    pub ma_seen: i64,
}

impl std::fmt::Debug for ClientRow {
    // The shared secret never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRow").field("name", &self.name).field("address", &self.address).finish()
    }
}

/// A client to create.
pub struct NewClient<'a> {
    pub name: &'a str,
    pub address: &'a str,
    pub secret: &'a str,
    pub domain_id: i64,
    pub ma_mode: &'a str,
}

impl Store {
    pub async fn insert_client(&self, c: NewClient<'_>) -> sqlx::Result<i64> {
        let _turn = self.write_turn().await;
        sqlx::query_scalar(
            "INSERT INTO network_clients (name, address, secret, domain_id, ma_mode, ma_seen, created_at) \
             VALUES ($1, $2, $3, $4, $5, 0, $6) RETURNING id",
        )
        .bind(c.name.to_owned())
        .bind(c.address.to_owned())
        .bind(c.secret.to_owned())
        .bind(c.domain_id)
        .bind(c.ma_mode.to_owned())
        .bind(crate::now())
        .fetch_one(self.pool())
        .await
    }

    pub async fn clients(&self) -> sqlx::Result<Vec<ClientRow>> {
        sqlx::query_as(
            "SELECT c.id, c.name, c.address, c.secret, c.domain_id, d.code AS domain_code, c.ma_mode, c.ma_seen \
             FROM network_clients c JOIN domains d ON d.id = c.domain_id ORDER BY c.name",
        )
        .fetch_all(self.pool())
        .await
    }

    /// Removes a client by name; false when there was none.
    pub async fn delete_client(&self, name: &str) -> sqlx::Result<bool> {
        let _turn = self.write_turn().await;
        let r = sqlx::query("DELETE FROM network_clients WHERE name = $1")
            .bind(name.to_owned())
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Remembers that an `auto` client has sent a Message-Authenticator (from now on, required).
    pub async fn mark_message_authenticator_seen(&self, client_id: i64) -> sqlx::Result<bool> {
        let _turn = self.write_turn().await;
        let r = sqlx::query("UPDATE network_clients SET ma_seen = 1 WHERE id = $1 AND ma_seen = 0")
            .bind(client_id)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }
}
