//! The Enrollment codes tab: issue a one-time code for a username (shown once), list the
//! outstanding ones, revoke.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;

use super::session::{AdminSession, Posted, audited, flash_redirect};
use super::view::{Layout, datetime, span};
use super::{Console, PageResult};
use crate::db::domains::DomainRow;
use crate::error::Error;
use crate::service::enroll;

pub fn routes() -> Router<Console> {
    Router::new().route("/enrollment", get(list).post(issue)).route("/enrollment/{id}/revoke", post(revoke))
}

#[derive(Deserialize, Default)]
pub struct DomainQuery {
    #[serde(default)]
    domain: String,
}

#[derive(Deserialize, Default)]
pub struct IssueForm {
    #[serde(default)]
    domain: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    days: String,
}

pub struct CodeView {
    id: i64,
    username: String,
    created_by: String,
    created: String,
    expires_in: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "enrollment.html")]
struct EnrollmentPage {
    l: Layout,
    domains: Vec<DomainRow>,
    domain: Option<DomainRow>,
    codes: Vec<CodeView>,
    form: IssueForm,
    error: Option<String>,
    /// A code just issued: (username, code), shown this once.
    issued: Option<(String, String)>,
}

async fn render(
    state: &Console,
    s: &AdminSession,
    form: IssueForm,
    error: Option<String>,
    issued: Option<(String, String)>,
) -> PageResult {
    let store = &state.app.store;
    let domains = store.domains().await?;
    let domain = domains.iter().find(|d| d.code == form.domain).or(domains.first()).cloned();
    let mut codes = vec![];
    if let Some(d) = &domain {
        let now = crate::now();
        codes = enroll::outstanding(store, &d.code)
            .await?
            .into_iter()
            .map(|c| CodeView {
                id: c.id,
                username: c.username,
                created_by: c.created_by,
                created: datetime(c.created_at),
                expires_in: span(c.expires_at - now),
            })
            .collect();
    }
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let l = Layout::new(s, "enrollment", "Enrollment codes");
    Ok((status, EnrollmentPage { l, domains, domain, codes, form, error, issued }).into_response())
}

async fn list(State(state): State<Console>, s: AdminSession, Query(q): Query<DomainQuery>) -> PageResult {
    let form = IssueForm { domain: q.domain, username: String::new(), days: enroll::DEFAULT_DAYS.to_string() };
    render(&state, &s, form, None, None).await
}

async fn issue(State(state): State<Console>, Posted { session: s, form }: Posted<IssueForm>) -> PageResult {
    let Ok(days) = form.days.trim().parse::<u32>() else {
        return render(&state, &s, form, Some("the number of days must be a whole number".into()), None).await;
    };
    let username = form.username.trim().to_owned();
    match audited(&s, enroll::issue(&state.app.store, &s.admin, &form.domain, &username, days)).await {
        // Shown in the answer itself, never stored in clear (not even as a flash).
        Ok(code) => {
            let next = IssueForm { domain: form.domain, username: String::new(), days: days.to_string() };
            render(&state, &s, next, None, Some((username, code))).await
        }
        Err(Error::Refused(e)) => render(&state, &s, form, Some(e), None).await,
        Err(e) => Err(e.into()),
    }
}

async fn revoke(State(state): State<Console>, Path(id): Path<i64>, posted: Posted<DomainQuery>) -> PageResult {
    let Posted { session: s, form } = posted;
    let user = audited(&s, enroll::revoke(&state.app.store, &s.admin, &form.domain, id)).await?;
    let flash = format!("Enrollment code for {user} revoked.");
    Ok(flash_redirect(&state, &s, &flash, &format!("/enrollment?domain={}", form.domain)).await)
}
