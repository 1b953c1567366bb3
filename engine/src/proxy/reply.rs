//! Responses the gateway writes itself (no route, bad request, upstream failures, timeouts):
//! a JSON body naming what went wrong and where, and an `x-headwater-error` header so a client
//! can tell the gateway's own answer from an upstream's.

use bytes::{BufMut, BytesMut};
use headwater_http1::{encode_response_head, BodyKind, ClientConnection};
use http::{StatusCode, Version};

use super::upstreams::Unavailable;

/// Why the gateway answered itself. `code()` is the machine-readable name used in the header
/// and the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    BadRequest(headwater_http1::Error),
    NoRoute,
    ConnectMethod,
    ConnectFailed,
    ConnectTimeout,
    UpstreamReset,
    UpstreamTimeout,
    UpstreamProtocol,
    ClientHeaderTimeout,
    ClientBodyTimeout,
    TotalTimeout,
    /// No endpoint of the cluster (or its fallback) can serve: the fast 503.
    NoHealthyUpstream,
    /// A circuit breaker refused the request.
    CircuitOpen,
}

impl Failure {
    /// Whether the failure is on the upstream side (connect, reset, timeout, invalid answer, or
    /// the gateway's own fast 503s), as opposed to the client's request or connection.
    pub fn is_upstream_side(self) -> bool {
        matches!(
            self,
            Failure::ConnectFailed
                | Failure::ConnectTimeout
                | Failure::UpstreamReset
                | Failure::UpstreamTimeout
                | Failure::UpstreamProtocol
                | Failure::NoHealthyUpstream
                | Failure::CircuitOpen
        )
    }

    pub fn status(self) -> StatusCode {
        match self {
            Failure::BadRequest(e) => e.status(),
            Failure::NoRoute => StatusCode::NOT_FOUND,
            Failure::ConnectMethod => StatusCode::NOT_IMPLEMENTED,
            Failure::ConnectFailed | Failure::UpstreamReset | Failure::UpstreamProtocol => {
                StatusCode::BAD_GATEWAY
            }
            Failure::ConnectTimeout | Failure::UpstreamTimeout | Failure::TotalTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Failure::ClientHeaderTimeout | Failure::ClientBodyTimeout => {
                StatusCode::REQUEST_TIMEOUT
            }
            Failure::NoHealthyUpstream | Failure::CircuitOpen => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Failure::BadRequest(_) => "bad_request",
            Failure::NoRoute => "no_route",
            Failure::ConnectMethod => "connect_not_supported",
            Failure::ConnectFailed => "upstream_connect_failed",
            Failure::ConnectTimeout => "upstream_connect_timeout",
            Failure::UpstreamReset => "upstream_reset",
            Failure::UpstreamTimeout => "upstream_response_timeout",
            Failure::UpstreamProtocol => "upstream_protocol_error",
            Failure::ClientHeaderTimeout => "client_header_timeout",
            Failure::ClientBodyTimeout => "client_body_timeout",
            Failure::TotalTimeout => "request_timeout",
            Failure::NoHealthyUpstream => "no_healthy_upstream",
            Failure::CircuitOpen => "circuit_open",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Failure::BadRequest(e) => e.detail(),
            Failure::NoRoute => "no route matches this request",
            Failure::ConnectMethod => "CONNECT tunnelling is not supported by this gateway",
            Failure::ConnectFailed => "could not connect to the upstream",
            Failure::ConnectTimeout => "connecting to the upstream timed out",
            Failure::UpstreamReset => {
                "the upstream closed the connection before a complete response"
            }
            Failure::UpstreamTimeout => "the upstream did not respond in time",
            Failure::UpstreamProtocol => "the upstream sent an invalid HTTP response",
            Failure::ClientHeaderTimeout => "the request head did not arrive in time",
            Failure::ClientBodyTimeout => "the request body stalled",
            Failure::TotalTimeout => "the request exceeded its total time limit",
            Failure::NoHealthyUpstream => "no endpoint of the cluster can serve this request now",
            Failure::CircuitOpen => "the cluster's circuit breaker is open or at its limit",
        }
    }
}

/// Appends a complete response (head and JSON body) for `failure` to `out`. With
/// `unavailable` (a 503 of the gateway's own), its body and `Retry-After` are used.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_failure(
    failure: Failure,
    route: Option<&str>,
    cluster: Option<&str>,
    unavailable: Option<&Unavailable>,
    version: Version,
    conn: ClientConnection,
    out: &mut BytesMut,
) {
    let status = failure.status();
    let mut body = match unavailable {
        Some(u) => {
            let mut body = u.body.clone();
            if let Some(error) = body.get_mut("error").and_then(|e| e.as_object_mut()) {
                error.insert("route".into(), route.into());
            }
            serde_json::to_vec(&body).unwrap_or_default()
        }
        None => serde_json::to_vec(&serde_json::json!({
            "error": {
                "status": status.as_u16(),
                "code": failure.code(),
                "message": failure.message(),
                "route": route,
                "cluster": cluster,
            }
        }))
        .unwrap_or_default(),
    };
    body.push(b'\n');
    let retry_after = unavailable.map(|u| u.retry_after.to_string());
    let mut headers: Vec<(&str, &[u8])> = vec![
        ("content-type", b"application/json"),
        ("x-headwater-error", failure.code().as_bytes()),
    ];
    if let Some(r) = &retry_after {
        headers.push(("retry-after", r.as_bytes()));
    }
    encode_response_head(
        status,
        &headers,
        BodyKind::Length(body.len() as u64),
        version,
        conn,
        out,
    );
    out.put_slice(&body);
}
