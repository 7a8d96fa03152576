//! Message-Authenticator modes (the BlastRADIUS defence) and Status-Server.

use std::time::Duration;

use crate::helpers::{Fixture, PIN, RadclientAnswer, SECRET, radclient};
use crate::radius_client::{Answer, Client, Ma, status_server};

/// Drops are detected by silence; a second is far above the server's answer time.
fn client(f: &Fixture) -> Client {
    Client::new(f.server.radius, SECRET).with_timeout(Duration::from_millis(1500))
}

fn fixture_with_mode(mode: &str) -> Fixture {
    Fixture::with_client_mode(&[], mode)
}

#[test]
fn require_mode_drops_requests_without_message_authenticator() {
    let f = fixture_with_mode("require");
    let c = client(&f);
    let passcode = f.alice.passcode(PIN);
    assert_eq!(c.auth("alice", &passcode, Ma::None), Answer::Dropped);
    assert_eq!(radclient(f.server.radius, "alice", &passcode, false), RadclientAnswer::NoReply);
    assert_eq!(radclient(f.server.radius, "alice", &passcode, true), RadclientAnswer::Accept);
    assert!(f.server.log().contains("without Message-Authenticator dropped"));
}

#[test]
fn auto_mode_serves_a_client_that_never_sends_one_until_it_does_even_across_restarts() {
    let mut f = Fixture::new(&[]);
    let c = client(&f);
    // Like Debian 12's pam_radius_auth: no Message-Authenticator at all.
    let passcode = f.alice.passcode(PIN);
    assert_eq!(radclient(f.server.radius, "alice", &passcode, false), RadclientAnswer::Accept);
    assert_eq!(c.auth("alice", "000000", Ma::None), Answer::Reject);
    assert!(!f.server.cli_ok(&["client", "list"]).contains("(seen)"));

    // The client sends one once: from then on it is required.
    assert_eq!(c.auth("alice", "000000", Ma::Valid), Answer::Reject);
    assert_eq!(c.auth("alice", "000000", Ma::None), Answer::Dropped);
    assert!(f.server.cli_ok(&["client", "list"]).contains("(seen)"));

    f.server.restart();
    let c = client(&f);
    let passcode = f.alice.passcode(PIN);
    assert_eq!(c.auth("alice", &passcode, Ma::None), Answer::Dropped);
    assert_eq!(c.auth("alice", &passcode, Ma::Valid), Answer::Accept);
}

#[test]
fn off_mode_never_requires_one() {
    let f = fixture_with_mode("off");
    let c = client(&f);
    assert_eq!(c.auth("alice", "000000", Ma::Valid), Answer::Reject);
    let passcode = f.alice.passcode(PIN);
    assert_eq!(c.auth("alice", &passcode, Ma::None), Answer::Accept);
}

#[test]
fn a_wrong_message_authenticator_is_dropped_in_every_mode() {
    for mode in ["require", "auto", "off"] {
        let f = fixture_with_mode(mode);
        let c = client(&f);
        let passcode = f.alice.passcode(PIN);
        assert_eq!(c.auth("alice", &passcode, Ma::Wrong), Answer::Dropped, "mode {mode}");
        // Nothing was consumed by the forged request.
        assert_eq!(c.auth("alice", &passcode, Ma::Valid), Answer::Accept, "mode {mode}");
        assert!(f.server.log().contains("wrong Message-Authenticator"));
    }
}

#[test]
fn status_server_is_answered_for_known_clients_with_message_authenticator() {
    let f = Fixture::new(&[]);
    let c = client(&f);
    let (answer, _) = c.exchange(&status_server(9, [3; 16], SECRET, Ma::Valid)).expect("Status-Server answered");
    assert_eq!(answer, Answer::Accept);
    assert!(c.exchange(&status_server(10, [4; 16], SECRET, Ma::None)).is_none(), "RFC 5997 requires one");
}
