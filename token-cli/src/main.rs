//! `tessera-token`: the Tessera software token.
//!
//! Thin entry point: parses the command line, runs one command, prints an error with its
//! causes and maps it to an exit code (1 for a refusal by the server, 2 for any other error).

mod client;
mod commands;
mod keystore;

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::{Parser, Subcommand};

use crate::client::{RateLimited, Refused};
use crate::commands::Store;

/// Tessera software token: one-time passcodes for two-factor authentication.
///
/// A token holds, for each domain it is registered with, a device key pair and the pinned
/// public key of the domain's Tessera server, in a keystore encrypted under your passphrase.
/// When you ask for a passcode, the token sends your PIN, encrypted and signed, to the
/// server, which checks it and answers with a one-time passcode. The PIN is never stored on
/// this machine: without it the keystore yields no passcode.
///
/// The keystore passphrase is asked on the terminal, or read from TESSERA_TOKEN_PASSPHRASE.
/// Exit status: 0 on success, 1 when the server refuses (wrong PIN, locked, not validated…),
/// 2 on any other error.
#[derive(Debug, Parser)]
#[command(name = "tessera-token", version, max_term_width = 100)]
struct Cli {
    /// The keystore file [default: <data dir>/tessera/keystore.json].
    #[arg(long, global = true, value_name = "PATH", env = "TESSERA_TOKEN_STORE")]
    store: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    AddDomain(commands::add_domain::Args),
    Passcode(commands::passcode::Args),
    List(commands::list::Args),
    Remove(commands::remove::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let path = match cli.store {
        Some(path) => path,
        None => dirs::data_dir()
            .ok_or_else(|| anyhow!("cannot find your data directory: give the keystore with --store PATH"))?
            .join("tessera")
            .join("keystore.json"),
    };
    let store = Store { path };
    match cli.command {
        Command::AddDomain(args) => commands::add_domain::run(&store, args),
        Command::Passcode(args) => commands::passcode::run(&store, args),
        Command::List(args) => commands::list::run(&store, args),
        Command::Remove(args) => commands::remove::run(&store, args),
    }
}

/// A closed stdout (`tessera-token list | head -1`) is not a failure.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe))
}

fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return refused.exit_code();
        }
        if cause.is::<RateLimited>() {
            return 1;
        }
    }
    2
}
