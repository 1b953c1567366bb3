//! The model catalogue: the `[llm]` configuration section as serde sees it ([`LlmConfig`]),
//! its validation, and the resolved [`Catalogue`] the router, health tracking and key checks
//! read.
//!
//! The section, embedded by the engine's configuration file:
//!
//! ```toml
//! [[llm.model]]
//! name = "gpt-4o"                      # the public alias clients ask for
//! fallbacks = ["claude-sonnet"]        # other aliases to try, in order
//! context_fallback = "gpt-4o-long"     # on a context-length error, this alias
//! routing = "weighted"                 # weighted | least-latency | cheapest
//! [[llm.model.deployment]]
//! provider = "openai"                  # azure, anthropic, gemini, mistral, openai-compatible
//! model = "gpt-4o-2024-08-06"
//! api_key = "env:OPENAI_API_KEY"       # a literal, or env:NAME resolved at load
//! price = { input_per_million = 2.5, output_per_million = 10.0 }
//! rpm = 500
//! tpm = 30000
//! [llm.model.deployment.canary]
//! prompt = "Reply with the word: pong"
//! expect = { contains = "pong" }
//! [[llm.key]]
//! name = "team-a"
//! key = "env:HEADWATER_KEY_TEAM_A"
//! budget = { usd = 100.0, period = "30d" }
//! ```
//!
//! plus the optional `[llm.failover]` ([`FailoverConfig`]) and `[llm.health]`
//! ([`HealthConfig`]) tables.
//!
//! Validation collects every problem, each as a [`ConfigError`] naming the offending item by
//! its path in the file (`llm.model[2].deployment[0].provider`), so the engine can map it to a
//! line and column. Secrets are resolved at load (`env:NAME`) and never appear in an error.
//!
//! Fallback chains are transitive: a model's chain is itself, its `fallbacks` in order, then
//! their own fallbacks (breadth first), each alias once. A cycle in `fallbacks` (or in
//! `context_fallback`) is a configuration error.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::canonical::{ChatRequest, Message, Part, Role, Sampling};
use crate::egress::{ApiKey, Deployment, ProviderKind};
use crate::health::HealthPolicy;
use crate::keys::{Budget, BudgetPeriod, KeySpec};
use crate::limiter::Limits;
use crate::models::ModelCard;
use crate::router::{FailoverPolicy, Routing};
use crate::usage::Prices;

// ---------------------------------------------------------------------------------------------
// The section as serde sees it
// ---------------------------------------------------------------------------------------------

/// The `[llm]` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// `[[llm.model]]`: the public model aliases.
    #[serde(default)]
    pub model: Vec<ModelConfig>,
    /// `[[llm.key]]`: the virtual keys clients authenticate with. None: no authentication.
    #[serde(default)]
    pub key: Vec<KeyConfig>,
    /// `[llm.failover]`.
    #[serde(default)]
    pub failover: FailoverConfig,
    /// `[llm.health]`.
    #[serde(default)]
    pub health: HealthConfig,
    /// `[llm.upstream]`.
    #[serde(default)]
    pub upstream: UpstreamConfig,
}

/// `[llm.upstream]`: how the gateway talks to providers; see [`UpstreamPolicy`] for meanings
/// and defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// TCP connect (plus TLS handshake) deadline.
    pub connect_timeout: Option<String>,
    /// From sending the request to the response head.
    pub first_byte_timeout: Option<String>,
    /// Longest silence between two pieces of a response body (streams included).
    pub idle_timeout: Option<String>,
    /// Largest client request body accepted, in bytes.
    pub max_request_body: Option<u64>,
    /// Largest non-streamed provider response read, in bytes.
    pub max_response_body: Option<u64>,
    /// Trust anchors for providers: `webpki` (Mozilla's, compiled in; the default) or
    /// `system` (the operating system's store).
    pub roots: Option<String>,
    /// A PEM file of CA certificates to trust *instead of* `roots` (an internal CA).
    pub ca_file: Option<String>,
    /// Whether provider certificates are verified (default true).
    pub verify: Option<bool>,
    /// Idle keep-alive connections kept per provider host and shard.
    pub max_idle_per_host: Option<usize>,
}

/// One `[[llm.model]]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The public alias.
    pub name: String,
    /// Aliases to fall back to, in order.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// The alias to move to on a context-length error.
    pub context_fallback: Option<String>,
    /// `weighted` (default), `least-latency` or `cheapest`.
    pub routing: Option<String>,
    /// `[[llm.model.deployment]]`.
    #[serde(default)]
    pub deployment: Vec<DeploymentConfig>,
}

/// One `[[llm.model.deployment]]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// A name for logs and metrics; default `provider/model`.
    pub name: Option<String>,
    /// `openai`, `azure`, `anthropic`, `gemini`, `mistral` or `openai-compatible`.
    pub provider: String,
    /// The upstream model name (for Azure, the deployment name).
    pub model: String,
    /// The endpoint; the provider's public one when absent.
    pub base_url: Option<String>,
    /// A literal key, or `env:NAME`.
    pub api_key: Option<String>,
    /// Azure's `api-version`.
    pub api_version: Option<String>,
    /// Share of the traffic relative to the model's other deployments (default 1).
    pub weight: Option<u32>,
    /// Prices per million tokens.
    pub price: Option<PriceConfig>,
    /// The context window in tokens (informative).
    pub context_window: Option<u64>,
    /// Requests per minute this deployment may be sent.
    pub rpm: Option<u64>,
    /// Tokens per minute this deployment may be sent.
    pub tpm: Option<u64>,
    /// `max_tokens` sent when the client gave none and the provider needs one (Anthropic).
    pub max_tokens: Option<u32>,
    /// The semantic health check.
    pub canary: Option<CanaryConfig>,
}

