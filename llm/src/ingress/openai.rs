//! OpenAI Chat Completions as spoken by clients: request parsing, `chat.completion` and
//! `chat.completion.chunk` rendering, and `{"error": {"message", "type", "param", "code"}}`.
//!
//! Requests: `system` and `developer` messages become canonical system instructions (in
//! order; a system message in mid-conversation is hoisted, since only OpenAI can place one
//! there); `tool` messages become tool results; `data:` image URLs become inline images;
//! `max_completion_tokens` wins over the older `max_tokens`. Refused with a 400 naming the
//! field: `n` other than 1, `logprobs: true`, audio and file parts, the legacy `function`
//! role and `function_call`, and non-function tools.
//!
//! Streams: a first chunk with `role: assistant`, one chunk per text or tool-call delta
//! (`tool_calls[].index` is the canonical call index; the first delta of a call carries its
//! `id`, `type` and `function.name`), a chunk with `finish_reason`, then, when the client set
//! `stream_options.include_usage`, a chunk with empty `choices` and the usage (every earlier
//! chunk then has `"usage": null`), and `data: [DONE]`. A failure after the stream began is
//! sent as `data: {"error": {...}}` without `[DONE]`, which the OpenAI SDKs raise as an error.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

use crate::canonical::{
    ChatRequest, ChatResponse, FinishReason, Image, Message, Part, ResponseFormat, ResultPart,
    Role, Sampling, StreamEvent, Tool, ToolCall, ToolChoice, ToolResult,
};
use crate::egress::openai::CallOut;
use crate::error::{ErrorKind, LlmError, Origin};
use crate::json::{index, parse_body, wrong_type, Obj};
use crate::sse::{encode_event, encode_json};
use crate::usage::Usage;

use super::{client_message, unsupported};

/// Text from a `content` that may only hold text: a string or `{type: text}` parts
/// (`refusal` parts count as text in assistant messages).
fn text_content(o: &Obj<'_, '_>, key: &str, allow_refusal: bool) -> Result<String, LlmError> {
    match o.get(key) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let path = o.at(key);
            let mut out = String::new();
            for (i, p) in parts.iter().enumerate() {
                let pp = index(&path, i);
                let po = Obj::new(p, &pp)?;
                match po.str("type")? {
                    "text" => out.push_str(po.str("text")?),
                    "refusal" if allow_refusal => out.push_str(po.str("refusal")?),
                    other => {
                        return Err(LlmError::client(
                            pp.clone(),
                            format!("`{pp}` has type `{other}`; only text is allowed here"),
                        ))
                    }
                }
            }
            Ok(out)
        }
        Some(other) => Err(wrong_type(
            &o.at(key),
            "a string or an array of content parts",
            other,
        )),
    }
}

fn user_content(o: &Obj<'_, '_>) -> Result<Vec<Part>, LlmError> {
    match o.req("content")? {
        Value::String(s) => Ok(vec![Part::Text(s.clone())]),
        Value::Array(parts) => {
            let path = o.at("content");
            let mut out = Vec::with_capacity(parts.len());
            for (i, p) in parts.iter().enumerate() {
                let pp = index(&path, i);
                let po = Obj::new(p, &pp)?;
                match po.str("type")? {
                    "text" => out.push(Part::Text(po.str("text")?.to_owned())),
                    "image_url" => {
                        let (url, detail) = match po.req("image_url")? {
                            Value::String(u) => (u.as_str(), None),
                            iv => {
                                let ip = po.at("image_url");
                                let io = Obj::new(iv, &ip)?;
                                (io.str("url")?, io.opt_str("detail")?.map(str::to_owned))
                            }
                        };
                        out.push(Part::Image(Image::from_url(url, detail)));
                    }
                    other @ ("input_audio" | "file") => {
                        return Err(unsupported(&pp, &format!("a `{other}` part")))
                    }
                    other => {
                        return Err(LlmError::client(
                            pp.clone(),
                            format!("`{pp}` has unknown type `{other}`"),
                        ))
                    }
                }
            }
            Ok(out)
        }
        other => Err(wrong_type(
            &o.at("content"),
            "a string or an array of content parts",
            other,
        )),
    }
}

