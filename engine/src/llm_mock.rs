//! Mock LLM providers, for integration tests, `headwater mock-llm`, the demo and benchmarks.
//!
//! This module owns [`MockProvider`]: one in-process HTTP/1.1 server that speaks every provider
//! wire format Headwater talks to, chosen by the request path. How it runs (plain `std::net`,
//! one accept thread, one thread per connection, keep-alive, prompt stop) is the plumbing of
//! `crate::loopback_server`, shared with [`crate::upstream_demo`]; what it answers is here:
//!
//! | path | format |
//! |---|---|
//! | `POST …/chat/completions` (OpenAI `/v1/…`, Mistral, compatible, Azure `/openai/deployments/{name}/chat/completions?api-version=…`) | OpenAI `chat.completion` / `chat.completion.chunk` |
//! | `POST …/embeddings` | OpenAI embeddings list (`dimensions` or Mistral's `output_dimension`, `encoding_format: base64`) |
//! | `POST …/messages` | Anthropic Messages |
//! | `POST …/models/{model}:generateContent`, `:streamGenerateContent` (`?alt=sse`: SSE; without: a JSON array) | Gemini `GenerateContentResponse` |
//! | `POST …/models/{model}:embedContent`, `:batchEmbedContents` | Gemini embeddings |
//! | `GET …/models` | a model list: Gemini's under `/v1beta` or with `x-goog-api-key`, Anthropic's with `anthropic-version` or `x-api-key`, else OpenAI's |
//! | anything else | 404 with an OpenAI-shaped (or, by the same headers, Anthropic/Gemini) error |
//!
//! The responses are written here as the providers' public API references describe them (not
//! with the `headwater-llm` codecs, so tests against the mock are not circular).
//!
//! # Answers
//!
//! Deterministic: the reply text is `"{prefix}{last user message text}"` (prefix
//! [`DEFAULT_PREFIX`], see [`MockProvider::set_prefix`]), streamed word by word (each delta is
//! a word with the whitespace before it, so the deltas concatenate to the text). Usage: prompt
//! tokens = whitespace-separated words in the system prompt and every message (text parts and
//! tool results); completion tokens = words in the reply, or [`TOOL_CALL_TOKENS`] per tool
//! call. A token limit in the request (`max_completion_tokens`/`max_tokens`,
//! `maxOutputTokens`) shorter than the reply cuts it, with finish reason
//! `length`/`max_tokens`/`MAX_TOKENS`. OpenAI streams carry usage (a last chunk with empty
//! `choices`) only when `stream_options.include_usage` is true — except under a path with a
//! `mistral` segment (base URL `http://{addr}/mistral/v1`), where, as Mistral does, usage rides
//! on the finish chunk whatever `stream_options` says (Headwater sends Mistral none). The
//! response's model is the one the request named (body `model`, Azure's deployment or Gemini's
//! path model).
//!
//! Tool calls: when the request declares tools (and its tool choice is not "none") and the
//! conversation ends with a user message containing `call:NAME` words (`call:get_weather
//! call:get_time`), the answer is one parallel call per word, each with arguments
//! [`TOOL_ARGUMENTS`]; streamed, OpenAI and Anthropic get the arguments split over
//! [`TOOL_ARGUMENT_PIECES`]. Finish: `tool_calls` / `tool_use` / Gemini `STOP` with
//! `functionCall` parts.
//!
//! # Faults
//!
//! A [`Behavior`] set on the handle ([`MockProvider::set`]) applies to every request; a magic
//! word in the last user message (for embeddings, in the first input) overrides it for that
//! request, so tests without a handle and the standalone binary can trigger faults. The words
//! are `mock:` followed by what [`Behavior::parse`] reads (see [`MAGIC_WORDS`]):
//! `mock:normal`, `mock:status:CODE[:RETRY_AFTER_SECS]`, `mock:stall`, `mock:reset`,
//! `mock:garbage`, `mock:fail-before-first-token`, `mock:fail-after:N`,
//! `mock:mid-stream-error`, `mock:slow:FIRST_MS:PER_MS`, `mock:reply:WORD`. A per-server
//! latency ([`MockProvider::set_latency`]) is waited before every answer.
//!
//! # Driving it
//!
//! ```no_run
//! use headwater_engine::llm_mock::{Behavior, Endpoint, MockProvider};
//! let mock = MockProvider::start("127.0.0.1:0".parse().unwrap()).unwrap();
//! let base = format!("http://{}/v1", mock.addr()); // an OpenAI/Anthropic/Mistral base URL
//! mock.set(Behavior::Status { code: 429, retry_after: Some(2) });
//! // ... send requests through the gateway ...
//! let sent = mock.requests(); // what the gateway sent, field by field
//! assert!(mock.served(Endpoint::ChatCompletions) > 0);
//! mock.stop();
//! ```
//!
//! What was received (method, target, headers, body) is kept for the last [`RECORD_LIMIT`]
//! requests ([`MockProvider::set_recording`] turns it off, as the benchmark binary does).
//! Stopping is prompt: sockets poll a shared stop flag every few tens of milliseconds.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use headwater_http1::chunked::{encode_chunk, LAST_CHUNK};
use headwater_http1::{BodyKind, RequestHead};
use http::{Method, StatusCode, Version};
use serde_json::{json, Value};

use crate::llm::unix_now;
use crate::loopback_server::{self, lock, lossy, Fail, Server, Service};
use crate::upstream_demo::{xorshift64_unit, Fnv1a64};