/// `price = { ... }`, in USD per million tokens.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// Uncached prompt tokens.
    pub input_per_million: f64,
    /// Output tokens.
    pub output_per_million: f64,
    /// Prompt tokens read from cache (the input price when absent).
    pub cached_input_per_million: Option<f64>,
    /// Prompt tokens written to cache (the input price when absent).
    pub cache_write_per_million: Option<f64>,
}

/// `[llm.model.deployment.canary]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// The user message sent.
    pub prompt: String,
    /// What a healthy answer looks like.
    pub expect: ExpectConfig,
    /// Time between checks (default 30 s).
    pub interval: Option<String>,
    /// How long one check may take (default 10 s).
    pub timeout: Option<String>,
    /// Consecutive passes that bring a failing deployment back (default 2).
    pub rise: Option<u32>,
    /// Consecutive failures that take a deployment out (default 2).
    pub fall: Option<u32>,
    /// `max_tokens` of the check request (default 16).
    pub max_tokens: Option<u32>,
}

/// `expect = { contains = "..." }`, `{ regex = "..." }` or
/// `{ json_field = "a.b", equals = ... }`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectConfig {
    /// The answer contains this text (case-insensitive).
    pub contains: Option<String>,
    /// The answer matches this regular expression.
    pub regex: Option<String>,
    /// The answer is JSON whose field at this dotted path...
    pub json_field: Option<String>,
    /// ...equals this value.
    pub equals: Option<Value>,
}

/// One `[[llm.key]]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The key's name, for logs and metrics.
    pub name: String,
    /// The secret clients send (a literal, or `env:NAME`).
    pub key: String,
    /// The aliases it may use; all when absent.
    pub models: Option<Vec<String>>,
    /// Spending limit.
    pub budget: Option<BudgetConfig>,
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
}

/// `budget = { usd = 100.0, period = "30d" }`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// The most USD the key may spend per period.
    pub usd: f64,
    /// `total` (never resets) or a duration such as `30d`, `24h`.
    pub period: String,
}

/// `[llm.failover]`; see [`FailoverPolicy`] for meanings and defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    /// Attempts per request, the first included.
    pub max_attempts: Option<u32>,
    /// No attempt starts later than this after the request arrived.
    pub deadline: Option<String>,
    /// The longest `Retry-After` (or rate-limit wait) worth waiting for.
    pub max_wait: Option<String>,
    /// First retry backoff of a deployment.
    pub backoff: Option<String>,
    /// Cap on the backoff.
    pub max_backoff: Option<String>,
    /// Retries of one deployment after its first failure.
    pub retries_per_deployment: Option<u32>,
    /// Whether a 401/403/404 from a deployment moves on to the next one.
    pub fail_over_on_deployment_fault: Option<bool>,
    /// Whether ejected deployments are tried when nothing else is left.
    pub last_resort: Option<bool>,
}

/// `[llm.health]`; see [`HealthPolicy`] for meanings and defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Consecutive failures (5xx, transport, garbage) that eject.
    pub consecutive_failures: Option<u32>,
    /// Consecutive transport failures (connect, reset, timeout, garbage) that eject.
    pub consecutive_gateway_failures: Option<u32>,
    /// First ejection time.
    pub base_ejection: Option<String>,
    /// Cap on the ejection time.
    pub max_ejection: Option<String>,
    /// Share of a model's deployments that may be ejected at once.
    pub max_ejection_percent: Option<u8>,
    /// Unit of ejection-count decay.
    pub interval: Option<String>,
    /// Cooling-down time after a 429 without `Retry-After`.
    pub rate_limit_cooldown: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One validation problem: the path of the offending item and what is wrong. Configuration
/// errors are never retryable: the file must change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `llm.model[2].deployment[0].provider`.
    pub path: String,
    /// Why it is refused.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one section, in file order (model by model, then keys, then the
/// policies; reference and cycle checks after the items they concern).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// ---------------------------------------------------------------------------------------------
// The resolved catalogue
// ---------------------------------------------------------------------------------------------

/// A model alias by position in [`Catalogue::models`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId(pub usize);

/// A deployment by position in [`Catalogue::deployments`] (all models' deployments, model by
/// model, in file order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeploymentId(pub usize);

/// One public model alias.
#[derive(Debug, Clone)]
pub struct Model {
    /// Its position.
    pub id: ModelId,
    /// The alias.
    pub name: String,
    /// How a deployment is chosen.
    pub routing: Routing,
    /// Its deployments, in file order.
    pub deployments: Vec<DeploymentId>,
    /// Its own fallbacks, in order.
    pub fallbacks: Vec<ModelId>,
    /// Where a context-length error moves to.
    pub context_fallback: Option<ModelId>,
    /// Itself, then the transitive fallbacks breadth first, each once: the order a request
    /// for this alias tries models in.
    pub chain: Vec<ModelId>,
}

