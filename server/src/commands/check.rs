//! `tessera-server check`: validates the configuration file, the database and what is
//! stored in it, and tells the operator in one line per item what is wrong, like an
//! authentication proxy's connectivity tool. Changes nothing: pending migrations are
//! reported, not applied. Exits 1 when something is wrong.

use std::net::SocketAddr;
use std::path::Path;

use sqlx::AnyPool;
use tessera_protocol::device::fingerprint;
use tessera_protocol::envelope::ServerKeyPair;

use crate::cli::CheckArgs;
use crate::config::{self, DEFAULT_DATABASE, FileConfig};
use crate::db::{Engine, Store, redact_url};
use crate::domain::{ClientAddress, DomainSettings, MessageAuthenticatorMode};
use crate::error::Error;
use crate::service::throttle::ThrottlePolicy;

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The report: one line per item on stdout, counting problems.
#[derive(Default)]
struct Report {
    problems: usize,
    warnings: usize,
}

impl Report {
    fn ok(&mut self, what: impl std::fmt::Display) {
        println!("ok    {what}");
    }
    fn warn(&mut self, what: impl std::fmt::Display) {
        self.warnings += 1;
        println!("warn  {what}");
    }
    fn fail(&mut self, what: impl std::fmt::Display) {
        self.problems += 1;
        println!("FAIL  {what}");
    }
}

pub async fn run(config_path: Option<&Path>, database: Option<&str>, args: &CheckArgs) -> anyhow::Result<()> {
    let mut r = Report::default();
    let file = match FileConfig::load(config_path) {
        Ok(f) => {
            match config_path {
                Some(p) => r.ok(format!("configuration {} reads", p.display())),
                None => r.ok("no configuration file: built-in defaults, environment and flags"),
            }
            f
        }
        Err(e) => {
            r.fail(format!("{e:#}"));
            FileConfig::default()
        }
    };
    let url = database.map(str::to_owned).or(file.database.clone()).unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
    if let Some(store) = database_checks(&mut r, &url).await {
        stored_checks(&mut r, &store).await;
    }
    if args.bind {
        listener_checks(&mut r, &file).await;
    }
    if r.problems > 0 {
        return Err(Error::refused(format!("{} problem(s) found, {} warning(s)", r.problems, r.warnings)).into());
    }
    eprintln!("check passed ({} warning(s))", r.warnings);
    Ok(())
}

/// Connects without migrating and compares applied migrations with this binary's.
async fn database_checks(r: &mut Report, url: &str) -> Option<Store> {
    sqlx::any::install_default_drivers();
    let shown = redact_url(url);
    let engine = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Engine::Postgres
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.trim_start_matches("//").split('?').next().unwrap_or_default();
        if !path.is_empty() && !Path::new(path).exists() {
            r.fail(format!("database {shown}: the file {path} does not exist (serve would create an empty one)"));
            return None;
        }
        Engine::Sqlite
    } else {
        r.fail(format!("database {shown}: unsupported URL; use sqlite://FILE or postgres://…"));
        return None;
    };
    let pool = match AnyPool::connect(url).await {
        Ok(p) => p,
        Err(e) => {
            r.fail(format!("database {shown}: cannot connect: {e}"));
            return None;
        }
    };
    let applied: Result<Vec<(i64, i64)>, _> = sqlx::query_as(
        "SELECT version, CAST(CASE WHEN success THEN 1 ELSE 0 END AS BIGINT) FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(&pool)
    .await;
    let applied = match applied {
        Ok(v) => v,
        Err(e) => {
            let what = if e.to_string().contains("_sqlx_migrations") {
                "no migrations applied (not a Tessera database yet?)".to_owned()
            } else {
                format!("cannot read it: {e}")
            };
            r.fail(format!("database {shown}: {what}"));
            return None;
        }
    };
    r.ok(format!("database {shown} answers ({engine:?})"));
    let migrator = if engine == Engine::Sqlite { &SQLITE } else { &POSTGRES };
    let known: Vec<i64> = migrator.iter().map(|m| m.version).collect();
    let failed: Vec<i64> = applied.iter().filter(|(_, ok)| *ok == 0).map(|(v, _)| *v).collect();
    let pending: Vec<i64> = known.iter().filter(|v| !applied.iter().any(|(a, _)| a == *v)).copied().collect();
    let unknown: Vec<i64> = applied.iter().map(|(v, _)| *v).filter(|v| !known.contains(v)).collect();
    if !failed.is_empty() {
        r.fail(format!("migrations {failed:?} failed half-way: restore a backup or repair by hand"));
    } else if !unknown.is_empty() {
        r.fail(format!("migrations {unknown:?} are newer than this binary: upgrade tessera-server"));
    } else if !pending.is_empty() {
        r.fail(format!("migrations {pending:?} not applied yet: `tessera-server serve` applies them at start"));
    } else {
        r.ok(format!("migrations current ({} applied)", applied.len()));
    }
    pool.close().await;
    if r.problems > 0 {
        return None;
    }
    match Store::open(url).await {
        Ok(s) => Some(s),
        Err(e) => {
            r.fail(format!("database {shown}: {e:#}"));
            None
        }
    }
}

