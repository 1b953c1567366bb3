//! Virtual keys: the secrets clients authenticate with (`Authorization: Bearer ...` or
//! `x-api-key`), what each may use, what it may spend, and how fast.
//!
//! This module owns:
//!
//! - [`KeySpec`], a configured key, and [`authenticate`]: finding the key a client presented
//!   by comparing it with every configured secret in constant time (the time taken depends on
//!   the length of the presented value only, never on how much of it matched, nor on which key
//!   it matched);
//! - the model check ([`KeySpec::check_model`]): a key with a `models` list may ask for those
//!   aliases only (fallbacks the gateway takes on its behalf are the operator's choice and
//!   are not checked);
//! - [`KeyStore`], the narrow interface to the per-key mutable state — check the budget and
//!   the RPM/TPM limits and reserve, record what a request used, tell the spend so far — and
//!   [`MemoryKeyStore`], its single-node implementation. A multi-node store (Redis) implements
//!   the same three operations;
//! - [`KeyError`] and how it is rendered for clients.
//!
//! Statuses, chosen to match what OpenAI-compatible gateways return so that client SDKs
//! behave: a missing or unknown key is **401** (`invalid_api_key`, as OpenAI); a model the key
//! may not use is **403** (`model_not_allowed`); an exhausted budget is **429** with error
//! type and code `budget_exceeded` — what LiteLLM's proxy answers (earlier LiteLLM versions
//! answered 400; OpenAI itself uses 429 `insufficient_quota` for spent credit, and 402 is not
//! understood by OpenAI clients) — without `Retry-After`, since waiting minutes will not help;
//! a key over its RPM/TPM is **429** `rate_limit_exceeded` with `Retry-After`.
//!
//! Budgets: spend is added when a request ends ([`KeyStore::record_usage`]) from the cost the
//! provider's usage implies; a request whose usage is unknown costs nothing, and requests
//! already in flight when the budget runs out are not stopped, so a budget can be overshot by
//! the cost of the requests in flight. A periodic budget's first period starts when the store
//! first sees the key; periods follow each other back to back.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::catalogue::{Catalogue, ModelId};
use crate::egress::ApiKey;
use crate::ingress::{anthropic, openai, ErrorResponse, Ingress};
use crate::limiter::{LimitExceeded, Limits, RateLimiter};

/// How often a budget resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetPeriod {
    /// Never: the budget is a lifetime total.
    Total,
    /// Every this long.
    Every(Duration),
}

/// A spending limit in USD per period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// The most that may be spent per period.
    pub usd: f64,
    /// The period.
    pub period: BudgetPeriod,
}

/// One configured virtual key. Its `Debug` output never shows the secret.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// The key's name, for logs and metrics.
    pub name: String,
    secret: ApiKey,
    /// The aliases it may ask for; all when `None`.
    pub models: Option<Vec<ModelId>>,
    /// Its spending limit.
    pub budget: Option<Budget>,
    /// Its RPM/TPM limits.
    pub limits: Limits,
}

impl KeySpec {
    /// A key named `name` with `secret`.
    pub fn new(
        name: String,
        secret: ApiKey,
        models: Option<Vec<ModelId>>,
        budget: Option<Budget>,
        limits: Limits,
    ) -> KeySpec {
        KeySpec {
            name,
            secret,
            models,
            budget,
            limits,
        }
    }

    /// Whether `presented` is this key's secret, in time that depends on `presented`'s length
    /// only.
    pub fn secret_matches(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.secret.expose().as_bytes())
    }

    /// Whether the key may ask for `model`.
    pub fn allows(&self, model: ModelId) -> bool {
        self.models.as_ref().is_none_or(|m| m.contains(&model))
    }

    /// `Ok` when the key may ask for `model`, else [`KeyError::ModelNotAllowed`].
    pub fn check_model(&self, catalogue: &Catalogue, model: ModelId) -> Result<(), KeyError> {
        if self.allows(model) {
            Ok(())
        } else {
            Err(KeyError::ModelNotAllowed {
                key: self.name.clone(),
                model: catalogue.model(model).name.clone(),
            })
        }
    }
}

