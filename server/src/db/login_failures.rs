//! Failed console sign-ins, counted per name and per source address across every node.

use super::Store;

impl Store {
    pub async fn record_login_failure(&self, name: &str, source: &str, at: i64) -> sqlx::Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query("INSERT INTO console_login_failures (at, name, source) VALUES ($1, $2, $3)")
            .bind(at)
            .bind(name.to_owned())
            .bind(source.to_owned())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Failures since `since` for `name` and for `source`, each with its oldest time.
    pub async fn login_failures_since(
        &self,
        name: &str,
        source: &str,
        since: i64,
    ) -> sqlx::Result<((i64, Option<i64>), (i64, Option<i64>))> {
        let by_name: (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MIN(at) FROM console_login_failures WHERE name = $1 AND at >= $2")
                .bind(name.to_owned())
                .bind(since)
                .fetch_one(self.pool())
                .await?;
        let by_source: (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MIN(at) FROM console_login_failures WHERE source = $1 AND at >= $2")
                .bind(source.to_owned())
                .bind(since)
                .fetch_one(self.pool())
                .await?;
        Ok((by_name, by_source))
    }

    /// A successful sign-in clears the name's failures (not the address's).
    pub async fn clear_login_failures(&self, name: &str) -> sqlx::Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query("DELETE FROM console_login_failures WHERE name = $1")
            .bind(name.to_owned())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Forgets failures older than `before`.
    pub async fn prune_login_failures(&self, before: i64) -> sqlx::Result<u64> {
        let _turn = self.write_turn().await;
        let r =
            sqlx::query("DELETE FROM console_login_failures WHERE at < $1").bind(before).execute(self.pool()).await?;
        Ok(r.rows_affected())
    }
}
