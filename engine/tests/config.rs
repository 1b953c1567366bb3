//! Config loading, validation (file, line and reason of every error class) and route matching.
//! Every config is written to a real file in a temporary directory and read with `load`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use headwater_engine::config::{
    self, AccessLogTarget, Config, ConfigError, HeaderMatch, HostMatch, IoDriver, PathMatch,
    XffMode,
};
use http::{HeaderName, HeaderValue, Method};

/// A unique temporary file holding `text`.
fn write_temp(text: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "headwater-config-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let path = dir.join("headwater.toml");
    std::fs::write(&path, text).expect("write temp config");
    path
}

fn load_text(text: &str) -> (PathBuf, Result<Config, ConfigError>) {
    let path = write_temp(text);
    let result = config::load(&path);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(path.parent().unwrap());
    (path, result)
}

fn ok(text: &str) -> Config {
    match load_text(text).1 {
        Ok(config) => config,
        Err(e) => panic!("config rejected: {e}\n---\n{text}"),
    }
}

/// 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in config"))
        + 1
}

/// 1-based line of the last line containing `needle`.
fn last_line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .last()
        .unwrap_or_else(|| panic!("{needle:?} not in config"))
        .0
        + 1
}

/// 1-based column of `needle` on its line.
fn column_of(text: &str, needle: &str) -> usize {
    let line = text.lines().find(|l| l.contains(needle)).unwrap();
    line[..line.find(needle).unwrap()].chars().count() + 1
}

/// Asserts that `text` is rejected at the line containing `at`, with a reason containing every
/// one of `reason`, and that the error names the file.
#[track_caller]
fn rejects(text: &str, at: &str, reason: &[&str]) -> ConfigError {
    rejects_at(text, line_of(text, at), reason)
}

/// As [`rejects`], at line `line`.
#[track_caller]
fn rejects_at(text: &str, line: usize, reason: &[&str]) -> ConfigError {
    let (path, result) = load_text(text);
    let err = match result {
        Ok(_) => panic!("config accepted, expected an error on line {line}\n---\n{text}"),
        Err(e) => e,
    };
    assert_eq!(err.file, path.display().to_string(), "{err}");
    assert_eq!(err.line, line, "wrong line: {err}");
    assert!(err.column >= 1, "{err}");
    for part in reason {
        assert!(err.reason.contains(part), "reason lacks {part:?}: {err}");
    }
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("{}:{}:{}: ", err.file, err.line, err.column)),
        "{shown}"
    );
    err
}

const MINIMAL: &str = r#"
[server]
listen = ["127.0.0.1:8080"]

[[cluster]]
name = "app"
endpoints = [{ address = "127.0.0.1:9001" }]

[[route]]
cluster = "app"
"#;

/// The `listen` line of [`MINIMAL`].
const LISTEN: &str = "listen = [\"127.0.0.1:8080\"]";

/// [`MINIMAL`] with `lines` added to `[server]` (after `listen`).
fn in_server(lines: &str) -> String {
    MINIMAL.replace(LISTEN, &format!("{LISTEN}\n{lines}"))
}

/// [`MINIMAL`] with `lines` added to the cluster (after its name).
fn in_cluster(lines: &str) -> String {
    MINIMAL.replace("name = \"app\"", &format!("name = \"app\"\n{lines}"))
}

const FULL: &str = r#"
[server]
listen = ["127.0.0.1:8080", "[::1]:8443"]
workers = 3
admin = "127.0.0.1:9901"
access_log = "/var/log/headwater/access.log"
backlog = 1024
io_driver = "epoll"
drain_timeout = "5s"
max_connections_per_shard = 1000

[server.timeouts]
client_header = "2s"
client_idle = "90s"
client_body = "1.5s"

[server.limits]
max_head_bytes = 16384
max_headers = 64
max_uri_bytes = 4096

[server.forwarded]
via = false
x_forwarded_for = "replace"
x_forwarded_proto = false
x_forwarded_host = true

[server.upstream_timeouts]
connect = "2s"
response_header = "20s"
total = "5m"

[[cluster]]
name = "app"
endpoints = [ { address = "127.0.0.1:9001" }, { address = "localhost:9002" } ]
pool = { max_idle_per_endpoint = 32, idle_timeout = "30s", max_lifetime = "10m" }

[[cluster]]
name = "other.cluster-2_b"
endpoints = [ { address = "[::1]:9003" } ]

[[route]]
name = "api"
match = { host = "*.Example.com", path_prefix = "/api/", method = ["GET", "POST"], headers = [{ name = "X-Canary", value = "1" }, { name = "x-debug" }] }
cluster = "app"
timeouts = { connect = "500ms", response_header = "5s", upstream_idle = "30s", total = "60s" }
request_headers = { add = { "x-from" = "headwater", "X-Env" = "prod" }, remove = ["x-internal"] }
response_headers = { add = { "x-served-by" = "headwater" } }
rewrite = { path_prefix = "/v2/" }

[[route]]
match = { host = "API.example.com", path = "/exact", method = "DELETE" }
cluster = "other.cluster-2_b"
timeouts = { connect = "250ms" }
"#;

