//! Seeding: K users, each with one validated device and one outstanding passcode, created
//! the way registration, validation and issuance create them.
//!
//! `--per-row` calls the server's own functions (`Store::insert_pending_device`,
//! `service::admin::validate`, `passcode::generate`, `PasscodeKey::hash`,
//! `Store::insert_passcode`): one durable commit each, about 3 fsyncs per user, far too slow
//! for a million users. The default batched mode runs the *same SQL statements* for
//! `--batch` users per transaction, through rusqlite on the SQLite file (so it needs a
//! SQLite database): enrolment's copied from server/src/db/{devices,audit}.rs, and for the
//! passcode the function the server's verification engine stores an issued one with
//! (`db::passcodes::insert_passcode_in`, with its audit entry); the passcode and its hash
//! come from the server's code. A final check reads sample
//! users back through `Store::user_by_name` and `Store::recent_passcodes`, the verify path.
//!
//! Order, in batched mode: all users are enrolled first (in name order), then the
//! passcodes are issued in a random order of users, and the output file lists them in that
//! issuance order. Read in file order, the load then looks up users at random, as logins
//! come, while each passcode it consumes is among the most recently issued, as a passcode
//! is used seconds after it was fetched: the passcode rows it updates lie together at the
//! end of the table, the user rows it reads anywhere.
//!
//! `--reissue` gives the K users seeded before a new passcode each, in a random order,
//! through issuance's own `Store::insert_passcode` (which replaces the device's unused
//! one): the scale benchmark with 1,000 users runs several short windows, each after such
//! a round, since a window consumes every passcode. With `--prune-first` the server's own
//! prune runs first as it would an hour after those passcodes expired, so the users' used
//! passcodes are gone: without it, each round left every user one more used passcode, and
//! a check reads up to 32 of them, so the 1,000-user row measured users with a long
//! history and grew slower window by window (BENCHMARKS.md).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use rand::seq::SliceRandom as _;
use rusqlite::params;
use tessera_server::db::Store;
use tessera_server::db::audit::Entry;
use tessera_server::db::devices::NewDevice;
use tessera_server::db::domains::DomainRow;
use tessera_server::db::engine::sqlite_sql;
use tessera_server::db::passcodes::{NewPasscode, insert_passcode_in};
use tessera_server::db::verify::audit_values;
use tessera_server::domain::passcode::{self, hashes_equal};
use tessera_server::service::admin;
use tessera_server::state::AppState;

/// What to seed.
pub struct Options {
    pub database: String,
    pub domain: String,
    pub users: u64,
    pub out: PathBuf,
    pub batch: u64,
    pub per_row: bool,
    pub reissue: bool,
    pub prune_first: bool,
    pub prefix: String,
}

/// Everything one user needs, computed before the database is touched.
struct User {
    name: String,
    device_key_id: String,
    registration_code: String,
}

/// The placeholder key every seeded device gets: the RADIUS path never reads it.
const PUBLIC_KEY: &[u8] = b"tessera-bench: no token behind this device";
const ACTOR: &str = "bench";

