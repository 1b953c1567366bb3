//! The file as serde sees it: one struct per TOML table, `deny_unknown_fields` everywhere, every
//! key optional unless the format requires it (defaults are applied in `resolve`).
//!
//! Leaf values validate themselves while being deserialized: an error raised inside a leaf's
//! `Deserialize` gets the span of that value from `toml`, so the message points at it. Values
//! that later checks must point at are wrapped in [`Spanned`].

use std::fmt;
use std::marker::PhantomData;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::{AccessLogTarget, HostMatch, IoDriver, XffMode};

// ---------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub server: RawServer,
    #[serde(default)]
    pub cluster: Vec<RawCluster>,
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
    /// Validated by `headwater_llm::Catalogue::from_config` in `resolve`.
    pub llm: Option<Spanned<headwater_llm::LlmConfig>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub listen: Spanned<OneOrMany<ListenAddr>>,
    pub workers: Option<Workers>,
    pub admin: Option<Spanned<ListenAddr>>,
    pub access_log: Option<AccessLog>,
    pub backlog: Option<Int<1, 65535>>,
    pub io_driver: Option<IoDriver>,
    pub drain_timeout: Option<Dur>,
    pub max_connections_per_shard: Option<Int<1, 10_000_000>>,
    #[serde(default)]
    pub timeouts: RawServerTimeouts,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub forwarded: RawForwarded,
    #[serde(default)]
    pub upstream_timeouts: RawRouteTimeouts,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServerTimeouts {
    pub client_header: Option<PosDur>,
    pub client_idle: Option<PosDur>,
    pub client_body: Option<PosDur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub max_head_bytes: Option<Int<1024, 1_048_576>>,
    pub max_headers: Option<Int<8, 1024>>,
    pub max_uri_bytes: Option<Spanned<Int<256, 1_048_576>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForwarded {
    pub via: Option<bool>,
    pub x_forwarded_for: Option<XffMode>,
    pub x_forwarded_proto: Option<bool>,
    pub x_forwarded_host: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRouteTimeouts {
    pub connect: Option<PosDur>,
    pub response_header: Option<PosDur>,
    pub upstream_idle: Option<PosDur>,
    pub total: Option<PosDur>,
}

impl RawRouteTimeouts {
    pub fn is_empty(&self) -> bool {
        self.connect.is_none()
            && self.response_header.is_none()
            && self.upstream_idle.is_none()
            && self.total.is_none()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub name: Spanned<Name>,
    pub endpoints: Spanned<Vec<RawEndpoint>>,
    #[serde(default)]
    pub pool: RawPool,
    pub balancer: Option<Balancer>,
    pub hash_key: Option<Spanned<HashKeyLeaf>>,
    pub panic_threshold: Option<Int<0, 100>>,
    pub slow_start: Option<PosDur>,
    pub health: Option<Spanned<RawHealthCheck>>,
    pub outlier: Option<RawOutlier>,
    pub breaker: Option<RawBreaker>,
    pub endpoint_breaker: Option<RawBreaker>,
    pub retry_budget: Option<RawRetryBudget>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    pub address: Spanned<String>,
    pub weight: Option<Int<1, 10_000>>,
    pub priority: Option<Int<0, 15>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub max_idle_per_endpoint: Option<Int<0, 65536>>,
    pub idle_timeout: Option<PosDur>,
    pub max_lifetime: Option<PosDur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub name: Option<Spanned<Name>>,
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    pub cluster: Option<Spanned<String>>,
    pub llm: Option<Spanned<bool>>,
    #[serde(default)]
    pub timeouts: RawRouteTimeouts,
    #[serde(default)]
    pub request_headers: RawHeaderEdits,
    #[serde(default)]
    pub response_headers: RawHeaderEdits,
    pub rewrite: Option<Spanned<RawRewrite>>,
    pub retry: Option<RawRetry>,
    pub fallback: Option<Spanned<String>>,
    pub queue: Option<RawQueue>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatch {
    pub host: Option<Host>,
    pub path: Option<Spanned<UriPath>>,
    pub path_prefix: Option<Spanned<UriPath>>,
    pub method: Option<Spanned<OneOrMany<Method>>>,
    pub headers: Option<Vec<RawHeaderMatch>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeaderMatch {
    pub name: HeaderName,
    pub value: Option<HeaderValue>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeaderEdits {
    pub add: Option<HeaderAdds>,
    pub remove: Option<Vec<EditableHeaderName>>,
}

impl RawHeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.add.is_none() && self.remove.is_none()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRewrite {
    pub path_prefix: UriPath,
}

// ---------------------------------------------------------------------------------------------
// Leaf values
// ---------------------------------------------------------------------------------------------

/// Deserializes a string and converts it with `parse`. The conversion runs inside the visitor,
/// that is while `toml` is deserializing this very value, so `toml` places a conversion error
/// at the value (also for elements of arrays and for table keys).
fn from_string<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct StringVisitor<F>(&'static str, F);
    impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for StringVisitor<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.1)(v).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(StringVisitor(expecting, parse))
}

/// Declares a newtype over a value parsed from a string.
macro_rules! string_leaf {
    ($(#[$doc:meta])* $name:ident($inner:ty), $expecting:expr, $parse:expr) => {
        $(#[$doc])*
        pub(super) struct $name(pub $inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                from_string(deserializer, $expecting, $parse).map($name)
            }
        }
    };
}

string_leaf!(
    /// Any duration, including zero.
    Dur(Duration),
    "a duration string such as \"500ms\" or \"1.5s\"",
    super::parse_duration
);

string_leaf!(
    /// A duration greater than zero.
    PosDur(Duration),
    "a duration string such as \"500ms\" or \"1.5s\"",
    |text| match super::parse_duration(text)? {
        d if d.is_zero() => Err(format!("invalid duration {text:?}: must be greater than zero")),
        d => Ok(d),
    }
);

string_leaf!(
    /// A listening address: an IP literal and a port.
    ListenAddr(SocketAddr),
    "an address such as \"127.0.0.1:8080\"",
    parse_listen_addr
);

string_leaf!(
    /// A cluster or route name.
    Name(String),
    "a name",
    parse_name
);

string_leaf!(
    /// `access_log`.
    AccessLog(AccessLogTarget),
    "\"off\", \"stdout\" or a file path",
    parse_access_log
);

string_leaf!(
    /// `match.host`.
    Host(HostMatch),
    "a host name such as \"api.example.com\" or \"*.example.com\"",
    parse_host
);

string_leaf!(
    /// A path in a match or rewrite.
    UriPath(String),
    "a path starting with '/'",
    parse_path
);

string_leaf!(
    /// An HTTP method.
    Method(http::Method),
    "an HTTP method such as \"GET\"",
    parse_method
);

string_leaf!(
    /// A header name.
    HeaderName(http::HeaderName),
    "a header name",
    parse_header_name
);

string_leaf!(
    /// A header name that header edits may touch.
    EditableHeaderName(http::HeaderName),
    "a header name",
    |text| {
        let name = parse_header_name(text)?;
        check_editable(&name)?;
        Ok(name)
    }
);

string_leaf!(
    /// A header value.
    HeaderValue(http::HeaderValue),
    "a header value string",
    parse_header_value
);

pub(super) fn parse_name(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("name must not be empty".to_owned());
    }
    if text.len() > 128 {
        return Err(format!("name {text:?} is longer than 128 characters"));
    }
    if let Some(bad) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "invalid name {text:?}: {bad:?} is not allowed; use letters, digits, '_', '.' and '-'"
        ));
    }
    Ok(text.to_owned())
}

fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        let hint = if text.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains(':') && port.parse::<u16>().is_ok()
        }) {
            "; host names are not accepted here, use an IP address"
        } else {
            ""
        };
        format!(
            "invalid address {text:?}: expected IP:port, e.g. \"0.0.0.0:8080\" or \"[::]:8080\"{hint}"
        )
    })
}