#[test]
fn full_config_parses_to_expected_values() {
    let config = ok(FULL);
    let s = &config.server;
    assert_eq!(
        s.listen,
        vec![
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap(),
            "[::1]:8443".parse().unwrap()
        ]
    );
    assert_eq!(s.workers, 3);
    assert_eq!(s.admin, Some("127.0.0.1:9901".parse().unwrap()));
    assert_eq!(
        s.access_log,
        AccessLogTarget::File("/var/log/headwater/access.log".into())
    );
    assert_eq!(s.backlog, 1024);
    assert_eq!(s.io_driver, IoDriver::Epoll);
    assert_eq!(s.drain_timeout, Duration::from_secs(5));
    assert_eq!(s.max_connections_per_shard, 1000);
    assert_eq!(s.timeouts.client_header, Duration::from_secs(2));
    assert_eq!(s.timeouts.client_idle, Duration::from_secs(90));
    assert_eq!(s.timeouts.client_body, Duration::from_millis(1500));
    assert_eq!(s.limits.max_head_bytes, 16384);
    assert_eq!(s.limits.max_headers, 64);
    assert_eq!(s.limits.max_uri_bytes, 4096);
    assert!(!s.forwarded.via);
    assert_eq!(s.forwarded.x_forwarded_for, XffMode::Replace);
    assert!(!s.forwarded.x_forwarded_proto);
    assert!(s.forwarded.x_forwarded_host);
    assert_eq!(s.defaults.connect, Duration::from_secs(2));
    assert_eq!(s.defaults.response_header, Duration::from_secs(20));
    assert_eq!(s.defaults.upstream_idle, Duration::from_secs(60)); // built-in default
    assert_eq!(s.defaults.total, Some(Duration::from_secs(300)));

    assert_eq!(config.clusters.len(), 2);
    let app = &config.clusters[0];
    assert_eq!(app.name, "app");
    assert_eq!(app.endpoints.len(), 2);
    assert_eq!(app.endpoints[0].address, "127.0.0.1:9001".parse().unwrap());
    assert_eq!(app.endpoints[0].host, None);
    assert_eq!(app.endpoints[1].address.port(), 9002);
    assert!(app.endpoints[1].address.ip().is_loopback());
    assert_eq!(app.endpoints[1].host.as_deref(), Some("localhost"));
    assert_eq!(app.pool.max_idle_per_endpoint, 32);
    assert_eq!(app.pool.idle_timeout, Duration::from_secs(30));
    assert_eq!(app.pool.max_lifetime, Some(Duration::from_secs(600)));
    let other = &config.clusters[1];
    assert_eq!(other.name, "other.cluster-2_b");
    assert_eq!(other.endpoints[0].address, "[::1]:9003".parse().unwrap());
    assert_eq!(config.cluster_index("other.cluster-2_b"), Some(1));
    assert_eq!(config.cluster_index("nope"), None);

    assert_eq!(config.routes.len(), 2);
    let api = &config.routes[0];
    assert_eq!(api.name, "api");
    assert_eq!(api.cluster(), Some(0));
    assert_eq!(
        api.matcher.host,
        Some(HostMatch::Suffix(".example.com".into()))
    );
    assert_eq!(api.matcher.path, Some(PathMatch::Prefix("/api/".into())));
    assert_eq!(api.matcher.methods, vec![Method::GET, Method::POST]);
    assert_eq!(
        api.matcher.headers,
        vec![
            HeaderMatch {
                name: HeaderName::from_static("x-canary"),
                value: Some(HeaderValue::from_static("1")),
            },
            HeaderMatch {
                name: HeaderName::from_static("x-debug"),
                value: None,
            },
        ]
    );
    assert_eq!(api.timeouts.connect, Duration::from_millis(500));
    assert_eq!(api.timeouts.response_header, Duration::from_secs(5));
    assert_eq!(api.timeouts.upstream_idle, Duration::from_secs(30));
    assert_eq!(api.timeouts.total, Some(Duration::from_secs(60)));
    let mut add = api.request_headers.add.clone();
    add.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    assert_eq!(
        add,
        vec![
            (
                HeaderName::from_static("x-env"),
                HeaderValue::from_static("prod")
            ),
            (
                HeaderName::from_static("x-from"),
                HeaderValue::from_static("headwater")
            ),
        ]
    );
    assert_eq!(
        api.request_headers.remove,
        vec![HeaderName::from_static("x-internal")]
    );
    assert_eq!(
        api.response_headers.add,
        vec![(
            HeaderName::from_static("x-served-by"),
            HeaderValue::from_static("headwater")
        )]
    );
    assert!(api.response_headers.remove.is_empty());
    assert_eq!(api.rewrite_prefix.as_deref(), Some("/v2/"));

    let second = &config.routes[1];
    assert_eq!(second.name, "route-1");
    assert_eq!(second.cluster(), Some(1));
    assert_eq!(
        second.matcher.host,
        Some(HostMatch::Exact("api.example.com".into()))
    );
    assert_eq!(second.matcher.path, Some(PathMatch::Exact("/exact".into())));
    assert_eq!(second.matcher.methods, vec![Method::DELETE]);
    // Route overrides merge over [server.upstream_timeouts].
    assert_eq!(second.timeouts.connect, Duration::from_millis(250));
    assert_eq!(second.timeouts.response_header, Duration::from_secs(20));
    assert_eq!(second.timeouts.upstream_idle, Duration::from_secs(60));
    assert_eq!(second.timeouts.total, Some(Duration::from_secs(300)));
    assert!(second.request_headers.is_empty());
    assert_eq!(second.rewrite_prefix, None);
}

