//! The OpenAI Chat Completions wire format, as spoken by OpenAI, Azure OpenAI, Mistral and
//! OpenAI-compatible servers. Their differences are captured by [`Flavor`]:
//!
//! | | OpenAI | Azure | Mistral | compatible |
//! |---|---|---|---|---|
//! | path | `{root}/chat/completions` | `{root}/deployments/{model}/chat/completions?api-version=` | `{root}/chat/completions` | `{root}/chat/completions` |
//! | `model` in body | yes | no (the path names it) | yes | yes |
//! | token limit | `max_completion_tokens` | `max_tokens` | `max_tokens` | `max_tokens` |
//! | seed | `seed` | `seed` | `random_seed` | `seed` |
//! | `user` | yes | yes | dropped (Mistral rejects unknown fields with 422) | yes |
//! | `stream_options.include_usage` | sent when streaming | sent from `api-version` 2024-09-01(-preview) on (older versions reject it; their streams then report no usage) | not sent (usage comes in the last chunk) | sent |
//! | required tool call | `"required"` | `"required"` | `"any"` | `"required"` |
//! | tool-call ids | as given | as given | mapped to 9 alphanumerics | as given |
//! | `name` on tool messages | no | no | yes | no |
//! | image `detail` | yes | yes | no | yes |

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

use super::{body_bytes, ids, malformed, parse_json, str_of, Deployment, ProviderKind};
use crate::canonical::{
    ChatRequest, ChatResponse, FinishReason, Image, OutputPart, Part, ResponseFormat, ResultPart,
    Role, StreamEvent, ToolCall, ToolChoice,
};
use crate::error::{LlmError, Origin};
use crate::sse::SseEvent;
use crate::usage::Usage;

/// Which member of the OpenAI family a deployment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// api.openai.com.
    OpenAi,
    /// Azure OpenAI.
    Azure,
    /// Mistral.
    Mistral,
    /// Any compatible server.
    Compatible,
}

impl Flavor {
    /// The flavor of an OpenAI-family kind.
    pub fn of(kind: ProviderKind) -> Flavor {
        match kind {
            ProviderKind::Azure => Flavor::Azure,
            ProviderKind::Mistral => Flavor::Mistral,
            ProviderKind::OpenAi => Flavor::OpenAi,
            _ => Flavor::Compatible,
        }
    }
}

