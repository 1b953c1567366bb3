//! `plan()`: priority levels and panic mode, every branch; and picking through a plan.

use std::time::Instant;

use headwater_balancer::{plan, Algorithm, Balancer, Member, Plan, Standing, TierKind};

use Standing::{Degraded, Down, Healthy};

fn m(priority: u8, standing: Standing) -> Member {
    Member {
        priority,
        weight: 1,
        standing,
    }
}

/// Each tier as (kind, endpoints).
fn shape(p: &Plan) -> Vec<(TierKind, Vec<usize>)> {
    p.tiers
        .iter()
        .map(|t| (t.kind, t.set.members().map(|(e, _)| e).collect()))
        .collect()
}

#[test]
fn all_healthy_gives_one_healthy_tier_per_level() {
    let members = [m(0, Healthy), m(0, Healthy), m(1, Healthy)];
    let p = plan(&members, 50);
    assert_eq!(
        shape(&p),
        [
            (TierKind::Healthy { level: 0 }, vec![0, 1]),
            (TierKind::Healthy { level: 1 }, vec![2]),
        ]
    );
    assert!(!p.panic() && !p.is_empty());
    assert_eq!(p.len(), 2);
    assert_eq!(p.first().unwrap().level(), 0);
}

#[test]
fn at_or_above_the_threshold_only_the_healthy_serve() {
    // 2 of 4 healthy = 50%: at the threshold (>=), not in panic.
    let members = [m(0, Healthy), m(0, Degraded), m(0, Healthy), m(0, Down)];
    let p = plan(&members, 50);
    assert_eq!(shape(&p), [(TierKind::Healthy { level: 0 }, vec![0, 2])]);
    assert!(!p.panic());
}

#[test]
fn below_the_threshold_the_level_panics_over_everything_not_down() {
    // 1 of 4 healthy = 25% < 50%: panic over the healthy and degraded ones, not the down one.
    let members = [m(0, Healthy), m(0, Degraded), m(0, Down), m(0, Degraded)];
    let p = plan(&members, 50);
    assert_eq!(shape(&p), [(TierKind::Panic { level: 0 }, vec![0, 1, 3])]);
    assert!(p.panic());
    assert!(p.first().unwrap().is_panic());
    // 1 of 2 is 50%: at 51 that is panic.
    let two = [m(0, Healthy), m(0, Degraded)];
    assert!(!plan(&two, 50).panic());
    assert!(plan(&two, 51).panic());
}

#[test]
fn a_level_all_down_yields_to_the_next() {
    let members = [m(0, Down), m(0, Down), m(1, Healthy), m(1, Degraded)];
    let p = plan(&members, 50);
    assert_eq!(shape(&p), [(TierKind::Healthy { level: 1 }, vec![2])]);
    assert!(!p.panic());
}

#[test]
fn every_level_contributes_for_spill_over() {
    // Level 0 panics, level 1 healthy, level 2 all down, level 3 panics with nothing healthy.
    let members = [
        m(3, Degraded),
        m(0, Degraded),
        m(1, Healthy),
        m(0, Healthy),
        m(2, Down),
        m(0, Degraded),
    ];
    let p = plan(&members, 70);
    assert_eq!(
        shape(&p),
        [
            (TierKind::Panic { level: 0 }, vec![1, 3, 5]),
            (TierKind::Healthy { level: 1 }, vec![2]),
            (TierKind::Panic { level: 3 }, vec![0]),
        ]
    );
    assert!(p.contains(0) && !p.contains(4));
}

#[test]
fn a_zero_threshold_disables_panic_mode() {
    let members = [
        m(0, Degraded),
        m(0, Degraded),
        m(1, Healthy),
        m(1, Degraded),
    ];
    let p = plan(&members, 0);
    // Level 0 has no healthy member: nothing; level 1 serves its healthy one only.
    assert_eq!(shape(&p), [(TierKind::Healthy { level: 1 }, vec![2])]);
    assert!(plan(&[m(0, Degraded)], 0).is_empty());
}

#[test]
fn a_threshold_above_100_always_panics() {
    let p = plan(&[m(0, Healthy), m(0, Degraded)], 200);
    assert_eq!(shape(&p), [(TierKind::Panic { level: 0 }, vec![0, 1])]);
}

#[test]
fn nothing_to_serve_gives_an_empty_plan() {
    let empty = plan(&[], 50);
    assert!(empty.is_empty() && !empty.panic() && empty.first().is_none());
    assert!(plan(&[m(0, Down), m(4, Down)], 50).is_empty());
}

#[test]
fn weights_carry_over_and_weight_zero_members_do_not_count() {
    let members = [
        Member {
            priority: 0,
            weight: 3,
            standing: Healthy,
        },
        // Weight 0 and degraded: neither counts towards the level's size nor serves.
        Member {
            priority: 0,
            weight: 0,
            standing: Degraded,
        },
        Member {
            priority: 0,
            weight: 5,
            standing: Degraded,
        },
    ];
    // 1 of 2 counted members healthy: 50%.
    let p = plan(&members, 50);
    assert_eq!(p.tiers[0].set.as_slice(), &[(0, 3)]);
    let p = plan(&members, 60);
    assert_eq!(p.tiers[0].set.as_slice(), &[(0, 3), (2, 5)]);
    // A level whose members all have weight 0 is no level.
    let zero = [Member {
        priority: 0,
        weight: 0,
        standing: Healthy,
    }];
    assert!(plan(&zero, 50).is_empty());
}

#[test]
fn picking_through_a_plan_spills_over_to_later_tiers() {
    let now = Instant::now();
    let members = [m(0, Healthy), m(0, Healthy), m(1, Healthy), m(2, Degraded)];
    let p = plan(&members, 100);
    // Tiers: healthy 0 {0, 1}, healthy 1 {2}, panic 2 {3}.
    for algorithm in Algorithm::ALL {
        let mut b = Balancer::new(algorithm, 4, 3);
        let key = Some(12345);
        let (e, tier) = b.pick_in_plan(&p, |_| false, key, now).unwrap();
        assert!(e < 2 && tier == 0, "{algorithm}");
        assert_eq!(b.pick_in_plan(&p, |e| e < 2, key, now), Some((2, 1)));
        assert_eq!(b.pick_in_plan(&p, |e| e < 3, key, now), Some((3, 2)));
        assert_eq!(b.pick_in_plan(&p, |_| true, key, now), None);
        assert_eq!(b.pick_in_plan(&Plan::default(), |_| false, key, now), None);
    }
}