#[test]
fn defaults_applied() {
    let config = ok(MINIMAL);
    let s = &config.server;
    assert_eq!(s.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(s.workers, cores);
    assert_eq!(s.admin, None);
    assert_eq!(s.access_log, AccessLogTarget::Off);
    assert_eq!(s.backlog, 4096);
    assert_eq!(s.io_driver, IoDriver::Auto);
    assert_eq!(s.drain_timeout, Duration::from_secs(30));
    assert_eq!(s.max_connections_per_shard, 65536);
    assert_eq!(s.timeouts.client_header, Duration::from_secs(10));
    assert_eq!(s.timeouts.client_idle, Duration::from_secs(60));
    assert_eq!(s.timeouts.client_body, Duration::from_secs(60));
    assert_eq!(s.limits.max_head_bytes, 65536);
    assert_eq!(s.limits.max_headers, 128);
    assert_eq!(s.limits.max_uri_bytes, 8192);
    assert!(s.forwarded.via);
    assert_eq!(s.forwarded.x_forwarded_for, XffMode::Append);
    assert!(s.forwarded.x_forwarded_proto);
    assert!(s.forwarded.x_forwarded_host);
    assert_eq!(s.defaults.connect, Duration::from_secs(1));
    assert_eq!(s.defaults.response_header, Duration::from_secs(15));
    assert_eq!(s.defaults.upstream_idle, Duration::from_secs(60));
    assert_eq!(s.defaults.total, None);

    let pool = &config.clusters[0].pool;
    assert_eq!(pool.max_idle_per_endpoint, 64);
    assert_eq!(pool.idle_timeout, Duration::from_secs(60));
    assert_eq!(pool.max_lifetime, None);

    let route = &config.routes[0];
    assert_eq!(route.name, "route-0");
    assert_eq!(route.cluster(), Some(0));
    assert_eq!(route.matcher, Default::default());
    assert_eq!(route.timeouts, s.defaults);
    assert!(route.request_headers.is_empty() && route.response_headers.is_empty());
    assert_eq!(route.rewrite_prefix, None);
}

#[test]
fn small_variants_accepted() {
    // One listen string instead of an array; "auto" spelled out; stdout log; port 0 listener;
    // max_uri_bytes lowered to a small max_head_bytes when not set; zero drain timeout.
    let config = ok(r#"
[server]
listen = "0.0.0.0:0"
workers = "auto"
access_log = "stdout"
drain_timeout = "0s"
limits = { max_head_bytes = 4096 }

[[cluster]]
name = "app"
endpoints = [{ address = "127.0.0.1:9001" }]
"#);
    assert_eq!(config.server.listen, vec!["0.0.0.0:0".parse().unwrap()]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(config.server.workers, cores);
    assert_eq!(config.server.access_log, AccessLogTarget::Stdout);
    assert_eq!(config.server.drain_timeout, Duration::ZERO);
    assert_eq!(config.server.limits.max_uri_bytes, 4096);
    assert!(config.routes.is_empty());
}

#[test]
fn parse_uses_origin_in_messages() {
    let err = config::parse("[server\n", "inline.toml").unwrap_err();
    assert_eq!(err.file, "inline.toml");
    assert_eq!(err.line, 1);
    let config = config::parse(MINIMAL, "inline.toml").unwrap();
    assert_eq!(config.clusters[0].name, "app");
}

#[test]
fn unreadable_file_has_line_zero() {
    let path = std::env::temp_dir().join("headwater-config-test-does-not-exist/none.toml");
    let err = config::load(&path).unwrap_err();
    assert_eq!(err.line, 0);
    assert_eq!(err.file, path.display().to_string());
    assert!(err.reason.contains("cannot read"), "{err}");
    assert_eq!(err.to_string(), format!("{}: {}", err.file, err.reason));
    // It is a std error.
    let _: &dyn std::error::Error = &err;
}

// ---------------------------------------------------------------------------------------------
// Syntax, types and unknown keys
// ---------------------------------------------------------------------------------------------

#[test]
fn toml_syntax_error() {
    let text = "[server]\nlisten = [\"127.0.0.1:8080\"\nworkers = 2\n";
    let (_, result) = load_text(text);
    let err = result.unwrap_err();
    assert!(err.line == 2 || err.line == 3, "{err}");
    assert!(err.reason.contains("expected"), "{err}");

    rejects(
        "[server]\nlisten = [\"127.0.0.1:8080\"]\nadmin = 127.0.0.1\n",
        "admin =",
        &[],
    );
    rejects(
        "[server]\nlisten = [\"127.0.0.1:8080\"]\nlisten = [\"127.0.0.1:8081\"]\n",
        "8081",
        &["duplicate key", "listen"],
    );
}

#[test]
fn wrong_types() {
    let text = in_server("backlog = \"big\"");
    rejects(&text, "backlog", &["expected an integer", "server.backlog"]);
    let text = in_server("drain_timeout = 30");
    rejects(
        &text,
        "drain_timeout",
        &["duration", "server.drain_timeout"],
    );
    rejects(
        "[server]\nlisten = 8080\n",
        "listen",
        &["expected an address such as"],
    );
}

#[test]
fn unknown_top_level_key() {
    let text = format!("{MINIMAL}\n[cache]\nenabled = true\n");
    let err = rejects(&text, "[cache]", &["unknown key `cache`"]);
    assert!(
        err.reason.contains("`server`"),
        "lists the known keys: {err}"
    );
}

#[test]
fn unknown_key_in_server() {
    let text = in_server("listen_port = 8080");
    let err = rejects(
        &text,
        "listen_port",
        &["unknown key `listen_port`", "server"],
    );
    assert_eq!(err.column, 1);
}

#[test]
fn unknown_key_in_server_subtable() {
    let text =
        format!("{MINIMAL}\n[server.timeouts]\nclient_header = \"1s\"\nclient_read = \"1s\"\n");
    // [server.timeouts] after [[route]] is valid TOML (it extends server).
    rejects(&text, "client_read", &["unknown key `client_read`"]);
}

#[test]
fn unknown_key_in_route_match() {
    let text = format!("{MINIMAL}match = {{ path_prefix = \"/\", query = \"a=b\" }}\n");
    let err = rejects(&text, "query =", &["unknown key `query`", "route.match"]);
    assert_eq!(err.column, column_of(&text, "query"));
}

const RESILIENT: &str = r#"
[server]
listen = ["127.0.0.1:8080"]

[[cluster]]
name = "app"
balancer = "maglev"
hash_key = "cookie:sid"
panic_threshold = 30
slow_start = "20s"
endpoints = [
  { address = "127.0.0.1:9001", weight = 3 },
  { address = "127.0.0.1:9002", priority = 1 },
]
health = { path = "/healthz", method = "HEAD", host = "app.internal", expect_status = [200, 204], body_contains = "ok", interval = "2s", unhealthy_interval = "500ms", jitter = "100ms", timeout = "300ms", rise = 3, fall = 4 }
outlier = { consecutive_5xx = 7, consecutive_gateway_failures = 0, success_rate_stdev_factor = 2.5, latency_factor = 4.0, latency_min = "20ms", interval = "5s", base_ejection = "1s", max_ejection = "10s", jitter = "50ms", max_ejection_percent = 34 }
breaker = { max_connections = 100, max_requests = 50, failure_threshold = 5, open_for = "2s" }
endpoint_breaker = { max_pending = 10 }
retry_budget = { percent = 50, min_concurrent = 1, burst = 7 }

[[cluster]]
name = "spare"
endpoints = [{ address = "127.0.0.1:9003" }]
health = { type = "tcp" }
outlier = { enabled = false }

[[route]]
cluster = "app"
fallback = "spare"
retry = { attempts = 5, on = ["5xx", "timeout"], backoff_base = "10ms", backoff_max = "1s", per_try_timeout = "2s", non_idempotent = true, hedge_after = "40ms" }
queue = { timeout = "3s" }
"#;

#[test]
fn resilience_keys_parse_to_expected_values() {
    use headwater_balancer::Algorithm;
    use headwater_engine::config::HashKey;
    let c = ok(RESILIENT);
    let app = &c.clusters[0];
    assert_eq!(app.balancer, Algorithm::Maglev);
    assert_eq!(app.hash_key, HashKey::Cookie("sid".into()));
    assert_eq!(app.panic_threshold, 30);
    assert_eq!(app.slow_start, Some(Duration::from_secs(20)));
    assert_eq!((app.endpoints[0].weight, app.endpoints[0].priority), (3, 0));
    assert_eq!((app.endpoints[1].weight, app.endpoints[1].priority), (1, 1));
    let h = app.health_check.as_ref().unwrap();
    assert!(h.http);
    assert_eq!(h.method, Method::HEAD);
    assert_eq!(h.path, "/healthz");
    assert_eq!(h.host.as_deref(), Some("app.internal"));
    assert_eq!(h.expect_status, (200, 204));
    assert_eq!(h.body_contains.as_deref(), Some("ok"));
    assert_eq!(h.interval, Duration::from_secs(2));
    assert_eq!(h.unhealthy_interval, Duration::from_millis(500));
    assert_eq!(h.jitter, Duration::from_millis(100));
    assert_eq!(h.timeout, Duration::from_millis(300));
    assert_eq!((h.rise, h.fall), (3, 4));
    let o = app.outlier.as_ref().unwrap();
    assert_eq!(o.consecutive_5xx, 7);
    assert_eq!(o.consecutive_gateway_failures, 0);
    assert_eq!(o.success_rate_stdev_factor, 2.5);
    assert_eq!(o.latency_factor, 4.0);
    assert_eq!(o.latency_min, Duration::from_millis(20));
    assert_eq!(o.interval, Duration::from_secs(5));
    assert_eq!(o.base_ejection, Duration::from_secs(1));
    assert_eq!(o.max_ejection, Duration::from_secs(10));
    assert_eq!(o.jitter, Duration::from_millis(50));
    assert_eq!(o.max_ejection_percent, 34);
    let b = app.breaker.unwrap();
    assert_eq!(b.max_connections, Some(100));
    assert_eq!(b.max_pending, None);
    assert_eq!(b.max_requests, Some(50));
    assert_eq!(b.failure_threshold, Some(5));
    assert_eq!(b.open_for, Duration::from_secs(2));
    assert_eq!(app.endpoint_breaker.unwrap().max_pending, Some(10));
    assert_eq!(
        (
            app.retry_budget.percent,
            app.retry_budget.min_concurrent,
            app.retry_budget.burst
        ),
        (50, 1, 7)
    );
    let spare = &c.clusters[1];
    assert!(!spare.health_check.as_ref().unwrap().http);
    assert!(spare.outlier.is_none());
    let r = &c.routes[0];
    assert_eq!(r.fallback, Some(1));
    assert_eq!(r.queue, Some(Duration::from_secs(3)));
    assert_eq!(r.retry.attempts, 5);
    assert!(r.retry.on.matches_status(500) && r.retry.on.matches_timeout());
    assert!(!r.retry.on.matches_reset());
    assert_eq!(r.retry.backoff_base, Duration::from_millis(10));
    assert_eq!(r.retry.backoff_max, Duration::from_secs(1));
    assert_eq!(r.retry.per_try_timeout, Some(Duration::from_secs(2)));
    assert!(r.retry.non_idempotent);
    assert_eq!(r.retry.hedge_after, Some(Duration::from_millis(40)));
}

#[test]
fn resilience_defaults() {
    use headwater_balancer::Algorithm;
    let c = ok(MINIMAL);
    let app = &c.clusters[0];
    assert_eq!(app.balancer, Algorithm::RoundRobin);
    assert_eq!(app.panic_threshold, 50);
    assert!(app.health_check.is_none());
    let o = app
        .outlier
        .as_ref()
        .expect("outlier detection is on by default");
    assert_eq!((o.consecutive_5xx, o.consecutive_gateway_failures), (5, 5));
    assert_eq!(o.max_ejection_percent, 50);
    assert!(app.breaker.is_none() && app.endpoint_breaker.is_none());
    assert_eq!(
        (
            app.retry_budget.percent,
            app.retry_budget.min_concurrent,
            app.retry_budget.burst
        ),
        (20, 3, 0)
    );
    let r = &c.routes[0];
    assert_eq!(r.retry.attempts, 3);
    assert!(r.retry.on.matches_connect_failure() && r.retry.on.matches_reset());
    assert!(r.retry.on.matches_status(503) && !r.retry.on.matches_status(500));
    assert!(!r.retry.non_idempotent);
    assert_eq!(r.retry.hedge_after, None);
    assert_eq!(r.fallback, None);
    assert_eq!(r.queue, None);
    let h = ok(&in_cluster("health = {}"));
    let h = h.clusters[0].health_check.as_ref().unwrap();
    assert_eq!(
        (h.path.as_str(), h.expect_status, h.rise, h.fall),
        ("/", (200, 399), 2, 3)
    );
    assert_eq!(
        (h.interval, h.timeout),
        (Duration::from_secs(5), Duration::from_secs(1))
    );
}

#[test]
fn resilience_keys_are_validated() {
    for (line, at, reason) in [
        (
            "balancer = \"fastest\"",
            "\"fastest\"",
            "unknown balancer \"fastest\"",
        ),
        (
            "hash_key = \"client\"",
            "\"client\"",
            "only used by `balancer = \"maglev\"`",
        ),
        (
            "balancer = \"maglev\"\nhash_key = \"query:x\"",
            "\"query:x\"",
            "invalid hash_key",
        ),
        ("panic_threshold = 101", "101", "out of range"),
        (
            "health = { http_path = \"/\" }",
            "http_path",
            "unknown key `http_path`",
        ),
        (
            "health = { type = \"udp\" }",
            "\"udp\"",
            "unknown health check type",
        ),
        (
            "health = { type = \"tcp\", path = \"/\" }",
            "{ type",
            "only connects",
        ),
        (
            "health = { interval = \"1s\", timeout = \"1s\" }",
            "{ interval",
            "must be shorter than its interval",
        ),
        (
            "health = { expect_status = [300, 200] }",
            "[300, 200]",
            "inclusive range",
        ),
        ("health = { expect_status = 600 }", "600", "out of range"),
        ("health = { rise = 0 }", "0 }", "out of range"),
        (
            "outlier = { base_ejection = \"10s\", max_ejection = \"1s\" }",
            "\"1s\"",
            "max_ejection must not be shorter",
        ),
        (
            "outlier = { success_rate_stdev_factor = -1.0 }",
            "-1.0",
            "from 0 to 100",
        ),
        (
            "outlier = { max_ejection_percent = 150 }",
            "150",
            "out of range",
        ),
        ("breaker = { max_requests = 0 }", "0 }", "out of range"),
        (
            "breaker = { open_for = \"0s\" }",
            "\"0s\"",
            "greater than zero",
        ),
        ("retry_budget = { percent = 200 }", "200", "out of range"),
    ] {
        rejects(&in_cluster(line), at, &[reason]);
    }
    let text = MINIMAL.replace(
        "{ address = \"127.0.0.1:9001\" }",
        "{ address = \"127.0.0.1:9001\", weight = 0 }",
    );
    rejects(&text, "weight", &["out of range"]);
    let text = MINIMAL.replace(
        "{ address = \"127.0.0.1:9001\" }",
        "{ address = \"127.0.0.1:9001\", priority = 16 }",
    );
    rejects(&text, "priority", &["out of range"]);
    for (line, at, reason) in [
        ("retry = { on = [\"502\", \"teapot\"] }", "retry", "teapot"),
        ("retry = { attempts = 11 }", "retry", "out of range"),
        (
            "retry = { backoff_base = \"1s\", backoff_max = \"10ms\" }",
            "retry",
            "backoff_max must not be shorter",
        ),
        ("retry = { tries = 2 }", "retry", "unknown key `tries`"),
        (
            "fallback = \"nowhere\"",
            "fallback",
            "unknown fallback cluster \"nowhere\"",
        ),
        (
            "fallback = \"app\"",
            "fallback",
            "is the route's own cluster",
        ),
        ("queue = { timeout = \"0s\" }", "queue", "greater than zero"),
        (
            "retry = { hedge_after = \"0s\" }",
            "hedge_after",
            "greater than zero",
        ),
        (
            "hedge = { delay = \"50ms\" }",
            "hedge",
            "unknown key `hedge`",
        ),
    ] {
        let text = format!("{MINIMAL}{line}\n");
        rejects(&text, at, &[reason]);
    }
}

#[test]
fn missing_required_keys() {
    rejects(
        "# no server\n[[cluster]]\nname = \"a\"\nendpoints = [{ address = \"127.0.0.1:1\" }]\n",
        "# no server",
        &["missing key `server`"],
    );
    rejects(
        "\n[server]\nworkers = 2\n",
        "[server]",
        &["missing key `listen`"],
    );
    let text = MINIMAL.replace("cluster = \"app\"", "match = { path = \"/\" }");
    rejects(
        &text,
        "[[route]]",
        &["missing `cluster = \"name\"`", "llm = true"],
    );
}

// ---------------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_listen_address() {
    let text = MINIMAL.replace(
        "listen = [\"127.0.0.1:8080\"]",
        "listen = [\"127.0.0.1:8080\",\n  \"127.0.0.1:80800\"]",
    );
    let err = rejects(
        &text,
        "80800",
        &["invalid address \"127.0.0.1:80800\"", "server.listen"],
    );
    assert_eq!(err.column, column_of(&text, "\"127.0.0.1:80800\""));

    let text = MINIMAL.replace("127.0.0.1:8080", "localhost:8080");
    rejects(&text, "localhost", &["use an IP address"]);
}

#[test]
fn bad_admin_address() {
    let text = in_server("admin = \"9901\"");
    rejects(&text, "admin", &["invalid address \"9901\""]);
    let text = in_server("admin = \"127.0.0.1:8080\"");
    rejects(
        &text,
        "admin",
        &["admin address 127.0.0.1:8080 is also a listen address"],
    );
}

#[test]
fn duplicate_and_empty_listen() {
    let text = MINIMAL.replace(
        "listen = [\"127.0.0.1:8080\"]",
        "listen = [\n  \"127.0.0.1:8080\",\n  \"127.0.0.1:8080\",\n]",
    );
    // Points at the second occurrence.
    let err = rejects_at(
        &text,
        last_line_of(&text, "127.0.0.1:8080"),
        &["duplicate listen address 127.0.0.1:8080"],
    );
    assert_eq!(err.column, 3);
    let text = MINIMAL.replace("[\"127.0.0.1:8080\"]", "[]");
    rejects(&text, "listen", &["at least one address"]);

    // A wildcard overlaps a specific address of the same family on the same port.
    let text = MINIMAL.replace(
        "[\"127.0.0.1:8080\"]",
        "[\"0.0.0.0:8080\",\n  \"127.0.0.1:8080\"]",
    );
    rejects(
        &text,
        "\"127.0.0.1:8080\"]",
        &["listen address 127.0.0.1:8080 overlaps listen address 0.0.0.0:8080"],
    );
    // Different families, different ports, or ephemeral ports do not overlap.
    let text = MINIMAL.replace(
        "[\"127.0.0.1:8080\"]",
        "[\"0.0.0.0:8080\", \"[::]:8080\", \"127.0.0.1:8081\", \"127.0.0.1:0\", \"127.0.0.1:0\"]",
    );
    assert_eq!(ok(&text).server.listen.len(), 5);
}

#[test]
fn bad_endpoint_address() {
    for (address, reason) in [
        ("127.0.0.1", "expected ip:port or name:port"),
        ("127.0.0.1:0", "port 0"),
        ("127.0.0.1:70000", "invalid endpoint address"),
        ("app.internal:http", "port must be 1 to 65535"),
        ("::1:8000", "IPv6 addresses need brackets"),
        ("0.0.0.0:80", "is not a destination"),
        ("bad host:80", "expected ip:port or name:port"),
        (
            "no-such-host.invalid:80",
            "cannot resolve endpoint host \"no-such-host.invalid\"",
        ),
    ] {
        let text = MINIMAL.replace(
            "endpoints = [{ address = \"127.0.0.1:9001\" }]",
            &format!(
                "endpoints = [\n  {{ address = \"127.0.0.1:9001\" }},\n  {{ address = \"{address}\" }},\n]"
            ),
        );
        let err = rejects(&text, &format!("\"{address}\""), &[reason]);
        assert_eq!(err.column, column_of(&text, &format!("\"{address}\"")));
    }
}

#[test]
fn duplicate_endpoint_in_cluster() {
    let text = MINIMAL.replace(
        "endpoints = [{ address = \"127.0.0.1:9001\" }]",
        "endpoints = [\n  { address = \"127.0.0.1:9001\" },\n  { address = \"127.0.0.1:9001\" },\n]",
    );
    rejects_at(
        &text,
        last_line_of(&text, "127.0.0.1:9001"),
        &["duplicate endpoint 127.0.0.1:9001", "cluster \"app\""],
    );
}

#[test]
fn empty_endpoints() {
    let text = MINIMAL.replace("[{ address = \"127.0.0.1:9001\" }]", "[]");
    rejects(&text, "endpoints", &["cluster \"app\" has no endpoints"]);
}

// ---------------------------------------------------------------------------------------------
// Names and references
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_cluster_in_route() {
    let text = r#"
[server]
listen = ["127.0.0.1:8080"]

[[cluster]]
name = "app"
endpoints = [{ address = "127.0.0.1:9001" }]

[[cluster]]
name = "web"
endpoints = [{ address = "127.0.0.1:9002" }]

[[route]]
name = "ok"
cluster = "app"

[[route]]
name = "broken"
match = { path_prefix = "/x" }
cluster =   "nope"
"#;
    let err = rejects(
        text,
        "\"nope\"",
        &["unknown cluster \"nope\"", "defined clusters: app, web"],
    );
    assert_eq!(err.column, column_of(text, "\"nope\""));

    let text = "[server]\nlisten = [\"127.0.0.1:8080\"]\n[[route]]\ncluster = \"app\"\n";
    rejects(text, "cluster = ", &["no clusters are defined"]);
}

#[test]
fn duplicate_cluster_name() {
    let text = r#"
[server]
listen = ["127.0.0.1:8080"]

[[cluster]]
name = "app"
endpoints = [{ address = "127.0.0.1:9001" }]

[[cluster]]
endpoints = [{ address = "127.0.0.1:9002" }]
name = "app"   # again
"#;
    rejects(
        text,
        "# again",
        &["duplicate cluster name \"app\"", "first defined on line 6"],
    );
}

#[test]
fn bad_cluster_name() {
    let text = MINIMAL.replace("name = \"app\"", "name = \"my app\"");
    rejects(&text, "my app", &["invalid name \"my app\""]);
    let text = MINIMAL.replace("name = \"app\"", "name = \"\"");
    rejects(&text, "name = \"\"", &["name must not be empty"]);
}

#[test]
fn duplicate_route_names() {
    let text = format!("{MINIMAL}name = \"r\"\n[[route]]\ncluster = \"app\"\nname = \"r\"\n");
    // The second `name = "r"` is the one reported.
    rejects_at(
        &text,
        last_line_of(&text, "name = \"r\""),
        &["duplicate route name \"r\"", "first used on line"],
    );

    // A route without a name whose default name is taken.
    let text = format!("{MINIMAL}name = \"route-1\"\n[[route]] # second\ncluster = \"app\"\n");
    rejects(
        &text,
        "# second",
        &["default name \"route-1\"", "give it a `name`"],
    );
}

// ---------------------------------------------------------------------------------------------
// Durations, numbers
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_durations() {
    for (value, reason) in [
        ("10 s", "no spaces"),
        ("abc", "expected a number followed by a unit"),
        ("-1s", "cannot be negative"),
        ("10", "missing unit"),
        ("1m30s", "single unit"),
        ("0s", "must be greater than zero"),
    ] {
        let text = in_server(&format!("[server.timeouts]\nclient_header = \"{value}\""));
        let err = rejects(
            &text,
            "client_header",
            &[
                &format!("invalid duration \"{value}\""),
                reason,
                "server.timeouts.client_header",
            ],
        );
        assert_eq!(err.column, column_of(&text, &format!("\"{value}\"")));
    }
    // In an inline table of a route.
    let text = format!("{MINIMAL}timeouts = {{ connect = \"1s\", total = \"soon\" }}\n");
    let err = rejects(&text, "soon", &["invalid duration \"soon\""]);
    assert_eq!(err.column, column_of(&text, "\"soon\""));
    // In a pool.
    let text = in_cluster("pool = { idle_timeout = \"5 m\" }");
    rejects(&text, "5 m", &["invalid duration \"5 m\""]);
}

#[test]
fn workers_out_of_range() {
    for (value, reason) in [
        ("0", "got 0"),
        ("1025", "got 1025"),
        ("-2", "got -2"),
        ("\"many\"", "got \"many\""),
    ] {
        let text = in_server(&format!("workers = {value}"));
        rejects(
            &text,
            "workers",
            &[
                "workers must be \"auto\" or a number from 1 to 1024",
                reason,
            ],
        );
    }
    let text = in_server("workers = 1024");
    assert_eq!(ok(&text).server.workers, 1024);
}

#[test]
fn limits_out_of_range() {
    for (line, reason) in [
        (
            "max_head_bytes = 512",
            "512 is out of range: must be from 1024 to 1048576",
        ),
        ("max_headers = 4", "must be from 8 to 1024"),
        ("max_uri_bytes = 100", "must be from 256"),
        (
            "max_uri_bytes = 100000",
            "max_uri_bytes (100000) must not exceed max_head_bytes (65536)",
        ),
    ] {
        let text = format!("{MINIMAL}\n[server.limits]\n{line}\n");
        rejects(&text, line, &[reason]);
    }
    let text = in_server("backlog = 0");
    rejects(&text, "backlog", &["must be from 1 to 65535"]);
}

#[test]
fn bad_enums() {
    let text = in_server("io_driver = \"kqueue\"");
    rejects(&text, "io_driver", &["kqueue", "io_uring"]);
    let text = format!("{MINIMAL}\n[server.forwarded]\nx_forwarded_for = \"yes\"\n");
    rejects(&text, "x_forwarded_for", &["yes", "append"]);
    let text = in_server("access_log = \"stderr\"");
    rejects(&text, "access_log", &["stderr"]);
}

// ---------------------------------------------------------------------------------------------
// Route matchers and edits
// ---------------------------------------------------------------------------------------------

#[test]
fn path_and_path_prefix_both() {
    let text = format!("{MINIMAL}match = {{ path = \"/a\", path_prefix = \"/b\" }}\n");
    let err = rejects(
        &text,
        "path_prefix",
        &["`path` and `path_prefix` cannot both be set"],
    );
    assert_eq!(err.column, column_of(&text, "\"/b\""));
}

#[test]
fn rewrite_without_path_prefix() {
    let text = format!("{MINIMAL}rewrite = {{ path_prefix = \"/v2/\" }}\n");
    let err = rejects(
        &text,
        "rewrite",
        &["`rewrite.path_prefix` needs `match.path_prefix`"],
    );
    assert_eq!(err.column, column_of(&text, "{ path_prefix"));
    let text =
        format!("{MINIMAL}match = {{ path = \"/x\" }}\nrewrite = {{ path_prefix = \"/v2/\" }}\n");
    rejects(&text, "rewrite", &["needs `match.path_prefix`"]);
    let text = format!(
        "{MINIMAL}match = {{ path_prefix = \"/x\" }}\nrewrite = {{ path_prefix = \"v2\" }}\n"
    );
    rejects(
        &text,
        "rewrite",
        &["invalid path \"v2\": must start with '/'"],
    );
    let text = format!("{MINIMAL}match = {{ path_prefix = \"/x\" }}\nrewrite = {{}}\n");
    rejects(&text, "rewrite", &["missing key `path_prefix`"]);
}

#[test]
fn invalid_header_names() {
    let text = format!("{MINIMAL}match = {{ headers = [{{ name = \"x canary\" }}] }}\n");
    let err = rejects(&text, "x canary", &["invalid header name \"x canary\""]);
    assert_eq!(err.column, column_of(&text, "\"x canary\""));

    let text = format!("{MINIMAL}request_headers = {{ add = {{ \"x:from\" = \"a\" }} }}\n");
    let err = rejects(&text, "x:from", &["invalid header name \"x:from\""]);
    assert_eq!(err.column, column_of(&text, "\"x:from\""));

    let text = format!("{MINIMAL}response_headers = {{ remove = [\"ok\", \"bad name\"] }}\n");
    let err = rejects(&text, "bad name", &["invalid header name \"bad name\""]);
    assert_eq!(err.column, column_of(&text, "\"bad name\""));

    let text = format!("{MINIMAL}request_headers = {{ add = {{ \"content-length\" = \"0\" }} }}\n");
    rejects(
        &text,
        "content-length",
        &["`content-length` is managed by the proxy"],
    );
    let text = format!("{MINIMAL}response_headers = {{ remove = [\"Transfer-Encoding\"] }}\n");
    rejects(
        &text,
        "Transfer-Encoding",
        &["`transfer-encoding` is managed by the proxy"],
    );
}

#[test]
fn invalid_header_values() {
    let text = format!("{MINIMAL}request_headers = {{ add = {{ \"x-a\" = \"line\\nbreak\" }} }}\n");
    rejects(&text, "x-a", &["invalid header value"]);
    let text = format!("{MINIMAL}match = {{ headers = [{{ name = \"x-a\", value = \" 1\" }}] }}\n");
    rejects(&text, "x-a", &["must not start or end with whitespace"]);
}

#[test]
fn bad_hosts_paths_methods() {
    for (matcher, reason) in [
        ("host = \"api.example.com:8080\"", "must not include a port"),
        (
            "host = \"api.*.com\"",
            "wildcard is only allowed as the first label",
        ),
        ("host = \"*\"", "omit `host`"),
        ("host = \"\"", "must not be empty"),
        ("host = \"a..b\"", "empty label"),
        ("host = \"a b\"", "' ' is not allowed"),
        ("path = \"api\"", "must start with '/'"),
        ("path_prefix = \"/a?b=c\"", "query is not part of the path"),
        ("path = \"/a b\"", "is not allowed"),
        ("method = \"get\"", "did you mean \"GET\"?"),
        ("method = [\"GET\", \"P OST\"]", "invalid method \"P OST\""),
        ("method = []", "`method` must not be empty"),
    ] {
        let text = format!("{MINIMAL}match = {{ {matcher} }}\n");
        rejects(&text, matcher, &[reason]);
    }
}

#[test]
fn methods_are_deduplicated_and_extensions_allowed() {
    let text = format!("{MINIMAL}match = {{ method = [\"GET\", \"PURGE\", \"GET\"] }}\n");
    let config = ok(&text);
    assert_eq!(
        config.routes[0].matcher.methods,
        vec![Method::GET, Method::from_bytes(b"PURGE").unwrap()]
    );
}

// ---------------------------------------------------------------------------------------------
// Examples
// ---------------------------------------------------------------------------------------------

#[test]
fn every_example_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = config::load(&path) {
                panic!("{e}");
            }
            loaded += 1;
        }
    }
    assert!(loaded >= 2, "found {loaded} example files");
}