/// One deployment of a model, resolved.
#[derive(Debug, Clone)]
pub struct DeploymentSpec {
    /// Its position among all deployments.
    pub id: DeploymentId,
    /// The model it serves.
    pub model: ModelId,
    /// Its position among its model's deployments.
    pub index: usize,
    /// The name in logs, metrics and status (`provider/model` by default).
    pub name: String,
    /// How to reach it (with its key).
    pub deployment: Deployment,
    /// Routing weight (at least 1).
    pub weight: u32,
    /// Prices in USD per million tokens, when configured.
    pub prices: Option<Prices>,
    /// The context window in tokens, when configured.
    pub context_window: Option<u64>,
    /// Its RPM/TPM limits.
    pub limits: Limits,
    /// Its semantic health check.
    pub canary: Option<CanarySpec>,
}

impl DeploymentSpec {
    /// The price `cheapest` routing compares: `(3 × input + output) / 4` USD per million
    /// tokens, the common 3:1 input-to-output blend. `None` when no price is configured (such
    /// deployments rank after every priced one).
    pub fn blended_price(&self) -> Option<f64> {
        self.prices
            .map(|p| (3.0 * p.input_per_million + p.output_per_million) / 4.0)
    }

    /// The provider kind.
    pub fn provider(&self) -> ProviderKind {
        self.deployment.kind
    }
}

/// What a canary answer must look like.
#[derive(Debug, Clone)]
pub enum Expect {
    /// The answer's text contains this, ignoring case.
    Contains(String),
    /// The answer's text matches this regular expression.
    Regex(regex::Regex),
    /// The answer's text is JSON (a Markdown code fence around it is allowed) whose value at
    /// the dotted `path` (`a.b`, array positions as numbers: `items.0.id`) equals `equals`
    /// (numbers compare by value).
    JsonField {
        /// The dotted path.
        path: String,
        /// The expected value.
        equals: Value,
    },
}

/// A deployment's semantic health check, resolved.
#[derive(Debug, Clone)]
pub struct CanarySpec {
    /// The user message sent.
    pub prompt: String,
    /// What a healthy answer looks like.
    pub expect: Expect,
    /// Time between checks.
    pub interval: Duration,
    /// How long one check may take (the engine enforces it and reports a timeout as a failure).
    pub timeout: Duration,
    /// Consecutive passes that bring a failing deployment back.
    pub rise: u32,
    /// Consecutive failures that take a deployment out.
    pub fall: u32,
    /// `max_tokens` of the check request.
    pub max_tokens: u32,
}

impl CanarySpec {
    /// The check request, for [`Deployment::chat_request`]: the prompt as the only user
    /// message, temperature 0, `max_tokens`, no stream. `model` names the alias for logs.
    pub fn request(&self, model: &str) -> ChatRequest {
        ChatRequest {
            model: model.to_owned(),
            messages: vec![Message {
                role: Role::User,
                content: vec![Part::Text(self.prompt.clone())],
            }],
            sampling: Sampling {
                temperature: Some(0.0),
                ..Sampling::default()
            },
            max_tokens: Some(self.max_tokens),
            ..ChatRequest::default()
        }
    }
}

/// The resolved, validated `[llm]` section. Immutable: a reload builds a new one (and new
/// router state).
#[derive(Debug, Clone)]
pub struct Catalogue {
    models: Vec<Model>,
    deployments: Vec<DeploymentSpec>,
    keys: Vec<KeySpec>,
    by_name: HashMap<String, ModelId>,
    /// The failover rules of every request.
    pub failover: FailoverPolicy,
    /// Passive health-check settings.
    pub health: HealthPolicy,
    /// How providers are called.
    pub upstream: UpstreamPolicy,
}

/// `[llm.upstream]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamPolicy {
    /// TCP connect plus TLS handshake deadline (default 5 s).
    pub connect_timeout: Duration,
    /// From the request's last byte to the response head (default 60 s: a non-streamed
    /// answer arrives whole after generation).
    pub first_byte_timeout: Duration,
    /// Longest silence between two pieces of a response body (default 60 s).
    pub idle_timeout: Duration,
    /// Largest client request body accepted, in bytes (default 8 MiB; 413 above).
    pub max_request_body: u64,
    /// Largest non-streamed provider response read, in bytes (default 32 MiB).
    pub max_response_body: u64,
    /// Trust the operating system's store instead of the compiled-in webpki roots.
    pub system_roots: bool,
    /// Trust only the CA certificates of this PEM file.
    pub ca_file: Option<String>,
    /// Whether provider certificates are verified (default true).
    pub verify: bool,
    /// Idle keep-alive connections kept per provider host and shard (default 32).
    pub max_idle_per_host: usize,
}

impl Default for UpstreamPolicy {
    fn default() -> Self {
        UpstreamPolicy {
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_request_body: 8 << 20,
            max_response_body: 32 << 20,
            system_roots: false,
            ca_file: None,
            verify: true,
            max_idle_per_host: 32,
        }
    }
}

