//! Headwater's configuration: the TOML file format, its validation, and the resolved [`Config`]
//! that shards share read-only (wrap it in an `Arc`).
//!
//! This module owns:
//!
//! - the file format (`[server]`, `[[cluster]]`, `[[route]]`; see `examples/*.toml`);
//! - validation with precise locations: every error, whether a TOML syntax error, a type error,
//!   an unknown key or a semantic problem (an unknown cluster name, a duplicate listener, a bad
//!   duration), is reported as [`ConfigError`] `FILE:LINE:COLUMN: reason`;
//! - resolution into plain types ([`Config`]): durations as [`Duration`], addresses as
//!   [`SocketAddr`] (endpoint host names are resolved once, at load), header names and values
//!   as `http` types, route → cluster references as indices, defaults filled in;
//! - route matching on the hot path ([`Config::match_route`]), allocation-free.
//!
//! How it is built: `raw` mirrors the file with serde structs (`deny_unknown_fields`
//! everywhere, so unknown keys are errors). Leaf values (durations, addresses, names, header
//! names, paths, bounded integers) validate themselves while being deserialized, so `toml`
//! attaches the exact span of the offending value to the error. Checks that involve more than
//! one value (duplicates, references between sections, `path` with `path_prefix`) run in
//! `resolve` over `toml::Spanned` values.
//!
//! Adding a key (e.g. a cluster's `balancer`): add an `Option` field to the raw struct in
//! `raw.rs`, a field to the public type here, and fill it in `resolve.rs`. Keys that are not
//! declared are rejected, so nothing is silently ignored.

mod duration;
mod matcher;
mod raw;
mod resolve;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::{parse_duration, MAX_DURATION};
pub use matcher::host_without_port;

/// Reads, parses and validates the config file at `path`.
///
/// Messages name the file as `path` was given. An I/O error has line 0.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: origin.clone(),
        line: 0,
        column: 0,
        reason: format!("cannot read config file: {e}"),
    })?;
    parse(&text, &origin)
}

/// Parses and validates config `text`; `origin` is the file name used in error messages.
///
/// Endpoint host names are resolved here (std `ToSocketAddrs`, first result).
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig =
        toml::from_str(text).map_err(|e| ConfigError::from_toml(&e, text, origin))?;
    resolve::resolve(raw, text, origin)
}

/// Why a config was rejected, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name (the `origin` given to [`parse`], or the path given to [`load`]).
    pub file: String,
    /// 1-based line; 0 when there is no position (e.g. the file could not be read).
    pub line: usize,
    /// 1-based column in characters; 0 when `line` is 0.
    pub column: usize,
    /// What is wrong, naming the key or value at fault.
    pub reason: String,
}

impl ConfigError {
    /// An error at byte `offset` of `text`.
    pub(crate) fn at(text: &str, origin: &str, offset: usize, reason: impl Into<String>) -> Self {
        let (line, column) = line_column(text, offset);
        ConfigError {
            file: origin.to_owned(),
            line,
            column,
            reason: reason.into(),
        }
    }

