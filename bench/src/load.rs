//! The load generator: one OS thread (a current-thread tokio runtime), one UDP socket per
//! 256 requests in flight, the RADIUS identifier of each socket as its in-flight slot. A
//! slot sends its next request as soon as its reply arrives and checks out, so exactly N
//! requests are outstanding; one unanswered after the timeout is counted lost and the slot
//! moves on. Only replies that arrive inside the measuring window are counted.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::Rng as _;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::packet::{self, Verdict};
use crate::procstat::Machine;
use crate::stats::Latencies;

/// Identifiers per socket: RADIUS has one octet of them.
const SLOTS_PER_SOCKET: usize = 256;
/// Socket buffers asked for (the kernel caps them at net.core.rmem_max / wmem_max).
const SOCKET_BUFFER: usize = 8 << 20;
/// How often slots are swept for lost requests.
const SWEEP: Duration = Duration::from_millis(50);
/// A password no seeded passcode can equal (passcodes are digits only).
const WRONG_PASSCODE: &str = "not-a-passcode";

/// What to send.
pub enum Source {
    /// `username passcode` lines, each sent once (Accepts), or with `wrong` every user in
    /// turn, repeatedly, with a wrong passcode (Rejects).
    Lines { entries: Vec<(String, String)>, wrong: bool, offset: usize, next: Cell<usize> },
    /// One user and password on every request.
    Fixed { user: String, password: String },
}

impl Source {
    pub fn from_file(path: &Path, wrong: bool, offset: usize) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let entries: Vec<(String, String)> =
            text.lines().filter_map(|l| l.split_once(' ')).map(|(u, p)| (u.to_owned(), p.trim().to_owned())).collect();
        anyhow::ensure!(!entries.is_empty(), "{} holds no `username passcode` lines", path.display());
        Ok(Self::Lines { entries, wrong, offset, next: Cell::new(offset) })
    }

    /// Lines taken so far (sent, whatever became of them): the next run's offset.
    fn consumed(&self) -> usize {
        match self {
            Self::Fixed { .. } => 0,
            Self::Lines { entries, offset, next, .. } => next.get().min(entries.len()).saturating_sub(*offset),
        }
    }

    /// The next (user, password), or `None` when single-use input has run out.
    fn next(&self) -> Option<(&str, &str)> {
        match self {
            Self::Fixed { user, password } => Some((user, password)),
            Self::Lines { entries, wrong, next, .. } => {
                let i = next.get();
                next.set(i + 1);
                if *wrong {
                    Some((&entries[i % entries.len()].0, WRONG_PASSCODE))
                } else {
                    entries.get(i).map(|(u, p)| (u.as_str(), p.as_str()))
                }
            }
        }
    }
}

/// How to run.
pub struct Options {
    pub server: SocketAddr,
    pub secret: Vec<u8>,
    pub inflight: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub timeout: Duration,
}

/// What one socket saw inside the measuring window.
#[derive(Default)]
struct Tally {
    accept: u64,
    reject: u64,
    lost: u64,
    bad: u64,
    stray: u64,
    latencies: Latencies,
    last_reply: Option<Instant>,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.accept += o.accept;
        self.reject += o.reject;
        self.lost += o.lost;
        self.bad += o.bad;
        self.stray += o.stray;
        self.latencies.merge(o.latencies);
        self.last_reply = self.last_reply.max(o.last_reply);
    }
}

/// Shared by the socket tasks of the one thread.
struct Ctx {
    opts: Options,
    source: Source,
    exhausted: Cell<bool>,
    window_start: Instant,
    window_end: Instant,
    /// The machine's CPU time when the window opened (`/proc/stat`), to tell how much of the
    /// window the host took (steal) and how much stood idle.
    machine_at_start: Cell<Option<Machine>>,
}

pub fn run(opts: Options, source: Source) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, drive(opts, source))
}

