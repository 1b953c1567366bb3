//! The provider-neutral model every codec translates to and from: one chat request, one chat
//! response, and the events of one streamed response.
//!
//! Conventions the codecs rely on:
//! - System instructions live in [`ChatRequest::system`], never in `messages`.
//! - Tool results are [`Part::ToolResult`]s inside a [`Role::User`] message (Anthropic's
//!   shape); OpenAI's `tool` role messages are converted on the way in and out.
//! - Tool-call arguments are JSON *text*, as OpenAI carries them and as streams deliver them.
//! - Images given as `data:` URLs are held as [`Image::Base64`].
//! - A stream's tool calls are numbered 0, 1, 2... in the order they start, whatever index
//!   the provider used (Anthropic counts text blocks too, Gemini has none).

use crate::error::LlmError;
use crate::usage::Usage;

/// One chat request, as the client asked for it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    /// The model name the client asked for (the gateway's public name).
    pub model: String,
    /// System instructions, in order.
    pub system: Vec<String>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    pub tools: Vec<Tool>,
    /// How the model must use the tools; `None` leaves the provider's default.
    pub tool_choice: Option<ToolChoice>,
    /// Whether several tool calls may come in one turn; `None` leaves the default.
    pub parallel_tool_calls: Option<bool>,
    /// The shape of the answer.
    pub response_format: ResponseFormat,
    /// Sampling parameters.
    pub sampling: Sampling,
    /// The most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Sequences that end generation.
    pub stop: Vec<String>,
    /// An end-user identifier for the provider's abuse monitoring.
    pub user: Option<String>,
    /// Whether the client wants a stream.
    pub stream: bool,
    /// Whether the client wants the usage of a stream reported to it.
    pub include_usage: bool,
}

/// Sampling parameters; `None` leaves the provider's default.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sampling {
    /// Temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling mass.
    pub top_p: Option<f64>,
    /// Top-k sampling (Anthropic, Gemini; not sent to the OpenAI family).
    pub top_k: Option<u32>,
    /// Seed for best-effort determinism (not sent to Anthropic).
    pub seed: Option<i64>,
    /// Presence penalty (not sent to Anthropic).
    pub presence_penalty: Option<f64>,
    /// Frequency penalty (not sent to Anthropic).
    pub frequency_penalty: Option<f64>,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The user (and tool results).
    User,
    /// The model.
    Assistant,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Author.
    pub role: Role,
    /// Content, in order.
    pub content: Vec<Part>,
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Text.
    Text(String),
    /// An image (user messages).
    Image(Image),
    /// A tool call the model made (assistant messages).
    ToolCall(ToolCall),
    /// The result of a tool call (user messages).
    ToolResult(ToolResult),
}

/// An image.
#[derive(Debug, Clone, PartialEq)]
pub enum Image {
    /// An `http(s)` URL; `detail` is OpenAI's `auto`/`low`/`high` hint.
    Url {
        /// The URL.
        url: String,
        /// OpenAI's detail hint.
        detail: Option<String>,
    },
    /// Inline bytes, base64-encoded.
    Base64 {
        /// `image/png`, `image/jpeg`, ...
        media_type: String,
        /// Base64 of the image bytes.
        data: String,
    },
}

impl Image {
    /// The image from an OpenAI-style URL: a `data:<type>;base64,<data>` URL becomes
    /// [`Image::Base64`], anything else stays a URL.
    pub fn from_url(url: &str, detail: Option<String>) -> Image {
        if let Some(rest) = url.strip_prefix("data:") {
            if let Some((meta, data)) = rest.split_once(',') {
                if let Some(media_type) = meta.strip_suffix(";base64") {
                    return Image::Base64 {
                        media_type: media_type.to_owned(),
                        data: data.to_owned(),
                    };
                }
            }
        }
        Image::Url {
            url: url.to_owned(),
            detail,
        }
    }

    /// The image as an OpenAI-style URL (a `data:` URL for inline bytes).
    pub fn to_url(&self) -> String {
        match self {
            Image::Url { url, .. } => url.clone(),
            Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        }
    }
}

/// A call the model made to a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The call's id, echoed by its result.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// Arguments as JSON text.
    pub arguments: String,
}

impl ToolCall {
    /// The arguments as a JSON object (empty text counts as `{}`), or `None` when they are not
    /// a JSON object.
    pub fn arguments_object(&self) -> Option<serde_json::Value> {
        if self.arguments.trim().is_empty() {
            return Some(serde_json::Value::Object(Default::default()));
        }
        match serde_json::from_str::<serde_json::Value>(&self.arguments) {
            Ok(v @ serde_json::Value::Object(_)) => Some(v),
            _ => None,
        }
    }
}

/// The result of a tool call, sent back by the client.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    /// The id of the call this answers.
    pub call_id: String,
    /// Content.
    pub content: Vec<ResultPart>,
    /// Whether the tool failed.
    pub is_error: bool,
}

impl ToolResult {
    /// The text parts joined with newlines.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for p in &self.content {
            if let ResultPart::Text(t) = p {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(t);
            }
        }
        out
    }
}

