//! Single use under concurrency and retransmission (RFC 5080).

use std::sync::{Arc, Barrier};

use crate::helpers::{Fixture, PIN, SECRET};
use crate::radius_client::{Answer, Client, Ma, access_request};

#[test]
fn fifty_concurrent_requests_with_one_passcode_get_exactly_one_accept() {
    let f = Fixture::new(&[]);
    let passcode = f.alice.passcode(PIN);
    let barrier = Arc::new(Barrier::new(50));
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let (barrier, passcode, radius) = (barrier.clone(), passcode.clone(), f.server.radius);
            std::thread::spawn(move || {
                // One socket each: distinct source ports, so none is a retransmission.
                let client = Client::new(radius, SECRET);
                barrier.wait();
                client.auth("alice", &passcode, Ma::Valid)
            })
        })
        .collect();
    let answers: Vec<Answer> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let accepts = answers.iter().filter(|a| **a == Answer::Accept).count();
    let rejects = answers.iter().filter(|a| **a == Answer::Reject).count();
    assert_eq!((accepts, rejects), (1, 49), "{answers:?}");
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
