//! Server-sent events: an incremental parser and an encoder, after the WHATWG HTML
//! "event stream interpretation" rules.
//!
//! The parser takes bytes in arbitrary pieces: a piece may end inside a UTF-8 character,
//! inside a `\r\n` pair or inside a field name, and the events are the same as if the whole
//! stream had come at once. Lines end at `\r\n`, `\n` or `\r`; `:` lines are comments; `data:`
//! lines accumulate (joined with `\n`); a blank line dispatches the event if it has data; a
//! leading byte-order mark is dropped; invalid UTF-8 is replaced with U+FFFD.

use crate::error::{ErrorKind, LlmError, Origin};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` type, when one was given.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last event id seen so far in the stream.
    pub id: Option<String>,
    /// A `retry:` reconnection time in milliseconds, when this event carried one.
    pub retry: Option<u64>,
}

/// The default limit on one line or one event's data (8 MiB).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 8 << 20;

/// An incremental SSE parser.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous piece ended with `\r`: a `\n` starting the next piece belongs to it.
    skip_lf: bool,
    /// No line has been completed yet (a BOM may start the first one).
    first_line: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    last_id: Option<String>,
    retry: Option<u64>,
    max_bytes: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::new()
    }
}

impl SseParser {
    /// A parser with the default size limit.
    pub fn new() -> SseParser {
        SseParser::with_limit(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A parser that fails when one line or one event's data exceeds `max_bytes`.
    pub fn with_limit(max_bytes: usize) -> SseParser {
        SseParser {
            line: Vec::new(),
            skip_lf: false,
            first_line: true,
            event: None,
            data: String::new(),
            has_data: false,
            last_id: None,
            retry: None,
            max_bytes,
        }
    }

    /// Parses the next piece of the stream, appending completed events to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), LlmError> {
        if self.skip_lf && !bytes.is_empty() {
            self.skip_lf = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
        }
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.push_line_bytes(&bytes[..pos])?;
            self.end_line(out)?;
            let rest = &bytes[pos + 1..];
            bytes = if bytes[pos] == b'\r' {
                match rest.first() {
                    Some(b'\n') => &rest[1..],
                    Some(_) => rest,
                    None => {
                        self.skip_lf = true;
                        rest
                    }
                }
            } else {
                rest
            };
        }
        self.push_line_bytes(bytes)
    }

    /// Ends the stream. A last event whose lines were all complete but which lacked the blank
    /// line is dispatched (several servers omit it); a partial last line is discarded.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        self.line.clear();
        self.dispatch(out);
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) -> Result<(), LlmError> {
        if self.line.len() + bytes.len() > self.max_bytes {
            return Err(too_large(self.max_bytes));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) -> Result<(), LlmError> {
        let mut raw = std::mem::take(&mut self.line);
        let mut start = 0;
        if self.first_line {
            self.first_line = false;
            if raw.starts_with(b"\xEF\xBB\xBF") {
                start = 3;
            }
        }
        let result = self.process_line(&raw[start..], out);
        raw.clear();
        self.line = raw;
        result
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), LlmError> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            b"data" => {
                if self.data.len() + value.len() + 1 > self.max_bytes {
                    return Err(too_large(self.max_bytes));
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
                self.has_data = true;
            }
            b"id" if !value.contains(&0) => {
                self.last_id = Some(String::from_utf8_lossy(value).into_owned());
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.retry = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        let retry = self.retry.take();
        if !self.has_data {
            self.data.clear();
            return;
        }
        self.has_data = false;
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        out.push(SseEvent {
            event,
            data,
            id: self.last_id.clone(),
            retry,
        });
    }
}

fn too_large(limit: usize) -> LlmError {
    LlmError::new(
        ErrorKind::MalformedResponse,
        Origin::Gateway,
        format!("server-sent event larger than {limit} bytes"),
    )
}

/// Appends one event: an optional `event:` line, one `data:` line per line of `data` (split
/// at `\r\n`, `\n` and `\r`), and the blank line that dispatches it.
pub fn encode_event(out: &mut Vec<u8>, event: Option<&str>, data: &str) {
    event_line(out, event);
    let mut rest = data;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&rest.as_bytes()[..end]);
        out.push(b'\n');
        if end == rest.len() {
            break;
        }
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    out.push(b'\n');
}

/// The `event:` line, when the event has a type.
fn event_line(out: &mut Vec<u8>, event: Option<&str>) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        // An event name cannot span lines.
        out.extend(name.bytes().filter(|&b| b != b'\n' && b != b'\r'));
        out.push(b'\n');
    }
}

/// Appends one event whose data is `value` as compact JSON, serialised straight into `out`:
/// compact JSON has no raw line breaks (they are escaped inside strings), so it is always one
/// `data:` line and the same bytes as [`encode_event`] with the JSON text.
pub(crate) fn encode_json(out: &mut Vec<u8>, event: Option<&str>, value: &impl serde::Serialize) {
    event_line(out, event);
    out.extend_from_slice(b"data: ");
    // Writing to a Vec cannot fail, nor can serialising the crate's plain output structs.
    let _ = serde_json::to_writer(&mut *out, value);
    out.extend_from_slice(b"\n\n");
}

/// Appends a comment line (`: text`), e.g. a keep-alive.
pub fn encode_comment(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b": ");
    out.extend(text.bytes().filter(|&b| b != b'\n' && b != b'\r'));
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.feed(input, &mut out).unwrap();
        p.finish(&mut out);
        out
    }

    #[test]
    fn fields_comments_and_multiline_data() {
        let ev = parse_all(
            b": hello\nevent: ping\ndata: a\ndata:b\ndata\nid: 7\nretry: 1500\nfoo: bar\n\n",
        );
        assert_eq!(
            ev,
            vec![SseEvent {
                event: Some("ping".into()),
                data: "a\nb\n".into(),
                id: Some("7".into()),
                retry: Some(1500),
            }]
        );
    }

    #[test]
    fn events_without_data_are_not_dispatched() {
        assert_eq!(parse_all(b"event: x\n\ndata: y\n\n").len(), 1);
        assert_eq!(parse_all(b"event: x\n\ndata: y\n\n")[0].event, None);
    }

    #[test]
    fn encoder_round_trips_through_parser() {
        let mut buf = Vec::new();
        encode_event(
            &mut buf,
            Some("message_delta"),
            "line1\nline2\r\nline3\rend",
        );
        encode_comment(&mut buf, "keep-alive");
        encode_event(&mut buf, None, "");
        assert_eq!(
            String::from_utf8(buf.clone()).unwrap(),
            "event: message_delta\ndata: line1\ndata: line2\ndata: line3\ndata: end\n\n: keep-alive\n\ndata: \n\n"
        );
        let ev = parse_all(&buf);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].data, "line1\nline2\nline3\nend");
        assert_eq!(ev[1].data, "");
    }

    #[test]
    fn json_events_are_the_bytes_of_their_text() {
        let value = serde_json::json!({"text": "a\nb\r\"c\"", "n": 1});
        let mut direct = Vec::new();
        encode_json(&mut direct, Some("delta"), &value);
        let mut via_text = Vec::new();
        encode_event(&mut via_text, Some("delta"), &value.to_string());
        assert_eq!(direct, via_text);
        assert_eq!(parse_all(&direct)[0].data, value.to_string());
    }

    #[test]
    fn size_limit_is_enforced() {
        let mut p = SseParser::with_limit(16);
        let mut out = Vec::new();
        assert!(p.feed(b"data: 0123456789abcdef\n", &mut out).is_err());
    }
}
