//! The Users tab: per domain, pending registrations with manual validation, users with their
//! devices, state changes, search by name and keyset pagination.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;

use super::session::{AdminSession, Posted, audited, flash_redirect};
use super::view::{ConfirmPage, Layout, span};
use super::{Console, Fault, PageResult};
use crate::db::domains::DomainRow;
use crate::error::Error;
use crate::service::admin::{self, UserChange};
use crate::service::console::{self, DeviceChange};

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/users", get(list))
        .route("/users/validate", post(validate))
        .route("/users/change", post(change))
        .route("/devices/{id}", post(device))
        .route("/devices/{id}/delete", get(delete_page).post(delete))
}

#[derive(Deserialize, Default)]
pub struct UsersQuery {
    #[serde(default)]
    domain: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    after: String,
}

/// The manual validation form as typed.
#[derive(Deserialize, Default)]
pub struct ValidateForm {
    #[serde(default)]
    domain: String,
    #[serde(default)]
    registration_code: String,
    #[serde(default)]
    username: String,
}

pub struct PendingView {
    code: String,
    device: String,
    age: String,
    expires_in: String,
}

pub struct DeviceView {
    id: i64,
    short: String,
    state: String,
    badge: &'static str,
    disabled: bool,
}

pub struct UserView {
    username: String,
    disabled: bool,
    devices: Vec<DeviceView>,
}

#[derive(Template, WebTemplate)]
#[template(path = "users.html")]
struct UsersPage {
    l: Layout,
    domains: Vec<DomainRow>,
    domain: Option<DomainRow>,
    q: String,
    after: String,
    pending: Vec<PendingView>,
    users: Vec<UserView>,
    next: Option<String>,
    form: ValidateForm,
    error: Option<String>,
}

async fn render(
    state: &Console,
    s: &AdminSession,
    q: UsersQuery,
    form: ValidateForm,
    error: Option<String>,
) -> PageResult {
    let store = &state.app.store;
    let domains = store.domains().await?;
    let domain = domains.iter().find(|d| d.code == q.domain).or(domains.first()).cloned();
    let (mut pending, mut users, mut next) = (vec![], vec![], None);
    if let Some(d) = &domain {
        let now = crate::now();
        pending = console::pending(store, d.id)
            .await?
            .into_iter()
            .map(|p| PendingView {
                code: p.registration_code.unwrap_or_default(),
                device: p.device_key_id.chars().take(16).collect(),
                age: span(now - p.created_at),
                expires_in: span(p.registration_expires_at.unwrap_or(now) - now),
            })
            .collect();
        let (page, n) = console::users_page(store, d.id, q.q.trim(), &q.after).await?;
        next = n;
        users = page.into_iter().map(|u| user_view(u, d.max_pin_failures)).collect();
    }
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let l = Layout::new(s, "users", "Users");
    let page = UsersPage { l, domains, domain, q: q.q, after: q.after, pending, users, next, form, error };
    Ok((status, page).into_response())
}

fn user_view(u: console::UserEntry, limit: i64) -> UserView {
    let devices = u
        .devices
        .into_iter()
        .filter_map(|d| {
            let (id, key, wrong) = (d.device_id?, d.device_key_id?, d.wrong_pins.unwrap_or(0));
            let disabled = d.device_disabled.unwrap_or(0) != 0;
            let (state, badge) = if disabled {
                ("disabled".to_owned(), "bad")
            } else if wrong >= limit {
                ("locked: too many wrong PINs".to_owned(), "bad")
            } else if wrong > 0 {
                (format!("active, {wrong} wrong PIN(s)"), "warn")
            } else {
                ("active".to_owned(), "ok")
            };
            Some(DeviceView { id, short: key.chars().take(16).collect(), state, badge, disabled })
        })
        .collect();
    UserView { username: u.username, disabled: u.disabled, devices }
}

async fn list(State(state): State<Console>, s: AdminSession, Query(q): Query<UsersQuery>) -> PageResult {
    let form = ValidateForm { domain: q.domain.clone(), ..Default::default() };
    render(&state, &s, q, form, None).await
}

async fn validate(State(state): State<Console>, Posted { session: s, form }: Posted<ValidateForm>) -> PageResult {
    let store = &state.app.store;
    let username = form.username.trim().to_owned();
    let v = admin::validate(store, &s.admin, &form.domain, &form.registration_code, &username);
    match audited(&s, v).await {
        Ok(()) => {
            let flash = format!(
                "Registration {} validated: the token now belongs to {username}.",
                form.registration_code.trim()
            );
            Ok(flash_redirect(&state, &s, &flash, &format!("/users?domain={}", form.domain)).await)
        }
        Err(Error::Refused(e)) => {
            let q = UsersQuery { domain: form.domain.clone(), ..Default::default() };
            render(&state, &s, q, form, Some(e)).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct ChangeForm {
    #[serde(default)]
    domain: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    action: String,
}

async fn change(State(state): State<Console>, Posted { session: s, form }: Posted<ChangeForm>) -> PageResult {
    let change = match form.action.as_str() {
        "disable" => UserChange::Disable,
        "enable" => UserChange::Enable,
        "unlock" => UserChange::Unlock,
        _ => return Err(Fault::Refused("unknown action".into())),
    };
    let message =
        audited(&s, admin::change_user(&state.app.store, &s.admin, &form.domain, &form.username, change)).await?;
    Ok(flash_redirect(&state, &s, &capitalise(&message), &format!("/users?domain={}", form.domain)).await)
}

#[derive(Deserialize)]
pub struct DeviceForm {
    #[serde(default)]
    domain: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    confirm: String,
}

async fn device(State(state): State<Console>, Path(id): Path<i64>, posted: Posted<DeviceForm>) -> PageResult {
    let Posted { session: s, form } = posted;
    let change = match form.action.as_str() {
        "disable" => DeviceChange::Disable,
        "enable" => DeviceChange::Enable,
        _ => return Err(Fault::Refused("unknown action".into())),
    };
    let message = audited(&s, console::change_device(&state.app.store, &s.admin, &form.domain, id, change)).await?;
    Ok(flash_redirect(&state, &s, &capitalise(&message), &format!("/users?domain={}", form.domain)).await)
}

async fn delete_page(
    State(state): State<Console>,
    s: AdminSession,
    Path(id): Path<i64>,
    Query(q): Query<UsersQuery>,
) -> PageResult {
    let d = admin::domain(&state.app.store, &q.domain).await?;
    let (user, key) =
        state.app.store.device_owner(d.id, id).await?.ok_or_else(|| Fault::Refused("no such device".into()))?;
    let page = ConfirmPage {
        l: Layout::new(&s, "users", "Delete a device"),
        question: format!(
            "Delete device {} of {user}? Its token can no longer get passcodes; the user must register again.",
            &key[..16.min(key.len())]
        ),
        action: format!("/devices/{id}/delete"),
        hidden: vec![("domain".into(), d.code.clone())],
        button: "Delete device".into(),
        back: format!("/users?domain={}", d.code),
    };
    Ok(page.into_response())
}

async fn delete(State(state): State<Console>, Path(id): Path<i64>, posted: Posted<DeviceForm>) -> PageResult {
    let Posted { session: s, form } = posted;
    if form.confirm != "yes" {
        return Err(Fault::Refused("Tick \"Yes, I am sure\" to delete the device.".into()));
    }
    let message =
        audited(&s, console::change_device(&state.app.store, &s.admin, &form.domain, id, DeviceChange::Delete)).await?;
    Ok(flash_redirect(&state, &s, &capitalise(&message), &format!("/users?domain={}", form.domain)).await)
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}
