//! The web console on the admin listener: askama pages over `service::admin`,
//! `service::console`, `service::enroll` and `service::admins`, so the console and the CLI
//! apply the same rules.
//!
//! Every route but `/login` and `/healthz` needs an [`session::AdminSession`]; every POST
//! goes through [`session::Posted`], which also checks the form's CSRF token. No asset comes
//! from outside the binary and nothing needs JavaScript.

mod auth;
mod clients;
mod domains;
mod enrollment;
mod logs;
mod session;
mod users;
mod view;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::service::admins::LoginThrottle;
use crate::state::AppState;

/// State of the console: the shared state and the sign-in throttle.
#[derive(Clone)]
pub struct Console {
    pub app: AppState,
    pub throttle: Arc<LoginThrottle>,
}

/// Routes of the admin listener.
pub fn router(app: AppState) -> Router {
    let state = Console { app, throttle: Arc::new(LoginThrottle::default()) };
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/", get(|_: session::AdminSession| async { Redirect::to("/domains") }))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", axum::routing::post(auth::logout))
        .merge(domains::routes())
        .merge(clients::routes())
        .merge(users::routes())
        .merge(enrollment::routes())
        .merge(logs::routes())
        .fallback(|| async { (StatusCode::NOT_FOUND, view::message("Not found", "There is no such page.")) })
        .layer(axum::middleware::map_response(view::security_headers))
        .with_state(state)
}

/// A failure a handler cannot show inline: a refusal as a message page, anything else as a
/// bare 500 whose cause goes only to the log.
#[derive(Debug)]
pub enum Fault {
    Refused(String),
    Internal(anyhow::Error),
}

impl From<crate::error::Error> for Fault {
    fn from(e: crate::error::Error) -> Self {
        match e {
            crate::error::Error::Refused(m) => Fault::Refused(m),
            crate::error::Error::Internal(e) => Fault::Internal(e),
        }
    }
}

impl From<anyhow::Error> for Fault {
    fn from(e: anyhow::Error) -> Self {
        Fault::Internal(e)
    }
}

impl From<sqlx::Error> for Fault {
    fn from(e: sqlx::Error) -> Self {
        Fault::Internal(e.into())
    }
}

impl IntoResponse for Fault {
    fn into_response(self) -> Response {
        match self {
            Fault::Refused(m) => (StatusCode::UNPROCESSABLE_ENTITY, view::message("Not done", &m)).into_response(),
            Fault::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "console request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    view::message("Internal error", "Something went wrong; the server log says what."),
                )
                    .into_response()
            }
        }
    }
}

/// Result of a console handler.
pub type PageResult = Result<Response, Fault>;
