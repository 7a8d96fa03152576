//! The bare argon2id verify rate: `tessera_server::domain::pin::verify` (the server's own
//! call, `Argon2::default()`) of a hash made by `pin::hash`, on T threads, with nothing
//! else around it. The ceiling for issuance, which does one such verify per passcode.

use std::time::{Duration, Instant};

use tessera_server::domain::pin;

pub fn run(threads: usize, duration: Duration) -> anyhow::Result<()> {
    let threads = threads.max(1);
    let secret = "bench-pin-246810";
    let hash = pin::hash(secret)?;
    anyhow::ensure!(pin::verify(secret, &hash), "argon2id verify of a fresh hash failed");
    let cpu0 = crate::cpu::process_time();
    let t0 = Instant::now();
    let end = t0 + duration;
    let counts: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0u64;
                    // Only verifies that finish inside the window count.
                    while Instant::now() < end {
                        let ok = pin::verify(secret, &hash);
                        if ok && Instant::now() <= end {
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("argon2 thread panicked")).collect()
    });
    let wall = t0.elapsed();
    let cpu = crate::cpu::process_time().saturating_sub(cpu0);
    let total: u64 = counts.iter().sum();
    let secs = duration.as_secs_f64().max(1e-9);
    let rate = total as f64 / secs;
    let per_verify_ms = if total > 0 { cpu.as_secs_f64() * 1e3 / total as f64 } else { 0.0 };
    eprintln!(
        "{threads} threads: {rate:.1} argon2id verifies/s over {secs:.2} s ({total} verifies, {per_verify_ms:.1} ms CPU each)"
    );
    println!(
        "vps={rate:.1} verifies={total} threads={threads} secs={secs:.3} cpu_secs={:.2} wall_secs={:.2} ms_per_verify={per_verify_ms:.2}",
        cpu.as_secs_f64(),
        wall.as_secs_f64()
    );
    Ok(())
}
