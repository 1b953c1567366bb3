//! Anthropic Messages as spoken by clients: request parsing, `message` rendering, the
//! streaming event sequence, and `{"type": "error", "error": {"type", "message"}}`.
//!
//! Requests: `system` (string or text blocks) becomes canonical system instructions;
//! `tool_use` inputs become JSON argument text; `tool_result` blocks become tool results;
//! `metadata.user_id` is the canonical `user`; `output_config.format` (or the older
//! `output_format`) is JSON-schema output; `disable_parallel_tool_use` is
//! `parallel_tool_calls: false`. Thinking blocks in the history are dropped and a `thinking`
//! setting is ignored (the canonical model has no reasoning channel). Refused with a 400
//! naming the field: document and server-tool blocks, server tools, file image sources.
//!
//! Streams: `message_start`, then for each text or tool_use block `content_block_start`, its
//! `content_block_delta`s (`text_delta` / `input_json_delta`) and `content_block_stop`, with
//! block indices counting up from 0; then `message_delta` (stop reason, stop sequence, usage)
//! and `message_stop`. A failure after the stream began is an `event: error`, and no
//! `message_stop` follows.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

use crate::canonical::{
    ChatRequest, ChatResponse, FinishReason, Image, Message, OutputPart, Part, ResponseFormat,
    ResultPart, Role, Sampling, StreamEvent, Tool, ToolCall, ToolChoice, ToolResult,
};
use crate::error::{ErrorKind, LlmError, Origin};
use crate::json::{index, parse_body, wrong_type, Obj};
use crate::sse::encode_json;
use crate::usage::Usage;

use super::{client_message, unsupported};

fn image(o: &Obj<'_, '_>) -> Result<Image, LlmError> {
    let sp = o.at("source");
    let so = Obj::new(o.req("source")?, &sp)?;
    match so.str("type")? {
        "base64" => Ok(Image::Base64 {
            media_type: so.str("media_type")?.to_owned(),
            data: so.str("data")?.to_owned(),
        }),
        "url" => Ok(Image::Url {
            url: so.str("url")?.to_owned(),
            detail: None,
        }),
        other => Err(unsupported(
            &so.at("type"),
            &format!("image source `{other}`"),
        )),
    }
}

fn tool_result(o: &Obj<'_, '_>) -> Result<ToolResult, LlmError> {
    let content = match o.get("content") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![ResultPart::Text(s.clone())],
        Some(Value::Array(blocks)) => {
            let path = o.at("content");
            let mut out = Vec::with_capacity(blocks.len());
            for (i, b) in blocks.iter().enumerate() {
                let bp = index(&path, i);
                let bo = Obj::new(b, &bp)?;
                match bo.str("type")? {
                    "text" => out.push(ResultPart::Text(bo.str("text")?.to_owned())),
                    "image" => out.push(ResultPart::Image(image(&bo)?)),
                    other => {
                        return Err(unsupported(
                            &bo.at("type"),
                            &format!("a `{other}` block in a tool result"),
                        ))
                    }
                }
            }
            out
        }
        Some(other) => {
            return Err(wrong_type(
                &o.at("content"),
                "a string or an array of blocks",
                other,
            ))
        }
    };
    Ok(ToolResult {
        call_id: o.str("tool_use_id")?.to_owned(),
        content,
        is_error: o.opt_bool("is_error")?.unwrap_or(false),
    })
}