/// The path for `endpoint` (`chat/completions`, `embeddings`) at this deployment.
pub(crate) fn path(dep: &Deployment, endpoint: &str) -> String {
    match Flavor::of(dep.kind) {
        Flavor::Azure => format!(
            "{}/deployments/{}/{endpoint}?api-version={}",
            dep.root(),
            dep.model,
            dep.api_version
                .as_deref()
                .unwrap_or(Deployment::DEFAULT_AZURE_API_VERSION)
        ),
        _ => format!("{}/{endpoint}", dep.root()),
    }
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    messages: Vec<Msg<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    random_seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolDef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum Msg<'a> {
    System {
        content: &'a str,
    },
    User {
        content: UserContent<'a>,
    },
    Assistant {
        content: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<CallOut<'a>>,
    },
    Tool {
        tool_call_id: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        content: String,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum UserContent<'a> {
    Text(&'a str),
    Parts(Vec<PartOut<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum PartOut<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageUrl<'a> },
}

#[derive(Serialize)]
struct ImageUrl<'a> {
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

/// A tool call as the OpenAI format carries it, in requests to providers and in answers to
/// clients: `{"id", "type": "function", "function": {"name", "arguments"}}`.
#[derive(Serialize)]
pub(crate) struct CallOut<'a> {
    id: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

impl<'a> CallOut<'a> {
    /// `call` under the id `id`.
    pub(crate) fn new(id: Cow<'a, str>, call: &'a ToolCall) -> CallOut<'a> {
        CallOut {
            id,
            kind: "function",
            function: FunctionOut {
                name: &call.name,
                arguments: &call.arguments,
            },
        }
    }
}

#[derive(Serialize)]
struct ToolDef<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionDef<'a>,
}

#[derive(Serialize)]
struct FunctionDef<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

/// Azure accepts `stream_options` from API version 2024-09-01-preview on (earlier versions
/// answer 400); other flavors decide elsewhere. Versions are dates, so they compare as text.
fn azure_has_stream_options(dep: &Deployment, flavor: Flavor) -> bool {
    if flavor != Flavor::Azure {
        return true;
    }
    let version = dep
        .api_version
        .as_deref()
        .unwrap_or(Deployment::DEFAULT_AZURE_API_VERSION);
    version >= "2024-09-01"
}

/// Builds `(path, body)` for a chat completion.
pub(crate) fn build_request(
    dep: &Deployment,
    req: &ChatRequest,
) -> Result<(String, Vec<u8>), LlmError> {
    let flavor = Flavor::of(dep.kind);
    let origin = dep.origin();
    let mistral = flavor == Flavor::Mistral;
    let call_id = |id| {
        if mistral {
            Cow::Owned(ids::mistral_tool_id(id))
        } else {
            Cow::Borrowed(id)
        }
    };

    let mut messages = Vec::with_capacity(req.messages.len() + req.system.len());
    for s in &req.system {
        messages.push(Msg::System { content: s });
    }
    for (mi, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::Assistant => {
                let mut text = String::new();
                let mut calls = Vec::new();
                for p in &m.content {
                    match p {
                        Part::Text(t) => text.push_str(t),
                        Part::ToolCall(c) => calls.push(CallOut::new(call_id(&c.id), c)),
                        Part::Image(_) | Part::ToolResult(_) => {
                            return Err(LlmError::unsupported(
                                origin,
                                Some(&format!("messages[{mi}]")),
                                "assistant messages can only carry text and tool calls",
                            ))
                        }
                    }
                }
                let content = if text.is_empty() && !calls.is_empty() {
                    None
                } else {
                    Some(text)
                };
                messages.push(Msg::Assistant {
                    content,
                    tool_calls: calls,
                });
            }
            Role::User => {
                // Tool results first (they must follow the assistant's tool calls), then the
                // rest of the message as one user message.
                let mut rest: Vec<&Part> = Vec::new();
                for p in &m.content {
                    if let Part::ToolResult(r) = p {
                        if r.content.iter().any(|c| matches!(c, ResultPart::Image(_))) {
                            return Err(LlmError::unsupported(
                                origin,
                                Some(&format!("messages[{mi}]")),
                                format!("{} tool messages cannot carry images", dep.kind.as_str()),
                            ));
                        }
                        let name = if mistral {
                            tool_name(req, &r.call_id)
                        } else {
                            None
                        };
                        messages.push(Msg::Tool {
                            tool_call_id: call_id(&r.call_id),
                            name,
                            content: r.text(),
                        });
                    } else {
                        rest.push(p);
                    }
                }
                if rest.is_empty() {
                    continue;
                }
                if rest.iter().any(|p| matches!(p, Part::ToolCall(_))) {
                    return Err(LlmError::unsupported(
                        origin,
                        Some(&format!("messages[{mi}]")),
                        "user messages cannot carry tool calls",
                    ));
                }
                let content = match rest.as_slice() {
                    [Part::Text(t)] => UserContent::Text(t),
                    parts => UserContent::Parts(
                        parts
                            .iter()
                            .filter_map(|p| match p {
                                Part::Text(t) => Some(PartOut::Text { text: t }),
                                Part::Image(img) => Some(PartOut::ImageUrl {
                                    image_url: ImageUrl {
                                        url: img.to_url(),
                                        detail: match img {
                                            Image::Url { detail, .. } if !mistral => {
                                                detail.as_deref()
                                            }
                                            _ => None,
                                        },
                                    },
                                }),
                                Part::ToolCall(_) | Part::ToolResult(_) => None,
                            })
                            .collect(),
                    ),
                };
                messages.push(Msg::User { content });
            }
        }
    }

    let tools = req
        .tools
        .iter()
        .map(|t| ToolDef {
            kind: "function",
            function: FunctionDef {
                name: &t.name,
                description: t.description.as_deref(),
                parameters: &t.parameters,
                strict: t.strict,
            },
        })
        .collect();
    let tool_choice = req.tool_choice.as_ref().map(|c| match c {
        ToolChoice::Auto => Value::from("auto"),
        ToolChoice::None => Value::from("none"),
        ToolChoice::Required if mistral => Value::from("any"),
        ToolChoice::Required => Value::from("required"),
        ToolChoice::Tool(name) => {
            serde_json::json!({"type": "function", "function": {"name": name}})
        }
    });
    let response_format = match &req.response_format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(serde_json::json!({"type": "json_object"})),
        ResponseFormat::JsonSchema {
            name,
            description,
            schema,
            strict,
        } => {
            let mut js = serde_json::json!({"name": name, "schema": schema});
            if let Some(d) = description {
                js["description"] = Value::from(d.as_str());
            }
            if let Some(s) = strict {
                js["strict"] = Value::from(*s);
            }
            Some(serde_json::json!({"type": "json_schema", "json_schema": js}))
        }
    };
    let s = &req.sampling;
    let body = Body {
        model: (flavor != Flavor::Azure).then_some(dep.model.as_str()),
        messages,
        temperature: s.temperature,
        top_p: s.top_p,
        max_tokens: if flavor == Flavor::OpenAi {
            None
        } else {
            req.max_tokens
        },
        max_completion_tokens: if flavor == Flavor::OpenAi {
            req.max_tokens
        } else {
            None
        },
        stop: &req.stop,
        seed: if mistral { None } else { s.seed },
        random_seed: if mistral { s.seed } else { None },
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
        user: if mistral { None } else { req.user.as_deref() },
        stream: req.stream,
        stream_options: (req.stream && !mistral && azure_has_stream_options(dep, flavor))
            .then_some(StreamOptions {
                include_usage: true,
            }),
        tools,
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls,
        response_format,
    };
    Ok((path(dep, "chat/completions"), body_bytes(&body)?))
}

