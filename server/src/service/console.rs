//! Console use-cases beyond what the CLI offers: editing domains and clients, devices, paged
//! user listings and the audit log. Each change is audited like the CLI's (`service::admin`).

use super::admin::{audit, check_name, domain};
use crate::db::Store;
use crate::db::audit::Row as AuditRow;
use crate::db::clients::ClientRow;
use crate::db::console::{AuditFilter, PendingRow, UserDevice};
use crate::domain::{ClientAddress, DomainSettings, MessageAuthenticatorMode};
use crate::error::{Error, Result, is_unique_violation};

/// Users per page of the Users tab.
pub const USERS_PER_PAGE: i64 = 50;
/// Entries per page of the Logs tab.
pub const LOG_PER_PAGE: i64 = 100;

/// Changes a domain's name, device name and settings.
pub async fn update_domain(
    store: &Store,
    actor: &str,
    code: &str,
    name: &str,
    device_name: &str,
    settings: &DomainSettings,
) -> Result<()> {
    let d = domain(store, code).await?;
    let name = check_name("domain name", name)?;
    let device_name = check_name("device domain name", device_name)?;
    settings.validate().map_err(Error::Refused)?;
    match store.update_domain(d.id, &name, &device_name, settings).await {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::refused(format!("another domain is already named {name:?}")));
        }
        Err(e) => return Err(e.into()),
    }
    let detail = format!(
        "domain {name:?} changed: lifetime {}s, PIN min {}, passcode length {}, wrong-PIN limit {}, device name {device_name:?}",
        settings.passcode_lifetime_secs, settings.pin_min_length, settings.passcode_length, settings.max_pin_failures
    );
    audit(store, actor, "domain.edit", Some(&d.code), None, detail).await
}

/// The network client with `id`.
pub async fn client(store: &Store, id: i64) -> Result<ClientRow> {
    let clients = store.clients().await?;
    clients.into_iter().find(|c| c.id == id).ok_or_else(|| Error::refused("no such network client"))
}

/// Changes a client; an empty `secret` keeps the current one. The RADIUS listener reloads
/// its table every second, so the change applies at once.
pub async fn update_client(
    store: &Store,
    actor: &str,
    id: i64,
    address: &str,
    secret: &str,
    domain_code: &str,
    mode: MessageAuthenticatorMode,
) -> Result<()> {
    let c = client(store, id).await?;
    let address = ClientAddress::parse(address).map_err(Error::Refused)?;
    let secret = (!secret.is_empty()).then_some(secret);
    if secret.is_some_and(|s| s.len() < 12 || s.len() > 128) {
        return Err(Error::refused("the shared secret must have 12 to 128 characters (16 or more recommended)"));
    }
    let d = domain(store, domain_code).await?;
    store.update_client(id, &address.to_string(), secret, d.id, mode.as_str()).await?;
    let changed = if secret.is_some() { ", new secret" } else { "" };
    let detail = format!("client {:?} changed: {address}, Message-Authenticator {mode}{changed}", c.name);
    audit(store, actor, "client.edit", Some(&d.code), None, detail).await
}

/// A state change of one device.
#[derive(Clone, Copy, Debug)]
pub enum DeviceChange {
    Disable,
    Enable,
    Delete,
}

/// Disables, enables or deletes a validated device of a domain.
pub async fn change_device(
    store: &Store,
    actor: &str,
    domain_code: &str,
    id: i64,
    change: DeviceChange,
) -> Result<String> {
    let d = domain(store, domain_code).await?;
    let owner = store.device_owner(d.id, id).await?;
    let Some((user, key)) = owner else {
        return Err(Error::refused("no such device in this domain"));
    };
    let short = &key[..16.min(key.len())];
    let (kind, message) = match change {
        DeviceChange::Disable => {
            store.set_device_disabled(d.id, id, true).await?;
            ("device.disable", format!("device {short} of {user:?} disabled"))
        }
        DeviceChange::Enable => {
            store.set_device_disabled(d.id, id, false).await?;
            ("device.enable", format!("device {short} of {user:?} enabled"))
        }
        DeviceChange::Delete => {
            store.delete_device(d.id, id).await?;
            ("device.delete", format!("device {short} of {user:?} deleted"))
        }
    };
    audit(store, actor, kind, Some(&d.code), Some(&user), message.clone()).await?;
    Ok(message)
}

/// One user and its devices, for the Users tab.
pub struct UserEntry {
    pub username: String,
    pub disabled: bool,
    pub devices: Vec<UserDevice>,
}

/// A page of users whose name starts with `prefix`, after `after`; and the `after` of the
/// next page when there is one.
pub async fn users_page(
    store: &Store,
    domain_id: i64,
    prefix: &str,
    after: &str,
) -> Result<(Vec<UserEntry>, Option<String>)> {
    let rows = store.users_page(domain_id, prefix, after, USERS_PER_PAGE + 1).await?;
    let mut users: Vec<UserEntry> = Vec::new();
    for row in rows {
        if users.last().map(|u| &u.username) != Some(&row.username) {
            users.push(UserEntry { username: row.username.clone(), disabled: row.user_disabled != 0, devices: vec![] });
        }
        if row.device_id.is_some()
            && let Some(u) = users.last_mut()
        {
            u.devices.push(row);
        }
    }
    let next = if users.len() as i64 > USERS_PER_PAGE {
        users.truncate(USERS_PER_PAGE as usize);
        users.last().map(|u| u.username.clone())
    } else {
        None
    };
    Ok((users, next))
}

pub async fn pending(store: &Store, domain_id: i64) -> Result<Vec<PendingRow>> {
    Ok(store.pending_registrations(domain_id, crate::now()).await?)
}

/// A page of the audit log and the `before` of the next (older) page when there is one.
pub async fn logs(store: &Store, filter: &AuditFilter, before: i64) -> Result<(Vec<AuditRow>, Option<i64>)> {
    let mut rows = store.audit_page(filter, before, LOG_PER_PAGE + 1).await?;
    let next = if rows.len() as i64 > LOG_PER_PAGE {
        rows.truncate(LOG_PER_PAGE as usize);
        rows.last().map(|r| r.id)
    } else {
        None
    };
    Ok((rows, next))
}
