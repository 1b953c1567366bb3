//! Egress: talking to providers. A [`Deployment`] (provider kind, base URL, upstream model,
//! key) turns a canonical [`ChatRequest`] into an [`UpstreamRequest`] (method, path, headers,
//! JSON body), reads the provider's answer back into a [`ChatResponse`], its SSE stream into
//! [`StreamEvent`]s ([`StreamDecoder`]), and its error bodies into [`LlmError`]s.
//!
//! One module per wire format: [`openai`] serves OpenAI, Azure OpenAI, Mistral and
//! OpenAI-compatible servers (their differences are a [`openai::Flavor`]); [`anthropic`] and
//! [`gemini`] serve theirs; [`errors`] reads every provider's error body.

pub mod anthropic;
pub mod errors;
pub mod gemini;
pub(crate) mod ids;
pub mod openai;

use std::fmt;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, Method};

use serde::Serialize;
use serde_json::Value;

use crate::canonical::{ChatRequest, ChatResponse, StreamEvent, ToolCall};
use crate::embeddings::{EmbeddingRequest, EmbeddingResponse};
use crate::error::{ErrorKind, LlmError, Origin};
use crate::sse::{SseEvent, SseParser};

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// api.openai.com.
    OpenAi,
    /// Azure OpenAI (`/openai/deployments/{deployment}/...?api-version=`).
    Azure,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini API (generativelanguage.googleapis.com).
    Gemini,
    /// Mistral La Plateforme.
    Mistral,
    /// Any OpenAI-compatible server (vLLM, Ollama, Groq, Together, DeepSeek, ...).
    OpenAiCompatible,
}

impl ProviderKind {
    /// All kinds, in declaration order.
    pub const ALL: [ProviderKind; 6] = [
        ProviderKind::OpenAi,
        ProviderKind::Azure,
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
        ProviderKind::Mistral,
        ProviderKind::OpenAiCompatible,
    ];

    /// The configuration name (`openai`, `azure`, `anthropic`, `gemini`, `mistral`,
    /// `openai-compatible`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Azure => "azure",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Mistral => "mistral",
            ProviderKind::OpenAiCompatible => "openai-compatible",
        }
    }

    /// The kind for a configuration name.
    pub fn parse(name: &str) -> Option<ProviderKind> {
        ProviderKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The public endpoint, for kinds that have one.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com/v1"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com/v1beta"),
            ProviderKind::Mistral => Some("https://api.mistral.ai/v1"),
            ProviderKind::Azure | ProviderKind::OpenAiCompatible => None,
        }
    }

    /// The API root path used when a base URL has no path of its own.
    fn default_root(self) -> &'static str {
        match self {
            ProviderKind::Azure => "/openai",
            ProviderKind::Gemini => "/v1beta",
            _ => "/v1",
        }
    }
}

/// An API key. Its `Debug` output never shows the key, and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    /// The key itself, for building the auth header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// A parsed `http(s)://host[:port][/path]` base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// Whether the scheme is `https`.
    pub tls: bool,
    /// `host[:port]`.
    pub authority: String,
    /// The path prefix without a trailing slash (may be empty).
    pub path: String,
}

impl BaseUrl {
    /// Parses a base URL; no query, fragment or user info is allowed.
    pub fn parse(url: &str) -> Result<BaseUrl, LlmError> {
        let bad = |why: &str| {
            LlmError::new(
                ErrorKind::InvalidRequest,
                Origin::Gateway,
                format!("invalid base URL `{url}`: {why}"),
            )
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("the scheme must be http or https"));
        };
        if rest.contains(['?', '#', '@', ' ']) {
            return Err(bad("no query, fragment, user info or spaces allowed"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(bad("the host is missing"));
        }
        Ok(BaseUrl {
            tls,
            authority: authority.to_owned(),
            path: path.trim_end_matches('/').to_owned(),
        })
    }
}

/// Where and how a deployment is reached.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The wire protocol.
    pub kind: ProviderKind,
    /// The endpoint; its path, when it has one, replaces the provider's API root
    /// (`/v1`, `/v1beta` for Gemini, `/openai` for Azure).
    pub base_url: BaseUrl,
    /// The model name at the provider (for Azure: the deployment name).
    pub model: String,
    /// Azure's `api-version` (default [`Deployment::DEFAULT_AZURE_API_VERSION`]).
    pub api_version: Option<String>,
    /// The key, sent as each provider expects.
    pub api_key: Option<ApiKey>,
    /// `max_tokens` to send when the client gave none and the provider requires it
    /// (Anthropic).
    pub default_max_tokens: u32,
}