fn parse_access_log(text: &str) -> Result<AccessLogTarget, String> {
    if text.is_empty() {
        return Err("access_log must not be empty; use \"off\", \"stdout\" or a file path".into());
    }
    if text.eq_ignore_ascii_case("off") {
        Ok(AccessLogTarget::Off)
    } else if text.eq_ignore_ascii_case("stdout") {
        Ok(AccessLogTarget::Stdout)
    } else if text.eq_ignore_ascii_case("stderr") {
        Err("access_log cannot be \"stderr\"; use \"off\", \"stdout\" or a file path".into())
    } else {
        Ok(AccessLogTarget::File(PathBuf::from(text)))
    }
}

fn parse_host(text: &str) -> Result<HostMatch, String> {
    let lower = text.to_ascii_lowercase();
    if lower.is_empty() {
        return Err("host must not be empty; omit `host` to match any host".into());
    }
    if lower == "*" {
        return Err("host \"*\" matches every host; omit `host` instead".into());
    }
    let (wildcard, rest) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    if rest.contains('*') {
        return Err(format!(
            "invalid host {text:?}: a wildcard is only allowed as the first label, as in \"*.example.com\""
        ));
    }
    let rest = rest.strip_suffix('.').unwrap_or(rest);
    if let Some(inner) = rest.strip_prefix('[') {
        let valid = inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok());
        if !valid || wildcard {
            return Err(format!(
                "invalid host {text:?}: expected an IPv6 address in brackets, e.g. \"[::1]\""
            ));
        }
        return Ok(HostMatch::Exact(rest.to_owned()));
    }
    if rest.contains(':') {
        return Err(format!(
            "invalid host {text:?}: must not include a port (the Host header's port is ignored)"
        ));
    }
    if rest.is_empty() || rest.split('.').any(str::is_empty) {
        return Err(format!("invalid host {text:?}: empty label"));
    }
    if let Some(bad) = rest
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!("invalid host {text:?}: {bad:?} is not allowed"));
    }
    Ok(if wildcard {
        HostMatch::Suffix(format!(".{rest}"))
    } else {
        HostMatch::Exact(rest.to_owned())
    })
}

