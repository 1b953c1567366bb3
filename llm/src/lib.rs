//! The AI gateway layer, sans-IO: pure transformations between the formats clients speak
//! (OpenAI Chat Completions, Anthropic Messages) and the formats providers speak (OpenAI,
//! Azure OpenAI, Anthropic, Gemini, Mistral, any OpenAI-compatible server), through one
//! provider-neutral model. No sockets, no async, no clock: the engine wires it to the network.
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
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod canonical;
pub mod egress;
pub mod embeddings;
pub mod error;
pub mod ingress;
mod json;
pub mod models;
pub mod sse;
pub mod stream;
mod time;
pub mod usage;

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
