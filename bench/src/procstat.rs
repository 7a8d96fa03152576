//! CPU time read from /proc: this process's own (to show the generator is cheap), each
//! thread of a process (its `schedstat`, nanoseconds on a CPU) and the machine as a whole
//! (`/proc/stat`, in USER_HZ ticks). The issuance rounds use the last two to split the
//! machine between the server's argon2id threads, the rest of the server, this client,
//! everything else and idle time, so that each run says what its ratio is made of
//! (BENCHMARKS.md, Issuance). Read from /proc because the workspace forbids `unsafe` and no
//! safe getrusage wrapper is in the dependency tree.

use std::collections::BTreeMap;
use std::time::Duration;

/// User and system CPU time of this process so far (10 ms resolution; `/proc/self/stat`,
/// the same kernel accounting getrusage(RUSAGE_SELF) reports).
pub fn process_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return Duration::ZERO };
    // Fields after the parenthesised command name, which may itself contain spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return Duration::ZERO };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, i.e. 11 and 12 after the name.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // USER_HZ is 100 on every Linux architecture we run on.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// The CPU time of the calling thread so far; zero where the kernel does not say.
pub fn this_thread() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat").map_or(Duration::ZERO, |s| schedstat(&s))
}

/// The first field of a `schedstat` line: nanoseconds spent on a CPU.
fn schedstat(line: &str) -> Duration {
    Duration::from_nanos(line.split_whitespace().next().and_then(|f| f.parse().ok()).unwrap_or(0))
}

/// Every thread of a process at one moment: its name and CPU time so far, by thread id.
#[derive(Default)]
pub struct Threads(BTreeMap<u32, (String, Duration)>);

impl Threads {
    /// Reads `/proc/PID/task`; a thread that ends while it is read is left out.
    pub fn read(pid: u32) -> std::io::Result<Self> {
        let mut threads = BTreeMap::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let entry = entry?;
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
            let (Ok(name), Ok(stat)) = (
                std::fs::read_to_string(entry.path().join("comm")),
                std::fs::read_to_string(entry.path().join("schedstat")),
            ) else {
                continue;
            };
            threads.insert(tid, (name.trim_end().to_owned(), schedstat(&stat)));
        }
        Ok(Self(threads))
    }

    /// The CPU time used since `earlier`, summed by thread name (a thread started since
    /// counts from zero).
    pub fn since(&self, earlier: &Threads) -> BTreeMap<String, Duration> {
        let mut used = BTreeMap::<String, Duration>::new();
        for (tid, (name, cpu)) in &self.0 {
            let before = earlier.0.get(tid).map_or(Duration::ZERO, |(_, c)| *c);
            *used.entry(name.clone()).or_default() += cpu.saturating_sub(before);
        }
        used
    }
}

/// The machine's CPU time so far, in USER_HZ ticks (all CPUs together).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    /// Everything: user, nice, system, idle, iowait, irq, softirq, steal.
    pub total: u64,
    /// Idle and waiting for I/O with nothing to run.
    pub idle: u64,
    /// Taken by the hypervisor for something else.
    pub steal: u64,
}

impl Machine {
    pub fn read() -> std::io::Result<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat")?)
            .ok_or_else(|| std::io::Error::other("/proc/stat has no cpu line"))
    }

    /// The aggregate `cpu` line of `/proc/stat` (guest time is inside user time already).
    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let f: Vec<u64> = line.split_whitespace().skip(1).take(8).map(|v| v.parse().unwrap_or(0)).collect();
        if f.len() < 8 {
            return None;
        }
        Some(Self { total: f.iter().sum(), idle: f[3] + f[4], steal: f[7] })
    }

    /// Idle and stolen time as per cent of all of it, for a difference of two readings.
    pub fn idle_and_steal_pct(self) -> (f64, f64) {
        let ticks = self.total.max(1) as f64;
        (100.0 * self.idle as f64 / ticks, 100.0 * self.steal as f64 / ticks)
    }

    pub fn since(self, earlier: Machine) -> Machine {
        Machine {
            total: self.total.saturating_sub(earlier.total),
            idle: self.idle.saturating_sub(earlier.idle),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_line_is_split_into_total_idle_and_steal() {
        let stat = "cpu  100 5 30 400 20 1 2 7 50 0\ncpu0 50 2 15 200 10 0 1 3 25 0\nintr 1\n";
        assert_eq!(Machine::parse(stat), Some(Machine { total: 565, idle: 420, steal: 7 }));
        assert_eq!(Machine::parse("intr 1\n"), None);
        let later = Machine::parse("cpu  150 5 30 430 20 1 2 27 50 0\n").unwrap();
        let (idle, steal) = later.since(Machine::parse(stat).unwrap()).idle_and_steal_pct();
        assert_eq!((idle, steal), (30.0, 20.0), "of 100 ticks: 30 idle, 20 stolen");
    }

    #[test]
    fn a_busy_thread_shows_in_its_process_by_name() {
        let name = "procstat-spin";
        let (go, going) = std::sync::mpsc::channel::<()>();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let spin = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                going.recv().unwrap();
                let t0 = this_thread();
                let mut x = 0u64;
                while this_thread() - t0 < Duration::from_millis(60) {
                    x = x.wrapping_mul(31).wrapping_add(1);
                }
                std::hint::black_box(x);
                done.send(()).unwrap();
                // Alive until read again: a thread that has ended is no longer listed.
                released.recv().unwrap();
            })
            .unwrap();
        let before = Threads::read(std::process::id()).unwrap();
        go.send(()).unwrap();
        finished.recv().unwrap();
        let used = Threads::read(std::process::id()).unwrap().since(&before);
        release.send(()).unwrap();
        spin.join().unwrap();
        let spun = used.get(name).copied().unwrap_or_default();
        assert!(spun >= Duration::from_millis(60), "{name} used {spun:?} between the reads: {used:?}");
    }
}