fn assistant_content(o: &Obj<'_, '_>) -> Result<Vec<Part>, LlmError> {
    if o.get("function_call").is_some() {
        return Err(unsupported(
            &o.at("function_call"),
            "the legacy `function_call`",
        ));
    }
    let mut out = Vec::new();
    let text = text_content(o, "content", true)?;
    if !text.is_empty() {
        out.push(Part::Text(text));
    }
    if let Some(calls) = o.opt_array("tool_calls")? {
        let path = o.at("tool_calls");
        for (i, c) in calls.iter().enumerate() {
            let cp = index(&path, i);
            let co = Obj::new(c, &cp)?;
            if let Some(t) = co.opt_str("type")? {
                if t != "function" {
                    return Err(unsupported(
                        &co.at("type"),
                        &format!("tool call type `{t}`"),
                    ));
                }
            }
            let fp = co.at("function");
            let fo = Obj::new(co.req("function")?, &fp)?;
            out.push(Part::ToolCall(ToolCall {
                id: co.str("id")?.to_owned(),
                name: fo.str("name")?.to_owned(),
                arguments: fo.opt_str("arguments")?.unwrap_or_default().to_owned(),
            }));
        }
    }
    Ok(out)
}

fn tools(o: &Obj<'_, '_>) -> Result<Vec<Tool>, LlmError> {
    let Some(items) = o.opt_array("tools")? else {
        return Ok(Vec::new());
    };
    let path = o.at("tools");
    items
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let tp = index(&path, i);
            let to = Obj::new(t, &tp)?;
            let kind = to.str("type")?;
            if kind != "function" {
                return Err(unsupported(&to.at("type"), &format!("tool type `{kind}`")));
            }
            let fp = to.at("function");
            let fo = Obj::new(to.req("function")?, &fp)?;
            let parameters = fo
                .opt_schema("parameters")?
                .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}));
            Ok(Tool {
                name: fo.str("name")?.to_owned(),
                description: fo.opt_str("description")?.map(str::to_owned),
                parameters,
                strict: fo.opt_bool("strict")?,
            })
        })
        .collect()
}

fn tool_choice(o: &Obj<'_, '_>) -> Result<Option<ToolChoice>, LlmError> {
    let path = o.at("tool_choice");
    match o.get("tool_choice") {
        None => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(Some(ToolChoice::Auto)),
            "none" => Ok(Some(ToolChoice::None)),
            "required" => Ok(Some(ToolChoice::Required)),
            other => Err(LlmError::client(
                path.clone(),
                format!("`{path}` must be `auto`, `none`, `required` or a function, not `{other}`"),
            )),
        },
        Some(v) => {
            let co = Obj::new(v, &path)?;
            match co.str("type")? {
                "function" => {
                    let fp = co.at("function");
                    let fo = Obj::new(co.req("function")?, &fp)?;
                    Ok(Some(ToolChoice::Tool(fo.str("name")?.to_owned())))
                }
                other => Err(unsupported(
                    &co.at("type"),
                    &format!("tool_choice type `{other}`"),
                )),
            }
        }
    }
}

fn response_format(o: &Obj<'_, '_>) -> Result<ResponseFormat, LlmError> {
    let path = o.at("response_format");
    let Some(v) = o.get("response_format") else {
        return Ok(ResponseFormat::Text);
    };
    let ro = Obj::new(v, &path)?;
    match ro.str("type")? {
        "text" => Ok(ResponseFormat::Text),
        "json_object" => Ok(ResponseFormat::JsonObject),
        "json_schema" => {
            let jp = ro.at("json_schema");
            let jo = Obj::new(ro.req("json_schema")?, &jp)?;
            let schema = jo
                .opt_schema("schema")?
                .unwrap_or_else(|| serde_json::json!({"type": "object"}));
            Ok(ResponseFormat::JsonSchema {
                name: jo.str("name")?.to_owned(),
                description: jo.opt_str("description")?.map(str::to_owned),
                schema,
                strict: jo.opt_bool("strict")?,
            })
        }
        other => Err(LlmError::client(
            ro.at("type"),
            format!(
                "`{}` must be `text`, `json_object` or `json_schema`, not `{other}`",
                ro.at("type")
            ),
        )),
    }
}

