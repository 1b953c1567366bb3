//! Power of two choices by in-flight requests per unit of weight.

use std::time::Instant;

use headwater_balancer::{Algorithm, Balancer, CandidateSet};

fn balancer(endpoints: usize) -> Balancer {
    Balancer::new(Algorithm::LeastRequest, endpoints, 9)
}

#[test]
fn two_members_always_go_to_the_less_loaded() {
    let now = Instant::now();
    let set = CandidateSet::new([(0, 1), (1, 1)]);
    let mut b = balancer(2);
    for _ in 0..3 {
        b.start(0, now);
    }
    for _ in 0..1000 {
        // Without start: the load stays as it is.
        assert_eq!(b.pick(&set, |_| false, None, now), Some(1));
    }
}

#[test]
fn the_most_loaded_never_wins_and_the_shares_are_those_of_p2c() {
    let now = Instant::now();
    let set = CandidateSet::new((0..4).map(|e| (e, 1)));
    let mut b = balancer(4);
    for (e, n) in [(0, 8), (1, 4)] {
        for _ in 0..n {
            b.start(e, now);
        }
    }
    let mut counts = [0u32; 4];
    for _ in 0..60_000 {
        counts[b.pick(&set, |_| false, None, now).unwrap()] += 1;
    }
    println!("in flight 8, 4, 0, 0: picks {counts:?}");
    // Endpoint 0 loses every pair; 1 wins only the pair {0, 1} (1 in 6); 2 and 3 split the rest
    // (each wins its pairs with 0 and 1, and half of the pair {2, 3} by draw order).
    assert_eq!(counts[0], 0);
    let share1 = f64::from(counts[1]) / 60_000.0;
    assert!((share1 - 1.0 / 6.0).abs() < 0.01, "{counts:?}");
    let share2 = f64::from(counts[2]) / 60_000.0;
    assert!((share2 - 5.0 / 12.0).abs() < 0.01, "{counts:?}");
}

#[test]
fn load_is_compared_per_unit_of_weight() {
    let now = Instant::now();
    // Weights are relative: the same loads decide the same way at weights 1:3 and 1000:3000.
    for scale in [1, 1000] {
        let set = CandidateSet::new([(0, scale), (1, 3 * scale)]);
        let mut b = balancer(2);
        // 1 in flight on weight 1 (1.0 per unit) against 2 on weight 3 (0.67 per unit).
        b.start(0, now);
        b.start(1, now);
        b.start(1, now);
        for _ in 0..100 {
            assert_eq!(b.pick(&set, |_| false, None, now), Some(1), "x{scale}");
        }
        // 3 on weight 3 (1.0) ties with endpoint 0: the first drawn wins, i.e. by weight.
        b.start(1, now);
        let ones = (0..10_000)
            .filter(|_| b.pick(&set, |_| false, None, now) == Some(1))
            .count();
        assert!((7_200..7_800).contains(&ones), "x{scale}: {ones}");
        // 4 on weight 3 (1.33) loses to endpoint 0.
        b.start(1, now);
        for _ in 0..100 {
            assert_eq!(b.pick(&set, |_| false, None, now), Some(0), "x{scale}");
        }
    }
}

/// Keeps 32 requests outstanding over 8 endpoints (each step finishes the oldest and starts a
/// new one) and returns the worst and the mean spread (max - min in flight) seen.
fn spread(algorithm: Algorithm) -> (u32, f64) {
    let now = Instant::now();
    let set = CandidateSet::new((0..8).map(|e| (e, 1)));
    let mut b = Balancer::new(algorithm, 8, 9);
    let mut outstanding = std::collections::VecDeque::new();
    let (mut worst, mut sum, mut n) = (0, 0u64, 0u32);
    for i in 0..20_000 {
        if outstanding.len() == 32 {
            let e = outstanding.pop_front().unwrap();
            b.finish(e, None, now);
        }
        let e = b.pick(&set, |_| false, None, now).unwrap();
        b.start(e, now);
        outstanding.push_back(e);
        if i > 100 {
            let loads: Vec<u32> = (0..8).map(|e| b.in_flight(e)).collect();
            let spread = loads.iter().max().unwrap() - loads.iter().min().unwrap();
            worst = worst.max(spread);
            sum += u64::from(spread);
            n += 1;
        }
    }
    (worst, sum as f64 / f64::from(n))
}

#[test]
fn steady_concurrency_keeps_loads_close() {
    let p2c = spread(Algorithm::LeastRequest);
    let random = spread(Algorithm::Random);
    println!("in-flight spread over 8 endpoints at 32 outstanding (worst, mean): least-request {p2c:?}, random {random:?}");
    // Measured: least-request (7, 2.97), random (12, 5.63). With first-in first-out finishes an
    // endpoint's load is its share of the last 32 picks, which P2C keeps about twice as even.
    assert!(p2c.1 < 3.5, "{p2c:?}");
    assert!(p2c.1 * 1.6 < random.1, "{p2c:?} vs {random:?}");
    assert!(p2c.0 < random.0, "{p2c:?} vs {random:?}");
}

#[test]
fn a_single_member_left_is_picked() {
    let now = Instant::now();
    let set = CandidateSet::new([(0, 1), (1, 1), (2, 1)]);
    let mut b = balancer(3);
    for _ in 0..50 {
        b.start(1, now);
    }
    for _ in 0..100 {
        assert_eq!(b.pick(&set, |e| e != 1, None, now), Some(1));
    }
    let one = CandidateSet::new([(5, 2)]);
    assert_eq!(b.pick(&one, |_| false, None, now), Some(5));
    assert_eq!(b.pick(&one, |_| true, None, now), None);
}

#[test]
fn in_flight_counts_up_and_down_and_never_below_zero() {
    let now = Instant::now();
    let mut b = balancer(2);
    b.start(0, now);
    b.start(0, now);
    assert_eq!(b.in_flight(0), 2);
    b.finish(0, None, now);
    b.finish(0, None, now);
    b.finish(0, None, now);
    assert_eq!(b.in_flight(0), 0);
    // Unknown endpoints are ignored.
    b.start(9, now);
    b.finish(9, None, now);
    assert_eq!(b.in_flight(9), 0);
}
