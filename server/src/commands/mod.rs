//! The CLI commands: each parses nothing itself (clap did), calls the service layer and
//! prints results on stdout, messages on stderr.

pub mod admin;
pub mod check;
pub mod client;
pub mod domain;
pub mod enroll;
pub mod serve;
pub mod user;

use crate::cli::{Cli, Command};
use crate::config::{DEFAULT_DATABASE, FileConfig};
use crate::db::{Engine, Store};

/// The actor name written to the audit log for CLI changes.
pub fn cli_actor() -> String {
    let user = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// The database a command line names: its flag, else the configuration file's, else the
/// default.
fn database_url(cli: &Cli, file: &FileConfig) -> String {
    cli.database.clone().or(file.database.clone()).unwrap_or_else(|| DEFAULT_DATABASE.to_owned())
}

/// Whether the command line serves a SQLite database. `main` then gives the async runtime
/// one worker thread: RADIUS, the database's writes and the crypto have threads of their
/// own there, and a second worker mostly handed the token API's requests back and forth
/// (BENCHMARKS.md, Next steps item 26). On PostgreSQL RADIUS runs on the runtime, which
/// keeps tokio's default of one worker per core. A configuration file that cannot be read
/// counts as not SQLite here; [`run`] reports it.
pub fn serves_sqlite(cli: &Cli) -> bool {
    matches!(cli.command, Command::Serve(_))
        && FileConfig::load(cli.config.as_deref())
            .is_ok_and(|file| Engine::of_url(&database_url(cli, &file)) == Some(Engine::Sqlite))
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // `check` reports a broken file or database itself instead of failing on the first error.
    if let Command::Check(args) = &cli.command {
        return check::run(cli.config.as_deref(), cli.database.as_deref(), args).await;
    }
    let file = FileConfig::load(cli.config.as_deref())?;
    let url = database_url(&cli, &file);
    let store = Store::open(&url).await?;
    match cli.command {
        Command::Serve(args) => serve::run(store, &file, args, &url).await,
        Command::Domain(cmd) => domain::run(&store, cmd).await,
        Command::Client(cmd) => client::run(&store, cmd).await,
        Command::User(cmd) => user::run(&store, cmd).await,
        Command::Enroll(cmd) => enroll::run(&store, cmd).await,
        Command::Admin(cmd) => admin::run(&store, cmd).await,
        Command::Check(_) => unreachable!("handled above"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn sqlite(args: &[&str]) -> bool {
        serves_sqlite(&Cli::try_parse_from(args).unwrap())
    }

    #[test]
    fn only_serving_a_sqlite_database_counts_as_serving_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let pg_file = dir.path().join("pg.toml");
        std::fs::write(&pg_file, "database = \"postgres://tessera@db/tessera\"\n").unwrap();
        let pg_file = pg_file.to_str().unwrap();
        let sqlite_file = dir.path().join("sqlite.toml");
        std::fs::write(&sqlite_file, "database = \"sqlite:///var/lib/tessera/t.db\"\n").unwrap();
        let sqlite_file = sqlite_file.to_str().unwrap();

        assert!(sqlite(&["tessera-server", "--database", "sqlite://t.db", "serve"]));
        assert!(!sqlite(&["tessera-server", "--database", "postgres://tessera@db/tessera", "serve"]));
        assert!(!sqlite(&["tessera-server", "--database", "postgresql://tessera@db/tessera", "serve"]));
        // Another command on SQLite: the runtime's default.
        assert!(!sqlite(&["tessera-server", "--database", "sqlite://t.db", "domain", "list"]));
        // From the configuration file, unless the flag says otherwise.
        assert!(sqlite(&["tessera-server", "--config", sqlite_file, "serve"]));
        assert!(!sqlite(&["tessera-server", "--config", pg_file, "serve"]));
        assert!(sqlite(&["tessera-server", "--config", pg_file, "--database", "sqlite://t.db", "serve"]));
        // A file that cannot be read: not known to be SQLite (`run` reports the error).
        assert!(!sqlite(&["tessera-server", "--config", "/nonexistent/tessera.toml", "serve"]));
    }
}
