//! From the raw file to [`Config`]: defaults, checks that span several values, references
//! between sections, and endpoint name resolution. Every error points at a span of the file.

use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::raw::{
    OneOrMany, RawCluster, RawConfig, RawHeaderEdits, RawMatch, RawRoute, RawRouteTimeouts,
    RawServer, Workers,
};
use super::{
    line_column, ClusterConfig, Config, ConfigError, EndpointConfig, Forwarded, HeaderEdits,
    HeaderMatch, Limits, PathMatch, PoolConfig, RouteConfig, RouteMatch, RouteTimeouts,
    ServerConfig, ServerTimeouts,
};

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
    let routes = routes(&ctx, raw.route, &clusters, &server.defaults)?;
    Ok(Config {
        server,
        clusters,
        routes,
    })
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
        if let Some(other) = listen.iter().find(|other| overlaps(addr, **other)) {
            let reason = if *other == addr {
                format!("duplicate listen address {addr}")
            } else {
                format!("listen address {addr} overlaps listen address {other}")
            };
            return Err(ctx.err(item.span(), reason));
        }
        listen.push(addr);
    }

    let admin = match raw.admin {
        Some(admin) => {
            let addr = admin.get_ref().0;
            if let Some(other) = listen.iter().find(|other| overlaps(addr, **other)) {
                let reason = if *other == addr {
                    format!("admin address {addr} is also a listen address")
                } else {
                    format!("admin address {addr} overlaps listen address {other}")
                };
                return Err(ctx.err(admin.span(), reason));
            }
            Some(addr)
        }
        None => None,
    };

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
            let resolved = resolve_endpoint(endpoint.address.get_ref())
                .map_err(|reason| ctx.err(span.clone(), reason))?;
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

        clusters.push(ClusterConfig {
            name,
            endpoints,
            pool,
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
    })
}

fn routes(
    ctx: &Ctx<'_>,
    raw: Vec<Spanned<RawRoute>>,
    clusters: &[ClusterConfig],
    defaults: &RouteTimeouts,
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

        let cluster_name = route.cluster.get_ref();
        let cluster = match clusters.iter().position(|c| &c.name == cluster_name) {
            Some(cluster) => cluster,
            None => {
                let known = if clusters.is_empty() {
                    "no clusters are defined".to_owned()
                } else {
                    let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
                    format!("defined clusters: {}", names.join(", "))
                };
                return Err(ctx.err(
                    route.cluster.span(),
                    format!("unknown cluster \"{cluster_name}\" ({known})"),
                ));
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

        routes.push(RouteConfig {
            name,
            matcher,
            cluster,
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
