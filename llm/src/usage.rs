//! Token usage and cost. Each provider's usage block is normalised here into one [`Usage`]
//! whose `input_tokens` is the *whole* prompt (cached and cache-written tokens included), as
//! OpenAI and Gemini count it; Anthropic's split counts are summed on the way in and split
//! again on the way out.
//!
//! Cost is computed only from usage a provider reported: a stream that carried none has
//! unknown usage (`None`) and unknown cost, never an estimate.

use serde_json::Value;

/// Tokens consumed by one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All prompt tokens, including `cached_input_tokens` and `cache_write_input_tokens`.
    pub input_tokens: u64,
    /// All generated tokens, including `reasoning_tokens`.
    pub output_tokens: u64,
    /// Prompt tokens served from the provider's prompt cache.
    pub cached_input_tokens: u64,
    /// Prompt tokens written to the provider's prompt cache (Anthropic).
    pub cache_write_input_tokens: u64,
    /// Output tokens spent on hidden reasoning (OpenAI reasoning, Gemini thoughts).
    pub reasoning_tokens: u64,
}

impl Usage {
    /// `input_tokens + output_tokens`.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    /// Prompt tokens that were neither read from nor written to a cache.
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cached_input_tokens)
            .saturating_sub(self.cache_write_input_tokens)
    }

    /// OpenAI-family `usage` (`prompt_tokens`, `completion_tokens`,
    /// `prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens`;
    /// DeepSeek's `prompt_cache_hit_tokens` is read when the details are absent).
    /// `None` when the value is not an object carrying the two counts.
    pub(crate) fn from_openai(v: &Value) -> Option<Usage> {
        let input = v.get("prompt_tokens")?.as_u64()?;
        let output = v
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let cached = v
            .pointer("/prompt_tokens_details/cached_tokens")
            .and_then(Value::as_u64)
            .or_else(|| v.get("prompt_cache_hit_tokens").and_then(Value::as_u64))
            .unwrap_or(0);
        let reasoning = v
            .pointer("/completion_tokens_details/reasoning_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Some(Usage {
            input_tokens: input,
            output_tokens: output,
            cached_input_tokens: cached,
            cache_write_input_tokens: 0,
            reasoning_tokens: reasoning,
        })
    }

    /// Anthropic `usage` (`input_tokens` excludes the cache counts, which are added here).
    pub(crate) fn from_anthropic(v: &Value) -> Option<Usage> {
        let get = |k: &str| v.get(k).and_then(Value::as_u64);
        let input = get("input_tokens");
        let output = get("output_tokens");
        if input.is_none() && output.is_none() {
            return None;
        }
        let read = get("cache_read_input_tokens").unwrap_or(0);
        let write = get("cache_creation_input_tokens").unwrap_or(0);
        Some(Usage {
            input_tokens: input.unwrap_or(0) + read + write,
            output_tokens: output.unwrap_or(0),
            cached_input_tokens: read,
            cache_write_input_tokens: write,
            reasoning_tokens: 0,
        })
    }

    /// Gemini `usageMetadata` (`promptTokenCount` includes `cachedContentTokenCount`; thoughts
    /// are billed as output, so `thoughtsTokenCount` is added to `candidatesTokenCount`).
    pub(crate) fn from_gemini(v: &Value) -> Option<Usage> {
        let get = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        v.get("promptTokenCount")?.as_u64()?;
        let thoughts = get("thoughtsTokenCount");
        Some(Usage {
            input_tokens: get("promptTokenCount") + get("toolUsePromptTokenCount"),
            output_tokens: get("candidatesTokenCount") + thoughts,
            cached_input_tokens: get("cachedContentTokenCount"),
            cache_write_input_tokens: 0,
            reasoning_tokens: thoughts,
        })
    }
}

