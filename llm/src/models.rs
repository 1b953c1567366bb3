//! `GET /v1/models`: the list of public model names the gateway serves, in the OpenAI shape
//! (`{"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}`) or the
//! Anthropic shape (`{"data": [{"type": "model", "id", "display_name", "created_at"}],
//! "has_more", "first_id", "last_id"}`).

use serde::Serialize;

use crate::time::rfc3339;

/// One model the gateway serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCard {
    /// The public model name.
    pub id: String,
    /// When it was added (Unix seconds).
    pub created: u64,
    /// Who serves it (OpenAI's `owned_by`).
    pub owned_by: String,
    /// A human-readable name (Anthropic's `display_name`; the id when `None`).
    pub display_name: Option<String>,
}

#[derive(Serialize)]
struct OpenAiList<'a> {
    object: &'static str,
    data: Vec<OpenAiModel<'a>>,
}

#[derive(Serialize)]
struct OpenAiModel<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
}

#[derive(Serialize)]
struct AnthropicList<'a> {
    data: Vec<AnthropicModel<'a>>,
    has_more: bool,
    first_id: Option<&'a str>,
    last_id: Option<&'a str>,
}

#[derive(Serialize)]
struct AnthropicModel<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    display_name: &'a str,
    created_at: String,
}

/// Renders the OpenAI model list.
pub fn render_openai(models: &[ModelCard]) -> Vec<u8> {
    let list = OpenAiList {
        object: "list",
        data: models
            .iter()
            .map(|m| OpenAiModel {
                id: &m.id,
                object: "model",
                created: m.created,
                owned_by: &m.owned_by,
            })
            .collect(),
    };
    serde_json::to_vec(&list).unwrap_or_default()
}

/// Renders the Anthropic model list (one page holding every model).
pub fn render_anthropic(models: &[ModelCard]) -> Vec<u8> {
    let list = AnthropicList {
        data: models
            .iter()
            .map(|m| AnthropicModel {
                kind: "model",
                id: &m.id,
                display_name: m.display_name.as_deref().unwrap_or(&m.id),
                created_at: rfc3339(m.created),
            })
            .collect(),
        has_more: false,
        first_id: models.first().map(|m| m.id.as_str()),
        last_id: models.last().map(|m| m.id.as_str()),
    };
    serde_json::to_vec(&list).unwrap_or_default()
}
