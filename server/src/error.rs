//! Errors of the service layer, named by outcome.
//!
//! `Refused` carries a message meant for the operator or user; `Internal` wraps a cause that
//! is logged in full and never shown to a network peer.

/// The outcome of a use-case that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input was understood and refused (not found, already exists, out of range).
    #[error("{0}")]
    Refused(String),
    /// Something went wrong inside the server (database, I/O).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Internal(anyhow::Error::new(e).context("database error"))
    }
}

impl Error {
    /// A refusal with a message.
    pub fn refused(msg: impl Into<String>) -> Self {
        Error::Refused(msg.into())
    }
}

/// Result of a use-case.
pub type Result<T> = std::result::Result<T, Error>;

/// True when a database error is a unique-constraint violation.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
