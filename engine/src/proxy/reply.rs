//! Responses the gateway writes itself (no route, bad request, upstream failures, timeouts):
//! a JSON body naming what went wrong and where, and an `x-headwater-error` header so a client
//! can tell the gateway's own answer from an upstream's.

use bytes::{BufMut, BytesMut};
use headwater_http1::{encode_response_head, BodyKind, ClientConnection};
use http::{StatusCode, Version};

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
    NoEndpoint,
}

impl Failure {
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
            Failure::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
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
            Failure::NoEndpoint => "no_endpoint",
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
            Failure::NoEndpoint => "the cluster has no endpoint to send to",
        }
    }
}

/// Appends a complete response (head and JSON body) for `failure` to `out`.
pub(crate) fn write_failure(
    failure: Failure,
    route: Option<&str>,
    cluster: Option<&str>,
    version: Version,
    conn: ClientConnection,
    out: &mut BytesMut,
) {
    let status = failure.status();
    let body = serde_json::json!({
        "error": {
            "status": status.as_u16(),
            "code": failure.code(),
            "message": failure.message(),
            "route": route,
            "cluster": cluster,
        }
    });
    let mut body = serde_json::to_vec(&body).unwrap_or_default();
    body.push(b'\n');
    encode_response_head(
        status,
        &[
            ("content-type", b"application/json"),
            ("x-headwater-error", failure.code().as_bytes()),
        ],
        BodyKind::Length(body.len() as u64),
        version,
        conn,
        out,
    );
    out.put_slice(&body);
}
