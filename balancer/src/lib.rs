//! Load-balancing algorithms, pure: no I/O, no clocks of their own, no locks. Each shard owns
//! its balancer state and asks it to pick an endpoint index out of a cluster's endpoint slice.
//!
//! This crate grows the weighted, least-request, peak-EWMA and consistent-hashing balancers;
//! round robin is the baseline every cluster starts with.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// Plain round robin over `n` endpoints, skipping those the caller says are unavailable.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    /// A round robin starting at `start` (shards start at different offsets so that they do
    /// not all hit the same endpoint first).
    pub fn new(start: usize) -> Self {
        RoundRobin { next: start }
    }

    /// The next endpoint among `n` for which `usable(i)` holds, or `None` if none does.
    pub fn pick(&mut self, n: usize, mut usable: impl FnMut(usize) -> bool) -> Option<usize> {
        if n == 0 {
            return None;
        }
        for _ in 0..n {
            let i = self.next % n;
            self.next = self.next.wrapping_add(1);
            if usable(i) {
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_evenly() {
        let mut rr = RoundRobin::new(0);
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[rr.pick(3, |_| true).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    #[test]
    fn skips_unusable_and_reports_none() {
        let mut rr = RoundRobin::new(5);
        for _ in 0..10 {
            assert_eq!(rr.pick(3, |i| i == 1), Some(1));
        }
        assert_eq!(rr.pick(3, |_| false), None);
        assert_eq!(rr.pick(0, |_| true), None);
    }
}
