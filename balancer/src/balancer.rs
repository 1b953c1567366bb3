//! [`Balancer`]: one shard's balancing state for one cluster (in-flight counts, smooth-WRR
//! currents, peak-EWMA estimates, round-robin cursors, cached Maglev tables, the seeded random
//! generator) and the pick of every [`Algorithm`] over a [`CandidateSet`]; [`Options`] tunes it.
//!
//! A pick reads the set, calls `avoid` and updates this state; it allocates nothing, except
//! when a Maglev table has to be built for a set not seen before ([`Balancer::prepare`] builds
//! it ahead of time). State is kept per endpoint index, so it survives a change of candidate
//! set (a health publication), and [`Balancer::remap`] carries it over a change of the endpoint
//! list itself (a configuration reload).

use std::fmt;
use std::time::{Duration, Instant};

use crate::algorithm::Algorithm;
use crate::candidates::CandidateSet;
use crate::ewma::{nanos, PeakEwma};
use crate::maglev::{table_size, MaglevTable};
use crate::priority::Plan;

/// Round-robin cursors kept, one per candidate set recently picked from (a cluster's tiers).
const RR_CURSORS: usize = 4;
/// Maglev tables kept, one per candidate set recently picked from.
const MAGLEV_TABLES: usize = 3;
/// Weighted draws tried before an exact draw over the members not avoided.
const DRAW_ATTEMPTS: usize = 4;

/// Tuning of a [`Balancer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Peak-EWMA time constant: how fast an estimate forgets (default 10 s).
    pub ewma_decay: Duration,
    /// Peak-EWMA estimate of an endpoint without samples when no candidate has any (default
    /// 5 ms); otherwise such an endpoint is given the mean estimate of those that have some.
    pub ewma_seed: Duration,
    /// Peak-EWMA sample recorded for a failed request (default 1 s): a failing endpoint looks
    /// slow.
    pub failure_penalty: Duration,
    /// Slots of a Maglev table; rounded up to a prime (default 65537).
    pub maglev_table_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ewma_decay: Duration::from_secs(10),
            ewma_seed: Duration::from_millis(5),
            failure_penalty: Duration::from_secs(1),
            maglev_table_size: 65537,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    set: Option<u64>,
    next: usize,
}

#[derive(Clone)]
struct CachedTable {
    table: MaglevTable,
    valid: bool,
    used: u64,
}

/// Per-shard, per-cluster balancer state. See the crate documentation for the algorithms.
#[derive(Clone)]
pub struct Balancer {
    algorithm: Algorithm,
    options: Options,
    decay_ns: f64,
    seed: u64,
    rng: fastrand::Rng,
    in_flight: Vec<u32>,
    /// Smooth weighted round robin's current weights (weighted only).
    current: Vec<i64>,
    /// Latency estimates (peak-EWMA only).
    ewma: Vec<PeakEwma>,
    /// Explicit Maglev identities; an endpoint beyond the end has its index as identity.
    identities: Vec<u64>,
    cursors: [Cursor; RR_CURSORS],
    next_cursor: usize,
    /// The endpoint round robin picked last: a new set's cursor starts after it.
    last: Option<usize>,
    tables: Vec<CachedTable>,
    tick: u64,
}

impl Balancer {
    /// A balancer for a cluster of `endpoints` endpoints with default [`Options`]. `seed` makes
    /// every random choice reproducible; give each shard a different one (it also sets where
    /// round robin starts: member `seed mod len`).
    pub fn new(algorithm: Algorithm, endpoints: usize, seed: u64) -> Balancer {
        Balancer::with_options(algorithm, endpoints, seed, Options::default())
    }

