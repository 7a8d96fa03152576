//! Issuance through the real token API: D protocol-level devices register over HTTP (the
//! way tests/e2e/raw_token.rs does), are validated through the server's library, then C
//! blocking worker threads (one device each) ask for passcodes in a loop: seal and sign a
//! fresh `PasscodeBody`, POST /v1/passcode, open the reply, require `Reply::Ok`. Every
//! request thus pays the server's HPKE open, RSA signature check, nonce record, argon2id
//! PIN check and passcode storage.
//!
//! Sealing and signing (HPKE + RSA-3072) cost the client CPU on the same machine. With
//! `--preseal N` each worker seals N requests before the window opens and uses them first,
//! so the window measures the server; their timestamps must stay within the server's
//! clock-skew allowance (120 s), so keep the sealing phase and the window short.
//!
//! `--rounds R` pairs each issuance window with a bare argon2id window just before it
//! (`argon::measure`, the server idle) and reports the median ratio: this CPU's speed drifts
//! by ±15 % within minutes, more than the overhead the ratio is meant to show.
//!
//! `--server-pid PID` also says where the machine went in each window (`procstat`): the
//! server's argon2id threads, the rest of the server by thread name, this client,
//! everything else and idle time, and the CPU each passcode cost against a bare verify.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tessera_protocol::DomainCode;
use tessera_protocol::device::{DeviceKey, device_id, registration_code};
use tessera_protocol::envelope::{Purpose, ResponseKey};
use tessera_protocol::request::{open_reply, seal_signed};
use tessera_protocol::wire::{
    DomainInfo, Passcode, PasscodeBody, RegisterBody, Registered, Reply, SealedBody, SealedReply, b64, unb64,
};
use tessera_server::db::Store;
use tessera_server::service::admin;

use crate::procstat::{Machine, Threads};
use crate::stats::Latencies;

/// The PIN every bench device registers with.
const PIN: &str = "bench-pin-246810";
const ACTOR: &str = "bench";
/// The name of the server's argon2id threads (server/src/state.rs).
const ARGON2_THREADS: &str = "tessera-argon2";

/// How to run.
pub struct Options {
    pub token_url: String,
    pub database: String,
    pub domain: String,
    pub devices: usize,
    pub concurrency: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub preseal: usize,
    /// Paired rounds: each measures the bare argon2id rate on `baseline_threads` threads for
    /// `duration` with the server idle, then issuance for `duration`. 0: issuance only, once.
    pub rounds: usize,
    pub baseline_threads: usize,
    /// The server's process, to split each window's machine time (`procstat`).
    pub server_pid: Option<u32>,
}

/// One registered, validated device.
struct Device {
    key: DeviceKey,
    id: String,
}

/// What one worker saw inside the window.
#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Latencies,
    presealed_used: u64,
}

impl Tally {
    fn absorb(&mut self, other: Tally) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.presealed_used += other.presealed_used;
        self.first_error = self.first_error.take().or(other.first_error);
        self.latencies.merge(other.latencies);
    }
}