    fn from_toml(err: &toml::de::Error, text: &str, origin: &str) -> Self {
        let span = err.span();
        let mut reason = err.message().to_owned();
        if let Some(rest) = reason.strip_prefix("unknown field ") {
            reason = format!("unknown key {rest}");
        } else if let Some(rest) = reason.strip_prefix("missing field ") {
            reason = format!("missing key {rest}");
        } else if reason == "duplicate key" {
            if let Some(key) = span.clone().and_then(|s| text.get(s)) {
                reason = format!("duplicate key `{}`", key.trim());
            }
        }
        // The key path is only in the Display of an error without input: "message\nin `a.b`\n".
        let mut bare = err.clone();
        bare.set_input(None);
        let shown = bare.to_string();
        let path = shown
            .strip_prefix(err.message())
            .map(str::trim)
            .and_then(|rest| rest.strip_prefix("in `"))
            .and_then(|rest| rest.strip_suffix('`'));
        if let Some(path) = path {
            reason = format!("{reason} (in `{path}`)");
        }
        match span {
            Some(span) => ConfigError::at(text, origin, span.start, reason),
            None => ConfigError {
                file: origin.to_owned(),
                line: 0,
                column: 0,
                reason,
            },
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.reason
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// The validated, resolved configuration. Immutable once built; share it as `Arc<Config>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    /// Index = cluster id (what [`RouteConfig::cluster`] refers to).
    pub clusters: Vec<ClusterConfig>,
    /// In file order; the first route that matches a request wins.
    pub routes: Vec<RouteConfig>,
    /// `[llm]`: the LLM gateway's catalogue, for routes with `llm = true`.
    pub llm: Option<crate::llm::LlmSection>,
}

impl Config {
    /// The id of the cluster called `name`.
    pub fn cluster_index(&self, name: &str) -> Option<usize> {
        self.clusters.iter().position(|c| c.name == name)
    }
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `listen = ["ip:port", ...]` (or one string): required, non-empty. IP literals only
    /// (`"0.0.0.0:8080"`, `"[::]:8080"`); port 0 binds an ephemeral port. No two listeners
    /// overlap (same port and family, and the same IP or a wildcard); an IPv4 and an IPv6
    /// wildcard on one port may coexist, so IPv6 listeners are to be bound v6-only.
    pub listen: Vec<SocketAddr>,
    /// `workers = "auto"` (one shard per available core) or 1..=1024. Default "auto".
    pub workers: usize,
    /// `admin = "ip:port"`: the admin API listener; none when absent. Must not overlap a
    /// `listen` address.
    pub admin: Option<SocketAddr>,
    /// `access_log = "off" | "stdout" | "path"`; default off.
    pub access_log: AccessLogTarget,
    /// `backlog` of each listening socket, 1..=65535; default 4096.
    pub backlog: u32,
    /// `io_driver = "auto" | "io_uring" | "epoll"`; default auto.
    pub io_driver: IoDriver,
    /// `drain_timeout`: how long a graceful shutdown waits for in-flight requests; default 30s.
    pub drain_timeout: Duration,
    /// `max_connections_per_shard`, 1..=10_000_000; default 65536.
    pub max_connections_per_shard: usize,
    /// `[server.timeouts]`: downstream (client side) timeouts.
    pub timeouts: ServerTimeouts,
    /// `[server.limits]`: request head limits.
    pub limits: Limits,
    /// `[server.forwarded]`: which forwarding headers the proxy adds.
    pub forwarded: Forwarded,
    /// `[server.upstream_timeouts]`: upstream timeouts for routes that don't override them.
    pub defaults: RouteTimeouts,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessLogTarget {
    #[default]
    Off,
    Stdout,
    File(PathBuf),
}

/// Which monoio driver the shards use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoDriver {
    /// io_uring when the kernel supports it, epoll otherwise.
    #[default]
    Auto,
    IoUring,
    Epoll,
}

/// `[server.timeouts]`; all must be greater than zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTimeouts {
    /// Time to receive a complete request head, from its first byte. Default 10s.
    pub client_header: Duration,
    /// Time a keep-alive connection may wait for the next request. Default 60s.
    pub client_idle: Duration,
    /// Largest gap between two reads of a request body. Default 60s.
    pub client_body: Duration,
}

impl Default for ServerTimeouts {
    fn default() -> Self {
        ServerTimeouts {
            client_header: Duration::from_secs(10),
            client_idle: Duration::from_secs(60),
            client_body: Duration::from_secs(60),
        }
    }
}

/// `[server.limits]`: the codec's own limits (head bytes 1 KiB..=1 MiB, default 65536; header
/// fields 8..=1024, default 128; request-target 256..=max_head_bytes, default 8192, lowered to
/// `max_head_bytes` when that is smaller and `max_uri_bytes` is not set).
pub use headwater_http1::Limits;

/// `[server.forwarded]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    /// Add a `Via` header. Default true.
    pub via: bool,
    /// `x_forwarded_for = "append" | "replace" | "off"`. Default append.
    pub x_forwarded_for: XffMode,
    /// Set `X-Forwarded-Proto`. Default true.
    pub x_forwarded_proto: bool,
    /// Set `X-Forwarded-Host` to the client's Host. Default true.
    pub x_forwarded_host: bool,
}

impl Default for Forwarded {
    fn default() -> Self {
        Forwarded {
            via: true,
            x_forwarded_for: XffMode::Append,
            x_forwarded_proto: true,
            x_forwarded_host: true,
        }
    }
}

/// What the proxy does with `X-Forwarded-For`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XffMode {
    /// Append the client address to any incoming value.
    #[default]
    Append,
    /// Drop any incoming value; send only the client address.
    Replace,
    /// Leave the header as the client sent it.
    Off,
}

