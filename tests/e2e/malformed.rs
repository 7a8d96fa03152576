//! Malformed RADIUS datagrams are dropped and change nothing; the listener keeps serving.

use std::time::Duration;

use crate::helpers::{Fixture, PIN, SECRET};
use crate::radius_client::{Answer, Client, Ma, access_request};

fn valid(passcode: &str) -> Vec<u8> {
    access_request(1, [5; 16], "alice", passcode, SECRET, Ma::Valid)
}

#[test]
fn truncated_oversized_and_badly_framed_packets_are_dropped_and_the_server_keeps_serving() {
    let f = Fixture::new(&[]);
    let c = Client::new(f.server.radius, SECRET).with_timeout(Duration::from_millis(500));
    let passcode = f.alice.passcode(PIN);
    let good = valid(&passcode);

    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("shorter than a header", good[..15].to_vec()),
        ("length field beyond the datagram", good[..good.len() - 4].to_vec()),
    ];
    let mut bad_len = good.clone();
    bad_len[2..4].copy_from_slice(&19u16.to_be_bytes());
    cases.push(("length field below the header", bad_len));
    let mut zero_attr = good.clone();
    zero_attr[21] = 0;
    cases.push(("attribute length 0", zero_attr));
    let mut one_attr = good.clone();
    one_attr[21] = 1;
    cases.push(("attribute length 1", one_attr));
    let mut long_attr = good.clone();
    long_attr[21] = 250;
    cases.push(("attribute overruns the packet", long_attr));
    let mut oversized = good.clone();
    oversized.resize(5000, 0);
    oversized[2..4].copy_from_slice(&5000u16.to_be_bytes());
    cases.push(("oversized", oversized));
    let mut huge_datagram = good.clone();
    huge_datagram.resize(9000, 0);
    cases.push(("datagram larger than 4096 octets", huge_datagram));
    cases.push(("garbage", (0..200u8).map(|i| i.wrapping_mul(37)).collect()));

    for (what, bytes) in &cases {
        assert!(c.exchange(bytes).is_none(), "{what}: must be dropped");
    }
    // The listener is alive and nothing was consumed.
    let (answer, _) = c.exchange(&good).expect("the server still answers");
    assert_eq!(answer, Answer::Accept);
}

#[test]
fn a_request_without_password_or_with_garbage_password_is_rejected() {
    let f = Fixture::new(&[]);
    let c = Client::new(f.server.radius, SECRET);
    assert_eq!(c.auth("alice", "", Ma::Valid), Answer::Reject);
    assert_eq!(c.auth("alice", "not-digits-at-all", Ma::Valid), Answer::Reject);
    let long_user = "u".repeat(200);
    assert_eq!(c.auth(&long_user, "123456", Ma::Valid), Answer::Reject);
}
