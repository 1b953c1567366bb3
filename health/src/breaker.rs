//! Circuit breakers.
//!
//! This module owns admission control in front of an endpoint or a cluster: limits on the
//! connections, pending requests, requests and retries in use, and the open / half-open circuit
//! that stops sending requests after consecutive failures. The engine keeps one [`Breaker`] per
//! shard (the limits of a [`BreakerPolicy`] are per shard; the engine divides the configured
//! limits by the shard count), so nothing here is shared or locked. No I/O, no clock reads (time
//! is an argument) and no allocation: every operation is a few integer updates.
//!
//! # States
//!
//! - **Closed**: the limits are enforced; a request over a limit is rejected with
//!   [`RejectReason::Overflow`], which does not open the circuit. `failure_threshold` consecutive
//!   failed requests ([`Breaker::record`] with `ok = false`) open it.
//! - **Open** until `now + open_for`: every [`Resource::Request`] acquisition is rejected with
//!   [`RejectReason::Open`]. Results recorded while open are ignored (they belong to requests
//!   started before the circuit opened).
//! - **Half-open** once `until` has passed: exactly one request (the trial) is admitted; others are
//!   rejected with [`RejectReason::Open`] until a result is recorded. Success closes the circuit
//!   (and resets the failure count); failure opens it again for `open_for`. A result recorded in
//!   half-open decides, whichever request it came from (a late result of a request admitted
//!   before the circuit opened is evidence too).
//!
//! The circuit gates [`Resource::Request`] only; connections, pending requests and retries are
//! plain limits (a retry also acquires a request, which the circuit gates).
//!
//! # Trials without permits
//!
//! Acquisitions are anonymous (`try_acquire` returns `Ok(())`, [`Breaker::release`] takes the
//! resource), so the breaker cannot tell which released request was the trial. It counts the
//! requests that were already in flight when the trial was admitted (admitted before the circuit
//! opened) and assumes those are released first: while that count is above zero a release of
//! [`Resource::Request`] decrements it, otherwise the release is the trial's and frees the trial
//! slot. Consequences, all bounded:
//!
//! - a trial released without a result (cancelled) frees the slot, so the breaker never wedges:
//!   the next request becomes the trial. If older requests were still in flight, the slot frees
//!   when they have all been released (each has its own timeout);
//! - the result may be recorded before or after the release ([`Breaker::record`] in half-open
//!   decides either way; the engine records right after releasing, with no request admitted in
//!   between);
//! - if an older request is released after the trial, a second trial may start while the first
//!   is still running; whichever records first decides.
//!
//! # Usage
//!
//! ```
//! # use std::time::Instant;
//! # use headwater_health::breaker::{Breaker, BreakerPolicy, Resource};
//! let policy = BreakerPolicy::default();
//! let mut breaker = Breaker::new();
//! let now = Instant::now();
//! if breaker.try_acquire(Resource::Request, now, &policy).is_ok() {
//!     // ... send the request; then:
//!     breaker.release(Resource::Request);
//!     breaker.record(true, now, &policy); // skipped when cancelled
//! }
//! ```

use std::fmt;
use std::time::{Duration, Instant};

/// Limits and circuit settings. Limits are per shard; `u32::MAX` means unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Connections open at once (1024).
    pub max_connections: u32,
    /// Requests waiting for a connection at once (1024).
    pub max_pending: u32,
    /// Requests in flight at once (1024).
    pub max_requests: u32,
    /// Retries in flight at once (3).
    pub max_retries: u32,
    /// Consecutive failed requests that open the circuit (0 behaves as 1); `None` (the default)
    /// never opens it, so only the limits apply.
    pub failure_threshold: Option<u32>,
    /// How long the circuit stays open before the half-open trial (5 s).
    pub open_for: Duration,
}

impl Default for BreakerPolicy {
    /// Envoy's default thresholds: 1024 connections, 1024 pending, 1024 requests, 3 retries.
    /// The failure circuit is off (`failure_threshold: None`): per-endpoint failures are handled
    /// globally by outlier detection, and a per-shard circuit opening on consecutive failures
    /// would, on a cluster breaker, cut a whole cluster because of one bad endpoint. It is opt-in;
    /// `open_for` is 5 s.
    fn default() -> Self {
        BreakerPolicy {
            max_connections: 1024,
            max_pending: 1024,
            max_requests: 1024,
            max_retries: 3,
            failure_threshold: None,
            open_for: Duration::from_secs(5),
        }
    }
}

impl BreakerPolicy {
    /// The limit for `resource`.
    pub fn limit(&self, resource: Resource) -> u32 {
        match resource {
            Resource::Connection => self.max_connections,
            Resource::Pending => self.max_pending,
            Resource::Request => self.max_requests,
            Resource::Retry => self.max_retries,
        }
    }
}

/// A resource the breaker limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// An upstream connection.
    Connection,
    /// A request waiting for a connection.
    Pending,
    /// A request in flight (gated by the circuit).
    Request,
    /// A retry in flight.
    Retry,
}

impl Resource {
    /// Every resource, in index order.
    pub const ALL: [Resource; 4] = [
        Resource::Connection,
        Resource::Pending,
        Resource::Request,
        Resource::Retry,
    ];