/// The default reply prefix.
pub const DEFAULT_PREFIX: &str = "echo: ";
/// The arguments of every mock tool call.
pub const TOOL_ARGUMENTS: &str = r#"{"city":"Paris","n":1}"#;
/// [`TOOL_ARGUMENTS`] as streamed, piece by piece.
pub const TOOL_ARGUMENT_PIECES: [&str; 3] = [r#"{"city":"#, r#""Paris","#, r#""n":1}"#];
/// Completion tokens counted per tool call.
pub const TOOL_CALL_TOKENS: u64 = 5;
/// How many requests [`MockProvider::requests`] keeps (the most recent ones).
pub const RECORD_LIMIT: usize = 4096;
/// Content deltas sent before the error event of [`Behavior::MidStreamError`].
pub const MID_STREAM_TOKENS: usize = 2;
/// Embedding size when the request names none.
pub const DEFAULT_DIMENSIONS: u64 = 8;
/// The model names the model lists report.
pub const MODELS: [&str; 4] = ["mock-gpt", "mock-claude", "mock-gemini", "mock-embedding"];
/// The model used when a request names none.
pub const DEFAULT_MODEL: &str = "mock-model";

/// The paths a mock serves, for printing.
pub const ROUTES: &str = "  POST */chat/completions          OpenAI, Azure (/openai/deployments/{name}/...), Mistral, compatible
  POST */embeddings                OpenAI-family embeddings
  POST */messages                  Anthropic Messages
  POST */models/{m}:generateContent, :streamGenerateContent?alt=sse   Gemini
  POST */models/{m}:embedContent, :batchEmbedContents                 Gemini embeddings
  GET  */models                    model list (OpenAI; Gemini under /v1beta; Anthropic with anthropic-version)";

/// The magic words, for printing.
pub const MAGIC_WORDS: &str =
    "  mock:normal  mock:status:CODE[:RETRY_AFTER]  mock:stall  mock:reset  mock:garbage
  mock:fail-before-first-token  mock:fail-after:N  mock:mid-stream-error
  mock:slow:FIRST_MS:PER_MS  mock:reply:WORD        (in the last user message)
  call:NAME (with tools declared) answers with a tool call to NAME, one per word";

/// Largest request body accepted (413 beyond).
const MAX_BODY: usize = 32 * 1024 * 1024;
/// Largest embedding size produced.
const MAX_DIMENSIONS: u64 = 4096;
/// What [`Behavior::Garbage`] sends as a non-stream body.
const GARBAGE_BODY: &[u8] = b"<html>mock garbage: this is not JSON {\"choices\": [\n";
/// What [`Behavior::Garbage`] sends as stream data.
const GARBAGE_DATA: &str = "{\"choices\": [{\"delta\": this is not JSON";

/// What a [`MockProvider`] does with a request.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Behavior {
    /// The deterministic answer (see the module documentation).
    #[default]
    Normal,
    /// This status with the provider's error JSON (OpenAI `{"error": {"message", "type",
    /// "param", "code"}}`, Anthropic `{"type": "error", "error": {"type", "message"}}`, Gemini
    /// `{"error": {"code", "message", "status"}}`), and `Retry-After: n` when given (Gemini
    /// also gets a `google.rpc.RetryInfo` detail). Streaming requests get the same.
    Status {
        /// The HTTP status (outside 100..=999: 500).
        code: u16,
        /// `Retry-After` seconds.
        retry_after: Option<u64>,
    },
    /// Reads the request, never answers; the connection stays stalled.
    Stall,
    /// Resets the connection (linger 0, close) without answering.
    Reset,
    /// 200 with a non-JSON body; streams: SSE framing whose data is not JSON, then a proper end
    /// of body.
    Garbage,
    /// Streams: the head and the content-less first events (OpenAI's role delta, Anthropic's
    /// `message_start`, `content_block_start`, `ping`, a Gemini chunk with empty text), then
    /// close without ending the body. Non-stream: the head (with `Content-Length`), then close.
    FailBeforeFirstToken,
    /// Streams: the first events and `n` content deltas (text, tool-call start or arguments),
    /// then close without the end events and without ending the body. Non-stream: the head and
    /// half the body, then close.
    FailAfterTokens(usize),
    /// Streams: [`MID_STREAM_TOKENS`] content deltas, then the provider's in-stream error
    /// (OpenAI `data: {"error": …}`, Anthropic `event: error` with `overloaded_error`, Gemini
    /// `data: {"error": {"code": 503, …, "status": "UNAVAILABLE"}}`), then a proper end of
    /// body (the connection stays usable). Non-stream: a 500 error.
    MidStreamError,
    /// Streams: the head and first events at once, then `first_token_ms` before the first
    /// content delta and `per_token_ms` before each next one. Non-stream: waits
    /// `first_token_ms + per_token_ms × (completion tokens − 1)`, then answers.
    Slow {
        /// Time to the first token.
        first_token_ms: u64,
        /// Time between tokens.
        per_token_ms: u64,
    },
    /// Answers this text (no prefix, no tool calls), for canary tests.
    Reply(String),
}

impl Behavior {
    /// Reads a behavior by name: `normal`, `status:CODE[:RETRY_AFTER_SECS]`, `stall`, `reset`,
    /// `garbage`, `fail-before-first-token`, `fail-after:N`, `mid-stream-error`,
    /// `slow:FIRST_MS:PER_MS`, `reply:TEXT`.
    pub fn parse(text: &str) -> Result<Behavior, String> {
        let (kind, arg) = match text.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (text, None),
        };
        let bad = |why: &str| format!("invalid behavior {text:?}: {why}");
        let number = |s: &str, what: &str| {
            s.parse::<u64>()
                .map_err(|_| bad(&format!("{what} {s:?} is not a whole number")))
        };
        let no_arg = |b: Behavior| match arg {
            None => Ok(b),
            Some(_) => Err(bad(&format!("{kind:?} takes no argument"))),
        };
        match kind {
            "normal" => no_arg(Behavior::Normal),
            "stall" => no_arg(Behavior::Stall),
            "reset" => no_arg(Behavior::Reset),
            "garbage" => no_arg(Behavior::Garbage),
            "fail-before-first-token" => no_arg(Behavior::FailBeforeFirstToken),
            "mid-stream-error" => no_arg(Behavior::MidStreamError),
            "status" => {
                let arg = arg.ok_or_else(|| bad("expected status:CODE[:RETRY_AFTER]"))?;
                let (code, retry) = match arg.split_once(':') {
                    Some((c, r)) => (c, Some(number(r, "retry-after")?)),
                    None => (arg, None),
                };
                let code = number(code, "status")?;
                if !(100..=599).contains(&code) {
                    return Err(bad("the status must be from 100 to 599"));
                }
                Ok(Behavior::Status {
                    code: code as u16,
                    retry_after: retry,
                })
            }
            "fail-after" => {
                let n = number(arg.ok_or_else(|| bad("expected fail-after:N"))?, "count")?;
                Ok(Behavior::FailAfterTokens(
                    usize::try_from(n).map_err(|_| bad("count too large"))?,
                ))
            }
            "slow" => {
                let arg = arg.ok_or_else(|| bad("expected slow:FIRST_MS:PER_MS"))?;
                let (first, per) = arg
                    .split_once(':')
                    .ok_or_else(|| bad("expected slow:FIRST_MS:PER_MS"))?;
                Ok(Behavior::Slow {
                    first_token_ms: number(first, "first-token time")?,
                    per_token_ms: number(per, "per-token time")?,
                })
            }
            "reply" => Ok(Behavior::Reply(
                arg.ok_or_else(|| bad("expected reply:TEXT"))?.to_owned(),
            )),
            _ => Err(bad(
                "expected normal, status:CODE[:RETRY_AFTER], stall, reset, garbage, \
                 fail-before-first-token, fail-after:N, mid-stream-error, slow:FIRST_MS:PER_MS \
                 or reply:TEXT",
            )),
        }
    }

    /// The behavior the first magic word in `text` selects: a whitespace-separated word that,
    /// without surrounding punctuation, is `mock:` + a name [`Behavior::parse`] reads.
    pub fn from_magic(text: &str) -> Option<Behavior> {
        text.split_whitespace().find_map(|w| {
            let w = w.trim_matches(|c: char| !c.is_ascii_alphanumeric());
            w.strip_prefix("mock:")
                .and_then(|b| Behavior::parse(b).ok())
        })
    }
}

/// The kinds of request a mock tells apart, for [`MockProvider::served`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST …/chat/completions`.
    ChatCompletions,
    /// `POST …/embeddings`.
    Embeddings,
    /// `GET …/models`.
    Models,
    /// `POST …/messages`.
    Messages,
    /// `POST …:generateContent`.
    GenerateContent,
    /// `POST …:streamGenerateContent`.
    StreamGenerateContent,
    /// `POST …:embedContent`.
    EmbedContent,
    /// `POST …:batchEmbedContents`.
    BatchEmbedContents,
    /// Anything else (answered 404).
    Unknown,
}

impl Endpoint {
    /// Every endpoint, in declaration order.
    pub const ALL: [Endpoint; 9] = [
        Endpoint::ChatCompletions,
        Endpoint::Embeddings,
        Endpoint::Models,
        Endpoint::Messages,
        Endpoint::GenerateContent,
        Endpoint::StreamGenerateContent,
        Endpoint::EmbedContent,
        Endpoint::BatchEmbedContents,
        Endpoint::Unknown,
    ];

    /// A short name (`chat_completions`, `embeddings`, `models`, `messages`,
    /// `generate_content`, `stream_generate_content`, `embed_content`,
    /// `batch_embed_contents`, `unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Models => "models",
            Endpoint::Messages => "messages",
            Endpoint::GenerateContent => "generate_content",
            Endpoint::StreamGenerateContent => "stream_generate_content",
            Endpoint::EmbedContent => "embed_content",
            Endpoint::BatchEmbedContents => "batch_embed_contents",
            Endpoint::Unknown => "unknown",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One request as the mock received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target: path and query.
    pub path: String,
    /// Header fields in order, as sent.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
    /// How the mock classified it.
    pub endpoint: Endpoint,
}