fn content(o: &Obj<'_, '_>, role: Role) -> Result<Vec<Part>, LlmError> {
    match o.req("content")? {
        Value::String(s) => Ok(vec![Part::Text(s.clone())]),
        Value::Array(blocks) => {
            let path = o.at("content");
            let mut out = Vec::with_capacity(blocks.len());
            for (i, b) in blocks.iter().enumerate() {
                let bp = index(&path, i);
                let bo = Obj::new(b, &bp)?;
                let kind = bo.str("type")?;
                match (kind, role) {
                    ("text", _) => out.push(Part::Text(bo.str("text")?.to_owned())),
                    ("image", Role::User) => out.push(Part::Image(image(&bo)?)),
                    ("tool_use", Role::Assistant) => {
                        let input = match bo.req("input")? {
                            v @ Value::Object(_) => v.to_string(),
                            other => return Err(wrong_type(&bo.at("input"), "an object", other)),
                        };
                        out.push(Part::ToolCall(ToolCall {
                            id: bo.str("id")?.to_owned(),
                            name: bo.str("name")?.to_owned(),
                            arguments: input,
                        }));
                    }
                    ("tool_result", Role::User) => out.push(Part::ToolResult(tool_result(&bo)?)),
                    ("thinking" | "redacted_thinking", Role::Assistant) => {}
                    (
                        "image" | "tool_use" | "tool_result" | "thinking" | "redacted_thinking",
                        _,
                    ) => {
                        let role = if role == Role::User {
                            "user"
                        } else {
                            "assistant"
                        };
                        return Err(LlmError::client(
                            bo.at("type"),
                            format!("`{kind}` blocks cannot appear in {role} messages"),
                        ));
                    }
                    (other, _) => {
                        return Err(unsupported(&bo.at("type"), &format!("a `{other}` block")))
                    }
                }
            }
            Ok(out)
        }
        other => Err(wrong_type(
            &o.at("content"),
            "a string or an array of content blocks",
            other,
        )),
    }
}

fn system(o: &Obj<'_, '_>) -> Result<Vec<String>, LlmError> {
    match o.get("system") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let bp = index("system", i);
                let bo = Obj::new(b, &bp)?;
                match bo.str("type")? {
                    "text" => Ok(bo.str("text")?.to_owned()),
                    other => Err(LlmError::client(
                        bo.at("type"),
                        format!("system blocks must be text, not `{other}`"),
                    )),
                }
            })
            .collect(),
        Some(other) => Err(wrong_type(
            "system",
            "a string or an array of text blocks",
            other,
        )),
    }
}

fn tools(o: &Obj<'_, '_>) -> Result<Vec<Tool>, LlmError> {
    let Some(items) = o.opt_array("tools")? else {
        return Ok(Vec::new());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let tp = index("tools", i);
            let to = Obj::new(t, &tp)?;
            if let Some(kind) = to.opt_str("type")? {
                if kind != "custom" {
                    return Err(unsupported(
                        &to.at("type"),
                        &format!("server tool `{kind}`"),
                    ));
                }
            }
            let parameters = to.schema("input_schema")?;
            Ok(Tool {
                name: to.str("name")?.to_owned(),
                description: to.opt_str("description")?.map(str::to_owned),
                parameters,
                strict: to.opt_bool("strict")?,
            })
        })
        .collect()
}

fn tool_choice(o: &Obj<'_, '_>) -> Result<(Option<ToolChoice>, Option<bool>), LlmError> {
    let Some(v) = o.get("tool_choice") else {
        return Ok((None, None));
    };
    let co = Obj::new(v, "tool_choice")?;
    let choice = match co.str("type")? {
        "auto" => ToolChoice::Auto,
        "any" => ToolChoice::Required,
        "none" => ToolChoice::None,
        "tool" => ToolChoice::Tool(co.str("name")?.to_owned()),
        other => {
            return Err(LlmError::client(
                "tool_choice.type",
                format!("`tool_choice.type` must be auto, any, tool or none, not `{other}`"),
            ))
        }
    };
    let parallel = co.opt_bool("disable_parallel_tool_use")?.map(|d| !d);
    Ok((Some(choice), parallel))
}

fn output_format(o: &Obj<'_, '_>) -> Result<ResponseFormat, LlmError> {
    let (fv, path) = match o.get("output_config") {
        Some(c) => {
            let co = Obj::new(c, "output_config")?;
            match co.get("format") {
                Some(f) => (f, "output_config.format"),
                None => return Ok(ResponseFormat::Text),
            }
        }
        None => match o.get("output_format") {
            Some(f) => (f, "output_format"),
            None => return Ok(ResponseFormat::Text),
        },
    };
    let fo = Obj::new(fv, path)?;
    match fo.str("type")? {
        "json_schema" => Ok(ResponseFormat::JsonSchema {
            name: "response".to_owned(),
            description: None,
            schema: fo.schema("schema")?,
            strict: Some(true),
        }),
        other => Err(LlmError::client(
            fo.at("type"),
            format!("`{}` must be `json_schema`, not `{other}`", fo.at("type")),
        )),
    }
}

