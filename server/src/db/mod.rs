//! Storage. Every SQL statement lives under this module; one [`Store`] serves SQLite and
//! PostgreSQL through sqlx's `Any` driver with runtime queries that both dialects accept
//! (`$1` placeholders, BIGINT flags and Unix-second times; see `migrations/README.md`).

pub mod admins;
pub mod audit;
pub mod checkpoint;
pub mod clients;
pub mod console;
pub mod devices;
pub mod domains;
pub mod engine;
pub mod enrollment;
pub mod failures;
pub mod live_passcodes;
pub mod log_sync;
pub mod login_failures;
pub mod nonces;
pub mod passcodes;
pub mod reader;
pub mod runs;
pub mod throttle;
pub mod user_index;
pub mod users;
pub mod verify;

use std::future::Future as _;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor as _};

/// Which SQL engine a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    /// The engine a database URL names by its scheme; none for another scheme.
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else {
            None
        }
    }
}

/// The turn to write to a SQLite file, shared by the pool's writers, the verification
/// engine (`db::engine`) and the checkpoint thread. SQLite lets one connection write at a
/// time; one that finds the lock taken sleeps (`busy_timeout`: 1, 2, 5 … 100 ms) and tries
/// again. When the engine's batches follow each other without a pause (a RADIUS flood),
/// those tries kept missing the microseconds between two batches, and a passcode's
/// issuance failed with "database is locked" after 5 s. Writers of this process queue here
/// first, in order; the engine takes its turn for each batch once it has been saturated for
/// a while (`SATURATED_AFTER`), so a writer then waits for at most the batch in progress.
/// Under lighter load the engine does not wait for turns, only for SQLite's lock: a writer
/// holds its turn across hops through the runtime and sqlx's worker thread, and waiting for
/// those made the RADIUS p99 under full issuance two to three times worse. Other processes
/// (the CLI) meet SQLite's lock and busy handlers only.
pub type WriteTurns = Arc<tokio::sync::Mutex<()>>;