pub async fn run(o: Options) -> anyhow::Result<()> {
    let store = Store::open(&o.database).await?;
    // The state's key, loaded the way `serve` loads it, so hashes match what RADIUS computes.
    let state = AppState::new(store.clone()).await?;
    let domain = admin::domain(&store, &o.domain).await?;
    // One argon2id hash for every device: the PIN is never checked on the RADIUS path.
    let pin_hash = tessera_server::domain::pin::hash("bench-pin-123456")?;
    // Opened before the output file, so that a database it cannot seed leaves no file.
    let batched = if o.per_row || o.reissue { None } else { Some(open_batched(&state)?) };
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&o.out)
        .with_context(|| format!("cannot create {}", o.out.display()))?;
    let started = Instant::now();
    if let Some(mut conn) = batched {
        // Users and devices first, in name order; then one passcode each, in a random order.
        let mut ids = Vec::with_capacity(o.users as usize);
        let mut done = 0u64;
        while done < o.users {
            let n = o.batch.min(o.users - done);
            let users: Vec<User> = (done..done + n).map(|i| user(&o.prefix, i)).collect();
            ids.extend(enroll(&mut conn, &domain, &pin_hash, &users)?);
            done += n;
            progress("enrolled", done, o.users, started);
        }
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.shuffle(&mut rand::rng());
        let mut done = 0u64;
        for chunk in order.chunks(o.batch as usize) {
            let batch: Vec<(String, (i64, i64))> =
                chunk.iter().map(|&i| (user(&o.prefix, i as u64).name, ids[i])).collect();
            out.write_all(issue(&mut conn, &state, &domain, &batch)?.as_bytes())?;
            done += chunk.len() as u64;
            progress("issued passcodes to", done, o.users, started);
        }
    } else {
        let mut done = 0u64;
        let mut order: Vec<u64> = (0..o.users).collect();
        if o.reissue {
            order.shuffle(&mut rand::rng());
        }
        if o.prune_first {
            // Store::prune keeps an hour past expiry; every passcode so far expires within
            // the domain's lifetime.
            let later = tessera_server::now() + domain.passcode_lifetime_secs + 3600 + 1;
            let pruned = state.store.prune(later).await?;
            eprintln!("pruned {pruned} rows as the server would {}s from now", later - tessera_server::now());
        }
        for chunk in order.chunks(o.batch as usize) {
            let users: Vec<User> = chunk.iter().map(|&i| user(&o.prefix, i)).collect();
            let lines = if o.reissue {
                reissue(&state, &domain, &users).await?
            } else {
                per_row(&state, &domain, &pin_hash, &users).await?
            };
            out.write_all(lines.as_bytes())?;
            done += chunk.len() as u64;
            progress(if o.reissue { "reissued" } else { "seeded" }, done, o.users, started);
        }
    }
    out.sync_all()?;
    check(&state, &domain, &o).await?;
    // The engine the check ran on stops cleanly, as `serve` does (db::runs).
    if let Some(engine) = &state.engine {
        engine.release().await?;
    }
    let verb = if o.reissue { "gave" } else { "seeded" };
    eprintln!(
        "{verb} {} users, one outstanding passcode each, in domain {} ({:.0} users/s); passcodes in {}",
        o.users,
        domain.code,
        o.users as f64 / started.elapsed().as_secs_f64(),
        o.out.display()
    );
    Ok(())
}

fn progress(what: &str, done: u64, of: u64, started: Instant) {
    if done.is_multiple_of(100_000) || done == of {
        eprintln!("{what} {done} users in {:.1} s", started.elapsed().as_secs_f64());
    }
}

fn user(prefix: &str, i: u64) -> User {
    User {
        name: format!("{prefix}{i:07}"),
        device_key_id: format!("bench-{prefix}{i}"),
        // Unique among pending registrations of the domain; cleared on validation.
        registration_code: format!("9{i:011}"),
    }
}

/// The per-row path: exactly the calls registration, validation and issuance make.
async fn per_row(state: &AppState, domain: &DomainRow, pin_hash: &str, users: &[User]) -> anyhow::Result<String> {
    let store = &state.store;
    let mut lines = String::new();
    for u in users {
        let now = tessera_server::now();
        let new = NewDevice {
            domain_id: domain.id,
            device_key_id: &u.device_key_id,
            public_key: PUBLIC_KEY,
            pin_hash,
            registration_code: &u.registration_code,
            registration_expires_at: now + domain.registration_ttl_secs,
        };
        let device_id = store.insert_pending_device(new).await?;
        admin::validate(store, ACTOR, &domain.code, &u.registration_code, &u.name).await?;
        let user_id = store.user_by_name(domain.id, &u.name).await?.context("validated user vanished")?.id;
        lines.push_str(&issue_one(state, domain, &u.name, user_id, device_id).await?);
    }
    Ok(lines)
}

