//! The seed deployment's path: a PAM service using Debian's `pam_radius_auth` (package
//! `libpam-radius-auth`, version 2.0 on Debian 12) pointed at Tessera, driven by
//! `pamtester`. The module sends no Message-Authenticator, so the client stays in `auto`.
//!
//! Needs root (it writes /etc/pam.d/tessera-e2e-*, removed afterwards); scripts/test
//! installs the packages. The Tessera username need not exist as a local account:
//! pam_radius_auth does not look it up (checked with `alice`, who has no passwd entry).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::helpers::{Fixture, PIN, SECRET, TestServer};

/// A PAM service file that exists for one test and is removed even when the test fails.
struct PamService {
    name: String,
    path: PathBuf,
}

impl PamService {
    /// `auth required pam_radius_auth.so conf=FILE` with FILE naming `server`.
    fn pointing_at(server: &TestServer) -> Self {
        let conf = server.dir.path().join("pam_radius_auth.conf");
        // `server[:port] secret [timeout]`, one line per RADIUS server.
        std::fs::write(&conf, format!("{} {SECRET} 5\n", server.radius)).unwrap();
        let name = format!("tessera-e2e-{:016x}", rand::random::<u64>());
        let path = PathBuf::from("/etc/pam.d").join(&name);
        let service =
            format!("auth required pam_radius_auth.so conf={}\naccount required pam_permit.so\n", conf.display());
        std::fs::write(&path, service).unwrap_or_else(|e| {
            panic!("cannot write {} ({e}): the PAM test must run as root (CI does)", path.display())
        });
        Self { name, path }
    }

    /// `pamtester -v SERVICE USER authenticate` answering the password prompt with `password`.
    fn authenticate(&self, user: &str, password: &str) -> (bool, String) {
        let mut child = Command::new("pamtester")
            .args(["-v", &self.name, user, "authenticate"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pamtester (Debian package pamtester) must be installed; scripts/test installs it");
        child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn pam_radius_auth_logs_in_with_a_fresh_passcode_and_refuses_used_and_guessed_ones() {
    let f = Fixture::new(&[]);
    let pam = PamService::pointing_at(&f.server);
    let passcode = f.alice.passcode(PIN);

    let (ok, text) = pam.authenticate("alice", &passcode);
    assert!(ok && text.contains("successfully authenticated"), "a fresh passcode logs in:\n{text}");
    assert!(text.contains("Password:"), "pam_radius_auth prompted for the password:\n{text}");

    let (ok, text) = pam.authenticate("alice", &passcode);
    assert!(!ok && text.contains("Authentication failure"), "a used passcode is refused:\n{text}");

    let guess = if passcode == "123456" { "654321" } else { "123456" };
    let (ok, text) = pam.authenticate("alice", guess);
    assert!(!ok && text.contains("Authentication failure"), "a guessed passcode is refused:\n{text}");

    let log = f.server.log();
    assert!(log.contains("passcode already used") && log.contains("wrong passcode"), "{log}");
    assert!(!f.server.cli_ok(&["client", "list"]).contains("(seen)"), "pam_radius_auth sent no Message-Authenticator");
}

#[test]
fn pam_radius_auth_refuses_a_user_of_no_domain() {
    let f = Fixture::new(&[]);
    let pam = PamService::pointing_at(&f.server);
    let passcode = f.alice.passcode(PIN);
    let (ok, text) = pam.authenticate("mallory", &passcode);
    assert!(!ok && text.contains("Authentication failure"), "{text}");
    // alice's passcode was not burnt by mallory's attempt.
    let (ok, text) = pam.authenticate("alice", &passcode);
    assert!(ok, "{text}");
}
