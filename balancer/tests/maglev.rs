//! Maglev consistent hashing: stable mapping, minimal disruption when an endpoint goes, weighted
//! shares, avoid, identities.

use std::time::Instant;

use headwater_balancer::{hash_key, Algorithm, Balancer, CandidateSet, MaglevTable};

const KEYS: u64 = 100_000;

fn keys() -> impl Iterator<Item = u64> {
    (0..KEYS).map(|i| hash_key(format!("client-{i}").as_bytes()))
}

fn maglev(endpoints: usize, seed: u64) -> Balancer {
    Balancer::new(Algorithm::Maglev, endpoints, seed)
}

fn assign(b: &mut Balancer, set: &CandidateSet) -> Vec<usize> {
    let now = Instant::now();
    keys()
        .map(|k| b.pick(set, |_| false, Some(k), now).unwrap())
        .collect()
}

#[test]
fn the_same_key_goes_to_the_same_endpoint_on_every_shard() {
    let set = CandidateSet::new((0..7).map(|e| (e, 1)));
    let now = Instant::now();
    // Different seeds (shards) agree: the mapping depends on the key and the set only.
    let mut a = maglev(7, 1);
    let mut b = maglev(7, 2);
    for k in keys().take(10_000) {
        let e = a.pick(&set, |_| false, Some(k), now).unwrap();
        assert_eq!(a.pick(&set, |_| false, Some(k), now), Some(e));
        assert_eq!(b.pick(&set, |_| false, Some(k), now), Some(e));
    }
}

/// Removes endpoint `gone` from a set of `n` equal members and measures, over `KEYS` keys, the
/// fraction of all keys that moved, and the fraction of the keys not on `gone` that moved.
fn disruption(n: usize, gone: usize) -> (f64, f64) {
    let all = CandidateSet::new((0..n).map(|e| (e, 1)));
    let rest = CandidateSet::new((0..n).filter(|&e| e != gone).map(|e| (e, 1)));
    let mut b = maglev(n, 0);
    let before = assign(&mut b, &all);
    let after = assign(&mut b, &rest);
    let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count();
    let stayers = before.iter().filter(|&&e| e != gone).count();
    let stayers_moved = before
        .iter()
        .zip(&after)
        .filter(|(x, y)| **x != gone && x != y)
        .count();
    assert!(after.iter().all(|&e| e != gone));
    (
        moved as f64 / KEYS as f64,
        stayers_moved as f64 / stayers as f64,
    )
}

/// Removing each of `gone` from `n` equal members moves about 1/n of the keys (those of the
/// removed endpoint) and hardly any of the others'.
fn assert_removal_moves_about_one_nth(n: usize, gone: &[usize]) {
    let ideal = 1.0 / n as f64;
    for &gone in gone {
        let (moved, stayers_moved) = disruption(n, gone);
        println!(
            "N={n}, endpoint {gone} removed: {moved:.4} of all keys moved (ideal 1/N = {ideal:.4}), {stayers_moved:.4} of the keys on other endpoints moved"
        );
        assert!(moved <= ideal + 0.02, "N={n}, {gone} removed: {moved}");
        assert!(
            stayers_moved <= 0.02,
            "N={n}, {gone} removed: {stayers_moved}"
        );
    }
}

#[test]
fn removing_one_of_five_moves_about_a_fifth() {
    assert_removal_moves_about_one_nth(5, &[0, 2, 4]);
}

#[test]
fn removing_one_of_ten_moves_about_a_tenth() {
    assert_removal_moves_about_one_nth(10, &[0, 5, 9]);
}

#[test]
fn adding_one_to_ten_moves_about_an_eleventh() {
    let ten = CandidateSet::new((0..10).map(|e| (e, 1)));
    let eleven = CandidateSet::new((0..11).map(|e| (e, 1)));
    let mut b = maglev(11, 0);
    let before = assign(&mut b, &ten);
    let after = assign(&mut b, &eleven);
    let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count() as f64 / KEYS as f64;
    let to_new = after.iter().filter(|&&e| e == 10).count() as f64 / KEYS as f64;
    println!("N=10 -> 11: {moved:.4} of keys moved, {to_new:.4} now on the new endpoint (ideal 1/11 = 0.0909)");
    assert!(moved <= 1.0 / 11.0 + 0.02, "{moved}");
    assert!((to_new - 1.0 / 11.0).abs() < 0.01, "{to_new}");
}

#[test]
fn a_reload_that_reorders_endpoints_keeps_keys_where_they_were() {
    // Endpoint list a b c d e; the reload drops c: d and e move to indices 2 and 3. Remap
    // carries their identities, so their keys stay with them.
    let now = Instant::now();
    let mut b = maglev(5, 0);
    let before = assign(&mut b, &CandidateSet::new((0..5).map(|e| (e, 1))));
    b.remap(&[Some(0), Some(1), None, Some(2), Some(3)], 4);
    assert_eq!(
        (0..4).map(|e| b.identity(e)).collect::<Vec<_>>(),
        [0, 1, 3, 4]
    );
    let new_set = CandidateSet::new((0..4).map(|e| (e, 1)));
    let old_index = [0, 1, 3, 4];
    let mut moved = 0;
    for (k, &was) in keys().zip(&before) {
        let now_on = old_index[b.pick(&new_set, |_| false, Some(k), now).unwrap()];
        if now_on != was {
            moved += 1;
        }
    }
    let moved = f64::from(moved) / KEYS as f64;
    println!("reload dropping 1 of 5 (indices shift): {moved:.4} of keys moved");
    assert!(moved <= 0.2 + 0.02, "{moved}");
}