/// A deployment's prices in currency units per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    /// Per million uncached prompt tokens.
    pub input_per_million: f64,
    /// Per million output tokens.
    pub output_per_million: f64,
    /// Per million prompt tokens read from cache; the input price when not set.
    pub cached_input_per_million: Option<f64>,
    /// Per million prompt tokens written to cache; the input price when not set.
    pub cache_write_per_million: Option<f64>,
}

impl Prices {
    /// Prices with only input and output set (cache reads and writes at the input price).
    pub fn new(input_per_million: f64, output_per_million: f64) -> Prices {
        Prices {
            input_per_million,
            output_per_million,
            cached_input_per_million: None,
            cache_write_per_million: None,
        }
    }

    /// The cost of `usage`, or `None` when usage is unknown: cost is never estimated.
    pub fn cost(&self, usage: Option<&Usage>) -> Option<f64> {
        let u = usage?;
        let per = |tokens: u64, price: f64| tokens as f64 * price / 1_000_000.0;
        let cached_price = self
            .cached_input_per_million
            .unwrap_or(self.input_per_million);
        let write_price = self
            .cache_write_per_million
            .unwrap_or(self.input_per_million);
        Some(
            per(u.uncached_input_tokens(), self.input_per_million)
                + per(u.cached_input_tokens, cached_price)
                + per(u.cache_write_input_tokens, write_price)
                + per(u.output_tokens, self.output_per_million),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_usage_with_details() {
        let u = Usage::from_openai(&json!({
            "prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 1024},
            "completion_tokens_details": {"reasoning_tokens": 64}
        }))
        .unwrap();
        assert_eq!(
            u,
            Usage {
                input_tokens: 1200,
                output_tokens: 300,
                cached_input_tokens: 1024,
                cache_write_input_tokens: 0,
                reasoning_tokens: 64
            }
        );
        assert_eq!(Usage::from_openai(&json!(null)), None);
        let ds = Usage::from_openai(
            &json!({"prompt_tokens": 10, "completion_tokens": 2, "prompt_cache_hit_tokens": 8}),
        )
        .unwrap();
        assert_eq!(ds.cached_input_tokens, 8);
    }

    #[test]
    fn anthropic_usage_sums_cache_counts() {
        let u = Usage::from_anthropic(&json!({
            "input_tokens": 50, "output_tokens": 20,
            "cache_creation_input_tokens": 100, "cache_read_input_tokens": 900
        }))
        .unwrap();
        assert_eq!(u.input_tokens, 1050);
        assert_eq!(u.cached_input_tokens, 900);
        assert_eq!(u.cache_write_input_tokens, 100);
        assert_eq!(u.uncached_input_tokens(), 50);
        assert_eq!(u.output_tokens, 20);
    }

    #[test]
    fn gemini_usage_counts_thoughts_as_output() {
        let u = Usage::from_gemini(&json!({
            "promptTokenCount": 40, "candidatesTokenCount": 12, "thoughtsTokenCount": 30,
            "cachedContentTokenCount": 32, "totalTokenCount": 82
        }))
        .unwrap();
        assert_eq!(u.input_tokens, 40);
        assert_eq!(u.output_tokens, 42);
        assert_eq!(u.reasoning_tokens, 30);
        assert_eq!(u.cached_input_tokens, 32);
    }

    #[test]
    fn cost_from_prices_and_unknown_usage() {
        let u = Usage {
            input_tokens: 2_000_000,
            output_tokens: 500_000,
            cached_input_tokens: 1_000_000,
            cache_write_input_tokens: 0,
            reasoning_tokens: 0,
        };
        let p = Prices::new(3.0, 15.0);
        assert_eq!(p.cost(Some(&u)), Some(3.0 * 2.0 + 15.0 * 0.5));
        let cached = Prices {
            cached_input_per_million: Some(0.3),
            ..p
        };
        assert_eq!(cached.cost(Some(&u)), Some(3.0 + 0.3 + 7.5));
        assert_eq!(p.cost(None), None);
    }
}
