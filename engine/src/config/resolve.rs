//! From the raw file to [`Config`]: defaults, checks that span several values, references
//! between sections, and endpoint name resolution. Every error points at a span of the file.

use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::raw::{
    OneOrMany, RawBreaker, RawCluster, RawConfig, RawHeaderEdits, RawHealthCheck, RawMatch,
    RawOutlier, RawRetry, RawRoute, RawRouteTimeouts, RawServer, Workers,
};
use super::{
    line_column, BreakerConfig, ClusterConfig, Config, ConfigError, EndpointConfig, Forwarded,
    HashKey, HeaderEdits, HeaderMatch, HealthCheck, Limits, OutlierConfig, PathMatch, PoolConfig,
    RetryBudgetConfig, RetryConfig, RouteConfig, RouteMatch, RouteTarget, RouteTimeouts,
    ServerConfig, ServerTimeouts,
};
use crate::llm::LlmSection;

/// Where errors are reported.
struct Ctx<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, reason: impl Into<String>) -> ConfigError {
        ConfigError::at(self.text, self.origin, span.start, reason)
    }

    fn line(&self, span: &Range<usize>) -> usize {
        line_column(self.text, span.start).0
    }
}

pub(super) fn resolve(raw: RawConfig, text: &str, origin: &str) -> Result<Config, ConfigError> {
    let ctx = Ctx { text, origin };
    let server = server(&ctx, raw.server)?;
    let clusters = clusters(&ctx, raw.cluster)?;
    let routes = routes(
        &ctx,
        raw.route,
        &clusters,
        &server.defaults,
        raw.llm.is_some(),
    )?;
    let llm = match raw.llm {
        None => None,
        Some(section) => Some(llm_section(&ctx, section)?),
    };
    Ok(Config {
        server,
        clusters,
        routes,
        llm,
    })
}

/// `[llm]`: the catalogue's own validation, with each error placed at the key it names.
fn llm_section(
    ctx: &Ctx<'_>,
    raw: Spanned<headwater_llm::LlmConfig>,
) -> Result<LlmSection, ConfigError> {
    let span = raw.span();
    LlmSection::build(raw.get_ref(), |name| std::env::var(name).ok()).map_err(|errors| {
        // The first problem decides the position; the others follow in the reason, so that
        // one `headwater check` shows them all. The text is parsed again once, for the spans.
        let doc = toml::de::DeTable::parse(ctx.text).ok();
        let span_of = |path: &Option<String>| {
            let doc = doc.as_ref()?;
            span_of_path(doc.get_ref(), path.as_deref()?)
        };
        let described = |path: &Option<String>, message: &str| match path {
            Some(p) => format!("{p}: {message}"),
            None => message.to_owned(),
        };
        let (path, first) = &errors[0];
        let at = span_of(path).unwrap_or(span.clone());
        let mut reason = described(path, first);
        for (path, message) in &errors[1..] {
            reason.push_str("\n  also ");
            if let Some(s) = span_of(path) {
                reason.push_str(&format!("line {}: ", ctx.line(&s)));
            }
            reason.push_str(&described(path, message));
        }
        ctx.err(at, reason)
    })
}

/// The span of the value at `path` (`llm.model[2].deployment[0].provider`) in the parsed
/// document `doc`, or of the deepest table on the way that exists (a missing key is reported
/// at its table).
fn span_of_path(doc: &toml::de::DeTable<'_>, path: &str) -> Option<Range<usize>> {
    let mut segments = path.split('.').map(|seg| match seg.split_once('[') {
        Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
        None => (seg, None),
    });
    let (first, mut index) = segments.next()?;
    let mut current = doc.iter().find(|(k, _)| k.get_ref() == first)?.1;
    // Each segment's key, then its array index; a missing step stops at the deepest value.
    loop {
        if let Some(i) = index {
            match current.get_ref().get(i) {
                Some(v) => current = v,
                None => break,
            }
        }
        let Some((name, next_index)) = segments.next() else {
            break;
        };
        match current.get_ref().get(name) {
            Some(v) => {
                current = v;
                index = next_index;
            }
            None => break,
        }
    }
    Some(current.span())
}