pub fn run(o: Options) -> anyhow::Result<()> {
    anyhow::ensure!(o.concurrency >= 1, "--concurrency must be at least 1");
    anyhow::ensure!(
        o.devices >= o.concurrency,
        "--devices ({}) must be at least --concurrency ({}): one device per worker",
        o.devices,
        o.concurrency
    );
    let domain = DomainCode::parse(&o.domain).map_err(|e| anyhow::anyhow!("bad domain code {}: {e:?}", o.domain))?;
    let base = o.token_url.trim_end_matches('/').to_owned();
    let agent = agent();
    let info: DomainInfo = serde_json::from_str(
        &agent
            .get(format!("{base}/v1/domains/{}", o.domain))
            .call()
            .context("GET /v1/domains")?
            .into_body()
            .read_to_string()?,
    )
    .context("domain info")?;
    let server_public = unb64(&info.public_key).map_err(|_| anyhow::anyhow!("domain public key is not base64"))?;

    let started = Instant::now();
    let keys = generate_keys(o.devices);
    eprintln!("generated {} device keys in {:.1} s", keys.len(), started.elapsed().as_secs_f64());

    // Register over HTTP, then validate through the library as an administrator would.
    let run_id: u32 = rand::random();
    let mut pending = Vec::with_capacity(keys.len());
    for key in keys {
        let rc = register(&agent, &base, domain, &server_public, &key)?;
        pending.push((key, rc));
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let store = Store::open(&o.database).await?;
        for (i, (_, rc)) in pending.iter().enumerate() {
            let username = format!("issue-{run_id:08x}-{i}");
            admin::validate(&store, ACTOR, &o.domain, rc, &username)
                .await
                .with_context(|| format!("validating {username}"))?;
        }
        anyhow::Ok(())
    })?;
    drop(rt);
    let devices: Vec<Device> = pending
        .into_iter()
        .map(|(key, _)| {
            let id = device_id(&key.public_key_der());
            Device { key, id }
        })
        .collect();
    eprintln!("registered and validated {} devices in {:.1} s", devices.len(), started.elapsed().as_secs_f64());

    // Pre-sealed requests, made before the clock starts.
    let presealed: Vec<Vec<(SealedBody, ResponseKey)>> = std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .iter()
            .take(o.concurrency)
            .map(|d| s.spawn(|| (0..o.preseal).map(|_| seal_passcode(domain, &server_public, d)).collect()))
            .collect();
        handles.into_iter().map(|h| h.join().expect("sealing thread panicked")).collect::<anyhow::Result<_>>()
    })?;
    if o.preseal > 0 {
        eprintln!("pre-sealed {} requests per worker", o.preseal);
    }

    let mut presealed: Vec<std::vec::IntoIter<(SealedBody, ResponseKey)>> =
        presealed.into_iter().map(Vec::into_iter).collect();
    let ctx = Ctx {
        base: &base,
        domain,
        server_public: &server_public,
        devices: &devices[..o.concurrency],
        server_pid: o.server_pid,
    };

    if o.rounds == 0 {
        // Scripts wait for this line before loading the server alongside.
        eprintln!("{} workers: window opens", o.concurrency);
        let w = window(&ctx, &mut presealed, o.warmup, o.duration);
        let rate = w.rate();
        let mut fields = format!("pps={rate:.1}");
        if let Some(split) = &w.split {
            split.print(w.tally.ok, None);
            fields.push_str(&split.parts(w.tally.ok, None).fields());
        }
        report(&o, w, &fields);
        return Ok(());
    }

    // Paired rounds: the bare argon2id rate right before each issuance window, so that a
    // change in the CPU's speed between the two (seen here: ±15 % within minutes) does not
    // enter the ratio.
    let mut windows = Vec::with_capacity(o.rounds);
    let (mut bare_rates, mut rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut splits: Vec<Vec<(&str, f64)>> = Vec::new();
    for round in 1..=o.rounds {
        let bare = crate::argon::measure(o.baseline_threads, o.duration)?;
        let w = window(&ctx, &mut presealed, o.warmup, o.duration);
        let ratio = if bare.rate > 0.0 { w.rate() / bare.rate } else { 0.0 };
        eprintln!(
            "round {round}/{}: bare argon2id {:.1} verifies/s ({} threads, server idle), then token API {:.1} \
             passcodes/s: ratio {ratio:.3}",
            o.rounds,
            bare.rate,
            o.baseline_threads,
            w.rate()
        );
        if let Some(split) = &w.split {
            split.print(w.tally.ok, Some(&bare));
            splits.push(split.parts(w.tally.ok, Some(&bare)).pairs());
        }
        bare_rates.push(bare.rate);
        rates.push(w.rate());
        ratios.push(ratio);
        windows.push(w);
    }
    let (lo, hi) = ratios.iter().fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    let mut fields = format!(
        "pps={:.1} vps={:.1} ratio={:.3} ratio_min={lo:.3} ratio_max={hi:.3} rounds={}",
        median(rates),
        median(bare_rates),
        median(ratios),
        o.rounds
    );
    // Each part's median over the rounds.
    if let Some(first) = splits.first() {
        for (i, (key, _)) in first.iter().enumerate() {
            let value = median(splits.iter().map(|v| v[i].1).collect());
            fields.push_str(&format!(" {key}={value:.3}"));
        }
    }
    let mut all = windows.into_iter();
    let first = all.next().expect("at least one round");
    report(&o, all.fold(first, Window::merge), &fields);
    Ok(())
}

