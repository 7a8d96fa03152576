//! Single use under concurrency and retransmission (RFC 5080).

use crate::helpers::{Fixture, PIN, SECRET};
use crate::radius_client::{Answer, Client, Ma, access_request, all_at_once, tally};

#[test]
fn fifty_concurrent_requests_with_one_passcode_get_exactly_one_accept() {
    let f = Fixture::new(&[]);
    let passcode = f.alice.passcode(PIN);
    let answers = all_at_once(&[f.server.radius; 50], SECRET, "alice", &passcode);
    assert_eq!(tally(&answers), (1, 49), "{answers:?}");
}

#[test]
fn a_retransmission_gets_the_same_answer_without_consuming_twice() {
    let f = Fixture::new(&[]);
    let passcode = f.alice.passcode(PIN);
    let client = Client::new(f.server.radius, SECRET);
    let request = access_request(42, [7; 16], "alice", &passcode, SECRET, Ma::Valid);
    let (first, first_bytes) = client.exchange(&request).expect("answer");
    let (again, again_bytes) = client.exchange(&request).expect("answer to the retransmission");
    assert_eq!(first, Answer::Accept);
    assert_eq!(again, Answer::Accept);
    assert_eq!(first_bytes, again_bytes, "the cached answer is sent again");
    // A new request (new authenticator) with the same passcode is a second use.
    assert_eq!(client.auth("alice", &passcode, Ma::Valid), Answer::Reject);
}
