//! The AI gateway layer, sans-IO: pure transformations between the formats clients speak
//! (OpenAI Chat Completions, Anthropic Messages) and the formats providers speak (OpenAI,
//! Azure OpenAI, Anthropic, Gemini, Mistral, any OpenAI-compatible server), through one
//! provider-neutral model. No sockets, no async, no clock: the engine wires it to the network
//! and passes the time in.
//!
//! The path of one chat request through the crate:
//!
//! 1. [`Ingress::parse_request`] — client body → [`ChatRequest`] (400s name the field).
//! 2. [`Deployment::chat_request`] — → [`UpstreamRequest`] (method, path, headers with the
//!    key marked sensitive, JSON body) for one deployment.
//! 3. Without streaming: [`Deployment::parse_chat_response`] on a 2xx body →
//!    [`ChatResponse`] → [`Ingress::render_response`]; on any other status,
//!    [`Deployment::parse_error`] → [`LlmError`] (retryable or not, context overflow,
//!    `Retry-After`) → [`Ingress::render_error`].
//! 4. With streaming: a [`StreamTranslator`] per attempt turns the provider's SSE bytes into
//!    the client's, holding output back until the first content token so a failover before it
//!    is invisible, and rendering an explicit error event after it.
//! 5. [`Usage`] from the response or the translator, and [`Prices::cost`] — `None` when the
//!    provider reported no usage.
//!
//! Around that path, the gateway's decisions, equally sans-IO (time is always an argument):
//!
//! - [`Catalogue`] — the validated `[llm]` configuration: model aliases, their deployments
//!   (each an [`egress::Deployment`] with weight, prices, limits, canary), fallback chains,
//!   virtual keys, failover and health policies.
//! - [`keys::authenticate`] the client's key, [`KeySpec::check_model`], then
//!   [`KeyStore::check_and_reserve`] its budget and RPM/TPM.
//! - [`Router::plan`] a request → [`Attempts`], whose [`Attempts::next`] yields each
//!   deployment to try (or the error to answer with) and whose [`Attempts::report`] takes each
//!   attempt's result, feeding routing latency, deployment limits and [`DeploymentHealth`].
//! - [`RequestRecord`] for the access log, summed in a [`Ledger`] for `/metrics`;
//!   [`KeyStore::record_usage`] charges the key.
//!
//! Modules:
//! - [`canonical`] — the neutral request, response and stream-event types.
//! - [`ingress`] — client formats: parse requests, render responses, streams, errors, model
//!   lists.
//! - [`egress`] — provider formats: build requests, read responses, streams and errors.
//! - [`sse`] — incremental server-sent-events parser and encoder.
//! - [`stream`] — the per-request stream translator.
//! - [`embeddings`] — embeddings request/response, OpenAI ingress, every egress.
//! - [`models`] — `GET /v1/models` rendering.
//! - [`usage`] — token usage normalisation and cost.
//! - [`error`] — the error type: kind, origin, retryability, `Retry-After`.
//! - [`catalogue`] — the `[llm]` section: serde types, validation with item paths, the
//!   resolved [`Catalogue`].
//! - [`router`] — deployment choice per model ([`Router`]) and the per-request failover plan
//!   ([`Attempts`]).
//! - [`health`] — passive outlier detection, 429 cool-downs, the semantic canary, status
//!   snapshots.
//! - [`limiter`] — RPM/TPM token buckets for deployments and keys.
//! - [`keys`] — virtual keys: authentication, model permissions, budgets, rate limits.
//! - [`accounting`] — per-request records and Prometheus totals of tokens, cost, requests.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accounting;
pub mod canonical;
pub mod catalogue;
pub mod egress;
pub mod embeddings;
pub mod error;
pub mod health;
pub mod ingress;
mod json;
pub mod keys;
pub mod limiter;
pub mod models;
pub mod router;
pub mod sse;
pub mod stream;
mod time;
pub mod usage;

pub use accounting::{Ledger, RequestOutcome, RequestRecord};
pub use catalogue::{
    Catalogue, ConfigError, ConfigErrors, DeploymentId, DeploymentSpec, Expect, LlmConfig, Model,
    ModelId, UpstreamPolicy,
};
pub use health::{
    canary_verdict, DeploymentHealth, DeploymentSnapshot, DeploymentState, HealthPolicy, Outcome,
    Verdict,
};
pub use keys::{KeyError, KeySpec, KeyStore, MemoryKeyStore};
pub use limiter::{LimitExceeded, Limits, RateLimiter};
pub use router::{
    estimate_tokens, Attempt, AttemptResult, Attempts, FailoverPolicy, Router, Routing, Step,
};

pub use canonical::{
    ChatRequest, ChatResponse, FinishReason, Image, Message, OutputPart, Part, ResponseFormat,
    ResultPart, Role, Sampling, StreamEvent, Tool, ToolCall, ToolChoice, ToolResult,
};
pub use egress::{ApiKey, BaseUrl, Deployment, ProviderKind, StreamDecoder, UpstreamRequest};
pub use embeddings::{EmbeddingRequest, EmbeddingResponse};
pub use error::{ErrorKind, LlmError, Origin, RetryAfter};
pub use ingress::{ErrorResponse, Ingress, StreamEncoder};
pub use models::ModelCard;
pub use stream::{StreamState, StreamTranslator};
pub use usage::{Prices, Usage};
