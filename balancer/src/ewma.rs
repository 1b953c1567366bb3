//! The peak-sensitive latency EWMA that one endpoint carries under peak-EWMA balancing: how a
//! sample updates it, and what it reads as at a later instant.
//!
//! Between samples the value decays towards zero with time constant `decay`: read at `now`,
//! it is the stored value times `exp(-elapsed / decay)`, `elapsed` being the time since the last
//! sample (what Finagle's and Tower's peak EWMA do on every read). An endpoint that stopped
//! being picked because it looked slow therefore looks better and better until it is picked
//! again and a fresh sample decides: that is how a slow endpoint that got fast again comes back.
//! An endpoint in steady use reads as its latest samples.
//!
//! A sample above the current value replaces it at once (peaks count in full, immediately). A
//! sample at or below it pulls the current value towards itself with weight
//! `1 - exp(-elapsed / decay)`: the longer since the last sample, the more a new one counts.
//! The value never rises on a sample below it.

use std::time::{Duration, Instant};

/// One endpoint's estimate, in nanoseconds.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PeakEwma {
    value: f64,
    /// When the last sample came; `None` before the first one.
    at: Option<Instant>,
}

/// Nanoseconds of a duration as a float.
#[inline]
pub(crate) fn nanos(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

impl PeakEwma {
    /// Records a sample of `sample_ns` at `now`; `decay_ns` is the time constant (> 0).
    pub(crate) fn observe(&mut self, sample_ns: f64, now: Instant, decay_ns: f64) {
        match self.at {
            None => {
                self.value = sample_ns;
                self.at = Some(now);
            }
            Some(at) => {
                let keep = (-nanos(now.saturating_duration_since(at)) / decay_ns).exp();
                let current = self.value * keep;
                self.value = if sample_ns > current {
                    sample_ns
                } else {
                    current * keep + sample_ns * (1.0 - keep)
                };
                // A sample stamped earlier than the last one (out-of-order finish) does not move
                // the clock back.
                self.at = Some(at.max(now));
            }
        }
    }

    /// The estimate at `now` in nanoseconds, `None` before the first sample.
    #[inline]
    pub(crate) fn read(&self, now: Instant, decay_ns: f64) -> Option<f64> {
        let at = self.at?;
        let elapsed = now.saturating_duration_since(at);
        if elapsed.is_zero() {
            return Some(self.value);
        }
        Some(self.value * (-nanos(elapsed) / decay_ns).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1e6;
    const DECAY: f64 = 10_000.0 * MS;

    #[test]
    fn peaks_replace_and_lower_samples_blend_by_elapsed_time() {
        let t0 = Instant::now();
        let mut e = PeakEwma::default();
        assert_eq!(e.read(t0, DECAY), None);

        e.observe(10.0 * MS, t0, DECAY);
        assert_eq!(e.read(t0, DECAY), Some(10.0 * MS));
        // A peak counts at once.
        e.observe(50.0 * MS, t0 + Duration::from_millis(1), DECAY);
        assert_eq!(e.value, 50.0 * MS);
        // A lower sample one decay constant later: the value has decayed to 50/e by then, and
        // the sample pulls it with weight 1 - 1/e.
        e.observe(
            10.0 * MS,
            t0 + Duration::from_millis(1) + Duration::from_secs(10),
            DECAY,
        );
        let e1 = std::f64::consts::E;
        let want = 50.0 * MS / (e1 * e1) + 10.0 * MS * (1.0 - 1.0 / e1);
        assert!(want < 50.0 * MS / e1 && want > 10.0 * MS);
        assert!((e.value - want).abs() < 1.0, "{} vs {want}", e.value);
        // A lower sample right after barely moves it.
        let before = e.value;
        assert!(1.0 * MS < before);
        e.observe(
            1.0 * MS,
            t0 + Duration::from_millis(2) + Duration::from_secs(10),
            DECAY,
        );
        assert!(before - e.value < 0.001 * before);
        // Decayed below a sample, the sample replaces it: a recovered endpoint's first fast
        // sample puts it level with the others at once.
        let later = t0 + Duration::from_secs(60);
        assert!(e.read(later, DECAY).unwrap() < 1.0 * MS);
        e.observe(1.0 * MS, later, DECAY);
        assert_eq!(e.read(later, DECAY), Some(1.0 * MS));
    }

    #[test]
    fn reads_decay_towards_zero_and_time_never_runs_back() {
        let t0 = Instant::now();
        let mut e = PeakEwma::default();
        e.observe(40.0 * MS, t0 + Duration::from_secs(5), DECAY);
        // Reading before the sample's time is reading at it.
        assert_eq!(e.read(t0, DECAY), Some(40.0 * MS));
        let later = e.read(t0 + Duration::from_secs(15), DECAY).unwrap();
        assert!((later - 40.0 * MS / std::f64::consts::E).abs() < 1.0);
        // An out-of-order sample keeps the later timestamp.
        e.observe(20.0 * MS, t0, DECAY);
        assert_eq!(e.at, Some(t0 + Duration::from_secs(5)));
        assert_eq!(e.value, 40.0 * MS, "zero elapsed time: no weight");
    }
}
