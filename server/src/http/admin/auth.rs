//! Sign-in and sign-out.
//!
//! The sign-in form is paired with its browser by a random cookie that the form echoes
//! (double submit), so another site cannot sign a browser in under its own account.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::{LOGIN_COOKIE, Posted, SESSION_COOKIE, cookie, csrf_refused, same_token, set_cookie};
use super::view::Layout;
use super::{Console, Fault};
use crate::service::admins::{self, LoginError};

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
struct LoginPage {
    l: Layout,
    csrf: String,
    username: String,
    error: Option<String>,
}

fn page(request: &HeaderMap, status: StatusCode, username: String, error: Option<String>) -> Response {
    let csrf = admins::random_hex();
    let page = LoginPage { l: Layout::anonymous("Sign in"), csrf: csrf.clone(), username, error };
    let cookie = set_cookie(request, LOGIN_COOKIE, &csrf, "/login", Some(3600));
    (status, [(header::SET_COOKIE, cookie)], page).into_response()
}

pub async fn login_page(headers: HeaderMap) -> Response {
    page(&headers, StatusCode::OK, String::new(), None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

pub async fn login(
    State(state): State<Console>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let paired = cookie(&headers, LOGIN_COOKIE).is_some_and(|c| same_token(&c, &f.csrf));
    if !paired {
        return csrf_refused();
    }
    let username = f.username.trim().to_owned();
    match admins::login(&state.app, &state.throttle, &username, f.password, peer.ip()).await {
        Ok(token) => {
            let session = set_cookie(&headers, SESSION_COOKIE, &token, "/", None);
            let done = set_cookie(&headers, LOGIN_COOKIE, "", "/login", Some(0));
            let mut r = Redirect::to("/domains").into_response();
            r.headers_mut().append(header::SET_COOKIE, session.parse().expect("cookie is a valid header"));
            r.headers_mut().append(header::SET_COOKIE, done.parse().expect("cookie is a valid header"));
            r
        }
        Err(e @ LoginError::Wrong) => {
            page(&headers, StatusCode::UNAUTHORIZED, username, Some(format!("Sign-in failed: {e}.")))
        }
        Err(e @ LoginError::Throttled(_)) => {
            page(&headers, StatusCode::TOO_MANY_REQUESTS, username, Some(format!("Refused: {e}.")))
        }
        Err(LoginError::Internal(e)) => Fault::Internal(e).into_response(),
    }
}

#[derive(Deserialize)]
pub struct Nothing {}

pub async fn logout(State(state): State<Console>, headers: HeaderMap, posted: Posted<Nothing>) -> Response {
    let s = &posted.session;
    if let Err(e) = admins::logout(&state.app.store, s.id, &s.admin, s.source).await {
        return Fault::Internal(e).into_response();
    }
    let gone = set_cookie(&headers, SESSION_COOKIE, "", "/", Some(0));
    ([(header::SET_COOKIE, gone)], Redirect::to("/login")).into_response()
}
