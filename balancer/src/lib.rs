//! Load balancing for Headwater, pure: no I/O, no clocks of their own (time is passed in as an
//! [`Instant`](std::time::Instant)), no locks, and no allocation when picking. Each shard owns
//! one [`Balancer`] per cluster and asks it for an endpoint index out of a [`CandidateSet`],
//! the endpoints eligible after health checking, built once per health publication.
//!
//! Modules and what each owns:
//!
//! - [`algorithm`]: the [`Algorithm`] names as the configuration spells them;
//! - [`candidates`]: [`CandidateSet`], the members and effective weights a pick chooses from,
//!   and the weighted sampling over them;
//! - [`mod@balancer`]: [`Balancer`], the per-shard state and the pick of every algorithm, and
//!   its [`Options`];
//! - [`maglev`]: the Maglev consistent-hashing table;
//! - [`priority`]: priority levels and panic mode, turning endpoint health into the ordered
//!   tiers of a [`Plan`];
//! - [`slow_start`]: the ramp of a newly healthy endpoint's weight;
//! - [`hash`]: the stable 64-bit hashes ([`hash_key`] for consistent-hashing keys);
//! - [`round_robin`]: the plain [`RoundRobin`] over an endpoint count that the engine used first.
//!
//! The algorithms:
//!
//! - **round-robin**: members in endpoint order, skipping avoided ones, a cursor per candidate
//!   set (a new set continues after the endpoint picked last). Weights are ignored.
//! - **weighted**: smooth weighted round robin (nginx): every pick adds each eligible member's
//!   weight to its current weight, takes the largest and subtracts the eligible total from it.
//!   Current weights are kept per endpoint, so set changes do not reset the sequence.
//! - **least-request**: power of two choices: two distinct members drawn at random by weight
//!   among those not avoided, the one with fewer in-flight requests per unit of weight wins,
//!   ties to the first drawn. At equal load this picks in proportion to weight; with equal
//!   weights it is plain P2C least-request.
//! - **peak-ewma**: the same two weighted draws, the lower `ewma × (1 + in_flight ×
//!   mean_weight / weight)` wins (with equal weights: `ewma × (in_flight + 1)`), ties to the
//!   first drawn. The EWMA is peak-sensitive: a response time above the current value replaces
//!   it at once; one at or below pulls it towards itself with weight `1 - exp(-elapsed /
//!   decay)`, `elapsed` being the time since the previous sample; a failure counts as
//!   [`Options::failure_penalty`]. Between samples the value decays towards zero with the same
//!   time constant (as Finagle's and Tower's do on read), which is how an endpoint that stopped
//!   being picked for being slow gets tried again. An endpoint without samples is given the mean
//!   estimate of the members that have some (else [`Options::ewma_seed`]), so a new endpoint is
//!   neither flooded nor starved.
//! - **maglev**: consistent hashing of the pick's key through a weighted Maglev table, cached per
//!   set; an avoided endpoint's keys walk forward to the next slot not avoided. Without a key,
//!   weighted random.
//! - **random**: weighted random among the members not avoided.
//!
//! Weights enter the two power-of-two-choices algorithms through the draw, and their costs
//! compare load *per unit of weight* without the weight dividing the latency: with the weight
//! in the cost alone (`(in_flight + 1) / weight` over a uniform draw), the lighter member of
//! every pair loses at equal load, so weights 1, 2, 3 would get 0%, 33% and 67% of the picks
//! instead of 17%, 33% and 50%, and a slow-starting endpoint (reduced weight) would get almost
//! nothing until its window ended.
//!
//! All randomness comes from a `fastrand::Rng` seeded at construction: a balancer is
//! deterministic for a seed and a sequence of calls.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod algorithm;
pub mod balancer;
pub mod candidates;
pub mod hash;
pub mod maglev;
pub mod priority;
pub mod round_robin;
pub mod slow_start;

mod ewma;

pub use algorithm::{Algorithm, UnknownAlgorithm};
pub use balancer::{Balancer, Options};
pub use candidates::CandidateSet;
pub use hash::hash_key;
pub use maglev::MaglevTable;
pub use priority::{plan, Member, Plan, Standing, Tier, TierKind};
pub use round_robin::RoundRobin;
pub use slow_start::{slow_start_weight, slow_start_weight_with_aggression};