impl Deployment {
    /// The Azure OpenAI `api-version` used when none is configured (the GA data-plane
    /// inference version, which has `stream_options`, `parallel_tool_calls` and
    /// `json_schema`).
    pub const DEFAULT_AZURE_API_VERSION: &'static str = "2024-10-21";
    /// `max_tokens` sent to Anthropic when the client gave none.
    pub const DEFAULT_MAX_TOKENS: u32 = 4096;

    /// A deployment of `model` at `base_url` (the provider's public endpoint when `None`;
    /// Azure and OpenAI-compatible kinds require one).
    pub fn new(
        kind: ProviderKind,
        base_url: Option<&str>,
        model: impl Into<String>,
    ) -> Result<Deployment, LlmError> {
        let url = match base_url.or(kind.default_base_url()) {
            Some(u) => u,
            None => {
                return Err(LlmError::new(
                    ErrorKind::InvalidRequest,
                    Origin::Gateway,
                    format!("provider kind `{}` needs a base URL", kind.as_str()),
                ))
            }
        };
        Ok(Deployment {
            kind,
            base_url: BaseUrl::parse(url)?,
            model: model.into(),
            api_version: None,
            api_key: None,
            default_max_tokens: Deployment::DEFAULT_MAX_TOKENS,
        })
    }

    /// Sets the key.
    pub fn with_api_key(mut self, key: ApiKey) -> Deployment {
        self.api_key = Some(key);
        self
    }

    /// Sets Azure's `api-version`.
    pub fn with_api_version(mut self, version: impl Into<String>) -> Deployment {
        self.api_version = Some(version.into());
        self
    }

    /// The API root: the base URL's path, or the provider's default.
    pub(crate) fn root(&self) -> &str {
        if self.base_url.path.is_empty() {
            self.kind.default_root()
        } else {
            &self.base_url.path
        }
    }

    pub(crate) fn origin(&self) -> Origin {
        Origin::Provider(self.kind)
    }

    /// The upstream request for a chat completion.
    pub fn chat_request(&self, req: &ChatRequest) -> Result<UpstreamRequest, LlmError> {
        let (path, body) = match self.kind {
            ProviderKind::Anthropic => anthropic::build_request(self, req)?,
            ProviderKind::Gemini => gemini::build_request(self, req)?,
            _ => openai::build_request(self, req)?,
        };
        Ok(self.upstream(path, body, req.stream))
    }

    /// Reads a successful (2xx) chat completion body.
    pub fn parse_chat_response(&self, body: &[u8]) -> Result<ChatResponse, LlmError> {
        match self.kind {
            ProviderKind::Anthropic => anthropic::parse_response(self, body),
            ProviderKind::Gemini => gemini::parse_response(self, body),
            _ => openai::parse_response(self, body),
        }
    }

    /// The upstream request for embeddings.
    pub fn embeddings_request(&self, req: &EmbeddingRequest) -> Result<UpstreamRequest, LlmError> {
        let (path, body) = crate::embeddings::build_request(self, req)?;
        Ok(self.upstream(path, body, false))
    }

    /// Reads a successful (2xx) embeddings body for `req`.
    pub fn parse_embeddings_response(
        &self,
        req: &EmbeddingRequest,
        body: &[u8],
    ) -> Result<EmbeddingResponse, LlmError> {
        crate::embeddings::parse_response(self, req, body)
    }

    /// Reads a failed answer: `status`, its body, and the `Retry-After` header value if any.
    pub fn parse_error(&self, status: u16, body: &[u8], retry_after: Option<&str>) -> LlmError {
        errors::parse(self.kind, status, body, retry_after)
    }

    /// A decoder for this deployment's SSE stream.
    pub fn stream_decoder(&self) -> StreamDecoder {
        StreamDecoder::new(self)
    }

