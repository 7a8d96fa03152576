//! `tessera-server domain add|list`.

use tessera_protocol::device::fingerprint;

use crate::cli::{DomainAddArgs, DomainCommand};
use crate::db::Store;
use crate::db::domains::DomainRow;
use crate::domain::DomainSettings;
use crate::service::admin::{self, DomainSpec};

pub async fn run(store: &Store, cmd: DomainCommand) -> anyhow::Result<()> {
    match cmd {
        DomainCommand::Add(args) => add(store, args).await,
        DomainCommand::List => {
            for d in store.domains().await? {
                println!("{}", line(&d));
            }
            Ok(())
        }
    }
}

async fn add(store: &Store, a: DomainAddArgs) -> anyhow::Result<()> {
    let settings = DomainSettings {
        passcode_lifetime_secs: a.passcode_lifetime,
        pin_min_length: a.pin_min_length,
        passcode_length: a.passcode_length,
        max_pin_failures: a.max_pin_failures,
        registration_ttl_secs: a.registration_lifetime.saturating_mul(3600),
    };
    let spec = DomainSpec { name: a.name, code: a.code, device_name: a.device_name, settings };
    let d = admin::add_domain(store, &super::cli_actor(), spec).await?;
    eprintln!("domain {:?} created with code {}", d.name, d.code);
    println!("{}", line(&d));
    Ok(())
}

fn line(d: &DomainRow) -> String {
    format!(
        "{}  {}  lifetime={}s pin-min={} passcode-length={} max-pin-failures={} device-name={:?}  fingerprint {}",
        d.code,
        d.name,
        d.passcode_lifetime_secs,
        d.pin_min_length,
        d.passcode_length,
        d.max_pin_failures,
        d.device_name,
        fingerprint(&d.public_key)
    )
}
