//! `avoid` and `None` for every algorithm, and determinism under a seed.

use std::time::{Duration, Instant};

use headwater_balancer::{Algorithm, Balancer, CandidateSet};

const KEYED: [Option<u64>; 2] = [None, Some(0x9e37_79b9_7f4a_7c15)];

#[test]
fn an_empty_set_has_no_pick() {
    let now = Instant::now();
    for algorithm in Algorithm::ALL {
        let mut b = Balancer::new(algorithm, 4, 1);
        for key in KEYED {
            assert_eq!(b.pick(&CandidateSet::default(), |_| false, key, now), None);
            // Weight-0 members are not members.
            let zero = CandidateSet::new([(0, 0), (1, 0)]);
            assert_eq!(b.pick(&zero, |_| false, key, now), None, "{algorithm}");
        }
    }
}

#[test]
fn everything_avoided_has_no_pick() {
    let now = Instant::now();
    let set = CandidateSet::new([(0, 1), (1, 5), (3, 2)]);
    for algorithm in Algorithm::ALL {
        let mut b = Balancer::new(algorithm, 4, 1);
        for key in KEYED {
            for _ in 0..20 {
                assert_eq!(b.pick(&set, |_| true, key, now), None, "{algorithm}");
                // Avoiding every member (and a non-member) is still everything.
                assert_eq!(b.pick(&set, |e| e != 2, key, now), None, "{algorithm}");
            }
        }
    }
}

#[test]
fn the_one_member_not_avoided_is_picked() {
    let now = Instant::now();
    let set = CandidateSet::new((0..6).map(|e| (e, 1 + e as u32)));
    for algorithm in Algorithm::ALL {
        let mut b = Balancer::new(algorithm, 6, 1);
        for key in KEYED {
            for keep in 0..6 {
                for _ in 0..10 {
                    assert_eq!(
                        b.pick(&set, |e| e != keep, key, now),
                        Some(keep),
                        "{algorithm} {key:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn picks_are_members_never_avoided_and_every_eligible_one_comes_up() {
    let now = Instant::now();
    let set = CandidateSet::new([(1, 3), (2, 1), (4, 2), (6, 1), (7, 4)]);
    let mut rng = fastrand::Rng::with_seed(5);
    for algorithm in Algorithm::ALL {
        let mut b = Balancer::new(algorithm, 8, 1);
        for round in 0..200 {
            // A random avoid set of up to 3 endpoints (members or not).
            let avoided: Vec<usize> = (0..rng.usize(0..4)).map(|_| rng.usize(0..8)).collect();
            let eligible: Vec<usize> = set
                .members()
                .map(|(e, _)| e)
                .filter(|e| !avoided.contains(e))
                .collect();
            let mut seen = Vec::new();
            for i in 0..200u64 {
                let key = (algorithm == Algorithm::Maglev).then_some(i.wrapping_mul(0x2545_f491));
                let got = b.pick(&set, |e| avoided.contains(&e), key, now);
                match got {
                    Some(e) => {
                        assert!(
                            eligible.contains(&e),
                            "{algorithm} round {round}: {e} {avoided:?}"
                        );
                        if !seen.contains(&e) {
                            seen.push(e);
                        }
                        b.start(e, now);
                        b.finish(e, Some(Duration::from_millis(1)), now);
                    }
                    None => assert!(eligible.is_empty(), "{algorithm}: {avoided:?}"),
                }
            }
            seen.sort_unstable();
            assert_eq!(seen, eligible, "{algorithm} round {round}: {avoided:?}");
        }
    }
}

#[test]
fn same_seed_same_picks_different_seed_different_picks() {
    let set = CandidateSet::new((0..16).map(|e| (e, 1 + (e % 3) as u32)));
    let base = Instant::now();
    for algorithm in Algorithm::ALL {
        let run = |seed: u64| -> Vec<usize> {
            let mut b = Balancer::new(algorithm, 16, seed);
            (0..500u64)
                .map(|i| {
                    let now = base + Duration::from_millis(i);
                    let key = (algorithm == Algorithm::Maglev && i % 2 == 0).then_some(i * 7919);
                    let e = b.pick(&set, |e| e == (i as usize) % 16, key, now).unwrap();
                    b.start(e, now);
                    if i % 3 == 0 {
                        b.finish(e, Some(Duration::from_micros(100 * (e as u64 + 1))), now);
                    }
                    e
                })
                .collect()
        };
        assert_eq!(run(7), run(7), "{algorithm}");
        if algorithm != Algorithm::Weighted {
            // Smooth WRR has no randomness at all.
            assert_ne!(run(7), run(8), "{algorithm}");
        }
    }
}

#[test]
fn members_beyond_the_endpoint_count_get_state() {
    // A set naming endpoint 9 of a balancer created for 2: state grows instead of panicking.
    let now = Instant::now();
    let set = CandidateSet::new([(0, 1), (9, 1)]);
    for algorithm in Algorithm::ALL {
        let mut b = Balancer::new(algorithm, 2, 1);
        let e = b.pick(&set, |e| e == 0, Some(3), now);
        assert_eq!(e, Some(9), "{algorithm}");
        b.start(9, now);
        assert_eq!(b.in_flight(9), 1);
        assert_eq!(b.endpoints(), 10);
    }
}