/// One piece of a tool result.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultPart {
    /// Text.
    Text(String),
    /// An image.
    Image(Image),
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// JSON Schema of its arguments.
    pub parameters: serde_json::Value,
    /// OpenAI's strict schema adherence flag.
    pub strict: Option<bool>,
}

/// How the model must use tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call.
    Required,
    /// A call to this tool.
    Tool(String),
}

/// The shape of the answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ResponseFormat {
    /// Free text.
    #[default]
    Text,
    /// Some JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// The schema's name (OpenAI requires one).
        name: String,
        /// What the schema is for.
        description: Option<String>,
        /// The JSON Schema.
        schema: serde_json::Value,
        /// OpenAI's strict flag.
        strict: Option<bool>,
    },
}

/// Why generation stopped, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// A natural end (or a stop sequence the provider did not name).
    Stop,
    /// A stop sequence, named when the provider said which.
    StopSequence(Option<String>),
    /// The token limit was reached.
    Length,
    /// The model called tools.
    ToolCalls,
    /// A content filter or refusal.
    ContentFilter,
    /// Anything else, with the provider's own word.
    Other(String),
}

/// A complete (non-streamed) answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The provider's response id.
    pub id: String,
    /// The model that answered, as the provider named it.
    pub model: String,
    /// Creation time (Unix seconds) when the provider gave one.
    pub created: Option<u64>,
    /// Text and tool calls, in order.
    pub content: Vec<OutputPart>,
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// Usage when the provider reported it.
    pub usage: Option<Usage>,
}

impl ChatResponse {
    /// All text parts, concatenated.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|p| match p {
                OutputPart::Text(t) => Some(t.as_str()),
                OutputPart::ToolCall(_) => None,
            })
            .collect()
    }

    /// The tool calls, in order.
    pub fn tool_calls(&self) -> impl Iterator<Item = &ToolCall> {
        self.content.iter().filter_map(|p| match p {
            OutputPart::ToolCall(c) => Some(c),
            OutputPart::Text(_) => None,
        })
    }
}

/// One piece of an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputPart {
    /// Text.
    Text(String),
    /// A tool call.
    ToolCall(ToolCall),
}

/// One event of a streamed answer. A well-formed stream is `Start`, then any number of
/// `TextDelta` / `ToolCallStart` / `ToolCallDelta`, then `Finish`, at most one `Usage`, and
/// `Done`; or it stops at an `Error` anywhere.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The answer began.
    Start {
        /// The provider's response id.
        id: String,
        /// The model, as the provider named it.
        model: String,
        /// Creation time (Unix seconds) when the provider gave one.
        created: Option<u64>,
        /// Usage known at the start (Anthropic reports input tokens up front).
        usage: Option<Usage>,
    },
    /// More text.
    TextDelta(String),
    /// A tool call began.
    ToolCallStart {
        /// The call's number in this answer, from 0.
        index: u32,
        /// The call's id.
        id: String,
        /// The tool's name.
        name: String,
    },
    /// More of a tool call's JSON arguments.
    ToolCallDelta {
        /// The call's number in this answer.
        index: u32,
        /// The next piece of JSON text.
        arguments: String,
    },
    /// Generation stopped.
    Finish(FinishReason),
    /// The usage of the whole request.
    Usage(Usage),
    /// The provider's stream ended properly.
    Done,
    /// The stream failed; nothing follows.
    Error(LlmError),
}

impl StreamEvent {
    /// Whether this event carries answer content (the point after which a failover would be
    /// visible to the client).
    pub fn is_content(&self) -> bool {
        match self {
            StreamEvent::TextDelta(t) => !t.is_empty(),
            StreamEvent::ToolCallStart { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_become_base64_and_back() {
        let img = Image::from_url("data:image/png;base64,iVBORw0KGgo=", None);
        assert_eq!(
            img,
            Image::Base64 {
                media_type: "image/png".into(),
                data: "iVBORw0KGgo=".into()
            }
        );
        assert_eq!(img.to_url(), "data:image/png;base64,iVBORw0KGgo=");
        let url = Image::from_url("https://x.test/a.png", Some("low".into()));
        assert_eq!(
            url,
            Image::Url {
                url: "https://x.test/a.png".into(),
                detail: Some("low".into())
            }
        );
        // Not base64: kept as a URL.
        assert!(matches!(
            Image::from_url("data:text/plain,hi", None),
            Image::Url { .. }
        ));
    }

    #[test]
    fn tool_arguments_as_object() {
        let call = |a: &str| ToolCall {
            id: "c".into(),
            name: "f".into(),
            arguments: a.into(),
        };
        assert_eq!(call("").arguments_object(), Some(serde_json::json!({})));
        assert_eq!(
            call("{\"a\":1}").arguments_object(),
            Some(serde_json::json!({"a": 1}))
        );
        assert_eq!(call("[1]").arguments_object(), None);
        assert_eq!(call("{\"a\":").arguments_object(), None);
    }
}