fn server(ctx: &Ctx<'_>, raw: RawServer) -> Result<ServerConfig, ConfigError> {
    let listen_span = raw.listen.span();
    let items = OneOrMany::into_items(raw.listen);
    if items.is_empty() {
        return Err(ctx.err(listen_span, "`listen` must name at least one address"));
    }
    let mut listen: Vec<SocketAddr> = Vec::with_capacity(items.len());
    for item in items {
        let addr = item.get_ref().0;
        check_no_overlap(ctx, item.span(), "listen", addr, &listen, || {
            format!("duplicate listen address {addr}")
        })?;
        listen.push(addr);
    }

    let admin = raw
        .admin
        .map(|admin| {
            let addr = admin.get_ref().0;
            check_no_overlap(ctx, admin.span(), "admin", addr, &listen, || {
                format!("admin address {addr} is also a listen address")
            })
            .map(|()| addr)
        })
        .transpose()?;

    let workers = match raw.workers {
        None | Some(Workers::Auto) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(Workers::Count(n)) => n,
    };

    let timeout_defaults = ServerTimeouts::default();
    let t = raw.timeouts;
    let timeouts = ServerTimeouts {
        client_header: t
            .client_header
            .map_or(timeout_defaults.client_header, |d| d.0),
        client_idle: t.client_idle.map_or(timeout_defaults.client_idle, |d| d.0),
        client_body: t.client_body.map_or(timeout_defaults.client_body, |d| d.0),
    };

    let limit_defaults = Limits::default();
    let max_head_bytes = raw
        .limits
        .max_head_bytes
        .map_or(limit_defaults.max_head_bytes, |v| v.get() as usize);
    let max_uri_bytes = match raw.limits.max_uri_bytes {
        Some(v) => {
            let n = v.get_ref().get() as usize;
            if n > max_head_bytes {
                return Err(ctx.err(
                    v.span(),
                    format!(
                        "max_uri_bytes ({n}) must not exceed max_head_bytes ({max_head_bytes})"
                    ),
                ));
            }
            n
        }
        None => limit_defaults.max_uri_bytes.min(max_head_bytes),
    };
    let limits = Limits {
        max_head_bytes,
        max_headers: raw
            .limits
            .max_headers
            .map_or(limit_defaults.max_headers, |v| v.get() as usize),
        max_uri_bytes,
    };

    let fwd_defaults = Forwarded::default();
    let f = raw.forwarded;
    let forwarded = Forwarded {
        via: f.via.unwrap_or(fwd_defaults.via),
        x_forwarded_for: f.x_forwarded_for.unwrap_or(fwd_defaults.x_forwarded_for),
        x_forwarded_proto: f
            .x_forwarded_proto
            .unwrap_or(fwd_defaults.x_forwarded_proto),
        x_forwarded_host: f.x_forwarded_host.unwrap_or(fwd_defaults.x_forwarded_host),
    };

    Ok(ServerConfig {
        listen,
        workers,
        admin,
        access_log: raw.access_log.map(|a| a.0).unwrap_or_default(),
        backlog: raw.backlog.map_or(4096, |v| v.get() as u32),
        io_driver: raw.io_driver.unwrap_or_default(),
        drain_timeout: raw.drain_timeout.map_or(Duration::from_secs(30), |d| d.0),
        max_connections_per_shard: raw
            .max_connections_per_shard
            .map_or(65536, |v| v.get() as usize),
        timeouts,
        limits,
        forwarded,
        defaults: route_timeouts(raw.upstream_timeouts, &RouteTimeouts::default()),
    })
}

/// Whether two listeners would take the same connections: same port (not 0), same address
/// family, and the same IP or either one a wildcard. `0.0.0.0:80` and `[::]:80` do not
/// overlap (IPv6 sockets are bound v6-only).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Errors at `span` when `addr`, a `what` address, overlaps an address of `listen`; `same` gives
/// the reason when it is one of them.
fn check_no_overlap(
    ctx: &Ctx<'_>,
    span: Range<usize>,
    what: &str,
    addr: SocketAddr,
    listen: &[SocketAddr],
    same: impl FnOnce() -> String,
) -> Result<(), ConfigError> {
    match listen.iter().find(|other| overlaps(addr, **other)) {
        None => Ok(()),
        Some(other) if *other == addr => Err(ctx.err(span, same())),
        Some(other) => Err(ctx.err(
            span,
            format!("{what} address {addr} overlaps listen address {other}"),
        )),
    }
}

