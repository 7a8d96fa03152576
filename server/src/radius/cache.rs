//! RFC 5080 duplicate detection: a retransmission (same source, Identifier and Request
//! Authenticator) gets the first answer again and never consumes a passcode twice.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::packet::Response;

/// How long an answer is kept for retransmissions (clients retry within a few seconds).
pub const KEEP: Duration = Duration::from_secs(30);

/// A client's socket and Identifier. A request with the same key and another Request
/// Authenticator is a new request: the client has reused the Identifier, so it no longer
/// waits for the old one (RFC 5080 2.2.2). Keying by Identifier rather than by authenticator
/// keeps the cache at most 256 entries per client socket.
type Key = (SocketAddr, u8);

struct Slot {
    authenticator: [u8; 16],
    at: Instant,
    /// `None` while the first copy is being answered; later copies are dropped (the client
    /// retries).
    answer: Option<Response>,
}

/// What to do with a request.
pub enum Seen {
    /// First time: answer it, then call [`ReplyCache::finish`].
    New,
    /// Still being answered: drop this copy.
    InFlight,
    /// Answered before: send these bytes again.
    Answered(Response),
}

/// The reply cache, bounded in size.
pub struct ReplyCache {
    entries: Mutex<HashMap<Key, Slot>>,
    max: usize,
}

impl ReplyCache {
    pub fn new(max: usize) -> Self {
        Self { entries: Mutex::new(HashMap::new()), max: max.max(4) }
    }

    /// Looks a request up, claiming it when new.
    pub fn check(&self, src: SocketAddr, id: u8, authenticator: [u8; 16]) -> Seen {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&(src, id)) {
            Some(slot) if slot.authenticator == authenticator => match &slot.answer {
                None => Seen::InFlight,
                Some(bytes) => Seen::Answered(*bytes),
            },
            _ => {
                if map.len() >= self.max && !map.contains_key(&(src, id)) {
                    Self::make_room(&mut map, self.max);
                }
                map.insert((src, id), Slot { authenticator, at: Instant::now(), answer: None });
                Seen::New
            }
        }
    }

    /// Stores the answer to a claimed request (or releases the claim when `None`), unless
    /// the client has reused the Identifier for a newer request meanwhile.
    pub fn finish(&self, src: SocketAddr, id: u8, authenticator: [u8; 16], answer: Option<Response>) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let Some(slot) = map.get_mut(&(src, id)) else { return };
        if slot.authenticator != authenticator {
            return;
        }
        match answer {
            Some(bytes) => {
                slot.answer = Some(bytes);
                slot.at = Instant::now();
            }
            None => {
                map.remove(&(src, id));
            }
        }
    }

    /// Drops answers older than [`KEEP`].
    pub fn expire(&self) {
        Self::purge(&mut self.entries.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn purge(map: &mut HashMap<Key, Slot>) {
        map.retain(|_, slot| slot.at.elapsed() < KEEP);
    }

    /// Frees at least a quarter of the cache: expired entries first, then the oldest. Each
    /// call is linear, but it frees a linear number of slots, so inserting stays O(1)
    /// amortised however many source sockets a client uses (an earlier version rescanned
    /// the full map on every insert once full).
    fn make_room(map: &mut HashMap<Key, Slot>, max: usize) {
        Self::purge(map);
        let target = max - max / 4;
        if map.len() <= target {
            return;
        }
        let mut ages: Vec<Instant> = map.values().map(|s| s.at).collect();
        let excess = map.len() - target;
        let (_, cutoff, _) = ages.select_nth_unstable(excess - 1);
        let cutoff = *cutoff;
        map.retain(|_, slot| slot.at > cutoff);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A distinguishable answer.
    fn answer(first: u8) -> Response {
        let mut bytes = [0; super::super::packet::RESPONSE_LEN];
        bytes[0] = first;
        bytes
    }

    #[test]
    fn a_retransmission_gets_the_first_answer() {
        let c = ReplyCache::new(10);
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert!(matches!(c.check(src, 1, [0; 16]), Seen::New));
        assert!(matches!(c.check(src, 1, [0; 16]), Seen::InFlight));
        c.finish(src, 1, [0; 16], Some(answer(2)));
        assert!(matches!(c.check(src, 1, [0; 16]), Seen::Answered(b) if b == answer(2)));
        assert!(matches!(c.check(src, 2, [0; 16]), Seen::New));
        let other: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        assert!(matches!(c.check(other, 1, [0; 16]), Seen::New));
    }

    #[test]
    fn a_reused_identifier_is_a_new_request_and_the_old_answer_is_not_stored() {
        let c = ReplyCache::new(10);
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert!(matches!(c.check(src, 1, [0; 16]), Seen::New));
        // The client gave up on the first request and reused Identifier 1.
        assert!(matches!(c.check(src, 1, [1; 16]), Seen::New));
        c.finish(src, 1, [0; 16], Some(answer(3)));
        assert!(matches!(c.check(src, 1, [1; 16]), Seen::InFlight), "the newer request keeps its claim");
        c.finish(src, 1, [1; 16], Some(answer(2)));
        assert!(matches!(c.check(src, 1, [1; 16]), Seen::Answered(b) if b == answer(2)));
        assert_eq!(c.len(), 1, "one slot per socket and Identifier");
    }

    #[test]
    fn a_full_cache_frees_its_oldest_quarter_and_keeps_recent_answers() {
        let c = ReplyCache::new(100);
        for port in 0..1000u16 {
            let src = SocketAddr::from(([127, 0, 0, 1], 6000 + port));
            assert!(matches!(c.check(src, 0, [0; 16]), Seen::New));
            c.finish(src, 0, [0; 16], Some(answer(port as u8)));
            assert!(c.len() <= 100);
        }
        let newest = SocketAddr::from(([127, 0, 0, 1], 6999));
        assert!(matches!(c.check(newest, 0, [0; 16]), Seen::Answered(_)));
    }
}