/// Waits, on a thread outside the async runtime (the engine's, the checkpoints'), for this
/// process's turn to write until `deadline`; `None` past it. Parked while it waits, woken
/// when the turn comes.
pub(crate) fn wait_for_turn(turns: &WriteTurns, deadline: Instant) -> Option<tokio::sync::MutexGuard<'_, ()>> {
    if let Ok(turn) = turns.try_lock() {
        return Some(turn);
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut turn = pin!(turns.lock());
    loop {
        if let Poll::Ready(turn) = turn.as_mut().poll(&mut Context::from_waker(&waker)) {
            return Some(turn);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::park_timeout(deadline - now);
    }
}

/// Wakes a thread parked in [`wait_for_turn`] when its turn comes.
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// The database behind every command and listener.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    /// The database file, for SQLite on a file (the verification engine opens it too).
    sqlite_file: Option<PathBuf>,
    /// For a SQLite file: whose turn it is to write.
    turns: Option<WriteTurns>,
    /// For a SQLite file: connections for the token API's point reads (`db::reader`).
    readers: Option<Arc<reader::Readers>>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

impl Store {
    /// Connects to `url` (`sqlite://…` creates the file if missing; `postgres://…`) and
    /// applies pending migrations.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let (engine, url) = normalise_url(url)?;
        let options: AnyConnectOptions =
            url.parse().with_context(|| format!("invalid database URL {}", redact_url(&url)))?;
        let pool = match engine {
            Engine::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // WAL lets readers (RADIUS, CLI) run beside the one writer;
                            // synchronous=FULL makes every commit durable, so a consumed
                            // passcode stays consumed after a power loss.
                            conn.execute("PRAGMA busy_timeout = 5000").await?;
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = FULL").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await
            }
            Engine::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    // Fail fast when PostgreSQL is unreachable: RADIUS answers Reject in time
                    // and the pool opens fresh connections once the database is back.
                    .acquire_timeout(Duration::from_secs(2))
                    .connect_with(options)
                    .await
            }
        }
        .with_context(|| format!("cannot open the database {}", redact_url(&url)))?;
        let migrator = match engine {
            Engine::Sqlite => &SQLITE_MIGRATIONS,
            Engine::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await.context("applying database migrations failed")?;
        let sqlite_file = (engine == Engine::Sqlite).then(|| sqlite_file(&url)).flatten();
        let turns = sqlite_file.is_some().then(WriteTurns::default);
        let readers = sqlite_file.as_deref().map(|path| Arc::new(reader::Readers::new(path)));
        Ok(Self { pool, engine, sqlite_file, turns, readers })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The SQLite database file, when the store is one (not in memory, not PostgreSQL).
    pub fn sqlite_file(&self) -> Option<&Path> {
        self.sqlite_file.as_deref()
    }

    /// The queue of writers to the SQLite file (none on PostgreSQL or in memory).
    pub fn write_turns(&self) -> Option<WriteTurns> {
        self.turns.clone()
    }

    /// Runs `read` on this thread, on a SQLite file; `None` on PostgreSQL or in memory, or
    /// when the file was busy (`db::reader`): the caller then reads through the pool.
    pub(crate) fn read_here<T>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> anyhow::Result<Option<T>> {
        let Some(readers) = &self.readers else { return Ok(None) };
        match readers.read(read) {
            Ok(value) => Ok(Some(value)),
            Err(e) if reader::is_busy(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits for this process's turn to write to a SQLite file; hold it until the write
    /// (or the write transaction) is done. Nothing to wait for on PostgreSQL.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.turns {
            Some(turns) => Some(turns.lock().await),
            None => None,
        }
    }

    /// A named server secret, created (32 random bytes) by whichever node asks first.
    pub async fn secret(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let _turn = self.write_turn().await;
        let mut fresh = vec![0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut fresh);
        sqlx::query("INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name.to_owned())
            .bind(fresh)
            .execute(&self.pool)
            .await?;
        let value: Vec<u8> = sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
            .bind(name.to_owned())
            .fetch_one(&self.pool)
            .await?;
        Ok(value)
    }

    /// Deletes expired nonces and long-expired passcodes; returns rows removed.
    pub async fn prune(&self, now: i64) -> anyhow::Result<u64> {
        let _turn = self.write_turn().await;
        let a = sqlx::query("DELETE FROM request_nonces WHERE expires_at < $1").bind(now).execute(&self.pool).await?;
        // Keep an hour of history so a late retry is logged as "expired", not "wrong".
        let b = sqlx::query("DELETE FROM passcodes WHERE expires_at < $1").bind(now - 3600).execute(&self.pool).await?;
        let c = sqlx::query("DELETE FROM devices WHERE user_id IS NULL AND registration_expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let mut pruned = a.rows_affected() + b.rows_affected() + c.rows_affected();
        if self.engine == Engine::Sqlite {
            // The wrong-passcode log (db::failures) is appended to in id order: delete from its
            // front what is older than every domain's window, without an index on `at`. The
            // newest row always stays: new ids are handed out above it, and one handed out
            // again would be missed by the engine (migration 0009).
            let d = sqlx::query(
                "DELETE FROM passcode_failures WHERE id < COALESCE( \
                   (SELECT id FROM passcode_failures WHERE at > $1 - \
                      (SELECT COALESCE(MAX(passcode_failure_window_secs), 0) FROM domains) ORDER BY id LIMIT 1), \
                   (SELECT COALESCE(MAX(id), 0) FROM passcode_failures))",
            )
            .bind(now)
            .execute(&self.pool)
            .await?;
            pruned += d.rows_affected();
        }
        Ok(pruned)
    }
}

/// True when an error means the database cannot be reached (as opposed to a bad query).
pub fn is_unavailable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<engine::EngineError>(),
            Some(engine::EngineError::Busy | engine::EngineError::Overloaded | engine::EngineError::Stopped)
        ) || matches!(
            c.downcast_ref::<sqlx::Error>(),
            Some(
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Protocol(_)
            )
        )
    })
}

/// True when an error means the database answered too late for the request's deadline.
pub fn is_too_slow(e: &anyhow::Error) -> bool {
    e.chain().any(|c| matches!(c.downcast_ref::<engine::EngineError>(), Some(engine::EngineError::Expired)))
}