/// `raw` merged over `base`.
fn route_timeouts(raw: RawRouteTimeouts, base: &RouteTimeouts) -> RouteTimeouts {
    RouteTimeouts {
        connect: raw.connect.map_or(base.connect, |d| d.0),
        response_header: raw.response_header.map_or(base.response_header, |d| d.0),
        upstream_idle: raw.upstream_idle.map_or(base.upstream_idle, |d| d.0),
        total: raw.total.map(|d| d.0).or(base.total),
    }
}

fn clusters(ctx: &Ctx<'_>, raw: Vec<RawCluster>) -> Result<Vec<ClusterConfig>, ConfigError> {
    let mut clusters: Vec<ClusterConfig> = Vec::with_capacity(raw.len());
    let mut name_spans: Vec<Range<usize>> = Vec::with_capacity(raw.len());
    for cluster in raw {
        let name_span = cluster.name.span();
        let name = cluster.name.into_inner().0;
        if let Some(first) = clusters.iter().position(|c| c.name == name) {
            return Err(ctx.err(
                name_span,
                format!(
                    "duplicate cluster name \"{name}\" (first defined on line {})",
                    ctx.line(&name_spans[first])
                ),
            ));
        }

        let endpoints_span = cluster.endpoints.span();
        let raw_endpoints = cluster.endpoints.into_inner();
        if raw_endpoints.is_empty() {
            return Err(ctx.err(
                endpoints_span,
                format!("cluster \"{name}\" has no endpoints"),
            ));
        }
        let mut endpoints: Vec<EndpointConfig> = Vec::with_capacity(raw_endpoints.len());
        for endpoint in raw_endpoints {
            let span = endpoint.address.span();
            let mut resolved = resolve_endpoint(endpoint.address.get_ref())
                .map_err(|reason| ctx.err(span.clone(), reason))?;
            resolved.weight = endpoint.weight.map_or(1, |w| w.get() as u32);
            resolved.priority = endpoint.priority.map_or(0, |p| p.get() as u8);
            if endpoints.iter().any(|e| e.address == resolved.address) {
                return Err(ctx.err(
                    span,
                    format!(
                        "duplicate endpoint {} in cluster \"{name}\"",
                        resolved.address
                    ),
                ));
            }
            endpoints.push(resolved);
        }

        let pool_defaults = PoolConfig::default();
        let pool = PoolConfig {
            max_idle_per_endpoint: cluster
                .pool
                .max_idle_per_endpoint
                .map_or(pool_defaults.max_idle_per_endpoint, |v| v.get() as usize),
            idle_timeout: cluster
                .pool
                .idle_timeout
                .map_or(pool_defaults.idle_timeout, |d| d.0),
            max_lifetime: cluster.pool.max_lifetime.map(|d| d.0),
        };

        let balancer = cluster.balancer.map_or_else(Default::default, |b| b.0);
        let hash_key = match cluster.hash_key {
            Some(key) => {
                if balancer != headwater_balancer::Algorithm::Maglev {
                    return Err(ctx.err(
                        key.span(),
                        "`hash_key` is only used by `balancer = \"maglev\"`",
                    ));
                }
                key.into_inner().0
            }
            None => HashKey::default(),
        };
        let health_check = cluster
            .health
            .map(|raw| health_check(ctx, raw))
            .transpose()?;
        let outlier = match cluster.outlier {
            Some(raw) => outlier(ctx, raw)?,
            None => Some(OutlierConfig::default()),
        };
        let budget_defaults = RetryBudgetConfig::default();
        let retry_budget = cluster
            .retry_budget
            .map_or(budget_defaults, |b| RetryBudgetConfig {
                percent: b
                    .percent
                    .map_or(budget_defaults.percent, |v| v.get() as u32),
                min_concurrent: b
                    .min_concurrent
                    .map_or(budget_defaults.min_concurrent, |v| v.get() as u32),
                burst: b.burst.map_or(budget_defaults.burst, |v| v.get() as u32),
            });

        clusters.push(ClusterConfig {
            name,
            endpoints,
            pool,
            balancer,
            hash_key,
            panic_threshold: cluster.panic_threshold.map_or(50, |v| v.get() as u8),
            slow_start: cluster.slow_start.map(|d| d.0),
            health_check,
            outlier,
            breaker: cluster.breaker.map(breaker),
            endpoint_breaker: cluster.endpoint_breaker.map(breaker),
            retry_budget,
        });
        name_spans.push(name_span);
    }
    Ok(clusters)
}

