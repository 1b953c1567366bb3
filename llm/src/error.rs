//! The one error type of the crate: what went wrong ([`ErrorKind`]), where it came from
//! ([`Origin`]), whether trying again can help, and the provider's `Retry-After` when it gave one.
//!
//! Rendering an error in a client's format (status and body) belongs to [`crate::ingress`];
//! reading a provider's error body belongs to [`crate::egress`].

use std::fmt;
use std::time::Duration;

use crate::egress::ProviderKind;

/// What went wrong, normalised across providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or has an invalid value (HTTP 400-class).
    InvalidRequest,
    /// The request uses a feature this gateway or the chosen provider cannot express.
    Unsupported,
    /// The prompt (plus requested output) does not fit the model's context window.
    ContextLengthExceeded,
    /// The request body is larger than the provider accepts (HTTP 413).
    RequestTooLarge,
    /// The provider's content filter refused the prompt or the output.
    ContentFiltered,
    /// The provider rejected the gateway's credentials (HTTP 401).
    Authentication,
    /// The credentials are valid but may not use this resource (HTTP 403).
    PermissionDenied,
    /// The model or deployment does not exist at the provider (HTTP 404).
    NotFound,
    /// Too many requests or tokens for now (HTTP 429).
    RateLimited,
    /// The account's quota or credit is exhausted: waiting will not help.
    QuotaExceeded,
    /// The provider is temporarily overloaded (HTTP 503, Anthropic 529).
    Overloaded,
    /// The provider failed internally (HTTP 5xx).
    ProviderError,
    /// The provider did not answer in time (HTTP 408/504).
    Timeout,
    /// A stream ended or broke before its end marker.
    StreamInterrupted,
    /// The provider's answer could not be understood.
    MalformedResponse,
}

impl ErrorKind {
    /// True when sending the same request again (after `retry_after`, here or on another
    /// deployment) may succeed.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited
                | ErrorKind::Overloaded
                | ErrorKind::ProviderError
                | ErrorKind::Timeout
                | ErrorKind::StreamInterrupted
                | ErrorKind::MalformedResponse
        )
    }

    /// True when the failure belongs to the deployment (its key, its model name, its quota,
    /// its feature set) rather than to the request: another deployment may serve it even
    /// though retrying this one will not.
    pub fn deployment_fault(self) -> bool {
        matches!(
            self,
            ErrorKind::Authentication
                | ErrorKind::PermissionDenied
                | ErrorKind::NotFound
                | ErrorKind::QuotaExceeded
                | ErrorKind::Unsupported
        )
    }

    /// A stable snake_case name, used as the `code` of rendered errors and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::ContextLengthExceeded => "context_length_exceeded",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::ContentFiltered => "content_filter",
            ErrorKind::Authentication => "upstream_authentication",
            ErrorKind::PermissionDenied => "upstream_permission_denied",
            ErrorKind::NotFound => "upstream_not_found",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::ProviderError => "upstream_error",
            ErrorKind::Timeout => "upstream_timeout",
            ErrorKind::StreamInterrupted => "stream_interrupted",
            ErrorKind::MalformedResponse => "malformed_upstream_response",
        }
    }
}

/// Where an error was detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// In the client's request (ingress parsing).
    Client,
    /// Reported by, or read from, this provider.
    Provider(ProviderKind),
    /// In the gateway's own translation.
    Gateway,
}

/// How long a provider asked us to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// Wait this long from when the answer arrived.
    Delay(Duration),
    /// Wait until this Unix time (seconds), from an HTTP-date `Retry-After`.
    At(u64),
}

impl RetryAfter {
    /// Parses a `Retry-After` header value: delta-seconds (RFC 9110 §10.2.3; a fractional
    /// value, as some providers send, is accepted) or an IMF-fixdate HTTP-date.
    pub fn parse(value: &str) -> Option<RetryAfter> {
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        if value.bytes().all(|b| b.is_ascii_digit()) {
            return value
                .parse::<u64>()
                .ok()
                .map(|s| RetryAfter::Delay(Duration::from_secs(s)));
        }
        if let Some(d) = parse_fractional_seconds(value) {
            return Some(RetryAfter::Delay(d));
        }
        parse_imf_fixdate(value).map(RetryAfter::At)
    }

    /// The delay still to wait at `now_unix` (zero when the moment has passed).
    pub fn delay_at(self, now_unix: u64) -> Duration {
        match self {
            RetryAfter::Delay(d) => d,
            RetryAfter::At(t) => Duration::from_secs(t.saturating_sub(now_unix)),
        }
    }
}