impl Received {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// State shared by the handle and the connection threads.
struct Shared {
    behavior: Mutex<Behavior>,
    prefix: Mutex<String>,
    latency_us: AtomicU64,
    record: AtomicBool,
    seq: AtomicU64,
    served: [AtomicU64; Endpoint::ALL.len()],
    received: Mutex<VecDeque<Received>>,
}

impl Service for Shared {
    fn base_headers<'a>(&'a self, content_type: &'a str) -> [(&'static str, &'a [u8]); 2] {
        [
            ("content-type", content_type.as_bytes()),
            ("x-mock-llm", b"headwater"),
        ]
    }

    fn codec_error(&self, e: &headwater_http1::Error) -> (&'static str, Vec<u8>) {
        let body = error_body(Format::OpenAi, e.status().as_u16(), None, e.detail());
        ("application/json", body)
    }

    fn serve(conn: &mut Conn, head: RequestHead) -> Result<bool, Fail> {
        conn.serve(head)
    }
}

/// A mock of every LLM provider on one port, on its own threads. Stops (closes its listener,
/// ends its connection threads and joins them) on [`stop`](Self::stop) or drop.
pub struct MockProvider {
    server: Server<Shared>,
}

impl std::fmt::Debug for MockProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockProvider")
            .field("addr", &self.addr())
            .finish_non_exhaustive()
    }
}

impl MockProvider {
    /// Binds `addr` (port 0 allowed) and serves [`Behavior::Normal`].
    pub fn start(addr: SocketAddr) -> io::Result<MockProvider> {
        let shared = Shared {
            behavior: Mutex::new(Behavior::Normal),
            prefix: Mutex::new(DEFAULT_PREFIX.to_owned()),
            latency_us: AtomicU64::new(0),
            record: AtomicBool::new(true),
            seq: AtomicU64::new(1),
            served: std::array::from_fn(|_| AtomicU64::new(0)),
            received: Mutex::new(VecDeque::new()),
        };
        let server = Server::start(addr, "llm-mock".to_owned(), shared)?;
        Ok(MockProvider { server })
    }

    /// The address it listens on (with the actual port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://{addr}`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Changes the behavior for requests whose body is read from now on.
    pub fn set(&self, b: Behavior) {
        *lock(&self.shared().behavior) = b;
    }

    /// The current behavior.
    pub fn behavior(&self) -> Behavior {
        lock(&self.shared().behavior).clone()
    }

    /// Waits `d` before every answer (the `--latency` of `headwater mock-llm`).
    pub fn set_latency(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.shared().latency_us.store(us, Ordering::Release);
    }

    /// The latency added before every answer.
    pub fn latency(&self) -> Duration {
        Duration::from_micros(self.shared().latency_us.load(Ordering::Acquire))
    }

    /// The text put before the echoed user message ([`DEFAULT_PREFIX`] at start).
    pub fn set_prefix(&self, prefix: impl Into<String>) {
        *lock(&self.shared().prefix) = prefix.into();
    }

    /// Whether received requests are recorded for [`requests`](Self::requests) (on at start).
    pub fn set_recording(&self, on: bool) {
        self.shared().record.store(on, Ordering::Release);
    }

    /// The requests received so far (the last [`RECORD_LIMIT`]), oldest first.
    pub fn requests(&self) -> Vec<Received> {
        lock(&self.shared().received).iter().cloned().collect()
    }

    /// Forgets the recorded requests (the counters stay).
    pub fn clear_requests(&self) {
        lock(&self.shared().received).clear();
    }

    /// Requests received (body read) at `endpoint` so far, whatever was answered.
    pub fn served(&self, endpoint: Endpoint) -> u64 {
        self.shared().served[endpoint.index()].load(Ordering::Acquire)
    }

    /// Every endpoint's count, in [`Endpoint::ALL`] order.
    pub fn served_all(&self) -> Vec<(Endpoint, u64)> {
        Endpoint::ALL.iter().map(|&e| (e, self.served(e))).collect()
    }

    /// Requests received at all endpoints.
    pub fn total_served(&self) -> u64 {
        Endpoint::ALL.iter().map(|&e| self.served(e)).sum()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.server.connections()
    }

    /// Stops the server: closes the listener and every connection, and joins all threads.
    pub fn stop(self) {
        self.server.stop();
    }

    fn shared(&self) -> &Shared {
        self.server.service()
    }
}

// ---------------------------------------------------------------------------------------------
// Routing and request reading
// ---------------------------------------------------------------------------------------------

/// The wire format an answer is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    OpenAi,
    Anthropic,
    Gemini,
}

struct Route {
    endpoint: Endpoint,
    format: Format,
    /// The model named by the path (Azure deployment, Gemini model).
    model: Option<String>,
    /// The path has a `mistral` segment: stream usage the way Mistral sends it.
    mistral: bool,
}

fn route(method: &Method, path: &str, has: impl Fn(&str) -> bool) -> Route {
    let guess = if path.starts_with("/v1beta") || has("x-goog-api-key") {
        Format::Gemini
    } else if has("anthropic-version") || has("x-api-key") {
        Format::Anthropic
    } else {
        Format::OpenAi
    };
    let azure = || {
        path.split_once("/deployments/")
            .and_then(|(_, rest)| rest.split('/').next())
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
    };
    let mistral = path.split('/').any(|s| s == "mistral");
    let r = |endpoint, format, model| Route {
        endpoint,
        format,
        model,
        mistral,
    };
    if *method == Method::POST {
        if path.ends_with("/chat/completions") {
            return r(Endpoint::ChatCompletions, Format::OpenAi, azure());
        }
        if path.ends_with("/embeddings") {
            return r(Endpoint::Embeddings, Format::OpenAi, azure());
        }
        if path.ends_with("/messages") {
            return r(Endpoint::Messages, Format::Anthropic, None);
        }
        if let Some((_, last)) = path.rsplit_once("/models/") {
            if let Some((model, verb)) = last.split_once(':') {
                let endpoint = match verb {
                    "generateContent" => Some(Endpoint::GenerateContent),
                    "streamGenerateContent" => Some(Endpoint::StreamGenerateContent),
                    "embedContent" => Some(Endpoint::EmbedContent),
                    "batchEmbedContents" => Some(Endpoint::BatchEmbedContents),
                    _ => None,
                };
                if let Some(e) = endpoint.filter(|_| !model.is_empty() && !model.contains('/')) {
                    return r(e, Format::Gemini, Some(model.to_owned()));
                }
            }
        }
    } else if *method == Method::GET && path.ends_with("/models") {
        return r(Endpoint::Models, guess, None);
    }
    r(Endpoint::Unknown, guess, None)
}

// ---------------------------------------------------------------------------------------------
// Planning an answer
// ---------------------------------------------------------------------------------------------

/// How a chat answer ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Finish {
    Stop,
    Length,
    Tools,
}

impl Finish {
    fn openai(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Tools => "tool_calls",
        }
    }

    fn anthropic(self) -> &'static str {
        match self {
            Finish::Stop => "end_turn",
            Finish::Length => "max_tokens",
            Finish::Tools => "tool_use",
        }
    }

    fn gemini(self) -> &'static str {
        match self {
            Finish::Length => "MAX_TOKENS",
            Finish::Stop | Finish::Tools => "STOP",
        }
    }
}

/// What a chat request says, in any format.
#[derive(Default)]
struct Convo {
    model: Option<String>,
    stream: bool,
    include_usage: bool,
    /// Mistral's stream usage: on the finish chunk, whatever `stream_options` says.
    mistral_usage: bool,
    prompt_words: u64,
    /// The text of the last user message that has text.
    last_user: String,
    /// Whether that message ends the conversation.
    last_is_final: bool,
    /// Tools declared and not switched off by the tool choice.
    tools: bool,
    max_tokens: Option<u64>,
}