/// What every worker shares.
struct Ctx<'a> {
    base: &'a str,
    domain: DomainCode,
    server_public: &'a [u8],
    devices: &'a [Device],
    server_pid: Option<u32>,
}

/// One issuance window: what the workers saw, and the client's own cost.
struct Window {
    tally: Tally,
    secs: f64,
    wall: Duration,
    cpu: Duration,
    /// Where the machine went inside the measured part (with `--server-pid`).
    split: Option<Split>,
}

impl Window {
    fn rate(&self) -> f64 {
        self.tally.ok as f64 / self.secs.max(1e-9)
    }

    fn merge(mut self, other: Window) -> Window {
        self.tally.absorb(other.tally);
        self.secs += other.secs;
        self.wall += other.wall;
        self.cpu += other.cpu;
        self.split = None;
        self
    }
}

/// Where the machine's CPU time went during one window's measured part.
struct Split {
    /// The server's threads' CPU, by thread name.
    server: BTreeMap<String, Duration>,
    /// This client's CPU (every thread).
    client: Duration,
    machine: Machine,
    wall: Duration,
}

impl Split {
    /// Reads the server, this process and the machine at `start` and at `end`.
    fn measure(pid: u32, start: Instant, end: Instant) -> anyhow::Result<Split> {
        let me = std::process::id();
        std::thread::sleep(start.saturating_duration_since(Instant::now()));
        let (server0, client0, machine0) = (Threads::read(pid)?, Threads::read(me)?, Machine::read()?);
        let t0 = Instant::now();
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        let (server1, client1, machine1) = (Threads::read(pid)?, Threads::read(me)?, Machine::read()?);
        Ok(Split {
            server: server1.since(&server0),
            client: client1.since(&client0).values().sum(),
            machine: machine1.since(machine0),
            wall: t0.elapsed(),
        })
    }

    /// The machine's CPU time in the window: all cores (USER_HZ is 100 on Linux).
    fn capacity(&self) -> f64 {
        match self.machine.total {
            0 => self.wall.as_secs_f64() * cores(),
            ticks => ticks as f64 / 100.0,
        }
    }

    fn argon2(&self) -> Duration {
        self.server.iter().filter(|(name, _)| name.starts_with(ARGON2_THREADS)).map(|(_, cpu)| *cpu).sum()
    }

    /// The server's other threads, the busiest first.
    fn rest(&self) -> Vec<(&str, Duration)> {
        let mut rest: Vec<_> = self
            .server
            .iter()
            .filter(|(name, _)| !name.starts_with(ARGON2_THREADS))
            .map(|(name, cpu)| (name.as_str(), *cpu))
            .collect();
        rest.sort_by_key(|(_, cpu)| std::cmp::Reverse(*cpu));
        rest
    }

