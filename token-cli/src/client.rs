//! HTTP client for the token API: fetches a domain's public information and posts sealed
//! requests, turning every answer (sealed reply, clear refusal, anything else) into a value or
//! one clear error.

use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde::de::DeserializeOwned;
use tessera_protocol::DomainCode;
use tessera_protocol::envelope::ResponseKey;
use tessera_protocol::request::open_reply;
use tessera_protocol::wire::{DomainInfo, ErrorKind, PlainError, Reply, SealedBody, SealedReply, TokenError, paths};

const TIMEOUT: Duration = Duration::from_secs(15);

/// A refusal the server sent inside a sealed reply, worded for the user.
#[derive(Debug)]
pub struct Refused(pub TokenError);

impl Refused {
    /// Exit code 1 for the refusals a user can act on (wrong PIN, locked…), 2 for the rest,
    /// which mean something is broken rather than refused.
    pub fn exit_code(&self) -> u8 {
        match self.0.kind {
            ErrorKind::WrongPin
            | ErrorKind::Locked
            | ErrorKind::PendingValidation
            | ErrorKind::Disabled
            | ErrorKind::UnknownDevice
            | ErrorKind::RateLimited => 1,
            _ => 2,
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.kind, self.0.attempts_left) {
            (ErrorKind::WrongPin, Some(1)) => f.write_str("wrong PIN (1 attempt left before the device locks)"),
            (ErrorKind::WrongPin, Some(n)) => write!(f, "wrong PIN ({n} attempts left before the device locks)"),
            (ErrorKind::WrongPin, None) => f.write_str("wrong PIN"),
            (ErrorKind::Locked, _) => {
                f.write_str("this device is locked after too many wrong PINs; ask your administrator to unlock it")
            }
            (ErrorKind::PendingValidation, _) => {
                f.write_str("registration not validated yet: give your registration code to your administrator")
            }
            (ErrorKind::Disabled, _) => {
                f.write_str("this user or device is disabled; ask your administrator to enable it")
            }
            (ErrorKind::UnknownDevice, _) => f.write_str(
                "the server does not know this device (the registration may have expired or been deleted); \
                 remove it and register again",
            ),
            _ => write!(f, "the server refused: {}", self.0.message),
        }
    }
}

impl std::error::Error for Refused {}

/// A clear HTTP 429 refusal (throttled before the request was opened): exit code 1, like a
/// sealed refusal.
#[derive(Debug)]
pub struct RateLimited(pub String);

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the server refused: {} (HTTP 429); try again later", self.0)
    }
}

impl std::error::Error for RateLimited {}

/// The token API of one server.
pub struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    /// `base` is the server URL, e.g. `http://127.0.0.1:8388`; a trailing `/` is ignored.
    pub fn new(base: &str) -> Self {
        // 4xx answers carry a body worth reading, so they must not become transport errors.
        let agent = ureq::Agent::config_builder().timeout_global(Some(TIMEOUT)).http_status_as_error(false).build();
        Self { agent: agent.into(), base: base.trim_end_matches('/').to_owned() }
    }

    /// `GET /v1/domains/{code}`.
    pub fn domain_info(&self, code: DomainCode) -> anyhow::Result<DomainInfo> {
        let url = format!("{}{}", self.base, paths::DOMAIN.replace("{code}", &code.to_string()));
        let response = self.agent.get(&url).call().map_err(|e| self.unreachable(e))?;
        let (status, body) = self.read(response)?;
        if status == 404 {
            bail!("unknown domain code {code} on {}", self.base);
        }
        if status == 200 {
            return serde_json::from_str(&body).with_context(|| self.not_tessera());
        }
        Err(self.unexpected(status, &body))
    }

    /// Posts a sealed request and opens the sealed answer with `key`.
    pub fn post_sealed<T: DeserializeOwned>(
        &self,
        path: &str,
        sealed: &SealedBody,
        key: &ResponseKey,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let response = self.agent.post(&url).send_json(sealed).map_err(|e| self.unreachable(e))?;
        let (status, body) = self.read(response)?;
        let Ok(reply) = serde_json::from_str::<SealedReply>(&body) else {
            return Err(self.unexpected(status, &body));
        };
        let reply = open_reply::<T>(key, &reply).map_err(|_| {
            anyhow!("the server's answer could not be decrypted: the server key may have been substituted")
        })?;
        match reply {
            Reply::Ok(value) => Ok(value),
            Reply::Error(error) => Err(Refused(error).into()),
        }
    }

    fn read(&self, response: ureq::http::Response<ureq::Body>) -> anyhow::Result<(u16, String)> {
        let status = response.status().as_u16();
        let body = response.into_body().read_to_string().map_err(|e| self.unreachable(e))?;
        Ok((status, body))
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        anyhow!("cannot reach the Tessera server at {}: {e}", self.base)
    }

    fn not_tessera(&self) -> String {
        format!("the server at {} did not answer like a Tessera server", self.base)
    }

    /// A clear refusal (`{"error": …}`) or anything else the server might say.
    fn unexpected(&self, status: u16, body: &str) -> anyhow::Error {
        match serde_json::from_str::<PlainError>(body) {
            Ok(plain) if status == 429 => RateLimited(plain.error).into(),
            Ok(plain) => anyhow!("the server refused: {} (HTTP {status})", plain.error),
            Err(_) => anyhow!("{} (HTTP {status})", self.not_tessera()),
        }
    }
}
