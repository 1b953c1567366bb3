//! The Gemini API wire format (`POST {root}/models/{model}:generateContent`, or
//! `:streamGenerateContent?alt=sse`; `x-goog-api-key`).
//!
//! Requests: system instructions go to `systemInstruction`; roles are `user` and `model`;
//! consecutive same-role messages are merged (so parallel function responses share one turn);
//! tool calls become `functionCall {name, args}` and tool results `functionResponse {name,
//! response: {output | error}}` (Gemini matches responses to calls by name, which is looked up
//! from the conversation); tools are `functionDeclarations` with `parametersJsonSchema` (plain
//! JSON Schema); tool choice is `toolConfig.functionCallingConfig` (`AUTO`/`ANY`/`NONE`,
//! `allowedFunctionNames`); sampling, stop sequences, the token limit and JSON output
//! (`responseMimeType`, `responseJsonSchema`) go to `generationConfig`. `user` and
//! `parallel_tool_calls` have no Gemini equivalent and are not sent.
//!
//! Responses and streams: every SSE event is a whole `GenerateContentResponse` holding the
//! next parts of `candidates[0]`; function calls arrive complete (one call per part) and get
//! their `id` from the part or, when it has none, a deterministic one; `thought` parts are
//! skipped; `finishReason` `STOP` with function calls means tool calls; `usageMetadata`
//! is cumulative, the last one counts. The stream has no end marker: it is complete when the
//! body ends after a finish reason.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{arguments_object, body_bytes, ids, malformed, parse_json, str_of, Deployment};
use crate::canonical::{
    ChatRequest, ChatResponse, FinishReason, Image, OutputPart, Part, ResponseFormat, ResultPart,
    Role, StreamEvent, ToolCall, ToolChoice,
};
use crate::error::{LlmError, Origin};
use crate::sse::SseEvent;
use crate::usage::Usage;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    contents: Vec<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Content>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<Value>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    generation_config: Map<String, Value>,
}

#[derive(Serialize)]
struct Content {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    parts: Vec<Value>,
}

fn image_part(img: &Image) -> Value {
    match img {
        Image::Base64 { media_type, data } => {
            serde_json::json!({"inlineData": {"mimeType": media_type, "data": data}})
        }
        Image::Url { url, .. } => {
            let mut file = serde_json::json!({"fileUri": url});
            if let Some(mime) = mime_from_extension(url) {
                file["mimeType"] = Value::from(mime);
            }
            serde_json::json!({ "fileData": file })
        }
    }
}

/// The image MIME type named by a URL's extension, when it names one.
fn mime_from_extension(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        _ => return None,
    })
}

