//! The token API: thin handlers over `service::register` and `service::issue`.
//!
//! Requests that cannot be opened get a clear JSON error in clear text; everything after the
//! envelope opens is answered sealed under the request's response key.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tessera_protocol::device::fingerprint;
use tessera_protocol::request::seal_reply;
use tessera_protocol::wire::{DomainInfo, ErrorKind, PlainError, Reply, SealedBody, b64, paths};

use crate::service::token::{Answer, Unopened, load_domain};
use crate::service::{issue, register};
use crate::state::AppState;

/// Routes of the token API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(paths::DOMAIN, get(domain_info))
        .route(paths::REGISTER, post(register_handler))
        .route(paths::PASSCODE, post(passcode_handler))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

async fn domain_info(State(state): State<AppState>, Path(code): Path<String>) -> Response {
    match load_domain(&state, &code).await {
        Ok((code, row, keys)) => {
            let info = DomainInfo {
                code: code.to_string(),
                name: row.name,
                device_name: row.device_name,
                public_key: b64(&keys.public_bytes()),
                fingerprint: fingerprint(&keys.public_bytes()),
                pin_min_length: row.pin_min_length as u32,
                passcode_length: row.passcode_length as u32,
                passcode_lifetime_secs: row.passcode_lifetime_secs as u32,
            };
            axum::Json(info).into_response()
        }
        Err(e) => unopened(e),
    }
}

async fn register_handler(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    match parse(&body) {
        Ok(sealed) => answer(register::register(&state, &sealed, peer.ip()).await),
        Err(refusal) => refusal,
    }
}

async fn passcode_handler(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    match parse(&body) {
        Ok(sealed) => answer(issue::issue_passcode(&state, &sealed, peer.ip()).await),
        Err(refusal) => refusal,
    }
}

/// The body as a sealed request, or the clear refusal to send back.
#[allow(clippy::result_large_err)] // the error is the response itself, returned at once
fn parse(body: &[u8]) -> Result<SealedBody, Response> {
    serde_json::from_slice(body).map_err(|e| plain(StatusCode::BAD_REQUEST, format!("malformed request body: {e}")))
}

/// A use-case's outcome as an HTTP response: sealed when the request could be opened.
fn answer<T: Serialize>(outcome: Result<Answer<T>, Unopened>) -> Response {
    match outcome {
        Ok(answer) => sealed_response(answer),
        Err(e) => unopened(e),
    }
}

fn sealed_response<T: Serialize>(answer: Answer<T>) -> Response {
    let status = match &answer.reply {
        Reply::Ok(_) => StatusCode::OK,
        Reply::Error(e) => match e.kind {
            ErrorKind::WrongPin | ErrorKind::PendingValidation | ErrorKind::Disabled => StatusCode::FORBIDDEN,
            ErrorKind::Locked => StatusCode::LOCKED,
            ErrorKind::UnknownDevice => StatusCode::NOT_FOUND,
            ErrorKind::Replay => StatusCode::CONFLICT,
            ErrorKind::ClockSkew | ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::PinPolicy => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        },
    };
    (status, axum::Json(seal_reply(&answer.key, &answer.reply))).into_response()
}

fn unopened(e: Unopened) -> Response {
    let status = match &e {
        Unopened::UnknownDomain => StatusCode::NOT_FOUND,
        Unopened::Unreadable => StatusCode::BAD_REQUEST,
        Unopened::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Unopened::Internal(cause) => {
            tracing::error!(error = format!("{cause:#}"), "token API request failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    plain(status, e.to_string())
}

fn plain(status: StatusCode, error: String) -> Response {
    (status, axum::Json(PlainError { error })).into_response()
}
