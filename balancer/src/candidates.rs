//! [`CandidateSet`]: the endpoints eligible for a pick, with their effective weights, and the
//! weighted sampling over them that the random and power-of-two-choices balancers share.
//!
//! A set is built once per health publication (allocation happens here, never per request) and
//! shared immutably; its [`CandidateSet::id`] fingerprints members and weights so that per-set
//! state (Maglev tables, round-robin cursors) can be cached and found again.

use std::fmt;

use crate::hash::Hasher64;

/// Seed of the fingerprint family behind [`CandidateSet::id`].
const ID_SEED: u64 = 0x5be0_cd19_137e_2179;

/// Endpoints eligible for a pick: indices into the cluster's endpoint list, each with an
/// effective weight (> 0).
///
/// Members are kept in ascending endpoint order, whatever order they were given in, so that
/// equal sets are equal whichever way they were built. Build one per health publication and
/// share it; [`crate::Balancer::pick`] only reads it.
#[derive(Clone, PartialEq, Eq)]
pub struct CandidateSet {
    /// `(endpoint, weight)`, ascending by endpoint, endpoints unique, weights > 0.
    members: Vec<(usize, u32)>,
    /// `cumulative[i]` = sum of the weights of members `0..=i`; empty when all weights are equal
    /// (sampling is then a uniform draw of a position).
    cumulative: Vec<u64>,
    total: u64,
    /// One more than the largest endpoint index (0 when empty).
    span: usize,
    id: u64,
}

impl CandidateSet {
    /// A set of `(endpoint, weight)` members. Members of weight 0 are dropped; if an endpoint is
    /// given more than once, its last weight counts (as when collecting into a map).
    pub fn new(members: impl IntoIterator<Item = (usize, u32)>) -> CandidateSet {
        let mut all: Vec<(usize, u32)> = members.into_iter().collect();
        // Stable: among equal endpoints the given order is kept, so the last one is the last.
        all.sort_by_key(|&(endpoint, _)| endpoint);
        let mut members: Vec<(usize, u32)> = Vec::with_capacity(all.len());
        for (endpoint, weight) in all {
            match members.last_mut() {
                Some(last) if last.0 == endpoint => last.1 = weight,
                _ => members.push((endpoint, weight)),
            }
        }
        members.retain(|&(_, weight)| weight > 0);
        members.shrink_to_fit();

        let total = members.iter().map(|&(_, w)| u64::from(w)).sum();
        let uniform = members.windows(2).all(|pair| pair[0].1 == pair[1].1);
        let cumulative = if uniform {
            Vec::new()
        } else {
            members
                .iter()
                .scan(0u64, |sum, &(_, w)| {
                    *sum += u64::from(w);
                    Some(*sum)
                })
                .collect()
        };
        let span = members.last().map_or(0, |&(endpoint, _)| endpoint + 1);
        let mut h = Hasher64::new(ID_SEED);
        h.write(members.len() as u64);
        for &(endpoint, weight) in &members {
            h.write(endpoint as u64);
            h.write(u64::from(weight));
        }
        CandidateSet {
            members,
            cumulative,
            total,
            span,
            id: h.finish(),
        }
    }

    /// Fingerprint of members and weights: equal sets have equal ids (however they were built),
    /// different sets different ids with overwhelming probability (a 64-bit hash).
    #[inline]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Number of members.
    #[inline]
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when there is no member.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The `(endpoint, weight)` members, ascending by endpoint.
    pub fn members(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.members.iter().copied()
    }

    /// The members as a slice, ascending by endpoint.
    #[inline]
    pub fn as_slice(&self) -> &[(usize, u32)] {
        &self.members
    }

    /// True when `endpoint` is a member.
    pub fn contains(&self, endpoint: usize) -> bool {
        self.weight(endpoint).is_some()
    }

    /// The effective weight of `endpoint`, or `None` when it is not a member.
    pub fn weight(&self, endpoint: usize) -> Option<u32> {
        self.members
            .binary_search_by_key(&endpoint, |&(e, _)| e)
            .ok()
            .map(|i| self.members[i].1)
    }

    /// Sum of the members' weights.
    #[inline]
    pub fn total_weight(&self) -> u64 {
        self.total
    }

    /// One more than the largest member endpoint index (0 when empty): the endpoint list must be
    /// at least this long.
    #[inline]
    pub fn span(&self) -> usize {
        self.span
    }

