//! Slow start: the ramp values, and that a ramped weight ramps an endpoint's share.

use std::time::{Duration, Instant};

use headwater_balancer::{slow_start_weight, Algorithm, Balancer, CandidateSet};

#[test]
fn ramp_values_over_a_window() {
    let window = Duration::from_secs(30);
    let at = |s: u64| slow_start_weight(200, Duration::from_secs(s), window, 10);
    let ramp: Vec<u32> = [0, 3, 6, 15, 24, 29, 30, 31].into_iter().map(at).collect();
    // 20 + 180 * t / 30.
    assert_eq!(ramp, [20, 38, 56, 110, 164, 194, 200, 200]);
    // Monotonic at millisecond resolution, from the floor to the weight.
    let mut last = 0;
    for ms in (0..=30_000).step_by(7) {
        let w = slow_start_weight(200, Duration::from_millis(ms), window, 10);
        assert!(w >= last && (20..=200).contains(&w));
        last = w;
    }
    assert_eq!(last, 199);
    // Floors of 0% and 100%.
    assert_eq!(slow_start_weight(10, Duration::ZERO, window, 0), 1);
    assert_eq!(slow_start_weight(10, Duration::from_secs(15), window, 0), 5);
    assert_eq!(slow_start_weight(10, Duration::ZERO, window, 100), 10);
}

#[test]
fn a_slow_starting_endpoint_ramps_its_share() {
    // Three endpoints of weight 100; endpoint 2 just became healthy with a 60 s window from 10%.
    let now = Instant::now();
    let window = Duration::from_secs(60);
    let mut shares = Vec::new();
    for t in [0u64, 30, 60] {
        let w2 = slow_start_weight(100, Duration::from_secs(t), window, 10);
        let set = CandidateSet::new([(0, 100), (1, 100), (2, w2)]);
        let mut b = Balancer::new(Algorithm::LeastRequest, 3, 1);
        let mut twos = 0;
        for _ in 0..30_000 {
            let e = b.pick(&set, |_| false, None, now).unwrap();
            b.start(e, now);
            b.finish(e, None, now);
            twos += u32::from(e == 2);
        }
        shares.push(f64::from(twos) / 30_000.0);
    }
    println!("endpoint 2's share at 0 s, 30 s, 60 s: {shares:.4?}");
    // 10 / 210, 55 / 255, 100 / 300.
    for (share, want) in shares.iter().zip([10.0 / 210.0, 55.0 / 255.0, 1.0 / 3.0]) {
        assert!((share - want).abs() < 0.01, "{shares:?}");
    }
}
