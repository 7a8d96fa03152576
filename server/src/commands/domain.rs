//! `tessera-server domain add|list`.

use tessera_protocol::device::fingerprint;

use crate::cli::{DomainAddArgs, DomainCommand};
use crate::db::Store;
use crate::db::domains::DomainRow;
use crate::domain::DomainSettings;
use crate::error::Error;
use crate::service::admin::{self, DomainSpec};
use crate::service::throttle::ThrottlePolicy;

pub async fn run(store: &Store, cmd: DomainCommand) -> anyhow::Result<()> {
    match cmd {
        DomainCommand::Add(args) => add(store, args).await,
        DomainCommand::List => {
            for d in store.domains().await? {
                println!("{}{}", line(&d), throttle(store, d.id).await?);
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
    let policy = ThrottlePolicy { max_failures: a.max_passcode_failures, window_secs: a.passcode_failure_window };
    policy.validate().map_err(Error::Refused)?;
    let spec = DomainSpec { name: a.name, code: a.code, device_name: a.device_name, settings };
    let d = admin::add_domain(store, &super::cli_actor(), spec).await?;
    if policy != ThrottlePolicy::default() {
        store.set_throttle_policy(d.id, i64::from(policy.max_failures), i64::from(policy.window_secs)).await?;
    }
    eprintln!("domain {:?} created with code {}", d.name, d.code);
    println!("{}{}", line(&d), throttle(store, d.id).await?);
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

/// The guessing limit, appended to a domain's line.
async fn throttle(store: &Store, domain_id: i64) -> anyhow::Result<String> {
    let p = ThrottlePolicy::load(store, domain_id).await?;
    Ok(format!("  max-passcode-failures={} per {}s", p.max_failures, p.window_secs))
}