#[test]
fn identities_decide_the_mapping_not_indices() {
    // The same three addresses listed in two orders: with address-derived identities both
    // balancers send each key to the same address.
    let addresses = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];
    let order_a = [0usize, 1, 2];
    let order_b = [2usize, 0, 1];
    let ids = |order: &[usize]| -> Vec<u64> {
        order
            .iter()
            .map(|&a| hash_key(addresses[a].as_bytes()))
            .collect()
    };
    let set = CandidateSet::new((0..3).map(|e| (e, 1)));
    let now = Instant::now();
    let mut a = maglev(3, 0);
    a.set_identities(&ids(&order_a));
    let mut b = maglev(3, 0);
    b.set_identities(&ids(&order_b));
    let mut differs_by_index = 0;
    for k in keys().take(20_000) {
        let ea = a.pick(&set, |_| false, Some(k), now).unwrap();
        let eb = b.pick(&set, |_| false, Some(k), now).unwrap();
        assert_eq!(order_a[ea], order_b[eb]);
        if ea != eb {
            differs_by_index += 1;
        }
    }
    assert!(differs_by_index > 0);
}

#[test]
fn weighted_maglev_shares_follow_weights() {
    let set = CandidateSet::new([(0, 1), (1, 2), (2, 3), (3, 4)]);
    let mut b = maglev(4, 0);
    let mut counts = [0u32; 4];
    for e in assign(&mut b, &set) {
        counts[e] += 1;
    }
    let table = b.maglev_table(&set).expect("cached");
    let slots: Vec<usize> = (0..4).map(|e| table.slots_of(e)).collect();
    println!(
        "weights 1:2:3:4, keys {counts:?}, slots {slots:?} of {}",
        table.size()
    );
    for (e, c) in counts.iter().enumerate() {
        let want = (e + 1) as f64 / 10.0;
        let share = f64::from(*c) / KEYS as f64;
        assert!((share - want).abs() < 0.01, "{counts:?}");
        let slot_share = slots[e] as f64 / table.size() as f64;
        assert!((slot_share - want).abs() < 0.005, "{slots:?}");
    }
}

#[test]
fn avoid_walks_forward_deterministically() {
    let set = CandidateSet::new((0..5).map(|e| (e, 1)));
    let now = Instant::now();
    let mut b = maglev(5, 0);
    let mut other = maglev(5, 99);
    let mut spread = [0u32; 5];
    for k in keys().take(20_000) {
        let first = b.pick(&set, |_| false, Some(k), now).unwrap();
        let second = b.pick(&set, |e| e == first, Some(k), now).unwrap();
        assert_ne!(second, first);
        assert_eq!(b.pick(&set, |e| e == first, Some(k), now), Some(second));
        assert_eq!(other.pick(&set, |e| e == first, Some(k), now), Some(second));
        let third = b
            .pick(&set, |e| e == first || e == second, Some(k), now)
            .unwrap();
        assert!(third != first && third != second);
        spread[second] += 1;
        // Only one left.
        assert_eq!(b.pick(&set, |e| e != 3, Some(k), now), Some(3));
        assert_eq!(b.pick(&set, |_| true, Some(k), now), None);
    }
    // The keys of avoided endpoints spread over the others rather than piling on one.
    println!("second choices: {spread:?}");
    assert!(spread.iter().all(|&c| c > 2_000), "{spread:?}");
}

#[test]
fn the_table_follows_the_set_and_is_cached() {
    let a = CandidateSet::new((0..4).map(|e| (e, 1)));
    let b_set = CandidateSet::new((0..3).map(|e| (e, 1)));
    let now = Instant::now();
    let mut b = maglev(4, 0);
    assert!(b.maglev_table(&a).is_none());
    b.prepare(&a);
    let table = b.maglev_table(&a).unwrap().clone();
    assert_eq!(table.set_id(), a.id());
    assert_eq!(table.size(), 65537);
    // Picks agree with the table.
    for k in keys().take(1000) {
        assert_eq!(b.pick(&a, |_| false, Some(k), now), table.lookup(k));
    }
    // Another set gets its own table; the first stays cached; an equal set rebuilt elsewhere
    // finds it.
    b.pick(&b_set, |_| false, Some(1), now);
    assert!(b.maglev_table(&b_set).is_some());
    let a_again = CandidateSet::new((0..4).rev().map(|e| (e, 1)));
    assert!(b.maglev_table(&a_again).is_some());
    // A standalone table built from the same set is the same mapping.
    let standalone = MaglevTable::build(&a, |e| e as u64, 65537);
    for k in keys().take(1000) {
        assert_eq!(standalone.lookup(k), table.lookup(k));
    }
    // New identities drop the cache.
    b.set_identities(&[10, 11, 12, 13]);
    assert!(b.maglev_table(&a).is_none());
}

#[test]
fn small_tables_are_rounded_up_to_a_prime() {
    let options = headwater_balancer::Options {
        maglev_table_size: 1000,
        ..Default::default()
    };
    let b = Balancer::with_options(Algorithm::Maglev, 3, 0, options);
    assert_eq!(b.options().maglev_table_size, 1009);
}
