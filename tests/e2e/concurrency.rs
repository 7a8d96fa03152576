//! Single use under concurrency and retransmission (RFC 5080).

use crate::helpers::{Fixture, PIN, SECRET, engine_is_postgres};
use crate::radius_client::{
    ACCESS_ACCEPT, ACCESS_REJECT, Answer, Client, Ma, access_request, all_at_once, tally, verify_response,
};

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

#[test]
fn many_requests_from_one_socket_get_one_verified_answer_each() {
    // A proxy or VPN concentrator keeps many requests outstanding on one socket; the server
    // sends a batch's answers to one address together (one segmented send).
    let f = Fixture::new(&[]);
    let passcode = f.alice.passcode(PIN);
    let client = Client::new(f.server.radius, SECRET);
    let requests: Vec<Vec<u8>> =
        (0..=199u8).map(|id| access_request(id, rand::random(), "alice", &passcode, SECRET, Ma::Valid)).collect();
    for request in &requests {
        client.socket.send_to(request, f.server.radius).unwrap();
    }
    let mut answers = vec![None; requests.len()];
    let mut buf = [0u8; 4096];
    while answers.iter().any(Option::is_none) {
        let n = client.socket.recv(&mut buf).expect("every request answered");
        let id = usize::from(buf[1]);
        assert!(answers[id].is_none(), "request {id} answered twice");
        verify_response(&buf[..n], &requests[id], SECRET);
        answers[id] = Some(match buf[0] {
            ACCESS_ACCEPT => Answer::Accept,
            ACCESS_REJECT => Answer::Reject,
            other => panic!("unexpected RADIUS code {other}"),
        });
    }
    let answers: Vec<Answer> = answers.into_iter().flatten().collect();
    assert_eq!(tally(&answers), (1, 199), "one use of the passcode");
    assert!(!f.server.log().contains("segmentation refused"), "answers went out in segmented sends");
}

/// The nice value of each of the server's threads named `name`.
fn nice_of_threads(pid: u32, name: &str) -> Vec<i64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("stat")).ok())
        .filter(|stat| stat[stat.find('(').unwrap() + 1..stat.rfind(')').unwrap()] == *name)
        // After the name: state is field 3, nice field 19.
        .map(|stat| stat[stat.rfind(')').unwrap() + 2..].split(' ').nth(16).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn on_sqlite_the_radius_thread_runs_three_nice_steps_below_the_server_so_that_the_engine_gets_a_core_first() {
    let f = Fixture::new(&[]);
    let main = nice_of_threads(f.server.pid(), "tessera-server");
    let radius = nice_of_threads(f.server.pid(), "tessera-radius");
    if engine_is_postgres() {
        // No engine: RADIUS is served on the runtime's threads, at the server's priority.
        assert_eq!(radius, Vec::<i64>::new());
        return;
    }
    assert_eq!(radius.len(), 1, "{radius:?}");
    assert_eq!(radius[0], (main[0] + 3).min(19), "main thread {main:?}");
}