#[test]
fn routing_example_routes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/routing.toml");
    let config = config::load(&path).unwrap();
    let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    let route = |method: &Method, host: &str, path: &str, headers: &[(&str, &str)]| {
        let headers: Vec<(HeaderName, Vec<u8>)> = headers
            .iter()
            .map(|(n, v)| {
                (
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    v.as_bytes().to_vec(),
                )
            })
            .collect();
        config
            .match_route(method, Some(host.as_bytes()), path.as_bytes(), |name| {
                headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_slice())
            })
            .map(|i| names[i])
    };
    let get = Method::GET;
    assert_eq!(
        route(&get, "api.example.com", "/v1/users", &[("x-canary", "1")]),
        Some("api-canary")
    );
    assert_eq!(
        route(&get, "api.example.com", "/v1/users", &[]),
        Some("api")
    );
    assert_eq!(
        route(&Method::PATCH, "api.example.com", "/v1/users", &[]),
        Some("route-7")
    );
    assert_eq!(
        route(&get, "t1.example.com", "/healthz", &[]),
        Some("tenant-health")
    );
    assert_eq!(route(&get, "example.com", "/healthz", &[]), Some("route-7"));
    assert_eq!(route(&get, "x", "/", &[("x-debug", "")]), Some("debug"));
    assert_eq!(
        route(
            &get,
            "x",
            "/tools/a",
            &[("x-team", "ops"), ("authorization", "t")]
        ),
        Some("tools")
    );
    assert_eq!(
        route(&get, "x", "/tools/a", &[("x-team", "ops")]),
        Some("route-7")
    );
    assert_eq!(
        route(&Method::PUT, "x", "/static/a.css", &[]),
        Some("no-writes-to-static")
    );
    assert_eq!(route(&get, "x", "/static/a.css", &[]), Some("static"));
    let api = &config.routes[1];
    assert_eq!(api.rewrite_prefix.as_deref(), Some("/internal/v1/"));
    assert_eq!(config.clusters[api.cluster().unwrap()].name, "api");
}

