//! The network client table the RADIUS listener consults for every datagram, reloaded from
//! the database twice a second so changes made by the CLI or another node apply at once.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::packet::Secret;
use crate::db::Store;
use crate::domain::{ClientAddress, MessageAuthenticatorMode};

/// How often the table is reloaded.
pub const REFRESH: Duration = Duration::from_millis(500);

/// One network client, ready for matching.
pub struct Client {
    pub id: i64,
    pub name: String,
    pub address: ClientAddress,
    pub secret: Secret,
    pub domain_id: i64,
    pub domain_code: String,
    pub mode: MessageAuthenticatorMode,
    pub ma_seen: bool,
}

/// The current table, swapped whole on reload.
#[derive(Clone, Default)]
pub struct ClientTable(Arc<RwLock<Arc<Vec<Arc<Client>>>>>);

impl ClientTable {
    /// Loads the table from the database.
    pub async fn reload(&self, store: &Store) -> anyhow::Result<()> {
        let mut clients = Vec::new();
        for row in store.clients().await? {
            let (Ok(address), Ok(mode)) = (ClientAddress::parse(&row.address), row.ma_mode.parse()) else {
                tracing::error!(client = row.name, "stored network client is invalid; ignored");
                continue;
            };
            clients.push(Arc::new(Client {
                id: row.id,
                name: row.name,
                address,
                secret: Secret::new(row.secret.into_bytes()),
                domain_id: row.domain_id,
                domain_code: row.domain_code,
                mode,
                ma_seen: row.ma_seen != 0,
            }));
        }
        // Most specific block first.
        clients.sort_by_key(|c| std::cmp::Reverse(c.address.prefix_len()));
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(clients);
        Ok(())
    }

    /// The client a datagram from `ip` belongs to.
    pub fn lookup(&self, ip: IpAddr) -> Option<Arc<Client>> {
        let table = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        table.iter().find(|c| c.address.contains(ip)).cloned()
    }

    /// Records locally that an `auto` client has sent a Message-Authenticator, until the
    /// next reload brings the same fact from the database.
    pub fn mark_seen(&self, id: i64) {
        let mut guard = self.0.write().unwrap_or_else(|p| p.into_inner());
        let updated: Vec<Arc<Client>> = guard
            .iter()
            .map(|c| {
                if c.id == id && !c.ma_seen {
                    Arc::new(Client {
                        id: c.id,
                        name: c.name.clone(),
                        address: c.address,
                        secret: c.secret.clone(),
                        domain_id: c.domain_id,
                        domain_code: c.domain_code.clone(),
                        mode: c.mode,
                        ma_seen: true,
                    })
                } else {
                    c.clone()
                }
            })
            .collect();
        *guard = Arc::new(updated);
    }
}