enum Reply {
    /// The text, as stream deltas.
    Text(Vec<String>),
    /// Tool names, one call each.
    Calls(Vec<String>),
}

/// A planned chat answer.
struct Chat {
    model: String,
    include_usage: bool,
    mistral_usage: bool,
    reply: Reply,
    finish: Finish,
    prompt: u64,
    completion: u64,
    seq: u64,
    created: u64,
}

impl Chat {
    fn text(&self) -> String {
        match &self.reply {
            Reply::Text(p) => p.concat(),
            Reply::Calls(_) => String::new(),
        }
    }
}

/// What a request is answered with when its behavior lets it through.
enum Answer {
    /// A whole JSON body; `tokens` paces [`Behavior::Slow`].
    Json { body: Vec<u8>, tokens: u64 },
    /// An event stream.
    Stream(StreamPlan),
}

/// The role of one stream event, for the faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Carries no content (role delta, message_start, block start, ping).
    Start,
    /// Carries content: text, a tool-call start or arguments.
    Content,
    /// Carries no content, between content events (content_block_stop).
    Other,
    /// Ends the stream (finish reason, usage, message_stop, `[DONE]`).
    End,
}

struct Frame {
    event: Option<&'static str>,
    data: String,
    kind: Kind,
}

fn frame(event: Option<&'static str>, data: impl Into<String>, kind: Kind) -> Frame {
    Frame {
        event,
        data: data.into(),
        kind,
    }
}

/// A stream answer: its events, what [`Behavior::FailBeforeFirstToken`] sends when the
/// format has no content-less first event, and the in-stream error event.
struct StreamPlan {
    /// SSE; otherwise a JSON array of chunks (Gemini without `alt=sse`).
    sse: bool,
    /// Event separator (Gemini's SSE uses CRLF line ends).
    crlf: bool,
    frames: Vec<Frame>,
    preamble: Option<Frame>,
    error: Frame,
}

/// The whitespace-separated word count of `s`.
fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// `s` cut into word deltas: each piece is a word with the whitespace before it; the pieces
/// concatenate to `s` (whitespace at the end joins the last piece).
fn pieces(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    for c in s.chars() {
        if c.is_whitespace() {
            if in_word {
                out.push(std::mem::take(&mut cur));
                in_word = false;
            }
        } else {
            in_word = true;
        }
        cur.push(c);
    }
    if in_word || out.is_empty() {
        if !cur.is_empty() {
            out.push(cur);
        }
    } else if let Some(last) = out.last_mut() {
        last.push_str(&cur);
    }
    out
}

/// The tool names `call:NAME` words in `text` ask for, in order.
fn call_names(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter_map(|w| {
            let w = w.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            let name = w.strip_prefix("call:")?;
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            ok.then(|| name.to_owned())
        })
        .collect()
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Text of a content value: a string, or the `text` of every item of an array, space-joined.
fn text_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|p| str_of(p, "text"))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Words in every string inside `v` (Gemini function responses).
fn words_in_strings(v: &Value) -> u64 {
    match v {
        Value::String(s) => words(s),
        Value::Array(a) => a.iter().map(words_in_strings).sum(),
        Value::Object(o) => o.values().map(words_in_strings).sum(),
        _ => 0,
    }
}

fn nonempty_array(v: Option<&Value>) -> bool {
    v.and_then(Value::as_array).is_some_and(|a| !a.is_empty())
}

/// Finds the last user message with text, in a list of messages where `text(m)` gives a
/// user message's text (None for other roles).
fn last_user<'a>(
    messages: &'a [Value],
    text: impl Fn(&'a Value) -> Option<String>,
) -> (String, bool) {
    for (i, m) in messages.iter().enumerate().rev() {
        if let Some(t) = text(m).filter(|t| !t.trim().is_empty()) {
            return (t, i + 1 == messages.len());
        }
    }
    (String::new(), false)
}

fn openai_convo(v: &Value, path_model: Option<String>, mistral: bool) -> Convo {
    let empty = Vec::new();
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let prompt_words = messages
        .iter()
        .map(|m| words(&text_of(m.get("content"))))
        .sum();
    let (last_user, last_is_final) = last_user(messages, |m| {
        (str_of(m, "role") == Some("user")).then(|| text_of(m.get("content")))
    });
    Convo {
        model: str_of(v, "model").map(str::to_owned).or(path_model),
        stream: v.get("stream").and_then(Value::as_bool) == Some(true),
        include_usage: v
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true),
        mistral_usage: mistral,
        prompt_words,
        last_user,
        last_is_final,
        tools: nonempty_array(v.get("tools")) && str_of(v, "tool_choice") != Some("none"),
        max_tokens: v
            .get("max_completion_tokens")
            .or_else(|| v.get("max_tokens"))
            .and_then(Value::as_u64),
    }
}

fn anthropic_convo(v: &Value) -> Convo {
    let empty = Vec::new();
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let block_words = |b: &Value| -> u64 {
        match str_of(b, "type") {
            Some("text") => str_of(b, "text").map_or(0, words),
            Some("tool_result") => words(&text_of(b.get("content"))),
            _ => 0,
        }
    };
    let content_words = |c: Option<&Value>| -> u64 {
        match c {
            Some(Value::String(s)) => words(s),
            Some(Value::Array(blocks)) => blocks.iter().map(block_words).sum(),
            _ => 0,
        }
    };
    let prompt_words = words(&text_of(v.get("system")))
        + messages
            .iter()
            .map(|m| content_words(m.get("content")))
            .sum::<u64>();
    let (last_user, last_is_final) = last_user(messages, |m| {
        if str_of(m, "role") != Some("user") {
            return None;
        }
        Some(match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(blocks)) => blocks
                .iter()
                .filter(|b| str_of(b, "type") == Some("text"))
                .filter_map(|b| str_of(b, "text"))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
    });
    Convo {
        model: str_of(v, "model").map(str::to_owned),
        stream: v.get("stream").and_then(Value::as_bool) == Some(true),
        include_usage: true,
        mistral_usage: false,
        prompt_words,
        last_user,
        last_is_final,
        tools: nonempty_array(v.get("tools"))
            && v.pointer("/tool_choice/type").and_then(Value::as_str) != Some("none"),
        max_tokens: v.get("max_tokens").and_then(Value::as_u64),
    }
}

fn gemini_convo(v: &Value, path_model: Option<String>, stream: bool) -> Convo {
    let empty = Vec::new();
    let contents = v
        .get("contents")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let part_words = |p: &Value| -> u64 {
        if let Some(t) = str_of(p, "text") {
            words(t)
        } else if let Some(r) = p.pointer("/functionResponse/response") {
            words_in_strings(r)
        } else {
            0
        }
    };
    let parts_words = |c: &Value| -> u64 {
        c.get("parts")
            .and_then(Value::as_array)
            .map_or(0, |ps| ps.iter().map(part_words).sum())
    };
    let prompt_words = v.get("systemInstruction").map_or(0, parts_words)
        + contents.iter().map(parts_words).sum::<u64>();
    let (last_user, last_is_final) = last_user(contents, |c| {
        if str_of(c, "role").is_some_and(|r| r != "user") {
            return None;
        }
        Some(text_of(c.get("parts")))
    });
    let tools = v.get("tools").and_then(Value::as_array).is_some_and(|ts| {
        ts.iter()
            .any(|t| nonempty_array(t.get("functionDeclarations")))
    }) && v
        .pointer("/toolConfig/functionCallingConfig/mode")
        .and_then(Value::as_str)
        != Some("NONE");
    Convo {
        model: path_model,
        stream,
        include_usage: true,
        mistral_usage: false,
        prompt_words,
        last_user,
        last_is_final,
        tools,
        max_tokens: v
            .pointer("/generationConfig/maxOutputTokens")
            .and_then(Value::as_u64),
    }
}

