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
use crate::db::Store;

/// The actor name written to the audit log for CLI changes.
pub fn cli_actor() -> String {
    let user = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // `check` reports a broken file or database itself instead of failing on the first error.
    if let Command::Check(args) = &cli.command {
        return check::run(cli.config.as_deref(), cli.database.as_deref(), args).await;
    }
    let file = FileConfig::load(cli.config.as_deref())?;
    let url = cli.database.clone().or(file.database.clone()).unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
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