    fn upstream(&self, path_and_query: String, body: Vec<u8>, stream: bool) -> UpstreamRequest {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static(if stream {
                "text/event-stream"
            } else {
                "application/json"
            }),
        );
        if let Some(key) = &self.api_key {
            let key = key.expose();
            let (name, value) = match self.kind {
                ProviderKind::Anthropic => ("x-api-key", HeaderValue::from_str(key)),
                ProviderKind::Azure => ("api-key", HeaderValue::from_str(key)),
                ProviderKind::Gemini => ("x-goog-api-key", HeaderValue::from_str(key)),
                _ => (
                    "authorization",
                    HeaderValue::from_str(&format!("Bearer {key}")),
                ),
            };
            // A key with bytes a header cannot carry is left out; the provider then answers
            // 401, which names the problem without echoing the key.
            if let Ok(mut v) = value {
                v.set_sensitive(true);
                headers.insert(HeaderName::from_static(name), v);
            }
        }
        if self.kind == ProviderKind::Anthropic {
            headers.insert(
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static(anthropic::API_VERSION),
            );
        }
        UpstreamRequest {
            method: Method::POST,
            tls: self.base_url.tls,
            authority: self.base_url.authority.clone(),
            path_and_query,
            headers,
            body: Bytes::from(body),
        }
    }
}

/// An HTTP request to send to a provider. Auth header values are marked sensitive, so
/// `Debug` prints them as `Sensitive`.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// Always `POST` for the endpoints here.
    pub method: Method,
    /// Whether to use TLS.
    pub tls: bool,
    /// `host[:port]`, for the connection and the `Host` header.
    pub authority: String,
    /// Origin-form request target.
    pub path_and_query: String,
    /// `content-type`, `accept`, auth, and provider version headers.
    pub headers: HeaderMap,
    /// The JSON body.
    pub body: Bytes,
}

/// The provider-specific part of stream decoding: SSE events in, canonical events out.
#[derive(Debug)]
enum Decoder {
    OpenAi(openai::StreamState),
    Anthropic(anthropic::StreamState),
    Gemini(gemini::StreamState),
}

/// Decodes a provider's SSE byte stream into canonical [`StreamEvent`]s, incrementally.
///
/// It guarantees the canonical grammar: `Start` first, `Done` only after a proper end, and
/// nothing after `Done` or `Error`. A stream that ends without the provider's end marker
/// yields an [`ErrorKind::StreamInterrupted`] error.
#[derive(Debug)]
pub struct StreamDecoder {
    sse: SseParser,
    decoder: Decoder,
    origin: Origin,
    events: Vec<SseEvent>,
    closed: bool,
}

impl StreamDecoder {
    fn new(dep: &Deployment) -> StreamDecoder {
        let decoder = match dep.kind {
            ProviderKind::Anthropic => Decoder::Anthropic(anthropic::StreamState::default()),
            ProviderKind::Gemini => Decoder::Gemini(gemini::StreamState::new(&dep.model)),
            _ => Decoder::OpenAi(openai::StreamState::new(dep)),
        };
        StreamDecoder {
            sse: SseParser::new(),
            decoder,
            origin: dep.origin(),
            events: Vec::new(),
            closed: false,
        }
    }

    /// Decodes the next piece of the body, appending events to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) {
        if self.closed {
            return;
        }
        if let Err(mut e) = self.sse.feed(bytes, &mut self.events) {
            e.origin = self.origin;
            self.closed = true;
            out.push(StreamEvent::Error(e));
            return;
        }
        self.drain(out);
    }

    /// The body ended: flushes the last event and reports a stream that ended early.
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        if self.closed {
            return;
        }
        self.sse.finish(&mut self.events);
        self.drain(out);
        if self.closed {
            return;
        }
        let before = out.len();
        match &mut self.decoder {
            Decoder::OpenAi(s) => s.end_of_body(out),
            Decoder::Anthropic(s) => s.end_of_body(out),
            Decoder::Gemini(s) => s.end_of_body(out),
        }
        self.closed = true;
        if !out[before..].iter().any(is_terminal) {
            out.push(StreamEvent::Error(LlmError::new(
                ErrorKind::StreamInterrupted,
                self.origin,
                "the stream ended before the provider's end marker",
            )));
        }
    }

    /// Whether the stream has ended (with `Done` or an `Error`).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn drain(&mut self, out: &mut Vec<StreamEvent>) {
        let mut events = std::mem::take(&mut self.events);
        for ev in events.drain(..) {
            let before = out.len();
            match &mut self.decoder {
                Decoder::OpenAi(s) => s.on_event(&ev, out),
                Decoder::Anthropic(s) => s.on_event(&ev, out),
                Decoder::Gemini(s) => s.on_event(&ev, out),
            }
            // The first terminal event ends the stream; nothing after it counts.
            if let Some(end) = out[before..].iter().position(is_terminal) {
                out.truncate(before + end + 1);
                self.closed = true;
                break;
            }
        }
        // Keep the allocation for the next piece.
        events.clear();
        self.events = events;
    }
}