/// Compares `presented` with `secret` touching every byte of `presented` whatever the
/// contents; a length difference is folded into the result rather than returned early.
fn constant_time_eq(presented: &[u8], secret: &[u8]) -> bool {
    let mut diff = u8::from(presented.len() != secret.len());
    for (i, &b) in presented.iter().enumerate() {
        let s = secret.get(i).copied().unwrap_or(0);
        diff |= b ^ s;
    }
    std::hint::black_box(diff) == 0
}

/// The key a client presented: `Authorization: Bearer <key>` (OpenAI clients) or
/// `x-api-key: <key>` (Anthropic clients), in that order. `header` looks up one request header
/// by its lowercase name (the engine passes its parsed head; no header map is built).
pub fn presented_key<'a>(header: impl Fn(&str) -> Option<&'a [u8]>) -> Option<&'a str> {
    let text = |name| header(name).and_then(|v| std::str::from_utf8(v).ok());
    if let Some(token) = text("authorization").and_then(|s| {
        let (scheme, token) = s.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    }) {
        return Some(token);
    }
    text("x-api-key").map(str::trim)
}

/// Finds the key `presented` names among `keys`, comparing it with every one of them (see
/// the module documentation). With no keys configured, authentication is off: `Ok(None)`.
pub fn authenticate<'a>(
    keys: &'a [KeySpec],
    presented: Option<&str>,
) -> Result<Option<&'a KeySpec>, KeyError> {
    if keys.is_empty() {
        return Ok(None);
    }
    let presented = match presented {
        Some(p) if !p.is_empty() => p,
        _ => return Err(KeyError::Missing),
    };
    let mut found = None;
    for k in keys {
        // No early exit: every key is compared.
        if k.secret_matches(presented) {
            found = Some(k);
        }
    }
    found.map(Some).ok_or(KeyError::Invalid)
}

/// Why a key's request is refused. Every one of these comes from the client's side
/// (its key, its permissions, its spending, its rate); only [`KeyError::RateLimited`] is worth
/// retrying, after [`KeyError::retry_after`].
#[derive(Debug, Clone, PartialEq)]
pub enum KeyError {
    /// No key was presented.
    Missing,
    /// The presented key is not a configured one.
    Invalid,
    /// The key may not ask for this model.
    ModelNotAllowed {
        /// The key's name.
        key: String,
        /// The alias asked for.
        model: String,
    },
    /// The key's budget for the period is spent.
    BudgetExceeded {
        /// The key's name.
        key: String,
        /// Spent this period.
        spent_usd: f64,
        /// The budget.
        budget_usd: f64,
        /// When the period ends (`None` for a total budget).
        resets_in: Option<Duration>,
    },
    /// The key is over its RPM or TPM.
    RateLimited {
        /// The key's name.
        key: String,
        /// Which limit, and the wait.
        limit: LimitExceeded,
    },
}

impl KeyError {
    /// The HTTP status: 401, 403 or 429 (see the module documentation).
    pub fn status(&self) -> u16 {
        match self {
            KeyError::Missing | KeyError::Invalid => 401,
            KeyError::ModelNotAllowed { .. } => 403,
            KeyError::BudgetExceeded { .. } | KeyError::RateLimited { .. } => 429,
        }
    }

