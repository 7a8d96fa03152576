//! The process's own CPU time, to show the generator is cheap. Read from /proc/self/stat
//! (utime + stime: the same kernel accounting getrusage(RUSAGE_SELF) reports) because the
//! workspace forbids `unsafe` and no safe getrusage wrapper is in the dependency tree.

use std::time::Duration;

/// User and system CPU time of this process so far (10 ms resolution).
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
