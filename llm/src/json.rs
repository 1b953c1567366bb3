//! Reading client JSON with errors that name the field: every accessor knows the path of the
//! value it reads (`messages[2].content[0].image_url.url`) and reports a 400-class
//! [`LlmError`] with that path as `param`. JSON `null` counts as absent, as the OpenAI and
//! Anthropic APIs treat it.

use serde_json::{Map, Value};

use crate::error::LlmError;

/// Parses a request body, reporting malformed JSON as a client error.
pub(crate) fn parse_body(body: &[u8]) -> Result<Value, LlmError> {
    serde_json::from_slice(body).map_err(|e| {
        let mut err = LlmError::client("", format!("request body is not valid JSON: {e}"));
        err.param = None;
        err
    })
}

/// Names a JSON value's type for error messages.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `path.key`, or `key` at the root.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `path[i]`.
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// A type error at `path`.
pub(crate) fn wrong_type(path: &str, expected: &str, got: &Value) -> LlmError {
    LlmError::client(
        path,
        format!("`{path}` must be {expected}, not {}", type_name(got)),
    )
}

/// A JSON object being read, with its path.
#[derive(Clone, Copy)]
pub(crate) struct Obj<'a, 'p> {
    map: &'a Map<String, Value>,
    path: &'p str,
}

impl<'a, 'p> Obj<'a, 'p> {
    /// `v` as an object at `path`.
    pub(crate) fn new(v: &'a Value, path: &'p str) -> Result<Obj<'a, 'p>, LlmError> {
        match v {
            Value::Object(map) => Ok(Obj { map, path }),
            other => Err(wrong_type(
                if path.is_empty() { "body" } else { path },
                "an object",
                other,
            )),
        }
    }

    /// The path of `key` in this object.
    pub(crate) fn at(&self, key: &str) -> String {
        join(self.path, key)
    }

    /// The value of `key`, `None` when absent or null.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// The value of a required `key`.
    pub(crate) fn req(&self, key: &str) -> Result<&'a Value, LlmError> {
        self.get(key).ok_or_else(|| {
            let p = self.at(key);
            LlmError::client(&p, format!("`{p}` is required"))
        })
    }

    /// An optional JSON Schema (an object), cloned.
    pub(crate) fn opt_schema(&self, key: &str) -> Result<Option<Value>, LlmError> {
        match self.get(key) {
            None => Ok(None),
            Some(s @ Value::Object(_)) => Ok(Some(s.clone())),
            Some(other) => Err(wrong_type(&self.at(key), "a JSON Schema object", other)),
        }
    }

    /// A required JSON Schema (an object), cloned.
    pub(crate) fn schema(&self, key: &str) -> Result<Value, LlmError> {
        match self.req(key)? {
            s @ Value::Object(_) => Ok(s.clone()),
            other => Err(wrong_type(&self.at(key), "a JSON Schema object", other)),
        }
    }

    /// An optional string.
    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&'a str>, LlmError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(&self.at(key), "a string", other)),
        }
    }

    /// A required string.
    pub(crate) fn str(&self, key: &str) -> Result<&'a str, LlmError> {
        match self.req(key)? {
            Value::String(s) => Ok(s),
            other => Err(wrong_type(&self.at(key), "a string", other)),
        }
    }

    /// An optional boolean.
    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>, LlmError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(&self.at(key), "a boolean", other)),
        }
    }

    /// An optional number.
    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>, LlmError> {
        match self.get(key) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => n
                .as_f64()
                .map(Some)
                .ok_or_else(|| wrong_type(&self.at(key), "a number", v)),
            Some(other) => Err(wrong_type(&self.at(key), "a number", other)),
        }
    }

    /// An optional integer.
    pub(crate) fn opt_i64(&self, key: &str) -> Result<Option<i64>, LlmError> {
        match self.get(key) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| wrong_type(&self.at(key), "an integer", v)),
            Some(other) => Err(wrong_type(&self.at(key), "an integer", other)),
        }
    }

    /// An optional non-negative integer that fits 32 bits.
    pub(crate) fn opt_u32(&self, key: &str) -> Result<Option<u32>, LlmError> {
        match self.get(key) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => match n.as_u64() {
                Some(x) if x <= u64::from(u32::MAX) => Ok(Some(x as u32)),
                _ => Err(wrong_type(
                    &self.at(key),
                    "a non-negative integer below 2^32",
                    v,
                )),
            },
            Some(other) => Err(wrong_type(&self.at(key), "a non-negative integer", other)),
        }
    }

    /// An optional array.
    pub(crate) fn opt_array(&self, key: &str) -> Result<Option<&'a Vec<Value>>, LlmError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(wrong_type(&self.at(key), "an array", other)),
        }
    }

    /// A required array.
    pub(crate) fn array(&self, key: &str) -> Result<&'a Vec<Value>, LlmError> {
        match self.req(key)? {
            Value::Array(a) => Ok(a),
            other => Err(wrong_type(&self.at(key), "an array", other)),
        }
    }

    /// An optional string-or-array-of-strings (OpenAI `stop`), as a list.
    pub(crate) fn opt_strings(&self, key: &str) -> Result<Vec<String>, LlmError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(wrong_type(&index(&self.at(key), i), "a string", other)),
                })
                .collect(),
            Some(other) => Err(wrong_type(
                &self.at(key),
                "a string or an array of strings",
                other,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_field() {
        let v = json!({"a": {"b": 3, "n": null, "s": ["x", 1]}});
        let root = Obj::new(&v, "").unwrap();
        let a_path = root.at("a");
        let a = Obj::new(root.req("a").unwrap(), &a_path).unwrap();
        let e = a.str("b").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("a.b"));
        assert_eq!(e.message, "`a.b` must be a string, not a number");
        assert_eq!(a.opt_str("n").unwrap(), None);
        let e = a.str("n").unwrap_err();
        assert_eq!(e.message, "`a.n` is required");
        let e = a.opt_strings("s").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("a.s[1]"));
        assert_eq!(a.opt_u32("b").unwrap(), Some(3));
        let neg = json!({"m": -1});
        assert!(Obj::new(&neg, "").unwrap().opt_u32("m").is_err());
        assert_eq!(
            parse_body(b"{").unwrap_err().kind,
            crate::error::ErrorKind::InvalidRequest
        );
    }
}