impl Catalogue {
    /// Validates `config` and resolves it; `env` looks up the `env:NAME` secrets (pass
    /// `|n| std::env::var(n).ok()`, or [`Catalogue::from_config_with_process_env`]).
    pub fn from_config(
        config: &LlmConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Catalogue, ConfigErrors> {
        Builder {
            errors: Vec::new(),
            env: &env,
        }
        .build(config)
    }

    /// [`Catalogue::from_config`] with secrets from the process environment.
    pub fn from_config_with_process_env(config: &LlmConfig) -> Result<Catalogue, ConfigErrors> {
        Catalogue::from_config(config, |name| std::env::var(name).ok())
    }

    /// Every model, by [`ModelId`].
    pub fn models(&self) -> &[Model] {
        &self.models
    }

    /// One model.
    ///
    /// # Panics
    /// When `id` is not one of this catalogue's.
    pub fn model(&self, id: ModelId) -> &Model {
        &self.models[id.0]
    }

    /// The model a client's alias names.
    pub fn model_id(&self, alias: &str) -> Option<ModelId> {
        self.by_name.get(alias).copied()
    }

    /// Every deployment, by [`DeploymentId`].
    pub fn deployments(&self) -> &[DeploymentSpec] {
        &self.deployments
    }

    /// One deployment.
    ///
    /// # Panics
    /// When `id` is not one of this catalogue's.
    pub fn deployment(&self, id: DeploymentId) -> &DeploymentSpec {
        &self.deployments[id.0]
    }

    /// The virtual keys.
    pub fn keys(&self) -> &[KeySpec] {
        &self.keys
    }

    /// The aliases as `GET /v1/models` lists them, owned by `owned_by`, dated `created`.
    pub fn model_cards(&self, created: u64, owned_by: &str) -> Vec<ModelCard> {
        self.models
            .iter()
            .map(|m| ModelCard {
                id: m.name.clone(),
                created,
                owned_by: owned_by.to_owned(),
                display_name: None,
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------------------------

/// Parses `"500ms"`, `"1.5s"`, `"2m"`, `"1h"`, `"30d"`: one number (at most nine decimals)
/// followed by one unit out of `ms`, `s`, `m`, `h`, `d`; at most ten years.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = |why: &str| format!("invalid duration {text:?}: {why}");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_nanos: u128 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        "" => return Err(invalid("missing unit (ms, s, m, h or d)")),
        _ => return Err(invalid(
            "expected a number followed by one unit (ms, s, m, h or d), e.g. \"30s\" or \"30d\"",
        )),
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty()
        || (number.contains('.') && frac.is_empty())
        || frac.contains('.')
        || frac.len() > 9
    {
        return Err(invalid("expected a number such as 30, 1.5 or 0.25"));
    }
    let int: u128 = int.parse().map_err(|_| invalid("too large"))?;
    let frac_nanos: u128 = if frac.is_empty() {
        0
    } else {
        let digits: u128 = frac.parse().map_err(|_| invalid("bad decimals"))?;
        digits * 10u128.pow(9 - frac.len() as u32) * unit_nanos / 1_000_000_000
    };
    let nanos = int
        .checked_mul(unit_nanos)
        .and_then(|n| n.checked_add(frac_nanos))
        .filter(|&n| n <= 10 * 366 * 86_400_000_000_000)
        .ok_or_else(|| invalid("too large (at most ten years)"))?;
    Ok(Duration::from_nanos(nanos as u64))
}

// ---------------------------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------------------------

struct Builder<'a> {
    errors: Vec<ConfigError>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

fn model_path(i: usize) -> String {
    format!("llm.model[{i}]")
}

impl Builder<'_> {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: String, value: Option<&str>, default: Duration) -> Duration {
        match value.map(parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.err(path, e);
                default
            }
        }
    }

    fn positive_duration(
        &mut self,
        path: String,
        value: Option<&str>,
        default: Duration,
    ) -> Duration {
        let d = self.duration(path.clone(), value, default);
        if d.is_zero() {
            self.err(path, "must be longer than zero");
            return default;
        }
        d
    }

    /// A secret: a literal or `env:NAME`. `None` after an error (already reported).
    fn secret(&mut self, path: String, value: &str) -> Option<String> {
        let resolved = match value.strip_prefix("env:") {
            Some("") => {
                self.err(
                    path,
                    "`env:` needs a variable name, e.g. `env:OPENAI_API_KEY`",
                );
                return None;
            }
            Some(name) => match (self.env)(name) {
                Some(v) => v,
                None => {
                    self.err(path, format!("environment variable {name} is not set"));
                    return None;
                }
            },
            None => value.to_owned(),
        };
        if resolved.trim().is_empty() {
            let what = if value.starts_with("env:") {
                "the environment variable it names is empty"
            } else {
                "must not be empty"
            };
            self.err(path, what);
            return None;
        }
        Some(resolved)
    }

    fn limit(&mut self, path: String, value: Option<u64>) -> Option<u64> {
        if value == Some(0) {
            self.err(path, "must be at least 1 (leave it out for no limit)");
            return None;
        }
        value
    }

    fn name(&mut self, path: String, name: &str, what: &str) {
        if name.is_empty() {
            self.err(path, format!("{what} must not be empty"));
        } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.err(
                path,
                format!("{what} {name:?} must not contain spaces or control characters"),
            );
        }
    }

