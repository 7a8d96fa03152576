//! Tessera server: domains, tokens, passcodes and RADIUS validation.

/// Command-line interface definitions.
pub mod cli;
/// Admin CLI commands (domain, client, user).
pub mod commands;
/// Settings from defaults, a TOML file, the environment and flags.
pub mod config;
/// Long-lived low-priority threads for argon2id, HPKE and RSA work.
pub mod crypto_pool;
/// Storage: every SQL statement, SQLite or PostgreSQL behind one store.
pub mod db;
/// Types and rules with no I/O: usernames, settings, passcodes, PINs.
pub mod domain;
/// Error types shared by the layers.
pub mod error;
/// HTTP listeners: the token API and the admin console.
pub mod http;
/// The RADIUS listener: UDP loop, client table, reply cache.
pub mod radius;
/// Use-cases shared by every front end: register, issue and verify passcodes, administer.
pub mod service;
/// Binding every listener and running until shutdown.
pub mod startup;
/// Shared state handed to every listener.
pub mod state;

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