fn plan_chat(c: &Convo, behavior: &Behavior, prefix: &str, seq: u64) -> Chat {
    let calls = if c.tools && c.last_is_final && !matches!(behavior, Behavior::Reply(_)) {
        call_names(&c.last_user)
    } else {
        Vec::new()
    };
    let (reply, finish, completion) = if calls.is_empty() {
        let text = match behavior {
            Behavior::Reply(t) => t.clone(),
            _ => format!("{prefix}{}", c.last_user),
        };
        let mut p = pieces(&text);
        let mut finish = Finish::Stop;
        if let Some(max) = c.max_tokens {
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            if p.len() > max {
                p.truncate(max);
                finish = Finish::Length;
            }
        }
        let n = p.iter().map(|s| words(s)).sum();
        (Reply::Text(p), finish, n)
    } else {
        let n = calls.len() as u64 * TOOL_CALL_TOKENS;
        (Reply::Calls(calls), Finish::Tools, n)
    };
    Chat {
        model: c.model.clone().unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
        include_usage: c.include_usage,
        mistral_usage: c.mistral_usage,
        reply,
        finish,
        prompt: c.prompt_words,
        completion,
        seq,
        created: unix_now(),
    }
}

// --- OpenAI ----------------------------------------------------------------------------------

fn openai_call_id(seq: u64, i: usize) -> String {
    format!("call_mock{seq}x{i}")
}

fn openai_usage(c: &Chat) -> Value {
    json!({
        "prompt_tokens": c.prompt,
        "completion_tokens": c.completion,
        "total_tokens": c.prompt + c.completion,
    })
}

fn openai_json(c: &Chat) -> Vec<u8> {
    let mut message = json!({"role": "assistant", "content": null, "refusal": null});
    match &c.reply {
        Reply::Text(_) => message["content"] = Value::from(c.text()),
        Reply::Calls(names) => {
            let calls: Vec<Value> = names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    json!({
                        "id": openai_call_id(c.seq, i),
                        "type": "function",
                        "function": {"name": n, "arguments": TOOL_ARGUMENTS},
                    })
                })
                .collect();
            message["tool_calls"] = Value::from(calls);
        }
    }
    json!({
        "id": format!("chatcmpl-mock{}", c.seq),
        "object": "chat.completion",
        "created": c.created,
        "model": c.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": c.finish.openai(),
        }],
        "usage": openai_usage(c),
        "system_fingerprint": "fp_mock",
    })
    .to_string()
    .into_bytes()
}

fn openai_stream(c: &Chat) -> StreamPlan {
    let id = format!("chatcmpl-mock{}", c.seq);
    let chunk = |delta: Value, finish: Value| -> Value {
        let mut v = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": c.created,
            "model": c.model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if c.include_usage && !c.mistral_usage {
            v["usage"] = Value::Null;
        }
        v
    };
    let delta = |d: Value, kind: Kind| frame(None, chunk(d, Value::Null).to_string(), kind);
    let first = match c.reply {
        Reply::Text(_) => json!({"role": "assistant", "content": "", "refusal": null}),
        Reply::Calls(_) => json!({"role": "assistant", "content": null, "refusal": null}),
    };
    let mut frames = vec![delta(first, Kind::Start)];
    match &c.reply {
        Reply::Text(pieces) => {
            for p in pieces {
                frames.push(delta(json!({ "content": p }), Kind::Content));
            }
        }
        Reply::Calls(names) => {
            for (i, n) in names.iter().enumerate() {
                let start = json!({"tool_calls": [{
                    "index": i,
                    "id": openai_call_id(c.seq, i),
                    "type": "function",
                    "function": {"name": n, "arguments": ""},
                }]});
                frames.push(delta(start, Kind::Content));
                for piece in TOOL_ARGUMENT_PIECES {
                    let d = json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]});
                    frames.push(delta(d, Kind::Content));
                }
            }
        }
    }
    let mut finish = chunk(json!({}), Value::from(c.finish.openai()));
    if c.mistral_usage {
        finish["usage"] = openai_usage(c);
    }
    frames.push(frame(None, finish.to_string(), Kind::End));
    if c.include_usage && !c.mistral_usage {
        let usage = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": c.created,
            "model": c.model,
            "system_fingerprint": "fp_mock",
            "choices": [],
            "usage": openai_usage(c),
        });
        frames.push(frame(None, usage.to_string(), Kind::End));
    }
    frames.push(frame(None, "[DONE]", Kind::End));
    let error = json!({"error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": null,
        "code": null,
    }});
    StreamPlan {
        sse: true,
        crlf: false,
        frames,
        preamble: None,
        error: frame(None, error.to_string(), Kind::End),
    }
}

// --- Anthropic -------------------------------------------------------------------------------

fn anthropic_tool_id(seq: u64, i: usize) -> String {
    format!("toolu_mock{seq}x{i}")
}

fn tool_input() -> Value {
    serde_json::from_str(TOOL_ARGUMENTS).unwrap_or(Value::Null)
}

fn anthropic_json(c: &Chat) -> Vec<u8> {
    let content: Vec<Value> = match &c.reply {
        Reply::Text(p) if p.is_empty() => Vec::new(),
        Reply::Text(_) => vec![json!({"type": "text", "text": c.text()})],
        Reply::Calls(names) => names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                json!({
                    "type": "tool_use",
                    "id": anthropic_tool_id(c.seq, i),
                    "name": n,
                    "input": tool_input(),
                })
            })
            .collect(),
    };
    json!({
        "id": format!("msg_mock{}", c.seq),
        "type": "message",
        "role": "assistant",
        "model": c.model,
        "content": content,
        "stop_reason": c.finish.anthropic(),
        "stop_sequence": null,
        "usage": {"input_tokens": c.prompt, "output_tokens": c.completion},
    })
    .to_string()
    .into_bytes()
}

fn anthropic_stream(c: &Chat) -> StreamPlan {
    let start = json!({"type": "message_start", "message": {
        "id": format!("msg_mock{}", c.seq),
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": c.model,
        "stop_reason": null,
        "stop_sequence": null,
        "usage": {"input_tokens": c.prompt, "output_tokens": 1},
    }});
    let mut frames = vec![frame(Some("message_start"), start.to_string(), Kind::Start)];
    let block_stop = |i: usize| {
        frame(
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": i}).to_string(),
            Kind::Other,
        )
    };
    match &c.reply {
        Reply::Text(pieces) => {
            let b = json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}});
            frames.push(frame(
                Some("content_block_start"),
                b.to_string(),
                Kind::Start,
            ));
            frames.push(frame(Some("ping"), r#"{"type": "ping"}"#, Kind::Start));
            for p in pieces {
                let d = json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": p}});
                frames.push(frame(
                    Some("content_block_delta"),
                    d.to_string(),
                    Kind::Content,
                ));
            }
            frames.push(block_stop(0));
        }
        Reply::Calls(names) => {
            frames.push(frame(Some("ping"), r#"{"type": "ping"}"#, Kind::Start));
            for (i, n) in names.iter().enumerate() {
                let b = json!({"type": "content_block_start", "index": i, "content_block": {
                    "type": "tool_use", "id": anthropic_tool_id(c.seq, i), "name": n, "input": {},
                }});
                frames.push(frame(
                    Some("content_block_start"),
                    b.to_string(),
                    Kind::Content,
                ));
                for piece in TOOL_ARGUMENT_PIECES {
                    let d = json!({"type": "content_block_delta", "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": piece}});
                    frames.push(frame(
                        Some("content_block_delta"),
                        d.to_string(),
                        Kind::Content,
                    ));
                }
                frames.push(block_stop(i));
            }
        }
    }
    let delta = json!({"type": "message_delta",
        "delta": {"stop_reason": c.finish.anthropic(), "stop_sequence": null},
        "usage": {"output_tokens": c.completion}});
    frames.push(frame(Some("message_delta"), delta.to_string(), Kind::End));
    frames.push(frame(
        Some("message_stop"),
        r#"{"type":"message_stop"}"#,
        Kind::End,
    ));
    let error =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    StreamPlan {
        sse: true,
        crlf: false,
        frames,
        preamble: None,
        error: frame(Some("error"), error.to_string(), Kind::End),
    }
}