/// Picks the engine from the scheme and makes SQLite create a missing file.
fn normalise_url(url: &str) -> anyhow::Result<(Engine, String)> {
    match Engine::of_url(url) {
        Some(Engine::Postgres) => Ok((Engine::Postgres, url.to_owned())),
        Some(Engine::Sqlite) => {
            let url = if url.contains("mode=") {
                url.to_owned()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            Ok((Engine::Sqlite, url))
        }
        None => anyhow::bail!("unsupported database URL {}: use sqlite://FILE or postgres://…", redact_url(url)),
    }
}

/// The file of a `sqlite:` URL; none for an in-memory database.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:" && !rest.contains("mode=memory")).then(|| PathBuf::from(path))
}

/// A database URL with its password replaced, for logs and messages.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
        && let Some((user, _password)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_owned()
}

/// What the SQLite engine's unit tests build their databases from.
#[cfg(test)]
pub(crate) mod test_db {
    /// Domain 1 (code 127000000001, a 600 s guessing window) and its user 1, alice.
    pub const DOMAIN_AND_ALICE: &str = "INSERT INTO domains (id, code, name, device_name, passcode_lifetime_secs, pin_min_length, passcode_length, \
           max_pin_failures, registration_ttl_secs, public_key, private_key, created_at) \
           VALUES (1, '127000000001', 'd', 'd', 60, 4, 6, 3, 600, x'00', x'00', 0); \
         INSERT INTO users (id, domain_id, username, created_at) VALUES (1, 1, 'alice', 0);";

    /// Applies every SQLite migration to `conn`.
    pub fn migrate(conn: &rusqlite::Connection) {
        for migration in super::SQLITE_MIGRATIONS.iter() {
            conn.execute_batch(migration.sql.as_ref()).unwrap();
        }
    }

    /// A migrated database file in a temporary directory, removed with it.
    pub fn migrated() -> (tempfile::TempDir, rusqlite::Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        migrate(&conn);
        (dir, conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_here_that_finds_the_file_busy_is_left_to_the_pool_and_other_failures_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::open(&format!("sqlite://{}", path.display())).await.unwrap();
        let failing = |code| {
            move |_: &rusqlite::Connection| -> rusqlite::Result<i64> {
                Err(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None))
            }
        };
        assert_eq!(store.read_here(|c| c.query_row("SELECT 7", [], |r| r.get::<_, i64>(0))).unwrap(), Some(7));
        assert_eq!(store.read_here(failing(rusqlite::ffi::SQLITE_BUSY)).unwrap(), None);
        assert_eq!(store.read_here(failing(rusqlite::ffi::SQLITE_LOCKED)).unwrap(), None);
        assert!(store.read_here(failing(rusqlite::ffi::SQLITE_CORRUPT)).is_err());
    }

    #[test]
    fn passwords_in_urls_are_hidden() {
        assert_eq!(redact_url("postgres://u:secret@db/x"), "postgres://u:***@db/x");
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(redact_url("sqlite://tessera.db"), "sqlite://tessera.db");
    }

    #[test]
    fn sqlite_urls_create_missing_files() {
        assert_eq!(normalise_url("sqlite://t.db").unwrap().1, "sqlite://t.db?mode=rwc");
        assert_eq!(normalise_url("sqlite://t.db?mode=ro").unwrap().1, "sqlite://t.db?mode=ro");
        assert_eq!(normalise_url("postgres://x/y").unwrap().0, Engine::Postgres);
        assert!(normalise_url("mysql://x").is_err());
    }

    #[test]
    fn the_file_of_a_sqlite_url_is_found() {
        assert_eq!(sqlite_file("sqlite://t.db?mode=rwc"), Some(PathBuf::from("t.db")));
        assert_eq!(sqlite_file("sqlite:///var/lib/t.db"), Some(PathBuf::from("/var/lib/t.db")));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://x?mode=memory"), None);
        assert_eq!(sqlite_file("postgres://x/y"), None);
    }
}