// ---------------------------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------------------------

/// A config with `routes` (each a `match = {...}` body or "" for no match), all to cluster "c".
fn with_routes(routes: &[&str]) -> Config {
    let mut text = String::from(
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n[[cluster]]\nname = \"c\"\nendpoints = [{ address = \"127.0.0.1:1\" }]\n",
    );
    for m in routes {
        text.push_str("[[route]]\ncluster = \"c\"\n");
        if !m.is_empty() {
            text.push_str(&format!("match = {{ {m} }}\n"));
        }
    }
    config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn no_headers(_: &HeaderName) -> Option<&'static [u8]> {
    None
}

fn matches(config: &Config, method: &Method, host: Option<&str>, path: &str) -> Option<usize> {
    config.match_route(method, host.map(str::as_bytes), path.as_bytes(), no_headers)
}

#[test]
fn host_exact_is_case_insensitive_and_ignores_port() {
    let c = with_routes(&["host = \"API.Example.com\""]);
    let get = &Method::GET;
    assert_eq!(matches(&c, get, Some("api.example.com"), "/"), Some(0));
    assert_eq!(matches(&c, get, Some("API.EXAMPLE.COM"), "/"), Some(0));
    assert_eq!(matches(&c, get, Some("api.example.com:8443"), "/"), Some(0));
    assert_eq!(matches(&c, get, Some("api.example.com."), "/"), Some(0));
    assert_eq!(matches(&c, get, Some("www.example.com"), "/"), None);
    assert_eq!(matches(&c, get, Some("api.example.co"), "/"), None);
    assert_eq!(matches(&c, get, Some("api.example.com.evil"), "/"), None);
    assert_eq!(matches(&c, get, None, "/"), None);
}