    /// A balancer with explicit [`Options`]. The Maglev table size is rounded up to a prime;
    /// a zero EWMA decay counts as one nanosecond.
    pub fn with_options(
        algorithm: Algorithm,
        endpoints: usize,
        seed: u64,
        mut options: Options,
    ) -> Balancer {
        options.maglev_table_size = table_size(options.maglev_table_size);
        options.ewma_decay = options.ewma_decay.max(Duration::from_nanos(1));
        let mut b = Balancer {
            algorithm,
            options,
            decay_ns: nanos(options.ewma_decay),
            seed,
            rng: fastrand::Rng::with_seed(seed),
            in_flight: Vec::new(),
            current: Vec::new(),
            ewma: Vec::new(),
            identities: Vec::new(),
            cursors: [Cursor::default(); RR_CURSORS],
            next_cursor: 0,
            last: None,
            tables: Vec::new(),
            tick: 0,
        };
        b.grow(endpoints);
        b
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The options in effect (after rounding the table size).
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Number of endpoints state is kept for.
    pub fn endpoints(&self) -> usize {
        self.in_flight.len()
    }

    fn grow(&mut self, endpoints: usize) {
        if endpoints <= self.in_flight.len() {
            return;
        }
        self.in_flight.resize(endpoints, 0);
        match self.algorithm {
            Algorithm::Weighted => self.current.resize(endpoints, 0),
            Algorithm::PeakEwma => self.ewma.resize(endpoints, PeakEwma::default()),
            _ => {}
        }
    }

    /// One member of `set` for which `avoid(endpoint)` is false, or `None` when the set is empty
    /// or every member is avoided. `key` is the consistent-hash key (Maglev only; Maglev without
    /// a key picks at random by weight); `now` matters to peak-EWMA only.
    ///
    /// `avoid` may be called more than once for an endpoint and must answer the same within a
    /// pick. Members beyond the endpoint count given at construction get state on first sight
    /// (the one allocation a pick may make besides building a Maglev table).
    pub fn pick(
        &mut self,
        set: &CandidateSet,
        avoid: impl Fn(usize) -> bool,
        key: Option<u64>,
        now: Instant,
    ) -> Option<usize> {
        if set.is_empty() {
            return None;
        }
        if set.span() > self.in_flight.len() {
            self.grow(set.span());
        }
        match (self.algorithm, key) {
            (Algorithm::RoundRobin, _) => self.pick_round_robin(set, &avoid),
            (Algorithm::Weighted, _) => self.pick_weighted(set, &avoid),
            (Algorithm::LeastRequest, _) => self.pick_least_request(set, &avoid),
            (Algorithm::PeakEwma, _) => self.pick_peak_ewma(set, &avoid, now),
            (Algorithm::Maglev, Some(key)) => {
                let i = self.table_for(set);
                self.tables[i].table.lookup_avoiding(key, &avoid)
            }
            (Algorithm::Maglev | Algorithm::Random, _) => {
                draw(set, &mut self.rng, &avoid, None).map(|p| set.as_slice()[p].0)
            }
        }
    }

    /// Picks from the first tier of `plan` that has a member not avoided: the endpoint and the
    /// index of its tier, or `None` when every member of every tier is avoided (or the plan is
    /// empty).
    pub fn pick_in_plan(
        &mut self,
        plan: &Plan,
        avoid: impl Fn(usize) -> bool,
        key: Option<u64>,
        now: Instant,
    ) -> Option<(usize, usize)> {
        plan.tiers
            .iter()
            .enumerate()
            .find_map(|(i, tier)| self.pick(&tier.set, &avoid, key, now).map(|e| (e, i)))
    }

    /// A request was dispatched to `endpoint`: its in-flight count goes up by one. Unknown
    /// endpoints are ignored.
    pub fn start(&mut self, endpoint: usize, now: Instant) {
        let _ = now;
        if let Some(n) = self.in_flight.get_mut(endpoint) {
            *n = n.saturating_add(1);
        }
    }

    /// A request to `endpoint` finished: in-flight goes down by one; `rtt` is the time to the
    /// response head when one came, `None` on failure (peak-EWMA then records
    /// [`Options::failure_penalty`]). Unknown endpoints are ignored; after [`Balancer::remap`],
    /// report requests started before it under their new index, and not at all for endpoints
    /// that were removed.
    pub fn finish(&mut self, endpoint: usize, rtt: Option<Duration>, now: Instant) {
        if let Some(n) = self.in_flight.get_mut(endpoint) {
            *n = n.saturating_sub(1);
        }
        if let Some(e) = self.ewma.get_mut(endpoint) {
            let sample = nanos(rtt.unwrap_or(self.options.failure_penalty));
            e.observe(sample, now, self.decay_ns);
        }
    }

    /// A request to `endpoint` ended without telling anything about the endpoint (it never
    /// reached it: a pooled connection found closed, a breaker refusal, a cancelled attempt):
    /// in-flight goes down by one and no latency sample is recorded.
    pub fn abandon(&mut self, endpoint: usize) {
        if let Some(n) = self.in_flight.get_mut(endpoint) {
            *n = n.saturating_sub(1);
        }
    }

    /// The endpoint list changed: `map[old] = Some(new)` for endpoints that remain, and the list
    /// now has `new_len` endpoints. Remaining endpoints keep their in-flight count, EWMA,
    /// smooth-WRR current weight and Maglev identity; new ones start fresh (no EWMA samples:
    /// seeded at pick time) with an identity no remaining endpoint has (their index, or the
    /// next free value after it). Per-set caches are dropped: the indices mean other endpoints
    /// now. Mappings to indices at or beyond `new_len` are ignored; if two old endpoints map to
    /// the same new one, the later one's state wins.
    pub fn remap(&mut self, map: &[Option<usize>], new_len: usize) {
        let moves = || {
            map.iter()
                .enumerate()
                .filter_map(|(old, new)| new.map(|new| (old, new)))
                .filter(|&(old, new)| old < self.in_flight.len() && new < new_len)
        };
        let mut in_flight = vec![0u32; new_len];
        let mut identities: Vec<Option<u64>> = vec![None; new_len];
        for (old, new) in moves() {
            in_flight[new] = self.in_flight[old];
            identities[new] = Some(self.identity(old));
        }
        let mut current = Vec::new();
        if self.algorithm == Algorithm::Weighted {
            current = vec![0i64; new_len];
            for (old, new) in moves() {
                current[new] = self.current[old];
            }
        }
        let mut ewma = Vec::new();
        if self.algorithm == Algorithm::PeakEwma {
            ewma = vec![PeakEwma::default(); new_len];
            for (old, new) in moves() {
                ewma[new] = self.ewma[old];
            }
        }
        let mut used: std::collections::HashSet<u64> =
            identities.iter().flatten().copied().collect();
        let identities = identities
            .into_iter()
            .enumerate()
            .map(|(i, id)| {
                id.unwrap_or_else(|| {
                    let mut candidate = i as u64;
                    while !used.insert(candidate) {
                        candidate = candidate.wrapping_add(1);
                    }
                    candidate
                })
            })
            .collect();

        self.last = self.last.and_then(|l| map.get(l).copied().flatten());
        self.in_flight = in_flight;
        self.current = current;
        self.ewma = ewma;
        self.identities = identities;
        self.cursors = [Cursor::default(); RR_CURSORS];
        for t in &mut self.tables {
            t.valid = false;
        }
    }

    /// Gives each endpoint index a stable 64-bit identity for Maglev (e.g. a hash of its
    /// address), so that an endpoint keeps its table slots when its index changes. Endpoints
    /// beyond the slice have their index as identity (the default). Cached tables are dropped.
    pub fn set_identities(&mut self, identities: &[u64]) {
        self.identities = identities.to_vec();
        for t in &mut self.tables {
            t.valid = false;
        }
    }

    /// The Maglev identity of `endpoint`.
    pub fn identity(&self, endpoint: usize) -> u64 {
        self.identities
            .get(endpoint)
            .copied()
            .unwrap_or(endpoint as u64)
    }

    /// Builds what picking from `set` will need ahead of time (the Maglev table), so that the
    /// first pick after a health publication does not pay for it. Does nothing for the other
    /// algorithms.
    pub fn prepare(&mut self, set: &CandidateSet) {
        if self.algorithm == Algorithm::Maglev {
            self.table_for(set);
        }
    }

    /// The cached Maglev table of `set`, if one was built and is still valid.
    pub fn maglev_table(&self, set: &CandidateSet) -> Option<&MaglevTable> {
        self.tables
            .iter()
            .find(|t| t.valid && t.table.set_id() == set.id())
            .map(|t| &t.table)
    }

    /// Requests in flight to `endpoint` (0 for an unknown one).
    pub fn in_flight(&self, endpoint: usize) -> u32 {
        self.in_flight.get(endpoint).copied().unwrap_or(0)
    }

    /// The peak-EWMA latency estimate of `endpoint` at `now` (the last value decayed towards
    /// zero for the time since its last sample, see the crate documentation); `None` for other
    /// algorithms, for an unknown endpoint, and for one without samples yet (a pick gives it the
    /// seed estimate described in [`Options::ewma_seed`]).
    pub fn ewma(&self, endpoint: usize, now: Instant) -> Option<Duration> {
        let ns = self.ewma.get(endpoint)?.read(now, self.decay_ns)?;
        Some(Duration::from_nanos(ns.round() as u64))
    }

    fn pick_round_robin(
        &mut self,
        set: &CandidateSet,
        avoid: &impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let members = set.as_slice();
        let n = members.len();
        let id = set.id();
        let slot = match self.cursors.iter().position(|c| c.set == Some(id)) {
            Some(slot) => slot,
            None => {
                let slot = self.next_cursor;
                self.next_cursor = (slot + 1) % RR_CURSORS;
                // Continue after the endpoint picked last, whatever set it came from, so that a
                // health publication does not restart the rotation.
                let next = match self.last {
                    Some(last) => members.partition_point(|&(e, _)| e <= last) % n,
                    None => (self.seed % n as u64) as usize,
                };
                self.cursors[slot] = Cursor {
                    set: Some(id),
                    next,
                };
                slot
            }
        };
        let mut pos = self.cursors[slot].next;
        if pos >= n {
            // Only if two different sets had the same 64-bit id.
            pos = 0;
        }
        for _ in 0..n {
            let e = members[pos].0;
            pos += 1;
            if pos == n {
                pos = 0;
            }
            if !avoid(e) {
                self.cursors[slot].next = pos;
                self.last = Some(e);
                return Some(e);
            }
        }
        None
    }

    fn pick_weighted(
        &mut self,
        set: &CandidateSet,
        avoid: &impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for &(e, w) in set.as_slice() {
            if avoid(e) {
                continue;
            }
            let current = &mut self.current[e];
            *current += i64::from(w);
            total += i64::from(w);
            if best.is_none_or(|(_, b)| *current > b) {
                best = Some((e, *current));
            }
        }
        let (e, _) = best?;
        self.current[e] -= total;
        Some(e)
    }

    fn pick_least_request(
        &mut self,
        set: &CandidateSet,
        avoid: &impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let members = set.as_slice();
        let a = draw(set, &mut self.rng, avoid, None)?;
        let Some(b) = draw(set, &mut self.rng, avoid, Some(a)) else {
            return Some(members[a].0);
        };
        let (ea, wa) = members[a];
        let (eb, wb) = members[b];
        // in_flight / weight, compared without division.
        let cost_a = u64::from(self.in_flight[ea]) * u64::from(wb);
        let cost_b = u64::from(self.in_flight[eb]) * u64::from(wa);
        Some(if cost_b < cost_a { eb } else { ea })
    }

    fn pick_peak_ewma(
        &mut self,
        set: &CandidateSet,
        avoid: &impl Fn(usize) -> bool,
        now: Instant,
    ) -> Option<usize> {
        let members = set.as_slice();
        let a = draw(set, &mut self.rng, avoid, None)?;
        let Some(b) = draw(set, &mut self.rng, avoid, Some(a)) else {
            return Some(members[a].0);
        };
        let mean_weight = set.total_weight() as f64 / members.len() as f64;
        let mut seed = None;
        let mut cost = |(e, w): (usize, u32)| {
            let estimate = match self.ewma[e].read(now, self.decay_ns) {
                Some(ns) => ns,
                None => *seed.get_or_insert_with(|| self.seed_estimate(set, now)),
            };
            estimate * (1.0 + f64::from(self.in_flight[e]) * mean_weight / f64::from(w))
        };
        let (cost_a, cost_b) = (cost(members[a]), cost(members[b]));
        Some(if cost_b < cost_a {
            members[b].0
        } else {
            members[a].0
        })
    }

    /// The estimate given to a member without samples: the mean estimate of the members of
    /// `set` that have some, else the configured seed.
    fn seed_estimate(&self, set: &CandidateSet, now: Instant) -> f64 {
        let (sum, count) = set
            .members()
            .filter_map(|(e, _)| self.ewma[e].read(now, self.decay_ns))
            .fold((0.0, 0u32), |(sum, count), ns| (sum + ns, count + 1));
        if count == 0 {
            nanos(self.options.ewma_seed)
        } else {
            sum / f64::from(count)
        }
    }

    /// Index in `tables` of the valid table of `set`, built (reusing the least recently used
    /// buffer) if there is none.
    fn table_for(&mut self, set: &CandidateSet) -> usize {
        self.tick += 1;
        let id = set.id();
        if let Some(i) = self
            .tables
            .iter()
            .position(|t| t.valid && t.table.set_id() == id)
        {
            self.tables[i].used = self.tick;
            return i;
        }
        let identities = &self.identities;
        let identity = |e: usize| identities.get(e).copied().unwrap_or(e as u64);
        let size = self.options.maglev_table_size;
        if self.tables.len() < MAGLEV_TABLES {
            self.tables.push(CachedTable {
                table: MaglevTable::build(set, identity, size),
                valid: true,
                used: self.tick,
            });
            return self.tables.len() - 1;
        }
        let i = self
            .tables
            .iter()
            .enumerate()
            .min_by_key(|(_, t)| (t.valid, t.used))
            .map_or(0, |(i, _)| i);
        let t = &mut self.tables[i];
        t.table.rebuild(set, identity, size);
        t.valid = true;
        t.used = self.tick;
        i
    }
}

/// Position of a weighted random member of `set` that is not avoided (and is not at position
/// `excluded`), or `None` when there is none. A few plain draws first (avoid is usually empty
/// or tiny), then one exact draw over the eligible members: either way the result is
/// distributed by weight among the eligible members.
fn draw(
    set: &CandidateSet,
    rng: &mut fastrand::Rng,
    avoid: &impl Fn(usize) -> bool,
    excluded: Option<usize>,
) -> Option<usize> {
    let members = set.as_slice();
    if members.len() <= usize::from(excluded.is_some()) {
        return None;
    }
    for _ in 0..DRAW_ATTEMPTS {
        let p = match excluded {
            None => set.sample(rng),
            Some(x) => set.sample_excluding(rng, x),
        };
        if !avoid(members[p].0) {
            return Some(p);
        }
    }
    let eligible = |&(p, &(e, _)): &(usize, &(usize, u32))| Some(p) != excluded && !avoid(e);
    let total: u64 = members
        .iter()
        .enumerate()
        .filter(eligible)
        .map(|(_, &(_, w))| u64::from(w))
        .sum();
    if total == 0 {
        return None;
    }
    let mut r = rng.u64(..total);
    for (p, &(_, w)) in members.iter().enumerate().filter(eligible) {
        if r < u64::from(w) {
            return Some(p);
        }
        r -= u64::from(w);
    }
    None
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("algorithm", &self.algorithm)
            .field("endpoints", &self.in_flight.len())
            .field("options", &self.options)
            .field("in_flight", &self.in_flight)
            .field(
                "maglev_tables",
                &self.tables.iter().filter(|t| t.valid).count(),
            )
            .finish_non_exhaustive()
    }
}