fn parse_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("invalid path {text:?}: must start with '/'"));
    }
    if let Some(bad) = text
        .chars()
        .find(|c| !c.is_ascii_graphic() || *c == '?' || *c == '#')
    {
        let why = match bad {
            '?' => "the query is not part of the path".to_owned(),
            '#' => "the fragment is not part of the path".to_owned(),
            c => format!("{c:?} is not allowed (paths are matched as sent, percent-encoded)"),
        };
        return Err(format!("invalid path {text:?}: {why}"));
    }
    Ok(text.to_owned())
}

fn parse_method(text: &str) -> Result<http::Method, String> {
    let method = http::Method::from_bytes(text.as_bytes())
        .map_err(|_| format!("invalid method {text:?}: expected a token such as \"GET\""))?;
    if text.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!(
            "invalid method {text:?}: methods are case-sensitive; did you mean {:?}?",
            text.to_ascii_uppercase()
        ));
    }
    Ok(method)
}

fn parse_header_name(text: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(text.as_bytes()).map_err(|_| {
        format!(
            "invalid header name {text:?}: use letters, digits and !#$%&'*+-.^_`|~ (no spaces or ':')"
        )
    })
}

/// Headers that frame the message or manage the connection are the proxy's, not the config's.
fn check_editable(name: &http::HeaderName) -> Result<(), String> {
    const MANAGED: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
    ];
    if MANAGED.contains(&name.as_str()) {
        return Err(format!(
            "header `{name}` is managed by the proxy and cannot be added or removed"
        ));
    }
    Ok(())
}

fn parse_header_value(text: &str) -> Result<http::HeaderValue, String> {
    if text.starts_with([' ', '\t']) || text.ends_with([' ', '\t']) {
        return Err(format!(
            "invalid header value {text:?}: must not start or end with whitespace"
        ));
    }
    http::HeaderValue::from_str(text).map_err(|_| {
        format!("invalid header value {text:?}: only visible ASCII characters, spaces and tabs are allowed")
    })
}