/// Upstream timeouts of a route (`timeouts = {...}` on a route, or `[server.upstream_timeouts]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTimeouts {
    /// TCP connect to an endpoint. Default 1s.
    pub connect: Duration,
    /// From the request being sent to the complete response head. Default 15s.
    pub response_header: Duration,
    /// Largest gap between two reads of the upstream response body. Default 60s.
    pub upstream_idle: Duration,
    /// Whole exchange, including retries; `None` = unlimited (the default).
    pub total: Option<Duration>,
}

impl Default for RouteTimeouts {
    fn default() -> Self {
        RouteTimeouts {
            connect: Duration::from_secs(1),
            response_header: Duration::from_secs(15),
            upstream_idle: Duration::from_secs(60),
            total: None,
        }
    }
}

/// `[[cluster]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Unique, non-empty, `[A-Za-z0-9_.-]`, at most 128 characters.
    pub name: String,
    /// Non-empty; no two endpoints with the same resolved address.
    pub endpoints: Vec<EndpointConfig>,
    pub pool: PoolConfig,
    /// `balancer = "round-robin" | "weighted" | "least-request" | "peak-ewma" | "maglev" |
    /// "random"`; default round-robin.
    pub balancer: headwater_balancer::Algorithm,
    /// `hash_key`: what Maglev hashes; default the client address.
    pub hash_key: HashKey,
    /// `panic_threshold` (percent, 0..=100, default 50): when the healthy share of a priority
    /// level falls below it, that level balances over every endpoint that is not hard-down.
    /// 0 disables panic mode.
    pub panic_threshold: u8,
    /// `slow_start = "30s"`: an endpoint that becomes healthy ramps its weight up over this
    /// window. Off by default.
    pub slow_start: Option<Duration>,
    /// `health = {...}`: active checks. None: endpoints are healthy unless ejected.
    pub health_check: Option<HealthCheck>,
    /// `outlier = {...}`: passive outlier detection. On by default; `enabled = false` turns
    /// it off (None).
    pub outlier: Option<OutlierConfig>,
    /// `breaker = {...}`: limits and trip state of the whole cluster. None: no limits.
    pub breaker: Option<BreakerConfig>,
    /// `endpoint_breaker = {...}`: the same, per endpoint.
    pub endpoint_breaker: Option<BreakerConfig>,
    /// `retry_budget = { percent = 20, min_concurrent = 3, burst = 0 }`.
    pub retry_budget: RetryBudgetConfig,
}

/// One endpoint of a cluster: `{ address = "ip:port" }` or `{ address = "name:port" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// Resolved at load (first address returned by the resolver).
    pub address: SocketAddr,
    /// The host name as written, when the address was a name (`None` for IP literals).
    pub host: Option<String>,
    /// `weight`, 1..=10000, default 1.
    pub weight: u32,
    /// `priority`, 0..=15, default 0 (primary); higher levels are backups.
    pub priority: u8,
}

/// `hash_key` of a Maglev cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HashKey {
    /// `"client"`: the client's IP address.
    #[default]
    ClientAddress,
    /// `"path"`: the request path (without query).
    Path,
    /// `"header:NAME"`: a request header's value (absent: a random endpoint).
    Header(http::HeaderName),
    /// `"cookie:NAME"`: a cookie's value (absent: a random endpoint).
    Cookie(String),
}

/// `health = {...}` of a cluster: active probes run by the health thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `type = "http"` (default) or `"tcp"`.
    pub http: bool,
    /// `method`, default GET.
    pub method: http::Method,
    /// `path`, default "/".
    pub path: String,
    /// `host`: Host header of the probe; default the endpoint's host name or address.
    pub host: Option<String>,
    /// `expect_status = 200` or `[200, 399]` (inclusive range); default 200..=399.
    pub expect_status: (u16, u16),
    /// `body_contains`: a substring the body must contain (first 64 KiB).
    pub body_contains: Option<String>,
    /// `interval`, default 5s.
    pub interval: Duration,
    /// `unhealthy_interval`: probe interval while unhealthy or unknown; default `interval`.
    pub unhealthy_interval: Duration,
    /// `jitter`: up to this much is added to each interval; default 0.
    pub jitter: Duration,
    /// `timeout` of one probe, default 1s; must be below `interval`.
    pub timeout: Duration,
    /// `rise`: consecutive passes that make an unhealthy endpoint healthy; default 2.
    pub rise: u32,
    /// `fall`: consecutive failures that make a healthy endpoint unhealthy; default 3.
    pub fall: u32,
}

