//! Slow start: the effective weight of an endpoint that has just become healthy, ramping from a
//! fraction of its configured weight to all of it over a window, so that a cold endpoint (empty
//! caches, unwarmed JIT, no pooled connections) is not handed its full share at once.
//!
//! The engine computes these weights when it builds a [`crate::CandidateSet`] for a health
//! publication; the balancers only ever see the result.

use std::time::Duration;

/// Effective weight during slow start: linear from `min_percent`% of `weight` (capped at 100%)
/// when the endpoint has just become healthy to `weight` once it has been healthy for `window`,
/// never below 1. A weight of 0 stays 0 (the endpoint takes no traffic at all); a zero window
/// means no slow start.
pub fn slow_start_weight(
    weight: u32,
    healthy_for: Duration,
    window: Duration,
    min_percent: u32,
) -> u32 {
    slow_start_weight_with_aggression(weight, healthy_for, window, min_percent, 1.0)
}

/// [`slow_start_weight`] with a ramp shape: the fraction of the window elapsed is raised to the
/// power `1 / aggression` (Envoy's parameter) before interpolating. `aggression` 1 is linear,
/// above 1 gives traffic sooner (concave ramp), below 1 later (convex ramp). A non-finite or
/// non-positive `aggression` counts as 1.
pub fn slow_start_weight_with_aggression(
    weight: u32,
    healthy_for: Duration,
    window: Duration,
    min_percent: u32,
    aggression: f64,
) -> u32 {
    if weight == 0 {
        return 0;
    }
    if window.is_zero() || healthy_for >= window {
        return weight;
    }
    let floor = u64::from(weight) * u64::from(min_percent.min(100)) / 100;
    let span = u64::from(weight) - floor;
    let ramp = if aggression == 1.0 || !aggression.is_finite() || aggression <= 0.0 {
        // Exact integer interpolation for the linear case.
        (u128::from(span) * healthy_for.as_nanos() / window.as_nanos()) as u64
    } else {
        let fraction = healthy_for.as_secs_f64() / window.as_secs_f64();
        (span as f64 * fraction.powf(1.0 / aggression)).floor() as u64
    };
    ((floor + ramp.min(span)) as u32).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn linear_ramp_from_the_floor() {
        let w = |t| slow_start_weight(100, secs(t), secs(60), 10);
        assert_eq!(w(0), 10);
        assert_eq!(w(15), 32); // 10 + 90 * 1/4 = 32.5
        assert_eq!(w(30), 55);
        assert_eq!(w(45), 77); // 10 + 67.5
        assert_eq!(w(59), 98); // 10 + 88.5
        assert_eq!(w(60), 100);
        assert_eq!(w(600), 100);
        assert_eq!(
            slow_start_weight(100, Duration::from_millis(30_500), secs(60), 10),
            55
        );
    }

    #[test]
    fn never_below_one_and_zero_stays_zero() {
        assert_eq!(slow_start_weight(1, secs(0), secs(60), 0), 1);
        assert_eq!(slow_start_weight(3, secs(1), secs(60), 10), 1);
        assert_eq!(slow_start_weight(0, secs(1), secs(60), 10), 0);
        assert_eq!(slow_start_weight(0, secs(100), secs(60), 10), 0);
    }

    #[test]
    fn no_window_or_full_floor_means_full_weight() {
        assert_eq!(slow_start_weight(7, secs(0), Duration::ZERO, 10), 7);
        assert_eq!(slow_start_weight(40, secs(0), secs(60), 100), 40);
        assert_eq!(slow_start_weight(40, secs(0), secs(60), 250), 40);
        assert_eq!(
            slow_start_weight(u32::MAX, secs(30), secs(60), 0),
            u32::MAX / 2
        );
    }

    #[test]
    fn aggression_bends_the_ramp() {
        let at = |a| slow_start_weight_with_aggression(100, secs(15), secs(60), 0, a);
        assert_eq!(at(1.0), 25);
        assert_eq!(at(2.0), 50); // sqrt(1/4)
        assert_eq!(at(0.5), 6); // (1/4)^2 = 6.25
        assert_eq!(at(f64::NAN), 25);
        assert_eq!(at(-3.0), 25);
        assert_eq!(
            slow_start_weight_with_aggression(100, secs(60), secs(60), 0, 2.0),
            100
        );
    }
}