#[test]
fn host_suffix() {
    let c = with_routes(&["host = \"*.Example.com\""]);
    let get = &Method::GET;
    assert_eq!(matches(&c, get, Some("a.example.com"), "/"), Some(0));
    assert_eq!(matches(&c, get, Some("A.B.EXAMPLE.COM:80"), "/"), Some(0));
    assert_eq!(matches(&c, get, Some("example.com"), "/"), None);
    assert_eq!(matches(&c, get, Some("badexample.com"), "/"), None);
    assert_eq!(matches(&c, get, None, "/"), None);
}

#[test]
fn host_ipv6_literal() {
    let c = with_routes(&["host = \"[::1]\""]);
    assert_eq!(matches(&c, &Method::GET, Some("[::1]:8080"), "/"), Some(0));
    assert_eq!(matches(&c, &Method::GET, Some("[::2]:8080"), "/"), None);
}

#[test]
fn path_exact_and_prefix() {
    let c = with_routes(&["path = \"/exact\"", "path_prefix = \"/api\""]);
    let get = &Method::GET;
    assert_eq!(matches(&c, get, None, "/exact"), Some(0));
    assert_eq!(matches(&c, get, None, "/exact/"), None);
    assert_eq!(matches(&c, get, None, "/Exact"), None);
    assert_eq!(matches(&c, get, None, "/api"), Some(1));
    assert_eq!(matches(&c, get, None, "/api/v1"), Some(1));
    // Plain byte prefix, like nginx `location /api`.
    assert_eq!(matches(&c, get, None, "/apix"), Some(1));
    assert_eq!(matches(&c, get, None, "/ap"), None);
    assert_eq!(matches(&c, get, None, "/"), None);
}