/// Builds `(path, body)` for generateContent / streamGenerateContent.
pub(crate) fn build_request(
    dep: &Deployment,
    req: &ChatRequest,
) -> Result<(String, Vec<u8>), LlmError> {
    let mut contents: Vec<Content> = Vec::new();
    for (mi, m) in req.messages.iter().enumerate() {
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "model",
        };
        let mut parts = Vec::new();
        for p in &m.content {
            match p {
                Part::Text(t) if t.is_empty() => {}
                Part::Text(t) => parts.push(serde_json::json!({ "text": t })),
                Part::Image(img) => parts.push(image_part(img)),
                Part::ToolCall(c) => {
                    let args = arguments_object(c, mi)?;
                    parts.push(serde_json::json!({"functionCall": {"name": c.name, "args": args}}));
                }
                Part::ToolResult(r) => {
                    let name = req
                        .messages
                        .iter()
                        .flat_map(|m| m.content.iter())
                        .find_map(|p| match p {
                            Part::ToolCall(c) if c.id == r.call_id => Some(c.name.as_str()),
                            _ => None,
                        })
                        .ok_or_else(|| {
                            LlmError::client(
                                format!("messages[{mi}]"),
                                format!(
                                    "tool result `{}` answers no tool call in the conversation (Gemini needs the function name)",
                                    r.call_id
                                ),
                            )
                        })?;
                    let key = if r.is_error { "error" } else { "output" };
                    let mut response = Map::new();
                    response.insert(key.to_owned(), Value::from(r.text()));
                    parts.push(serde_json::json!({"functionResponse": {"name": name, "response": response}}));
                    for c in &r.content {
                        if let ResultPart::Image(img) = c {
                            parts.push(image_part(img));
                        }
                    }
                }
            }
        }
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some(last) if last.role == Some(role) => last.parts.extend(parts),
            _ => contents.push(Content {
                role: Some(role),
                parts,
            }),
        }
    }

    let system_instruction = (!req.system.is_empty()).then(|| Content {
        role: None,
        parts: req
            .system
            .iter()
            .map(|s| serde_json::json!({ "text": s }))
            .collect(),
    });
    let tools = if req.tools.is_empty() {
        Vec::new()
    } else {
        let decls: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut d =
                    serde_json::json!({"name": t.name, "parametersJsonSchema": t.parameters});
                if let Some(desc) = &t.description {
                    d["description"] = Value::from(desc.as_str());
                }
                d
            })
            .collect();
        vec![serde_json::json!({ "functionDeclarations": decls })]
    };
    let tool_config = req.tool_choice.as_ref().map(|c| {
        let fc = match c {
            ToolChoice::Auto => serde_json::json!({"mode": "AUTO"}),
            ToolChoice::None => serde_json::json!({"mode": "NONE"}),
            ToolChoice::Required => serde_json::json!({"mode": "ANY"}),
            ToolChoice::Tool(name) => {
                serde_json::json!({"mode": "ANY", "allowedFunctionNames": [name]})
            }
        };
        serde_json::json!({ "functionCallingConfig": fc })
    });

    let mut gc = Map::new();
    let s = &req.sampling;
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            gc.insert(k.to_owned(), v);
        }
    };
    put("temperature", s.temperature.map(Value::from));
    put("topP", s.top_p.map(Value::from));
    put("topK", s.top_k.map(Value::from));
    put("seed", s.seed.map(Value::from));
    put("presencePenalty", s.presence_penalty.map(Value::from));
    put("frequencyPenalty", s.frequency_penalty.map(Value::from));
    put("maxOutputTokens", req.max_tokens.map(Value::from));
    put(
        "stopSequences",
        (!req.stop.is_empty()).then(|| Value::from(req.stop.clone())),
    );
    match &req.response_format {
        ResponseFormat::Text => {}
        ResponseFormat::JsonObject => {
            put("responseMimeType", Some(Value::from("application/json")))
        }
        ResponseFormat::JsonSchema { schema, .. } => {
            put("responseMimeType", Some(Value::from("application/json")));
            put("responseJsonSchema", Some(schema.clone()));
        }
    }

    let body = Body {
        contents,
        system_instruction,
        tools,
        tool_config,
        generation_config: gc,
    };
    let bytes = body_bytes(&body)?;
    let method = if req.stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    };
    Ok((
        format!("{}/models/{}:{method}", dep.root(), dep.model),
        bytes,
    ))
}

/// Maps a Gemini `finishReason`; `STOP` after function calls means tool calls.
pub(crate) fn finish_reason(reason: &str, called_tools: bool) -> FinishReason {
    match reason {
        "STOP" if called_tools => FinishReason::ToolCalls,
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        other => FinishReason::Other(other.to_owned()),
    }
}

/// The answer parts of one response chunk: text, and function calls as `(name, args JSON,
/// id)`.
enum Piece {
    Text(String),
    Call {
        name: String,
        args: String,
        id: Option<String>,
    },
}

fn pieces(candidate: &Value) -> Vec<Piece> {
    let mut out = Vec::new();
    let Some(parts) = candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
    else {
        return out;
    };
    for p in parts {
        if p.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = str_of(p, "text") {
            if !t.is_empty() {
                out.push(Piece::Text(t.to_owned()));
            }
        } else if let Some(fc) = p.get("functionCall") {
            out.push(Piece::Call {
                name: str_of(fc, "name").unwrap_or_default().to_owned(),
                args: fc
                    .get("args")
                    .map(Value::to_string)
                    .unwrap_or_else(|| "{}".to_owned()),
                id: str_of(fc, "id")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            });
        }
    }
    out
}

/// The response id, or one derived from the body when the provider gave none.
fn response_id(v: &Value, body: &[u8]) -> String {
    match str_of(v, "responseId") {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => ids::response_id("gemini-", body),
    }
}

/// A prompt blocked before generation has no candidates, only `promptFeedback.blockReason`.
fn prompt_blocked(v: &Value) -> bool {
    v.pointer("/promptFeedback/blockReason").is_some()
        && v.get("candidates")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
}