    fn build(mut self, config: &LlmConfig) -> Result<Catalogue, ConfigErrors> {
        // Names first, so that references can be checked.
        let mut by_name: HashMap<String, ModelId> = HashMap::new();
        for (i, m) in config.model.iter().enumerate() {
            self.name(format!("{}.name", model_path(i)), &m.name, "a model name");
            if let Some(&ModelId(first)) = by_name.get(&m.name) {
                self.err(
                    format!("{}.name", model_path(i)),
                    format!(
                        "duplicate model name `{}` (already defined by llm.model[{first}])",
                        m.name
                    ),
                );
            } else {
                by_name.insert(m.name.clone(), ModelId(i));
            }
        }

        let mut models = Vec::with_capacity(config.model.len());
        let mut deployments = Vec::new();
        for (i, m) in config.model.iter().enumerate() {
            let path = model_path(i);
            let routing = match m.routing.as_deref() {
                None => Routing::Weighted,
                Some(r) => Routing::parse(r).unwrap_or_else(|| {
                    self.err(
                        format!("{path}.routing"),
                        format!(
                            "unknown routing `{r}` (expected weighted, least-latency or cheapest)"
                        ),
                    );
                    Routing::Weighted
                }),
            };
            let mut fallbacks = Vec::new();
            for (j, f) in m.fallbacks.iter().enumerate() {
                let fpath = format!("{path}.fallbacks[{j}]");
                match by_name.get(f) {
                    None => self.err(fpath, format!("unknown model alias `{f}`")),
                    Some(&id) if id == ModelId(i) => {
                        self.err(fpath, format!("model `{f}` cannot fall back to itself"))
                    }
                    Some(id) if fallbacks.contains(id) => {
                        self.err(fpath, format!("`{f}` is listed twice"))
                    }
                    Some(&id) => fallbacks.push(id),
                }
            }
            let context_fallback = m.context_fallback.as_ref().and_then(|c| {
                let cpath = format!("{path}.context_fallback");
                match by_name.get(c) {
                    None => {
                        self.err(cpath, format!("unknown model alias `{c}`"));
                        None
                    }
                    Some(&id) if id == ModelId(i) => {
                        self.err(
                            cpath,
                            format!("model `{c}` cannot be its own context fallback"),
                        );
                        None
                    }
                    Some(&id) => Some(id),
                }
            });
            if m.deployment.is_empty() {
                self.err(
                    format!("{path}.deployment"),
                    format!(
                        "model `{}` has no deployment (add at least one [[llm.model.deployment]])",
                        m.name
                    ),
                );
            }
            let mut ids = Vec::new();
            for (j, d) in m.deployment.iter().enumerate() {
                let dpath = format!("{path}.deployment[{j}]");
                let id = DeploymentId(deployments.len());
                if let Some(spec) = self.deployment(&dpath, d, id, ModelId(i), j) {
                    if let Some(other) = ids
                        .iter()
                        .map(|&DeploymentId(k)| &deployments[k])
                        .find(|o: &&DeploymentSpec| o.name == spec.name)
                    {
                        let other_index = other.index;
                        self.err(
                            format!("{dpath}.name"),
                            format!(
                                "duplicate deployment name `{}` in model `{}` (same as deployment[{other_index}]; give each a distinct `name`)",
                                spec.name, m.name
                            ),
                        );
                    }
                    ids.push(id);
                    deployments.push(spec);
                }
            }
            models.push(Model {
                id: ModelId(i),
                name: m.name.clone(),
                routing,
                deployments: ids,
                fallbacks,
                context_fallback,
                chain: Vec::new(),
            });
        }

        self.cycles(&models, "fallbacks", |m| m.fallbacks.clone());
        self.cycles(&models, "context_fallback", |m| {
            m.context_fallback.into_iter().collect()
        });
        for i in 0..models.len() {
            let chain = chain_of(&models, ModelId(i));
            models[i].chain = chain;
        }

        let keys = self.keys(&config.key, &by_name);
        let failover = self.failover(&config.failover);
        let health = self.health(&config.health);
        let upstream = self.upstream(&config.upstream);

        if self.errors.is_empty() {
            Ok(Catalogue {
                models,
                deployments,
                keys,
                by_name,
                failover,
                health,
                upstream,
            })
        } else {
            Err(ConfigErrors(self.errors))
        }
    }