async fn drive(opts: Options, source: Source) -> anyhow::Result<()> {
    let sockets = opts.inflight.div_ceil(SLOTS_PER_SOCKET);
    let mut socks = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        socks.push(bind(opts.server)?);
    }
    let (rcv, snd) = {
        let s = socket2::SockRef::from(&socks[0]);
        (s.recv_buffer_size()?, s.send_buffer_size()?)
    };
    let cpu0 = crate::procstat::process_time();
    let t0 = Instant::now();
    let ctx = Rc::new(Ctx {
        window_start: t0 + opts.warmup,
        window_end: t0 + opts.warmup + opts.duration,
        opts,
        source,
        exhausted: Cell::new(false),
        machine_at_start: Cell::new(None),
    });
    let opening = {
        let ctx = ctx.clone();
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(ctx.window_start.into()).await;
            ctx.machine_at_start.set(Machine::read().ok());
        })
    };
    let mut tasks = Vec::new();
    let mut left = ctx.opts.inflight;
    for sock in socks {
        let n = left.min(SLOTS_PER_SOCKET);
        left -= n;
        tasks.push(tokio::task::spawn_local(worker(sock, n, ctx.clone())));
    }
    let mut tally = Tally::default();
    for t in tasks {
        tally.add(t.await??);
    }
    let wall = t0.elapsed();
    let cpu = crate::procstat::process_time().saturating_sub(cpu0);
    // Up to the last reply (a little past the window while the last requests drain); none if
    // the window never opened.
    opening.abort();
    let machine = ctx.machine_at_start.get().and_then(|start| Some(Machine::read().ok()?.since(start)));
    report(&ctx, tally, wall, cpu, machine, Sizes { sockets, rcv, snd });
    Ok(())
}

/// A non-blocking UDP socket connected to the server, with large buffers.
fn bind(server: SocketAddr) -> anyhow::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(server), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_recv_buffer_size(SOCKET_BUFFER)?;
    s.set_send_buffer_size(SOCKET_BUFFER)?;
    let any: SocketAddr = if server.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
    s.bind(&any.into())?;
    s.connect(&server.into())?;
    s.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(s.into())?)
}

/// One outstanding request.
#[derive(Clone, Copy)]
struct Slot {
    sent: Instant,
    auth: [u8; 16],
}

/// Drives `n` slots (identifiers 0..n) on one socket until the window closes and every
/// outstanding request is answered or lost.
async fn worker(sock: UdpSocket, n: usize, ctx: Rc<Ctx>) -> anyhow::Result<Tally> {
    let mut slots: Vec<Option<Slot>> = vec![None; n];
    let mut tally = Tally::default();
    let (mut out, mut scratch) = (Vec::with_capacity(512), Vec::with_capacity(512));
    let mut buf = vec![0u8; 4096];
    let rng = RefCell::new(rand::rng());
    for (id, slot) in slots.iter_mut().enumerate() {
        *slot = send_next(&sock, id as u8, &ctx, &mut out, &rng).await?;
    }
    let mut next_sweep = Instant::now() + SWEEP;
    // One timer, re-armed after each sweep, rather than a new one per datagram.
    let sweep = tokio::time::sleep_until(next_sweep.into());
    tokio::pin!(sweep);
    while slots.iter().any(Option::is_some) {
        let got = tokio::select! {
            biased;
            r = sock.recv(&mut buf) => Some(r?),
            () = &mut sweep => None,
        };
        let now = Instant::now();
        if let Some(len) = got {
            let id = usize::from(buf[1]);
            let Some(slot) = slots.get(id).copied().flatten().filter(|_| len >= 20) else {
                tally.stray += 1;
                continue;
            };
            match packet::check_response(&buf[..len], &slot.auth, &ctx.opts.secret, &mut scratch) {
                Ok(verdict) => {
                    if slot.sent >= ctx.window_start && now <= ctx.window_end {
                        match verdict {
                            Verdict::Accept => tally.accept += 1,
                            Verdict::Reject => tally.reject += 1,
                        }
                        let micros = now.duration_since(slot.sent).as_micros();
                        tally.latencies.record(u32::try_from(micros).unwrap_or(u32::MAX));
                        tally.last_reply = Some(now);
                    }
                    slots[id] = send_next(&sock, id as u8, &ctx, &mut out, &rng).await?;
                }
                // A late reply to an earlier request on this identifier, or a broken one.
                Err(_) => tally.bad += 1,
            }
        }
        if now >= next_sweep {
            next_sweep = now + SWEEP;
            sweep.as_mut().reset(next_sweep.into());
            for (id, entry) in slots.iter_mut().enumerate() {
                if let Some(slot) = *entry
                    && now.duration_since(slot.sent) >= ctx.opts.timeout
                {
                    if slot.sent >= ctx.window_start && slot.sent <= ctx.window_end {
                        tally.lost += 1;
                    }
                    *entry = send_next(&sock, id as u8, &ctx, &mut out, &rng).await?;
                }
            }
        }
    }
    Ok(tally)
}

