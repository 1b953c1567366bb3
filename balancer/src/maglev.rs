//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): [`MaglevTable`], the lookup table
//! built from a [`CandidateSet`], its weighted population, and the lookup with an `avoid`
//! predicate.
//!
//! Each member gets a permutation of the table's slots from two hashes of its 64-bit identity
//! (the endpoint index unless [`crate::Balancer::set_identities`] gave it another one, e.g.
//! derived from its address): `offset = h1 mod M`, `skip = h2 mod (M - 1) + 1`, slot
//! `j` of the permutation being `(offset + j * skip) mod M`. With `M` prime every skip walks
//! all `M` slots. Members take turns claiming their next free slot until the table is full;
//! weights decide how often a member gets a turn (Envoy's weighted Maglev: a member of weight
//! `w` takes a turn in round `r` when `r * w` has reached its running target, which grows by
//! the largest weight per turn taken), so a member's share of slots follows its weight.
//!
//! Removing a member frees its slots, and the other members' permutations fill them; the slots
//! the others held before mostly stay theirs, which is what keeps keys where they were.

use crate::candidates::CandidateSet;
use crate::hash::Hasher64;

/// Seed of the hash that chooses a member's first slot.
const OFFSET_SEED: u64 = 0x1f83_d9ab_fb41_bd6b;
/// Seed of the hash that chooses a member's stride.
const SKIP_SEED: u64 = 0x9b05_688c_2b3e_6c1f;

/// The table size used for `requested`: the smallest prime at or above `max(requested, 2)`.
pub fn table_size(requested: usize) -> usize {
    let mut n = requested.max(2);
    while !is_prime(n) {
        n += 1;
    }
    n
}

