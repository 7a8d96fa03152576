//! Guessing limits: wrong passcodes are counted per user (in the database, so across nodes);
//! at the domain's limit the user is rejected without checking, and a flood from one network
//! client cannot starve another.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::helpers::{DOMAIN, Fixture, PIN, SECRET, TestServer, eventually};
use crate::radius_client::{Answer, Client, Flood, Ma, access_request};

fn client(server: &TestServer) -> Client {
    Client::new(server.radius, SECRET)
}

#[test]
fn a_user_is_throttled_after_the_limit_and_even_the_right_passcode_is_rejected() {
    let f = Fixture::new(&["--max-passcode-failures", "3"]);
    let c = client(&f.server);
    for guess in ["000000", "111111", "222222"] {
        assert_eq!(c.auth("alice", guess, Ma::None), Answer::Reject);
    }
    let passcode = f.alice.passcode(PIN);
    assert_eq!(c.auth("alice", &passcode, Ma::None), Answer::Reject, "throttled: not even checked");
    let log = f.server.log();
    assert!(log.contains("throttled: too many wrong passcodes"), "the log says so:\n{log}");
    let listing = f.server.cli_ok(&["domain", "list"]);
    assert!(listing.contains("max-passcode-failures=3 per 600s"), "{listing}");
}

#[test]
fn wrong_passcodes_still_count_after_a_restart() {
    // On SQLite the engine counts in memory and replays its log at start (db::failures).
    let Fixture { mut server, alice } = Fixture::new(&["--max-passcode-failures", "3"]);
    let c = client(&server);
    assert_eq!(c.auth("alice", "000000", Ma::None), Answer::Reject);
    assert_eq!(c.auth("alice", "111111", Ma::None), Answer::Reject);
    // A Reject is sent before its batch commits (db::engine), and a kill in between loses
    // that failure by design; the commit follows within microseconds.
    std::thread::sleep(Duration::from_millis(300));
    server.restart();
    let c = client(&server);
    assert_eq!(c.auth("alice", "222222", Ma::None), Answer::Reject);
    let passcode = alice.passcode(PIN);
    assert_eq!(
        c.auth("alice", &passcode, Ma::None),
        Answer::Reject,
        "throttled: two failures before the restart counted"
    );
    assert!(server.log().contains("throttled: too many wrong passcodes"));
}

#[test]
fn unlocking_the_user_lifts_the_throttle() {
    let f = Fixture::new(&["--max-passcode-failures", "2"]);
    let c = client(&f.server);
    for guess in ["000000", "111111"] {
        assert_eq!(c.auth("alice", guess, Ma::None), Answer::Reject);
    }
    let passcode = f.alice.passcode(PIN);
    assert_eq!(c.auth("alice", &passcode, Ma::None), Answer::Reject, "throttled");
    f.server.cli_ok(&["user", "unlock", "alice", "--domain", DOMAIN]);
    let passcode = f.alice.passcode(PIN);
    assert_eq!(c.auth("alice", &passcode, Ma::None), Answer::Accept, "unlock lifted the throttle");
}

#[test]
fn a_right_passcode_before_the_limit_resets_the_count() {
    let f = Fixture::new(&["--max-passcode-failures", "3"]);
    let c = client(&f.server);
    for _ in 0..2 {
        assert_eq!(c.auth("alice", "000000", Ma::None), Answer::Reject);
        assert_eq!(c.auth("alice", "999999", Ma::None), Answer::Reject);
        let passcode = f.alice.passcode(PIN);
        assert_eq!(c.auth("alice", &passcode, Ma::None), Answer::Accept, "count was reset by the last Accept");
    }
}

#[test]
fn throttling_lifts_when_the_failures_leave_the_window() {
    // Times are whole seconds: with a 4 s window the failures still count for at least 3 s,
    // time enough to fetch a passcode on a loaded machine (with 2 s, a fetch near a second's
    // end found them gone once).
    let f = Fixture::new(&["--max-passcode-failures", "2", "--passcode-failure-window", "4"]);
    let c = client(&f.server);
    assert_eq!(c.auth("alice", "000000", Ma::None), Answer::Reject);
    assert_eq!(c.auth("alice", "000001", Ma::None), Answer::Reject);
    let passcode = f.alice.passcode(PIN);
    assert_eq!(c.auth("alice", &passcode, Ma::None), Answer::Reject);
    // Waiting out a time-based policy is what this test is about.
    std::thread::sleep(Duration::from_millis(5100));
    let passcode = f.alice.passcode(PIN);
    assert_eq!(c.auth("alice", &passcode, Ma::None), Answer::Accept);
}

#[test]
fn wrong_passcodes_count_across_nodes_sharing_the_database() {
    let f = Fixture::new(&["--max-passcode-failures", "3"]);
    let second = TestServer::start_on(&f.server.database);
    let (a, b) = (client(&f.server), client(&second));
    eventually(Duration::from_secs(5), || b.auth("nobody", "0", Ma::None) != Answer::Dropped).expect("node 2 live");
    assert_eq!(a.auth("alice", "000000", Ma::None), Answer::Reject);
    assert_eq!(b.auth("alice", "111111", Ma::None), Answer::Reject);
    assert_eq!(a.auth("alice", "222222", Ma::None), Answer::Reject);
    let passcode = f.alice.passcode(PIN);
    assert_eq!(b.auth("alice", &passcode, Ma::None), Answer::Reject, "node 2 sees node 1's failures");
    assert!(second.log().contains("throttled"), "{}", second.log());
}

#[test]
fn the_domain_limit_is_validated() {
    let server = TestServer::start();
    let out = server.cli(&["domain", "add", "--name", "X", "--code", DOMAIN, "--max-passcode-failures", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong-passcode limit"));
}

#[test]
fn a_flood_from_one_client_does_not_starve_another() {
    let f = Fixture::new(&[]);
    f.server.cli_ok(&[
        "client",
        "add",
        "--name",
        "second",
        "--address",
        "127.0.0.2",
        "--secret",
        SECRET,
        "--domain",
        DOMAIN,
    ]);
    let other_ip: IpAddr = "127.0.0.2".parse().unwrap();
    let other = Client::bound(other_ip, f.server.radius, SECRET).with_timeout(Duration::from_secs(1));
    eventually(Duration::from_secs(5), || other.auth("nobody", "0", Ma::None) != Answer::Dropped)
        .expect("the second client is live");

    // One client (127.0.0.1) sends as fast as it can for a few seconds.
    let flood = Flood::start(f.server.radius, SECRET, "mallory", "123456");
    std::thread::sleep(Duration::from_millis(500));
    let passcode = f.alice.passcode(PIN);
    // The other client retransmits the same request, as RADIUS clients do, until answered.
    let request = access_request(7, rand::random(), "alice", &passcode, SECRET, Ma::None);
    let start = Instant::now();
    let mut answer = None;
    while answer.is_none() && start.elapsed() < Duration::from_secs(10) {
        answer = other.exchange(&request).map(|(a, _)| a);
    }
    let waited = start.elapsed();
    let sent = flood.stop();
    assert_eq!(answer, Some(Answer::Accept), "answered during a flood of {sent} requests");
    eprintln!("flood of {sent} requests; the other client was answered in {waited:?}");
    let log = f.server.log();
    assert!(log.contains("too many requests in flight"), "the flooding client hit its own bound");
}