/// The name of the tool whose call `call_id` a result answers, from the assistant messages.
fn tool_name<'a>(req: &'a ChatRequest, call_id: &str) -> Option<&'a str> {
    req.messages
        .iter()
        .rev()
        .flat_map(|m| m.content.iter())
        .find_map(|p| match p {
            Part::ToolCall(c) if c.id == call_id => Some(c.name.as_str()),
            _ => None,
        })
}

/// Maps an OpenAI-family `finish_reason`.
pub(crate) fn finish_reason(s: &str) -> FinishReason {
    match s {
        "stop" => FinishReason::Stop,
        "length" | "model_length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// Message `content` as text: a string, or an array of `{type: text, text}` parts.
fn content_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| str_of(p, "text")).collect(),
        _ => String::new(),
    }
}

/// Tool-call `arguments`: JSON text, or (from some compatible servers) a JSON value.
fn arguments_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Reads a chat completion.
pub(crate) fn parse_response(dep: &Deployment, body: &[u8]) -> Result<ChatResponse, LlmError> {
    let origin = dep.origin();
    let v = parse_json(origin, body)?;
    if v.get("choices").is_none() && v.get("error").is_some() {
        return Err(super::errors::parse(dep.kind, 200, body, None));
    }
    let choice = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| malformed(origin, "response has no `choices[0]`"))?;
    let msg = choice
        .get("message")
        .ok_or_else(|| malformed(origin, "response has no `choices[0].message`"))?;
    let mut content = Vec::new();
    let mut text = content_text(msg.get("content"));
    if text.is_empty() {
        if let Some(r) = str_of(msg, "refusal") {
            text = r.to_owned();
        }
    }
    if !text.is_empty() {
        content.push(OutputPart::Text(text));
    }
    let id = str_of(&v, "id").unwrap_or_default();
    let id = if id.is_empty() {
        ids::response_id("chatcmpl-", body)
    } else {
        id.to_owned()
    };
    if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
        for (i, c) in calls.iter().enumerate() {
            let f = c.get("function");
            let name = f
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let arguments = arguments_text(f.and_then(|f| f.get("arguments")));
            let call_id = match str_of(c, "id") {
                Some(s) if !s.is_empty() => s.to_owned(),
                _ => ids::tool_call_id(&id, i as u32, name, &arguments),
            };
            content.push(OutputPart::ToolCall(ToolCall {
                id: call_id,
                name: name.to_owned(),
                arguments,
            }));
        }
    }
    let finish = match str_of(choice, "finish_reason") {
        Some(s) => finish_reason(s),
        None if content.iter().any(|p| matches!(p, OutputPart::ToolCall(_))) => {
            FinishReason::ToolCalls
        }
        None => FinishReason::Other("unknown".into()),
    };
    Ok(ChatResponse {
        id,
        model: str_of(&v, "model").unwrap_or(&dep.model).to_owned(),
        created: v.get("created").and_then(Value::as_u64),
        content,
        finish_reason: finish,
        usage: v.get("usage").and_then(Usage::from_openai),
    })
}