// --- Gemini ----------------------------------------------------------------------------------

fn gemini_usage(prompt: u64, completion: u64) -> Value {
    json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion,
        "totalTokenCount": prompt + completion,
    })
}

fn gemini_parts(c: &Chat) -> Vec<Value> {
    match &c.reply {
        Reply::Text(_) => vec![json!({"text": c.text()})],
        Reply::Calls(names) => names
            .iter()
            .map(|n| json!({"functionCall": {"name": n, "args": tool_input()}}))
            .collect(),
    }
}

fn gemini_response(c: &Chat, parts: Vec<Value>, finish: Option<&str>, usage: Value) -> String {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if let Some(f) = finish {
        candidate["finishReason"] = Value::from(f);
    }
    json!({
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": c.model,
        "responseId": format!("mock{}", c.seq),
    })
    .to_string()
}

fn gemini_json(c: &Chat) -> Vec<u8> {
    gemini_response(
        c,
        gemini_parts(c),
        Some(c.finish.gemini()),
        gemini_usage(c.prompt, c.completion),
    )
    .into_bytes()
}

fn gemini_stream(c: &Chat, sse: bool) -> StreamPlan {
    let mut frames = Vec::new();
    match &c.reply {
        Reply::Text(pieces) => {
            let mut sent = 0;
            for p in pieces {
                sent += words(p);
                frames.push(frame(
                    None,
                    gemini_response(
                        c,
                        vec![json!({ "text": p })],
                        None,
                        gemini_usage(c.prompt, sent),
                    ),
                    Kind::Content,
                ));
            }
        }
        Reply::Calls(_) => frames.push(frame(
            None,
            gemini_response(
                c,
                gemini_parts(c),
                None,
                gemini_usage(c.prompt, c.completion),
            ),
            Kind::Content,
        )),
    }
    frames.push(frame(
        None,
        gemini_response(
            c,
            vec![json!({"text": ""})],
            Some(c.finish.gemini()),
            gemini_usage(c.prompt, c.completion),
        ),
        Kind::End,
    ));
    let preamble = gemini_response(
        c,
        vec![json!({"text": ""})],
        None,
        json!({"promptTokenCount": c.prompt, "totalTokenCount": c.prompt}),
    );
    let error = json!({"error": {
        "code": 503,
        "message": "The model is overloaded. Please try again later.",
        "status": "UNAVAILABLE",
    }});
    StreamPlan {
        sse,
        crlf: true,
        frames,
        preamble: Some(frame(None, preamble, Kind::Start)),
        error: frame(None, error.to_string(), Kind::End),
    }
}

// --- Embeddings and models -------------------------------------------------------------------

/// A deterministic unit vector of `dims` numbers for `text`.
fn embedding(text: &str, dims: u64) -> Vec<f32> {
    let mut h = Fnv1a64::new();
    h.update(text.as_bytes());
    let mut x = h.value() | 1;
    let mut v: Vec<f32> = (0..dims)
        .map(|_| (xorshift64_unit(&mut x) * 2.0 - 1.0) as f32)
        .collect();
    let norm = v.iter().map(|f| f * f).sum::<f32>().sqrt();
    if norm > 0.0 {
        for f in &mut v {
            *f /= norm;
        }
    }
    v
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= chunk.len() {
                A[((n >> shift) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

fn dims_of(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_u64)
        .unwrap_or(DEFAULT_DIMENSIONS)
        .clamp(1, MAX_DIMENSIONS)
}

type Prepared = Result<(Behavior, Answer), (u16, String)>;

fn openai_embeddings(v: &Value, path_model: Option<String>, server: &Behavior) -> Prepared {
    let bad = |m: &str| Err((400, m.to_owned()));
    // (text to embed, tokens)
    let tokens_text = |t: &[Value]| -> (String, u64) {
        let s: Vec<String> = t.iter().map(Value::to_string).collect();
        (s.join(" "), t.len() as u64)
    };
    let inputs: Vec<(String, u64)> = match v.get("input") {
        Some(Value::String(s)) => vec![(s.clone(), words(s))],
        Some(Value::Array(items)) if !items.is_empty() => match &items[0] {
            Value::Number(_) => vec![tokens_text(items)],
            Value::Array(_) => items
                .iter()
                .map(|t| tokens_text(t.as_array().map_or(&[][..], Vec::as_slice)))
                .collect(),
            _ => items
                .iter()
                .map(|t| {
                    let s = t.as_str().unwrap_or_default().to_owned();
                    let n = words(&s);
                    (s, n)
                })
                .collect(),
        },
        _ => return bad("`input` must be a string or a non-empty array"),
    };
    let behavior = Behavior::from_magic(&inputs[0].0).unwrap_or_else(|| server.clone());
    let dims = dims_of(v.get("dimensions").or_else(|| v.get("output_dimension")));
    let b64 = str_of(v, "encoding_format") == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, (text, _))| {
            let e = embedding(text, dims);
            let e = if b64 {
                let bytes: Vec<u8> = e.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::from(base64(&bytes))
            } else {
                Value::from(e)
            };
            json!({"object": "embedding", "index": i, "embedding": e})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|(_, n)| n).sum();
    let model = str_of(v, "model")
        .map(str::to_owned)
        .or(path_model)
        .unwrap_or_else(|| DEFAULT_MODEL.to_owned());
    let body = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    Ok((
        behavior,
        Answer::Json {
            body: body.to_string().into_bytes(),
            tokens: 1,
        },
    ))
}

fn gemini_embeddings(v: &Value, batch: bool, server: &Behavior) -> Prepared {
    let one = |r: &Value| -> (String, u64) {
        (
            text_of(r.pointer("/content/parts")),
            dims_of(r.get("outputDimensionality")),
        )
    };
    let requests: Vec<(String, u64)> = if batch {
        match v.get("requests").and_then(Value::as_array) {
            Some(rs) if !rs.is_empty() => rs.iter().map(one).collect(),
            _ => return Err((400, "`requests` must be a non-empty array".to_owned())),
        }
    } else {
        if v.pointer("/content/parts").is_none() {
            return Err((400, "`content.parts` is required".to_owned()));
        }
        vec![one(v)]
    };
    let behavior = Behavior::from_magic(&requests[0].0).unwrap_or_else(|| server.clone());
    let values: Vec<Value> = requests
        .iter()
        .map(|(t, d)| json!({ "values": embedding(t, *d) }))
        .collect();
    let body = if batch {
        json!({ "embeddings": values })
    } else {
        json!({ "embedding": values[0] })
    };
    Ok((
        behavior,
        Answer::Json {
            body: body.to_string().into_bytes(),
            tokens: 1,
        },
    ))
}

fn models_body(format: Format) -> Vec<u8> {
    let v = match format {
        Format::OpenAi => json!({
            "object": "list",
            "data": MODELS.iter().map(|m| json!({
                "id": m, "object": "model", "created": 1_700_000_000u64, "owned_by": "headwater-mock",
            })).collect::<Vec<_>>(),
        }),
        Format::Anthropic => json!({
            "data": MODELS.iter().map(|m| json!({
                "type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z",
            })).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": MODELS[0],
            "last_id": MODELS[MODELS.len() - 1],
        }),
        Format::Gemini => json!({
            "models": MODELS.iter().map(|m| json!({
                "name": format!("models/{m}"),
                "version": "001",
                "displayName": m,
                "inputTokenLimit": 1_048_576,
                "outputTokenLimit": 65_536,
                "supportedGenerationMethods":
                    ["generateContent", "countTokens", "embedContent", "batchEmbedContents"],
            })).collect::<Vec<_>>(),
        }),
    };
    v.to_string().into_bytes()
}

/// The provider's error body for `code`.
fn error_body(format: Format, code: u16, retry_after: Option<u64>, message: &str) -> Vec<u8> {
    let v = match format {
        Format::OpenAi => {
            let (typ, c) = match code {
                401 => ("invalid_request_error", Some("invalid_api_key")),
                429 => ("requests", Some("rate_limit_exceeded")),
                400..=499 => ("invalid_request_error", None),
                _ => ("server_error", None),
            };
            json!({"error": {"message": message, "type": typ, "param": null, "code": c}})
        }
        Format::Anthropic => {
            let typ = match code {
                401 => "authentication_error",
                402 => "billing_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                504 => "timeout_error",
                503 | 529 => "overloaded_error",
                400..=499 => "invalid_request_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": typ, "message": message}})
        }
        Format::Gemini => {
            let status = match code {
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                409 => "ABORTED",
                429 => "RESOURCE_EXHAUSTED",
                499 => "CANCELLED",
                503 => "UNAVAILABLE",
                504 => "DEADLINE_EXCEEDED",
                400..=499 => "INVALID_ARGUMENT",
                _ => "INTERNAL",
            };
            let mut e = json!({"code": code, "message": message, "status": status});
            if let Some(s) = retry_after {
                e["details"] = json!([{
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": format!("{s}s"),
                }]);
            }
            json!({ "error": e })
        }
    };
    v.to_string().into_bytes()
}

