//! `tessera-server enroll issue`.

use crate::cli::EnrollCommand;
use crate::db::Store;
use crate::service::enroll;

pub async fn run(store: &Store, cmd: EnrollCommand) -> anyhow::Result<()> {
    match cmd {
        EnrollCommand::Issue { domain, username, days } => {
            let code = enroll::issue(store, &super::cli_actor(), &domain, &username, days).await?;
            // The code alone on stdout, for scripts; it is shown this once and stored hashed.
            println!("{code}");
            eprintln!("enrollment code for {username:?} in domain {domain}, valid {days} day(s), usable once");
        }
    }
    Ok(())
}
