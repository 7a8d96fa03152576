//! `tessera-bench`: the measurement tools of issue 6. `seed` fills a database with users
//! that each hold one outstanding passcode; `load` keeps N RADIUS Access-Requests in flight
//! against a server and reports throughput and latency; `issue` asks the token API for
//! passcodes on C threads; `argon2` measures the bare argon2id verify rate that bounds
//! issuance. Benchmark-only: `seed` writes passcodes in clear to a file, which no real
//! deployment may ever do.

mod argon;
mod issue;
mod load;
mod packet;
mod procstat;
mod seed;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Benchmark tools for Tessera (never point them at a production database).
#[derive(Debug, Parser)]
#[command(name = "tessera-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create K users, each with one validated device and one outstanding passcode, through
    /// the server's storage code; write `username passcode` lines to a file.
    ///
    /// BENCHMARK ONLY: the output file holds live passcodes in clear text.
    Seed(SeedArgs),
    /// Keep N Access-Requests in flight against a RADIUS server and report requests/s and
    /// latency percentiles.
    Load(LoadArgs),
    /// Register D devices through the token API, validate them, then ask for passcodes on C
    /// worker threads (one device each) and report passcodes/s and latency percentiles.
    Issue(IssueArgs),
    /// The bare argon2id verify rate with the server's parameters, on T threads.
    Argon2(Argon2Args),
}

#[derive(Debug, Args)]
struct IssueArgs {
    /// Base URL of the token API (http://ADDR:PORT)
    #[arg(long, value_name = "URL")]
    token_url: String,
    /// Database URL of the same server, to validate the registrations
    #[arg(long, value_name = "URL")]
    database: String,
    /// Code of the domain
    #[arg(long, value_name = "CODE")]
    domain: String,
    /// Devices to register (each ~0.3 s of RSA key generation); at least --concurrency
    #[arg(long, default_value_t = 8, value_name = "D")]
    devices: usize,
    /// Worker threads, each with its own device and one request at a time
    #[arg(long, default_value_t = 4, value_name = "C")]
    concurrency: usize,
    /// Seconds to measure
    #[arg(long, value_name = "SECS")]
    duration: f64,
    /// Seconds of load before the measuring window opens (not counted)
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    warmup: f64,
    /// Requests each worker seals and signs before the clock starts (used first; the rest
    /// are sealed inline). Their timestamps must stay within the server's 120 s skew.
    #[arg(long, default_value_t = 0, value_name = "N")]
    preseal: usize,
    /// Paired rounds for the issuance/argon2id ratio: each round measures the bare argon2id
    /// rate (with the server idle) right before its issuance window, both --duration long,
    /// and the medians are reported. 0: one issuance window, no baseline.
    #[arg(long, default_value_t = 0, value_name = "R")]
    rounds: usize,
    /// Threads of each round's bare argon2id measurement (default: the number of cores)
    #[arg(long, value_name = "T")]
    baseline_threads: Option<usize>,
    /// The server's process id: each window then says where the machine's CPU went (the
    /// server's argon2id threads, its other threads by name, this client, everything else,
    /// idle) and what a passcode cost against a bare verify, from /proc
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
}

#[derive(Debug, Args)]
struct Argon2Args {
    /// Threads verifying in parallel
    #[arg(long, value_name = "T")]
    threads: usize,
    /// Seconds to measure
    #[arg(long, value_name = "SECS")]
    duration: f64,
}