/// What issuance does once the PIN is right (`service::issue`): generate, hash,
/// `Store::insert_passcode` with its audit entry; the `name passcode` line.
async fn issue_one(
    state: &AppState,
    domain: &DomainRow,
    name: &str,
    user_id: i64,
    device_id: i64,
) -> anyhow::Result<String> {
    let now = tessera_server::now();
    let code = passcode::generate(domain.passcode_length as u32);
    let hash = state.passcode_key.hash(user_id, &code);
    let new = NewPasscode { user_id, device_id, hash: &hash, expires_at: now + domain.passcode_lifetime_secs, now };
    let detail = format!("passcode issued, valid {} s", domain.passcode_lifetime_secs);
    state.store.insert_passcode(new, issued_entry(domain, name, detail)).await?;
    Ok(format!("{name} {}\n", *code))
}

/// Issuance's audit entry for `name` (`service::issue`; no source address: no request).
fn issued_entry<'a>(domain: &'a DomainRow, name: &'a str, detail: String) -> Entry<'a> {
    Entry {
        actor: "token",
        kind: "token.passcode",
        domain_code: Some(&domain.code),
        username: Some(name),
        detail,
        ..Entry::default()
    }
}

/// New passcodes for users seeded before, one `Store::insert_passcode` (issuance's own
/// transaction) each.
async fn reissue(state: &AppState, domain: &DomainRow, users: &[User]) -> anyhow::Result<String> {
    let store = &state.store;
    let mut lines = String::new();
    for u in users {
        let user_id =
            store.user_by_name(domain.id, &u.name).await?.with_context(|| format!("{} was not seeded", u.name))?.id;
        let device = store.device_by_key(domain.id, &u.device_key_id).await?.context("seeded device missing")?;
        lines.push_str(&issue_one(state, domain, &u.name, user_id, device.id).await?);
    }
    Ok(lines)
}

/// The batched path's connection: rusqlite on the server's SQLite file. Through sqlx every
/// statement was a round trip to its SQLite worker thread, two context switches, which made
/// seeding 2,000,000 users take 13 minutes (BENCHMARKS.md); the statements are the same.
fn open_batched(state: &AppState) -> anyhow::Result<rusqlite::Connection> {
    let path = state
        .store
        .sqlite_file()
        .context("batched seeding writes the SQLite file directly; for another database use --per-row")?;
    let conn = rusqlite::Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // The server's checkpoint thread may hold the write lock for a moment.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Passcodes go to users in a random order, and each touches its device's row and index
    // pages at random: with SQLite's default 2 MB page cache, seeding 2,000,000 users read
    // those pages back from the kernel again and again.
    conn.pragma_update(None, "cache_size", SEED_CACHE_KIB)?;
    Ok(conn)
}

/// The seeding connection's page cache: 1 GiB (negative: in KiB, SQLite's convention).
const SEED_CACHE_KIB: i64 = -1024 * 1024;

/// A statement of the server's (`$N` placeholders, shared with PostgreSQL) in SQLite's
/// numbered form `?N`, as the server's engine runs them.
fn prepare<'c>(tx: &'c rusqlite::Transaction<'_>, sql: &str) -> rusqlite::Result<rusqlite::CachedStatement<'c>> {
    tx.prepare_cached(&sqlite_sql(sql))
}