/// `outlier = {...}` of a cluster. A threshold of 0 (or a factor of 0) turns that detector off.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    /// Default 5.
    pub consecutive_5xx: u32,
    /// Connect failures, resets, timeouts, invalid responses in a row. Default 5.
    pub consecutive_gateway_failures: u32,
    /// Eject below mean − factor × stddev of the cluster's success rates. Default 1.9.
    pub success_rate_stdev_factor: f64,
    /// Default 5.
    pub success_rate_min_hosts: u32,
    /// Default 100.
    pub success_rate_request_volume: u64,
    /// Eject when mean latency > factor × the cluster's median. Default 0 (off).
    pub latency_factor: f64,
    /// Never eject for latency below this. Default 50ms.
    pub latency_min: Duration,
    /// Default 3.
    pub latency_min_hosts: u32,
    /// Default 20.
    pub latency_request_volume: u64,
    /// How often success rate and latency are evaluated. Default 10s.
    pub interval: Duration,
    /// Ejection time = base × ejection count, capped at `max_ejection`. Default 30s.
    pub base_ejection: Duration,
    /// Default 300s.
    pub max_ejection: Duration,
    /// Up to this much is added to each ejection. Default 0.
    pub jitter: Duration,
    /// At most this share of the cluster is ejected at once (at least one endpoint). Default 50.
    pub max_ejection_percent: u8,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_5xx: 5,
            consecutive_gateway_failures: 5,
            success_rate_stdev_factor: 1.9,
            success_rate_min_hosts: 5,
            success_rate_request_volume: 100,
            latency_factor: 0.0,
            latency_min: Duration::from_millis(50),
            latency_min_hosts: 3,
            latency_request_volume: 20,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            jitter: Duration::ZERO,
            max_ejection_percent: 50,
        }
    }
}

/// `breaker = {...}` / `endpoint_breaker = {...}`. Limits are for the whole gateway; each of
/// the N shards enforces ⌈limit / N⌉ of it without talking to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Open upstream connections. None: unlimited.
    pub max_connections: Option<u32>,
    /// Requests waiting for a connection. None: unlimited.
    pub max_pending: Option<u32>,
    /// Requests in flight. None: unlimited.
    pub max_requests: Option<u32>,
    /// Retries in flight. None: unlimited (the retry budget still applies).
    pub max_retries: Option<u32>,
    /// Consecutive failed requests that open the breaker. None: it never opens.
    pub failure_threshold: Option<u32>,
    /// How long it stays open before letting one trial request through. Default 5s.
    pub open_for: Duration,
}

/// `retry_budget = {...}` of a cluster: retries in flight may be at most `percent` of the
/// requests in flight, but `min_concurrent` are always allowed; past that, a retry may take one
/// from a reserve that each request tops up by `percent` % of a retry, holding at most `burst`.
/// All per shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudgetConfig {
    /// Default 20.
    pub percent: u32,
    /// Default 3.
    pub min_concurrent: u32,
    /// Default 0: no reserve (the concurrency cap alone).
    pub burst: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            percent: 20,
            min_concurrent: 3,
            burst: 0,
        }
    }
}

/// `retry = {...}` of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Tries in all, 1..=10 (1 = no retries). Default 3.
    pub attempts: u32,
    /// `on = [...]`: "connect-failure", "reset", "timeout", "502", "503", "504", "5xx",
    /// "gateway-error". Default connect-failure, reset, 502, 503, 504. Connect failures (and
    /// pooled connections found dead) are retried whatever this says.
    pub on: headwater_health::retry::RetryOn,
    /// Backoff before retry n ≥ 2: equal jitter over min(max, base × 2^(n-2)); the first retry
    /// goes at once (to another endpoint). Default 25ms.
    pub backoff_base: Duration,
    /// Default 250ms.
    pub backoff_max: Duration,
    /// Response-head timeout of each try; default the route's `response_header`.
    pub per_try_timeout: Option<Duration>,
    /// Also retry non-idempotent methods (when the body was small enough to keep). Default
    /// false.
    pub non_idempotent: bool,
    /// Hedging: when the first try of an idempotent request (GET, HEAD, OPTIONS, TRACE, PUT,
    /// DELETE) whose body was small enough to keep has no response head after this long, a
    /// second try goes to another endpoint and the first response head wins; the other try is
    /// cancelled. The hedge takes the request's retry-budget slot. Default none (off).
    pub hedge_after: Option<Duration>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 3,
            on: headwater_health::retry::RetryOn::default(),
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            per_try_timeout: None,
            non_idempotent: false,
            hedge_after: None,
        }
    }
}

