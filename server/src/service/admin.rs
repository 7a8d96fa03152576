//! Administration: domains, network clients and users. Used by the CLI (and later the
//! console); every change is written to the audit log with its actor.

use tessera_protocol::DomainCode;
use tessera_protocol::device::fingerprint;
use tessera_protocol::envelope::ServerKeyPair;

use crate::db::Store;
use crate::db::audit::Entry;
use crate::db::clients::{ClientRow, NewClient};
use crate::db::domains::{DomainRow, NewDomain};
use crate::db::users::UserDeviceRow;
use crate::domain::{ClientAddress, DomainSettings, MessageAuthenticatorMode, Username};
use crate::error::{Error, Result, is_unique_violation};

/// A domain to create.
pub struct DomainSpec {
    pub name: String,
    pub code: String,
    pub device_name: Option<String>,
    pub settings: DomainSettings,
}

/// Creates a domain and its X25519 server key; returns the stored row.
pub async fn add_domain(store: &Store, actor: &str, spec: DomainSpec) -> Result<DomainRow> {
    let code = DomainCode::parse(&spec.code).map_err(|e| Error::refused(e.to_string()))?;
    let name = check_name("domain name", &spec.name)?;
    let device_name = check_name("device domain name", spec.device_name.as_deref().unwrap_or(&name))?;
    spec.settings.validate().map_err(Error::Refused)?;
    let keys = ServerKeyPair::generate();
    let new = NewDomain {
        code: &code.to_string(),
        name: &name,
        device_name: &device_name,
        settings: &spec.settings,
        public_key: &keys.public_bytes(),
        private_key: keys.private_bytes(),
    };
    let id = match store.insert_domain(new).await {
        Ok(id) => id,
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::refused(format!("a domain with code {code} or name {name:?} already exists")));
        }
        Err(e) => return Err(e.into()),
    };
    let detail = format!("domain {name:?} created, key {}", fingerprint(&keys.public_bytes()));
    audit(store, actor, "domain.add", Some(&code.to_string()), None, detail).await?;
    store.domain_by_id(id).await?.ok_or_else(|| Error::Internal(anyhow::anyhow!("domain vanished")))
}

/// The domain with `code`, or a refusal naming it.
pub async fn domain(store: &Store, code: &str) -> Result<DomainRow> {
    let code = DomainCode::parse(code).map_err(|e| Error::refused(e.to_string()))?;
    store
        .domain_by_code(&code.to_string())
        .await
        .map_err(Error::Internal)?
        .ok_or_else(|| Error::refused(format!("no domain with code {code}")))
}

/// A network client to create.
pub struct ClientSpec {
    pub name: String,
    pub address: String,
    pub secret: String,
    pub domain_code: String,
    pub mode: MessageAuthenticatorMode,
}

/// Adds a RADIUS network client; the running listener picks it up within a second.
pub async fn add_client(store: &Store, actor: &str, spec: ClientSpec) -> Result<()> {
    let name = check_name("client name", &spec.name)?;
    let address = ClientAddress::parse(&spec.address).map_err(Error::Refused)?;
    // RFC 2865 asks for a secret at least as long as 16 octets; short ones are guessable offline.
    if spec.secret.len() < 12 || spec.secret.len() > 128 {
        return Err(Error::refused("the shared secret must have 12 to 128 characters (16 or more recommended)"));
    }
    let domain = domain(store, &spec.domain_code).await?;
    let new = NewClient {
        name: &name,
        address: &address.to_string(),
        secret: &spec.secret,
        domain_id: domain.id,
        ma_mode: spec.mode.as_str(),
    };
    match store.insert_client(new).await {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::refused(format!("a client named {name:?} already exists")));
        }
        Err(e) => return Err(e.into()),
    }
    let detail = format!("client {name:?} at {address}, Message-Authenticator {}", spec.mode);
    audit(store, actor, "client.add", Some(&domain.code), None, detail).await
}

pub async fn clients(store: &Store) -> Result<Vec<ClientRow>> {
    Ok(store.clients().await?)
}

pub async fn remove_client(store: &Store, actor: &str, name: &str) -> Result<()> {
    if !store.delete_client(name).await? {
        return Err(Error::refused(format!("no network client named {name:?}")));
    }
    audit(store, actor, "client.remove", None, None, format!("client {name:?} removed")).await
}

/// Binds a pending registration to a user (created if new).
pub async fn validate(
    store: &Store,
    actor: &str,
    domain_code: &str,
    registration_code: &str,
    username: &str,
) -> Result<()> {
    let domain = domain(store, domain_code).await?;
    let username = Username::parse(username).map_err(Error::Refused)?;
    let rc = registration_code.trim();
    if !store.validate_registration(domain.id, rc, username.as_str(), crate::now()).await? {
        return Err(Error::refused(format!(
            "no pending registration with code {rc} in domain {} (wrong, expired or already validated)",
            domain.code
        )));
    }
    let detail = "registration validated".to_owned();
    audit(store, actor, "registration.validate", Some(&domain.code), Some(username.as_str()), detail).await
}

pub async fn user_listing(store: &Store, domain_code: &str) -> Result<Vec<UserDeviceRow>> {
    let domain = domain(store, domain_code).await?;
    Ok(store.user_listing(domain.id).await?)
}

/// A state change for `user disable|enable|unlock`.
#[derive(Clone, Copy, Debug)]
pub enum UserChange {
    Disable,
    Enable,
    Unlock,
}

/// Applies a state change to a user; it takes effect on the next request.
pub async fn change_user(
    store: &Store,
    actor: &str,
    domain_code: &str,
    username: &str,
    change: UserChange,
) -> Result<String> {
    let domain = domain(store, domain_code).await?;
    let user = store
        .user_by_name(domain.id, username)
        .await?
        .ok_or_else(|| Error::refused(format!("no user {username:?} in domain {}", domain.code)))?;
    let (kind, message) = match change {
        UserChange::Disable => {
            store.set_user_disabled(domain.id, username, true).await?;
            ("user.disable", format!("user {username:?} disabled"))
        }
        UserChange::Enable => {
            store.set_user_disabled(domain.id, username, false).await?;
            ("user.enable", format!("user {username:?} enabled"))
        }
        UserChange::Unlock => {
            let n = store.unlock_user_devices(user.id).await?;
            // Unlocking also lifts a passcode-guessing throttle: the administrator has
            // decided the user may try again.
            store.clear_passcode_failures(user.id).await?;
            (
                "user.unlock",
                format!("user {username:?}: wrong-PIN count cleared on {n} device(s), passcode throttle lifted"),
            )
        }
    };
    audit(store, actor, kind, Some(&domain.code), Some(username), message.clone()).await?;
    Ok(message)
}

pub(crate) fn check_name(what: &str, s: &str) -> Result<String> {
    let s = s.trim();
    if s.is_empty() || s.chars().count() > 64 || s.chars().any(char::is_control) {
        return Err(Error::refused(format!("{what} must have 1 to 64 printable characters")));
    }
    Ok(s.to_owned())
}

tokio::task_local! {
    /// The network address a console change came from; audit entries written while it is
    /// set carry it as their source (the CLI leaves it unset).
    pub static SOURCE: String;
}

/// Writes an audit entry for an administrative change, with the console's source if set.
pub(crate) async fn audit(
    store: &Store,
    actor: &str,
    kind: &str,
    domain: Option<&str>,
    user: Option<&str>,
    detail: String,
) -> Result<()> {
    let source = SOURCE.try_with(Clone::clone).ok();
    let entry = Entry { actor, kind, domain_code: domain, username: user, source, detail };
    Ok(store.audit(entry).await?)
}