/// The canned message of a [`Behavior::Status`] error.
fn status_message(code: u16) -> String {
    let reason = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error");
    match code {
        429 => "mock: rate limit reached, please try again later".to_owned(),
        _ => format!("mock: HTTP {code} {reason}"),
    }
}

/// The parts of a request that [`prepare`] reads.
#[derive(Clone, Copy)]
struct Incoming<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    body: &'a [u8],
}

/// Plans the answer to a routed request: the behavior that applies and the normal answer, or
/// the error status and message that replaces it.
fn prepare(
    route: &Route,
    req: &Incoming<'_>,
    server: &Behavior,
    prefix: &str,
    seq: u64,
) -> Prepared {
    let Incoming {
        method,
        path,
        query,
        body,
    } = *req;
    let chat = |c: Convo, format: Format, sse: bool| -> Prepared {
        let behavior = Behavior::from_magic(&c.last_user).unwrap_or_else(|| server.clone());
        let plan = plan_chat(&c, &behavior, prefix, seq);
        let answer = match (format, c.stream) {
            (Format::OpenAi, false) => Answer::Json {
                body: openai_json(&plan),
                tokens: plan.completion,
            },
            (Format::Anthropic, false) => Answer::Json {
                body: anthropic_json(&plan),
                tokens: plan.completion,
            },
            (Format::Gemini, false) => Answer::Json {
                body: gemini_json(&plan),
                tokens: plan.completion,
            },
            (Format::OpenAi, true) => Answer::Stream(openai_stream(&plan)),
            (Format::Anthropic, true) => Answer::Stream(anthropic_stream(&plan)),
            (Format::Gemini, true) => Answer::Stream(gemini_stream(&plan, sse)),
        };
        Ok((behavior, answer))
    };
    match route.endpoint {
        Endpoint::Unknown => return Err((404, format!("mock: no route for {method} {path}"))),
        Endpoint::Models => {
            return Ok((
                server.clone(),
                Answer::Json {
                    body: models_body(route.format),
                    tokens: 1,
                },
            ))
        }
        _ => {}
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        (
            400,
            format!("mock: the request body is not valid JSON: {e}"),
        )
    })?;
    if !v.is_object() {
        return Err((
            400,
            "mock: the request body must be a JSON object".to_owned(),
        ));
    }
    let model = route.model.clone();
    match route.endpoint {
        Endpoint::ChatCompletions => {
            chat(openai_convo(&v, model, route.mistral), Format::OpenAi, true)
        }
        Endpoint::Messages => chat(anthropic_convo(&v), Format::Anthropic, true),
        Endpoint::GenerateContent => chat(gemini_convo(&v, model, false), Format::Gemini, true),
        Endpoint::StreamGenerateContent => {
            let sse = query.split('&').any(|p| p == "alt=sse");
            chat(gemini_convo(&v, model, true), Format::Gemini, sse)
        }
        Endpoint::Embeddings => openai_embeddings(&v, model, server),
        Endpoint::EmbedContent => gemini_embeddings(&v, false, server),
        Endpoint::BatchEmbedContents => gemini_embeddings(&v, true, server),
        Endpoint::Models | Endpoint::Unknown => Err((404, "unreachable".to_owned())),
    }
}

// ---------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------

/// Writes stream frames in the answer's framing.
struct Framing {
    /// HTTP chunked (else close-delimited, for HTTP/1.0).
    chunked: bool,
    sse: bool,
    crlf: bool,
    /// No JSON-array element written yet.
    first: bool,
}

impl Framing {
    fn encode(&mut self, f: &Frame, out: &mut Vec<u8>) {
        let nl = if self.crlf { "\r\n" } else { "\n" };
        if self.sse {
            if let Some(e) = f.event {
                out.extend_from_slice(format!("event: {e}{nl}").as_bytes());
            }
            out.extend_from_slice(format!("data: {}{nl}{nl}", f.data).as_bytes());
        } else {
            out.extend_from_slice(if self.first { b"[" } else { b",\r\n" });
            out.extend_from_slice(f.data.as_bytes());
        }
        self.first = false;
    }

    /// What ends the body's content (the JSON array's `]`).
    fn close(&mut self, out: &mut Vec<u8>) {
        if !self.sse {
            out.extend_from_slice(if self.first { b"[]" } else { b"]" });
        }
    }
}

/// One accepted connection of a [`MockProvider`].
type Conn = loopback_server::Conn<Shared>;

impl Conn {
    /// Reads the whole request body (sending `100 Continue` first when the client waits for
    /// it); [`Fail::TooLarge`] beyond [`MAX_BODY`].
    fn read_all(&mut self, head: &RequestHead) -> Result<Vec<u8>, Fail> {
        if let BodyKind::Length(n) = head.body_kind() {
            if n > MAX_BODY as u64 {
                return Err(Fail::TooLarge);
            }
        }
        let mut body = Vec::new();
        self.read_body(head, |b| {
            if body.len() + b.len() > MAX_BODY {
                return Err(Fail::TooLarge);
            }
            body.extend_from_slice(b);
            Ok(())
        })?;
        Ok(body)
    }