    /// The window's parts, against the bare window when there is one.
    fn parts(&self, passcodes: u64, bare: Option<&crate::argon::Measured>) -> Parts {
        let cap = self.capacity().max(1e-9);
        let pct = |d: Duration| 100.0 * d.as_secs_f64() / cap;
        let ticks = self.machine.total.max(1) as f64;
        let rest: Duration = self.rest().iter().map(|(_, cpu)| *cpu).sum();
        let per = |d: Duration| d.as_secs_f64() / passcodes.max(1) as f64;
        let (argon2_pct, rest_pct, client_pct) = (pct(self.argon2()), pct(rest), pct(self.client));
        let idle_pct = 100.0 * self.machine.idle as f64 / ticks;
        let steal_pct = 100.0 * self.machine.steal as f64 / ticks;
        Parts {
            argon2_pct,
            rest_pct,
            client_pct,
            other_pct: (100.0 - argon2_pct - rest_pct - client_pct - idle_pct - steal_pct).max(0.0),
            idle_pct,
            steal_pct,
            argon2_ms: per(self.argon2()) * 1e3,
            rest_us: per(rest) * 1e6,
            bare: bare.map(|b| {
                let bare_pct = 100.0 * b.cpu.as_secs_f64() / (b.wall.as_secs_f64() * cores()).max(1e-9);
                (bare_pct, b.ms_per_verify())
            }),
        }
    }

    /// Two lines on stderr (three against a bare window): the machine's shares, the CPU a
    /// passcode took, and what the two account for of the round's ratio.
    fn print(&self, passcodes: u64, bare: Option<&crate::argon::Measured>) {
        let p = self.parts(passcodes, bare);
        eprintln!(
            "  the machine: the server's argon2id {:.1} %, the rest of the server {:.1} %, this client {:.1} %, \
             everything else {:.1} %, idle {:.1} %, stolen {:.1} %{}",
            p.argon2_pct,
            p.rest_pct,
            p.client_pct,
            p.other_pct,
            p.idle_pct,
            p.steal_pct,
            p.bare.map_or(String::new(), |(pct, _)| format!(" (bare argon2id {pct:.1} %)"))
        );
        let per_passcode = |d: Duration| d.as_secs_f64() * 1e6 / passcodes.max(1) as f64;
        let rest: Vec<String> =
            self.rest().iter().map(|(name, cpu)| format!("{name} {:.0}", per_passcode(*cpu))).collect();
        let against = match p.bare {
            Some((_, ms)) if ms > 0.0 => {
                format!(" (bare {ms:.2} ms a verify: {:+.1} %)", 100.0 * (p.argon2_ms / ms - 1.0))
            }
            _ => String::new(),
        };
        eprintln!(
            "  a passcode's CPU: argon2id {:.2} ms{against}; the rest of the server {:.0} µs ({})",
            p.argon2_ms,
            p.rest_us,
            rest.join(", ")
        );
        if let Some((pct, ms)) = p.bare
            && pct > 0.0
            && p.argon2_ms > 0.0
        {
            eprintln!(
                "  argon2id's share against bare times its speed against bare: {:.3}",
                p.argon2_pct / pct * ms / p.argon2_ms
            );
        }
    }
}

/// Where one window's machine time went: shares of the machine in per cent, CPU a passcode.
struct Parts {
    argon2_pct: f64,
    rest_pct: f64,
    client_pct: f64,
    other_pct: f64,
    idle_pct: f64,
    steal_pct: f64,
    argon2_ms: f64,
    rest_us: f64,
    /// The bare window's argon2id share of the machine and CPU a verify.
    bare: Option<(f64, f64)>,
}

impl Parts {
    /// The parts as `key=value` pairs for the result line.
    fn pairs(&self) -> Vec<(&'static str, f64)> {
        let mut pairs = vec![
            ("argon2_pct", self.argon2_pct),
            ("rest_pct", self.rest_pct),
            ("client_pct", self.client_pct),
            ("other_pct", self.other_pct),
            ("idle_pct", self.idle_pct),
            ("steal_pct", self.steal_pct),
            ("argon2_ms", self.argon2_ms),
            ("rest_us", self.rest_us),
        ];
        if let Some((pct, ms)) = self.bare {
            pairs.extend([("bare_pct", pct), ("bare_ms", ms)]);
        }
        pairs
    }