    /// True when every member has the same weight.
    #[inline]
    pub fn is_uniform(&self) -> bool {
        self.cumulative.is_empty()
    }

    /// Member position of a weighted random draw. The set must not be empty.
    #[inline]
    pub(crate) fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        if self.is_uniform() {
            rng.usize(..self.members.len())
        } else {
            let r = rng.u64(..self.total);
            self.cumulative.partition_point(|&c| c <= r)
        }
    }

    /// Member position of a weighted random draw among the members other than position
    /// `excluded`. The set must have at least two members.
    #[inline]
    pub(crate) fn sample_excluding(&self, rng: &mut fastrand::Rng, excluded: usize) -> usize {
        if self.is_uniform() {
            let p = rng.usize(..self.members.len() - 1);
            if p >= excluded {
                p + 1
            } else {
                p
            }
        } else {
            let w = u64::from(self.members[excluded].1);
            let before = self.cumulative[excluded] - w;
            let mut r = rng.u64(..self.total - w);
            if r >= before {
                r += w;
            }
            self.cumulative.partition_point(|&c| c <= r)
        }
    }
}

impl Default for CandidateSet {
    /// The empty set.
    fn default() -> Self {
        CandidateSet::new([])
    }
}

impl FromIterator<(usize, u32)> for CandidateSet {
    fn from_iter<I: IntoIterator<Item = (usize, u32)>>(iter: I) -> Self {
        CandidateSet::new(iter)
    }
}

impl fmt::Debug for CandidateSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CandidateSet")
            .field("id", &format_args!("{:#018x}", self.id))
            .field("members", &self.members)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_zero_weights_sorts_and_keeps_last_duplicate() {
        let set = CandidateSet::new([(4, 1), (1, 0), (2, 3), (4, 7), (0, 2)]);
        assert_eq!(set.as_slice(), &[(0, 2), (2, 3), (4, 7)]);
        assert_eq!(set.len(), 3);
        assert!(!set.is_empty());
        assert!(set.contains(2) && !set.contains(1) && !set.contains(9));
        assert_eq!(set.weight(4), Some(7));
        assert_eq!(set.total_weight(), 12);
        assert_eq!(set.span(), 5);
        // A later zero weight removes an earlier member.
        assert!(CandidateSet::new([(3, 5), (3, 0)]).is_empty());
    }

    #[test]
    fn id_is_a_fingerprint_of_members_and_weights() {
        let a = CandidateSet::new([(0, 1), (1, 2), (2, 3)]);
        let b = CandidateSet::new([(2, 3), (0, 1), (1, 2), (5, 0)]);
        assert_eq!(a, b);
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), CandidateSet::new([(0, 1), (1, 2), (2, 4)]).id());
        assert_ne!(a.id(), CandidateSet::new([(0, 1), (1, 2)]).id());
        assert_ne!(a.id(), CandidateSet::new([(0, 1), (1, 2), (3, 3)]).id());
        assert_ne!(
            CandidateSet::new([(0, 1)]).id(),
            CandidateSet::new([(1, 0)]).id()
        );
        let empty = CandidateSet::new([]);
        assert!(empty.is_empty());
        assert_eq!(empty.id(), CandidateSet::default().id());
        assert_eq!(empty.span(), 0);
    }

    #[test]
    fn sampling_follows_weights_and_exclusion() {
        let set = CandidateSet::new([(0, 1), (1, 2), (2, 3)]);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = [0u32; 3];
        let mut excluded = [0u32; 3];
        for _ in 0..60_000 {
            counts[set.sample(&mut rng)] += 1;
            let p = set.sample_excluding(&mut rng, 1);
            assert_ne!(p, 1);
            excluded[p] += 1;
        }
        for (i, w) in [1.0, 2.0, 3.0].iter().enumerate() {
            let share = f64::from(counts[i]) / 60_000.0;
            assert!((share - w / 6.0).abs() < 0.01, "{counts:?}");
        }
        // Without position 1 the draw is 1:3 between the others.
        let share0 = f64::from(excluded[0]) / 60_000.0;
        assert!((share0 - 0.25).abs() < 0.01, "{excluded:?}");

        let uniform = CandidateSet::new([(3, 5), (8, 5)]);
        assert!(uniform.is_uniform());
        for _ in 0..100 {
            assert_eq!(uniform.sample_excluding(&mut rng, 0), 1);
            assert_eq!(uniform.sample_excluding(&mut rng, 1), 0);
        }
    }
}
