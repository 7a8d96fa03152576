//! Runs the real `tessera-token` binary against a minimal in-process token API that speaks
//! the protocol crate's envelope, so the whole register / passcode flow is exercised without
//! the server crate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use tessera_protocol::device::{DevicePublicKey, device_id, fingerprint, registration_code};
use tessera_protocol::envelope::{Purpose, ServerKeyPair};
use tessera_protocol::request::{open_signed, seal_reply};
use tessera_protocol::wire::*;
use tessera_protocol::{DomainCode, wire};

const CODE: &str = "127000000001";
const PIN: &str = "246810";
const SERVER_NONCE: [u8; 32] = [5; 32];

struct FakeServer {
    keys: ServerKeyPair,
    device: Mutex<Option<(DevicePublicKey, String)>>,
}

impl FakeServer {
    /// Starts the fake API on an ephemeral port; returns its URL.
    fn start() -> (Arc<FakeServer>, String) {
        let server = Arc::new(FakeServer { keys: ServerKeyPair::generate(), device: Mutex::new(None) });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::clone(&server);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                shared.serve(stream);
            }
        });
        (server, url)
    }

    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut parts = request_line.split_whitespace();
        let (status, reply) = self.answer(parts.next().unwrap(), parts.next().unwrap(), &body);
        let mut stream = stream;
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            reply.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(reply.as_bytes()).unwrap();
    }

    fn answer(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let domain = DomainCode::parse(CODE).unwrap();
        match (method, path) {
            ("GET", p) if p == format!("/v1/domains/{CODE}") => {
                let public = self.keys.public_bytes();
                let info = DomainInfo {
                    code: CODE.into(),
                    name: "Example Corp".into(),
                    device_name: "example.com".into(),
                    public_key: b64(&public),
                    fingerprint: fingerprint(&public),
                    pin_min_length: 6,
                    passcode_length: 6,
                    passcode_lifetime_secs: 60,
                };
                (200, serde_json::to_string(&info).unwrap())
            }
            ("POST", wire::paths::REGISTER) => {
                let sealed: SealedBody = serde_json::from_slice(body).unwrap();
                let opened = open_signed(Purpose::Register, domain, &self.keys, &sealed).unwrap();
                let req: RegisterBody = serde_json::from_str(&opened.body).unwrap();
                let der = unb64(&req.device_public_key).unwrap();
                let key = DevicePublicKey::from_der(&der).unwrap();
                opened.verify(&key).unwrap();
                assert_eq!(req.pin, PIN);
                *self.device.lock().unwrap() = Some((key, device_id(&der)));
                let ok = Registered {
                    device_id: device_id(&der),
                    server_nonce: b64(&SERVER_NONCE),
                    expires_in_secs: 86_400,
                    validated_username: None,
                };
                (200, serde_json::to_string(&seal_reply(&opened.response_key, &Reply::Ok(ok))).unwrap())
            }
            ("POST", wire::paths::PASSCODE) => {
                let sealed: SealedBody = serde_json::from_slice(body).unwrap();
                let opened = open_signed(Purpose::Passcode, domain, &self.keys, &sealed).unwrap();
                opened.verify(&self.device.lock().unwrap().as_ref().unwrap().0).unwrap();
                let req: PasscodeBody = serde_json::from_str(&opened.body).unwrap();
                let reply = if req.pin == PIN {
                    Reply::Ok(Passcode { passcode: "654321".into(), expires_in_secs: 60 })
                } else {
                    Reply::Error(TokenError { kind: ErrorKind::WrongPin, message: "no".into(), attempts_left: Some(4) })
                };
                (200, serde_json::to_string(&seal_reply(&opened.response_key, &reply)).unwrap())
            }
            _ => (404, r#"{"error":"not found"}"#.into()),
        }
    }
}

fn token(store: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera-token"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env("TESSERA_TOKEN_PASSPHRASE", "a long passphrase")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn store_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("tessera").join("keystore.json")
}

#[test]
fn a_token_registers_then_gets_passcodes_and_wrong_pins_exit_1() {
    let (server, url) = FakeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = store_path(&dir);

    let out = token(&store, &["add-domain", CODE, "--server", &format!("{url}/"), "--pin-stdin"], "246810\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let public = server.keys.public_bytes();
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("Server key fingerprint: {}", fingerprint(&public))), "{stderr}");
    assert!(stderr.contains("it expires in 24 hours"), "{stderr}");
    let id = server.device.lock().unwrap().as_ref().unwrap().1.clone();
    assert_eq!(text(&out.stdout), format!("{}\n", registration_code(&public, &id, &SERVER_NONCE)));

    let again = token(&store, &["add-domain", CODE, "--server", &url, "--pin-stdin"], "246810\n");
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("already registered with domain 127000000001"));

    let out = token(&store, &["passcode", "--pin-stdin"], "246810\r\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "654321\n");
    assert!(text(&out.stderr).contains("valid for 60 seconds"));

    let out = token(&store, &["passcode", CODE, "--pin-stdin"], "000000\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "error: wrong PIN (4 attempts left before the device locks)\n");

    let out = token(&store, &["list"], "");
    assert_eq!(text(&out.stdout), format!("{CODE}  Example Corp  {url}  fingerprint {}\n", fingerprint(&public)));

    let out = token(&store, &["remove", CODE], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = token(&store, &["passcode", "--pin-stdin"], "246810\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("holds no domain"));
}

#[test]
fn failures_are_one_clear_line_with_exit_2() {
    let (_server, url) = FakeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = store_path(&dir);
    let cases: [(&[&str], &str, &str); 5] = [
        (&["list"], "", "error: no keystore at "),
        (&["add-domain", "12345"], "", "error: invalid domain code \"12345\""),
        (&["add-domain", "127000000002", "--server", &url, "--pin-stdin"], "246810\n", "error: unknown domain code"),
        (&["add-domain", CODE, "--server", &url, "--pin-stdin"], "123\n", "error: the PIN must be at least 6"),
        (&["add-domain", CODE, "--server", "http://127.0.0.1:1", "--pin-stdin"], "", "error: cannot reach"),
    ];
    for (args, stdin, expected) in cases {
        let out = token(&store, args, stdin);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with(expected) && !stderr.contains("caused by"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    assert!(!store.exists(), "nothing is saved before a registration succeeds");

    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    std::fs::write(&store, "not json").unwrap();
    let out = token(&store, &["list"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is corrupt"));
}
