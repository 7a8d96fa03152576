//! The RADIUS listener: our own UDP loop around the `radius` crate's codec, because its
//! server lacks Message-Authenticator and RFC 5080 replay of cached answers (STACK.md).
//!
//! Per datagram: unknown source → silent drop; client over its in-flight share
//! ([`MAX_IN_FLIGHT_PER_CLIENT`]) → drop, so one client's flood cannot starve others;
//! malformed → drop and log; bad or missing (when required) Message-Authenticator → drop
//! and log; retransmission → cached answer; otherwise PAP User-Name/User-Password →
//! `service::verify::verify` (bounded by a deadline) → answer.

pub mod cache;
pub mod clients;
pub mod outbox;
pub mod packet;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::MessageAuthenticatorMode;
use crate::service::verify::{Decision, Request, verify};
use crate::state::AppState;
use cache::{ReplyCache, Seen};
use clients::{Client, ClientTable};
use packet::{ACCESS_ACCEPT, ACCESS_REJECT, ACCESS_REQUEST, Frame, MAX_PACKET_LEN, Response, STATUS_SERVER};

/// Longest a passcode check may take before the request is rejected (clients wait 3-60 s).
const VERIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Requests queued or handled at once; beyond this, datagrams are dropped (the client
/// retries).
pub const MAX_IN_FLIGHT: usize = 1024;
/// Requests of one network client queued or handled at once: a flood from one client fills
/// its own share and is dropped there, leaving the rest of [`MAX_IN_FLIGHT`] to the others.
/// A VPN concentrator or a directory in front of many users keeps hundreds outstanding.
pub const MAX_IN_FLIGHT_PER_CLIENT: usize = 256;

/// A request read and admitted, waiting to be handled; it holds its permits.
struct Queued {
    datagram: Vec<u8>,
    client: Arc<Client>,
    src: SocketAddr,
    permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// One client's share of the listener.
struct Share {
    permits: Arc<Semaphore>,
    dropped: AtomicU64,
}

/// Everything the listener needs; cheap to clone.
#[derive(Clone)]
pub struct Radius {
    socket: Arc<UdpSocket>,
    /// The same socket, for answers sent from other threads (the SQLite engine's).
    sender: Arc<std::net::UdpSocket>,
    state: AppState,
    clients: ClientTable,
    cache: Arc<ReplyCache>,
    permits: Arc<Semaphore>,
    shares: Arc<Mutex<HashMap<i64, Arc<Share>>>>,
}

/// Both possible answers to a request, signed before it is queued so that the thread that
/// decides it (the SQLite engine's, the busiest) only picks one and sends it. It holds the
/// request's permits, given back when the answer has been sent.
struct Answer {
    accept: Response,
    reject: Response,
    frame: Frame,
    client: Arc<Client>,
    src: SocketAddr,
    sender: Arc<std::net::UdpSocket>,
    cache: Arc<ReplyCache>,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl Answer {
    /// Sends the Access-Accept or the Access-Reject and keeps it for retransmissions.
    fn send(self, accept: bool) {
        let bytes = if accept { self.accept } else { self.reject };
        self.cache.finish(self.src, self.frame.identifier, self.frame.authenticator, Some(bytes));
        outbox::send(&self.sender, &bytes, self.src);
    }
}

impl Radius {
    pub fn new(socket: UdpSocket, state: AppState, clients: ClientTable) -> std::io::Result<Self> {
        let sender = Arc::new(socket2::SockRef::from(&socket).try_clone()?.into());
        Ok(Self {
            socket: Arc::new(socket),
            sender,
            state,
            clients,
            cache: Arc::new(ReplyCache::new(100_000)),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            shares: Arc::default(),
        })
    }

    pub fn cache(&self) -> Arc<ReplyCache> {
        self.cache.clone()
    }

    /// Receives until `stop` resolves, then answers what it has queued and waits for
    /// requests in flight. Each datagram is checked here; its decision is queued and
    /// answered by [`verify`]'s callback, so no task is spawned per request.
    ///
    /// Reading runs ahead of handling as the queue grows: before each request is handled,
    /// up to 2 + 1/8 of the queue's length more datagrams are read, each only matched to
    /// its client and that client's share. A client that sends faster than it is answered
    /// fills its share, and the rest of its datagrams then cost one receive each, up to 34
    /// per request handled. When each datagram was handled as soon as it was read, a flood
    /// was read only as fast as it was answered: the kernel's receive queue stayed full and
    /// dropped another client's datagrams before the server saw them (e2e test `throttle`,
    /// 1 run in 8). At ordinary load the queue stays short and a request is handled right
    /// after it is read, as before.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        // One octet more than the maximum, to tell an oversized datagram from a full one.
        let mut buf = vec![0u8; MAX_PACKET_LEN + 1];
        let mut queue = VecDeque::new();
        loop {
            if queue.is_empty() {
                tokio::select! {
                    // Fails only when the runtime's reactor is gone: nothing more will come.
                    r = self.socket.readable() => if let Err(e) = r {
                        tracing::error!(error = %e, "RADIUS socket can no longer be read; listener stopped");
                        break;
                    },
                    () = &mut stop => break,
                }
            } else {
                // Busy: stop is still heard, and other tasks get their turn.
                tokio::select! {
                    biased;
                    () = &mut stop => break,
                    () = tokio::task::consume_budget() => {}
                }
            }
            let read_ahead = 2 + queue.len() / 8;
            self.receive(&mut buf, &mut queue, read_ahead);
            if let Some(q) = queue.pop_front() {
                self.handle(&q.datagram, q.client, q.src, q.permits);
            }
        }
        for q in queue {
            self.handle(&q.datagram, q.client, q.src, q.permits);
        }
        // Drain: wait until every request in flight has given back its permit.
        let _ = self.permits.acquire_many(MAX_IN_FLIGHT as u32).await;
    }

    /// Reads what the socket holds, up to `at_most` datagrams, and queues those their
    /// client's share and the listener's bound admit; the rest is dropped.
    fn receive(&self, buf: &mut [u8], queue: &mut VecDeque<Queued>, at_most: usize) {
        for _ in 0..at_most {
            let (n, src) = match self.socket.try_recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "RADIUS receive failed");
                    continue;
                }
            };
            if n > MAX_PACKET_LEN {
                tracing::warn!(%src, "oversized RADIUS datagram dropped");
                continue;
            }
            let Some(client) = self.clients.lookup(src.ip()) else {
                tracing::debug!(%src, "datagram from an address that is no network client dropped");
                continue;
            };
            let share = self.share(client.id);
            let Ok(client_permit) = share.permits.clone().try_acquire_owned() else {
                // Logged on the first drop and every 1000th, so a flood cannot flood the log.
                let n = share.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(1000) {
                    tracing::warn!(client = client.name, %src, dropped = n + 1, limit = MAX_IN_FLIGHT_PER_CLIENT,
                        "client has too many requests in flight; request dropped");
                }
                continue;
            };
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                tracing::warn!(%src, "RADIUS listener saturated; request dropped");
                continue;
            };
            queue.push_back(Queued { datagram: buf[..n].to_vec(), client, src, permits: (permit, client_permit) });
        }
    }

    /// The in-flight share of a client, created on its first request.
    fn share(&self, client_id: i64) -> Arc<Share> {
        let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        shares
            .entry(client_id)
            .or_insert_with(|| {
                Arc::new(Share {
                    permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_CLIENT)),
                    dropped: AtomicU64::new(0),
                })
            })
            .clone()
    }

    fn handle(
        &self,
        datagram: &[u8],
        client: Arc<Client>,
        src: SocketAddr,
        permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    ) {
        let frame = match packet::frame(datagram) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(client = client.name, %src, "malformed RADIUS packet dropped: {e}");
                return;
            }
        };
        if frame.code != ACCESS_REQUEST && frame.code != STATUS_SERVER {
            tracing::debug!(client = client.name, code = frame.code, "unsupported RADIUS code dropped");
            return;
        }
        match self.message_authenticator(datagram, &frame, &client, src) {
            Checked::Drop => {}
            Checked::Pass => self.decide(datagram, frame, client, src, permits),
            Checked::FirstFromClient => {
                // Recorded before this request is answered, so that from its answer on a
                // request without Message-Authenticator is dropped. Rare: the client table
                // has it from then on.
                let (this, datagram) = (self.clone(), datagram.to_vec());
                tokio::spawn(async move {
                    this.remember_message_authenticator(&client).await;
                    this.decide(&datagram, frame, client, src, permits);
                });
            }
        }
    }

    /// Answers a checked request: Status-Server at once, a retransmission from the cache,
    /// an Access-Request once [`verify`] has decided it.
    fn decide(
        &self,
        datagram: &[u8],
        frame: Frame,
        client: Arc<Client>,
        src: SocketAddr,
        permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    ) {
        if frame.code == STATUS_SERVER {
            // RFC 5997: a known client probing health gets Access-Accept.
            outbox::send_one(&self.sender, &packet::response(ACCESS_ACCEPT, &frame, &client.secret), src);
            return;
        }
        match self.cache.check(src, frame.identifier, frame.authenticator) {
            Seen::InFlight => return,
            Seen::Answered(bytes) => {
                tracing::debug!(client = client.name, %src, "retransmission answered from cache");
                outbox::send_one(&self.sender, &bytes, src);
                return;
            }
            Seen::New => {}
        }
        let pap = packet::decode_pap(datagram, &frame, &client.secret);
        let answer = Answer {
            accept: packet::response(ACCESS_ACCEPT, &frame, &client.secret),
            reject: packet::response(ACCESS_REJECT, &frame, &client.secret),
            frame,
            client,
            src,
            sender: self.sender.clone(),
            cache: self.cache.clone(),
            _permits: permits,
        };
        let (username, passcode) = match pap {
            Ok(pap) => pap,
            Err(why) => {
                tracing::info!(client = answer.client.name, %src, reason = why, "Access-Reject");
                return answer.send(false);
            }
        };
        let request = Request {
            client_name: answer.client.name.clone(),
            domain_id: answer.client.domain_id,
            domain_code: answer.client.domain_code.clone(),
            source: src.ip(),
            username,
            passcode: zeroize::Zeroizing::new(passcode),
        };
        // The argon2id threads leave a core to a busy RADIUS path (crypto_pool::RadiusLoad).
        self.state.radius_load.request();
        // Bounded: a client gets a Reject in time rather than no answer at all.
        verify(&self.state, request, Instant::now() + VERIFY_TIMEOUT, move |_, decision| {
            let accept = match decision {
                Ok(Decision::Accept) => true,
                Ok(Decision::Reject(_)) => false,
                Err(e) => {
                    let what = if crate::db::is_unavailable(&e) {
                        "database unavailable"
                    } else if crate::db::is_too_slow(&e) {
                        "database too slow"
                    } else {
                        "passcode check failed"
                    };
                    tracing::error!(client = answer.client.name, error = format!("{e:#}"), "{what}; Access-Reject");
                    false
                }
            };
            answer.send(accept);
        });
    }

    /// Applies the client's Message-Authenticator mode.
    fn message_authenticator(&self, datagram: &[u8], frame: &Frame, client: &Client, src: SocketAddr) -> Checked {
        if frame.message_authenticator.is_some() {
            if !packet::message_authenticator_valid(datagram, frame, &client.secret) {
                tracing::warn!(client = client.name, %src, "wrong Message-Authenticator (bad shared secret or forgery); dropped");
                return Checked::Drop;
            }
            if client.mode == MessageAuthenticatorMode::Auto && !client.ma_seen {
                return Checked::FirstFromClient;
            }
            return Checked::Pass;
        }
        let required = frame.code == STATUS_SERVER
            || client.mode == MessageAuthenticatorMode::Require
            || (client.mode == MessageAuthenticatorMode::Auto && client.ma_seen);
        if required {
            tracing::warn!(client = client.name, %src, mode = %client.mode, "request without Message-Authenticator dropped");
            return Checked::Drop;
        }
        Checked::Pass
    }

    /// Records that a client in `auto` mode sends Message-Authenticator, so that it is
    /// required from it from now on.
    async fn remember_message_authenticator(&self, client: &Client) {
        match self.state.store.mark_message_authenticator_seen(client.id).await {
            Ok(_) => {
                self.clients.mark_seen(client.id);
                tracing::info!(client = client.name, "client sends Message-Authenticator; now required from it");
            }
            Err(e) => tracing::error!(client = client.name, error = %e, "could not record Message-Authenticator use"),
        }
    }
}

/// What the Message-Authenticator check made of a request.
enum Checked {
    Drop,
    Pass,
    /// Valid, and the first from a client in `auto` mode: to be recorded.
    FirstFromClient,
}
