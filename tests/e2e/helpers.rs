//! Helpers: a server process per test, CLI calls, a token per user, radclient.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const DOMAIN: &str = "127000000001";
pub const SECRET: &str = "a-long-shared-secret";
pub const PIN: &str = "246810";

/// Path of a workspace binary next to this test executable (target/debug).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// The engine this run of the suite uses: `TESSERA_E2E_ENGINE=sqlite` (the default) or
/// `postgres`; `scripts/test` runs the suite once with each.
pub fn engine_is_postgres() -> bool {
    match std::env::var("TESSERA_E2E_ENGINE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("TESSERA_E2E_ENGINE={other:?}: use sqlite or postgres"),
    }
}

/// A PostgreSQL database created for one test and dropped after it.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    /// Creates a fresh database on the server `TESSERA_TEST_DATABASE_URL` points to.
    pub fn create() -> Self {
        let admin_url = std::env::var("TESSERA_TEST_DATABASE_URL")
            .expect("TESSERA_E2E_ENGINE=postgres needs TESSERA_TEST_DATABASE_URL (scripts/test sets it)");
        let name = format!("tessera_e2e_{}_{:016x}", std::process::id(), rand::random::<u64>());
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        let (base, _) = admin_url.rsplit_once('/').expect("a database URL ends in /DATABASE");
        let url = format!("{base}/{name}");
        Self { admin_url, name, url }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([&self.admin_url, "-q", "-c", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)])
            .output();
    }
}

/// Runs one SQL statement with `psql`, which must succeed.
pub fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql (Debian package postgresql-client) must be installed; scripts/test installs it");
    assert!(out.status.success(), "psql {sql:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A running `tessera-server serve` on ephemeral loopback ports with its own database.
pub struct TestServer {
    pub dir: TempDir,
    pub database: String,
    pub radius: SocketAddr,
    pub token: SocketAddr,
    pub admin: SocketAddr,
    child: Option<Child>,
    /// Dropped after the server is stopped (fields drop after `Drop::drop`).
    _pg: Option<PgDatabase>,
}

impl TestServer {
    /// A fresh database (SQLite file or PostgreSQL database, per the run's engine) and a
    /// server on it.
    pub fn start() -> Self {
        if !engine_is_postgres() {
            return Self::start_sqlite();
        }
        let pg = PgDatabase::create();
        Self::launch(tempfile::tempdir().unwrap(), pg.url.clone(), Some(pg))
    }

    /// A server on a fresh SQLite file whatever the run's engine, for what only SQLite has.
    pub fn start_sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database = format!("sqlite://{}", dir.path().join("tessera.db").display());
        Self::launch(dir, database, None)
    }

    /// Another node on an existing database (the caller keeps the first node alive).
    pub fn start_on(database: &str) -> Self {
        Self::launch(tempfile::tempdir().unwrap(), database.to_owned(), None)
    }

    fn launch(dir: TempDir, database: String, pg: Option<PgDatabase>) -> Self {
        let mut s = Self {
            dir,
            database,
            radius: "0.0.0.0:0".parse().unwrap(),
            token: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
            child: None,
            _pg: pg,
        };
        s.spawn();
        s
    }

    /// Starts the server again after [`TestServer::kill`], on the same database and ports.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    fn spawn(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("server.log")).unwrap();
        // Port 0 the first time; the same ports again after a restart, as a real server would.
        let ports = [self.radius.port(), self.token.port(), self.admin.port()].map(|p| format!("127.0.0.1:{p}"));
        let mut child = Command::new(bin("tessera-server"))
            .args(["--database", &self.database, "serve"])
            .args(["--radius-listen", &ports[0], "--token-listen", &ports[1], "--admin-listen", &ports[2]])
            .env("RUST_LOG", std::env::var("TESSERA_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = |line: &str| -> SocketAddr {
            let a = line.rsplit(' ').next().unwrap().trim_start_matches("http://").trim_end_matches("/udp");
            a.parse().unwrap()
        };
        for _ in 0..3 {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("server did not report its listeners; log:\n{}", self.log()));
            if line.starts_with("radius listening on ") {
                self.radius = addr(&line);
            } else if line.starts_with("token api listening on ") {
                self.token = addr(&line);
            } else if line.starts_with("admin console listening on ") {
                self.admin = addr(&line);
            } else {
                panic!("unexpected server output {line:?}");
            }
        }
        self.child = Some(child);
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// Stops the server (SIGKILL) and starts it again on the same database and ports.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn token_url(&self) -> String {
        format!("http://{}", self.token)
    }

    /// Runs `tessera-server --database DB ARGS…`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin("tessera-server")).args(["--database", &self.database]).args(args).output().unwrap()
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "tessera-server {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Adds the test domain with extra `domain add` flags.
    pub fn add_domain(&self, extra: &[&str]) {
        let mut args = vec!["domain", "add", "--name", "Example", "--code", DOMAIN];
        args.extend_from_slice(extra);
        self.cli_ok(&args);
    }

    /// Adds a loopback network client with a Message-Authenticator mode.
    pub fn add_client(&self, name: &str, mode: &str) {
        self.cli_ok(&[
            "client",
            "add",
            "--name",
            name,
            "--address",
            "127.0.0.1",
            "--secret",
            SECRET,
            "--domain",
            DOMAIN,
            "--message-authenticator",
            mode,
        ]);
    }

    pub fn validate(&self, registration_code: &str, username: &str) {
        self.cli_ok(&[
            "user",
            "validate",
            "--domain",
            DOMAIN,
            "--registration-code",
            registration_code,
            "--username",
            username,
        ]);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- server log ---\n{}--- end of server log ---", self.log());
        }
    }
}

