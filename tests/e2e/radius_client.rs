//! A small RADIUS client for tests that need exact control over packets (Message-Authenticator
//! or not, retransmissions, malformed datagrams) and that check the server's authenticators.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};

pub const ACCESS_REQUEST: u8 = 1;
pub const ACCESS_ACCEPT: u8 = 2;
pub const ACCESS_REJECT: u8 = 3;
pub const STATUS_SERVER: u8 = 12;

/// What came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Accept,
    Reject,
    /// Nothing within the timeout: the server dropped the request.
    Dropped,
}

/// How to build a request.
#[derive(Clone, Copy, Debug)]
pub enum Ma {
    /// No Message-Authenticator.
    None,
    /// A correct one.
    Valid,
    /// One computed with the wrong key.
    Wrong,
}

fn hmac_md5(key: &[u8], data: &[u8]) -> [u8; 16] {
    let mut m = <Hmac<Md5> as KeyInit>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().into()
}

/// An Access-Request with PAP (RFC 2865 §5.2) User-Password.
pub fn access_request(id: u8, auth: [u8; 16], user: &str, password: &str, secret: &str, ma: Ma) -> Vec<u8> {
    let mut p = vec![ACCESS_REQUEST, id, 0, 0];
    p.extend_from_slice(&auth);
    p.push(1);
    p.push((2 + user.len()) as u8);
    p.extend_from_slice(user.as_bytes());
    let mut pw = password.as_bytes().to_vec();
    pw.resize(pw.len().div_ceil(16).max(1) * 16, 0);
    let mut prev = auth.to_vec();
    let mut enc = Vec::new();
    for chunk in pw.chunks(16) {
        let mut h = Md5::new();
        h.update(secret.as_bytes());
        h.update(&prev);
        let b: [u8; 16] = h.finalize().into();
        let c: Vec<u8> = chunk.iter().zip(b.iter()).map(|(x, y)| x ^ y).collect();
        enc.extend_from_slice(&c);
        prev = c;
    }
    p.push(2);
    p.push((2 + enc.len()) as u8);
    p.extend_from_slice(&enc);
    add_message_authenticator(&mut p, secret, ma);
    p
}

/// A Status-Server probe (RFC 5997).
pub fn status_server(id: u8, auth: [u8; 16], secret: &str, ma: Ma) -> Vec<u8> {
    let mut p = vec![STATUS_SERVER, id, 0, 0];
    p.extend_from_slice(&auth);
    add_message_authenticator(&mut p, secret, ma);
    p
}

fn add_message_authenticator(p: &mut Vec<u8>, secret: &str, ma: Ma) {
    let at = p.len();
    if !matches!(ma, Ma::None) {
        p.extend_from_slice(&[80, 18]);
        p.extend_from_slice(&[0; 16]);
    }
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    match ma {
        Ma::None => {}
        Ma::Valid => {
            let v = hmac_md5(secret.as_bytes(), p);
            p[at + 2..at + 18].copy_from_slice(&v);
        }
        Ma::Wrong => {
            let v = hmac_md5(b"not-the-secret", p);
            p[at + 2..at + 18].copy_from_slice(&v);
        }
    }
}

/// A client socket bound to loopback.
pub struct Client {
    pub socket: UdpSocket,
    server: SocketAddr,
    secret: String,
}

impl Client {
    pub fn new(server: SocketAddr, secret: &str) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Generous: an answer may be slow on a loaded 2-core machine; drop checks set their own.
        socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        Self { socket, server, secret: secret.to_owned() }
    }

    /// A client whose socket is bound to another loopback address (Linux routes all of
    /// 127.0.0.0/8 to `lo`), to play a second network client.
    pub fn bound(local: std::net::IpAddr, server: SocketAddr, secret: &str) -> Self {
        let socket = UdpSocket::bind(SocketAddr::new(local, 0)).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        Self { socket, server, secret: secret.to_owned() }
    }

    pub fn with_timeout(self, t: Duration) -> Self {
        self.socket.set_read_timeout(Some(t)).unwrap();
        self
    }

    /// Sends a PAP request and waits for the matching, verified answer.
    pub fn auth(&self, user: &str, password: &str, ma: Ma) -> Answer {
        let auth: [u8; 16] = rand::random();
        let id: u8 = rand::random();
        let req = access_request(id, auth, user, password, &self.secret, ma);
        self.exchange(&req).map(|r| r.0).unwrap_or(Answer::Dropped)
    }

    /// Sends raw bytes; returns the verified answer and its bytes, or `None` on timeout.
    pub fn exchange(&self, request: &[u8]) -> Option<(Answer, Vec<u8>)> {
        self.socket.send_to(request, self.server).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            let n = match self.socket.recv(&mut buf) {
                Ok(n) => n,
                Err(_) => return None,
            };
            let resp = &buf[..n];
            if resp.len() < 20 || resp[1] != request[1] {
                continue;
            }
            verify_response(resp, request, &self.secret);
            let answer = match resp[0] {
                ACCESS_ACCEPT => Answer::Accept,
                ACCESS_REJECT => Answer::Reject,
                other => panic!("unexpected RADIUS code {other}"),
            };
            return Some((answer, resp.to_vec()));
        }
    }
}

/// Sends `user`/`password` from `nodes.len()` threads at once, each with its own socket (so
/// none is a retransmission), request `i` to `nodes[i]`; returns every answer.
pub fn all_at_once(nodes: &[SocketAddr], secret: &str, user: &str, password: &str) -> Vec<Answer> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(nodes.len()));
    let handles: Vec<_> = nodes
        .iter()
        .map(|&node| {
            let (barrier, secret, user, password) =
                (barrier.clone(), secret.to_owned(), user.to_owned(), password.to_owned());
            std::thread::spawn(move || {
                let client = Client::new(node, &secret);
                barrier.wait();
                client.auth(&user, &password, Ma::Valid)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// How many of `answers` are Accept and how many Reject.
pub fn tally(answers: &[Answer]) -> (usize, usize) {
    let count = |a: Answer| answers.iter().filter(|x| **x == a).count();
    (count(Answer::Accept), count(Answer::Reject))
}

/// Checks the Response Authenticator and that Message-Authenticator comes first and is right.
pub fn verify_response(resp: &[u8], request: &[u8], secret: &str) {
    let len = u16::from_be_bytes([resp[2], resp[3]]) as usize;
    assert_eq!(len, resp.len(), "length field");
    let mut check = resp.to_vec();
    check[4..20].copy_from_slice(&request[4..20]);
    let mut h = Md5::new();
    h.update(&check);
    h.update(secret.as_bytes());
    let expected: [u8; 16] = h.finalize().into();
    assert_eq!(&resp[4..20], &expected, "Response Authenticator");
    assert_eq!(resp[20], 80, "Message-Authenticator must be the first attribute");
    assert_eq!(resp[21], 18);
    let mut zeroed = check.clone();
    zeroed[22..38].fill(0);
    assert_eq!(&resp[22..38], &hmac_md5(secret.as_bytes(), &zeroed), "Message-Authenticator");
}

/// A thread sending Access-Requests for `user` with a wrong `password` (no
/// Message-Authenticator) from a socket of its own, as fast as it can, until stopped.
pub struct Flood {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Flood {
    pub fn start(server: SocketAddr, secret: &'static str, user: &'static str, password: &'static str) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut sent = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let req = access_request(sent as u8, rand::random(), user, password, secret, Ma::None);
                let _ = socket.send_to(&req, server);
                sent += 1;
            }
            sent
        });
        Self { stop, thread: Some(thread) }
    }

    /// Stops sending; how many requests were sent.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap())
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
