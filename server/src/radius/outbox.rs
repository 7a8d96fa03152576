//! Answers that leave together. The SQLite engine answers a batch's requests one after the
//! other on its own thread; inside [`together`], the answers sent on that thread are held
//! and leave when it returns, those to one client address in one `sendmsg` with UDP
//! segmentation offload (`UDP_SEGMENT`, Linux 4.18+): the kernel builds one datagram per
//! answer, but the batch goes through the IP stack once instead of once per answer. Every
//! answer is [`RESPONSE_LEN`] bytes, as segmentation needs (all segments but the last the
//! same size). A client that sends many requests from one socket (a VPN concentrator, a
//! proxy, the benchmark) gets its answers this way; one that waits for each answer before
//! the next gets single sends.
//!
//! Where the kernel or the route refuses segmentation, the first refusal is logged and the
//! answers go one by one from then on.

use std::cell::RefCell;
use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmsg};

use super::packet::{RESPONSE_LEN, Response};

/// Most answers in one segmented send (the kernel's limit was 64 before Linux 6.9).
const MAX_SEGMENTS: usize = 64;

/// Cleared when the kernel refuses a segmented send.
static SEGMENTING: AtomicBool = AtomicBool::new(true);

/// One held answer.
struct Held {
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Response,
}

thread_local! {
    /// The answers held on this thread while [`together`] runs.
    static HELD: RefCell<Option<Vec<Held>>> = const { RefCell::new(None) };
}

/// Runs `f`, holding the answers it sends on this thread until it returns; then sends them,
/// those to one address together. Nested calls hold until the outermost returns.
pub fn together(f: &mut dyn FnMut()) {
    let outermost = HELD.with_borrow_mut(|held| held.is_none().then(|| *held = Some(Vec::new())).is_some());
    // Sent when `f` returns, or unwinds: nothing stays held.
    let _send = outermost.then_some(SendHeld);
    f();
}

/// Sends the held answers when dropped.
struct SendHeld;

impl Drop for SendHeld {
    fn drop(&mut self) {
        if let Some(held) = HELD.with_borrow_mut(Option::take) {
            flush(held);
        }
    }
}

/// Sends an answer: at once, or held while [`together`] runs on this thread. UDP sends do not
/// wait for the peer; a failure (a full send buffer) is logged and the client's
/// retransmission gets the cached answer.
pub fn send(socket: &Arc<UdpSocket>, bytes: &Response, to: SocketAddr) {
    let bytes = HELD.with_borrow_mut(|held| match held {
        Some(held) => {
            held.push(Held { socket: socket.clone(), to, bytes: *bytes });
            None
        }
        None => Some(bytes),
    });
    if let Some(bytes) = bytes {
        send_one(socket, bytes, to);
    }
}

/// Sends datagram `bytes` to `to`, logging a failure.
pub fn send_one(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, to) {
        tracing::warn!(%to, error = %e, "RADIUS send failed");
    }
}

fn flush(mut held: Vec<Held>) {
    // Answers to one address next to each other; the order among them is kept.
    held.sort_by_key(|h| (Arc::as_ptr(&h.socket), h.to));
    let mut rest = held.as_slice();
    while let Some(first) = rest.first() {
        let same =
            rest.iter().take(MAX_SEGMENTS).take_while(|h| Arc::ptr_eq(&h.socket, &first.socket) && h.to == first.to);
        let n = same.count();
        let (group, after) = rest.split_at(n);
        rest = after;
        if n > 1 && SEGMENTING.load(Ordering::Relaxed) && send_segmented(group) {
            continue;
        }
        for h in group {
            send_one(&h.socket, &h.bytes, h.to);
        }
    }
}

/// Sends `group` (answers on one socket to one address) as one segmented datagram; false
/// when the kernel refuses segmentation, so the caller sends them one by one.
fn send_segmented(group: &[Held]) -> bool {
    let (socket, to) = (&group[0].socket, group[0].to);
    let mut buf = Vec::with_capacity(group.len() * RESPONSE_LEN);
    for h in group {
        buf.extend_from_slice(&h.bytes);
    }
    let segment = RESPONSE_LEN as u16;
    let sent = sendmsg(
        socket.as_raw_fd(),
        &[IoSlice::new(&buf)],
        &[ControlMessage::UdpGsoSegments(&segment)],
        MsgFlags::empty(),
        Some(&SockaddrStorage::from(to)),
    );
    match sent {
        Ok(_) => true,
        // No segmentation here (an old kernel, a device without it): one by one from now on.
        Err(e @ (Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP)) => {
            if SEGMENTING.swap(false, Ordering::Relaxed) {
                tracing::warn!(%to, error = %e, "UDP segmentation refused; RADIUS answers are sent one by one");
            }
            false
        }
        Err(e) => {
            tracing::warn!(%to, answers = group.len(), error = %e, "RADIUS send failed");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn answer(n: u8) -> Response {
        let mut bytes = [n; RESPONSE_LEN];
        bytes[1] = n;
        bytes
    }

    fn receiver() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        socket
    }

    /// The datagrams `socket` has received, each as its second octet (the identifier).
    fn received(socket: &UdpSocket, count: usize) -> Vec<u8> {
        let mut buf = [0u8; 4096];
        (0..count)
            .map(|_| {
                let (n, _) = socket.recv_from(&mut buf).unwrap();
                assert_eq!(n, RESPONSE_LEN, "one answer per datagram");
                assert_eq!(buf[..n], answer(buf[1]), "the answer's bytes intact");
                buf[1]
            })
            .collect()
    }

    #[test]
    fn answers_held_together_arrive_one_datagram_each_in_order() {
        let sender = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let (a, b) = (receiver(), receiver());
        let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        // 70 to one address (more than one segmented send holds), 3 to another, interleaved.
        together(&mut || {
            for n in 0..70u8 {
                send(&sender, &answer(n), to_a);
                if n % 30 == 0 {
                    send(&sender, &answer(200 + n / 30), to_b);
                }
            }
            // Nested: held until the outermost call returns.
            together(&mut || send(&sender, &answer(70), to_a));
        });
        assert_eq!(received(&a, 71), (0..71).collect::<Vec<u8>>());
        assert_eq!(received(&b, 3), vec![200, 201, 202]);
        let mut buf = [0u8; 64];
        a.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        assert!(a.recv_from(&mut buf).is_err(), "nothing more");
        assert!(SEGMENTING.load(Ordering::Relaxed), "the kernel segmented them");
    }

    #[test]
    fn answers_held_when_the_group_panics_still_leave() {
        let sender = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let a = receiver();
        let to = a.local_addr().unwrap();
        let panicked = std::panic::catch_unwind(|| {
            together(&mut || {
                send(&sender, &answer(1), to);
                panic!("a bug while answering");
            })
        });
        assert!(panicked.is_err());
        assert_eq!(received(&a, 1), vec![1]);
        HELD.with_borrow(|held| assert!(held.is_none(), "this thread sends at once again"));
    }

    #[test]
    fn outside_together_an_answer_leaves_at_once() {
        let sender = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let a = receiver();
        send(&sender, &answer(9), a.local_addr().unwrap());
        assert_eq!(received(&a, 1), vec![9]);
        HELD.with_borrow(|held| assert!(held.is_none()));
    }
}