fn is_terminal(ev: &StreamEvent) -> bool {
    matches!(ev, StreamEvent::Done | StreamEvent::Error(_))
}

/// `call`'s arguments as the JSON object Anthropic's `input` and Gemini's `args` need; a
/// client error at `messages[{message}]` when they are not one.
pub(crate) fn arguments_object(call: &ToolCall, message: usize) -> Result<Value, LlmError> {
    call.arguments_object().ok_or_else(|| {
        LlmError::client(
            format!("messages[{message}]"),
            format!(
                "the arguments of tool call `{}` are not a JSON object",
                call.id
            ),
        )
    })
}

/// A provider request body as JSON bytes.
pub(crate) fn body_bytes(body: &impl Serialize) -> Result<Vec<u8>, LlmError> {
    serde_json::to_vec(body)
        .map_err(|e| LlmError::new(ErrorKind::InvalidRequest, Origin::Gateway, e.to_string()))
}

/// The string at `key` of a provider's JSON object; `None` when absent or not a string.
pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A malformed-response error from `origin`.
pub(crate) fn malformed(origin: Origin, message: impl Into<String>) -> LlmError {
    LlmError::new(ErrorKind::MalformedResponse, origin, message)
}

/// Parses a provider body as JSON.
pub(crate) fn parse_json(origin: Origin, body: &[u8]) -> Result<serde_json::Value, LlmError> {
    serde_json::from_slice(body)
        .map_err(|e| malformed(origin, format!("response is not valid JSON: {e}")))
}

/// Parses the JSON of one stream event (`what`: "stream event", "stream chunk"); on failure
/// pushes a malformed-response error from `origin` to `out` and returns None.
pub(crate) fn parse_stream_json(
    origin: Origin,
    data: &str,
    what: &str,
    out: &mut Vec<StreamEvent>,
) -> Option<serde_json::Value> {
    match serde_json::from_str(data) {
        Ok(v) => Some(v),
        Err(e) => {
            out.push(StreamEvent::Error(malformed(
                origin,
                format!("{what} is not valid JSON: {e}"),
            )));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let b = BaseUrl::parse("http://10.0.0.9:8000/v1/").unwrap();
        assert_eq!(
            b,
            BaseUrl {
                tls: false,
                authority: "10.0.0.9:8000".into(),
                path: "/v1".into()
            }
        );
        assert_eq!(BaseUrl::parse("https://api.x.test").unwrap().path, "");
        assert!(BaseUrl::parse("ftp://x").is_err());
        assert!(BaseUrl::parse("https://x/v1?k=1").is_err());
        assert!(BaseUrl::parse("https:///v1").is_err());
    }

    #[test]
    fn kinds_round_trip_their_names() {
        for k in ProviderKind::ALL {
            assert_eq!(ProviderKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ProviderKind::parse("bedrock"), None);
        assert!(Deployment::new(ProviderKind::Azure, None, "d").is_err());
    }

    #[test]
    fn api_key_debug_is_redacted() {
        let d = Deployment::new(ProviderKind::OpenAi, None, "gpt-4o")
            .unwrap()
            .with_api_key(ApiKey::new("sk-secret-123"));
        assert!(!format!("{d:?}").contains("sk-secret-123"));
        assert_eq!(format!("{:?}", ApiKey::new("k")), "ApiKey(<redacted>)");
    }
}