/// The batched path, first half: the statements of [`per_row`] up to the passcode, in one
/// transaction per batch; each user's `(user id, device id)`.
fn enroll(
    conn: &mut rusqlite::Connection,
    domain: &DomainRow,
    pin_hash: &str,
    users: &[User],
) -> anyhow::Result<Vec<(i64, i64)>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut ids = Vec::with_capacity(users.len());
    let now = tessera_server::now();
    for u in users {
        // Store::insert_pending_device
        let device_id: i64 = prepare(
            &tx,
            "INSERT INTO devices (domain_id, device_key_id, public_key, pin_hash, registration_code, \
             registration_expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )?
        .query_row(
            params![
                domain.id,
                u.device_key_id,
                PUBLIC_KEY,
                pin_hash,
                u.registration_code,
                now + domain.registration_ttl_secs,
                now
            ],
            |r| r.get(0),
        )?;
        // Store::validate_registration
        prepare(
            &tx,
            "INSERT INTO users (domain_id, username, disabled, created_at) VALUES ($1, $2, 0, $3) \
             ON CONFLICT (domain_id, username) DO NOTHING",
        )?
        .execute(params![domain.id, u.name, now])?;
        let changed = prepare(
            &tx,
            "UPDATE devices SET user_id = (SELECT id FROM users WHERE domain_id = $1 AND username = $2), \
                    registration_code = NULL, registration_expires_at = NULL, validated_at = $3 \
             WHERE domain_id = $1 AND registration_code = $4 AND user_id IS NULL AND registration_expires_at >= $3",
        )?
        .execute(params![domain.id, u.name, now, u.registration_code])?;
        anyhow::ensure!(changed == 1, "validating {} failed", u.name);
        // service::admin::validate's audit entry
        prepare(
            &tx,
            "INSERT INTO audit_log (at, actor, kind, domain_code, username, source, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )?
        .execute(params![
            now,
            ACTOR,
            "registration.validate",
            domain.code,
            u.name,
            None::<String>,
            "registration validated"
        ])?;
        // Store::user_by_name (the user id the passcode hash is keyed with)
        let user_id: i64 = prepare(&tx, "SELECT id FROM users WHERE domain_id = $1 AND username = $2")?
            .query_row(params![domain.id, u.name], |r| r.get(0))?;
        ids.push((user_id, device_id));
    }
    tx.commit()?;
    Ok(ids)
}

/// The batched path, second half: a passcode for each `(name, (user id, device id))`, in
/// that order, in one transaction; the `name passcode` lines.
fn issue(
    conn: &mut rusqlite::Connection,
    state: &AppState,
    domain: &DomainRow,
    users: &[(String, (i64, i64))],
) -> anyhow::Result<String> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut lines = String::new();
    let now = tessera_server::now();
    let detail = format!("passcode issued, valid {} s", domain.passcode_lifetime_secs);
    for (name, (user_id, device_id)) in users {
        // service::issue: generate, hash, store as the engine does (AppState::insert_passcode)
        let code = passcode::generate(domain.passcode_length as u32);
        let hash = state.passcode_key.hash(*user_id, &code);
        let new = NewPasscode {
            user_id: *user_id,
            device_id: *device_id,
            hash: &hash,
            expires_at: now + domain.passcode_lifetime_secs,
            now,
        };
        let audit = issued_entry(domain, name, detail.clone());
        insert_passcode_in(&tx, &new, &audit_values(&audit, now))?;
        lines.push_str(&format!("{name} {}\n", *code));
    }
    tx.commit()?;
    Ok(lines)
}

/// Reads the first and last seeded users back through the verify path's own queries.
async fn check(state: &AppState, domain: &DomainRow, o: &Options) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&o.out)?;
    let lines: Vec<&str> = text.lines().collect();
    for line in [lines.first(), lines.last()].into_iter().flatten() {
        let (name, code) = line.split_once(' ').context("malformed output line")?;
        let user = state.store.user_by_name(domain.id, name).await?.context("seeded user missing")?;
        let hash = state.passcode_key.hash(user.id, code);
        let rows = state.store.recent_passcodes(user.id).await?;
        let live = rows.iter().any(|r| r.used == 0 && hashes_equal(&r.hash, &hash) && r.device_disabled == Some(0));
        anyhow::ensure!(live, "seeded passcode of {name} does not verify");
    }
    Ok(())
}