    fn fields(&self) -> String {
        self.pairs().iter().map(|(k, v)| format!(" {k}={v:.3}")).collect()
    }
}

/// The cores this process may use.
fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

/// Every device of `ctx` asks for passcodes, one at a time, for `warmup` then `duration`;
/// only requests sent and answered inside the second part count.
fn window(
    ctx: &Ctx<'_>,
    presealed: &mut [std::vec::IntoIter<(SealedBody, ResponseKey)>],
    warmup: Duration,
    duration: Duration,
) -> Window {
    let cpu0 = crate::procstat::process_time();
    let t0 = Instant::now();
    let (window_start, window_end) = (t0 + warmup, t0 + warmup + duration);
    let (tallies, split): (Vec<Tally>, _) = std::thread::scope(|s| {
        let handles: Vec<_> = ctx
            .devices
            .iter()
            .zip(presealed.iter_mut())
            .map(|(d, pre)| s.spawn(move || worker(ctx, d, pre, window_start, window_end)))
            .collect();
        let split = ctx.server_pid.and_then(|pid| {
            Split::measure(pid, window_start, window_end)
                .map_err(|e| eprintln!("warning: cannot read the CPU time of process {pid}: {e:#}"))
                .ok()
        });
        (handles.into_iter().map(|h| h.join().expect("worker panicked")).collect(), split)
    });
    let wall = t0.elapsed();
    let cpu = crate::procstat::process_time().saturating_sub(cpu0);
    let tally = tallies.into_iter().fold(Tally::default(), |mut t, w| {
        t.absorb(w);
        t
    });
    Window { tally, secs: duration.as_secs_f64(), wall, cpu, split }
}

/// Prints the human summary on stderr and `fields` plus the common ones on stdout.
fn report(o: &Options, mut w: Window, fields: &str) {
    let t = &mut w.tally;
    t.latencies.finish();
    let (p50, p99) = (t.latencies.percentile(50.0), t.latencies.percentile(99.0));
    let cpu_pct = 100.0 * w.cpu.as_secs_f64() / w.wall.as_secs_f64().max(1e-9);
    eprintln!(
        "{} workers on {} devices: {:.1} passcodes/s over {:.2} s; ok {}, errors {}",
        o.concurrency,
        o.devices,
        t.ok as f64 / w.secs.max(1e-9),
        w.secs,
        t.ok,
        t.errors
    );
    eprintln!("  latency p50 {p50} µs, p99 {p99} µs ({} samples)", t.latencies.len());
    eprintln!(
        "  client CPU {:.2} s in {:.2} s wall ({cpu_pct:.0}% of one core); {} of the requests were pre-sealed",
        w.cpu.as_secs_f64(),
        w.wall.as_secs_f64(),
        t.presealed_used
    );
    if let Some(e) = &t.first_error {
        eprintln!("  first error: {e}");
    }
    println!(
        "{fields} p50_us={p50} p99_us={p99} ok={} errors={} secs={:.3} workers={} devices={} cpu_secs={:.2} \
         cpu_pct={cpu_pct:.1} presealed={}",
        t.ok,
        t.errors,
        w.secs,
        o.concurrency,
        o.devices,
        w.cpu.as_secs_f64(),
        t.presealed_used
    );
}

/// The median; the mean of the middle two for an even count.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn nonce() -> String {
    b64(&rand::random::<[u8; 16]>())
}

/// RSA key generation dominates setup (~0.3 s a key): spread it over the cores.
fn generate_keys(n: usize) -> Vec<DeviceKey> {
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get()).min(n.max(1));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let count = n / threads + usize::from(t < n % threads);
                s.spawn(move || (0..count).map(|_| DeviceKey::generate()).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("key generation panicked")).collect()
    })
}

fn post(agent: &ureq::Agent, url: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let r = agent.post(url).header("content-type", "application/json").send(body)?;
    let status = r.status().as_u16();
    Ok((status, r.into_body().read_to_string()?))
}

