//! `tessera-server`: parse the command line, set up logging, run, report errors.

use std::process::ExitCode;

use clap::Parser;
use tessera_server::cli::Cli;
use tessera_server::error::Error;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match runtime(&cli) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(tessera_server::commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            // A refusal of the operator's input exits 1, any other failure 2.
            match e.downcast_ref::<Error>() {
                Some(Error::Refused(_)) => ExitCode::from(1),
                _ => ExitCode::from(2),
            }
        }
    }
}

/// The async runtime: one worker thread when serving a SQLite database
/// (`commands::serves_sqlite`), else one per core; tokio's own `TOKIO_WORKER_THREADS`
/// overrides either.
fn runtime(cli: &Cli) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() && tessera_server::commands::serves_sqlite(cli) {
        builder.worker_threads(1);
    }
    builder.build()
}