/// Sends the next request on identifier `id`, or leaves the slot empty when the window has
/// closed or the input has run out.
async fn send_next(
    sock: &UdpSocket,
    id: u8,
    ctx: &Ctx,
    out: &mut Vec<u8>,
    rng: &RefCell<rand::rngs::ThreadRng>,
) -> anyhow::Result<Option<Slot>> {
    if Instant::now() >= ctx.window_end {
        return Ok(None);
    }
    let Some((user, password)) = ctx.source.next() else {
        ctx.exhausted.set(true);
        return Ok(None);
    };
    let mut auth = [0u8; 16];
    rng.borrow_mut().fill_bytes(&mut auth);
    packet::access_request(out, id, &auth, user.as_bytes(), password.as_bytes(), &ctx.opts.secret);
    let sent = Instant::now();
    sock.send(out).await?;
    Ok(Some(Slot { sent, auth }))
}

/// The generator's sockets and their buffer sizes, for the report.
struct Sizes {
    sockets: usize,
    rcv: usize,
    snd: usize,
}

fn report(ctx: &Ctx, mut t: Tally, wall: Duration, cpu: Duration, machine: Option<Machine>, sizes: Sizes) {
    let Sizes { sockets, rcv, snd } = sizes;
    t.latencies.finish();
    // When single-use input ran out early, the window really ended at the last reply.
    let end = match (ctx.exhausted.get(), t.last_reply) {
        (true, Some(last)) => last.min(ctx.window_end),
        _ => ctx.window_end,
    };
    let secs = end.saturating_duration_since(ctx.window_start).as_secs_f64().max(1e-9);
    let answered = t.accept + t.reject;
    let rps = answered as f64 / secs;
    let cpu_pct = 100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9);
    let cpu_us_per_req = if answered > 0 { cpu.as_secs_f64() * 1e6 / answered as f64 } else { 0.0 };
    let (p50, p99, p999) = (t.latencies.percentile(50.0), t.latencies.percentile(99.0), t.latencies.percentile(99.9));
    eprintln!(
        "{} in flight on {sockets} socket(s) (SO_RCVBUF {rcv}, SO_SNDBUF {snd}): {rps:.0} requests/s over {secs:.2} s",
        ctx.opts.inflight
    );
    eprintln!(
        "  answered {answered} (accept {}, reject {}), lost {}, bad {}, stray {}",
        t.accept, t.reject, t.lost, t.bad, t.stray
    );
    eprintln!("  latency p50 {p50} µs, p99 {p99} µs, p99.9 {p999} µs ({} samples)", t.latencies.len());
    eprintln!(
        "  generator CPU {:.2} s in {:.2} s wall ({cpu_pct:.0}% of one core, {cpu_us_per_req:.1} µs/request)",
        cpu.as_secs_f64(),
        wall.as_secs_f64()
    );
    let (idle_pct, steal_pct) = machine.map_or((f64::NAN, f64::NAN), Machine::idle_and_steal_pct);
    if machine.is_some() {
        eprintln!("  the machine in the window: idle {idle_pct:.1} %, stolen by the host {steal_pct:.1} %");
    }
    if ctx.exhausted.get() {
        eprintln!("  warning: the input ran out; the window was cut to {secs:.2} s (seed more users)");
    }
    println!(
        "rps={rps:.1} p50_us={p50} p99_us={p99} p999_us={p999} accept={} reject={} lost={} bad={} stray={} secs={secs:.3} \
         cpu_secs={:.2} cpu_pct={cpu_pct:.1} exhausted={} consumed={} idle_pct={idle_pct:.1} steal_pct={steal_pct:.1}",
        t.accept,
        t.reject,
        t.lost,
        t.bad,
        t.stray,
        cpu.as_secs_f64(),
        u8::from(ctx.exhausted.get()),
        ctx.source.consumed()
    );
}
