//! The admin listener. The web console is not built yet; until it is, this listener only
//! reports health and points operators to the CLI.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

/// Routes of the admin listener.
pub fn router() -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).fallback(|| async {
        (
            StatusCode::NOT_FOUND,
            "The Tessera web console is not part of this version; administer with `tessera-server --help`.\n",
        )
    })
}