/// Parses a Chat Completions request body.
pub(crate) fn parse_request(body: &[u8]) -> Result<ChatRequest, LlmError> {
    let v = parse_body(body)?;
    let o = Obj::new(&v, "")?;
    let model = o.str("model")?.to_owned();
    let items = o.array("messages")?;
    if items.is_empty() {
        return Err(LlmError::client("messages", "`messages` must not be empty"));
    }
    let mut system = Vec::new();
    let mut messages = Vec::with_capacity(items.len());
    for (i, m) in items.iter().enumerate() {
        let mp = index("messages", i);
        let mo = Obj::new(m, &mp)?;
        match mo.str("role")? {
            "system" | "developer" => system.push(text_content(&mo, "content", false)?),
            "user" => messages.push(Message {
                role: Role::User,
                content: user_content(&mo)?,
            }),
            "assistant" => messages.push(Message {
                role: Role::Assistant,
                content: assistant_content(&mo)?,
            }),
            "tool" => {
                let result = Part::ToolResult(ToolResult {
                    call_id: mo.str("tool_call_id")?.to_owned(),
                    content: vec![ResultPart::Text(text_content(&mo, "content", false)?)],
                    is_error: false,
                });
                // Consecutive tool messages answer one assistant turn: keep them in one user
                // message, as Anthropic and Gemini want them.
                match messages.last_mut() {
                    Some(Message {
                        role: Role::User,
                        content,
                    }) if !content.is_empty()
                        && content.iter().all(|p| matches!(p, Part::ToolResult(_))) =>
                    {
                        content.push(result)
                    }
                    _ => messages.push(Message {
                        role: Role::User,
                        content: vec![result],
                    }),
                }
            }
            "function" => return Err(unsupported(&mo.at("role"), "the legacy `function` role")),
            other => {
                return Err(LlmError::client(
                    mo.at("role"),
                    format!(
                        "`{}` must be system, developer, user, assistant or tool, not `{other}`",
                        mo.at("role")
                    ),
                ))
            }
        }
    }
    if let Some(n) = o.opt_i64("n")? {
        if n != 1 {
            return Err(unsupported("n", "more than one choice"));
        }
    }
    if o.opt_bool("logprobs")? == Some(true) {
        return Err(unsupported("logprobs", "log probabilities"));
    }
    let max_tokens = match o.opt_u32("max_completion_tokens")? {
        Some(n) => Some(n),
        None => o.opt_u32("max_tokens")?,
    };
    let include_usage = match o.get("stream_options") {
        None => false,
        Some(so) => Obj::new(so, "stream_options")?
            .opt_bool("include_usage")?
            .unwrap_or(false),
    };
    Ok(ChatRequest {
        model,
        system,
        messages,
        tools: tools(&o)?,
        tool_choice: tool_choice(&o)?,
        parallel_tool_calls: o.opt_bool("parallel_tool_calls")?,
        response_format: response_format(&o)?,
        sampling: Sampling {
            temperature: o.opt_f64("temperature")?,
            top_p: o.opt_f64("top_p")?,
            top_k: None,
            seed: o.opt_i64("seed")?,
            presence_penalty: o.opt_f64("presence_penalty")?,
            frequency_penalty: o.opt_f64("frequency_penalty")?,
        },
        max_tokens,
        stop: o.opt_strings("stop")?,
        user: o.opt_str("user")?.map(str::to_owned),
        stream: o.opt_bool("stream")?.unwrap_or(false),
        include_usage,
    })
}

