//! `tessera-bench seed`, whose passcodes the benchmark's Accepts consume (scripts/bench):
//! what its batched path writes to a SQLite file, a real server accepts, once each.

use std::process::Command;

use crate::helpers::{DOMAIN, RadclientAnswer, TestServer, bin, radclient};

#[test]
fn seeded_passcodes_are_accepted_once_by_the_server() {
    let mut server = TestServer::start_sqlite();
    server.add_domain(&[]);
    server.add_client("loopback", "auto");
    // Seeded with no server running, as the benchmark does; three batches of at most 10.
    server.kill();
    let file = server.dir.path().join("seeded.txt");
    let out = Command::new(bin("tessera-bench"))
        .args(["seed", "--database", &server.database, "--domain", DOMAIN, "--users", "25", "--batch", "10"])
        .arg("--out")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "seed failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&file).unwrap();
    let mut seeded: Vec<(&str, &str)> =
        text.lines().map(|l| l.split_once(' ').expect("`user passcode` lines")).collect();
    assert_eq!(seeded.len(), 25, "one line per user:\n{text}");
    seeded.sort();
    seeded.dedup_by_key(|(user, _)| *user);
    assert_eq!(seeded.len(), 25, "each user once:\n{text}");

    server.start_again();
    let (first, last) = (seeded[0], seeded[24]);
    assert_eq!(radclient(server.radius, first.0, first.1, true), RadclientAnswer::Accept);
    assert_eq!(radclient(server.radius, last.0, last.1, true), RadclientAnswer::Accept);
    // Single use, and a passcode is one user's only.
    assert_eq!(radclient(server.radius, first.0, first.1, true), RadclientAnswer::Reject);
    let (other, code) = seeded[12];
    assert_eq!(
        radclient(server.radius, first.0, code, true),
        RadclientAnswer::Reject,
        "{other}'s passcode for {}",
        first.0
    );
    assert_eq!(radclient(server.radius, other, code, true), RadclientAnswer::Accept);
}
