//! Active-check state per endpoint.
//!
//! This module owns the bookkeeping of active health checking for one endpoint: when the next
//! probe is due, whether one is in flight, the runs of consecutive passes and failures, the
//! rise/fall hysteresis that turns those runs into a [`ProbeHealth`], and the last result (for the
//! admin API). It performs no I/O and reads no clock: the probe thread runs the probes (see
//! `probe`) and reports each result here with the time it observed, and every random choice
//! (jitter) is drawn from a caller-supplied [`fastrand::Rng`], so tests are deterministic.
//!
//! # Rules
//!
//! - An endpoint starts in the state the caller chooses; new endpoints normally start
//!   [`ProbeHealth::Unknown`], which is not sent traffic.
//! - `Unknown` becomes `Healthy` on the first pass and `Unhealthy` on the first failure, so a new
//!   endpoint gets traffic only after a probe has passed, and a dead one is known dead after one
//!   probe.
//! - `Healthy` becomes `Unhealthy` after `fall` consecutive failures; `Unhealthy` becomes
//!   `Healthy` after `rise` consecutive passes. A `rise` or `fall` of 0 behaves as 1.
//! - After each result the next probe is due at `now + base + uniform[0, jitter]`, where `base` is
//!   [`ProbePolicy::interval`] while `Healthy` and [`ProbePolicy::unhealthy_interval`] while
//!   `Unhealthy` or `Unknown` (an endpoint that is not serving is checked at the other rate, so
//!   that a recovery or the first pass is noticed promptly).
//! - The first probe is spread over `[0, min(base, jitter or base)]` after creation (see
//!   [`ProbeState::new`]) so that endpoints created together do not probe in lockstep.

use std::time::{Duration, Instant};

/// How an endpoint is actively checked. Validation is the config's job; the state machine only
/// guards against `rise`/`fall` of 0 (treated as 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePolicy {
    /// Time between probes while the endpoint is healthy.
    pub interval: Duration,
    /// Time between probes while the endpoint is unhealthy or unknown.
    pub unhealthy_interval: Duration,
    /// Upper bound of the uniform random delay added to every scheduled probe.
    pub jitter: Duration,
    /// How long one probe may take before it counts as failed (enforced by the prober).
    pub timeout: Duration,
    /// Consecutive passes that make an unhealthy endpoint healthy (0 behaves as 1).
    pub rise: u32,
    /// Consecutive failures that make a healthy endpoint unhealthy (0 behaves as 1).
    pub fall: u32,
}

impl Default for ProbePolicy {
    /// Interval 5 s, unhealthy interval 5 s (the same as `interval`), no jitter, timeout 1 s,
    /// rise 2, fall 3.
    fn default() -> Self {
        ProbePolicy {
            interval: Duration::from_secs(5),
            unhealthy_interval: Duration::from_secs(5),
            jitter: Duration::ZERO,
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }
}

impl ProbePolicy {
    /// The effective rise threshold: `rise`, at least 1.
    pub fn rise_threshold(&self) -> u32 {
        self.rise.max(1)
    }

    /// The effective fall threshold: `fall`, at least 1.
    pub fn fall_threshold(&self) -> u32 {
        self.fall.max(1)
    }

    /// The time between probes for an endpoint in state `health`: `interval` while healthy,
    /// `unhealthy_interval` otherwise.
    pub fn interval_for(&self, health: ProbeHealth) -> Duration {
        match health {
            ProbeHealth::Healthy => self.interval,
            ProbeHealth::Unknown | ProbeHealth::Unhealthy => self.unhealthy_interval,
        }
    }
}

/// What active checking currently says about an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeHealth {
    /// No probe has completed yet (new endpoint); not sent traffic unless the whole cluster is
    /// unknown.
    Unknown,
    /// Probes pass.
    Healthy,
    /// Probes fail.
    Unhealthy,
}

/// The result of one probe, kept for reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRecord {
    /// When the result was recorded.
    pub at: Instant,
    /// Whether the probe passed.
    pub ok: bool,
    /// A human-readable description (status line, error).
    pub detail: String,
}

/// A change of [`ProbeHealth`], returned by [`ProbeState::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before the result.
    pub from: ProbeHealth,
    /// The state after the result.
    pub to: ProbeHealth,
    /// When the change happened (the `now` passed to `record`).
    pub at: Instant,
}

/// Active-check state of one endpoint.
#[derive(Debug, Clone)]
pub struct ProbeState {
    health: ProbeHealth,
    next_due: Instant,
    in_flight: Option<Instant>,
    consecutive_ok: u32,
    consecutive_fail: u32,
    last: Option<ProbeRecord>,
    healthy_since: Option<Instant>,
    changed_at: Instant,
}

/// A uniformly random duration in `[0, max]` (both ends included), drawn from `rng`.
/// Durations longer than `u64::MAX` nanoseconds (584 years) are treated as that.
pub(crate) fn uniform(rng: &mut fastrand::Rng, max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.u64(0..=nanos))
}

