//! Latency percentiles from a sorted vector of microsecond samples: exact, and cheap enough
//! for the few million samples a run collects.

/// Collected latencies in microseconds.
#[derive(Default)]
pub struct Latencies(Vec<u32>);

impl Latencies {
    pub fn record(&mut self, micros: u32) {
        self.0.push(micros);
    }

    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Sorts the samples; call once before [`Latencies::percentile`].
    pub fn finish(&mut self) {
        self.0.sort_unstable();
    }

    /// The `p`-th percentile (0-100) of the sorted samples, 0 when there are none.
    pub fn percentile(&self, p: f64) -> u32 {
        if self.0.is_empty() {
            return 0;
        }
        // The epsilon keeps 99.9 % of 1000 at rank 999 despite binary floating point.
        let rank = (p / 100.0 * self.0.len() as f64 - 1e-9).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut l = Latencies::default();
        for v in (1..=1000).rev() {
            l.record(v);
        }
        l.finish();
        assert_eq!(l.percentile(50.0), 500);
        assert_eq!(l.percentile(99.0), 990);
        assert_eq!(l.percentile(99.9), 999);
        assert_eq!(l.percentile(100.0), 1000);
        assert_eq!(Latencies::default().percentile(99.0), 0);
    }
}