    fn deployment(
        &mut self,
        path: &str,
        d: &DeploymentConfig,
        id: DeploymentId,
        model: ModelId,
        index: usize,
    ) -> Option<DeploymentSpec> {
        let before = self.errors.len();
        let Some(kind) = ProviderKind::parse(&d.provider) else {
            self.err(
                format!("{path}.provider"),
                format!(
                    "unknown provider `{}` (expected one of: {})",
                    d.provider,
                    ProviderKind::ALL.map(ProviderKind::as_str).join(", ")
                ),
            );
            return None;
        };
        if d.model.trim().is_empty() {
            self.err(
                format!("{path}.model"),
                "the upstream model name must not be empty",
            );
        }
        let mut deployment = match Deployment::new(kind, d.base_url.as_deref(), d.model.clone()) {
            Ok(dep) => Some(dep),
            Err(e) => {
                let p = if d.base_url.is_some() {
                    format!("{path}.base_url")
                } else {
                    format!("{path}.provider")
                };
                self.err(p, e.message);
                None
            }
        };
        match &d.api_key {
            Some(k) => {
                if let Some(secret) = self.secret(format!("{path}.api_key"), k) {
                    deployment = deployment.map(|dep| dep.with_api_key(ApiKey::new(secret)));
                }
            }
            None if kind != ProviderKind::OpenAiCompatible => self.err(
                format!("{path}.api_key"),
                format!(
                    "provider `{}` needs an api_key (a literal or env:NAME)",
                    kind.as_str()
                ),
            ),
            None => {}
        }
        if let Some(v) = &d.api_version {
            if kind != ProviderKind::Azure {
                self.err(
                    format!("{path}.api_version"),
                    "api_version applies to provider `azure` only",
                );
            } else if v.trim().is_empty() {
                self.err(format!("{path}.api_version"), "must not be empty");
            } else {
                deployment = deployment.map(|dep| dep.with_api_version(v.clone()));
            }
        }
        if let Some(n) = d.max_tokens {
            if n == 0 {
                self.err(format!("{path}.max_tokens"), "must be at least 1");
            } else if let Some(dep) = &mut deployment {
                dep.default_max_tokens = n;
            }
        }
        let weight = d.weight.unwrap_or(1);
        if weight == 0 {
            self.err(
                format!("{path}.weight"),
                "must be at least 1 (remove the deployment to take it out)",
            );
        }
        let prices = d.price.as_ref().and_then(|p| self.prices(path, p));
        if d.context_window == Some(0) {
            self.err(format!("{path}.context_window"), "must be at least 1");
        }
        let limits = Limits {
            rpm: self.limit(format!("{path}.rpm"), d.rpm),
            tpm: self.limit(format!("{path}.tpm"), d.tpm),
        };
        let canary = d
            .canary
            .as_ref()
            .and_then(|c| self.canary(&format!("{path}.canary"), c));
        let name = d
            .name
            .clone()
            .unwrap_or_else(|| format!("{}/{}", kind.as_str(), d.model));
        if d.name.is_some() {
            self.name(format!("{path}.name"), &name, "a deployment name");
        }
        if self.errors.len() > before {
            return None;
        }
        Some(DeploymentSpec {
            id,
            model,
            index,
            name,
            deployment: deployment?,
            weight,
            prices,
            context_window: d.context_window,
            limits,
            canary,
        })
    }

