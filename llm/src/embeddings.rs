//! Embeddings: the canonical request and response, the OpenAI `POST /v1/embeddings` ingress
//! format, and the egress formats: OpenAI, Azure, Mistral and compatible servers take the
//! OpenAI shape (Mistral calls `dimensions` `output_dimension`); Gemini takes `embedContent`
//! for one text and `batchEmbedContents` for several (text only; it reports no token usage).
//! Anthropic has no embeddings endpoint.
//!
//! When the client asks for `base64` vectors and the provider cannot produce them (Mistral,
//! Gemini), floats are requested and encoded here (little-endian `f32`, as OpenAI does).

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

use crate::egress::{body_bytes, malformed, openai, parse_json, str_of, Deployment, ProviderKind};
use crate::error::{ErrorKind, LlmError, Origin};
use crate::json::{index, parse_body, wrong_type, Obj};

/// What to embed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbeddingInput {
    /// Texts.
    Text(Vec<String>),
    /// Pre-tokenised inputs (OpenAI-family providers only).
    Tokens(Vec<Vec<u32>>),
}

impl EmbeddingInput {
    fn len(&self) -> usize {
        match self {
            EmbeddingInput::Text(t) => t.len(),
            EmbeddingInput::Tokens(t) => t.len(),
        }
    }
}

/// How vectors are returned to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncodingFormat {
    /// JSON arrays of numbers.
    #[default]
    Float,
    /// Base64 of little-endian `f32`s.
    Base64,
}

/// One embeddings request.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingRequest {
    /// The model the client asked for.
    pub model: String,
    /// The inputs.
    pub input: EmbeddingInput,
    /// The vector encoding the client wants.
    pub encoding_format: EncodingFormat,
    /// A truncated output dimension.
    pub dimensions: Option<u32>,
    /// An end-user identifier.
    pub user: Option<String>,
}

/// One vector.
#[derive(Debug, Clone, PartialEq)]
pub enum Embedding {
    /// Numbers.
    Float(Vec<f32>),
    /// Base64 of little-endian `f32`s, as the provider sent it.
    Base64(String),
}

/// Token usage of an embeddings call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingUsage {
    /// Input tokens.
    pub prompt_tokens: u64,
    /// Total tokens (equal to input tokens).
    pub total_tokens: u64,
}

/// The vectors, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingResponse {
    /// The model that answered.
    pub model: String,
    /// One vector per input.
    pub data: Vec<Embedding>,
    /// Usage, when the provider reported it.
    pub usage: Option<EmbeddingUsage>,
}