#[derive(Debug, Args)]
struct SeedArgs {
    /// Database URL (sqlite://FILE, or postgres://… with --per-row or --reissue); the domain
    /// must already exist
    #[arg(long, value_name = "URL")]
    database: String,
    /// Code of the domain the users belong to
    #[arg(long, value_name = "CODE")]
    domain: String,
    /// Number of users to create
    #[arg(long, value_name = "K")]
    users: u64,
    /// Where to write `username passcode` lines (live passcodes in clear: benchmark only)
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Users per transaction in batched mode
    #[arg(long, default_value_t = 5000, value_name = "N")]
    batch: u64,
    /// Use the per-row Store functions (one durable commit each) instead of batching the
    /// same SQL statements into transactions on the SQLite file; slow, for cross-checking
    /// small seeds
    #[arg(long)]
    per_row: bool,
    /// Give the K users seeded before (same --prefix) a new passcode each, through the
    /// issuance path's own transaction, instead of creating users
    #[arg(long, conflicts_with = "per_row")]
    reissue: bool,
    /// With --reissue: first run the server's own prune as it runs once every passcode
    /// issued so far has been expired for an hour, so the users start without a history of
    /// used passcodes (a check reads up to 32 of a user's recent ones)
    #[arg(long, requires = "reissue")]
    prune_first: bool,
    /// Prefix of the generated usernames
    #[arg(long, default_value = "u", value_name = "PREFIX")]
    prefix: String,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// RADIUS server address
    #[arg(long, value_name = "ADDR")]
    server: SocketAddr,
    /// RADIUS shared secret
    #[arg(long, env = "TESSERA_BENCH_SECRET", hide_env_values = true)]
    secret: String,
    /// Requests kept in flight (one socket per 256)
    #[arg(long, value_name = "N")]
    inflight: usize,
    /// Seconds to measure
    #[arg(long, value_name = "SECS")]
    duration: f64,
    /// Seconds of load before the measuring window opens (not counted)
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    warmup: f64,
    /// `username passcode` lines (from `seed`); each line is sent once
    #[arg(long, value_name = "FILE", required_unless_present = "user")]
    input: Option<PathBuf>,
    /// With --input: skip this many lines (used by earlier runs)
    #[arg(long, default_value_t = 0, requires = "input", value_name = "N")]
    offset: usize,
    /// With --input: send a wrong passcode for each user (cycling through the file)
    #[arg(long, requires = "input")]
    wrong: bool,
    /// Send this user with --password on every request (e.g. against FreeRADIUS)
    #[arg(long, conflicts_with = "input", requires = "password")]
    user: Option<String>,
    /// The fixed password for --user
    #[arg(long, requires = "user")]
    password: Option<String>,
    /// Seconds after which an unanswered request counts as lost and its slot is reused
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    timeout: f64,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Seed(a) => {
            let opts = seed::Options {
                database: a.database,
                domain: a.domain,
                users: a.users,
                out: a.out,
                batch: a.batch.max(1),
                per_row: a.per_row,
                reissue: a.reissue,
                prune_first: a.prune_first,
                prefix: a.prefix,
            };
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(seed::run(opts))
        }
        Command::Load(a) => {
            let source = match (a.input, a.user) {
                (Some(file), _) => load::Source::from_file(&file, a.wrong, a.offset)?,
                (None, Some(user)) => load::Source::Fixed { user, password: a.password.unwrap_or_default() },
                (None, None) => anyhow::bail!("give --input FILE or --user and --password"),
            };
            let opts = load::Options {
                server: a.server,
                secret: a.secret.into_bytes(),
                inflight: a.inflight.max(1),
                warmup: std::time::Duration::from_secs_f64(a.warmup),
                duration: std::time::Duration::from_secs_f64(a.duration),
                timeout: std::time::Duration::from_secs_f64(a.timeout),
            };
            load::run(opts, source)
        }
        Command::Issue(a) => issue::run(issue::Options {
            token_url: a.token_url,
            database: a.database,
            domain: a.domain,
            devices: a.devices,
            concurrency: a.concurrency,
            duration: std::time::Duration::from_secs_f64(a.duration),
            warmup: std::time::Duration::from_secs_f64(a.warmup),
            preseal: a.preseal,
            rounds: a.rounds,
            baseline_threads: a
                .baseline_threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            server_pid: a.server_pid,
        }),
        Command::Argon2(a) => argon::run(a.threads, std::time::Duration::from_secs_f64(a.duration)),
    }
}