    fn serve(&mut self, head: RequestHead) -> Result<bool, Fail> {
        if self.stalled {
            self.discard_body(&head)?;
            return Ok(true);
        }
        let body = match self.read_all(&head) {
            Ok(b) => b,
            Err(Fail::TooLarge) => {
                let msg = format!("mock: request bodies are limited to {MAX_BODY} bytes");
                let body = error_body(Format::OpenAi, 413, None, &msg);
                self.respond(&head, 413, "application/json", &[], &body, false)?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let shared = Arc::clone(&self.service);
        let target = lossy(head.target());
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let route = route(head.method(), path, |name| head.header(name).is_some());
        shared.served[route.endpoint.index()].fetch_add(1, Ordering::AcqRel);
        let server = lock(&shared.behavior).clone();
        let prefix = lock(&shared.prefix).clone();
        let seq = shared.seq.fetch_add(1, Ordering::AcqRel);
        let method = head.method().as_str();
        let incoming = Incoming {
            method,
            path,
            query,
            body: &body,
        };
        let prepared = prepare(&route, &incoming, &server, &prefix, seq);
        // Off (the benchmarks), a request costs no copy of its head.
        if shared.record.load(Ordering::Acquire) {
            let received = Received {
                method: method.to_owned(),
                headers: head.headers().map(|(n, v)| (lossy(n), lossy(v))).collect(),
                path: target,
                body,
                endpoint: route.endpoint,
            };
            let mut r = lock(&shared.received);
            if r.len() >= RECORD_LIMIT {
                r.pop_front();
            }
            r.push_back(received);
        }
        let latency = Duration::from_micros(shared.latency_us.load(Ordering::Acquire));
        let (behavior, answer) = match prepared {
            Ok(p) => p,
            Err((code, message)) => {
                self.sleep(latency)?;
                let body = error_body(route.format, code, None, &message);
                return self.respond(&head, code, "application/json", &[], &body, true);
            }
        };
        if behavior == Behavior::Stall {
            self.stalled = true;
            return Ok(true);
        }
        self.sleep(latency)?;
        let streaming = matches!(answer, Answer::Stream(_));
        match behavior {
            Behavior::Reset => return self.reset(),
            Behavior::Status { code, retry_after } => {
                let body = error_body(route.format, code, retry_after, &status_message(code));
                let ra = retry_after.map(|s| s.to_string());
                let extra: Vec<(&str, &[u8])> = ra
                    .as_deref()
                    .map(|s| vec![("retry-after", s.as_bytes())])
                    .unwrap_or_default();
                return self.respond(&head, code, "application/json", &extra, &body, true);
            }
            Behavior::Garbage if !streaming => {
                return self.respond(&head, 200, "application/json", &[], GARBAGE_BODY, true);
            }
            Behavior::MidStreamError if !streaming => {
                let body = error_body(route.format, 500, None, &status_message(500));
                return self.respond(&head, 500, "application/json", &[], &body, true);
            }
            _ => {}
        }
        match answer {
            Answer::Json { body, tokens } => self.json_answer(&head, &body, tokens, &behavior),
            Answer::Stream(plan) => self.stream_answer(&head, &plan, &behavior),
        }
    }

    /// A whole JSON answer under a stream-shaped fault or a slow behavior.
    fn json_answer(
        &mut self,
        head: &RequestHead,
        body: &[u8],
        tokens: u64,
        behavior: &Behavior,
    ) -> Result<bool, Fail> {
        let cut = match behavior {
            Behavior::FailBeforeFirstToken => Some(0),
            Behavior::FailAfterTokens(_) => Some(body.len() / 2),
            Behavior::Slow {
                first_token_ms,
                per_token_ms,
            } => {
                let ms = first_token_ms
                    .saturating_add(per_token_ms.saturating_mul(tokens.saturating_sub(1)));
                self.sleep(Duration::from_millis(ms))?;
                None
            }
            _ => None,
        };
        match cut {
            None => self.respond(head, 200, "application/json", &[], body, true),
            Some(n) => {
                let mut out = BytesMut::with_capacity(256 + n);
                self.put_head(
                    &mut out,
                    StatusCode::OK,
                    "application/json",
                    &[],
                    BodyKind::Length(body.len() as u64),
                    head.version(),
                    false,
                );
                out.extend_from_slice(&body[..n]);
                self.started = true;
                self.write_all(&out)?;
                Ok(false)
            }
        }
    }

    fn stream_answer(
        &mut self,
        head: &RequestHead,
        plan: &StreamPlan,
        behavior: &Behavior,
    ) -> Result<bool, Fail> {
        let chunked = head.version() != Version::HTTP_10;
        let keep = chunked && head.keep_alive();
        let ctype = if plan.sse {
            "text/event-stream"
        } else {
            "application/json"
        };
        let mut out = BytesMut::with_capacity(256);
        self.put_head(
            &mut out,
            StatusCode::OK,
            ctype,
            &[("cache-control", b"no-cache")],
            if chunked {
                BodyKind::Chunked
            } else {
                BodyKind::Close
            },
            head.version(),
            keep,
        );
        self.started = true;
        self.write_all(&out)?;
        let mut fr = Framing {
            chunked,
            sse: plan.sse,
            crlf: plan.crlf,
            first: true,
        };
        match *behavior {
            Behavior::Garbage => {
                let g = frame(None, GARBAGE_DATA, Kind::Content);
                self.send_frame(&mut fr, &g)?;
            }
            Behavior::FailBeforeFirstToken => {
                let pre: Vec<&Frame> = plan
                    .frames
                    .iter()
                    .take_while(|f| f.kind == Kind::Start)
                    .collect();
                if pre.is_empty() {
                    if let Some(p) = &plan.preamble {
                        self.send_frame(&mut fr, p)?;
                    }
                }
                for f in pre {
                    self.send_frame(&mut fr, f)?;
                }
                return Ok(false);
            }
            Behavior::FailAfterTokens(n) => {
                self.send_until(&mut fr, plan, n)?;
                return Ok(false);
            }
            Behavior::MidStreamError => {
                self.send_until(&mut fr, plan, MID_STREAM_TOKENS)?;
                self.send_frame(&mut fr, &plan.error)?;
            }
            Behavior::Slow {
                first_token_ms,
                per_token_ms,
            } => {
                let mut sent = 0;
                for f in &plan.frames {
                    if f.kind == Kind::Content {
                        let ms = if sent == 0 {
                            first_token_ms
                        } else {
                            per_token_ms
                        };
                        self.sleep(Duration::from_millis(ms))?;
                        sent += 1;
                    }
                    self.send_frame(&mut fr, f)?;
                }
            }
            _ => {
                for f in &plan.frames {
                    self.send_frame(&mut fr, f)?;
                }
            }
        }
        let mut tail = Vec::new();
        fr.close(&mut tail);
        if chunked {
            let mut out = BytesMut::with_capacity(tail.len() + 16);
            if !tail.is_empty() {
                encode_chunk(&tail, &mut out);
            }
            out.extend_from_slice(LAST_CHUNK);
            self.write_all(&out)?;
        } else {
            self.write_all(&tail)?;
        }
        Ok(keep)
    }

    /// Sends frames up to the first end event, stopping after `n` content events.
    fn send_until(&mut self, fr: &mut Framing, plan: &StreamPlan, n: usize) -> Result<(), Fail> {
        let mut sent = 0;
        for f in &plan.frames {
            if f.kind == Kind::End || (f.kind == Kind::Content && sent == n) {
                break;
            }
            if f.kind == Kind::Content {
                sent += 1;
            }
            self.send_frame(fr, f)?;
        }
        Ok(())
    }

    fn send_frame(&mut self, fr: &mut Framing, f: &Frame) -> Result<(), Fail> {
        let mut data = Vec::with_capacity(f.data.len() + 32);
        fr.encode(f, &mut data);
        if fr.chunked {
            let mut out = BytesMut::with_capacity(data.len() + 16);
            encode_chunk(&data, &mut out);
            self.write_all(&out)
        } else {
            self.write_all(&data)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_concatenate_to_the_text() {
        for s in ["echo: hello world", "  a  b ", "one", "", "x\ny\tz  "] {
            let p = pieces(s);
            assert_eq!(p.concat(), s, "{s:?}");
            assert_eq!(p.iter().map(|x| words(x)).sum::<u64>(), words(s), "{s:?}");
        }
        assert_eq!(pieces("echo: hi there"), ["echo:", " hi", " there"]);
    }

    #[test]
    fn magic_words_and_calls() {
        assert_eq!(
            Behavior::from_magic("hello mock:stall."),
            Some(Behavior::Stall)
        );
        assert_eq!(
            Behavior::from_magic("(mock:status:429:3)"),
            Some(Behavior::Status {
                code: 429,
                retry_after: Some(3)
            })
        );
        assert_eq!(Behavior::from_magic("mock:bogus hello"), None);
        assert_eq!(
            call_names("please call:get_weather, call:get_time."),
            ["get_weather", "get_time"]
        );
    }

    #[test]
    fn base64_matches_known_values() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
