//! Domains and their HPKE key pairs.

use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension as _};
use sqlx::FromRow;

use super::Store;
use super::engine::sqlite_sql;
use crate::domain::DomainSettings;

/// A domain as stored.
#[derive(Clone, FromRow)]
pub struct DomainRow {
    pub id: i64,
    pub code: String,
    pub name: String,
    pub device_name: String,
    pub passcode_lifetime_secs: i64,
    pub pin_min_length: i64,
    pub passcode_length: i64,
    pub max_pin_failures: i64,
    pub registration_ttl_secs: i64,
    pub public_key: Vec<u8>,
    pub private_key: Vec<u8>,
    pub created_at: i64,
}

impl std::fmt::Debug for DomainRow {
    // The private key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainRow").field("id", &self.id).field("code", &self.code).field("name", &self.name).finish()
    }
}

/// A domain to create.
pub struct NewDomain<'a> {
    pub code: &'a str,
    pub name: &'a str,
    pub device_name: &'a str,
    pub settings: &'a DomainSettings,
    pub public_key: &'a [u8],
    pub private_key: &'a [u8],
}

macro_rules! columns {
    () => {
        "id, code, name, device_name, passcode_lifetime_secs, pin_min_length, passcode_length, \
         max_pin_failures, registration_ttl_secs, public_key, private_key, created_at"
    };
}
const COLUMNS: &str = columns!();
/// `$1`: the code.
const BY_CODE: &str = concat!("SELECT ", columns!(), " FROM domains WHERE code = $1");
/// [`BY_CODE`] in SQLite's numbered form, made once: the token API runs it per request.
static BY_CODE_SQLITE: LazyLock<String> = LazyLock::new(|| sqlite_sql(BY_CODE));

impl Store {
    pub async fn insert_domain(&self, d: NewDomain<'_>) -> sqlx::Result<i64> {
        let _turn = self.write_turn().await;
        sqlx::query_scalar(
            "INSERT INTO domains (code, name, device_name, passcode_lifetime_secs, pin_min_length, passcode_length, \
             max_pin_failures, registration_ttl_secs, public_key, private_key, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(d.code.to_owned())
        .bind(d.name.to_owned())
        .bind(d.device_name.to_owned())
        .bind(i64::from(d.settings.passcode_lifetime_secs))
        .bind(i64::from(d.settings.pin_min_length))
        .bind(i64::from(d.settings.passcode_length))
        .bind(i64::from(d.settings.max_pin_failures))
        .bind(i64::from(d.settings.registration_ttl_secs))
        .bind(d.public_key.to_vec())
        .bind(d.private_key.to_vec())
        .bind(crate::now())
        .fetch_one(self.pool())
        .await
    }

    pub async fn domains(&self) -> sqlx::Result<Vec<DomainRow>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM domains ORDER BY code")))
            .fetch_all(self.pool())
            .await
    }

    /// The domain with `code`. On a SQLite file read on this thread (`db::reader`).
    pub async fn domain_by_code(&self, code: &str) -> anyhow::Result<Option<DomainRow>> {
        let read = |conn: &Connection| {
            conn.prepare_cached(&BY_CODE_SQLITE)?
                .query_row([code], |r| {
                    Ok(DomainRow {
                        id: r.get(0)?,
                        code: r.get(1)?,
                        name: r.get(2)?,
                        device_name: r.get(3)?,
                        passcode_lifetime_secs: r.get(4)?,
                        pin_min_length: r.get(5)?,
                        passcode_length: r.get(6)?,
                        max_pin_failures: r.get(7)?,
                        registration_ttl_secs: r.get(8)?,
                        public_key: r.get(9)?,
                        private_key: r.get(10)?,
                        created_at: r.get(11)?,
                    })
                })
                .optional()
        };
        if let Some(row) = self.read_here(read)? {
            return Ok(row);
        }
        Ok(sqlx::query_as(BY_CODE).bind(code.to_owned()).fetch_optional(self.pool()).await?)
    }

    pub async fn domain_by_id(&self, id: i64) -> sqlx::Result<Option<DomainRow>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM domains WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.pool())
            .await
    }
}