/// The wire `finish_reason` for a canonical one.
pub(crate) fn finish_reason(r: &FinishReason) -> &'static str {
    match r {
        FinishReason::Stop | FinishReason::StopSequence(_) | FinishReason::Other(_) => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: CachedOut,
    completion_tokens_details: ReasoningOut,
}

#[derive(Serialize)]
struct CachedOut {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct ReasoningOut {
    reasoning_tokens: u64,
}

fn usage_out(u: &Usage) -> UsageOut {
    UsageOut {
        prompt_tokens: u.input_tokens,
        completion_tokens: u.output_tokens,
        total_tokens: u.total_tokens(),
        prompt_tokens_details: CachedOut {
            cached_tokens: u.cached_input_tokens,
        },
        completion_tokens_details: ReasoningOut {
            reasoning_tokens: u.reasoning_tokens,
        },
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: MessageOut<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: Option<String>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<CallOut<'a>>,
}

/// Renders a `chat.completion`.
pub(crate) fn render_response(resp: &ChatResponse, now_unix: u64) -> Vec<u8> {
    let text = resp.text();
    let calls: Vec<CallOut<'_>> = resp
        .tool_calls()
        .map(|c| CallOut::new(Cow::Borrowed(&c.id), c))
        .collect();
    let out = Completion {
        id: &resp.id,
        object: "chat.completion",
        created: resp.created.unwrap_or(now_unix),
        model: &resp.model,
        choices: [CompletionChoice {
            index: 0,
            message: MessageOut {
                role: "assistant",
                content: if text.is_empty() && !calls.is_empty() {
                    None
                } else {
                    Some(text)
                },
                refusal: None,
                tool_calls: calls,
            },
            logprobs: None,
            finish_reason: finish_reason(&resp.finish_reason),
        }],
        usage: resp.usage.as_ref().map(usage_out),
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

/// `{"error": {"message", "type", "param", "code"}}`, the OpenAI error body.
#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    error: ErrorOut<'a>,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: &'static str,
}

impl<'a> ErrorBody<'a> {
    /// An error body with these fields.
    pub(crate) fn new(
        message: &'a str,
        kind: &'static str,
        param: Option<&'a str>,
        code: &'static str,
    ) -> ErrorBody<'a> {
        ErrorBody {
            error: ErrorOut {
                message,
                kind,
                param,
                code,
            },
        }
    }

    /// The body for `err` with the client-safe `message`.
    fn of(err: &'a LlmError, message: &'a str) -> ErrorBody<'a> {
        // A missing model, a refused key or permission are the client's own faults when the
        // gateway found them (OpenAI answers those as invalid_request_error); from a provider
        // they concern the gateway's access and are server errors.
        let client_side = !matches!(err.origin, Origin::Provider(_));
        let kind = match err.kind {
            ErrorKind::InvalidRequest
            | ErrorKind::Unsupported
            | ErrorKind::ContextLengthExceeded
            | ErrorKind::RequestTooLarge
            | ErrorKind::ContentFiltered => "invalid_request_error",
            ErrorKind::NotFound | ErrorKind::Authentication if client_side => {
                "invalid_request_error"
            }
            ErrorKind::PermissionDenied if client_side => "permission_error",
            ErrorKind::RateLimited | ErrorKind::QuotaExceeded => "rate_limit_error",
            _ => "server_error",
        };
        let code = match err.kind {
            ErrorKind::ContextLengthExceeded => "context_length_exceeded",
            ErrorKind::QuotaExceeded => "insufficient_quota",
            ErrorKind::RateLimited => "rate_limit_exceeded",
            ErrorKind::NotFound if client_side && err.param.as_deref() == Some("model") => {
                "model_not_found"
            }
            k => k.as_str(),
        };
        let param = err.param.as_deref().filter(|p| !p.is_empty());
        ErrorBody::new(message, kind, param, code)
    }

    /// The body as JSON.
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Renders `{"error": {...}}` for `err` with the client-safe `message`.
pub(crate) fn render_error(err: &LlmError, message: &str) -> Vec<u8> {
    ErrorBody::of(err, message).to_vec()
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    /// Absent without `include_usage`; `null` on ordinary chunks with it; set on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<UsageOut>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tool_calls: &'a [CallDelta<'a>],
}

#[derive(Serialize)]
struct CallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// Encodes canonical events as `chat.completion.chunk` SSE.
#[derive(Debug)]
pub(crate) struct StreamEncoder {
    include_usage: bool,
    now_unix: u64,
    id: String,
    model: String,
    created: u64,
    started: bool,
    finished: bool,
    usage: Option<Usage>,
    closed: bool,
}

impl StreamEncoder {
    pub(crate) fn new(include_usage: bool, now_unix: u64) -> StreamEncoder {
        StreamEncoder {
            include_usage,
            now_unix,
            id: String::new(),
            model: String::new(),
            created: now_unix,
            started: false,
            finished: false,
            usage: None,
            closed: false,
        }
    }

    /// One chunk with these `choices` and `usage` (absent, `null` or the counts).
    fn write(
        &self,
        out: &mut Vec<u8>,
        choices: &[ChunkChoice<'_>],
        usage: Option<Option<UsageOut>>,
    ) {
        let c = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage,
        };
        encode_json(out, None, &c);
    }

    /// One ordinary chunk: choice 0 with `delta` and `finish`.
    fn chunk(&self, out: &mut Vec<u8>, delta: Delta<'_>, finish: Option<&'static str>) {
        let choice = ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: finish,
        };
        self.write(out, &[choice], self.include_usage.then_some(None));
    }

    /// A chunk with one tool-call delta.
    fn call_chunk(&mut self, out: &mut Vec<u8>, call: CallDelta<'_>) {
        self.ensure_started(out);
        let calls = [call];
        self.chunk(
            out,
            Delta {
                tool_calls: &calls,
                ..Delta::default()
            },
            None,
        );
    }

    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.chunk(
                out,
                Delta {
                    role: Some("assistant"),
                    content: Some(""),
                    ..Delta::default()
                },
                None,
            );
        }
    }

    pub(crate) fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        match ev {
            StreamEvent::Start {
                id, model, created, ..
            } => {
                if self.started {
                    return;
                }
                self.id.clone_from(id);
                self.model.clone_from(model);
                self.created = created.unwrap_or(self.now_unix);
                self.ensure_started(out);
            }
            StreamEvent::TextDelta(t) => {
                self.ensure_started(out);
                self.chunk(
                    out,
                    Delta {
                        content: Some(t),
                        ..Delta::default()
                    },
                    None,
                );
            }
            StreamEvent::ToolCallStart { index, id, name } => self.call_chunk(
                out,
                CallDelta {
                    index: *index,
                    id: Some(id),
                    kind: Some("function"),
                    function: FunctionDelta {
                        name: Some(name),
                        arguments: "",
                    },
                },
            ),
            StreamEvent::ToolCallDelta { index, arguments } => self.call_chunk(
                out,
                CallDelta {
                    index: *index,
                    id: None,
                    kind: None,
                    function: FunctionDelta {
                        name: None,
                        arguments,
                    },
                },
            ),
            StreamEvent::Finish(reason) => self.finish(out, reason),
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Done => {
                self.finish(out, &FinishReason::Stop);
                if self.include_usage {
                    if let Some(u) = &self.usage {
                        self.write(out, &[], Some(Some(usage_out(u))));
                    }
                }
                encode_event(out, None, "[DONE]");
                self.closed = true;
            }
            StreamEvent::Error(e) => {
                encode_json(out, None, &ErrorBody::of(e, &client_message(e)));
                self.closed = true;
            }
        }
    }

    /// Sends the finish chunk once.
    fn finish(&mut self, out: &mut Vec<u8>, reason: &FinishReason) {
        if self.finished {
            return;
        }
        self.ensure_started(out);
        self.finished = true;
        self.chunk(out, Delta::default(), Some(finish_reason(reason)));
    }
}
