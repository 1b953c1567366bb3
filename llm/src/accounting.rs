//! Accounting: what each request used and cost, as one record for the access log, and
//! running totals by (model alias, deployment, key) for `/metrics`.
//!
//! This module owns [`RequestRecord`] (built by the engine when a request ends, most fields
//! from the failover plan: [`RequestRecord::from_plan`]) with its JSON rendering, and the
//! [`Ledger`] that sums records and renders them as Prometheus text:
//!
//! - `headwater_llm_requests_total{model,deployment,key,outcome}`;
//! - `headwater_llm_tokens_total{model,deployment,key,kind="input|output|cached"}` — `input`
//!   is the whole prompt (cached tokens included), `cached` the part read from the provider's
//!   prompt cache;
//! - `headwater_llm_cost_usd_total{model,deployment,key}`.
//!
//! Unknown usage or cost (a stream that carried none) is rendered as `null` in the record and
//! adds nothing to the totals: nothing is estimated. A request refused before reaching a
//! deployment has `deployment=""`; a request without a key (authentication off) has
//! `key=""`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::catalogue::Catalogue;
use crate::egress::ProviderKind;
use crate::error::ErrorKind;
use crate::router::{Attempt, Attempts};
use crate::usage::Usage;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// Answered.
    Success,
    /// Answered with this error (from a provider or the gateway).
    Failed(ErrorKind),
    /// Refused before routing (a key error code such as `budget_exceeded`).
    Rejected(&'static str),
    /// The client went away.
    Cancelled,
}

impl RequestOutcome {
    /// `success`, the error kind's name, the rejection code, or `cancelled`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RequestOutcome::Success => "success",
            RequestOutcome::Failed(kind) => kind.as_str(),
            RequestOutcome::Rejected(code) => code,
            RequestOutcome::Cancelled => "cancelled",
        }
    }
}

/// One request, for the access log and the [`Ledger`].
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// The alias the client asked for.
    pub model: String,
    /// The deployment that answered (or made the last attempt); `None` if none was tried.
    pub deployment: Option<String>,
    /// Its provider.
    pub provider: Option<ProviderKind>,
    /// The virtual key's name; `None` without authentication.
    pub key: Option<String>,
    /// Usage, when the provider reported it.
    pub usage: Option<Usage>,
    /// Cost in USD, when usage and prices are known.
    pub cost_usd: Option<f64>,
    /// From arrival to the end of the answer.
    pub latency: Duration,
    /// From arrival to the first token (streams) or the answer.
    pub ttft: Option<Duration>,
    /// Attempts made.
    pub attempts: u32,
    /// The aliases fallen back to, in order.
    pub fallbacks: Vec<String>,
    /// How it ended.
    pub outcome: RequestOutcome,
    /// Whether the client asked for a stream.
    pub stream: bool,
}

impl RequestRecord {
    /// A record of a request for `model` that never reached routing (e.g. a key error).
    pub fn rejected(model: &str, key: Option<&str>, code: &'static str) -> RequestRecord {
        RequestRecord {
            model: model.to_owned(),
            deployment: None,
            provider: None,
            key: key.map(str::to_owned),
            usage: None,
            cost_usd: None,
            latency: Duration::ZERO,
            ttft: None,
            attempts: 0,
            fallbacks: Vec::new(),
            outcome: RequestOutcome::Rejected(code),
            stream: false,
        }
    }

    /// A record filled from the failover plan: the requested alias, the deployment of `last`
    /// (the attempt that answered, or the last one made), attempts and fallbacks; `usage`
    /// prices at that deployment's prices. Latency, TTFT and `stream` are the caller's to set.
    pub fn from_plan(
        catalogue: &Catalogue,
        plan: &Attempts,
        last: Option<&Attempt>,
        key: Option<&str>,
        usage: Option<Usage>,
        outcome: RequestOutcome,
    ) -> RequestRecord {
        let spec = last.map(|a| catalogue.deployment(a.deployment));
        RequestRecord {
            model: catalogue.model(plan.requested()).name.clone(),
            deployment: spec.map(|s| s.name.clone()),
            provider: spec.map(|s| s.provider()),
            key: key.map(str::to_owned),
            usage,
            cost_usd: spec
                .and_then(|s| s.prices)
                .and_then(|p| p.cost(usage.as_ref())),
            latency: Duration::ZERO,
            ttft: None,
            attempts: plan.attempts_made(),
            fallbacks: plan
                .fallbacks()
                .iter()
                .map(|&m| catalogue.model(m).name.clone())
                .collect(),
            outcome,
            stream: false,
        }
    }

