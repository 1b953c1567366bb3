//! Provider error bodies → [`LlmError`]. Each provider's body shape is read for its own type
//! or code; the HTTP status decides when the body says nothing useful. Context-window
//! overflows are recognised by code or by each provider's message wording and reported as
//! [`ErrorKind::ContextLengthExceeded`].
//!
//! | provider | body | notable codes |
//! |---|---|---|
//! | OpenAI, Azure, compatible | `{"error": {"message", "type", "param", "code"}}` | `context_length_exceeded`, `rate_limit_exceeded`, `insufficient_quota`, Azure `content_filter` |
//! | Mistral, vLLM | `{"object": "error", "message", "type", "param", "code"}` (or `{"detail": [...]}` on 422) | "... too large for model with N maximum context length" |
//! | Anthropic | `{"type": "error", "error": {"type", "message"}}` | `overloaded_error` (529), `rate_limit_error`, "prompt is too long" |
//! | Gemini | `{"error": {"code", "message", "status", "details"}}`, sometimes in a one-element array | `RESOURCE_EXHAUSTED` (+ `RetryInfo.retryDelay`), `UNAVAILABLE`, "input token count ... exceeds the maximum" |

use serde_json::Value;

use super::{str_of, ProviderKind};
use crate::error::{parse_fractional_seconds, ErrorKind, LlmError, Origin, RetryAfter};

/// Reads a failed answer (`status`, body, `Retry-After` header value).
pub fn parse(kind: ProviderKind, status: u16, body: &[u8], retry_after: Option<&str>) -> LlmError {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => from_value(kind, Some(status), &v, retry_after),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.trim().chars().take(500).collect();
            let message = if text.is_empty() {
                format!("HTTP {status} with an empty body")
            } else {
                text
            };
            let mut e = LlmError::new(status_kind(status), Origin::Provider(kind), message);
            e.provider_status = Some(status);
            e.retry_after = retry_after.and_then(RetryAfter::parse);
            e
        }
    }
}

/// The kind an HTTP status means when nothing better is known.
pub(crate) fn status_kind(status: u16) -> ErrorKind {
    match status {
        401 => ErrorKind::Authentication,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        408 | 504 => ErrorKind::Timeout,
        413 => ErrorKind::RequestTooLarge,
        429 => ErrorKind::RateLimited,
        503 | 529 => ErrorKind::Overloaded,
        400..=499 => ErrorKind::InvalidRequest,
        _ => ErrorKind::ProviderError,
    }
}

