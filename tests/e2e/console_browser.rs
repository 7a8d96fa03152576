//! The console in headless Chromium, driven through chromedriver (WebDriver): the whole
//! WiKID flow an administrator clicks through, checked at the RADIUS end with `radclient`.
//! Screenshots of every page land in `target/console-screenshots/`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use crate::console_support::{ADMIN, PASSWORD, add_admin};
use crate::helpers::{DOMAIN, PIN, RadclientAnswer, SECRET, TestServer, Token, eventually, radclient};

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver) must be installed; scripts/test installs it");
        let ready = eventually(Duration::from_secs(20), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        ready.expect("chromedriver listens");
        Self { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1360,1000",
    ]
    .map(String::from)
    .into_iter()
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect::<Vec<_>>();
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
    });
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

fn shots() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots().join(format!("{name}.png")), png).unwrap();
}

async fn page_text(c: &Client) -> String {
    c.find(Locator::Css("main")).await.unwrap().text().await.unwrap()
}

/// Submits a form and waits until the page that answers it shows `expected` (submitting
/// returns before the browser has loaded the answer).
async fn submit_until(c: &Client, form: fantoccini::elements::Form, expected: &str) -> String {
    form.submit().await.unwrap();
    let start = std::time::Instant::now();
    loop {
        if let Ok(main) = c.find(Locator::Css("main")).await
            && let Ok(text) = main.text().await
            && text.contains(expected)
        {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the page never showed {expected:?}:\n{}",
            c.source().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_sets_up_a_domain_and_validates_a_token_in_the_browser_and_radius_accepts() {
    let server = TestServer::start();
    add_admin(&server, ADMIN, PASSWORD);
    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    let base = format!("http://{}", server.admin);

    c.goto(&format!("{base}/domains")).await.unwrap();
    assert!(c.current_url().await.unwrap().path() == "/login", "no session: sent to sign in");
    let form = c.form(Locator::Css("form[action='/login']")).await.unwrap();
    form.set_by_name("username", ADMIN).await.unwrap();
    form.set_by_name("password", PASSWORD).await.unwrap();
    shot(&c, "01-login").await;
    submit_until(&c, form, "New domain").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/domains");

    let form = c.form(Locator::Css("form[action='/domains']")).await.unwrap();
    form.set_by_name("name", "Example Corp").await.unwrap();
    form.set_by_name("code", DOMAIN).await.unwrap();
    submit_until(&c, form, "Domain Example Corp created with code 127000000001.").await;
    shot(&c, "02-domains").await;

    c.goto(&format!("{base}/clients")).await.unwrap();
    let form = c.form(Locator::Css("form[action='/clients']")).await.unwrap();
    form.set_by_name("name", "loopback").await.unwrap();
    form.set_by_name("address", "127.0.0.1").await.unwrap();
    form.set_by_name("secret", SECRET).await.unwrap();
    submit_until(&c, form, "Network client loopback added").await;
    assert!(!c.source().await.unwrap().contains(SECRET), "the secret is never shown back");
    shot(&c, "03-clients").await;

    let token = Token::new(&server);
    let rc = tokio::task::block_in_place(|| token.register(PIN));
    c.goto(&format!("{base}/users")).await.unwrap();
    assert!(page_text(&c).await.contains(&rc), "the pending registration is listed");
    shot(&c, "04-users-pending").await;
    let form = c.form(Locator::Css("td form[action='/users/validate']")).await.unwrap();
    form.set_by_name("username", "alice").await.unwrap();
    let text = submit_until(&c, form, &format!("Registration {rc} validated")).await;
    assert!(text.contains("alice"), "{text}");
    shot(&c, "05-users-validated").await;

    let accepted = tokio::task::block_in_place(|| {
        // The listener reloads its clients every second; wait until it answers ours.
        let answered = eventually(Duration::from_secs(5), || {
            radclient(server.radius, "nobody", "000000", false) != RadclientAnswer::NoReply
        });
        answered.expect("RADIUS answers the client added in the console");
        let passcode = token.passcode(PIN);
        radclient(server.radius, "alice", &passcode, false)
    });
    assert_eq!(accepted, RadclientAnswer::Accept);

    c.goto(&format!("{base}/logs?user=alice")).await.unwrap();
    let text = page_text(&c).await;
    assert!(text.contains("radius.accept") && text.contains("registration.validate"), "{text}");
    assert!(text.contains(ADMIN), "the validation is logged with the administrator's name");
    shot(&c, "06-logs").await;

    c.goto(&format!("{base}/enrollment")).await.unwrap();
    let form = c.form(Locator::Css("form[method='post'][action='/enrollment']")).await.unwrap();
    form.set_by_name("username", "bob").await.unwrap();
    submit_until(&c, form, "Enrollment code for bob").await;
    shot(&c, "07-enrollment").await;

    c.goto(&format!("{base}/domains/{DOMAIN}")).await.unwrap();
    shot(&c, "08-domain-edit").await;
    c.close().await.unwrap();
}
