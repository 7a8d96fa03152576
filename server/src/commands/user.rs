//! `tessera-server user validate|list|disable|enable|unlock`.

use crate::cli::UserCommand;
use crate::db::Store;
use crate::service::admin::{self, UserChange};

pub async fn run(store: &Store, cmd: UserCommand) -> anyhow::Result<()> {
    let actor = super::cli_actor();
    match cmd {
        UserCommand::Validate { domain, registration_code, username } => {
            admin::validate(store, &actor, &domain, &registration_code, &username).await?;
            eprintln!("registration validated: the token now belongs to {username:?}");
        }
        UserCommand::List { domain } => list(store, &domain).await?,
        UserCommand::Disable(u) => change(store, &actor, &u.domain, &u.name, UserChange::Disable).await?,
        UserCommand::Enable(u) => change(store, &actor, &u.domain, &u.name, UserChange::Enable).await?,
        UserCommand::Unlock(u) => change(store, &actor, &u.domain, &u.name, UserChange::Unlock).await?,
    }
    Ok(())
}

async fn change(store: &Store, actor: &str, domain: &str, name: &str, c: UserChange) -> anyhow::Result<()> {
    let message = admin::change_user(store, actor, domain, name, c).await?;
    eprintln!("{message}");
    Ok(())
}

async fn list(store: &Store, domain: &str) -> anyhow::Result<()> {
    let (limit, now) = (admin::domain(store, domain).await?.max_pin_failures, crate::now());
    for r in admin::user_listing(store, domain).await? {
        let device = match (&r.device_key_id, r.wrong_pins) {
            (Some(id), Some(wrong)) => {
                let state = if r.device_disabled.unwrap_or(0) != 0 {
                    "disabled".to_owned()
                } else if wrong >= limit {
                    "locked".to_owned()
                } else {
                    format!("active, {wrong} wrong PIN(s)")
                };
                format!("device {} {state}", &id[..16.min(id.len())])
            }
            _ => "no device".to_owned(),
        };
        match &r.username {
            Some(name) => {
                let user_state = if r.user_disabled.unwrap_or(0) != 0 { "disabled" } else { "enabled" };
                println!("{name}  {user_state}  {device}");
            }
            None => {
                let left = r.registration_expires_at.map(|t| (t - now).max(0) / 60).unwrap_or(0);
                let code = r.registration_code.as_deref().unwrap_or("-");
                let id = r.device_key_id.as_deref().unwrap_or("-");
                println!(
                    "(pending)  registration code {code}  expires in {left} min  device {}",
                    &id[..16.min(id.len())]
                );
            }
        }
    }
    Ok(())
}