/// A user's software token with its own keystore.
pub struct Token {
    dir: TempDir,
    server_url: String,
}

impl Token {
    pub fn new(server: &TestServer) -> Self {
        Self { dir: tempfile::tempdir().unwrap(), server_url: server.token_url() }
    }

    /// Runs `tessera-token ARGS…` with `stdin` as its input.
    pub fn run(&self, args: &[&str], stdin: &str) -> Output {
        self.spawn(args, stdin).wait_with_output().unwrap()
    }

    /// Starts `tessera-token ARGS…` with `stdin` as its input, without waiting for it.
    pub fn spawn(&self, args: &[&str], stdin: &str) -> std::process::Child {
        let mut child = Command::new(bin("tessera-token"))
            .args(args)
            .env("TESSERA_TOKEN_STORE", self.dir.path().join("keystore.json"))
            .env("TESSERA_TOKEN_PASSPHRASE", "correct horse battery staple")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child
    }

    /// Registers with the test domain; returns the registration code.
    pub fn register(&self, pin: &str) -> String {
        let out = self.run(&["add-domain", DOMAIN, "--server", &self.server_url, "--pin-stdin"], &format!("{pin}\n"));
        assert!(out.status.success(), "add-domain failed: {}", String::from_utf8_lossy(&out.stderr));
        let rc = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        assert_eq!(rc.len(), 12, "registration code {rc:?}");
        rc
    }

    /// Asks for a passcode with `pin`.
    pub fn passcode_output(&self, pin: &str) -> Output {
        self.run(&["passcode", "--pin-stdin"], &format!("{pin}\n"))
    }

    /// A passcode that must be issued.
    pub fn passcode(&self, pin: &str) -> String {
        let out = self.passcode_output(pin);
        assert!(out.status.success(), "passcode failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

/// A server with the test domain, an `auto` client and a validated token for `alice`.
pub struct Fixture {
    pub server: TestServer,
    pub alice: Token,
}

impl Fixture {
    pub fn new(domain_flags: &[&str]) -> Self {
        Self::with_client_mode(domain_flags, "auto")
    }

    /// The same with the loopback client in Message-Authenticator `mode`.
    pub fn with_client_mode(domain_flags: &[&str], mode: &str) -> Self {
        Self::on(TestServer::start(), domain_flags, mode)
    }

    /// The same on a SQLite file whatever the run's engine.
    pub fn on_sqlite(domain_flags: &[&str]) -> Self {
        Self::on(TestServer::start_sqlite(), domain_flags, "auto")
    }

    fn on(server: TestServer, domain_flags: &[&str], mode: &str) -> Self {
        server.add_domain(domain_flags);
        server.add_client("loopback", mode);
        let alice = Token::new(&server);
        let rc = alice.register(PIN);
        server.validate(&rc, "alice");
        // The server picks up new clients within a second; wait until it answers this one.
        // (Without Message-Authenticator unless required, so `auto` stays in its first state.)
        use crate::radius_client::{Answer, Client, Ma};
        let ma = if mode == "require" { Ma::Valid } else { Ma::None };
        let probe = Client::new(server.radius, SECRET).with_timeout(Duration::from_millis(300));
        eventually(Duration::from_secs(5), || probe.auth("nobody", "0", ma) != Answer::Dropped)
            .expect("the server answers the new network client");
        Self { server, alice }
    }
}

/// Result of one `radclient` exchange.
#[derive(Debug, PartialEq, Eq)]
pub enum RadclientAnswer {
    Accept,
    Reject,
    NoReply,
}

/// Sends one PAP Access-Request with Debian's `radclient`.
pub fn radclient(server: SocketAddr, user: &str, password: &str, message_authenticator: bool) -> RadclientAnswer {
    let mut attrs = format!("User-Name = \"{user}\", User-Password = \"{password}\"");
    if message_authenticator {
        attrs.push_str(", Message-Authenticator = 0x00");
    }
    let mut child = Command::new("radclient")
        .args(["-x", "-r", "1", "-t", "2", &server.to_string(), "auth", SECRET])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("radclient (Debian package freeradius-utils) must be installed; scripts/test installs it");
    child.stdin.take().unwrap().write_all(attrs.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if text.contains("Received Access-Accept") {
        RadclientAnswer::Accept
    } else if text.contains("Received Access-Reject") {
        RadclientAnswer::Reject
    } else if text.contains("No reply from server") {
        RadclientAnswer::NoReply
    } else {
        panic!("unexpected radclient output:\n{text}");
    }
}

/// Polls `f` until it returns true or `within` passes; returns how long it took.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}