/// Parses a Messages request body.
pub(crate) fn parse_request(body: &[u8]) -> Result<ChatRequest, LlmError> {
    let v = parse_body(body)?;
    let o = Obj::new(&v, "")?;
    let model = o.str("model")?.to_owned();
    let max_tokens = o
        .opt_u32("max_tokens")?
        .ok_or_else(|| LlmError::client("max_tokens", "`max_tokens` is required"))?;
    let items = o.array("messages")?;
    if items.is_empty() {
        return Err(LlmError::client("messages", "`messages` must not be empty"));
    }
    let mut messages = Vec::with_capacity(items.len());
    for (i, m) in items.iter().enumerate() {
        let mp = index("messages", i);
        let mo = Obj::new(m, &mp)?;
        let role = match mo.str("role")? {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(LlmError::client(
                    mo.at("role"),
                    format!(
                        "`{}` must be user or assistant, not `{other}`",
                        mo.at("role")
                    ),
                ))
            }
        };
        messages.push(Message {
            role,
            content: content(&mo, role)?,
        });
    }
    let (tool_choice, parallel_tool_calls) = tool_choice(&o)?;
    let user = match o.get("metadata") {
        Some(m) => Obj::new(m, "metadata")?
            .opt_str("user_id")?
            .map(str::to_owned),
        None => None,
    };
    Ok(ChatRequest {
        model,
        system: system(&o)?,
        messages,
        tools: tools(&o)?,
        tool_choice,
        parallel_tool_calls,
        response_format: output_format(&o)?,
        sampling: Sampling {
            temperature: o.opt_f64("temperature")?,
            top_p: o.opt_f64("top_p")?,
            top_k: o.opt_u32("top_k")?,
            ..Sampling::default()
        },
        max_tokens: Some(max_tokens),
        stop: o.opt_strings("stop_sequences")?,
        user,
        stream: o.opt_bool("stream")?.unwrap_or(false),
        include_usage: true,
    })
}

/// The wire `stop_reason` and `stop_sequence` for a canonical finish reason.
pub(crate) fn stop_reason(r: &FinishReason) -> (&'static str, Option<&str>) {
    match r {
        FinishReason::Stop | FinishReason::Other(_) => ("end_turn", None),
        FinishReason::StopSequence(s) => ("stop_sequence", s.as_deref()),
        FinishReason::Length => ("max_tokens", None),
        FinishReason::ToolCalls => ("tool_use", None),
        FinishReason::ContentFilter => ("refusal", None),
    }
}

#[derive(Serialize, Default)]
struct UsageOut {
    input_tokens: u64,
    output_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_creation_input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_read_input_tokens: Option<u64>,
}

fn usage_out(u: Option<&Usage>) -> UsageOut {
    match u {
        None => UsageOut::default(),
        Some(u) => UsageOut {
            input_tokens: u.uncached_input_tokens(),
            output_tokens: u.output_tokens,
            cache_creation_input_tokens: Some(u.cache_write_input_tokens),
            cache_read_input_tokens: Some(u.cached_input_tokens),
        },
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockOut<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
}

#[derive(Serialize)]
struct MessageOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<BlockOut<'a>>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'a str>,
    usage: UsageOut,
}

