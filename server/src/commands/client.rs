//! `tessera-server client add|list|remove`.

use crate::cli::ClientCommand;
use crate::db::Store;
use crate::service::admin::{self, ClientSpec};

pub async fn run(store: &Store, cmd: ClientCommand) -> anyhow::Result<()> {
    let actor = super::cli_actor();
    match cmd {
        ClientCommand::Add(a) => {
            let name = a.name.clone();
            let spec = ClientSpec {
                name: a.name,
                address: a.address,
                secret: a.secret,
                domain_code: a.domain,
                mode: a.message_authenticator,
            };
            admin::add_client(store, &actor, spec).await?;
            eprintln!("network client {name:?} added; a running server uses it within a second");
        }
        ClientCommand::List => {
            for c in admin::clients(store).await? {
                let seen = if c.ma_seen != 0 { " (seen)" } else { "" };
                println!(
                    "{}  {}  domain {}  message-authenticator {}{}",
                    c.name, c.address, c.domain_code, c.ma_mode, seen
                );
            }
        }
        ClientCommand::Remove { name } => {
            admin::remove_client(store, &actor, &name).await?;
            eprintln!("network client {name:?} removed");
        }
    }
    Ok(())
}
