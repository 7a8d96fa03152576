//! `tessera-server admin add`.

use std::io::{BufRead as _, IsTerminal as _};

use anyhow::Context as _;

use crate::cli::AdminCommand;
use crate::db::Store;
use crate::error::Error;
use crate::service::admins;

pub async fn run(store: &Store, cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Add { username } => {
            let password = read_password()?;
            admins::add_admin(store, &super::cli_actor(), &username, password).await?;
            eprintln!("administrator {username:?} created; sign in to the console with this password");
        }
    }
    Ok(())
}

/// The new password: asked twice without echo on a terminal, else one line of stdin.
fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New console password (at least 12 characters): ")
            .context("cannot read the password from the terminal")?;
        let again = rpassword::prompt_password("Repeat the password: ")
            .context("cannot read the password from the terminal")?;
        if first != again {
            return Err(Error::refused("the passwords differ; nothing was changed").into());
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("cannot read the password from stdin")?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}