/// Parses an OpenAI `POST /v1/embeddings` body.
pub fn parse_openai_request(body: &[u8]) -> Result<EmbeddingRequest, LlmError> {
    let v = parse_body(body)?;
    let o = Obj::new(&v, "")?;
    let model = o.str("model")?.to_owned();
    let input = match o.req("input")? {
        Value::String(s) => EmbeddingInput::Text(vec![s.clone()]),
        Value::Array(items) if items.is_empty() => {
            return Err(LlmError::client("input", "`input` must not be empty"))
        }
        Value::Array(items) => match &items[0] {
            Value::String(_) => EmbeddingInput::Text(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| match x {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(wrong_type(&index("input", i), "a string", other)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Value::Number(_) => EmbeddingInput::Tokens(vec![tokens(items, "input")?]),
            Value::Array(_) => EmbeddingInput::Tokens(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| match x {
                        Value::Array(t) => tokens(t, &index("input", i)),
                        other => Err(wrong_type(
                            &index("input", i),
                            "an array of token ids",
                            other,
                        )),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => {
                return Err(wrong_type(
                    "input[0]",
                    "a string, a token id or an array of token ids",
                    other,
                ))
            }
        },
        other => return Err(wrong_type("input", "a string or an array", other)),
    };
    let encoding_format = match o.opt_str("encoding_format")? {
        None | Some("float") => EncodingFormat::Float,
        Some("base64") => EncodingFormat::Base64,
        Some(other) => {
            return Err(LlmError::client(
                "encoding_format",
                format!("`encoding_format` must be `float` or `base64`, not `{other}`"),
            ))
        }
    };
    Ok(EmbeddingRequest {
        model,
        input,
        encoding_format,
        dimensions: o.opt_u32("dimensions")?,
        user: o.opt_str("user")?.map(str::to_owned),
    })
}

fn tokens(items: &[Value], path: &str) -> Result<Vec<u32>, LlmError> {
    items
        .iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_u64()
                .filter(|&n| n <= u64::from(u32::MAX))
                .map(|n| n as u32)
                .ok_or_else(|| wrong_type(&index(path, i), "a token id", x))
        })
        .collect()
}

#[derive(Serialize)]
struct ListOut<'a> {
    object: &'static str,
    data: Vec<ItemOut<'a>>,
    model: &'a str,
    usage: UsageOut,
}

#[derive(Serialize)]
struct ItemOut<'a> {
    object: &'static str,
    index: usize,
    embedding: EmbeddingOut<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingOut<'a> {
    Float(&'a [f32]),
    Base64(Cow<'a, str>),
}

#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// Renders an OpenAI embeddings list in the encoding `req` asked for. Unknown usage is
/// rendered as zeros (the field is required); accounting must use `resp.usage`.
pub fn render_openai_response(req: &EmbeddingRequest, resp: &EmbeddingResponse) -> Vec<u8> {
    let data = resp
        .data
        .iter()
        .enumerate()
        .map(|(i, e)| ItemOut {
            object: "embedding",
            index: i,
            embedding: match (e, req.encoding_format) {
                (Embedding::Float(v), EncodingFormat::Float) => EmbeddingOut::Float(v),
                (Embedding::Float(v), EncodingFormat::Base64) => {
                    EmbeddingOut::Base64(Cow::Owned(base64_f32(v)))
                }
                (Embedding::Base64(s), _) => EmbeddingOut::Base64(Cow::Borrowed(s)),
            },
        })
        .collect();
    let usage = resp.usage.unwrap_or(EmbeddingUsage {
        prompt_tokens: 0,
        total_tokens: 0,
    });
    let out = ListOut {
        object: "list",
        data,
        model: &resp.model,
        usage: UsageOut {
            prompt_tokens: usage.prompt_tokens,
            total_tokens: usage.total_tokens,
        },
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

/// Standard base64 (with padding) of little-endian `f32`s.
pub(crate) fn base64_f32(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|f| f.to_le_bytes()).collect();
    base64(&bytes)
}

/// Standard base64 with padding.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(A[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Builds `(path, body)` for an embeddings request at `dep`.
pub(crate) fn build_request(
    dep: &Deployment,
    req: &EmbeddingRequest,
) -> Result<(String, Vec<u8>), LlmError> {
    let origin = dep.origin();
    let body = match dep.kind {
        ProviderKind::Anthropic => {
            return Err(LlmError::unsupported(
                origin,
                None,
                "Anthropic has no embeddings endpoint",
            ))
        }
        ProviderKind::Gemini => {
            let texts = match &req.input {
                EmbeddingInput::Text(t) => t,
                EmbeddingInput::Tokens(_) => {
                    return Err(LlmError::unsupported(
                        origin,
                        Some("input"),
                        "Gemini embeds text only, not token ids",
                    ))
                }
            };
            let request = |t: &str| {
                let mut r = serde_json::json!({"content": {"parts": [{"text": t}]}});
                if let Some(d) = req.dimensions {
                    r["outputDimensionality"] = Value::from(d);
                }
                r
            };
            let root = dep.root();
            let (path, body) = if let [one] = texts.as_slice() {
                (
                    format!("{root}/models/{}:embedContent", dep.model),
                    request(one),
                )
            } else {
                let model_name = format!("models/{}", dep.model);
                let requests: Vec<Value> = texts
                    .iter()
                    .map(|t| {
                        let mut r = request(t);
                        r["model"] = Value::from(model_name.as_str());
                        r
                    })
                    .collect();
                (
                    format!("{root}/models/{}:batchEmbedContents", dep.model),
                    serde_json::json!({ "requests": requests }),
                )
            };
            return Ok((path, body.to_string().into_bytes()));
        }
        ProviderKind::Mistral => OpenAiBody {
            model: Some(&dep.model),
            input: InputOut::of(&req.input),
            encoding_format: None,
            dimensions: None,
            output_dimension: req.dimensions,
            user: None,
        },
        ProviderKind::OpenAi | ProviderKind::Azure | ProviderKind::OpenAiCompatible => OpenAiBody {
            model: (dep.kind != ProviderKind::Azure).then_some(dep.model.as_str()),
            input: InputOut::of(&req.input),
            encoding_format: (req.encoding_format == EncodingFormat::Base64).then_some("base64"),
            dimensions: req.dimensions,
            output_dimension: None,
            user: req.user.as_deref(),
        },
    };
    Ok((openai::path(dep, "embeddings"), body_bytes(&body)?))
}

/// The OpenAI-family embeddings body (Mistral names `dimensions` `output_dimension`), with
/// the inputs borrowed from the request.
#[derive(Serialize)]
struct OpenAiBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    input: InputOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding_format: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dimension: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum InputOut<'a> {
    Text(&'a [String]),
    Tokens(&'a [Vec<u32>]),
}

impl InputOut<'_> {
    fn of(input: &EmbeddingInput) -> InputOut<'_> {
        match input {
            EmbeddingInput::Text(t) => InputOut::Text(t),
            EmbeddingInput::Tokens(t) => InputOut::Tokens(t),
        }
    }
}

fn floats(v: &Value, origin: Origin) -> Result<Vec<f32>, LlmError> {
    v.as_array()
        .ok_or_else(|| malformed(origin, "embedding is not an array"))?
        .iter()
        .map(|x| {
            x.as_f64()
                .map(|f| f as f32)
                .ok_or_else(|| malformed(origin, "embedding holds a non-number"))
        })
        .collect()
}

/// Reads a successful embeddings body.
pub(crate) fn parse_response(
    dep: &Deployment,
    req: &EmbeddingRequest,
    body: &[u8],
) -> Result<EmbeddingResponse, LlmError> {
    let origin = dep.origin();
    let v = parse_json(origin, body)?;
    if v.get("error").is_some() {
        return Err(crate::egress::errors::parse(dep.kind, 200, body, None));
    }
    let data = if dep.kind == ProviderKind::Gemini {
        if let Some(single) = v.pointer("/embedding/values") {
            vec![Embedding::Float(floats(single, origin)?)]
        } else {
            v.get("embeddings")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed(origin, "response has no `embeddings`"))?
                .iter()
                .map(|e| {
                    floats(e.get("values").unwrap_or(&Value::Null), origin).map(Embedding::Float)
                })
                .collect::<Result<_, _>>()?
        }
    } else {
        let mut items: Vec<(u64, Embedding)> = v
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed(origin, "response has no `data`"))?
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let idx = item
                    .get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(i as u64);
                let e = match item.get("embedding") {
                    Some(Value::String(s)) => Embedding::Base64(s.clone()),
                    Some(other) => Embedding::Float(floats(other, origin)?),
                    None => return Err(malformed(origin, "data item has no `embedding`")),
                };
                Ok((idx, e))
            })
            .collect::<Result<_, LlmError>>()?;
        items.sort_by_key(|(i, _)| *i);
        items.into_iter().map(|(_, e)| e).collect()
    };
    if data.len() != req.input.len() {
        return Err(LlmError::new(
            ErrorKind::MalformedResponse,
            origin,
            format!("{} inputs but {} embeddings", req.input.len(), data.len()),
        ));
    }
    let usage = v.get("usage").and_then(|u| {
        let p = u.get("prompt_tokens")?.as_u64()?;
        Some(EmbeddingUsage {
            prompt_tokens: p,
            total_tokens: u.get("total_tokens").and_then(Value::as_u64).unwrap_or(p),
        })
    });
    Ok(EmbeddingResponse {
        model: str_of(&v, "model").unwrap_or(&dep.model).to_owned(),
        data,
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        // 1.0f32 = 00 00 80 3f
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
    }

    #[test]
    fn parses_every_input_form() {
        let p = |s: &str| parse_openai_request(s.as_bytes());
        assert_eq!(
            p(r#"{"model":"m","input":"a"}"#).unwrap().input,
            EmbeddingInput::Text(vec!["a".into()])
        );
        assert_eq!(
            p(r#"{"model":"m","input":[1,2]}"#).unwrap().input,
            EmbeddingInput::Tokens(vec![vec![1, 2]])
        );
        assert_eq!(
            p(r#"{"model":"m","input":[[1],[2,3]]}"#).unwrap().input,
            EmbeddingInput::Tokens(vec![vec![1], vec![2, 3]])
        );
        assert_eq!(
            p(r#"{"model":"m","input":["a",1]}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("input[1]")
        );
        assert_eq!(
            p(r#"{"model":"m","input":[]}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("input")
        );
        assert_eq!(
            p(r#"{"model":"m","input":"a","encoding_format":"int8"}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("encoding_format")
        );
    }
}