/// Domains (keys, settings) and network clients (address, mode, secret).
async fn stored_checks(r: &mut Report, store: &Store) {
    let domains = match store.domains().await {
        Ok(d) => d,
        Err(e) => return r.fail(format!("reading domains failed: {e}")),
    };
    if domains.is_empty() {
        r.warn("no domains: create one with `tessera-server domain add`");
    }
    for d in &domains {
        let label = format!("domain {} {:?}", d.code, d.name);
        if ServerKeyPair::from_bytes(&d.private_key, &d.public_key).is_err() {
            r.fail(format!("{label}: its server key pair does not load (corrupt row)"));
            continue;
        }
        // The struct update keeps this compiling when a setting is added (checked at its default).
        #[allow(clippy::needless_update)]
        let settings = DomainSettings {
            passcode_lifetime_secs: u32::try_from(d.passcode_lifetime_secs).unwrap_or(0),
            pin_min_length: u32::try_from(d.pin_min_length).unwrap_or(0),
            passcode_length: u32::try_from(d.passcode_length).unwrap_or(0),
            max_pin_failures: u32::try_from(d.max_pin_failures).unwrap_or(0),
            registration_ttl_secs: u32::try_from(d.registration_ttl_secs).unwrap_or(0),
            ..DomainSettings::default()
        };
        let policy = ThrottlePolicy::load(store, d.id).await.unwrap_or_default();
        match settings.validate().and_then(|()| policy.validate()) {
            Ok(()) => r.ok(format!(
                "{label}: server key loads (fingerprint {}), settings valid, {} wrong passcodes per {}s",
                fingerprint(&d.public_key),
                policy.max_failures,
                policy.window_secs
            )),
            Err(e) => r.fail(format!("{label}: {e}")),
        }
    }
    let clients = match store.clients().await {
        Ok(c) => c,
        Err(e) => return r.fail(format!("reading network clients failed: {e}")),
    };
    if clients.is_empty() {
        r.warn("no network clients: RADIUS drops every request until one is added (`client add`)");
    }
    for c in &clients {
        let label = format!("client {:?} ({})", c.name, c.address);
        if let Err(e) = ClientAddress::parse(&c.address) {
            r.fail(format!("{label}: address does not parse: {e}"));
        } else if c.ma_mode.parse::<MessageAuthenticatorMode>().is_err() {
            r.fail(format!("{label}: unknown Message-Authenticator mode {:?}", c.ma_mode));
        } else if c.secret.len() < 12 {
            r.fail(format!("{label}: shared secret shorter than 12 characters"));
        } else if c.secret.len() < 16 {
            r.warn(format!("{label}: shared secret of {} characters; 16 or more recommended", c.secret.len()));
        } else {
            let seen = if c.ma_seen != 0 { ", required from now on" } else { "" };
            r.ok(format!("{label}: domain {}, Message-Authenticator {}{seen}", c.domain_code, c.ma_mode));
        }
    }
}

/// Tries to bind each listener's address, as `serve` would.
async fn listener_checks(r: &mut Report, file: &FileConfig) {
    let udp = config::layer(None, file.radius_listen, config::DEFAULT_RADIUS_LISTEN);
    match tokio::net::UdpSocket::bind(udp).await {
        Ok(_) => r.ok(format!("RADIUS address {udp}/udp can be bound")),
        Err(e) => r.fail(format!("RADIUS address {udp}/udp: {e} (a server already running?)")),
    }
    let tcp: [(&str, SocketAddr); 2] = [
        ("token API", config::layer(None, file.token_listen, config::DEFAULT_TOKEN_LISTEN)),
        ("admin console", config::layer(None, file.admin_listen, config::DEFAULT_ADMIN_LISTEN)),
    ];
    for (what, addr) in tcp {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(_) => r.ok(format!("{what} address {addr} can be bound")),
            Err(e) => r.fail(format!("{what} address {addr}: {e} (a server already running?)")),
        }
    }
}