    fn prices(&mut self, path: &str, p: &PriceConfig) -> Option<Prices> {
        let mut ok = true;
        let fields = [
            ("input_per_million", Some(p.input_per_million)),
            ("output_per_million", Some(p.output_per_million)),
            ("cached_input_per_million", p.cached_input_per_million),
            ("cache_write_per_million", p.cache_write_per_million),
        ];
        for (field, value) in fields {
            if let Some(v) = value {
                if !v.is_finite() || v < 0.0 {
                    self.err(
                        format!("{path}.price.{field}"),
                        format!("a price must be a finite number of at least 0, not {v}"),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(Prices {
            input_per_million: p.input_per_million,
            output_per_million: p.output_per_million,
            cached_input_per_million: p.cached_input_per_million,
            cache_write_per_million: p.cache_write_per_million,
        })
    }

    fn canary(&mut self, path: &str, c: &CanaryConfig) -> Option<CanarySpec> {
        let before = self.errors.len();
        if c.prompt.trim().is_empty() {
            self.err(format!("{path}.prompt"), "must not be empty");
        }
        let e = &c.expect;
        let epath = format!("{path}.expect");
        let forms = [
            e.contains.is_some(),
            e.regex.is_some(),
            e.json_field.is_some(),
        ]
        .iter()
        .filter(|&&b| b)
        .count();
        let expect = if forms != 1 {
            self.err(
                epath,
                "give exactly one of { contains = \"...\" }, { regex = \"...\" } or { json_field = \"a.b\", equals = ... }",
            );
            None
        } else if let Some(text) = &e.contains {
            if e.equals.is_some() {
                self.err(
                    format!("{epath}.equals"),
                    "`equals` goes with `json_field` only",
                );
            }
            if text.is_empty() {
                self.err(format!("{epath}.contains"), "must not be empty");
            }
            Some(Expect::Contains(text.clone()))
        } else if let Some(pattern) = &e.regex {
            if e.equals.is_some() {
                self.err(
                    format!("{epath}.equals"),
                    "`equals` goes with `json_field` only",
                );
            }
            match regex::Regex::new(pattern) {
                Ok(re) => Some(Expect::Regex(re)),
                Err(err) => {
                    // The regex crate's message spans several lines with a caret under the
                    // fault; keep it whole.
                    self.err(
                        format!("{epath}.regex"),
                        format!("invalid regular expression: {err}"),
                    );
                    None
                }
            }
        } else {
            let field = e.json_field.clone().unwrap_or_default();
            if field.is_empty() || field.split('.').any(str::is_empty) {
                self.err(
                    format!("{epath}.json_field"),
                    format!("`{field}` is not a dotted path such as `a.b` or `items.0.id`"),
                );
            }
            match &e.equals {
                Some(v) => Some(Expect::JsonField {
                    path: field,
                    equals: v.clone(),
                }),
                None => {
                    self.err(
                        format!("{epath}.equals"),
                        "`json_field` needs `equals`, the expected value",
                    );
                    None
                }
            }
        };
        let interval = self.positive_duration(
            format!("{path}.interval"),
            c.interval.as_deref(),
            Duration::from_secs(30),
        );
        let timeout = self.positive_duration(
            format!("{path}.timeout"),
            c.timeout.as_deref(),
            Duration::from_secs(10),
        );
        let mut at_least_one = |field: &str, v: Option<u32>, default: u32| match v {
            Some(0) => {
                self.err(format!("{path}.{field}"), "must be at least 1");
                default
            }
            v => v.unwrap_or(default),
        };
        let rise = at_least_one("rise", c.rise, 2);
        let fall = at_least_one("fall", c.fall, 2);
        let max_tokens = at_least_one("max_tokens", c.max_tokens, 16);
        if self.errors.len() > before {
            return None;
        }
        Some(CanarySpec {
            prompt: c.prompt.clone(),
            expect: expect?,
            interval,
            timeout,
            rise,
            fall,
            max_tokens,
        })
    }

    fn keys(&mut self, keys: &[KeyConfig], by_name: &HashMap<String, ModelId>) -> Vec<KeySpec> {
        let mut out: Vec<KeySpec> = Vec::new();
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            let path = format!("llm.key[{i}]");
            let before = self.errors.len();
            self.name(format!("{path}.name"), &k.name, "a key name");
            if let Some(first) = names.insert(&k.name, i) {
                self.err(
                    format!("{path}.name"),
                    format!(
                        "duplicate key name `{}` (already defined by llm.key[{first}])",
                        k.name
                    ),
                );
            }
            let secret = self.secret(format!("{path}.key"), &k.key);
            if let Some(s) = &secret {
                if let Some(other) = out.iter().find(|o| o.secret_matches(s)) {
                    // Never print the secret; name the other key instead.
                    self.err(
                        format!("{path}.key"),
                        format!(
                            "the same secret as key `{}`: each key needs its own",
                            other.name
                        ),
                    );
                }
            }
            let models = k.models.as_ref().map(|list| {
                let mut ids = Vec::new();
                for (j, alias) in list.iter().enumerate() {
                    match by_name.get(alias) {
                        Some(id) => ids.push(*id),
                        None => self.err(
                            format!("{path}.models[{j}]"),
                            format!("unknown model alias `{alias}`"),
                        ),
                    }
                }
                ids
            });
            let budget = k.budget.as_ref().and_then(|b| {
                if !b.usd.is_finite() || b.usd < 0.0 {
                    self.err(
                        format!("{path}.budget.usd"),
                        format!("must be a finite number of at least 0, not {}", b.usd),
                    );
                    return None;
                }
                let period = if b.period == "total" {
                    BudgetPeriod::Total
                } else {
                    match parse_duration(&b.period) {
                        Ok(d) if !d.is_zero() => BudgetPeriod::Every(d),
                        Ok(_) => {
                            self.err(format!("{path}.budget.period"), "must be longer than zero");
                            return None;
                        }
                        Err(e) => {
                            self.err(
                                format!("{path}.budget.period"),
                                format!("{e} (or \"total\" for a budget that never resets)"),
                            );
                            return None;
                        }
                    }
                };
                Some(Budget { usd: b.usd, period })
            });
            let limits = Limits {
                rpm: self.limit(format!("{path}.rpm"), k.rpm),
                tpm: self.limit(format!("{path}.tpm"), k.tpm),
            };
            if self.errors.len() == before {
                if let Some(secret) = secret {
                    out.push(KeySpec::new(
                        k.name.clone(),
                        ApiKey::new(secret),
                        models,
                        budget,
                        limits,
                    ));
                }
            }
        }
        out
    }

    fn upstream(&mut self, u: &UpstreamConfig) -> UpstreamPolicy {
        let d = UpstreamPolicy::default();
        let p = "llm.upstream";
        let mut bytes = |field: &str, v: Option<u64>, default: u64| match v {
            Some(0) => {
                self.err(format!("{p}.{field}"), "must be at least 1 byte");
                default
            }
            Some(n) => n,
            None => default,
        };
        let max_request_body = bytes("max_request_body", u.max_request_body, d.max_request_body);
        let max_response_body = bytes(
            "max_response_body",
            u.max_response_body,
            d.max_response_body,
        );
        let system_roots = match u.roots.as_deref() {
            None | Some("webpki") => false,
            Some("system") => true,
            Some(other) => {
                self.err(
                    format!("{p}.roots"),
                    format!("unknown roots `{other}` (expected webpki or system)"),
                );
                false
            }
        };
        if u.ca_file.as_deref() == Some("") {
            self.err(format!("{p}.ca_file"), "must name a PEM file");
        }
        UpstreamPolicy {
            connect_timeout: self.positive_duration(
                format!("{p}.connect_timeout"),
                u.connect_timeout.as_deref(),
                d.connect_timeout,
            ),
            first_byte_timeout: self.positive_duration(
                format!("{p}.first_byte_timeout"),
                u.first_byte_timeout.as_deref(),
                d.first_byte_timeout,
            ),
            idle_timeout: self.positive_duration(
                format!("{p}.idle_timeout"),
                u.idle_timeout.as_deref(),
                d.idle_timeout,
            ),
            max_request_body,
            max_response_body,
            system_roots,
            ca_file: u.ca_file.clone().filter(|f| !f.is_empty()),
            verify: u.verify.unwrap_or(d.verify),
            max_idle_per_host: u.max_idle_per_host.unwrap_or(d.max_idle_per_host),
        }
    }

    fn failover(&mut self, f: &FailoverConfig) -> FailoverPolicy {
        let d = FailoverPolicy::default();
        let p = "llm.failover";
        if f.max_attempts == Some(0) {
            self.err(format!("{p}.max_attempts"), "must be at least 1");
        }
        let policy = FailoverPolicy {
            max_attempts: f.max_attempts.filter(|&n| n > 0).unwrap_or(d.max_attempts),
            deadline: self.positive_duration(
                format!("{p}.deadline"),
                f.deadline.as_deref(),
                d.deadline,
            ),
            max_wait: self.duration(format!("{p}.max_wait"), f.max_wait.as_deref(), d.max_wait),
            backoff: self.duration(format!("{p}.backoff"), f.backoff.as_deref(), d.backoff),
            max_backoff: self.duration(
                format!("{p}.max_backoff"),
                f.max_backoff.as_deref(),
                d.max_backoff,
            ),
            retries_per_deployment: f.retries_per_deployment.unwrap_or(d.retries_per_deployment),
            fail_over_on_deployment_fault: f
                .fail_over_on_deployment_fault
                .unwrap_or(d.fail_over_on_deployment_fault),
            last_resort: f.last_resort.unwrap_or(d.last_resort),
        };
        if policy.max_backoff < policy.backoff {
            self.err(format!("{p}.max_backoff"), "must be at least `backoff`");
        }
        policy
    }

    fn health(&mut self, h: &HealthConfig) -> HealthPolicy {
        let d = HealthPolicy::default();
        let p = "llm.health";
        for (field, v) in [
            ("consecutive_failures", h.consecutive_failures),
            (
                "consecutive_gateway_failures",
                h.consecutive_gateway_failures,
            ),
        ] {
            if v == Some(0) {
                self.err(format!("{p}.{field}"), "must be at least 1");
            }
        }
        if h.max_ejection_percent.is_some_and(|v| v > 100) {
            self.err(format!("{p}.max_ejection_percent"), "must be at most 100");
        }
        let policy = HealthPolicy {
            consecutive_failures: h
                .consecutive_failures
                .filter(|&n| n > 0)
                .unwrap_or(d.consecutive_failures),
            consecutive_gateway_failures: h
                .consecutive_gateway_failures
                .filter(|&n| n > 0)
                .unwrap_or(d.consecutive_gateway_failures),
            base_ejection: self.positive_duration(
                format!("{p}.base_ejection"),
                h.base_ejection.as_deref(),
                d.base_ejection,
            ),
            max_ejection: self.positive_duration(
                format!("{p}.max_ejection"),
                h.max_ejection.as_deref(),
                d.max_ejection,
            ),
            max_ejection_percent: h
                .max_ejection_percent
                .filter(|&v| v <= 100)
                .unwrap_or(d.max_ejection_percent),
            interval: self.positive_duration(
                format!("{p}.interval"),
                h.interval.as_deref(),
                d.interval,
            ),
            rate_limit_cooldown: self.duration(
                format!("{p}.rate_limit_cooldown"),
                h.rate_limit_cooldown.as_deref(),
                d.rate_limit_cooldown,
            ),
            ..d
        };
        if policy.max_ejection < policy.base_ejection {
            self.err(
                format!("{p}.max_ejection"),
                "must be at least `base_ejection`",
            );
        }
        policy
    }

    /// Reports each cycle of the graph `edges` once, at the `field` of the model where the
    /// search found it closing.
    fn cycles(&mut self, models: &[Model], field: &str, edges: impl Fn(&Model) -> Vec<ModelId>) {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        let mut marks = vec![Mark::New; models.len()];
        for start in 0..models.len() {
            if marks[start] != Mark::New {
                continue;
            }
            // Iterative DFS: (node, next edge position), and the path of nodes on the stack.
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            marks[start] = Mark::OnPath;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                let out = edges(&models[node]);
                if let Some(&ModelId(to)) = out.get(*next) {
                    *next += 1;
                    match marks[to] {
                        Mark::New => {
                            marks[to] = Mark::OnPath;
                            stack.push((to, 0));
                        }
                        Mark::OnPath => {
                            let from = stack.iter().position(|&(n, _)| n == to).unwrap_or(0);
                            let mut names: Vec<&str> = stack[from..]
                                .iter()
                                .map(|&(n, _)| models[n].name.as_str())
                                .collect();
                            names.push(&models[to].name);
                            self.err(
                                format!("{}.{field}", model_path(node)),
                                format!("{field} cycle: {}", names.join(" -> ")),
                            );
                        }
                        Mark::Done => {}
                    }
                } else {
                    marks[node] = Mark::Done;
                    stack.pop();
                }
            }
        }
    }
}

/// `id`, then its fallbacks transitively, breadth first, each once.
fn chain_of(models: &[Model], id: ModelId) -> Vec<ModelId> {
    let mut chain = vec![id];
    let mut i = 0;
    while i < chain.len() {
        for &f in &models[chain[i].0].fallbacks {
            if !chain.contains(&f) {
                chain.push(f);
            }
        }
        i += 1;
    }
    chain
}