fn is_prime(n: usize) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n % 2 == 0 {
        return false;
    }
    let mut d = 3;
    while d <= n / d {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

/// Slot contents: the position of the owning member in the set. Sets of up to 65535 members
/// (all real ones) use 16-bit slots, halving the table's memory.
#[derive(Clone)]
enum Slots {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
}

impl Slots {
    #[inline]
    fn get(&self, slot: usize) -> usize {
        match self {
            Slots::Narrow(v) => usize::from(v[slot]),
            Slots::Wide(v) => v[slot] as usize,
        }
    }
}

trait Slot: Copy + Eq {
    const EMPTY: Self;
    fn from_position(p: usize) -> Self;
}

impl Slot for u16 {
    const EMPTY: u16 = u16::MAX;
    fn from_position(p: usize) -> u16 {
        p as u16
    }
}

impl Slot for u32 {
    const EMPTY: u32 = u32::MAX;
    fn from_position(p: usize) -> u32 {
        p as u32
    }
}

/// One member's progress through its permutation while the table is populated.
struct Turn {
    /// The next slot of its permutation to try.
    next: usize,
    skip: usize,
    weight: u64,
    target: u64,
}

fn populate<T: Slot>(table: &mut Vec<T>, size: usize, turns: &mut [Turn], counts: &mut [u32]) {
    table.clear();
    table.resize(size, T::EMPTY);
    let Some(max_weight) = turns.iter().map(|t| t.weight).max() else {
        return;
    };
    let mut filled = 0;
    let mut round: u64 = 1;
    // The heaviest member takes a turn every round, so at most `size` rounds.
    while filled < size {
        for (position, turn) in turns.iter_mut().enumerate() {
            if round * turn.weight < turn.target {
                continue;
            }
            turn.target += max_weight;
            let mut slot = turn.next;
            while table[slot] != T::EMPTY {
                slot += turn.skip;
                if slot >= size {
                    slot -= size;
                }
            }
            table[slot] = T::from_position(position);
            counts[position] += 1;
            turn.next = slot + turn.skip;
            if turn.next >= size {
                turn.next -= size;
            }
            filled += 1;
            if filled == size {
                break;
            }
        }
        round += 1;
    }
}

/// A Maglev lookup table for one [`CandidateSet`].
#[derive(Clone)]
pub struct MaglevTable {
    set_id: u64,
    size: usize,
    slots: Slots,
    /// Endpoint of each member position.
    endpoints: Vec<usize>,
    /// Slots held by each member position.
    counts: Vec<u32>,
}

impl MaglevTable {
    /// Builds the table of `set` with (about) `size` slots (rounded up by [`table_size`] to a
    /// prime); `identity(endpoint)` is the stable identity that chooses each member's
    /// permutation. Members beyond the number of slots, or whose weight is too small a share of
    /// the total, may get no slot (Maglev's recommendation is at least 100 slots per member).
    pub fn build(set: &CandidateSet, identity: impl Fn(usize) -> u64, size: usize) -> MaglevTable {
        let mut table = MaglevTable {
            set_id: 0,
            size: 0,
            slots: Slots::Narrow(Vec::new()),
            endpoints: Vec::new(),
            counts: Vec::new(),
        };
        table.rebuild(set, identity, size);
        table
    }

    /// Builds this table anew for `set`, reusing its buffers.
    pub fn rebuild(&mut self, set: &CandidateSet, identity: impl Fn(usize) -> u64, size: usize) {
        let size = table_size(size);
        let mut turns: Vec<Turn> = set
            .members()
            .map(|(endpoint, weight)| {
                let id = identity(endpoint);
                let mut h1 = Hasher64::new(OFFSET_SEED);
                h1.write(id);
                let mut h2 = Hasher64::new(SKIP_SEED);
                h2.write(id);
                Turn {
                    next: (h1.finish() % size as u64) as usize,
                    skip: (h2.finish() % (size as u64 - 1)) as usize + 1,
                    weight: u64::from(weight),
                    target: 0,
                }
            })
            .collect();
        self.endpoints.clear();
        self.endpoints.extend(set.members().map(|(e, _)| e));
        self.counts.clear();
        self.counts.resize(set.len(), 0);
        let narrow = set.len() < usize::from(u16::MAX);
        match (&mut self.slots, narrow) {
            (Slots::Narrow(v), true) => populate(v, size, &mut turns, &mut self.counts),
            (Slots::Wide(v), false) => populate(v, size, &mut turns, &mut self.counts),
            (slots, true) => {
                let mut v = Vec::new();
                populate(&mut v, size, &mut turns, &mut self.counts);
                *slots = Slots::Narrow(v);
            }
            (slots, false) => {
                let mut v = Vec::new();
                populate(&mut v, size, &mut turns, &mut self.counts);
                *slots = Slots::Wide(v);
            }
        }
        self.size = size;
        self.set_id = set.id();
    }

    /// The [`CandidateSet::id`] of the set this table was built from.
    #[inline]
    pub fn set_id(&self) -> u64 {
        self.set_id
    }

    /// Number of slots (a prime).
    #[inline]
    pub fn size(&self) -> usize {
        self.size
    }

    /// Number of slots `endpoint` holds (0 when it is not a member).
    pub fn slots_of(&self, endpoint: usize) -> usize {
        self.endpoints
            .binary_search(&endpoint)
            .map_or(0, |p| self.counts[p] as usize)
    }

    /// The endpoint whose slot `key` falls in, `None` for an empty set.
    #[inline]
    pub fn lookup(&self, key: u64) -> Option<usize> {
        if self.endpoints.is_empty() {
            return None;
        }
        let slot = (key % self.size as u64) as usize;
        Some(self.endpoints[self.slots.get(slot)])
    }

    /// The endpoint of `key`'s slot, or, when `avoid` says no to it, of the first following slot
    /// (wrapping around) whose endpoint is not avoided: deterministic for a key and an avoid
    /// set. `None` when every member is avoided.
    pub fn lookup_avoiding(&self, key: u64, avoid: impl Fn(usize) -> bool) -> Option<usize> {
        let first = self.lookup(key)?;
        if !avoid(first) {
            return Some(first);
        }
        let slotted = self
            .endpoints
            .iter()
            .zip(&self.counts)
            .any(|(&e, &count)| count > 0 && !avoid(e));
        if !slotted {
            // Only members without a slot (or none) are left: walk the members instead.
            let n = self.endpoints.len();
            let start = (key % n as u64) as usize;
            return (0..n)
                .map(|k| self.endpoints[(start + k) % n])
                .find(|&e| !avoid(e));
        }
        let mut slot = (key % self.size as u64) as usize;
        loop {
            slot += 1;
            if slot == self.size {
                slot = 0;
            }
            let e = self.endpoints[self.slots.get(slot)];
            if !avoid(e) {
                return Some(e);
            }
        }
    }
}

impl std::fmt::Debug for MaglevTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaglevTable")
            .field("set_id", &format_args!("{:#018x}", self.set_id))
            .field("size", &self.size)
            .field(
                "slots",
                &self.endpoints.iter().zip(&self.counts).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_primes() {
        assert_eq!(table_size(0), 2);
        assert_eq!(table_size(2), 2);
        assert_eq!(table_size(4), 5);
        assert_eq!(table_size(65536), 65537);
        assert_eq!(table_size(65537), 65537);
        assert_eq!(table_size(100), 101);
        assert!(!is_prime(1) && !is_prime(9) && !is_prime(65535) && is_prime(7919));
    }

    #[test]
    fn every_slot_is_filled_and_counts_add_up() {
        let set = CandidateSet::new((0..7).map(|e| (e, 1 + e as u32)));
        let t = MaglevTable::build(&set, |e| e as u64, 1009);
        assert_eq!(t.size(), 1009);
        let total: usize = (0..7).map(|e| t.slots_of(e)).sum();
        assert_eq!(total, 1009);
        assert_eq!(t.slots_of(42), 0);
        // Slots follow weights 1..=7 (total 28).
        for e in 0..7 {
            let want = 1009.0 * (1.0 + e as f64) / 28.0;
            let got = t.slots_of(e) as f64;
            assert!((got - want).abs() <= want * 0.05 + 2.0, "{t:?}");
        }
    }

    #[test]
    fn more_members_than_slots_still_terminates() {
        let set = CandidateSet::new((0..20).map(|e| (e, 1)));
        let t = MaglevTable::build(&set, |e| e as u64, 5);
        assert_eq!(t.size(), 5);
        assert_eq!((0..20).map(|e| t.slots_of(e)).sum::<usize>(), 5);
        // Members without a slot are still reachable when every slotted one is avoided.
        let slotted: Vec<usize> = (0..20).filter(|&e| t.slots_of(e) > 0).collect();
        let got = t.lookup_avoiding(3, |e| slotted.contains(&e)).unwrap();
        assert!(!slotted.contains(&got));
        assert_eq!(t.lookup_avoiding(3, |_| true), None);
    }

    #[test]
    fn empty_set_has_no_answer() {
        let t = MaglevTable::build(&CandidateSet::default(), |e| e as u64, 13);
        assert_eq!(t.lookup(5), None);
        assert_eq!(t.lookup_avoiding(5, |_| false), None);
    }

    #[test]
    fn rebuild_switches_slot_width() {
        let big = CandidateSet::new((0..70_000).map(|e| (e, 1)));
        let mut t = MaglevTable::build(&CandidateSet::new([(0, 1)]), |e| e as u64, 13);
        t.rebuild(&big, |e| e as u64, 70_001);
        assert!(matches!(t.slots, Slots::Wide(_)));
        assert_eq!(t.set_id(), big.id());
        let small = CandidateSet::new([(1, 1), (2, 1)]);
        t.rebuild(&small, |e| e as u64, 13);
        assert!(matches!(t.slots, Slots::Narrow(_)));
        assert!(matches!(t.lookup(7), Some(1 | 2)));
    }
}