/// Renders a `message`; tool-call arguments must be JSON objects.
pub(crate) fn render_response(resp: &ChatResponse) -> Result<Vec<u8>, LlmError> {
    let mut content = Vec::with_capacity(resp.content.len());
    for p in &resp.content {
        match p {
            OutputPart::Text(t) => content.push(BlockOut::Text { text: t }),
            OutputPart::ToolCall(c) => content.push(BlockOut::ToolUse {
                id: &c.id,
                name: &c.name,
                input: c.arguments_object().ok_or_else(|| {
                    LlmError::new(
                        ErrorKind::MalformedResponse,
                        Origin::Gateway,
                        format!(
                            "the arguments of tool call `{}` are not a JSON object",
                            c.id
                        ),
                    )
                })?,
            }),
        }
    }
    let (reason, sequence) = stop_reason(&resp.finish_reason);
    let out = MessageOut {
        id: &resp.id,
        kind: "message",
        role: "assistant",
        model: &resp.model,
        content,
        stop_reason: Some(reason),
        stop_sequence: sequence,
        usage: usage_out(resp.usage.as_ref()),
    };
    Ok(serde_json::to_vec(&out).unwrap_or_default())
}

/// `{"type": "error", "error": {"type", "message"}}`, the Anthropic error body.
#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorOut<'a>,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

impl<'a> ErrorBody<'a> {
    /// An error body of Anthropic error type `kind`.
    pub(crate) fn new(kind: &'static str, message: &'a str) -> ErrorBody<'a> {
        ErrorBody {
            kind: "error",
            error: ErrorOut { kind, message },
        }
    }

    /// The body as JSON.
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The Anthropic error type for a canonical kind.
pub(crate) fn error_type(err: &LlmError) -> &'static str {
    // Anthropic's types follow the status: authentication_error 401, permission_error 403,
    // not_found_error 404, request_too_large 413, rate_limit_error 429, overloaded_error 529,
    // api_error 500. Faults of the gateway's own access to a provider are not the client's
    // (a 502, api_error), so the origin decides for those kinds.
    let client_side = !matches!(err.origin, Origin::Provider(_));
    match err.kind {
        ErrorKind::InvalidRequest
        | ErrorKind::Unsupported
        | ErrorKind::ContextLengthExceeded
        | ErrorKind::ContentFiltered => "invalid_request_error",
        ErrorKind::RequestTooLarge => "request_too_large",
        ErrorKind::RateLimited | ErrorKind::QuotaExceeded => "rate_limit_error",
        ErrorKind::Overloaded => "overloaded_error",
        ErrorKind::Authentication if client_side => "authentication_error",
        ErrorKind::PermissionDenied if client_side => "permission_error",
        ErrorKind::NotFound if client_side => "not_found_error",
        _ => "api_error",
    }
}

/// The client-safe `message` with the field at fault named in front, as Anthropic does
/// (`messages.0.content: ...`).
fn with_param<'m>(err: &LlmError, message: &'m str) -> Cow<'m, str> {
    match (&err.param, err.origin) {
        (Some(p), Origin::Client | Origin::Gateway)
            if !p.is_empty() && !message.contains(p.as_str()) =>
        {
            Cow::Owned(format!("{p}: {message}"))
        }
        _ => Cow::Borrowed(message),
    }
}

/// Renders `{"type": "error", "error": {...}}` with the client-safe `message`; a field at
/// fault is named in the message, as Anthropic does (`messages.0.content: ...`).
pub(crate) fn render_error(err: &LlmError, message: &str) -> Vec<u8> {
    ErrorBody::new(error_type(err), &with_param(err, message)).to_vec()
}

/// What the open content block is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Open {
    Text,
    Tool(u32),
}

/// One streaming event, with `type` first as Anthropic sends it.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum EventOut<'a> {
    MessageStart {
        message: MessageOut<'a>,
    },
    ContentBlockStart {
        index: u32,
        content_block: BlockStart<'a>,
    },
    ContentBlockDelta {
        index: u32,
        delta: DeltaOut<'a>,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: StopOut<'a>,
        usage: DeltaUsage,
    },
    MessageStop,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockStart<'a> {
    Text {
        text: &'static str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Empty,
    },
}

/// Serialises as `{}`.
#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DeltaOut<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct StopOut<'a> {
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
}

/// `message_delta` usage: cumulative counts, or only `output_tokens: 0` when unknown (the
/// field is required).
#[derive(Serialize)]
#[serde(untagged)]
enum DeltaUsage {
    Known(UsageOut),
    Unknown { output_tokens: u64 },
}