    /// The stable code: `missing_api_key`, `invalid_api_key`, `model_not_allowed`,
    /// `budget_exceeded`, `rate_limit_exceeded`.
    pub fn code(&self) -> &'static str {
        match self {
            KeyError::Missing => "missing_api_key",
            KeyError::Invalid => "invalid_api_key",
            KeyError::ModelNotAllowed { .. } => "model_not_allowed",
            KeyError::BudgetExceeded { .. } => "budget_exceeded",
            KeyError::RateLimited { .. } => "rate_limit_exceeded",
        }
    }

    /// Whether retrying (after [`KeyError::retry_after`]) can succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, KeyError::RateLimited { .. })
    }

    /// The `Retry-After` to send: rate limits only, in whole seconds rounded up.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            KeyError::RateLimited { limit, .. } => {
                let d = limit.retry_in;
                Some(Duration::from_secs(
                    d.as_secs() + u64::from(d.subsec_nanos() > 0),
                ))
            }
            _ => None,
        }
    }

    /// The error in `ingress`'s format: OpenAI `{"error": {message, type, param, code}}`
    /// or Anthropic `{"type": "error", "error": {type, message}}`.
    pub fn render(&self, ingress: Ingress) -> ErrorResponse {
        let message = self.to_string();
        let body = match ingress {
            Ingress::OpenAi => {
                let kind = match self {
                    KeyError::Missing | KeyError::Invalid => "invalid_request_error",
                    KeyError::ModelNotAllowed { .. } => "permission_error",
                    KeyError::BudgetExceeded { .. } => "budget_exceeded",
                    KeyError::RateLimited { .. } => "rate_limit_error",
                };
                openai::ErrorBody::new(&message, kind, None, self.code()).to_vec()
            }
            Ingress::Anthropic => {
                let kind = match self {
                    KeyError::Missing | KeyError::Invalid => "authentication_error",
                    KeyError::ModelNotAllowed { .. } => "permission_error",
                    KeyError::BudgetExceeded { .. } | KeyError::RateLimited { .. } => {
                        "rate_limit_error"
                    }
                };
                anthropic::ErrorBody::new(kind, &message).to_vec()
            }
        };
        ErrorResponse {
            status: self.status(),
            body,
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Missing => f.write_str(
                "no API key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>`",
            ),
            KeyError::Invalid => f.write_str("invalid API key"),
            KeyError::ModelNotAllowed { key, model } => {
                write!(f, "key `{key}` may not use model `{model}`")
            }
            KeyError::BudgetExceeded {
                key,
                spent_usd,
                budget_usd,
                resets_in,
            } => {
                write!(
                    f,
                    "key `{key}` has exceeded its budget: spent ${spent_usd:.4} of ${budget_usd:.2}"
                )?;
                match resets_in {
                    Some(d) => write!(f, "; the budget resets in {}s", d.as_secs()),
                    None => Ok(()),
                }
            }
            KeyError::RateLimited { key, limit } => write!(f, "key `{key}`: {limit}"),
        }
    }
}

impl std::error::Error for KeyError {}

/// What [`KeyStore::check_and_reserve`] took; give it back to [`KeyStore::record_usage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "pass the reservation to record_usage when the request ends"]
pub struct Reservation {
    /// The tokens reserved against the key's TPM (the request's estimate).
    pub tokens: u64,
}

/// Per-key mutable state: budgets and rate limits.
pub trait KeyStore {
    /// Checks `key`'s budget, then its RPM/TPM, for a request of `tokens` estimated tokens at
    /// `now`; when both pass, reserves one request and the tokens.
    fn check_and_reserve(
        &mut self,
        key: &KeySpec,
        tokens: u64,
        now: Instant,
    ) -> Result<Reservation, KeyError>;

    /// Records what the request used when it ended: corrects the token reservation with
    /// `tokens` (prompt plus completion; `None` keeps the estimate) and adds `cost_usd` to the
    /// period's spend (`None`, unknown, adds nothing).
    fn record_usage(
        &mut self,
        key: &KeySpec,
        reservation: Reservation,
        tokens: Option<u64>,
        cost_usd: Option<f64>,
        now: Instant,
    );

    /// USD spent by `key` in the period current at `now`.
    fn spend(&self, key: &KeySpec, now: Instant) -> f64;
}

#[derive(Debug, Clone)]
struct KeyState {
    limiter: RateLimiter,
    spent: f64,
    period_start: Instant,
}