/// `"ip:port"` as is, or `"name:port"` resolved now (first address).
fn resolve_endpoint(text: &str) -> Result<EndpointConfig, String> {
    let form = || {
        format!(
            "invalid endpoint address {text:?}: expected ip:port or name:port, e.g. \"10.0.0.1:8000\" or \"app.internal:8000\""
        )
    };
    if let Ok(address) = text.parse::<SocketAddr>() {
        if address.port() == 0 {
            return Err(format!("invalid endpoint address {text:?}: port 0"));
        }
        if address.ip().is_unspecified() {
            return Err(format!(
                "invalid endpoint address {text:?}: {} is not a destination",
                address.ip()
            ));
        }
        return Ok(EndpointConfig {
            address,
            host: None,
            weight: 1,
            priority: 0,
        });
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(form)?;
    if host.contains(':') || host.starts_with('[') {
        return Err(format!(
            "invalid endpoint address {text:?}: IPv6 addresses need brackets, e.g. \"[::1]:8000\""
        ));
    }
    if host.is_empty()
        || host.split('.').any(str::is_empty)
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(form());
    }
    let port: u16 = match port.parse() {
        Ok(0) | Err(_) => {
            return Err(format!(
                "invalid endpoint address {text:?}: port must be 1 to 65535"
            ))
        }
        Ok(port) => port,
    };
    let address = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve endpoint host \"{host}\": {e}"))?
        .next()
        .ok_or_else(|| format!("endpoint host \"{host}\" resolved to no addresses"))?;
    Ok(EndpointConfig {
        address,
        host: Some(host.to_owned()),
        weight: 1,
        priority: 0,
    })
}

