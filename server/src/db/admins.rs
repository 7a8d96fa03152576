//! Console administrators and their server-side sessions.

use sqlx::FromRow;

use super::Store;

/// An administrator as stored.
#[derive(Clone, FromRow)]
pub struct AdminRow {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
}

impl std::fmt::Debug for AdminRow {
    // The password hash never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminRow").field("id", &self.id).field("username", &self.username).finish()
    }
}

/// A live session with its administrator's name.
#[derive(Clone, Debug, FromRow)]
pub struct SessionRow {
    pub id: i64,
    pub admin_id: i64,
    pub username: String,
    pub csrf_token: String,
    pub created_at: i64,
    pub last_seen: i64,
    pub flash: Option<String>,
}

impl Store {
    pub async fn insert_admin(&self, username: &str, password_hash: &str) -> sqlx::Result<i64> {
        let _turn = self.write_turn().await;
        sqlx::query_scalar("INSERT INTO admins (username, password_hash, created_at) VALUES ($1, $2, $3) RETURNING id")
            .bind(username.to_owned())
            .bind(password_hash.to_owned())
            .bind(crate::now())
            .fetch_one(self.pool())
            .await
    }

    pub async fn admin_by_name(&self, username: &str) -> sqlx::Result<Option<AdminRow>> {
        sqlx::query_as("SELECT id, username, password_hash FROM admins WHERE username = $1")
            .bind(username.to_owned())
            .fetch_optional(self.pool())
            .await
    }

    pub async fn insert_session(
        &self,
        token_hash: &[u8],
        admin_id: i64,
        csrf_token: &str,
        now: i64,
    ) -> sqlx::Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO admin_sessions (token_hash, admin_id, csrf_token, created_at, last_seen) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(token_hash.to_vec())
        .bind(admin_id)
        .bind(csrf_token.to_owned())
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The session whose token hashes to `token_hash`, if it has been used since `idle_since`
    /// and was created after `created_since`; marks it used at `now`.
    pub async fn live_session(
        &self,
        token_hash: &[u8],
        idle_since: i64,
        created_since: i64,
        now: i64,
    ) -> sqlx::Result<Option<SessionRow>> {
        let row: Option<SessionRow> = sqlx::query_as(
            "SELECT s.id, s.admin_id, a.username, s.csrf_token, s.created_at, s.last_seen, s.flash \
             FROM admin_sessions s JOIN admins a ON a.id = s.admin_id \
             WHERE s.token_hash = $1 AND s.last_seen >= $2 AND s.created_at >= $3",
        )
        .bind(token_hash.to_vec())
        .bind(idle_since)
        .bind(created_since)
        .fetch_optional(self.pool())
        .await?;
        if let Some(s) = &row {
            let _turn = self.write_turn().await;
            // The flash is shown once: taken with the page that displays it.
            sqlx::query("UPDATE admin_sessions SET last_seen = $1, flash = NULL WHERE id = $2")
                .bind(now)
                .bind(s.id)
                .execute(self.pool())
                .await?;
        }
        Ok(row)
    }

    /// Leaves a message for the next page the session shows.
    pub async fn set_session_flash(&self, session_id: i64, flash: &str) -> sqlx::Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE admin_sessions SET flash = $1 WHERE id = $2")
            .bind(flash.to_owned())
            .bind(session_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn delete_session(&self, session_id: i64) -> sqlx::Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query("DELETE FROM admin_sessions WHERE id = $1").bind(session_id).execute(self.pool()).await?;
        Ok(())
    }

    /// Removes sessions idle since before `idle_before`.
    pub async fn prune_sessions(&self, idle_before: i64) -> sqlx::Result<u64> {
        let _turn = self.write_turn().await;
        let r = sqlx::query("DELETE FROM admin_sessions WHERE last_seen < $1")
            .bind(idle_before)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected())
    }
}