impl KeyState {
    /// Starts the period current at `now`, forgetting the spend of past ones.
    fn roll(&mut self, budget: Option<&Budget>, now: Instant) {
        if let Some(Budget {
            period: BudgetPeriod::Every(p),
            ..
        }) = budget
        {
            let elapsed = now.saturating_duration_since(self.period_start);
            let periods = elapsed.as_nanos() / p.as_nanos().max(1);
            if periods > 0 {
                let step = u32::try_from(periods).unwrap_or(u32::MAX);
                self.period_start += p.saturating_mul(step);
                self.spent = 0.0;
            }
        }
    }

    /// Adds a cost to the spend; negative or non-finite costs are ignored.
    fn add_spend(&mut self, cost_usd: f64) {
        if cost_usd.is_finite() && cost_usd > 0.0 {
            self.spent += cost_usd;
        }
    }

    fn resets_in(&self, budget: &Budget, now: Instant) -> Option<Duration> {
        match budget.period {
            BudgetPeriod::Total => None,
            BudgetPeriod::Every(p) => Some((self.period_start + p).saturating_duration_since(now)),
        }
    }
}

/// [`KeyStore`] in memory, for a single node: state per key name, created at first sight.
#[derive(Debug, Clone, Default)]
pub struct MemoryKeyStore {
    keys: HashMap<String, KeyState>,
}

impl MemoryKeyStore {
    /// An empty store.
    pub fn new() -> MemoryKeyStore {
        MemoryKeyStore::default()
    }

    fn state(&mut self, key: &KeySpec, now: Instant) -> &mut KeyState {
        // The name is copied once, when the key is first seen, not on every request.
        if !self.keys.contains_key(&key.name) {
            self.keys.insert(
                key.name.clone(),
                KeyState {
                    limiter: RateLimiter::new(key.limits),
                    spent: 0.0,
                    period_start: now,
                },
            );
        }
        let st = self
            .keys
            .get_mut(&key.name)
            .expect("inserted above when absent");
        // A reload that changed the limits starts them afresh (the spend is kept).
        if st.limiter.limits() != key.limits {
            st.limiter = RateLimiter::new(key.limits);
        }
        st.roll(key.budget.as_ref(), now);
        st
    }

    /// Adds `cost_usd` to `key`'s spend for the period current at `now`.
    pub fn record_spend(&mut self, key: &KeySpec, cost_usd: f64, now: Instant) {
        self.state(key, now).add_spend(cost_usd);
    }
}

impl KeyStore for MemoryKeyStore {
    fn check_and_reserve(
        &mut self,
        key: &KeySpec,
        tokens: u64,
        now: Instant,
    ) -> Result<Reservation, KeyError> {
        let st = self.state(key, now);
        if let Some(budget) = &key.budget {
            if st.spent >= budget.usd {
                return Err(KeyError::BudgetExceeded {
                    key: key.name.clone(),
                    spent_usd: st.spent,
                    budget_usd: budget.usd,
                    resets_in: st.resets_in(budget, now),
                });
            }
        }
        match st.limiter.reserve(tokens, now, Duration::ZERO) {
            Ok(_) => Ok(Reservation { tokens }),
            Err(limit) => Err(KeyError::RateLimited {
                key: key.name.clone(),
                limit,
            }),
        }
    }

    fn record_usage(
        &mut self,
        key: &KeySpec,
        reservation: Reservation,
        tokens: Option<u64>,
        cost_usd: Option<f64>,
        now: Instant,
    ) {
        let st = self.state(key, now);
        st.limiter.adjust_tokens(
            reservation.tokens,
            tokens.unwrap_or(reservation.tokens),
            now,
        );
        if let Some(c) = cost_usd {
            st.add_spend(c);
        }
    }

    fn spend(&self, key: &KeySpec, now: Instant) -> f64 {
        let Some(st) = self.keys.get(&key.name) else {
            return 0.0;
        };
        let mut st = st.clone();
        st.roll(key.budget.as_ref(), now);
        st.spent
    }
}
