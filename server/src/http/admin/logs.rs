//! The Logs tab: the audit log newest first, filtered by user, domain and kind, in pages.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;

use super::session::AdminSession;
use super::view::{Layout, datetime};
use super::{Console, PageResult};
use crate::db::audit::Row;
use crate::db::console::AuditFilter;
use crate::service::console;

pub fn routes() -> Router<Console> {
    Router::new().route("/logs", get(list))
}

#[derive(Deserialize, Default)]
pub struct LogQuery {
    #[serde(default)]
    user: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    before: String,
}

pub struct EntryView {
    at: String,
    row: Row,
    tone: &'static str,
}

#[derive(Template, WebTemplate)]
#[template(path = "logs.html")]
struct LogsPage {
    l: Layout,
    q: LogQuery,
    kinds: &'static [(&'static str, &'static str)],
    entries: Vec<EntryView>,
    next: Option<i64>,
}

/// Kind filters offered in the form (prefixes of the audit kinds).
const KINDS: &[(&str, &str)] = &[
    ("", "all kinds"),
    ("radius.", "RADIUS accepts and rejects"),
    ("radius.accept", "RADIUS accepts"),
    ("radius.reject", "RADIUS rejects"),
    ("registration.", "registrations"),
    ("token.passcode", "passcode issuance"),
    ("user.", "user changes"),
    ("device.", "device changes"),
    ("domain.", "domain changes"),
    ("client.", "network client changes"),
    ("enrollment.", "enrollment codes"),
    ("admin.", "console sign-ins and administrators"),
];

async fn list(State(state): State<Console>, s: AdminSession, Query(q): Query<LogQuery>) -> PageResult {
    let filter =
        AuditFilter { username: q.user.trim().into(), domain_code: q.domain.trim().into(), kind: q.kind.clone() };
    let before = q.before.parse().unwrap_or(0);
    let (rows, next) = console::logs(&state.app.store, &filter, before).await?;
    let entries = rows
        .into_iter()
        .map(|row| {
            let tone = if row.kind.ends_with("reject") || row.kind.ends_with("failed") {
                "bad"
            } else if row.kind.ends_with("accept") {
                "ok"
            } else {
                ""
            };
            EntryView { at: datetime(row.at), row, tone }
        })
        .collect();
    Ok(LogsPage { l: Layout::new(&s, "logs", "Logs"), q, kinds: KINDS, entries, next }.into_response())
}