/// Reads a generateContent response.
pub(crate) fn parse_response(dep: &Deployment, body: &[u8]) -> Result<ChatResponse, LlmError> {
    let origin = dep.origin();
    let v = parse_json(origin, body)?;
    if v.get("error").is_some() {
        return Err(super::errors::parse(dep.kind, 200, body, None));
    }
    let id = response_id(&v, body);
    let model = str_of(&v, "modelVersion").unwrap_or(&dep.model).to_owned();
    let usage = v.get("usageMetadata").and_then(Usage::from_gemini);
    if prompt_blocked(&v) {
        return Ok(ChatResponse {
            id,
            model,
            created: None,
            content: Vec::new(),
            finish_reason: FinishReason::ContentFilter,
            usage,
        });
    }
    let candidate = v
        .get("candidates")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| malformed(origin, "response has no `candidates[0]`"))?;
    let mut content = Vec::new();
    let mut calls = 0u32;
    for piece in pieces(candidate) {
        match piece {
            Piece::Text(t) => match content.last_mut() {
                Some(OutputPart::Text(prev)) => prev.push_str(&t),
                _ => content.push(OutputPart::Text(t)),
            },
            Piece::Call {
                name,
                args,
                id: call_id,
            } => {
                let call_id =
                    call_id.unwrap_or_else(|| ids::tool_call_id(&id, calls, &name, &args));
                calls += 1;
                content.push(OutputPart::ToolCall(ToolCall {
                    id: call_id,
                    name,
                    arguments: args,
                }));
            }
        }
    }
    let reason = str_of(candidate, "finishReason").unwrap_or("STOP");
    Ok(ChatResponse {
        id,
        model,
        created: None,
        content,
        finish_reason: finish_reason(reason, calls > 0),
        usage,
    })
}

/// Decoder state for a Gemini SSE stream.
#[derive(Debug)]
pub(crate) struct StreamState {
    model: String,
    /// The response id, once the first chunk named (or was hashed into) it.
    id: Option<String>,
    calls: u32,
    finished: bool,
    usage: Option<Usage>,
}

impl StreamState {
    pub(crate) fn new(model: &str) -> StreamState {
        StreamState {
            model: model.to_owned(),
            id: None,
            calls: 0,
            finished: false,
            usage: None,
        }
    }

    fn origin() -> Origin {
        Origin::Provider(super::ProviderKind::Gemini)
    }

    pub(crate) fn on_event(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) {
        let Some(v) = super::parse_stream_json(Self::origin(), &ev.data, "stream chunk", out)
        else {
            return;
        };
        if v.get("error").is_some() {
            out.push(StreamEvent::Error(super::errors::from_value(
                super::ProviderKind::Gemini,
                None,
                &v,
                None,
            )));
            return;
        }
        let id: &str = match &mut self.id {
            Some(id) => id,
            None => {
                let id = response_id(&v, ev.data.as_bytes());
                out.push(StreamEvent::Start {
                    id: id.clone(),
                    model: str_of(&v, "modelVersion").unwrap_or(&self.model).to_owned(),
                    created: None,
                    usage: None,
                });
                self.id.insert(id)
            }
        };
        if let Some(u) = v.get("usageMetadata").and_then(Usage::from_gemini) {
            self.usage = Some(u);
        }
        if prompt_blocked(&v) {
            self.finished = true;
            out.push(StreamEvent::Finish(FinishReason::ContentFilter));
            return;
        }
        let Some(candidate) = v
            .get("candidates")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            return;
        };
        for piece in pieces(candidate) {
            match piece {
                Piece::Text(t) => out.push(StreamEvent::TextDelta(t)),
                Piece::Call {
                    name,
                    args,
                    id: call_id,
                } => {
                    let index = self.calls;
                    self.calls += 1;
                    let call_id =
                        call_id.unwrap_or_else(|| ids::tool_call_id(id, index, &name, &args));
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: call_id,
                        name,
                    });
                    out.push(StreamEvent::ToolCallDelta {
                        index,
                        arguments: args,
                    });
                }
            }
        }
        if let Some(reason) = str_of(candidate, "finishReason") {
            if !self.finished {
                self.finished = true;
                out.push(StreamEvent::Finish(finish_reason(reason, self.calls > 0)));
            }
        }
    }

    /// The body ended: that is the end of a Gemini stream, when a finish reason came.
    pub(crate) fn end_of_body(&mut self, out: &mut Vec<StreamEvent>) {
        if self.finished {
            if let Some(u) = self.usage {
                out.push(StreamEvent::Usage(u));
            }
            out.push(StreamEvent::Done);
        }
    }
}
