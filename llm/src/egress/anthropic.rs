//! The Anthropic Messages wire format (`POST {root}/messages`, `x-api-key`,
//! `anthropic-version: 2023-06-01`).
//!
//! Requests: system instructions go to top-level `system`; consecutive messages of one role are
//! merged into one turn, with `tool_result` blocks first in a user turn as the API requires;
//! tool-call arguments become `tool_use.input` objects; `max_tokens` is required (the
//! deployment's default fills in); JSON-schema output uses `output_config.format`; JSON-object
//! mode, which the API lacks, becomes a system instruction; penalties and `seed` have no
//! Anthropic equivalent and are not sent.
//!
//! Streams: `message_start` (id, model, input usage), `content_block_start` /
//! `content_block_delta` (`text_delta`, `input_json_delta`) / `content_block_stop` per block,
//! `message_delta` (stop reason, cumulative usage), `message_stop`; `ping` is ignored,
//! `error` ends the stream. Thinking blocks and their deltas are skipped.

use serde::Serialize;
use serde_json::Value;

use super::{arguments_object, body_bytes, malformed, parse_json, str_of, Deployment};
use crate::canonical::{
    ChatRequest, ChatResponse, FinishReason, Image, Message, OutputPart, Part, ResponseFormat,
    ResultPart, Role, StreamEvent, ToolCall, ToolChoice,
};
use crate::error::{LlmError, Origin};
use crate::sse::SseEvent;
use crate::usage::Usage;

/// The `anthropic-version` header value sent with every request.
pub const API_VERSION: &str = "2023-06-01";

/// The instruction appended to the system prompt for OpenAI's JSON-object mode.
pub const JSON_OBJECT_INSTRUCTION: &str =
    "Respond with a single valid JSON object and nothing else: no prose, no code fences.";

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<Value>,
    messages: Vec<MsgOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<Value>,
}

#[derive(Serialize)]
struct MsgOut<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: Source<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: Vec<Block<'a>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Source<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Serialize)]
struct ToolOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

fn image_block(img: &Image) -> Block<'_> {
    Block::Image {
        source: match img {
            Image::Url { url, .. } => Source::Url { url },
            Image::Base64 { media_type, data } => Source::Base64 { media_type, data },
        },
    }
}

/// Turns canonical messages into Anthropic turns: one turn per run of same-role messages,
/// tool results first in user turns, empty text dropped.
fn turns(messages: &[Message]) -> Result<Vec<MsgOut<'_>>, LlmError> {
    let mut out: Vec<MsgOut<'_>> = Vec::new();
    for (mi, m) in messages.iter().enumerate() {
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let mut results = Vec::new();
        let mut others = Vec::new();
        for p in &m.content {
            match p {
                Part::Text(t) if t.is_empty() => {}
                Part::Text(t) => others.push(Block::Text { text: t }),
                Part::Image(img) => others.push(image_block(img)),
                Part::ToolCall(c) => others.push(Block::ToolUse {
                    id: &c.id,
                    name: &c.name,
                    input: arguments_object(c, mi)?,
                }),
                Part::ToolResult(r) => results.push(Block::ToolResult {
                    tool_use_id: &r.call_id,
                    content: r
                        .content
                        .iter()
                        .filter_map(|c| match c {
                            ResultPart::Text(t) if t.is_empty() => None,
                            ResultPart::Text(t) => Some(Block::Text { text: t }),
                            ResultPart::Image(img) => Some(image_block(img)),
                        })
                        .collect(),
                    is_error: r.is_error,
                }),
            }
        }
        match out.last_mut() {
            Some(last) if last.role == role => {
                // Results stay ahead of everything else in the merged turn.
                let at = last
                    .content
                    .iter()
                    .position(|b| !matches!(b, Block::ToolResult { .. }))
                    .unwrap_or(last.content.len());
                last.content.splice(at..at, results);
                last.content.extend(others);
            }
            _ => {
                let mut content = results;
                content.extend(others);
                out.push(MsgOut { role, content });
            }
        }
    }
    out.retain(|m| !m.content.is_empty());
    Ok(out)
}

