//! The Network clients tab: list, add, edit, remove. Secrets are never shown back; the RADIUS
//! listener reloads its client table every second, so changes apply at once.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;

use super::session::{AdminSession, Posted, audited, flash_redirect};
use super::view::{ConfirmPage, Layout};
use super::{Console, Fault, PageResult};
use crate::db::clients::ClientRow;
use crate::db::domains::DomainRow;
use crate::domain::MessageAuthenticatorMode;
use crate::error::Error;
use crate::service::admin::{self, ClientSpec};
use crate::service::console;

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/clients", get(list).post(add))
        .route("/clients/{id}", get(edit_page).post(edit))
        .route("/clients/{id}/remove", get(remove_page).post(remove))
}

/// The client form as typed (the secret is never sent back to the browser).
#[derive(Deserialize, Default)]
pub struct ClientForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    mode: String,
}

impl ClientForm {
    fn mode(&self) -> Result<MessageAuthenticatorMode, Error> {
        self.mode.parse().map_err(Error::Refused)
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "clients.html")]
struct ClientsPage {
    l: Layout,
    clients: Vec<ClientRow>,
    domains: Vec<DomainRow>,
    form: ClientForm,
    error: Option<String>,
}

async fn render(state: &Console, s: &AdminSession, form: ClientForm, error: Option<String>) -> PageResult {
    let clients = admin::clients(&state.app.store).await?;
    let domains = state.app.store.domains().await?;
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let page = ClientsPage { l: Layout::new(s, "clients", "Network clients"), clients, domains, form, error };
    Ok((status, page).into_response())
}

async fn list(State(state): State<Console>, s: AdminSession) -> PageResult {
    render(&state, &s, ClientForm { mode: "auto".into(), ..Default::default() }, None).await
}

async fn add(State(state): State<Console>, Posted { session: s, mut form }: Posted<ClientForm>) -> PageResult {
    let result = match form.mode() {
        Ok(mode) => {
            let spec = ClientSpec {
                name: form.name.clone(),
                address: form.address.clone(),
                secret: form.secret.clone(),
                domain_code: form.domain.clone(),
                mode,
            };
            audited(&s, admin::add_client(&state.app.store, &s.admin, spec)).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            let flash = format!("Network client {} added; RADIUS answers it within a second.", form.name.trim());
            Ok(flash_redirect(&state, &s, &flash, "/clients").await)
        }
        Err(Error::Refused(e)) => {
            form.secret.clear();
            render(&state, &s, form, Some(format!("{e} (enter the secret again)"))).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "client_edit.html")]
struct EditPage {
    l: Layout,
    client: ClientRow,
    domains: Vec<DomainRow>,
    form: ClientForm,
    error: Option<String>,
}

async fn edit_page(State(state): State<Console>, s: AdminSession, Path(id): Path<i64>) -> PageResult {
    let client = console::client(&state.app.store, id).await?;
    let form = ClientForm {
        name: client.name.clone(),
        address: client.address.clone(),
        secret: String::new(),
        domain: client.domain_code.clone(),
        mode: client.ma_mode.clone(),
    };
    let domains = state.app.store.domains().await?;
    let l = Layout::new(&s, "clients", format!("Edit {}", client.name));
    Ok(EditPage { l, client, domains, form, error: None }.into_response())
}

async fn edit(State(state): State<Console>, Path(id): Path<i64>, posted: Posted<ClientForm>) -> PageResult {
    let Posted { session: s, mut form } = posted;
    let client = console::client(&state.app.store, id).await?;
    let store = &state.app.store;
    let result = match form.mode() {
        Ok(mode) => {
            let update = console::update_client(store, &s.admin, id, &form.address, &form.secret, &form.domain, mode);
            audited(&s, update).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(flash_redirect(&state, &s, &format!("Network client {} saved.", client.name), "/clients").await),
        Err(Error::Refused(e)) => {
            form.secret.clear();
            let domains = store.domains().await?;
            let l = Layout::new(&s, "clients", format!("Edit {}", client.name));
            let page = EditPage { l, client, domains, form, error: Some(e) };
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

async fn remove_page(State(state): State<Console>, s: AdminSession, Path(id): Path<i64>) -> PageResult {
    let c = console::client(&state.app.store, id).await?;
    let page = ConfirmPage {
        l: Layout::new(&s, "clients", format!("Remove {}", c.name)),
        question: format!(
            "Remove network client {} ({})? RADIUS requests from it are dropped from the next second on.",
            c.name, c.address
        ),
        action: format!("/clients/{id}/remove"),
        hidden: vec![],
        button: "Remove client".into(),
        back: "/clients".into(),
    };
    Ok(page.into_response())
}

#[derive(Deserialize)]
pub struct Confirm {
    #[serde(default)]
    confirm: String,
}

async fn remove(State(state): State<Console>, Path(id): Path<i64>, posted: Posted<Confirm>) -> PageResult {
    let s = posted.session;
    if posted.form.confirm != "yes" {
        return Err(Fault::Refused("Tick \"Yes, I am sure\" to remove the client.".into()));
    }
    let c = console::client(&state.app.store, id).await?;
    audited(&s, admin::remove_client(&state.app.store, &s.admin, &c.name)).await?;
    Ok(flash_redirect(&state, &s, &format!("Network client {} removed.", c.name), "/clients").await)
}