#[test]
fn methods() {
    let c = with_routes(&["method = [\"GET\", \"HEAD\"]", "method = \"POST\""]);
    assert_eq!(matches(&c, &Method::GET, None, "/"), Some(0));
    assert_eq!(matches(&c, &Method::HEAD, None, "/"), Some(0));
    assert_eq!(matches(&c, &Method::POST, None, "/"), Some(1));
    assert_eq!(matches(&c, &Method::DELETE, None, "/"), None);
}

#[test]
fn header_presence_and_value() {
    let c = with_routes(&[
        "headers = [{ name = \"X-Canary\", value = \"1\" }]",
        "headers = [{ name = \"x-debug\" }, { name = \"x-team\", value = \"Ops\" }]",
    ]);
    let run = |headers: &[(&'static str, &'static str)]| {
        let headers: Vec<(HeaderName, &'static [u8])> = headers
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), v.as_bytes()))
            .collect();
        c.match_route(&Method::GET, None, b"/", |name| {
            headers.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
        })
    };
    assert_eq!(run(&[("x-canary", "1")]), Some(0));
    assert_eq!(run(&[("x-canary", "2")]), None);
    assert_eq!(run(&[("x-canary", "1 ")]), None);
    assert_eq!(run(&[("x-debug", ""), ("x-team", "Ops")]), Some(1));
    // Values compare exactly (case-sensitive).
    assert_eq!(run(&[("x-debug", "yes"), ("x-team", "ops")]), None);
    assert_eq!(run(&[("x-team", "Ops")]), None);
    assert_eq!(run(&[]), None);
}

#[test]
fn all_conditions_must_hold() {
    let c = with_routes(&[
        "host = \"a.com\", path_prefix = \"/x\", method = \"GET\", headers = [{ name = \"x-a\" }]",
    ]);
    let hdr = |name: &HeaderName| (name == "x-a").then_some(&b"1"[..]);
    let m = |method: &Method, host: &str, path: &str| {
        c.match_route(method, Some(host.as_bytes()), path.as_bytes(), hdr)
    };
    assert_eq!(m(&Method::GET, "a.com", "/x/1"), Some(0));
    assert_eq!(m(&Method::POST, "a.com", "/x/1"), None);
    assert_eq!(m(&Method::GET, "b.com", "/x/1"), None);
    assert_eq!(m(&Method::GET, "a.com", "/y"), None);
    assert_eq!(
        c.match_route(&Method::GET, Some(b"a.com"), b"/x", no_headers),
        None
    );
    // RouteMatch::matches agrees.
    assert!(c.routes[0]
        .matcher
        .matches(&Method::GET, Some(b"A.com:1"), b"/x", hdr));
}

