//! The bare argon2id verify rate: `tessera_server::domain::pin::verify` (the server's own
//! call, `Argon2::default()`) of a hash made by `pin::hash`, on T threads, with nothing
//! else around it. The ceiling for issuance, which does one such verify per passcode.

use std::time::{Duration, Instant};

use tessera_server::domain::pin;

/// One window of bare verifies.
pub struct Measured {
    /// Verifies that finished inside the window, per second.
    pub rate: f64,
    pub verifies: u64,
    /// The process's CPU time over the window (every thread, to their last verify's end).
    pub cpu: Duration,
    /// The verifying threads' CPU time up to the end of their last verify inside the
    /// window: what the counted verifies cost, without the one each thread has under way
    /// when the window closes.
    pub verify_cpu: Duration,
    pub wall: Duration,
}

impl Measured {
    /// CPU milliseconds per verify.
    pub fn ms_per_verify(&self) -> f64 {
        if self.verifies == 0 { 0.0 } else { self.verify_cpu.as_secs_f64() * 1e3 / self.verifies as f64 }
    }
}

/// Verifies on `threads` threads for `duration`.
pub fn measure(threads: usize, duration: Duration) -> anyhow::Result<Measured> {
    let threads = threads.max(1);
    let secret = "bench-pin-246810";
    let hash = pin::hash(secret)?;
    anyhow::ensure!(pin::verify(secret, &hash), "argon2id verify of a fresh hash failed");
    let cpu0 = crate::procstat::process_time();
    let t0 = Instant::now();
    let end = t0 + duration;
    let counts: Vec<(u64, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let (mut n, mut counted_cpu) = (0u64, Duration::ZERO);
                    let thread_cpu0 = crate::procstat::this_thread();
                    // Only verifies that finish inside the window count.
                    while Instant::now() < end {
                        let ok = pin::verify(secret, &hash);
                        if ok && Instant::now() <= end {
                            n += 1;
                            counted_cpu = crate::procstat::this_thread().saturating_sub(thread_cpu0);
                        }
                    }
                    (n, counted_cpu)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("argon2 thread panicked")).collect()
    });
    let wall = t0.elapsed();
    let cpu = crate::procstat::process_time().saturating_sub(cpu0);
    let verifies: u64 = counts.iter().map(|(n, _)| n).sum();
    let verify_cpu = counts.iter().map(|(_, c)| *c).sum();
    let rate = verifies as f64 / duration.as_secs_f64().max(1e-9);
    Ok(Measured { rate, verifies, cpu, verify_cpu, wall })
}

pub fn run(threads: usize, duration: Duration) -> anyhow::Result<()> {
    let threads = threads.max(1);
    let m = measure(threads, duration)?;
    let secs = duration.as_secs_f64();
    eprintln!(
        "{threads} threads: {:.1} argon2id verifies/s over {secs:.2} s ({} verifies, {:.1} ms CPU each)",
        m.rate,
        m.verifies,
        m.ms_per_verify()
    );
    println!(
        "vps={:.1} verifies={} threads={threads} secs={secs:.3} cpu_secs={:.2} wall_secs={:.2} ms_per_verify={:.2}",
        m.rate,
        m.verifies,
        m.cpu.as_secs_f64(),
        m.wall.as_secs_f64(),
        m.ms_per_verify()
    );
    Ok(())
}