    fn index(self) -> usize {
        match self {
            Resource::Connection => 0,
            Resource::Pending => 1,
            Resource::Request => 2,
            Resource::Retry => 3,
        }
    }
}

/// The circuit's state at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow, subject to the limits.
    Closed,
    /// Requests are rejected until `until`.
    Open {
        /// When the circuit becomes half-open.
        until: Instant,
    },
    /// One trial request decides.
    HalfOpen,
}

/// Why an acquisition was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The resource's limit is reached.
    Overflow,
    /// The circuit is open, or half-open with its trial in flight.
    Open,
}

/// A refused acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rejected {
    /// What was asked for.
    pub resource: Resource,
    /// Why it was refused.
    pub reason: RejectReason,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.resource {
            Resource::Connection => "connection",
            Resource::Pending => "pending request",
            Resource::Request => "request",
            Resource::Retry => "retry",
        };
        match self.reason {
            RejectReason::Overflow => write!(f, "circuit breaker: {what} limit reached"),
            RejectReason::Open => write!(f, "circuit breaker open"),
        }
    }
}

impl std::error::Error for Rejected {}

/// A circuit breaker (one per shard, per endpoint or cluster).
#[derive(Debug, Clone, Default)]
pub struct Breaker {
    in_use: [u32; 4],
    consecutive_failures: u32,
    /// `Some` while open or half-open: open before this instant, half-open from it.
    open_until: Option<Instant>,
    /// Whether the half-open trial is in flight.
    trial: bool,
    /// Requests admitted before the trial and not yet released (see the module docs).
    older_requests: u32,
}

impl Breaker {
    /// A closed breaker with nothing in use.
    pub fn new() -> Breaker {
        Breaker::default()
    }

    /// The circuit's state at `now`.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open { until },
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Takes one unit of `resource` at `now`, or says why not. Give it back with
    /// [`release`](Self::release).
    ///
    /// For [`Resource::Request`] the circuit is checked first (open, or half-open with the trial
    /// in flight: [`RejectReason::Open`]), then the limit ([`RejectReason::Overflow`]). A request
    /// admitted while half-open is the trial ([`trial_in_flight`](Self::trial_in_flight) becomes
    /// true). Other resources only check their limit.
    pub fn try_acquire(
        &mut self,
        resource: Resource,
        now: Instant,
        policy: &BreakerPolicy,
    ) -> Result<(), Rejected> {
        let mut trial = false;
        if resource == Resource::Request {
            match self.state(now) {
                BreakerState::Closed => {}
                BreakerState::Open { .. } => {
                    return Err(Rejected {
                        resource,
                        reason: RejectReason::Open,
                    })
                }
                BreakerState::HalfOpen => {
                    if self.trial {
                        return Err(Rejected {
                            resource,
                            reason: RejectReason::Open,
                        });
                    }
                    trial = true;
                }
            }
        }
        let limit = policy.limit(resource);
        let used = &mut self.in_use[resource.index()];
        if limit != u32::MAX && *used >= limit {
            return Err(Rejected {
                resource,
                reason: RejectReason::Overflow,
            });
        }
        if trial {
            self.trial = true;
            self.older_requests = *used;
        }
        *used = used.saturating_add(1);
        Ok(())
    }

    /// Gives back one unit of `resource` (a request that finished or was cancelled, a closed
    /// connection, a connect attempt that ended, a retry that finished). Releasing more than was
    /// acquired saturates at zero. Releasing the half-open trial frees the trial slot (see the
    /// module docs for how the trial is told apart).
    pub fn release(&mut self, resource: Resource) {
        let used = &mut self.in_use[resource.index()];
        *used = used.saturating_sub(1);
        if resource == Resource::Request && self.trial {
            if self.older_requests > 0 {
                self.older_requests -= 1;
            } else {
                self.trial = false;
            }
        }
    }

    /// Records the result of a request at `now` (see the module docs for what it does in each
    /// state). Releases nothing.
    pub fn record(&mut self, ok: bool, now: Instant, policy: &BreakerPolicy) {
        match self.state(now) {
            BreakerState::Closed => {
                if ok {
                    self.consecutive_failures = 0;
                } else {
                    self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                    if policy
                        .failure_threshold
                        .is_some_and(|t| self.consecutive_failures >= t.max(1))
                    {
                        self.open(now, policy);
                    }
                }
            }
            BreakerState::Open { .. } => {}
            BreakerState::HalfOpen => {
                self.trial = false;
                if ok {
                    self.open_until = None;
                    self.consecutive_failures = 0;
                } else {
                    self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                    self.open(now, policy);
                }
            }
        }
    }

    fn open(&mut self, now: Instant, policy: &BreakerPolicy) {
        self.open_until = Some(now + policy.open_for);
        self.trial = false;
    }

    /// Units of `resource` in use.
    pub fn in_use(&self, resource: Resource) -> u32 {
        self.in_use[resource.index()]
    }

    /// Consecutive failures recorded (reset by a success while closed or by a successful trial).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Whether a half-open trial request is in flight.
    pub fn trial_in_flight(&self) -> bool {
        self.trial
    }
}