/// `pool = {...}` of a cluster: the per-shard upstream connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Idle connections kept per endpoint (per shard), 0..=65536; 0 disables reuse. Default 64.
    pub max_idle_per_endpoint: usize,
    /// An idle connection is closed after this long. Default 60s.
    pub idle_timeout: Duration,
    /// A connection is not reused once this old; `None` (default) = no limit.
    pub max_lifetime: Option<Duration>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_idle_per_endpoint: 64,
            idle_timeout: Duration::from_secs(60),
            max_lifetime: None,
        }
    }
}

/// `[[route]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// `name`, or `route-{index}` (0-based position in the file) when not given. Unique.
    pub name: String,
    /// `match = {...}`; an absent `match` matches every request.
    pub matcher: RouteMatch,
    /// `cluster = "name"` or `llm = true`.
    pub target: RouteTarget,
    /// `timeouts = {...}` merged over `[server.upstream_timeouts]`.
    pub timeouts: RouteTimeouts,
    /// Edits to the request sent upstream.
    pub request_headers: HeaderEdits,
    /// Edits to the response sent to the client.
    pub response_headers: HeaderEdits,
    /// `rewrite = { path_prefix = "/v2/" }`: replaces the matched `path_prefix` of the path.
    pub rewrite_prefix: Option<String>,
    /// `retry = {...}`.
    pub retry: RetryConfig,
    /// `fallback = "cluster"`: tried when no endpoint of `cluster` can serve.
    pub fallback: Option<usize>,
    /// `queue = { timeout = "2s" }`: when no endpoint can serve, wait up to this long for one
    /// to recover instead of answering 503 at once.
    pub queue: Option<Duration>,
}

/// What a route sends its requests to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTarget {
    /// `cluster = "name"`: proxied to this index of [`Config::clusters`].
    Cluster(usize),
    /// `llm = true`: answered by the LLM gateway with the `[llm]` catalogue.
    Llm,
}

impl RouteConfig {
    /// The cluster a proxy route sends to; `None` for an LLM route.
    pub fn cluster(&self) -> Option<usize> {
        match self.target {
            RouteTarget::Cluster(c) => Some(c),
            RouteTarget::Llm => None,
        }
    }
}

/// Header edits: `{ add = { "name" = "value", ... }, remove = ["name", ...] }`.
///
/// Apply `remove` first, then append `add`; listing a header in both replaces it. Connection
/// management headers (`connection`, `content-length`, `transfer-encoding`, ...) are rejected.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderEdits {
    /// In name order (TOML tables are unordered).
    pub add: Vec<(http::HeaderName, http::HeaderValue)>,
    pub remove: Vec<http::HeaderName>,
}

impl HeaderEdits {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// `match = {...}` of a route; all given conditions must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteMatch {
    /// `host = "api.example.com"` or `host = "*.example.com"`.
    pub host: Option<HostMatch>,
    /// `path = "/exact"` or `path_prefix = "/prefix"` (not both).
    pub path: Option<PathMatch>,
    /// `method = "GET"` or `method = ["GET", "POST"]`; empty = any method.
    pub methods: Vec<http::Method>,
    /// `headers = [{ name = "x-canary", value = "1" }, { name = "x-debug" }]`.
    pub headers: Vec<HeaderMatch>,
}

/// Host condition, compared case-insensitively against the Host header without its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Lowercase, no port, no trailing dot (`"api.example.com"`, `"[::1]"`).
    Exact(String),
    /// From `"*.example.com"`, stored as `".example.com"`: matches `a.example.com` and
    /// `a.b.example.com`, not `example.com`.
    Suffix(String),
}

/// Path condition on the request path (without query), compared byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    /// Plain byte prefix, like nginx `location /x` (`/api` also matches `/apix`).
    Prefix(String),
}

/// Header condition: present (`value = None`) or with exactly this value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: http::HeaderName,
    pub value: Option<http::HeaderValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_characters() {
        let text = "ab\ncdé\nx";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, 8), (3, 1));
        // 'x' after "cdé\n": 'é' is two bytes but one column.
        assert_eq!(line_column("cdéx", 4), (1, 4));
        assert_eq!(line_column(text, 999), (3, 2));
    }

    #[test]
    fn display() {
        let e = ConfigError {
            file: "a.toml".into(),
            line: 3,
            column: 7,
            reason: "bad".into(),
        };
        assert_eq!(e.to_string(), "a.toml:3:7: bad");
        let e = ConfigError {
            file: "a.toml".into(),
            line: 0,
            column: 0,
            reason: "cannot read".into(),
        };
        assert_eq!(e.to_string(), "a.toml: cannot read");
    }
}
