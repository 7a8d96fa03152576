//! The RADIUS listener: our own UDP loop around the `radius` crate's codec, because its
//! server lacks Message-Authenticator and RFC 5080 replay of cached answers (STACK.md).
//!
//! Per datagram: unknown source → silent drop; malformed → drop and log; bad or missing
//! (when required) Message-Authenticator → drop and log; retransmission → cached answer;
//! otherwise PAP User-Name/User-Password → `service::verify::verify_passcode` → answer.

pub mod cache;
pub mod clients;
pub mod packet;

use std::net::SocketAddr;
use std::sync::Arc;

use radius::core::packet::Packet;
use radius::core::rfc2865;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

use crate::domain::MessageAuthenticatorMode;
use crate::service::verify::{Asker, Decision, verify_passcode};
use crate::state::AppState;
use cache::{ReplyCache, Seen};
use clients::{Client, ClientTable};
use packet::{ACCESS_ACCEPT, ACCESS_REJECT, ACCESS_REQUEST, Frame, MAX_PACKET_LEN, STATUS_SERVER};

/// Requests handled at once; beyond this, datagrams are dropped (the client retries).
const MAX_IN_FLIGHT: usize = 1024;

/// Everything the listener needs, shared by its request tasks.
#[derive(Clone)]
pub struct Radius {
    socket: Arc<UdpSocket>,
    state: AppState,
    clients: ClientTable,
    cache: Arc<ReplyCache>,
    permits: Arc<Semaphore>,
}

impl Radius {
    pub fn new(socket: UdpSocket, state: AppState, clients: ClientTable) -> Self {
        Self {
            socket: Arc::new(socket),
            state,
            clients,
            cache: Arc::new(ReplyCache::new(100_000)),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    pub fn cache(&self) -> Arc<ReplyCache> {
        self.cache.clone()
    }

    /// Receives until `stop` resolves, then waits for requests in flight.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        // One octet more than the maximum, to tell an oversized datagram from a full one.
        let mut buf = vec![0u8; MAX_PACKET_LEN + 1];
        loop {
            let (n, src) = tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "RADIUS receive failed");
                        continue;
                    }
                },
                () = &mut stop => break,
            };
            if n > MAX_PACKET_LEN {
                tracing::warn!(%src, "oversized RADIUS datagram dropped");
                continue;
            }
            let Some(client) = self.clients.lookup(src.ip()) else {
                tracing::debug!(%src, "datagram from an address that is no network client dropped");
                continue;
            };
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                tracing::warn!(%src, "RADIUS listener saturated; request dropped");
                continue;
            };
            let datagram = buf[..n].to_vec();
            let this = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                this.handle(&datagram, &client, src).await;
            });
        }
        // Drain: wait until every request task has given back its permit.
        let _ = self.permits.acquire_many(MAX_IN_FLIGHT as u32).await;
    }

    async fn handle(&self, datagram: &[u8], client: &Client, src: SocketAddr) {
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
        if !self.message_authenticator_ok(datagram, &frame, client, src).await {
            return;
        }
        if frame.code == STATUS_SERVER {
            // RFC 5997: a known client probing health gets Access-Accept.
            self.send(packet::response(ACCESS_ACCEPT, &frame, &client.secret), src).await;
            return;
        }
        let answer = match self.cache.check(src, frame.identifier, frame.authenticator) {
            Seen::InFlight => return,
            Seen::Answered(bytes) => {
                tracing::debug!(client = client.name, %src, "retransmission answered from cache");
                self.send(bytes, src).await;
                return;
            }
            Seen::New => self.answer(datagram, &frame, client, src).await,
        };
        self.cache.finish(src, frame.identifier, frame.authenticator, Some(answer.clone()));
        self.send(answer, src).await;
    }

    /// Applies the client's Message-Authenticator mode; false means drop.
    async fn message_authenticator_ok(&self, datagram: &[u8], frame: &Frame, client: &Client, src: SocketAddr) -> bool {
        if frame.message_authenticator.is_some() {
            if !packet::message_authenticator_valid(datagram, frame, &client.secret) {
                tracing::warn!(client = client.name, %src, "wrong Message-Authenticator (bad shared secret or forgery); dropped");
                return false;
            }
            if client.mode == MessageAuthenticatorMode::Auto && !client.ma_seen {
                match self.state.store.mark_message_authenticator_seen(client.id).await {
                    Ok(_) => {
                        self.clients.mark_seen(client.id);
                        tracing::info!(
                            client = client.name,
                            "client sends Message-Authenticator; now required from it"
                        );
                    }
                    Err(e) => {
                        tracing::error!(client = client.name, error = %e, "could not record Message-Authenticator use")
                    }
                }
            }
            return true;
        }
        let required = frame.code == STATUS_SERVER
            || client.mode == MessageAuthenticatorMode::Require
            || (client.mode == MessageAuthenticatorMode::Auto && client.ma_seen);
        if required {
            tracing::warn!(client = client.name, %src, mode = %client.mode, "request without Message-Authenticator dropped");
        }
        !required
    }

    /// Decides an Access-Request and encodes the answer.
    async fn answer(&self, datagram: &[u8], frame: &Frame, client: &Client, src: SocketAddr) -> Vec<u8> {
        let reject = |why: &str| {
            tracing::info!(client = client.name, %src, reason = why, "Access-Reject");
            packet::response(ACCESS_REJECT, frame, &client.secret)
        };
        let Ok(request) = Packet::decode(&datagram[..frame.len], &client.secret) else {
            return reject("undecodable request");
        };
        let Some(Ok(username)) = rfc2865::lookup_user_name(&request) else {
            return reject("no valid User-Name");
        };
        let Some(Ok(password)) = rfc2865::lookup_user_password(&request) else {
            return reject("no PAP User-Password");
        };
        let Ok(passcode) = String::from_utf8(password) else {
            return reject("User-Password is not text (wrong shared secret?)");
        };
        let asker = Asker {
            client_name: &client.name,
            domain_id: client.domain_id,
            domain_code: &client.domain_code,
            source: src,
        };
        let code = match verify_passcode(&self.state, &asker, &username, &passcode).await {
            Ok(Decision::Accept) => ACCESS_ACCEPT,
            Ok(Decision::Reject(_)) => ACCESS_REJECT,
            Err(e) => {
                tracing::error!(client = client.name, error = format!("{e:#}"), "passcode check failed; rejecting");
                ACCESS_REJECT
            }
        };
        packet::response(code, frame, &client.secret)
    }

    async fn send(&self, bytes: Vec<u8>, to: SocketAddr) {
        if let Err(e) = self.socket.send_to(&bytes, to).await {
            tracing::warn!(%to, error = %e, "RADIUS send failed");
        }
    }
}
