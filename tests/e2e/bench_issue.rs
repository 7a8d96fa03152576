//! `tessera-bench issue`, the issuance half of the benchmark (scripts/bench): passcodes
//! through a real server's token API after a bare argon2id window, and with
//! `--server-pid` where the machine's time went, read from the server's `/proc` entries.

use std::process::Command;

use crate::helpers::{DOMAIN, TestServer, bin};

/// The value of `key=` in the bench's last stdout line.
fn field(line: &str, key: &str) -> f64 {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {key}= in {line:?}"))
}

#[test]
fn an_issuance_round_says_where_the_servers_cpu_went() {
    let server = TestServer::start_sqlite();
    server.add_domain(&[]);
    let pid = server.pid().to_string();
    let out = Command::new(bin("tessera-bench"))
        .args(["issue", "--token-url", &server.token_url(), "--database", &server.database, "--domain", DOMAIN])
        .args(["--devices", "2", "--concurrency", "2", "--duration", "2", "--rounds", "1", "--baseline-threads", "1"])
        .args(["--server-pid", &pid])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "issue failed:\n{stderr}\nserver log:\n{}", server.log());
    let line = stdout.lines().last().expect("a result line");
    assert!(field(line, "ok") >= 1.0, "no passcode issued: {line}\n{stderr}");
    assert_eq!(field(line, "errors"), 0.0, "{line}\n{stderr}");

    // The server's argon2id threads did the PIN checks: most of the server's CPU, and a
    // verify's worth of it a passcode (the same function the bare window timed).
    let (argon2, rest) = (field(line, "argon2_pct"), field(line, "rest_pct"));
    assert!(argon2 > rest && rest > 0.0, "argon2id {argon2} %, the rest {rest} %: {line}");
    let (per_passcode, bare) = (field(line, "argon2_ms"), field(line, "bare_ms"));
    assert!(
        bare > 0.0 && per_passcode > 0.5 * bare && per_passcode < 3.0 * bare,
        "argon2id {per_passcode} ms a passcode against {bare} ms a bare verify: {line}"
    );
    // Threads' CPU is counted in nanoseconds, the machine's idle time in 10 ms ticks: over a
    // 2 s window the two may disagree by a few per cent (101.4 % seen), not by a thread's
    // share counted twice.
    let parts = argon2 + rest + field(line, "client_pct") + field(line, "idle_pct") + field(line, "steal_pct");
    assert!(parts <= 104.0, "the parts add up to {parts} % of the machine: {line}");
    // The split accounts for the ratio: argon2id's share against the bare window's, times
    // its speed against bare (loose: a 2 s window has few passcodes at its edges).
    let explained = argon2 / field(line, "bare_pct") * bare / per_passcode;
    let ratio = field(line, "ratio");
    assert!(
        (explained / ratio - 1.0).abs() < 0.3,
        "the split explains {explained:.3} of a ratio of {ratio:.3}: {line}"
    );
    assert!(stderr.contains("the rest of the server"), "the per-round lines: {stderr}");
}
