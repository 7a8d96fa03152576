//! A second, independent RADIUS client: Python's pyrad (tests/pyrad_client.py). It gets the
//! right answers with and without Message-Authenticator and verifies the Response
//! Authenticator and Message-Authenticator of every reply (its own check and one by hand).

use std::process::Command;

use crate::helpers::{Fixture, PIN, RadclientAnswer, SECRET, radclient};

/// Runs the script; returns `accept`, `reject` or `timeout`, and fails on a bad reply.
fn pyrad(f: &Fixture, user: &str, password: &str, flags: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pyrad_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args([&f.server.radius.ip().to_string(), &f.server.radius.port().to_string(), SECRET, user, password])
        .args(flags)
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pyrad client failed (install with `python3 -m pip install pyrad`; scripts/test does): {stderr}"
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn pyrad_without_message_authenticator_gets_accept_once_then_reject() {
    let f = Fixture::new(&[]);
    let passcode = f.alice.passcode(PIN);
    assert_eq!(pyrad(&f, "alice", &passcode, &[]), "accept");
    assert_eq!(pyrad(&f, "alice", &passcode, &[]), "reject");
    assert_eq!(pyrad(&f, "alice", "000000", &[]), "reject");
}

#[test]
fn pyrad_with_message_authenticator_gets_accept_once_then_reject() {
    let f = Fixture::with_client_mode(&[], "require");
    let passcode = f.alice.passcode(PIN);
    assert_eq!(pyrad(&f, "alice", &passcode, &[]), "timeout", "require mode drops requests without one");
    assert_eq!(pyrad(&f, "alice", &passcode, &["--ma"]), "accept");
    assert_eq!(pyrad(&f, "alice", &passcode, &["--ma"]), "reject");
    assert_eq!(pyrad(&f, "bob", &passcode, &["--ma"]), "reject");
}

#[test]
fn pyrad_and_radclient_agree_on_one_passcode() {
    let f = Fixture::new(&[]);
    let passcode = f.alice.passcode(PIN);
    assert_eq!(radclient(f.server.radius, "alice", &passcode, true), RadclientAnswer::Accept);
    assert_eq!(pyrad(&f, "alice", &passcode, &["--ma"]), "reject", "used through radclient");
    let passcode = f.alice.passcode(PIN);
    assert_eq!(pyrad(&f, "alice", &passcode, &["--ma"]), "accept");
    assert_eq!(radclient(f.server.radius, "alice", &passcode, true), RadclientAnswer::Reject);
}

#[test]
fn pyrad_status_server_probe_is_answered() {
    let f = Fixture::new(&[]);
    // RFC 5997: Status-Server is answered with Access-Accept, Message-Authenticator signed.
    assert_eq!(pyrad(&f, "-", "-", &["--status"]), "accept");
}

#[test]
fn the_pyrad_check_is_not_vacuous_a_reply_under_another_secret_fails_it() {
    let f = Fixture::new(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pyrad_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args([&f.server.radius.ip().to_string(), &f.server.radius.port().to_string(), "not-the-shared-secret"])
        .args(["alice", "000000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}
