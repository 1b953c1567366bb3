//! `remap`: a configuration reload keeps the state of endpoints that stay.

use std::time::{Duration, Instant};

use headwater_balancer::{Algorithm, Balancer, CandidateSet};

const MS: Duration = Duration::from_millis(1);

#[test]
fn in_flight_follows_endpoints_to_their_new_index() {
    let now = Instant::now();
    for algorithm in Algorithm::ALL {
        let mut b = Balancer::new(algorithm, 4, 0);
        for (e, n) in [(0, 1), (1, 2), (2, 3), (3, 4)] {
            for _ in 0..n {
                b.start(e, now);
            }
        }
        // Endpoint 1 leaves; 3 moves to 0, 0 to 1, 2 stays; a new one arrives at 3.
        b.remap(&[Some(1), None, Some(2), Some(0)], 4);
        let got: Vec<u32> = (0..4).map(|e| b.in_flight(e)).collect();
        assert_eq!(got, [4, 1, 3, 0], "{algorithm}");
        assert_eq!(b.endpoints(), 4);
        // A finish under the new index lands on the right endpoint.
        b.finish(0, Some(MS), now);
        assert_eq!(b.in_flight(0), 3);
    }
}

#[test]
fn ewma_follows_endpoints_and_new_ones_start_without_samples() {
    let now = Instant::now();
    let mut b = Balancer::new(Algorithm::PeakEwma, 3, 0);
    for (e, ms) in [(0, 10), (1, 20), (2, 30)] {
        b.start(e, now);
        b.finish(e, Some(ms * MS), now);
    }
    b.remap(&[Some(2), Some(0), None], 4);
    assert_eq!(b.ewma(0, now), Some(20 * MS));
    assert_eq!(b.ewma(2, now), Some(10 * MS));
    assert_eq!(b.ewma(1, now), None);
    assert_eq!(b.ewma(3, now), None);
    assert_eq!(b.ewma(4, now), None);
}

#[test]
fn shrinking_drops_state_and_out_of_range_targets_are_ignored() {
    let now = Instant::now();
    let mut b = Balancer::new(Algorithm::LeastRequest, 3, 0);
    b.start(0, now);
    b.start(2, now);
    b.remap(&[Some(0), None, Some(5)], 1);
    assert_eq!(b.endpoints(), 1);
    assert_eq!(b.in_flight(0), 1);
    assert_eq!(b.in_flight(2), 0);
    // A map shorter than the old list: the rest are removed.
    let mut b = Balancer::new(Algorithm::LeastRequest, 3, 0);
    b.start(2, now);
    b.remap(&[Some(0)], 3);
    assert_eq!(b.in_flight(2), 0);
}

#[test]
fn smooth_weighted_sequence_continues_across_a_reload() {
    // A reload inserts a new endpoint at index 0, shifting the others by one: the sequence of
    // *endpoints* picked is the one an unreloaded balancer produces.
    let now = Instant::now();
    let set = CandidateSet::new([(0, 5), (1, 1), (2, 1)]);
    let mut plain = Balancer::new(Algorithm::Weighted, 3, 0);
    let mut reloaded = Balancer::new(Algorithm::Weighted, 3, 0);
    for _ in 0..3 {
        let e = plain.pick(&set, |_| false, None, now);
        assert_eq!(reloaded.pick(&set, |_| false, None, now), e);
    }
    reloaded.remap(&[Some(1), Some(2), Some(3)], 4);
    let shifted = CandidateSet::new([(1, 5), (2, 1), (3, 1)]);
    for _ in 0..20 {
        let e = plain.pick(&set, |_| false, None, now).unwrap();
        assert_eq!(reloaded.pick(&shifted, |_| false, None, now), Some(e + 1));
    }
    // Without the carried state the sequence would restart: a fresh balancer differs.
    let mut fresh = Balancer::new(Algorithm::Weighted, 4, 0);
    let restarted: Vec<usize> = (0..7)
        .map(|_| fresh.pick(&shifted, |_| false, None, now).unwrap())
        .collect();
    let continued: Vec<usize> = (0..7)
        .map(|_| reloaded.pick(&shifted, |_| false, None, now).unwrap())
        .collect();
    assert_ne!(restarted, continued);
}

#[test]
fn round_robin_continues_after_the_last_pick() {
    let now = Instant::now();
    let set = CandidateSet::new((0..4).map(|e| (e, 1)));
    let mut b = Balancer::new(Algorithm::RoundRobin, 4, 0);
    assert_eq!(b.pick(&set, |_| false, None, now), Some(0));
    assert_eq!(b.pick(&set, |_| false, None, now), Some(1));
    // Endpoint 2 is ejected (a new set): the rotation goes on after 1.
    let without_2 = CandidateSet::new([(0, 1), (1, 1), (3, 1)]);
    assert_eq!(b.pick(&without_2, |_| false, None, now), Some(3));
    assert_eq!(b.pick(&without_2, |_| false, None, now), Some(0));
    // Back to the first set: its own cursor is where it was.
    assert_eq!(b.pick(&set, |_| false, None, now), Some(2));
    // A reload that moves endpoint 2 to index 0: the next pick continues after it.
    b.remap(&[Some(1), Some(2), Some(0), Some(3)], 4);
    assert_eq!(b.pick(&set, |_| false, None, now), Some(1));
}

#[test]
fn new_endpoints_get_identities_no_remaining_one_has() {
    let mut b = Balancer::new(Algorithm::Maglev, 4, 0);
    b.set_identities(&[100, 4, 5, 200]);
    // 0 and 3 stay (at 0 and 1); 2, 3 and 4 are new.
    b.remap(&[Some(0), None, None, Some(1)], 5);
    let ids: Vec<u64> = (0..5).map(|e| b.identity(e)).collect();
    assert_eq!(ids, [100, 200, 2, 3, 4]);
    let mut b = Balancer::new(Algorithm::Maglev, 3, 0);
    // Defaults carried: old 2 keeps identity 2 at index 1, so the new endpoint at index 2
    // takes 3.
    b.remap(&[None, Some(0), Some(1)], 3);
    let ids: Vec<u64> = (0..3).map(|e| b.identity(e)).collect();
    assert_eq!(ids, [1, 2, 3]);
    // Growing by one: identity 3 is taken (by index 2), so the newcomer gets 4.
    b.remap(&[Some(0), Some(1), Some(2)], 4);
    assert_eq!(b.identity(3), 4);
}
