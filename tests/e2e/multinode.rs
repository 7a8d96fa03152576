//! Several nodes on one database: single use across nodes, changes reaching every node,
//! counters and replay protection shared, and a client failing over when a node dies.

use std::time::Duration;

use tessera_protocol::envelope::Purpose;
use tessera_protocol::wire::{ErrorKind, Reply};

use crate::helpers::{DOMAIN, Fixture, PIN, RadclientAnswer, SECRET, TestServer, eventually, radclient};
use crate::radius_client::{Answer, Client, Ma, access_request, all_at_once, tally};
use crate::raw_token::{RawToken, now};

/// Node A from the fixture, node B on the same database, B answering the client.
fn two_nodes(domain_flags: &[&str]) -> (Fixture, TestServer) {
    let f = Fixture::new(domain_flags);
    let b = TestServer::start_on(&f.server.database);
    let probe = Client::new(b.radius, SECRET);
    assert_ne!(probe.auth("nobody", "0", Ma::None), Answer::Dropped, "node B knows the client at start");
    (f, b)
}

#[test]
fn a_passcode_issued_through_one_node_is_accepted_once_through_another() {
    let (f, b) = two_nodes(&[]);
    let passcode = f.alice.passcode(PIN);
    assert_eq!(radclient(b.radius, "alice", &passcode, false), RadclientAnswer::Accept);
    assert_eq!(radclient(f.server.radius, "alice", &passcode, false), RadclientAnswer::Reject);
    assert_eq!(radclient(b.radius, "alice", &passcode, false), RadclientAnswer::Reject);
}

#[test]
fn one_passcode_sent_to_both_nodes_at_once_is_accepted_exactly_once() {
    let (f, b) = two_nodes(&[]);
    for round in 0..3 {
        let passcode = f.alice.passcode(PIN);
        let nodes: Vec<_> = (0..40).map(|i| if i % 2 == 0 { f.server.radius } else { b.radius }).collect();
        let answers = all_at_once(&nodes, SECRET, "alice", &passcode);
        assert_eq!(tally(&answers), (1, 39), "round {round}: {answers:?}");
    }
}

#[test]
fn duplicate_detection_stays_per_node() {
    let (f, b) = two_nodes(&[]);
    let passcode = f.alice.passcode(PIN);
    let request = access_request(77, [9; 16], "alice", &passcode, SECRET, Ma::Valid);
    let to_a = Client::new(f.server.radius, SECRET);
    assert_eq!(to_a.exchange(&request).unwrap().0, Answer::Accept);
    assert_eq!(to_a.exchange(&request).unwrap().0, Answer::Accept, "a retransmission to A gets A's answer");
    let to_b = Client::new(b.radius, SECRET);
    assert_eq!(to_b.exchange(&request).unwrap().0, Answer::Reject, "B never answered it: a second use");
}

#[test]
fn changes_made_through_one_node_reach_every_node_within_a_second() {
    let (f, b) = two_nodes(&["--max-pin-failures", "2"]);
    let nodes = [f.server.radius, b.radius];
    // A disabled user is refused by both nodes.
    f.server.cli_ok(&["user", "disable", "alice", "--domain", DOMAIN]);
    for node in nodes {
        let passcode = {
            f.server.cli_ok(&["user", "enable", "alice", "--domain", DOMAIN]);
            let p = f.alice.passcode(PIN);
            f.server.cli_ok(&["user", "disable", "alice", "--domain", DOMAIN]);
            p
        };
        assert_eq!(Client::new(node, SECRET).auth("alice", &passcode, Ma::Valid), Answer::Reject);
    }
    f.server.cli_ok(&["user", "enable", "alice", "--domain", DOMAIN]);

    // A removed client is dropped by both nodes within a second.
    f.server.cli_ok(&["client", "remove", "loopback"]);
    for node in nodes {
        let c = Client::new(node, SECRET).with_timeout(Duration::from_millis(500));
        let took = eventually(Duration::from_secs(3), || c.auth("alice", "0", Ma::Valid) == Answer::Dropped);
        assert!(took.expect("dropped") < Duration::from_millis(1500));
    }
    // A new one is answered by both within a second.
    f.server.add_client("again", "auto");
    for node in nodes {
        let c = Client::new(node, SECRET).with_timeout(Duration::from_millis(500));
        let took = eventually(Duration::from_secs(3), || c.auth("alice", "0", Ma::Valid) == Answer::Reject);
        assert!(took.expect("answered") < Duration::from_millis(1500));
    }
}