/// One tool call being streamed.
#[derive(Debug)]
struct StreamCall {
    /// The provider's index for it.
    provider_index: u64,
    /// Its id, to tell a new call reusing an index (Mistral) from a continuation.
    id: Option<String>,
    /// Its canonical index, once started.
    canonical: Option<u32>,
    name: Option<String>,
    /// Arguments that arrived before the call's name.
    pending: String,
}

/// Decoder state for an OpenAI-family SSE stream.
#[derive(Debug)]
pub(crate) struct StreamState {
    kind: ProviderKind,
    model: String,
    started: bool,
    id: String,
    calls: Vec<StreamCall>,
    next_call: u32,
    finished: bool,
    usage: Option<Usage>,
}

impl StreamState {
    pub(crate) fn new(dep: &Deployment) -> StreamState {
        StreamState {
            kind: dep.kind,
            model: dep.model.clone(),
            started: false,
            id: String::new(),
            calls: Vec::new(),
            next_call: 0,
            finished: false,
            usage: None,
        }
    }

    pub(crate) fn on_event(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) {
        let data = ev.data.trim();
        if data == "[DONE]" {
            self.done(out);
            return;
        }
        if data.is_empty() {
            return;
        }
        let origin = Origin::Provider(self.kind);
        let Some(v) = super::parse_stream_json(origin, data, "stream chunk", out) else {
            return;
        };
        if v.get("error").is_some_and(|e| !e.is_null()) {
            out.push(StreamEvent::Error(super::errors::from_value(
                self.kind, None, &v, None,
            )));
            return;
        }
        let choices = v.get("choices").and_then(Value::as_array);
        let usage = v
            .get("usage")
            .and_then(Usage::from_openai)
            .or_else(|| v.pointer("/x_groq/usage").and_then(Usage::from_openai));
        let has_choices = choices.is_some_and(|c| !c.is_empty());
        if !self.started && (has_choices || usage.is_some()) {
            self.start(&v, out);
        }
        if let Some(choice) = choices.and_then(|c| c.first()) {
            if let Some(delta) = choice.get("delta") {
                self.on_delta(delta, out);
            }
            if let Some(reason) = str_of(choice, "finish_reason") {
                if !self.finished {
                    self.finished = true;
                    self.flush_pending(out);
                    out.push(StreamEvent::Finish(finish_reason(reason)));
                }
            }
        }
        if usage.is_some() {
            self.usage = usage;
        }
    }

