//! The plain [`RoundRobin`] over an endpoint count: the baseline the engine has used since before
//! the candidate-set balancers existed. It owns nothing but its cursor; [`crate::Balancer`] with
//! [`crate::Algorithm::RoundRobin`] is the candidate-set equivalent.

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
