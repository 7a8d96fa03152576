//! Types and rules with no axum or sqlx: parsed at the boundary, trusted inside.

pub mod client;
pub mod passcode;
pub mod password;
pub mod pin;
pub mod settings;
pub mod username;

pub use client::{ClientAddress, MessageAuthenticatorMode};
pub use settings::DomainSettings;
pub use username::Username;
