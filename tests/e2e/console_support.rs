//! Helpers for the console tests: an administrator made with the real CLI, and an HTTP client
//! that follows no redirect and carries the session cookie itself.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::helpers::{TestServer, bin};

pub const ADMIN: &str = "root";
pub const PASSWORD: &str = "a long console password";

/// Runs `tessera-server admin add NAME` with the password on stdin.
pub fn add_admin(server: &TestServer, name: &str, password: &str) {
    let mut child = Command::new(bin("tessera-server"))
        .args(["--database", &server.database, "admin", "add", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "admin add failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// One HTTP answer.
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub body: String,
}

/// A browser-less console client.
pub struct Console {
    base: String,
    agent: ureq::Agent,
    /// `name=value` pairs sent as the Cookie header.
    pub cookies: Vec<String>,
    /// Headers sent with every request, as a reverse proxy in front would add them.
    pub headers: Vec<(&'static str, &'static str)>,
}

impl Console {
    pub fn new(server: &TestServer) -> Self {
        let agent = ureq::Agent::config_builder().max_redirects(0).http_status_as_error(false).build().into();
        Self { base: format!("http://{}", server.admin), agent, cookies: vec![], headers: vec![] }
    }

    /// A client signed in as the test administrator (created first).
    pub fn signed_in(server: &TestServer) -> Self {
        add_admin(server, ADMIN, PASSWORD);
        let mut c = Self::new(server);
        let a = c.login(ADMIN, PASSWORD);
        assert_eq!(a.status, 303, "sign-in failed: {}", a.body);
        c
    }

    pub fn get(&self, path: &str) -> Answer {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        for (name, value) in &self.headers {
            req = req.header(*name, *value);
        }
        if !self.cookies.is_empty() {
            req = req.header("Cookie", self.cookies.join("; "));
        }
        answer(req.call().unwrap())
    }

    pub fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        let mut req = self.agent.post(format!("{}{path}", self.base));
        for (name, value) in &self.headers {
            req = req.header(*name, *value);
        }
        if !self.cookies.is_empty() {
            req = req.header("Cookie", self.cookies.join("; "));
        }
        answer(req.send_form(form.iter().copied()).unwrap())
    }

    /// Loads the sign-in page (for its paired cookie and token) and posts the credentials.
    pub fn login(&mut self, name: &str, password: &str) -> Answer {
        let page = self.get("/login");
        self.keep_cookies(&page);
        let csrf = csrf_in(&page.body);
        let a = self.post("/login", &[("csrf", &csrf), ("username", name), ("password", password)]);
        self.keep_cookies(&a);
        a
    }

    /// The session's CSRF token, read from a page's forms.
    pub fn csrf(&self) -> String {
        csrf_in(&self.get("/domains").body)
    }

    fn keep_cookies(&mut self, a: &Answer) {
        for c in &a.set_cookies {
            let pair = c.split(';').next().unwrap().trim().to_owned();
            let name = pair.split('=').next().unwrap().to_owned();
            self.cookies.retain(|p| !p.starts_with(&format!("{name}=")));
            if !pair.ends_with('=') {
                self.cookies.push(pair);
            }
        }
    }
}

fn answer(mut r: ureq::http::Response<ureq::Body>) -> Answer {
    let header =
        |name: &str| r.headers().get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
    let location = header("location").into_iter().next();
    let set_cookies = header("set-cookie");
    Answer { status: r.status().as_u16(), location, set_cookies, body: r.body_mut().read_to_string().unwrap() }
}

/// The value of the first `name="csrf"` hidden field in a page.
pub fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("the page has a form with a CSRF token") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}