/// Builds `(path, body)` for a Messages request.
pub(crate) fn build_request(
    dep: &Deployment,
    req: &ChatRequest,
) -> Result<(String, Vec<u8>), LlmError> {
    let mut system: Vec<&str> = req.system.iter().map(String::as_str).collect();
    let mut output_config = None;
    match &req.response_format {
        ResponseFormat::Text => {}
        ResponseFormat::JsonObject => system.push(JSON_OBJECT_INSTRUCTION),
        ResponseFormat::JsonSchema { schema, .. } => {
            output_config =
                Some(serde_json::json!({"format": {"type": "json_schema", "schema": schema}}));
        }
    }
    let system = match system.as_slice() {
        [] => None,
        [one] => Some(Value::from(*one)),
        many => Some(Value::Array(
            many.iter()
                .map(|t| serde_json::json!({"type": "text", "text": t}))
                .collect(),
        )),
    };
    let tool_choice = match (&req.tool_choice, req.parallel_tool_calls) {
        (None, None) => None,
        (None, Some(_)) if req.tools.is_empty() => None,
        (choice, parallel) => {
            let mut c = match choice.as_ref().unwrap_or(&ToolChoice::Auto) {
                ToolChoice::Auto => serde_json::json!({"type": "auto"}),
                ToolChoice::None => serde_json::json!({"type": "none"}),
                ToolChoice::Required => serde_json::json!({"type": "any"}),
                ToolChoice::Tool(name) => serde_json::json!({"type": "tool", "name": name}),
            };
            if parallel == Some(false) && !matches!(choice, Some(ToolChoice::None)) {
                c["disable_parallel_tool_use"] = Value::Bool(true);
            }
            Some(c)
        }
    };
    let body = Body {
        model: &dep.model,
        max_tokens: req.max_tokens.unwrap_or(dep.default_max_tokens),
        system,
        messages: turns(&req.messages)?,
        temperature: req.sampling.temperature,
        top_p: req.sampling.top_p,
        top_k: req.sampling.top_k,
        stop_sequences: &req.stop,
        stream: req.stream,
        tools: req
            .tools
            .iter()
            .map(|t| ToolOut {
                name: &t.name,
                description: t.description.as_deref(),
                input_schema: &t.parameters,
                strict: t.strict,
            })
            .collect(),
        tool_choice,
        metadata: req.user.as_ref().map(|u| serde_json::json!({"user_id": u})),
        output_config,
    };
    Ok((format!("{}/messages", dep.root()), body_bytes(&body)?))
}

/// Maps an Anthropic `stop_reason` (and `stop_sequence`).
pub(crate) fn finish_reason(reason: &str, sequence: Option<&str>) -> FinishReason {
    match reason {
        "end_turn" => FinishReason::Stop,
        "stop_sequence" => FinishReason::StopSequence(sequence.map(str::to_owned)),
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Reads a Messages response.
pub(crate) fn parse_response(dep: &Deployment, body: &[u8]) -> Result<ChatResponse, LlmError> {
    let origin = dep.origin();
    let v = parse_json(origin, body)?;
    if str_of(&v, "type") == Some("error") {
        return Err(super::errors::parse(dep.kind, 200, body, None));
    }
    let blocks = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(origin, "response has no `content` array"))?;
    let mut content = Vec::new();
    for b in blocks {
        match str_of(b, "type") {
            Some("text") => {
                let t = str_of(b, "text").unwrap_or_default();
                if !t.is_empty() {
                    content.push(OutputPart::Text(t.to_owned()));
                }
            }
            Some("tool_use") => content.push(OutputPart::ToolCall(ToolCall {
                id: str_of(b, "id").unwrap_or_default().to_owned(),
                name: str_of(b, "name").unwrap_or_default().to_owned(),
                arguments: b
                    .get("input")
                    .map(Value::to_string)
                    .unwrap_or_else(|| "{}".into()),
            })),
            // thinking, redacted_thinking, server tool blocks: not part of the canonical answer.
            _ => {}
        }
    }
    let reason = str_of(&v, "stop_reason").unwrap_or("end_turn");
    Ok(ChatResponse {
        id: str_of(&v, "id").unwrap_or_default().to_owned(),
        model: str_of(&v, "model").unwrap_or(&dep.model).to_owned(),
        created: None,
        content,
        finish_reason: finish_reason(reason, str_of(&v, "stop_sequence")),
        usage: v.get("usage").and_then(Usage::from_anthropic),
    })
}

/// What an open content block is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum BlockKind {
    Text,
    /// A tool_use block and its canonical call index.
    Tool(u32),
    /// A block type the canonical model does not carry.
    Skipped,
}

/// Decoder state for an Anthropic SSE stream.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    started: bool,
    /// Block index → kind.
    blocks: Vec<(u64, BlockKind)>,
    next_call: u32,
    finished: bool,
    /// Usage as reported so far (message_start, then message_delta's cumulative counts).
    usage: Option<Value>,
}

impl StreamState {
    fn origin() -> Origin {
        Origin::Provider(super::ProviderKind::Anthropic)
    }