    fn start(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        self.started = true;
        let id = str_of(v, "id").unwrap_or_default();
        self.id = if id.is_empty() {
            ids::response_id("chatcmpl-", v.to_string().as_bytes())
        } else {
            id.to_owned()
        };
        out.push(StreamEvent::Start {
            id: self.id.clone(),
            model: str_of(v, "model").unwrap_or(&self.model).to_owned(),
            created: v.get("created").and_then(Value::as_u64),
            usage: None,
        });
    }

    fn on_delta(&mut self, delta: &Value, out: &mut Vec<StreamEvent>) {
        for key in ["content", "refusal"] {
            if let Some(t) = delta.get(key).and_then(Value::as_str) {
                if !t.is_empty() {
                    out.push(StreamEvent::TextDelta(t.to_owned()));
                }
            }
        }
        let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) else {
            return;
        };
        for (pos, c) in calls.iter().enumerate() {
            let provider_index = c.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
            let id = str_of(c, "id").filter(|s| !s.is_empty());
            let f = c.get("function");
            let name = f
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            let args = arguments_text(f.and_then(|f| f.get("arguments")));
            // The call this delta continues: the latest with this index, unless the delta
            // names a different id (a new call reusing the index).
            let slot = self
                .calls
                .iter()
                .rposition(|s| s.provider_index == provider_index)
                .filter(|&i| match (id, &self.calls[i].id) {
                    (Some(new), Some(old)) => new == old,
                    _ => true,
                });
            let i = match slot {
                Some(i) => i,
                None => {
                    self.calls.push(StreamCall {
                        provider_index,
                        id: None,
                        canonical: None,
                        name: None,
                        pending: String::new(),
                    });
                    self.calls.len() - 1
                }
            };
            if self.calls[i].id.is_none() {
                self.calls[i].id = id.map(str::to_owned);
            }
            if self.calls[i].name.is_none() {
                self.calls[i].name = name.map(str::to_owned);
            }
            if self.calls[i].canonical.is_none() {
                if self.calls[i].name.is_some() {
                    self.begin_call(i, out);
                } else {
                    self.calls[i].pending.push_str(&args);
                    continue;
                }
            }
            if !args.is_empty() {
                out.push(StreamEvent::ToolCallDelta {
                    index: self.calls[i].canonical.unwrap_or_default(),
                    arguments: args,
                });
            }
        }
    }

    fn begin_call(&mut self, i: usize, out: &mut Vec<StreamEvent>) {
        let index = self.next_call;
        self.next_call += 1;
        let call = &mut self.calls[i];
        call.canonical = Some(index);
        let name = call.name.clone().unwrap_or_default();
        let id = match &call.id {
            Some(id) => id.clone(),
            None => ids::tool_call_id(&self.id, index, &name, ""),
        };
        out.push(StreamEvent::ToolCallStart { index, id, name });
        if !call.pending.is_empty() {
            out.push(StreamEvent::ToolCallDelta {
                index,
                arguments: std::mem::take(&mut call.pending),
            });
        }
    }

    /// Calls whose name never came cannot be started: report their arguments under an
    /// empty name rather than drop them.
    fn flush_pending(&mut self, out: &mut Vec<StreamEvent>) {
        for i in 0..self.calls.len() {
            if self.calls[i].canonical.is_none() && !self.calls[i].pending.is_empty() {
                self.calls[i].name = Some(String::new());
                self.begin_call(i, out);
            }
        }
    }

    fn done(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.finished {
            out.push(StreamEvent::Error(LlmError::new(
                crate::error::ErrorKind::StreamInterrupted,
                Origin::Provider(self.kind),
                "the stream ended without a finish_reason",
            )));
            return;
        }
        if let Some(u) = self.usage {
            out.push(StreamEvent::Usage(u));
        }
        out.push(StreamEvent::Done);
    }

    /// The body ended without `data: [DONE]`: complete when a finish reason was seen.
    pub(crate) fn end_of_body(&mut self, out: &mut Vec<StreamEvent>) {
        if self.finished {
            self.done(out);
        }
    }
}