/// A bounded integer (`backlog`, `limits.*`, ...): within `MIN..=MAX`.
pub(super) struct Int<const MIN: i64, const MAX: i64>(pub i64);

impl<const MIN: i64, const MAX: i64> Int<MIN, MAX> {
    pub fn get(&self) -> i64 {
        self.0
    }
}

impl<'de, const MIN: i64, const MAX: i64> Deserialize<'de> for Int<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor<const MIN: i64, const MAX: i64>;
        impl<const MIN: i64, const MAX: i64> Visitor<'_> for IntVisitor<MIN, MAX> {
            type Value = i64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an integer from {MIN} to {MAX}")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
                self.visit_i128(v.into())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
                self.visit_i128(v.into())
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<i64, E> {
                if (i128::from(MIN)..=i128::from(MAX)).contains(&v) {
                    Ok(v as i64)
                } else {
                    Err(E::custom(format!(
                        "{v} is out of range: must be from {MIN} to {MAX}"
                    )))
                }
            }
        }
        deserializer
            .deserialize_i64(IntVisitor::<MIN, MAX>)
            .map(Int)
    }
}

/// `workers = "auto"` or a number.
pub(super) enum Workers {
    Auto,
    Count(usize),
}

pub(super) const MAX_WORKERS: i64 = 1024;

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WorkersVisitor;
        impl Visitor<'_> for WorkersVisitor {
            type Value = Workers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "\"auto\" or a number from 1 to {MAX_WORKERS}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Workers, E> {
                if v == "auto" {
                    Ok(Workers::Auto)
                } else {
                    Err(E::custom(format!(
                        "workers must be \"auto\" or a number from 1 to {MAX_WORKERS}, got {v:?}"
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Workers, E> {
                if (1..=MAX_WORKERS).contains(&v) {
                    Ok(Workers::Count(v as usize))
                } else {
                    Err(E::custom(format!(
                        "workers must be \"auto\" or a number from 1 to {MAX_WORKERS}, got {v}"
                    )))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Workers, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
        }
        deserializer.deserialize_any(WorkersVisitor)
    }
}

/// A string or an array of strings, each converted to `T`.
pub(super) enum OneOrMany<T> {
    One(T),
    Many(Vec<Spanned<T>>),
}

impl<T> OneOrMany<T> {
    /// The items with their spans; a single item gets the span of the whole value.
    pub fn into_items(value: Spanned<Self>) -> Vec<Spanned<T>> {
        let span = value.span();
        match value.into_inner() {
            OneOrMany::One(item) => vec![Spanned::new(span, item)],
            OneOrMany::Many(items) => items,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrManyVisitor<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(OneOrMany::One)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(OneOrMany::One)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(OneOrMany::One)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<T>>()? {
                    items.push(item);
                }
                Ok(OneOrMany::Many(items))
            }
        }
        deserializer.deserialize_any(OneOrManyVisitor(PhantomData))
    }
}

/// `add = { "name" = "value", ... }`: names and values validated as they are read, so an
/// error points at the offending key or value.
pub(super) struct HeaderAdds(pub Vec<(http::HeaderName, http::HeaderValue)>);

impl<'de> Deserialize<'de> for HeaderAdds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AddsVisitor;
        impl<'de> Visitor<'de> for AddsVisitor {
            type Value = HeaderAdds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a table of header names to values, e.g. { \"x-from\" = \"headwater\" }",
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderAdds, A::Error> {
                let mut adds = Vec::new();
                while let Some(EditableHeaderName(name)) = map.next_key()? {
                    let HeaderValue(value) = map.next_value()?;
                    adds.push((name, value));
                }
                Ok(HeaderAdds(adds))
            }
        }
        deserializer.deserialize_map(AddsVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Resilience: balancer, health checks, outlier detection, breakers, retries
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    pub path: Option<UriPath>,
    pub method: Option<Method>,
    pub host: Option<String>,
    pub expect_status: Option<Spanned<OneOrMany<Int<100, 599>>>>,
    pub body_contains: Option<String>,
    pub interval: Option<PosDur>,
    pub unhealthy_interval: Option<PosDur>,
    pub jitter: Option<Dur>,
    pub timeout: Option<PosDur>,
    pub rise: Option<Int<1, 100>>,
    pub fall: Option<Int<1, 100>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutlier {
    pub enabled: Option<bool>,
    pub consecutive_5xx: Option<Int<0, 1_000_000>>,
    pub consecutive_gateway_failures: Option<Int<0, 1_000_000>>,
    pub success_rate_stdev_factor: Option<Spanned<f64>>,
    pub success_rate_min_hosts: Option<Int<1, 100_000>>,
    pub success_rate_request_volume: Option<Int<1, 1_000_000_000>>,
    pub latency_factor: Option<Spanned<f64>>,
    pub latency_min: Option<Dur>,
    pub latency_min_hosts: Option<Int<1, 100_000>>,
    pub latency_request_volume: Option<Int<1, 1_000_000_000>>,
    pub interval: Option<PosDur>,
    pub base_ejection: Option<PosDur>,
    pub max_ejection: Option<Spanned<PosDur>>,
    pub jitter: Option<Dur>,
    pub max_ejection_percent: Option<Int<0, 100>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreaker {
    pub max_connections: Option<Int<1, 10_000_000>>,
    pub max_pending: Option<Int<1, 10_000_000>>,
    pub max_requests: Option<Int<1, 10_000_000>>,
    pub max_retries: Option<Int<0, 10_000_000>>,
    pub failure_threshold: Option<Int<1, 1_000_000>>,
    pub open_for: Option<PosDur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetryBudget {
    pub percent: Option<Int<0, 100>>,
    pub min_concurrent: Option<Int<0, 1_000_000>>,
    pub burst: Option<Int<0, 1_000_000>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub attempts: Option<Int<1, 10>>,
    pub on: Option<Spanned<Vec<String>>>,
    pub backoff_base: Option<Dur>,
    pub backoff_max: Option<Spanned<Dur>>,
    pub per_try_timeout: Option<PosDur>,
    pub non_idempotent: Option<bool>,
    pub hedge_after: Option<PosDur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    pub timeout: PosDur,
}

string_leaf!(
    /// `balancer = "..."`.
    Balancer(headwater_balancer::Algorithm),
    "\"round-robin\", \"weighted\", \"least-request\", \"peak-ewma\", \"maglev\" or \"random\"",
    |text| text.parse::<headwater_balancer::Algorithm>().map_err(|_| format!(
        "unknown balancer {text:?}: expected \"round-robin\", \"weighted\", \"least-request\", \"peak-ewma\", \"maglev\" or \"random\""
    ))
);

string_leaf!(
    /// `hash_key = "client" | "path" | "header:NAME" | "cookie:NAME"`.
    HashKeyLeaf(super::HashKey),
    "\"client\", \"path\", \"header:NAME\" or \"cookie:NAME\"",
    parse_hash_key
);

fn parse_hash_key(text: &str) -> Result<super::HashKey, String> {
    use super::HashKey;
    match text {
        "client" => return Ok(HashKey::ClientAddress),
        "path" => return Ok(HashKey::Path),
        _ => {}
    }
    if let Some(name) = text.strip_prefix("header:") {
        return parse_header_name(name).map(HashKey::Header);
    }
    if let Some(name) = text.strip_prefix("cookie:") {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"=;,\"".contains(&b))
        {
            return Err(format!("invalid cookie name {name:?} in hash_key"));
        }
        return Ok(HashKey::Cookie(name.to_owned()));
    }
    Err(format!(
        "invalid hash_key {text:?}: expected \"client\", \"path\", \"header:NAME\" or \"cookie:NAME\""
    ))
}