/// Whether a message says the context window overflowed, in any provider's words.
pub(crate) fn mentions_context_overflow(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "context_length_exceeded",
        "maximum context length",
        "context window",
        "prompt is too long",
        "exceeds the maximum number of tokens",
        "too large for model with",
        "input length and `max_tokens` exceed context limit",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// Reads an already-parsed error value; `status` is `None` for errors inside a stream.
pub(crate) fn from_value(
    kind: ProviderKind,
    status: Option<u16>,
    v: &Value,
    retry_after: Option<&str>,
) -> LlmError {
    // Gemini's streaming endpoint wraps the error in a one-element array.
    let v = match v {
        Value::Array(items) if items.len() == 1 => &items[0],
        other => other,
    };
    let (mut e, code_kind) = match kind {
        ProviderKind::Anthropic => anthropic(v),
        ProviderKind::Gemini => gemini(v),
        _ => openai_family(v),
    };
    e.origin = Origin::Provider(kind);
    e.provider_status = status;
    e.kind = match (code_kind, status) {
        (Some(k), _) => k,
        (None, Some(s)) => status_kind(s),
        (None, None) => ErrorKind::ProviderError,
    };
    if matches!(
        e.kind,
        ErrorKind::InvalidRequest | ErrorKind::RequestTooLarge
    ) && mentions_context_overflow(&e.message)
    {
        e.kind = ErrorKind::ContextLengthExceeded;
    }
    if let Some(ra) = retry_after.and_then(RetryAfter::parse) {
        e.retry_after = Some(ra);
    }
    if e.message.is_empty() {
        e.message = match status {
            Some(s) => format!("HTTP {s}"),
            None => "error event without a message".to_owned(),
        };
    }
    e
}

fn base(message: &str, code: Option<&str>) -> LlmError {
    let mut e = LlmError::new(ErrorKind::ProviderError, Origin::Gateway, message);
    e.provider_code = code.map(str::to_owned);
    e
}

/// A code that may be a string or a number.
fn code_of(v: &Value) -> Option<String> {
    match v.get("code") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn openai_family(v: &Value) -> (LlmError, Option<ErrorKind>) {
    // `{"error": {...}}` (OpenAI, Azure, most compatible servers) or the error fields at the
    // top level (Mistral, vLLM).
    let inner = match v.get("error") {
        Some(e @ Value::Object(_)) => e,
        _ => v,
    };
    let message = match inner.get("message") {
        Some(Value::String(s)) => s.clone(),
        Some(other @ (Value::Object(_) | Value::Array(_))) => other.to_string(),
        _ => match (v.get("error"), v.get("detail")) {
            (Some(Value::String(s)), _) => s.clone(),
            (_, Some(d)) => d.to_string(),
            _ => String::new(),
        },
    };
    let code = code_of(inner);
    let typ = str_of(inner, "type");
    let mut e = base(&message, code.as_deref().or(typ));
    e.param = str_of(inner, "param").map(str::to_owned);
    let kind = match (code.as_deref(), typ) {
        (Some("context_length_exceeded"), _) => Some(ErrorKind::ContextLengthExceeded),
        (Some("insufficient_quota"), _) | (_, Some("insufficient_quota")) => {
            Some(ErrorKind::QuotaExceeded)
        }
        (Some("content_filter" | "content_policy_violation"), _) => {
            Some(ErrorKind::ContentFiltered)
        }
        (Some("rate_limit_exceeded"), _)
        | (_, Some("rate_limit_error" | "requests" | "tokens")) => Some(ErrorKind::RateLimited),
        (Some("model_not_found" | "DeploymentNotFound"), _) => Some(ErrorKind::NotFound),
        (Some("invalid_api_key"), _) | (_, Some("authentication_error")) => {
            Some(ErrorKind::Authentication)
        }
        _ => None,
    };
    (e, kind)
}

fn anthropic(v: &Value) -> (LlmError, Option<ErrorKind>) {
    let inner = v.get("error").unwrap_or(v);
    let typ = str_of(inner, "type");
    let e = base(str_of(inner, "message").unwrap_or_default(), typ);
    let kind = match typ {
        Some("invalid_request_error") => Some(ErrorKind::InvalidRequest),
        Some("authentication_error") => Some(ErrorKind::Authentication),
        Some("permission_error") => Some(ErrorKind::PermissionDenied),
        Some("not_found_error") => Some(ErrorKind::NotFound),
        Some("request_too_large") => Some(ErrorKind::RequestTooLarge),
        Some("rate_limit_error") => Some(ErrorKind::RateLimited),
        Some("overloaded_error") => Some(ErrorKind::Overloaded),
        Some("timeout_error") => Some(ErrorKind::Timeout),
        Some("api_error") => Some(ErrorKind::ProviderError),
        Some("billing_error") => Some(ErrorKind::QuotaExceeded),
        _ => None,
    };
    (e, kind)
}

fn gemini(v: &Value) -> (LlmError, Option<ErrorKind>) {
    let inner = v.get("error").unwrap_or(v);
    let status = str_of(inner, "status");
    let mut e = base(str_of(inner, "message").unwrap_or_default(), status);
    let details = inner.get("details").and_then(Value::as_array);
    let reason =
        |want: &str| details.is_some_and(|d| d.iter().any(|x| str_of(x, "reason") == Some(want)));
    if let Some(delay) = details.and_then(|d| {
        d.iter()
            .filter(|x| str_of(x, "@type").is_some_and(|t| t.ends_with("google.rpc.RetryInfo")))
            .find_map(|x| str_of(x, "retryDelay"))
    }) {
        e.retry_after = parse_fractional_seconds(delay).map(RetryAfter::Delay);
    }
    let kind = match status {
        _ if reason("API_KEY_INVALID") => Some(ErrorKind::Authentication),
        Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE") => {
            Some(ErrorKind::InvalidRequest)
        }
        Some("UNAUTHENTICATED") => Some(ErrorKind::Authentication),
        Some("PERMISSION_DENIED") => Some(ErrorKind::PermissionDenied),
        Some("NOT_FOUND") => Some(ErrorKind::NotFound),
        Some("RESOURCE_EXHAUSTED") => Some(ErrorKind::RateLimited),
        Some("UNAVAILABLE") => Some(ErrorKind::Overloaded),
        Some("DEADLINE_EXCEEDED") => Some(ErrorKind::Timeout),
        Some("INTERNAL" | "UNKNOWN") => Some(ErrorKind::ProviderError),
        _ => None,
    };
    (e, kind)
}
