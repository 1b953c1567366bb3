//! Ingress: the formats clients speak. [`Ingress::OpenAi`] is Chat Completions
//! (`POST /v1/chat/completions`, plus `/v1/models` and `/v1/embeddings`);
//! [`Ingress::Anthropic`] is Messages (`POST /v1/messages`). Each parses a request body into a
//! canonical [`ChatRequest`] (400-class errors name the field), renders a canonical
//! [`ChatResponse`], a stream of [`StreamEvent`]s ([`StreamEncoder`]) and errors back in its
//! own format.

pub mod anthropic;
pub mod openai;

use crate::canonical::{ChatRequest, ChatResponse, StreamEvent};
use crate::error::{ErrorKind, LlmError, Origin};
use crate::models::ModelCard;

/// A client-facing API format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ingress {
    /// OpenAI Chat Completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

/// An error rendered for a client: the HTTP status and the JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
}

impl Ingress {
    /// The format serving `method` `path`: `POST /v1/chat/completions` (OpenAI),
    /// `POST /v1/messages` (Anthropic). `path` is the request path without the query.
    pub fn for_chat_path(path: &str) -> Option<Ingress> {
        match path.trim_end_matches('/') {
            p if p.ends_with("/chat/completions") => Some(Ingress::OpenAi),
            p if p.ends_with("/messages") => Some(Ingress::Anthropic),
            _ => None,
        }
    }

    /// Parses a chat request body.
    pub fn parse_request(self, body: &[u8]) -> Result<ChatRequest, LlmError> {
        match self {
            Ingress::OpenAi => openai::parse_request(body),
            Ingress::Anthropic => anthropic::parse_request(body),
        }
    }

    /// Renders a complete answer. `now_unix` stands in for a creation time the provider did
    /// not give (OpenAI's `created`). Fails only when tool-call arguments cannot be shown in
    /// this format (Anthropic needs a JSON object).
    pub fn render_response(self, resp: &ChatResponse, now_unix: u64) -> Result<Vec<u8>, LlmError> {
        match self {
            Ingress::OpenAi => Ok(openai::render_response(resp, now_unix)),
            Ingress::Anthropic => anthropic::render_response(resp),
        }
    }

    /// Renders an error with the status this format uses for it.
    pub fn render_error(self, err: &LlmError) -> ErrorResponse {
        let status = self.status(err);
        let message = client_message(err);
        let body = match self {
            Ingress::OpenAi => openai::render_error(err, &message),
            Ingress::Anthropic => anthropic::render_error(err, &message),
        };
        ErrorResponse { status, body }
    }

    /// A stream encoder for one answer. `include_usage` asks for the usage to be sent to the
    /// client (OpenAI's `stream_options.include_usage`; Anthropic streams always carry it).
    pub fn stream_encoder(self, include_usage: bool, now_unix: u64) -> StreamEncoder {
        StreamEncoder {
            inner: match self {
                Ingress::OpenAi => {
                    Encoder::OpenAi(openai::StreamEncoder::new(include_usage, now_unix))
                }
                Ingress::Anthropic => Encoder::Anthropic(anthropic::StreamEncoder::default()),
            },
        }
    }

    /// Renders the `GET /v1/models` list.
    pub fn render_models(self, models: &[ModelCard]) -> Vec<u8> {
        match self {
            Ingress::OpenAi => crate::models::render_openai(models),
            Ingress::Anthropic => crate::models::render_anthropic(models),
        }
    }

    /// The HTTP status for `err` in this format. Faults of the request (bad fields,
    /// unsupported features, context overflow, filtered content) are 4xx; faults of the
    /// gateway's own upstream access (its key, its quota, its model names) and of the
    /// provider are 5xx, since the client cannot fix them; rate limits are 429; overload is
    /// 529 for Anthropic clients (what Anthropic itself sends) and 503 for OpenAI clients.
    pub fn status(self, err: &LlmError) -> u16 {
        match err.kind {
            ErrorKind::InvalidRequest => match (err.origin, err.provider_status) {
                (Origin::Provider(_), Some(s)) if (400..500).contains(&s) && s != 429 => s,
                _ => 400,
            },
            ErrorKind::Unsupported
            | ErrorKind::ContextLengthExceeded
            | ErrorKind::ContentFiltered => 400,
            ErrorKind::RequestTooLarge => 413,
            ErrorKind::RateLimited | ErrorKind::QuotaExceeded => 429,
            ErrorKind::Overloaded => match self {
                Ingress::OpenAi => 503,
                Ingress::Anthropic => 529,
            },
            ErrorKind::Timeout => 504,
            ErrorKind::Authentication | ErrorKind::PermissionDenied | ErrorKind::NotFound => {
                match err.origin {
                    Origin::Provider(_) => 502,
                    _ => match err.kind {
                        ErrorKind::Authentication => 401,
                        ErrorKind::PermissionDenied => 403,
                        _ => 404,
                    },
                }
            }
            ErrorKind::ProviderError
            | ErrorKind::StreamInterrupted
            | ErrorKind::MalformedResponse => 502,
        }
    }
}

/// A request feature the gateway refuses, at `param`.
pub(crate) fn unsupported(param: &str, what: &str) -> LlmError {
    LlmError::unsupported(
        Origin::Gateway,
        Some(param),
        format!("`{param}`: {what} is not supported by this gateway"),
    )
}

/// The message shown to a client. A provider's words about the gateway's own credentials or
/// billing are replaced: they can quote part of the key or name the account.
pub(crate) fn client_message(err: &LlmError) -> String {
    let provider = match err.origin {
        Origin::Provider(p) => p.as_str(),
        _ => return err.message.clone(),
    };
    match err.kind {
        ErrorKind::Authentication => {
            format!("the upstream provider ({provider}) rejected the gateway's credentials")
        }
        ErrorKind::PermissionDenied => {
            format!("the gateway's credentials may not use this model at the upstream provider ({provider})")
        }
        ErrorKind::QuotaExceeded => {
            format!("the gateway's quota at the upstream provider ({provider}) is exhausted")
        }
        _ => err.message.clone(),
    }
}

#[derive(Debug)]
enum Encoder {
    OpenAi(openai::StreamEncoder),
    Anthropic(anthropic::StreamEncoder),
}

/// Renders canonical stream events as one client format's SSE bytes.
#[derive(Debug)]
pub struct StreamEncoder {
    inner: Encoder,
}

impl StreamEncoder {
    /// Appends the bytes for `ev` to `out`. After `Done` or `Error` nothing more is written.
    pub fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        match &mut self.inner {
            Encoder::OpenAi(e) => e.encode(ev, out),
            Encoder::Anthropic(e) => e.encode(ev, out),
        }
    }
}
