//! The Domains tab: list with key fingerprints, create, edit, and the IPv4 → code helper.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;
use tessera_protocol::DomainCode;
use tessera_protocol::device::fingerprint;

use super::session::{AdminSession, Posted, audited, flash_redirect};
use super::view::Layout;
use super::{Console, PageResult};
use crate::db::domains::DomainRow;
use crate::domain::DomainSettings;
use crate::service::admin::{self, DomainSpec};
use crate::service::console;

pub fn routes() -> Router<Console> {
    Router::new().route("/domains", get(list).post(create)).route("/domains/{code}", get(edit_page).post(edit))
}

/// The settings form as typed, so a refused form comes back as it was.
#[derive(Deserialize)]
pub struct DomainForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    device_name: String,
    #[serde(default)]
    passcode_lifetime: String,
    #[serde(default)]
    pin_min_length: String,
    #[serde(default)]
    passcode_length: String,
    #[serde(default)]
    max_pin_failures: String,
    #[serde(default)]
    registration_hours: String,
}

impl DomainForm {
    fn blank(code: String) -> Self {
        let d = DomainSettings::default();
        Self {
            name: String::new(),
            code,
            device_name: String::new(),
            passcode_lifetime: d.passcode_lifetime_secs.to_string(),
            pin_min_length: d.pin_min_length.to_string(),
            passcode_length: d.passcode_length.to_string(),
            max_pin_failures: d.max_pin_failures.to_string(),
            registration_hours: (d.registration_ttl_secs / 3600).to_string(),
        }
    }

    fn from_row(d: &DomainRow) -> Self {
        Self {
            name: d.name.clone(),
            code: d.code.clone(),
            device_name: d.device_name.clone(),
            passcode_lifetime: d.passcode_lifetime_secs.to_string(),
            pin_min_length: d.pin_min_length.to_string(),
            passcode_length: d.passcode_length.to_string(),
            max_pin_failures: d.max_pin_failures.to_string(),
            registration_hours: (d.registration_ttl_secs / 3600).to_string(),
        }
    }

    fn settings(&self) -> Result<DomainSettings, String> {
        // An empty field takes the default, as the CLI's flags do.
        let n = |what: &str, s: &str, default: u32| -> Result<u32, String> {
            match s.trim() {
                "" => Ok(default),
                s => s.parse::<u32>().map_err(|_| format!("{what} must be a whole number")),
            }
        };
        // Settings this form does not show keep their defaults.
        let mut d = DomainSettings::default();
        d.passcode_lifetime_secs = n("the passcode lifetime", &self.passcode_lifetime, d.passcode_lifetime_secs)?;
        d.pin_min_length = n("the minimum PIN length", &self.pin_min_length, d.pin_min_length)?;
        d.passcode_length = n("the passcode length", &self.passcode_length, d.passcode_length)?;
        d.max_pin_failures = n("the wrong-PIN limit", &self.max_pin_failures, d.max_pin_failures)?;
        let hours = n("the registration lifetime", &self.registration_hours, d.registration_ttl_secs / 3600)?;
        d.registration_ttl_secs = hours.saturating_mul(3600);
        Ok(d)
    }
}

/// A domain as the list shows it.
pub struct DomainView {
    pub row: DomainRow,
    pub fingerprint: String,
    pub registration_hours: i64,
}

#[derive(Template, WebTemplate)]
#[template(path = "domains.html")]
struct DomainsPage {
    l: Layout,
    domains: Vec<DomainView>,
    form: DomainForm,
    error: Option<String>,
    ip: String,
    ip_code: Option<String>,
    ip_error: Option<String>,
}

#[derive(Deserialize)]
pub struct HelperQuery {
    #[serde(default)]
    ip: String,
}

async fn render(state: &Console, s: &AdminSession, form: DomainForm, error: Option<String>, ip: String) -> PageResult {
    let domains = state
        .app
        .store
        .domains()
        .await?
        .into_iter()
        .map(|row| DomainView {
            fingerprint: fingerprint(&row.public_key),
            registration_hours: row.registration_ttl_secs / 3600,
            row,
        })
        .collect();
    let (mut ip_code, mut ip_error) = (None, None);
    if !ip.trim().is_empty() {
        match ip.trim().parse::<std::net::Ipv4Addr>() {
            Ok(addr) => ip_code = Some(DomainCode::from_ipv4(addr).to_string()),
            Err(_) => ip_error = Some(format!("{:?} is not an IPv4 address such as 192.168.1.10", ip.trim())),
        }
    }
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let page = DomainsPage { l: Layout::new(s, "domains", "Domains"), domains, form, error, ip, ip_code, ip_error };
    Ok((status, page).into_response())
}

async fn list(State(state): State<Console>, s: AdminSession, Query(q): Query<HelperQuery>) -> PageResult {
    // The helper's code also fills the new domain's code field.
    let code = q.ip.trim().parse().map(|a| DomainCode::from_ipv4(a).to_string()).unwrap_or_default();
    render(&state, &s, DomainForm::blank(code), None, q.ip).await
}

async fn create(State(state): State<Console>, Posted { session: s, form }: Posted<DomainForm>) -> PageResult {
    let settings = match form.settings() {
        Ok(settings) => settings,
        Err(e) => return render(&state, &s, form, Some(e), String::new()).await,
    };
    let device_name = Some(form.device_name.trim().to_owned()).filter(|d| !d.is_empty());
    let spec = DomainSpec { name: form.name.clone(), code: form.code.clone(), device_name, settings };
    match audited(&s, admin::add_domain(&state.app.store, &s.admin, spec)).await {
        Ok(d) => {
            let flash = format!("Domain {} created with code {}.", d.name, d.code);
            Ok(flash_redirect(&state, &s, &flash, "/domains").await)
        }
        Err(crate::error::Error::Refused(e)) => render(&state, &s, form, Some(e), String::new()).await,
        Err(e) => Err(e.into()),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "domain_edit.html")]
struct EditPage {
    l: Layout,
    code: String,
    fingerprint: String,
    form: DomainForm,
    error: Option<String>,
}

async fn edit_page(State(state): State<Console>, s: AdminSession, Path(code): Path<String>) -> PageResult {
    let d = admin::domain(&state.app.store, &code).await?;
    let page = EditPage {
        l: Layout::new(&s, "domains", format!("Edit {}", d.name)),
        code: d.code.clone(),
        fingerprint: fingerprint(&d.public_key),
        form: DomainForm::from_row(&d),
        error: None,
    };
    Ok(page.into_response())
}

async fn edit(State(state): State<Console>, Path(code): Path<String>, posted: Posted<DomainForm>) -> PageResult {
    let Posted { session: s, form } = posted;
    let d = admin::domain(&state.app.store, &code).await?;
    let result = match form.settings() {
        Ok(settings) => audited(
            &s,
            console::update_domain(&state.app.store, &s.admin, &d.code, &form.name, &form.device_name, &settings),
        )
        .await
        .map_err(|e| match e {
            crate::error::Error::Refused(m) => Ok(m),
            e => Err(e),
        }),
        Err(m) => Err(Ok(m)),
    };
    match result {
        Ok(()) => Ok(flash_redirect(&state, &s, &format!("Domain {} saved.", form.name.trim()), "/domains").await),
        Err(Ok(error)) => {
            let l = Layout::new(&s, "domains", format!("Edit {}", d.name));
            let page =
                EditPage { l, code: d.code.clone(), fingerprint: fingerprint(&d.public_key), form, error: Some(error) };
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(Err(e)) => Err(e.into()),
    }
}
