//! `tessera-server check`: a clear report, exit 0 when all is well and 1 naming what is wrong.

use std::process::{Command, Output};

use crate::helpers::{Fixture, bin};

fn check(args: &[&str]) -> (Option<i32>, String) {
    let out: Output = Command::new(bin("tessera-server")).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

#[test]
fn check_reports_a_good_database_as_ok() {
    let f = Fixture::new(&[]);
    let (code, text) = check(&["--database", &f.server.database, "check"]);
    assert_eq!(code, Some(0), "{text}");
    for expected in
        ["ok    migrations current", "ok    domain 127000000001", "server key loads", "ok    client \"loopback\""]
    {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    assert!(!text.contains(crate::helpers::SECRET), "never prints a shared secret");
}

#[test]
fn check_names_a_missing_or_unreadable_database() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("nope.db").display());
    let (code, text) = check(&["--database", &missing, "check"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAIL") && text.contains("does not exist"), "{text}");
    assert!(!dir.path().join("nope.db").exists(), "check creates nothing");

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x42u8; 8192]).unwrap();
    let (code, text) = check(&["--database", &format!("sqlite://{}", garbage.display()), "check"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAIL") && text.contains("not a database"), "{text}");
}

#[test]
fn check_names_a_bad_configuration_key_and_a_listener_in_use() {
    let f = Fixture::new(&[]);
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "radius_lisen = \"127.0.0.1:1812\"\n").unwrap();
    let (code, text) = check(&["--database", &f.server.database, "--config", bad.to_str().unwrap(), "check"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAIL") && text.contains("unknown field") && text.contains("radius_lisen"), "{text}");

    // The running server holds its RADIUS port: `check --bind` says so.
    let busy = dir.path().join("busy.toml");
    let config = format!(
        "radius_listen = \"{}\"\ntoken_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n",
        f.server.radius
    );
    std::fs::write(&busy, config).unwrap();
    let (code, text) =
        check(&["--database", &f.server.database, "--config", busy.to_str().unwrap(), "check", "--bind"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains(&format!("FAIL  RADIUS address {}/udp", f.server.radius)), "{text}");
    assert!(text.contains("ok    token API address 127.0.0.1:0 can be bound"), "{text}");
}