    pub(crate) fn on_event(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) {
        let Some(v) = super::parse_stream_json(Self::origin(), &ev.data, "stream event", out)
        else {
            return;
        };
        let kind = ev
            .event
            .as_deref()
            .or_else(|| str_of(&v, "type"))
            .unwrap_or_default();
        if kind != "message_start" && kind != "ping" && kind != "error" && !self.started {
            out.push(StreamEvent::Error(malformed(
                Self::origin(),
                format!("`{kind}` event before message_start"),
            )));
            return;
        }
        match kind {
            "message_start" => {
                let msg = v.get("message").unwrap_or(&Value::Null);
                self.started = true;
                self.usage = msg.get("usage").cloned();
                out.push(StreamEvent::Start {
                    id: str_of(msg, "id").unwrap_or_default().to_owned(),
                    model: str_of(msg, "model").unwrap_or_default().to_owned(),
                    created: None,
                    usage: self.usage.as_ref().and_then(Usage::from_anthropic),
                });
            }
            "content_block_start" => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or_default();
                let block = v.get("content_block").unwrap_or(&Value::Null);
                let kind = match str_of(block, "type") {
                    Some("text") => {
                        if let Some(t) = str_of(block, "text").filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::TextDelta(t.to_owned()));
                        }
                        BlockKind::Text
                    }
                    Some("tool_use") => {
                        let call = self.next_call;
                        self.next_call += 1;
                        out.push(StreamEvent::ToolCallStart {
                            index: call,
                            id: str_of(block, "id").unwrap_or_default().to_owned(),
                            name: str_of(block, "name").unwrap_or_default().to_owned(),
                        });
                        // The stream sends `input: {}` and then the JSON in deltas; a non-empty
                        // initial input would be the whole of it.
                        if let Some(input) = block
                            .get("input")
                            .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                        {
                            out.push(StreamEvent::ToolCallDelta {
                                index: call,
                                arguments: input.to_string(),
                            });
                        }
                        BlockKind::Tool(call)
                    }
                    _ => BlockKind::Skipped,
                };
                self.blocks.push((index, kind));
            }
            "content_block_delta" => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or_default();
                let block = self
                    .blocks
                    .iter()
                    .rev()
                    .find(|(i, _)| *i == index)
                    .map(|(_, k)| *k);
                let delta = v.get("delta").unwrap_or(&Value::Null);
                match (block, str_of(delta, "type")) {
                    (Some(BlockKind::Text), Some("text_delta")) => {
                        if let Some(t) = str_of(delta, "text").filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::TextDelta(t.to_owned()));
                        }
                    }
                    (Some(BlockKind::Tool(call)), Some("input_json_delta")) => {
                        if let Some(j) = str_of(delta, "partial_json").filter(|j| !j.is_empty()) {
                            out.push(StreamEvent::ToolCallDelta {
                                index: call,
                                arguments: j.to_owned(),
                            });
                        }
                    }
                    (None, _) => out.push(StreamEvent::Error(malformed(
                        Self::origin(),
                        format!("content_block_delta for unknown block {index}"),
                    ))),
                    _ => {}
                }
            }
            "content_block_stop" | "ping" => {}
            "message_delta" => {
                if let Some(u) = v.get("usage").and_then(Value::as_object) {
                    let merged = self
                        .usage
                        .get_or_insert_with(|| Value::Object(Default::default()));
                    if let Some(m) = merged.as_object_mut() {
                        for (k, val) in u {
                            if !val.is_null() {
                                m.insert(k.clone(), val.clone());
                            }
                        }
                    }
                }
                let delta = v.get("delta").unwrap_or(&Value::Null);
                if let Some(reason) = str_of(delta, "stop_reason") {
                    if !self.finished {
                        self.finished = true;
                        out.push(StreamEvent::Finish(finish_reason(
                            reason,
                            str_of(delta, "stop_sequence"),
                        )));
                    }
                }
            }
            "message_stop" => {
                if !self.finished {
                    self.finished = true;
                    out.push(StreamEvent::Finish(FinishReason::Stop));
                }
                if let Some(u) = self.usage.as_ref().and_then(Usage::from_anthropic) {
                    out.push(StreamEvent::Usage(u));
                }
                out.push(StreamEvent::Done);
            }
            "error" => out.push(StreamEvent::Error(super::errors::from_value(
                super::ProviderKind::Anthropic,
                None,
                &v,
                None,
            ))),
            // Event types added later are ignored, as the API asks clients to do.
            _ => {}
        }
    }

    /// The body ended without `message_stop`: always an interrupted stream.
    pub(crate) fn end_of_body(&mut self, _out: &mut Vec<StreamEvent>) {}
}