fn routes(
    ctx: &Ctx<'_>,
    raw: Vec<Spanned<RawRoute>>,
    clusters: &[ClusterConfig],
    defaults: &RouteTimeouts,
    has_llm: bool,
) -> Result<Vec<RouteConfig>, ConfigError> {
    let mut routes: Vec<RouteConfig> = Vec::with_capacity(raw.len());
    let mut name_spans: Vec<Range<usize>> = Vec::with_capacity(raw.len());
    for (index, route) in raw.into_iter().enumerate() {
        let route_span = route.span();
        let route = route.into_inner();

        let (name, name_span, explicit) = match route.name {
            Some(name) => (name.get_ref().0.clone(), name.span(), true),
            None => (format!("route-{index}"), route_span.clone(), false),
        };
        if let Some(first) = routes.iter().position(|r| r.name == name) {
            let first_line = ctx.line(&name_spans[first]);
            let reason = if explicit {
                format!("duplicate route name \"{name}\" (first used on line {first_line})")
            } else {
                format!(
                    "this route has no name and its default name \"{name}\" is taken by the route on line {first_line}; give it a `name`"
                )
            };
            return Err(ctx.err(name_span, reason));
        }

        let matcher = route_match(ctx, route.matcher)?;

        let llm = route.llm.as_ref().is_some_and(|l| *l.get_ref());
        let target = match (&route.cluster, llm) {
            (Some(_), true) => {
                return Err(ctx.err(
                    route_span.clone(),
                    "a route has either `cluster = \"name\"` or `llm = true`, not both",
                ))
            }
            (None, false) => {
                return Err(ctx.err(
                    route.llm.as_ref().map_or(route_span.clone(), |l| l.span()),
                    "missing `cluster = \"name\"` (or `llm = true` for an LLM gateway route)",
                ))
            }
            (None, true) => {
                if !has_llm {
                    return Err(ctx.err(
                        route.llm.as_ref().map_or(route_span.clone(), |l| l.span()),
                        "`llm = true` needs an `[llm]` section with at least one `[[llm.model]]`",
                    ));
                }
                // With none of these set, the proxy settings below resolve to their defaults.
                let proxy_only = [
                    ("rewrite", route.rewrite.is_some()),
                    ("retry", route.retry.is_some()),
                    ("fallback", route.fallback.is_some()),
                    ("queue", route.queue.is_some()),
                    ("request_headers", !route.request_headers.is_empty()),
                    ("response_headers", !route.response_headers.is_empty()),
                    ("timeouts", !route.timeouts.is_empty()),
                ];
                if let Some((key, _)) = proxy_only.iter().find(|(_, set)| *set) {
                    return Err(ctx.err(
                        route_span.clone(),
                        format!(
                            "`{key}` is for proxy routes; an `llm = true` route is set up in `[llm]` (timeouts in `[llm.upstream]`, retries in `[llm.failover]`)"
                        ),
                    ));
                }
                RouteTarget::Llm
            }
            (Some(cluster_name), false) => {
                let Some(cluster) = clusters
                    .iter()
                    .position(|c| &c.name == cluster_name.get_ref())
                else {
                    let known = if clusters.is_empty() {
                        "no clusters are defined".to_owned()
                    } else {
                        let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
                        format!("defined clusters: {}", names.join(", "))
                    };
                    return Err(ctx.err(
                        cluster_name.span(),
                        format!("unknown cluster \"{}\" ({known})", cluster_name.get_ref()),
                    ));
                };
                RouteTarget::Cluster(cluster)
            }
        };

        let rewrite_prefix = match route.rewrite {
            Some(rewrite) => {
                if !matches!(matcher.path, Some(PathMatch::Prefix(_))) {
                    return Err(ctx.err(
                        rewrite.span(),
                        "`rewrite.path_prefix` needs `match.path_prefix`: it replaces the matched prefix",
                    ));
                }
                Some(rewrite.into_inner().path_prefix.0)
            }
            None => None,
        };

        let retry = match route.retry {
            Some(raw) => retry(ctx, raw)?,
            None => RetryConfig::default(),
        };
        let fallback = match route.fallback {
            Some(name) => match clusters.iter().position(|c| &c.name == name.get_ref()) {
                Some(i) if target == RouteTarget::Cluster(i) => {
                    return Err(ctx.err(
                        name.span(),
                        format!(
                            "fallback cluster \"{}\" is the route's own cluster",
                            name.get_ref()
                        ),
                    ))
                }
                Some(i) => Some(i),
                None => {
                    return Err(ctx.err(
                        name.span(),
                        format!("unknown fallback cluster \"{}\"", name.get_ref()),
                    ))
                }
            },
            None => None,
        };

        routes.push(RouteConfig {
            name,
            retry,
            fallback,
            queue: route.queue.map(|q| q.timeout.0),
            matcher,
            target,
            timeouts: route_timeouts(route.timeouts, defaults),
            request_headers: header_edits(route.request_headers),
            response_headers: header_edits(route.response_headers),
            rewrite_prefix,
        });
        name_spans.push(name_span);
    }
    Ok(routes)
}

