//! Losing PostgreSQL: requests are refused quickly with a clear log line, and the node
//! reconnects by itself when the database is back. Runs on PostgreSQL in every run of the
//! suite (it needs TESSERA_TEST_DATABASE_URL, which scripts/test always provides).

use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

use crate::helpers::{PIN, PgDatabase, SECRET, TestServer, Token, eventually};
use crate::pg_proxy::Proxy;
use crate::radius_client::{Answer, Client, Ma};

/// `postgres://user@HOST:PORT/db` → (`HOST:PORT`, the URL with `replacement` as host:port).
fn reroute(url: &str, replacement: &str) -> (std::net::SocketAddr, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, rest) = rest.split_once('@').unwrap();
    let (hostport, path) = rest.split_once('/').unwrap();
    let target = hostport.to_socket_addrs().unwrap().next().unwrap();
    (target, format!("{scheme}://{userinfo}@{replacement}/{path}"))
}

#[test]
fn losing_postgresql_rejects_quickly_and_the_node_reconnects_by_itself() {
    let pg = PgDatabase::create();
    let (target, _) = reroute(&pg.url, "x");
    let proxy = Proxy::start(target);
    let (_, url) = reroute(&pg.url, &proxy.addr.to_string());
    let server = TestServer::start_on(&url);
    server.add_domain(&[]);
    server.add_client("loopback", "auto");
    let alice = Token::new(&server);
    let rc = alice.register(PIN);
    server.validate(&rc, "alice");
    let client = Client::new(server.radius, SECRET).with_timeout(Duration::from_secs(10));
    let probe = Client::new(server.radius, SECRET).with_timeout(Duration::from_millis(300));
    eventually(Duration::from_secs(5), || probe.auth("nobody", "0", Ma::Valid) != Answer::Dropped)
        .expect("client live");
    let passcode = alice.passcode(PIN);

    proxy.set_up(false);
    let start = Instant::now();
    assert_eq!(client.auth("alice", &passcode, Ma::Valid), Answer::Reject, "refused, not hung");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    assert!(server.log().contains("database unavailable"), "a clear log line:\n{}", server.log());

    proxy.set_up(true);
    // The same passcode was not consumed by the failed attempt; it works once the node is back.
    let back = eventually(Duration::from_secs(15), || client.auth("alice", &passcode, Ma::Valid) == Answer::Accept);
    assert!(back.is_some(), "the node reconnected by itself");
}