/// `1.5`, or the protobuf Duration JSON form `"37s"` / `"0.5s"` that Google's `RetryInfo` uses.
pub(crate) fn parse_fractional_seconds(value: &str) -> Option<Duration> {
    let number = value.strip_suffix('s').unwrap_or(value);
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let secs: f64 = number.parse().ok()?;
    if !secs.is_finite() || !(0.0..=1.0e9).contains(&secs) {
        return None;
    }
    Some(Duration::from_secs_f64(secs))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → Unix seconds.
fn parse_imf_fixdate(value: &str) -> Option<u64> {
    let rest = value.split_once(", ")?.1;
    let mut it = rest.split(' ');
    let day: u32 = it.next()?.parse().ok()?;
    let month = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let time = it.next()?;
    if it.next()? != "GMT" || it.next().is_some() {
        return None;
    }
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || h > 23 || m > 59 || s > 60 || !(1..=31).contains(&day) {
        return None;
    }
    let days = crate::time::days_from_civil(year, month, day);
    if days < 0 {
        return None;
    }
    Some(days as u64 * 86_400 + h * 3600 + m * 60 + s)
}

/// An error with everything a caller needs to decide what to do next.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Where it was detected.
    pub origin: Origin,
    /// Human-readable detail (the provider's own message when it gave one).
    pub message: String,
    /// The request field at fault, in `messages[2].content[0].image_url.url` form.
    pub param: Option<String>,
    /// The HTTP status the provider answered with, when there was one.
    pub provider_status: Option<u16>,
    /// The provider's own error type or code (`overloaded_error`, `RESOURCE_EXHAUSTED`, ...).
    pub provider_code: Option<String>,
    /// How long the provider asked us to wait.
    pub retry_after: Option<RetryAfter>,
}

impl LlmError {
    /// An error of `kind` from `origin` with `message`; no param, status, code or retry-after.
    pub fn new(kind: ErrorKind, origin: Origin, message: impl Into<String>) -> LlmError {
        LlmError {
            kind,
            origin,
            message: message.into(),
            param: None,
            provider_status: None,
            provider_code: None,
            retry_after: None,
        }
    }

    /// A 400-class error in the client's request at field `param`.
    pub fn client(param: impl Into<String>, message: impl Into<String>) -> LlmError {
        let mut e = LlmError::new(ErrorKind::InvalidRequest, Origin::Client, message);
        e.param = Some(param.into());
        e
    }

    /// A request feature that `origin` (the gateway, or a provider) cannot express.
    pub fn unsupported(
        origin: Origin,
        param: Option<&str>,
        message: impl Into<String>,
    ) -> LlmError {
        let mut e = LlmError::new(ErrorKind::Unsupported, origin, message);
        e.param = param.map(str::to_owned);
        e
    }

    /// Whether trying again may succeed (see [`ErrorKind::retryable`]).
    pub fn retryable(&self) -> bool {
        self.kind.retryable()
    }

    /// Whether the failure is the deployment's (see [`ErrorKind::deployment_fault`]).
    pub fn deployment_fault(&self) -> bool {
        self.kind.deployment_fault()
    }

    /// Whether the prompt was too long for the model.
    pub fn is_context_length_exceeded(&self) -> bool {
        self.kind == ErrorKind::ContextLengthExceeded
    }
}

impl fmt::Display for LlmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.origin {
            Origin::Client => f.write_str("invalid client request")?,
            Origin::Provider(p) => write!(f, "{} error", p.as_str())?,
            Origin::Gateway => f.write_str("gateway error")?,
        }
        write!(f, " ({}", self.kind.as_str())?;
        if let Some(status) = self.provider_status {
            write!(f, ", HTTP {status}")?;
        }
        f.write_str(")")?;
        if let Some(param) = &self.param {
            write!(f, " at `{param}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for LlmError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            RetryAfter::parse("30"),
            Some(RetryAfter::Delay(Duration::from_secs(30)))
        );
        assert_eq!(
            RetryAfter::parse(" 7 "),
            Some(RetryAfter::Delay(Duration::from_secs(7)))
        );
        assert_eq!(
            RetryAfter::parse("1.5"),
            Some(RetryAfter::Delay(Duration::from_millis(1500)))
        );
        // 1994-11-06T08:49:37Z
        assert_eq!(
            RetryAfter::parse("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(RetryAfter::At(784111777))
        );
        assert_eq!(RetryAfter::parse("Sun, 06 Nov 1994 08:49:37 UTC"), None);
        assert_eq!(RetryAfter::parse("soon"), None);
        assert_eq!(RetryAfter::parse(""), None);
        assert_eq!(RetryAfter::At(100).delay_at(40), Duration::from_secs(60));
        assert_eq!(RetryAfter::At(100).delay_at(400), Duration::ZERO);
    }

    #[test]
    fn display_names_origin_kind_and_param() {
        let e = LlmError::client("messages[0].role", "unknown role `robot`");
        assert_eq!(
            e.to_string(),
            "invalid client request (invalid_request) at `messages[0].role`: unknown role `robot`"
        );
    }
}
