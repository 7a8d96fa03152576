//! The console over plain HTTP: sessions, CSRF, sign-in throttling and escaping.

use crate::console_support::{ADMIN, Console, PASSWORD, add_admin};
use crate::helpers::{DOMAIN, TestServer};

const PAGES: &[&str] = &[
    "/",
    "/domains",
    "/domains/127000000001",
    "/clients",
    "/clients/1",
    "/clients/1/remove",
    "/users",
    "/users?domain=127000000001",
    "/devices/1/delete?domain=127000000001",
    "/enrollment",
    "/logs",
];
const FORMS: &[&str] = &[
    "/logout",
    "/domains",
    "/domains/127000000001",
    "/clients",
    "/clients/1",
    "/clients/1/remove",
    "/users/validate",
    "/users/change",
    "/devices/1",
    "/devices/1/delete",
    "/enrollment",
    "/enrollment/1/revoke",
];

#[test]
fn every_console_route_without_a_session_redirects_to_the_sign_in_page() {
    let server = TestServer::start();
    server.add_domain(&[]);
    let mut anonymous = Console::new(&server);
    for cookie in [None, Some("tessera_session=00112233")] {
        anonymous.cookies = cookie.map(|c| vec![c.to_owned()]).unwrap_or_default();
        for path in PAGES {
            let a = anonymous.get(path);
            assert_eq!((a.status, a.location.as_deref()), (303, Some("/login")), "GET {path} with {cookie:?}");
        }
        for path in FORMS {
            let a = anonymous.post(path, &[("csrf", "x"), ("name", "Sneaky"), ("code", "010000000001")]);
            assert_eq!((a.status, a.location.as_deref()), (303, Some("/login")), "POST {path} with {cookie:?}");
        }
    }
    assert!(!server.cli_ok(&["domain", "list"]).contains("Sneaky"));
    assert_eq!(anonymous.get("/login").status, 200);
}

#[test]
fn a_form_post_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing() {
    let server = TestServer::start();
    let console = Console::signed_in(&server);
    let form = [("name", "Branch"), ("code", "010000000001")];
    let without = console.post("/domains", &form);
    assert_eq!(without.status, 403, "{}", without.body);
    assert!(without.body.contains("CSRF"), "{}", without.body);
    let wrong = console.post("/domains", &[("csrf", &"0".repeat(64)), form[0], form[1]]);
    assert_eq!(wrong.status, 403);
    assert!(!server.cli_ok(&["domain", "list"]).contains("Branch"), "nothing was created");
    // Another session's token does not work either.
    add_admin(&server, "second", PASSWORD);
    let mut other = Console::new(&server);
    assert_eq!(other.login("second", PASSWORD).status, 303);
    assert_eq!(console.post("/domains", &[("csrf", &other.csrf()), form[0], form[1]]).status, 403);
    assert!(!server.cli_ok(&["domain", "list"]).contains("Branch"));

    let right = console.post("/domains", &[("csrf", &console.csrf()), form[0], form[1]]);
    assert_eq!((right.status, right.location.as_deref()), (303, Some("/domains")), "{}", right.body);
    assert!(server.cli_ok(&["domain", "list"]).contains("Branch"));
    let page = console.get("/domains").body;
    assert!(page.contains("Domain Branch created with code 010000000001."), "flash after the action");
    assert!(!console.get("/domains").body.contains("created with code"), "the flash is shown once");
}

#[test]
fn six_wrong_passwords_in_a_row_are_refused_even_before_the_right_one() {
    let server = TestServer::start();
    add_admin(&server, ADMIN, PASSWORD);
    let mut c = Console::new(&server);
    for attempt in 1..=5 {
        let a = c.login(ADMIN, "not the right password");
        assert_eq!(a.status, 401, "attempt {attempt}");
        assert!(a.body.contains("wrong name or password"));
    }
    let sixth = c.login(ADMIN, "not the right password");
    assert_eq!(sixth.status, 429);
    assert!(sixth.body.contains("too many failed sign-ins"), "{}", sixth.body);
    assert_eq!(c.login(ADMIN, PASSWORD).status, 429, "throttled whatever the password");
    assert!(c.get("/domains").location.as_deref() == Some("/login"), "no session was opened");
}

#[test]
fn an_unknown_administrator_and_a_wrong_password_get_the_same_answer() {
    let server = TestServer::start();
    add_admin(&server, ADMIN, PASSWORD);
    let mut c = Console::new(&server);
    let unknown = c.login("nobody", PASSWORD);
    let wrong = c.login(ADMIN, "wrong password here");
    assert_eq!((unknown.status, wrong.status), (401, 401));
    let message = |b: &str| b.lines().find(|l| l.contains("class=\"error\"")).map(str::to_owned);
    assert_eq!(message(&unknown.body), message(&wrong.body));
}

#[test]
fn the_session_cookie_is_http_only_and_same_site_and_signing_out_ends_the_session() {
    let server = TestServer::start();
    add_admin(&server, ADMIN, PASSWORD);
    let mut c = Console::new(&server);
    let a = c.login(ADMIN, PASSWORD);
    let cookie = a.set_cookies.iter().find(|s| s.starts_with("tessera_session=")).expect("a session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain HTTP with no proxy in front: {cookie}");
    let old = c.cookies.clone();
    assert_eq!(c.get("/domains").status, 200);
    let out = c.post("/logout", &[("csrf", &c.csrf())]);
    assert_eq!(out.location.as_deref(), Some("/login"));
    c.cookies = old;
    assert_eq!(c.get("/domains").location.as_deref(), Some("/login"), "the old cookie no longer works");
    let logs = server.cli_ok(&["domain", "list"]);
    assert!(logs.is_empty());
}

#[test]
fn behind_a_tls_proxy_every_console_cookie_is_secure() {
    let server = TestServer::start();
    add_admin(&server, ADMIN, PASSWORD);
    let mut c = Console::new(&server);
    c.headers.push(("X-Forwarded-Proto", "https"));
    let page = c.get("/login");
    let a = c.login(ADMIN, PASSWORD);
    assert_eq!(a.status, 303, "sign-in failed: {}", a.body);
    let out = c.post("/logout", &[("csrf", &c.csrf())]);
    let cookies: Vec<_> = [page.set_cookies, a.set_cookies, out.set_cookies].concat();
    assert_eq!(cookies.len(), 4, "login form, session, login form cleared, session cleared: {cookies:?}");
    for cookie in &cookies {
        assert!(cookie.ends_with("; Secure"), "{cookie}");
    }
}

#[test]
fn a_script_tag_in_a_domain_name_comes_back_escaped() {
    let server = TestServer::start();
    server.cli_ok(&["domain", "add", "--name", "<script>alert(1)</script>", "--code", DOMAIN]);
    let console = Console::signed_in(&server);
    for page in ["/domains", "/users", "/enrollment", "/logs"] {
        let body = console.get(page).body;
        assert!(!body.contains("<script>"), "{page} contains a raw script tag");
        assert!(body.contains("&#60;script&#62;") || body.contains("&lt;script&gt;"), "{page}: {body}");
    }
    // Typed into a form, refused, and shown back: still escaped.
    let csrf = console.csrf();
    let a = console.post("/domains", &[("csrf", &csrf), ("name", "\"><script>x()</script>"), ("code", "bad")]);
    assert_eq!(a.status, 422);
    assert!(!a.body.contains("<script>x()"), "{}", a.body);
}