#[test]
fn wrong_pin_counts_and_replay_protection_hold_across_nodes() {
    let (f, b) = two_nodes(&["--max-pin-failures", "3"]);
    let via_a = RawToken::new(&f.server);
    let rc = via_a.register();
    f.server.validate(&rc, "raw");
    let via_b = via_a.via(&b);

    // Two wrong PINs through A and one through B lock the device everywhere.
    assert_eq!(kind(via_a.passcode("000000").1), ErrorKind::WrongPin);
    assert_eq!(kind(via_a.passcode("000000").1), ErrorKind::WrongPin);
    let (_, third) = via_b.passcode("000000");
    assert_eq!(kind(third), ErrorKind::Locked, "the third wrong PIN, through B, locks");
    assert_eq!(kind(via_a.passcode(PIN).1), ErrorKind::Locked);
    assert_eq!(kind(via_b.passcode(PIN).1), ErrorKind::Locked);
    b.cli_ok(&["user", "unlock", "raw", "--domain", DOMAIN]);
    assert!(matches!(via_a.passcode(PIN).1, Reply::Ok(_)));

    // A request answered by A is a replay for B.
    let (sealed, key) = via_a.seal(Purpose::Passcode, &via_a.passcode_body(PIN, now()));
    assert!(matches!(via_a.send(&sealed, &key).1, Reply::Ok(_)));
    assert_eq!(kind(via_b.send(&sealed, &key).1), ErrorKind::Replay);
}

fn kind<T: std::fmt::Debug>(reply: Reply<T>) -> ErrorKind {
    match reply {
        Reply::Error(e) => e.kind,
        Reply::Ok(v) => panic!("expected a refusal, got {v:?}"),
    }
}

/// A PAM service using Debian's pam_radius_auth with the given RADIUS servers, removed on drop.
struct PamService {
    name: String,
    _dir: tempfile::TempDir,
}

impl PamService {
    fn new(servers: &[std::net::SocketAddr]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("pam_radius_auth.conf");
        // server[:port] secret timeout: one line per node, tried in order.
        let lines: String = servers.iter().map(|s| format!("{s} {SECRET} 2\n")).collect();
        std::fs::write(&conf, lines).unwrap();
        let name = format!("tessera-e2e-{:016x}", rand::random::<u64>());
        let service =
            format!("auth required pam_radius_auth.so conf={}\naccount required pam_permit.so\n", conf.display());
        std::fs::write(format!("/etc/pam.d/{name}"), service)
            .expect("writing /etc/pam.d needs root (the test suite runs as root in CI)");
        Self { name, _dir: dir }
    }

    /// `pamtester SERVICE USER authenticate` with the passcode typed at the prompt.
    fn authenticate(&self, user: &str, passcode: &str) -> bool {
        use std::io::Write;
        let mut child = std::process::Command::new("pamtester")
            .args([&self.name, user, "authenticate"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("pamtester (Debian package pamtester) must be installed; scripts/test installs it");
        child.stdin.take().unwrap().write_all(format!("{passcode}\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap().status.success()
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/etc/pam.d/{}", self.name));
    }
}

#[test]
fn a_pam_client_listing_two_nodes_keeps_authenticating_when_one_is_killed() {
    let (mut f, b) = two_nodes(&[]);
    let pam = PamService::new(&[f.server.radius, b.radius]);
    let passcode = f.alice.passcode(PIN);
    assert!(pam.authenticate("alice", &passcode), "through the first node");
    assert!(!pam.authenticate("alice", &passcode), "a used passcode fails");

    // Node A dies without a chance to clean up; the token asks node B from now on.
    let passcode = {
        let token = crate::helpers::Token::new(&b);
        let rc = token.register("975310");
        b.validate(&rc, "alice");
        token.passcode("975310")
    };
    f.server.kill();
    assert!(pam.authenticate("alice", &passcode), "pam_radius_auth fails over to the second node");
    assert!(!pam.authenticate("alice", "000000"), "and a guess still fails");
}

#[test]
fn console_sign_in_failures_count_across_nodes() {
    use crate::console_support::{ADMIN, Console, PASSWORD, add_admin};
    let a = TestServer::start();
    let b = TestServer::start_on(&a.database);
    add_admin(&a, ADMIN, PASSWORD);
    let (mut via_a, mut via_b) = (Console::new(&a), Console::new(&b));
    // Five wrong passwords spread over both nodes use up the name's allowance everywhere.
    for attempt in 0..5 {
        let c = if attempt % 2 == 0 { &mut via_a } else { &mut via_b };
        assert_eq!(c.login(ADMIN, "not the right password").status, 401, "attempt {attempt}");
    }
    assert_eq!(via_b.login(ADMIN, PASSWORD).status, 429, "node B counts node A's failures");
    assert_eq!(via_a.login(ADMIN, PASSWORD).status, 429);
}