fn route_match(ctx: &Ctx<'_>, raw: RawMatch) -> Result<RouteMatch, ConfigError> {
    let path = match (raw.path, raw.path_prefix) {
        (Some(exact), Some(prefix)) => {
            let later = exact.span().start.max(prefix.span().start);
            return Err(ctx.err(
                later..later,
                "`path` and `path_prefix` cannot both be set; use one of them",
            ));
        }
        (Some(exact), None) => Some(PathMatch::Exact(exact.into_inner().0)),
        (None, Some(prefix)) => Some(PathMatch::Prefix(prefix.into_inner().0)),
        (None, None) => None,
    };

    let mut methods: Vec<http::Method> = Vec::new();
    if let Some(method) = raw.method {
        let span = method.span();
        let items = OneOrMany::into_items(method);
        if items.is_empty() {
            return Err(ctx.err(
                span,
                "`method` must not be empty; omit it to match any method",
            ));
        }
        for item in items {
            let method = item.into_inner().0;
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
    }

    let headers = raw
        .headers
        .unwrap_or_default()
        .into_iter()
        .map(|h| HeaderMatch {
            name: h.name.0,
            value: h.value.map(|v| v.0),
        })
        .collect();

    Ok(RouteMatch {
        host: raw.host.map(|h| h.0),
        path,
        methods,
        headers,
    })
}

fn header_edits(raw: RawHeaderEdits) -> HeaderEdits {
    let add = raw.add.map(|a| a.0).unwrap_or_default();
    let mut remove: Vec<http::HeaderName> = Vec::new();
    for name in raw.remove.unwrap_or_default() {
        if !remove.contains(&name.0) {
            remove.push(name.0);
        }
    }
    HeaderEdits { add, remove }
}

fn health_check(ctx: &Ctx<'_>, raw: Spanned<RawHealthCheck>) -> Result<HealthCheck, ConfigError> {
    let span = raw.span();
    let raw = raw.into_inner();
    let http = match &raw.kind {
        None => true,
        Some(kind) => match kind.get_ref().as_str() {
            "http" => true,
            "tcp" => false,
            other => {
                return Err(ctx.err(
                    kind.span(),
                    format!("unknown health check type {other:?}: expected \"http\" or \"tcp\""),
                ))
            }
        },
    };
    if !http
        && (raw.path.is_some()
            || raw.method.is_some()
            || raw.host.is_some()
            || raw.expect_status.is_some()
            || raw.body_contains.is_some())
    {
        return Err(ctx.err(
            span,
            "a `type = \"tcp\"` health check only connects: `path`, `method`, `host`, `expect_status` and `body_contains` need `type = \"http\"`",
        ));
    }
    let expect_status =
        match raw.expect_status {
            None => (200, 399),
            Some(value) => {
                let span = value.span();
                let items = OneOrMany::into_items(value);
                match items.as_slice() {
                    [one] => (one.get_ref().get() as u16, one.get_ref().get() as u16),
                    [lo, hi] if lo.get_ref().get() <= hi.get_ref().get() => {
                        (lo.get_ref().get() as u16, hi.get_ref().get() as u16)
                    }
                    _ => return Err(ctx.err(
                        span,
                        "expect_status must be a status (200) or an inclusive range [low, high]",
                    )),
                }
            }
        };
    let interval = raw.interval.map_or(Duration::from_secs(5), |d| d.0);
    let timeout = raw.timeout.map_or(Duration::from_secs(1), |d| d.0);
    if timeout >= interval {
        return Err(ctx.err(
            span,
            format!(
                "health check timeout ({timeout:?}) must be shorter than its interval ({interval:?})"
            ),
        ));
    }
    if let Some(host) = &raw.host {
        if host.is_empty() || http::HeaderValue::from_str(host).is_err() {
            return Err(ctx.err(span, format!("invalid health check host {host:?}")));
        }
    }
    Ok(HealthCheck {
        http,
        method: raw.method.map_or(http::Method::GET, |m| m.0),
        path: raw.path.map_or_else(|| "/".to_owned(), |p| p.0),
        host: raw.host,
        expect_status,
        body_contains: raw.body_contains.filter(|s| !s.is_empty()),
        interval,
        unhealthy_interval: raw.unhealthy_interval.map_or(interval, |d| d.0),
        jitter: raw.jitter.map_or(Duration::ZERO, |d| d.0),
        timeout,
        rise: raw.rise.map_or(2, |v| v.get() as u32),
        fall: raw.fall.map_or(3, |v| v.get() as u32),
    })
}

fn outlier(ctx: &Ctx<'_>, raw: RawOutlier) -> Result<Option<OutlierConfig>, ConfigError> {
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    let d = OutlierConfig::default();
    let factor = |value: Option<Spanned<f64>>, default: f64| -> Result<f64, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) if v.get_ref().is_finite() && (0.0..=100.0).contains(v.get_ref()) => {
                Ok(*v.get_ref())
            }
            Some(v) => Err(ctx.err(v.span(), "must be a number from 0 to 100 (0 turns it off)")),
        }
    };
    let base_ejection = raw.base_ejection.map_or(d.base_ejection, |v| v.0);
    let max_ejection = not_below(
        ctx,
        raw.max_ejection,
        d.max_ejection,
        base_ejection,
        "max_ejection must not be shorter than base_ejection",
    )?;
    Ok(Some(OutlierConfig {
        consecutive_5xx: raw
            .consecutive_5xx
            .map_or(d.consecutive_5xx, |v| v.get() as u32),
        consecutive_gateway_failures: raw
            .consecutive_gateway_failures
            .map_or(d.consecutive_gateway_failures, |v| v.get() as u32),
        success_rate_stdev_factor: factor(
            raw.success_rate_stdev_factor,
            d.success_rate_stdev_factor,
        )?,
        success_rate_min_hosts: raw
            .success_rate_min_hosts
            .map_or(d.success_rate_min_hosts, |v| v.get() as u32),
        success_rate_request_volume: raw
            .success_rate_request_volume
            .map_or(d.success_rate_request_volume, |v| v.get() as u64),
        latency_factor: factor(raw.latency_factor, d.latency_factor)?,
        latency_min: raw.latency_min.map_or(d.latency_min, |v| v.0),
        latency_min_hosts: raw
            .latency_min_hosts
            .map_or(d.latency_min_hosts, |v| v.get() as u32),
        latency_request_volume: raw
            .latency_request_volume
            .map_or(d.latency_request_volume, |v| v.get() as u64),
        interval: raw.interval.map_or(d.interval, |v| v.0),
        base_ejection,
        max_ejection,
        jitter: raw.jitter.map_or(d.jitter, |v| v.0),
        max_ejection_percent: raw
            .max_ejection_percent
            .map_or(d.max_ejection_percent, |v| v.get() as u8),
    }))
}