fn event(out: &mut Vec<u8>, name: &str, ev: &EventOut<'_>) {
    encode_json(out, Some(name), ev);
}

/// Encodes canonical events as the Messages event sequence.
#[derive(Debug, Default)]
pub(crate) struct StreamEncoder {
    started: bool,
    /// The open block and its index.
    open: Option<(u32, Open)>,
    next_block: u32,
    /// Canonical tool index → block index.
    tool_blocks: Vec<(u32, u32)>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    closed: bool,
}

impl StreamEncoder {
    fn start(&mut self, out: &mut Vec<u8>, id: &str, model: &str, usage: Option<&Usage>) {
        self.started = true;
        let message = MessageOut {
            id,
            kind: "message",
            role: "assistant",
            model,
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            // Zero until known; message_delta carries the counts.
            usage: usage_out(usage),
        };
        event(out, "message_start", &EventOut::MessageStart { message });
    }

    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.start(out, "", "", None);
        }
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            event(
                out,
                "content_block_stop",
                &EventOut::ContentBlockStop { index },
            );
        }
    }

    fn open_block(&mut self, out: &mut Vec<u8>, kind: Open, content_block: BlockStart<'_>) -> u32 {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((index, kind));
        event(
            out,
            "content_block_start",
            &EventOut::ContentBlockStart {
                index,
                content_block,
            },
        );
        index
    }

    pub(crate) fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        match ev {
            StreamEvent::Start {
                id, model, usage, ..
            } => {
                if !self.started {
                    self.start(out, id, model, usage.as_ref());
                }
            }
            StreamEvent::TextDelta(t) => {
                self.ensure_started(out);
                if t.is_empty() {
                    return;
                }
                let index = match self.open {
                    Some((i, Open::Text)) => i,
                    _ => self.open_block(out, Open::Text, BlockStart::Text { text: "" }),
                };
                let delta = DeltaOut::TextDelta { text: t };
                event(
                    out,
                    "content_block_delta",
                    &EventOut::ContentBlockDelta { index, delta },
                );
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.ensure_started(out);
                let block = self.open_block(
                    out,
                    Open::Tool(*index),
                    BlockStart::ToolUse {
                        id,
                        name,
                        input: Empty {},
                    },
                );
                self.tool_blocks.push((*index, block));
            }
            StreamEvent::ToolCallDelta { index, arguments } => {
                self.ensure_started(out);
                // Normally the open block; a provider interleaving calls gets the call's own
                // block index.
                let block = match self.open {
                    Some((b, Open::Tool(i))) if i == *index => Some(b),
                    _ => self
                        .tool_blocks
                        .iter()
                        .find(|(i, _)| i == index)
                        .map(|(_, b)| *b),
                };
                if let Some(block) = block {
                    let delta = DeltaOut::InputJsonDelta {
                        partial_json: arguments,
                    };
                    event(
                        out,
                        "content_block_delta",
                        &EventOut::ContentBlockDelta {
                            index: block,
                            delta,
                        },
                    );
                }
            }
            StreamEvent::Finish(reason) => {
                if self.finish.is_none() {
                    self.finish = Some(reason.clone());
                }
            }
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Done => {
                self.ensure_started(out);
                self.close_block(out);
                let finish = self.finish.take().unwrap_or(FinishReason::Stop);
                let (stop_reason, stop_sequence) = stop_reason(&finish);
                let usage = match &self.usage {
                    Some(u) => DeltaUsage::Known(usage_out(Some(u))),
                    None => DeltaUsage::Unknown { output_tokens: 0 },
                };
                let delta = StopOut {
                    stop_reason,
                    stop_sequence,
                };
                event(
                    out,
                    "message_delta",
                    &EventOut::MessageDelta { delta, usage },
                );
                event(out, "message_stop", &EventOut::MessageStop);
                self.closed = true;
            }
            StreamEvent::Error(e) => {
                let message = client_message(e);
                let message = with_param(e, &message);
                encode_json(out, Some("error"), &ErrorBody::new(error_type(e), &message));
                self.closed = true;
            }
        }
    }
}