    /// One JSON object on one line, fields in a fixed order; unknown values are `null`:
    /// `{"model","deployment","provider","key","outcome","stream","input_tokens",
    /// "output_tokens","cached_tokens","cost_usd","latency_ms","ttft_ms","attempts",
    /// "fallbacks"}`.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            model: &'a str,
            deployment: Option<&'a str>,
            provider: Option<&'static str>,
            key: Option<&'a str>,
            outcome: &'static str,
            stream: bool,
            input_tokens: Option<u64>,
            output_tokens: Option<u64>,
            cached_tokens: Option<u64>,
            cost_usd: Option<f64>,
            latency_ms: u64,
            ttft_ms: Option<u64>,
            attempts: u32,
            fallbacks: &'a [String],
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        serde_json::to_string(&Out {
            model: &self.model,
            deployment: self.deployment.as_deref(),
            provider: self.provider.map(ProviderKind::as_str),
            key: self.key.as_deref(),
            outcome: self.outcome.as_str(),
            stream: self.stream,
            input_tokens: self.usage.map(|u| u.input_tokens),
            output_tokens: self.usage.map(|u| u.output_tokens),
            cached_tokens: self.usage.map(|u| u.cached_input_tokens),
            cost_usd: self.cost_usd.filter(|c| c.is_finite()),
            latency_ms: ms(self.latency),
            ttft_ms: self.ttft.map(ms),
            attempts: self.attempts,
            fallbacks: &self.fallbacks,
        })
        .unwrap_or_default()
    }
}

/// Totals of one (model, deployment, key) series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Prompt tokens (cached included).
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Prompt tokens read from cache.
    pub cached_tokens: u64,
    /// USD.
    pub cost_usd: f64,
    /// Requests by outcome name.
    pub requests: BTreeMap<&'static str, u64>,
}

/// Running totals by (model alias, deployment, key), rendered in label order.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// model → deployment → key → totals: found by `&str` on every request, so names are
    /// copied only when a series first appears.
    series: BTreeMap<String, BTreeMap<String, BTreeMap<String, Totals>>>,
}

/// The entry for `key` in `map`, created (and `key` copied) only when absent.
fn entry<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above when absent")
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Adds a request.
    pub fn record(&mut self, r: &RequestRecord) {
        let by_deployment = entry(&mut self.series, &r.model);
        let by_key = entry(by_deployment, r.deployment.as_deref().unwrap_or_default());
        let t = entry(by_key, r.key.as_deref().unwrap_or_default());
        *t.requests.entry(r.outcome.as_str()).or_default() += 1;
        if let Some(u) = r.usage {
            t.input_tokens += u.input_tokens;
            t.output_tokens += u.output_tokens;
            t.cached_tokens += u.cached_input_tokens;
        }
        if let Some(c) = r.cost_usd.filter(|c| c.is_finite() && *c >= 0.0) {
            t.cost_usd += c;
        }
    }

    /// The totals of one series (`""` for an absent deployment or key).
    pub fn totals(&self, model: &str, deployment: &str, key: &str) -> Option<&Totals> {
        self.series.get(model)?.get(deployment)?.get(key)
    }

    /// Whether no request was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Every series, in label order.
    fn each(&self) -> impl Iterator<Item = ([&str; 3], &Totals)> {
        self.series.iter().flat_map(|(m, ds)| {
            ds.iter().flat_map(move |(d, ks)| {
                ks.iter()
                    .map(move |(k, t)| ([m.as_str(), d.as_str(), k.as_str()], t))
            })
        })
    }

    /// Appends the Prometheus text (see the module documentation).
    pub fn render_prometheus(&self, out: &mut String) {
        let labels = |out: &mut String, [m, d, k]: [&str; 3]| {
            out.push_str("{model=\"");
            escape_label(out, m);
            out.push_str("\",deployment=\"");
            escape_label(out, d);
            out.push_str("\",key=\"");
            escape_label(out, k);
            out.push('"');
        };
        header(
            out,
            "llm_requests_total",
            "counter",
            "LLM requests by model alias, deployment, virtual key and outcome.",
        );
        for (series, t) in self.each() {
            for (outcome, n) in &t.requests {
                out.push_str("headwater_llm_requests_total");
                labels(out, series);
                let _ = writeln!(out, ",outcome=\"{outcome}\"}} {n}");
            }
        }
        header(
            out,
            "llm_tokens_total",
            "counter",
            "LLM tokens by model alias, deployment, virtual key and kind (input includes cached).",
        );
        for (series, t) in self.each() {
            for (kind, n) in [
                ("input", t.input_tokens),
                ("output", t.output_tokens),
                ("cached", t.cached_tokens),
            ] {
                out.push_str("headwater_llm_tokens_total");
                labels(out, series);
                let _ = writeln!(out, ",kind=\"{kind}\"}} {n}");
            }
        }
        header(
            out,
            "llm_cost_usd_total",
            "counter",
            "LLM cost in USD by model alias, deployment and virtual key.",
        );
        for (series, t) in self.each() {
            out.push_str("headwater_llm_cost_usd_total");
            labels(out, series);
            let _ = writeln!(out, "}} {}", t.cost_usd);
        }
    }
}

/// `# HELP` and `# TYPE` lines of `headwater_{name}`.
pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP headwater_{name} {help}");
    let _ = writeln!(out, "# TYPE headwater_{name} {kind}");
}

/// Escapes a label value per the text exposition format: `\` → `\\`, `"` → `\"`, newline →
/// `\n`.
pub(crate) fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}