#[test]
fn first_match_wins() {
    let c = with_routes(&[
        "path_prefix = \"/api/v1\"",
        "path_prefix = \"/api\"",
        "host = \"a.com\"",
        "",
        "path = \"/never\"",
    ]);
    let get = &Method::GET;
    assert_eq!(matches(&c, get, Some("a.com"), "/api/v1/x"), Some(0));
    assert_eq!(matches(&c, get, Some("a.com"), "/api/v2"), Some(1));
    assert_eq!(matches(&c, get, Some("a.com"), "/other"), Some(2));
    assert_eq!(matches(&c, get, Some("b.com"), "/other"), Some(3));
    // The catch-all before it shadows the exact route.
    assert_eq!(matches(&c, get, None, "/never"), Some(3));
    let none = with_routes(&["path = \"/only\""]);
    assert_eq!(matches(&none, get, None, "/"), None);
}

#[test]
fn config_is_shareable() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Config>();
    let shared = std::sync::Arc::new(with_routes(&[""]));
    let other = std::sync::Arc::clone(&shared);
    std::thread::spawn(move || assert_eq!(matches(&other, &Method::GET, None, "/"), Some(0)))
        .join()
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// [llm] and llm routes
// ---------------------------------------------------------------------------------------------

const LLM: &str = r#"
[server]
listen = ["127.0.0.1:8080"]

[[route]]
name = "ai"
match = { path_prefix = "/v1/" }
llm = true

[llm.upstream]
connect_timeout = "2s"
max_request_body = 65536

[[llm.model]]
name = "fast"
fallbacks = ["smart"]

[[llm.model.deployment]]
provider = "openai-compatible"
model = "llama3"
base_url = "http://127.0.0.1:11434/v1"

[[llm.model]]
name = "smart"

[[llm.model.deployment]]
provider = "anthropic"
model = "claude-sonnet-4-5"
api_key = "sk-test"
price = { input_per_million = 3.0, output_per_million = 15.0 }
"#;

#[test]
fn llm_section_and_route_resolve() {
    let config = ok(LLM);
    let route = &config.routes[0];
    assert_eq!(route.target, config::RouteTarget::Llm);
    assert_eq!(route.cluster(), None);
    let llm = config.llm.as_ref().expect("[llm] resolved");
    let catalogue = &llm.catalogue;
    assert_eq!(catalogue.models().len(), 2);
    assert_eq!(catalogue.deployments().len(), 2);
    assert_eq!(catalogue.upstream.connect_timeout, Duration::from_secs(2));
    assert_eq!(catalogue.upstream.max_request_body, 65536);
    assert!(catalogue.upstream.verify);
    let fast = catalogue.model_id("fast").unwrap();
    assert_eq!(catalogue.model(fast).fallbacks.len(), 1);
    // A config with no clusters at all is fine when every route is an LLM route.
    assert!(config.clusters.is_empty());
}

#[test]
fn llm_catalogue_errors_point_at_the_key() {
    let text = LLM.replace("provider = \"anthropic\"", "provider = \"antropic\"");
    let err = rejects(
        &text,
        "provider = \"antropic\"",
        &["llm.model[1].deployment[0].provider", "antropic"],
    );
    assert!(err.reason.contains("anthropic"), "{err}");
    let text = LLM.replace("fallbacks = [\"smart\"]", "fallbacks = [\"smarter\"]");
    rejects(
        &text,
        "fallbacks = [\"smarter\"]",
        &["llm.model[0].fallbacks[0]", "unknown model alias `smarter`"],
    );
    let text = LLM.replace(
        "connect_timeout = \"2s\"",
        "connect_timeout = \"2 parsecs\"",
    );
    rejects(
        &text,
        "connect_timeout = ",
        &["llm.upstream.connect_timeout", "invalid duration"],
    );
    // Several problems: the first decides the position, the others are listed with lines.
    let text = LLM
        .replace("provider = \"anthropic\"", "provider = \"antropic\"")
        .replace("connect_timeout = \"2s\"", "connect_timeout = \"soon\"");
    let err = rejects(&text, "provider = \"antropic\"", &["also line"]);
    assert!(err.reason.contains("llm.upstream.connect_timeout"), "{err}");
}

#[test]
fn llm_unknown_keys_and_types_are_located_by_toml() {
    let text = LLM.replace(
        "max_request_body = 65536",
        "max_request_body = 65536\nmax_body = 1",
    );
    rejects(&text, "max_body = 1", &["max_body"]);
    let text = LLM.replace("model = \"llama3\"", "model = 3");
    rejects(&text, "model = 3", &["string"]);
}

#[test]
fn llm_route_rules() {
    // llm = true without [llm]
    let text = MINIMAL.replace("cluster = \"app\"\n", "llm = true\n");
    rejects(&text, "llm = true", &["[llm]"]);
    // both cluster and llm
    let text = LLM.replace("llm = true", "llm = true\ncluster = \"app\"");
    rejects(&text, "[[route]]", &["either", "not both"]);
    // neither
    let text = LLM.replace("llm = true", "");
    rejects(&text, "[[route]]", &["missing `cluster"]);
    // proxy-only keys on an llm route
    let text = LLM.replace("llm = true", "llm = true\nretry = { attempts = 2 }");
    rejects(
        &text,
        "[[route]]",
        &["`retry` is for proxy routes", "[llm.failover]"],
    );
    let text = LLM.replace("llm = true", "llm = true\ntimeouts = { total = \"5s\" }");
    rejects(&text, "[[route]]", &["`timeouts`", "[llm.upstream]"]);
}

#[test]
fn llm_bad_ca_file_is_a_config_error() {
    let text = LLM.replace(
        "max_request_body = 65536",
        "max_request_body = 65536\nca_file = \"/nonexistent/ca.pem\"",
    );
    rejects(&text, "ca_file", &["/nonexistent/ca.pem"]);
}

/// A reload compares `[llm]` sections: equal text, secrets and CA file keep the running router;
/// a rotated `env:` secret or a renewed CA file under the same path is a new section.
#[test]
fn llm_sections_compare_by_text_secrets_and_ca_contents() {
    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }
    let dir = write_temp("").parent().unwrap().to_path_buf();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, ca_pem()).unwrap();
    let var = format!("HEADWATER_TEST_LLM_KEY_{}", std::process::id());
    std::env::set_var(&var, "first");
    let text = LLM
        .replace("api_key = \"sk-test\"", &format!("api_key = \"env:{var}\""))
        .replace(
            "max_request_body = 65536",
            &format!("max_request_body = 65536\nca_file = \"{}\"", ca.display()),
        );
    let llm = |t: &str| config::parse(t, "t.toml").unwrap().llm.unwrap();
    let a = llm(&text);
    assert_eq!(a, llm(&text));
    std::env::set_var(&var, "second");
    let rotated = llm(&text);
    assert_ne!(a, rotated);
    std::fs::write(&ca, ca_pem()).unwrap();
    assert_ne!(rotated, llm(&text));
    std::env::remove_var(&var);
    let _ = std::fs::remove_dir_all(&dir);
}