impl ProbeState {
    /// Creates the state of an endpoint that starts in `initial` at `now`.
    ///
    /// The first probe is due at `now + uniform[0, spread]` where, with `base` the interval for
    /// `initial` ([`ProbePolicy::interval_for`]), `spread = min(base, jitter)` when `jitter` is
    /// non-zero and `spread = base` when it is zero. Spreading the first probe over up to one
    /// interval means endpoints created together (start-up, config reload) do not probe in
    /// lockstep even when no jitter is configured; with a small jitter the first probe comes
    /// promptly, so a new endpoint starts receiving traffic soon after it passes.
    ///
    /// `healthy_since` is `now` when `initial` is `Healthy`; `changed_at` is `now`.
    pub fn new(
        initial: ProbeHealth,
        now: Instant,
        policy: &ProbePolicy,
        rng: &mut fastrand::Rng,
    ) -> ProbeState {
        let base = policy.interval_for(initial);
        let spread = if policy.jitter.is_zero() {
            base
        } else {
            base.min(policy.jitter)
        };
        ProbeState {
            health: initial,
            next_due: now + uniform(rng, spread),
            in_flight: None,
            consecutive_ok: 0,
            consecutive_fail: 0,
            last: None,
            healthy_since: (initial == ProbeHealth::Healthy).then_some(now),
            changed_at: now,
        }
    }

    /// The current state.
    pub fn health(&self) -> ProbeHealth {
        self.health
    }

    /// Whether a probe should be started at `now`: no probe is in flight and `now` has reached
    /// [`next_due`](Self::next_due).
    pub fn due(&self, now: Instant) -> bool {
        self.in_flight.is_none() && now >= self.next_due
    }

    /// When the next probe is due (meaningless while one is in flight: see
    /// [`in_flight`](Self::in_flight)).
    pub fn next_due(&self) -> Instant {
        self.next_due
    }

    /// When the probe in flight was begun: `Some` between [`begin`](Self::begin) and
    /// [`record`](Self::record).
    pub fn in_flight(&self) -> Option<Instant> {
        self.in_flight
    }

    /// Marks a probe as started at `now`: the endpoint is not [`due`](Self::due) again until a
    /// result is [`record`](Self::record)ed. The prober enforces [`ProbePolicy::timeout`] and
    /// records a timeout as a failure.
    pub fn begin(&mut self, now: Instant) {
        self.in_flight = Some(now);
    }

    /// Records the result of a probe observed at `now` (whether or not [`begin`](Self::begin)
    /// was called), schedules the next probe and returns the state change it caused, if any.
    ///
    /// The next probe is due at `now + interval_for(new state) + uniform[0, jitter]`.
    pub fn record(
        &mut self,
        ok: bool,
        detail: impl Into<String>,
        now: Instant,
        policy: &ProbePolicy,
        rng: &mut fastrand::Rng,
    ) -> Option<Transition> {
        self.in_flight = None;
        if ok {
            self.consecutive_ok = self.consecutive_ok.saturating_add(1);
            self.consecutive_fail = 0;
        } else {
            self.consecutive_fail = self.consecutive_fail.saturating_add(1);
            self.consecutive_ok = 0;
        }
        self.last = Some(ProbeRecord {
            at: now,
            ok,
            detail: detail.into(),
        });

        let from = self.health;
        let to = match (from, ok) {
            (ProbeHealth::Unknown, true) => ProbeHealth::Healthy,
            (ProbeHealth::Unknown, false) => ProbeHealth::Unhealthy,
            (ProbeHealth::Healthy, false) if self.consecutive_fail >= policy.fall_threshold() => {
                ProbeHealth::Unhealthy
            }
            (ProbeHealth::Unhealthy, true) if self.consecutive_ok >= policy.rise_threshold() => {
                ProbeHealth::Healthy
            }
            (same, _) => same,
        };

        self.next_due = now + policy.interval_for(to) + uniform(rng, policy.jitter);

        if to == from {
            return None;
        }
        self.health = to;
        self.changed_at = now;
        self.healthy_since = (to == ProbeHealth::Healthy).then_some(now);
        Some(Transition { from, to, at: now })
    }

    /// Consecutive passes up to the last result (0 after a failure).
    pub fn consecutive_ok(&self) -> u32 {
        self.consecutive_ok
    }

    /// Consecutive failures up to the last result (0 after a pass).
    pub fn consecutive_fail(&self) -> u32 {
        self.consecutive_fail
    }

    /// The last recorded result, if any.
    pub fn last(&self) -> Option<&ProbeRecord> {
        self.last.as_ref()
    }

    /// When the endpoint last became healthy (or was created healthy); `None` unless it is
    /// `Healthy` now. Used for slow start.
    pub fn healthy_since(&self) -> Option<Instant> {
        self.healthy_since
    }

    /// When the current state was entered (creation time if it never changed).
    pub fn changed_at(&self) -> Instant {
        self.changed_at
    }
}
