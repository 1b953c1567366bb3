//! What one attempt against an upstream endpoint came to, as the engine reports it.

use std::time::Duration;

/// What one attempt against an upstream endpoint came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response head arrived with this status, after `latency`.
    Response {
        /// HTTP status code.
        status: u16,
        /// Time from sending the request to the response head.
        latency: Duration,
    },
    /// TCP connect was refused or failed.
    ConnectFailed,
    /// TCP connect did not complete in time.
    ConnectTimeout,
    /// The connection was reset or closed before a full response head.
    Reset,
    /// No response head within the response-header timeout.
    Timeout,
    /// The upstream sent bytes that are not valid HTTP.
    Protocol,
}

impl Outcome {
    /// A failure of the gateway-to-upstream path (Envoy's "gateway failure"): connect errors,
    /// resets, timeouts, garbage. Distinct from an upstream that answers with a 5xx.
    pub fn is_gateway_failure(&self) -> bool {
        !matches!(self, Outcome::Response { .. })
    }

    /// A 5xx answer from the upstream.
    pub fn is_5xx(&self) -> bool {
        matches!(self, Outcome::Response { status, .. } if *status >= 500)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let ok = Outcome::Response {
            status: 200,
            latency: Duration::ZERO,
        };
        let err = Outcome::Response {
            status: 503,
            latency: Duration::ZERO,
        };
        assert!(!ok.is_gateway_failure() && !ok.is_5xx());
        assert!(!err.is_gateway_failure() && err.is_5xx());
        for o in [
            Outcome::ConnectFailed,
            Outcome::ConnectTimeout,
            Outcome::Reset,
            Outcome::Timeout,
            Outcome::Protocol,
        ] {
            assert!(o.is_gateway_failure() && !o.is_5xx());
        }
    }
}