/// Registers one device; returns its registration code. Waits out the registration rate
/// limit (per source address) when many devices are asked for.
fn register(
    agent: &ureq::Agent,
    base: &str,
    domain: DomainCode,
    server_public: &[u8],
    key: &DeviceKey,
) -> anyhow::Result<String> {
    loop {
        let body = RegisterBody {
            device_public_key: b64(&key.public_key_der()),
            pin: PIN.into(),
            timestamp: now(),
            nonce: nonce(),
            enrollment_code: None,
        };
        let (sealed, rkey) = seal_signed(Purpose::Register, domain, server_public, &serde_json::to_string(&body)?, key)
            .map_err(|_| anyhow::anyhow!("sealing a registration failed"))?;
        let (status, text) = post(agent, &format!("{base}/v1/register"), &serde_json::to_string(&sealed)?)?;
        if status == 429 {
            std::thread::sleep(Duration::from_secs(3));
            continue;
        }
        anyhow::ensure!(status == 200, "registration refused: HTTP {status}: {text}");
        let reply: SealedReply = serde_json::from_str(&text).context("registration reply")?;
        match open_reply::<Registered>(&rkey, &reply).map_err(|_| anyhow::anyhow!("cannot open registration reply"))? {
            Reply::Ok(r) => {
                let nonce = unb64(&r.server_nonce).map_err(|_| anyhow::anyhow!("bad server nonce"))?;
                return Ok(registration_code(server_public, &r.device_id, &nonce));
            }
            Reply::Error(e) => anyhow::bail!("registration refused: {e:?}"),
        }
    }
}

/// A passcode request with a fresh nonce and the current time, sealed and signed.
fn seal_passcode(domain: DomainCode, server_public: &[u8], d: &Device) -> anyhow::Result<(SealedBody, ResponseKey)> {
    let body = PasscodeBody { device_id: d.id.clone(), pin: PIN.into(), timestamp: now(), nonce: nonce() };
    seal_signed(Purpose::Passcode, domain, server_public, &serde_json::to_string(&body)?, &d.key)
        .map_err(|_| anyhow::anyhow!("sealing a passcode request failed"))
}

/// One device, one request at a time, until the window closes.
fn worker(
    ctx: &Ctx<'_>,
    d: &Device,
    presealed: &mut std::vec::IntoIter<(SealedBody, ResponseKey)>,
    window_start: Instant,
    window_end: Instant,
) -> Tally {
    let (domain, server_public) = (ctx.domain, ctx.server_public);
    let agent = agent();
    let url = format!("{}/v1/passcode", ctx.base);
    let mut tally = Tally::default();
    while Instant::now() < window_end {
        let (req, from_store) = match presealed.next() {
            Some(r) => (Ok(r), true),
            None => (seal_passcode(domain, server_public, d), false),
        };
        let sent = Instant::now();
        let outcome = req.and_then(|(sealed, key)| {
            let (status, text) = post(&agent, &url, &serde_json::to_string(&sealed)?)?;
            let reply: SealedReply =
                serde_json::from_str(&text).map_err(|_| anyhow::anyhow!("HTTP {status}, not sealed: {text}"))?;
            match open_reply::<Passcode>(&key, &reply).map_err(|_| anyhow::anyhow!("cannot open the reply"))? {
                Reply::Ok(p) if !p.passcode.is_empty() => Ok(()),
                Reply::Ok(_) => anyhow::bail!("empty passcode"),
                Reply::Error(e) => anyhow::bail!("HTTP {status}: {e:?}"),
            }
        });
        let done = Instant::now();
        if sent < window_start || done > window_end {
            continue;
        }
        tally.presealed_used += u64::from(from_store);
        match outcome {
            Ok(()) => {
                tally.ok += 1;
                let micros = done.duration_since(sent).as_micros();
                tally.latencies.record(u32::try_from(micros).unwrap_or(u32::MAX));
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    tally
}
