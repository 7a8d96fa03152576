//! Authentication is an extractor: [`AdminSession`] for every page, [`Posted`] for every form
//! post (session, then CSRF token, then the form).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Form, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq as _;

use super::{Console, view};
use crate::service::admins;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "tessera_session";
/// Name of the cookie that pairs the sign-in form with its browser (login CSRF).
pub const LOGIN_COOKIE: &str = "tessera_login";

/// A signed-in administrator.
#[derive(Clone, Debug)]
pub struct AdminSession {
    pub id: i64,
    /// The administrator's name: the actor of every audit entry from this session.
    pub admin: String,
    pub csrf: String,
    /// A message left by the previous action, shown once.
    pub flash: Option<String>,
    pub source: IpAddr,
}

impl FromRequestParts<Console> for AdminSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Console) -> Result<Self, Response> {
        let source = client_address(parts);
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            tracing::debug!(%source, path = %parts.uri.path(), "console request without a session");
            return Err(Redirect::to("/login").into_response());
        };
        match admins::session(&state.app.store, &token).await {
            Ok(Some(s)) => Ok(Self { id: s.id, admin: s.username, csrf: s.csrf_token, flash: s.flash, source }),
            Ok(None) => {
                tracing::debug!(%source, "console request with an unknown or expired session");
                Err(Redirect::to("/login").into_response())
            }
            Err(e) => Err(super::Fault::Internal(e).into_response()),
        }
    }
}

/// The network address of the peer.
pub fn client_address(parts: &Parts) -> IpAddr {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// The value of cookie `name` in the request, if present.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// A `Set-Cookie` value: never readable by scripts, never sent cross-site, and over HTTPS
/// only when the request reached a TLS reverse proxy ([`via_https`]). The console itself
/// speaks plain HTTP (loopback or a management network), where `Secure` would make the
/// browser drop the cookie.
pub fn set_cookie(request: &HeaderMap, name: &str, value: &str, path: &str, max_age: Option<i64>) -> String {
    let age = max_age.map(|a| format!("; Max-Age={a}")).unwrap_or_default();
    let secure = if via_https(request) { "; Secure" } else { "" };
    format!("{name}={value}; HttpOnly; SameSite=Strict; Path={path}{age}{secure}")
}

/// True when a reverse proxy says the browser spoke HTTPS to it: `X-Forwarded-Proto: https`
/// or `Forwarded: proto=https` (RFC 7239), from the proxy nearest the browser. Trusting the
/// header is safe in this one direction: a peer that sends it falsely only gets cookies its
/// own browser will not send back over plain HTTP.
pub fn via_https(request: &HeaderMap) -> bool {
    let first =
        |name: &str| request.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.split(',').next()).map(str::trim);
    let forwarded_proto = first("forwarded").and_then(|element| {
        element
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find_map(|(k, v)| k.eq_ignore_ascii_case("proto").then(|| v.trim_matches('"')))
    });
    [first("x-forwarded-proto"), forwarded_proto].into_iter().flatten().any(|p| p.eq_ignore_ascii_case("https"))
}

/// Constant-time equality of two tokens.
pub fn same_token(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[derive(Deserialize)]
struct WithCsrf<T> {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    form: T,
}

/// A form post by a signed-in administrator whose CSRF token matched the session's.
pub struct Posted<T> {
    pub session: AdminSession,
    pub form: T,
}

impl<T: DeserializeOwned + Send> FromRequest<Console> for Posted<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Console) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        // Read the (small) body first, so even a refusal answers a client that is still sending.
        let body = axum::body::to_bytes(body, 64 * 1024)
            .await
            .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response())?;
        let session = AdminSession::from_request_parts(&mut parts, state).await?;
        let req = Request::from_parts(parts, axum::body::Body::from(body));
        let Form(posted) = Form::<WithCsrf<T>>::from_request(req, state).await.map_err(|e| {
            (StatusCode::BAD_REQUEST, view::message("Bad form", &format!("The form could not be read: {e}")))
                .into_response()
        })?;
        if !same_token(&posted.csrf, &session.csrf) {
            tracing::warn!(admin = %session.admin, source = %session.source, "console form with a wrong CSRF token refused");
            return Err(csrf_refused());
        }
        Ok(Self { session, form: posted.form })
    }
}

/// The answer to a form whose CSRF token is missing or wrong.
pub fn csrf_refused() -> Response {
    let text = "This form did not come from this console session (missing or wrong CSRF token), so nothing was \
                changed. Reload the page and try again.";
    (StatusCode::FORBIDDEN, view::message("Form refused", text)).into_response()
}

/// Leaves `flash` for the next page and redirects there (post/redirect/get).
pub async fn flash_redirect(state: &Console, session: &AdminSession, flash: &str, to: &str) -> Response {
    if let Err(e) = state.app.store.set_session_flash(session.id, flash).await {
        return super::Fault::Internal(e.into()).into_response();
    }
    Redirect::to(to).into_response()
}

/// Runs a service call with the session's address as the audit source.
pub async fn audited<F: Future>(session: &AdminSession, f: F) -> F::Output {
    crate::service::admin::SOURCE.scope(session.source.to_string(), f).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others_and_tokens_compare_exactly() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; tessera_session=abc; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), None);
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd") && !same_token("", "") && !same_token("ab", "abc"));
        let plain = set_cookie(&HeaderMap::new(), "s", "v", "/", None);
        assert_eq!(plain, "s=v; HttpOnly; SameSite=Strict; Path=/");
    }

    #[test]
    fn cookies_are_secure_only_behind_a_proxy_that_saw_https() {
        let with = |name: &str, value: &str| {
            let mut h = HeaderMap::new();
            h.insert(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
            set_cookie(&h, "s", "v", "/", Some(0))
        };
        for (name, value) in [
            ("X-Forwarded-Proto", "https"),
            ("x-forwarded-proto", "HTTPS, http"),
            ("Forwarded", "for=192.0.2.60;proto=https;by=203.0.113.43"),
            ("Forwarded", "proto=\"https\", proto=http"),
        ] {
            assert!(with(name, value).ends_with("; Max-Age=0; Secure"), "{name}: {value}");
        }
        for (name, value) in [
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Proto", "http, https"),
            ("Forwarded", "for=192.0.2.60;proto=http"),
            ("Forwarded", "for=https"),
            ("X-Forwarded-Host", "https"),
        ] {
            assert!(!with(name, value).contains("Secure"), "{name}: {value}");
        }
    }
}
