//! RFC 5080 duplicate detection: a retransmission (same source, Identifier and Request
//! Authenticator) gets the first answer again and never consumes a passcode twice.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an answer is kept for retransmissions (clients retry within a few seconds).
pub const KEEP: Duration = Duration::from_secs(30);

type Key = (SocketAddr, u8, [u8; 16]);

enum Slot {
    /// The first copy is being answered; later copies are dropped (the client retries).
    InFlight(Instant),
    Done(Instant, Vec<u8>),
}

/// What to do with a request.
pub enum Seen {
    /// First time: answer it, then call [`ReplyCache::finish`].
    New,
    /// Still being answered: drop this copy.
    InFlight,
    /// Answered before: send these bytes again.
    Answered(Vec<u8>),
}

/// The reply cache, bounded in size.
pub struct ReplyCache {
    entries: Mutex<HashMap<Key, Slot>>,
    max: usize,
}

impl ReplyCache {
    pub fn new(max: usize) -> Self {
        Self { entries: Mutex::new(HashMap::new()), max }
    }

    /// Looks a request up, claiming it when new.
    pub fn check(&self, src: SocketAddr, id: u8, auth: [u8; 16]) -> Seen {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&(src, id, auth)) {
            Some(Slot::InFlight(_)) => Seen::InFlight,
            Some(Slot::Done(_, bytes)) => Seen::Answered(bytes.clone()),
            None => {
                if map.len() >= self.max {
                    Self::purge(&mut map);
                }
                map.insert((src, id, auth), Slot::InFlight(Instant::now()));
                Seen::New
            }
        }
    }

    /// Stores the answer to a claimed request (or releases the claim when `None`).
    pub fn finish(&self, src: SocketAddr, id: u8, auth: [u8; 16], answer: Option<Vec<u8>>) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match answer {
            Some(bytes) => map.insert((src, id, auth), Slot::Done(Instant::now(), bytes)),
            None => map.remove(&(src, id, auth)),
        };
    }

    /// Drops answers older than [`KEEP`].
    pub fn expire(&self) {
        Self::purge(&mut self.entries.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn purge(map: &mut HashMap<Key, Slot>) {
        map.retain(|_, slot| match slot {
            Slot::InFlight(at) | Slot::Done(at, _) => at.elapsed() < KEEP,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retransmission_gets_the_first_answer() {
        let c = ReplyCache::new(10);
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert!(matches!(c.check(src, 1, [0; 16]), Seen::New));
        assert!(matches!(c.check(src, 1, [0; 16]), Seen::InFlight));
        c.finish(src, 1, [0; 16], Some(vec![2, 1]));
        assert!(matches!(c.check(src, 1, [0; 16]), Seen::Answered(b) if b == vec![2, 1]));
        assert!(matches!(c.check(src, 2, [0; 16]), Seen::New));
        assert!(matches!(c.check(src, 1, [1; 16]), Seen::New));
        let other: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        assert!(matches!(c.check(other, 1, [0; 16]), Seen::New));
    }
}
