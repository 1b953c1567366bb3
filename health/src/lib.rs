//! Endpoint health: the state machines that decide whether an endpoint gets traffic, and the
//! vocabulary in which the engine reports what happened on each upstream attempt.
//!
//! Everything here except `probe` is sans-IO and takes the current time as an argument, so that
//! tests drive it with a controllable clock:
//!
//! - [`outcome`]: what one upstream attempt came to ([`Outcome`]);
//! - [`probe_state`]: active-check state per endpoint (rise/fall, intervals, jitter, initial state);
//! - [`outlier`]: passive outlier detection over counters aggregated from every shard
//!   (consecutive 5xx, consecutive gateway failures, success rate, latency), ejection with a
//!   growing, capped, jittered time and a cap on the share of a cluster ejected at once;
//! - [`breaker`]: circuit breakers (connection / pending / request / retry limits, open and
//!   half-open with one trial request);
//! - [`retry`]: the retry budget and backoff with jitter;
//! - [`probe`]: the active probes themselves (TCP connect, HTTP) on monoio.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod breaker;
pub mod outcome;
pub mod outlier;
pub mod probe;
pub mod probe_state;
pub mod retry;

pub use outcome::Outcome;