fn breaker(raw: RawBreaker) -> BreakerConfig {
    let limit = |v: Option<super::raw::Int<1, 10_000_000>>| v.map(|v| v.get() as u32);
    BreakerConfig {
        max_connections: limit(raw.max_connections),
        max_pending: limit(raw.max_pending),
        max_requests: limit(raw.max_requests),
        max_retries: raw.max_retries.map(|v| v.get() as u32),
        failure_threshold: raw.failure_threshold.map(|v| v.get() as u32),
        open_for: raw.open_for.map_or(Duration::from_secs(5), |d| d.0),
    }
}

fn retry(ctx: &Ctx<'_>, raw: RawRetry) -> Result<RetryConfig, ConfigError> {
    let d = RetryConfig::default();
    let on = match raw.on {
        None => d.on,
        Some(list) => {
            let names: Vec<&str> = list.get_ref().iter().map(String::as_str).collect();
            headwater_health::retry::RetryOn::parse(&names)
                .map_err(|reason| ctx.err(list.span(), reason))?
        }
    };
    let backoff_base = raw.backoff_base.map_or(d.backoff_base, |v| v.0);
    let backoff_max = not_below(
        ctx,
        raw.backoff_max,
        d.backoff_max,
        backoff_base,
        "backoff_max must not be shorter than backoff_base",
    )?;
    Ok(RetryConfig {
        attempts: raw.attempts.map_or(d.attempts, |v| v.get() as u32),
        on,
        backoff_base,
        backoff_max,
        per_try_timeout: raw.per_try_timeout.map(|v| v.0),
        non_idempotent: raw.non_idempotent.unwrap_or(false),
        hedge_after: raw.hedge_after.map(|v| v.0),
    })
}

/// A duration that must not be below `floor` (a maximum paired with its base): the value given,
/// or `default` raised to `floor` when absent.
fn not_below<D: DurationLeaf>(
    ctx: &Ctx<'_>,
    value: Option<Spanned<D>>,
    default: Duration,
    floor: Duration,
    reason: &str,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default.max(floor)),
        Some(v) if v.get_ref().duration() >= floor => Ok(v.get_ref().duration()),
        Some(v) => Err(ctx.err(v.span(), reason)),
    }
}

/// The duration leaves of the raw config.
trait DurationLeaf {
    fn duration(&self) -> Duration;
}

impl DurationLeaf for super::raw::Dur {
    fn duration(&self) -> Duration {
        self.0
    }
}

impl DurationLeaf for super::raw::PosDur {
    fn duration(&self) -> Duration {
        self.0
    }
}
