//! The SSE parser gives the same events however the bytes are split: byte by byte, at every
//! 2-way and every 3-way split point of a transcript that mixes `\r\n`, `\n` and `\r` line
//! ends, multi-byte UTF-8 (split inside characters), comments, a BOM, multi-line data, ids,
//! retry, events without data and an unterminated last event.

use headwater_llm::sse::{encode_event, SseEvent, SseParser};

const TRANSCRIPT: &[u8] = b"\xEF\xBB\xBF: comment line\r\n\
event: message_start\r\n\
data: {\"a\":\"h\xC3\xA9llo \xE4\xB8\x96\xE7\x95\x8C \xF0\x9F\x8E\x89\"}\r\n\
\r\n\
data: line one\n\
data:line two\n\
data\n\
id: 42\n\
\n\
event: only-event\r\
\r\
retry: 2500\r\
data: cr-only \xC3\xA9\r\
\r\
data: [DONE]\r\n\
\r\n\
data: last\n\
data: partial";

fn expected() -> Vec<SseEvent> {
    let id = Some("42".to_owned());
    vec![
        SseEvent {
            event: Some("message_start".into()),
            data: "{\"a\":\"héllo 世界 🎉\"}".into(),
            id: None,
            retry: None,
        },
        SseEvent {
            event: None,
            data: "line one\nline two\n".into(),
            id: id.clone(),
            retry: None,
        },
        SseEvent {
            event: None,
            data: "cr-only é".into(),
            id: id.clone(),
            retry: Some(2500),
        },
        SseEvent {
            event: None,
            data: "[DONE]".into(),
            id: id.clone(),
            retry: None,
        },
        // Complete lines without the final blank line are dispatched at the end; the partial
        // `data: partial` line is not.
        SseEvent {
            event: None,
            data: "last".into(),
            id,
            retry: None,
        },
    ]
}

fn parse_pieces(pieces: &[&[u8]]) -> Vec<SseEvent> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    for piece in pieces {
        p.feed(piece, &mut out).unwrap();
    }
    p.finish(&mut out);
    out
}

#[test]
fn whole_transcript() {
    assert_eq!(parse_pieces(&[TRANSCRIPT]), expected());
}

#[test]
fn byte_by_byte() {
    let pieces: Vec<&[u8]> = TRANSCRIPT.chunks(1).collect();
    assert_eq!(parse_pieces(&pieces), expected());
}

#[test]
fn every_two_way_split() {
    let want = expected();
    for i in 0..=TRANSCRIPT.len() {
        let (a, b) = TRANSCRIPT.split_at(i);
        assert_eq!(parse_pieces(&[a, b]), want, "split at {i}");
    }
}

#[test]
fn every_three_way_split() {
    let want = expected();
    for i in 0..=TRANSCRIPT.len() {
        for j in i..=TRANSCRIPT.len() {
            let pieces = [&TRANSCRIPT[..i], &TRANSCRIPT[i..j], &TRANSCRIPT[j..]];
            assert_eq!(parse_pieces(&pieces), want, "split at {i} and {j}");
        }
    }
}

#[test]
fn empty_pieces_do_not_lose_a_pending_cr() {
    // `\r` ends a piece, empty pieces follow, then the `\n` of the same line end.
    let out = parse_pieces(&[b"data: a\r", b"", b"", b"\n\r\n"]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].data, "a");
}

#[test]
fn invalid_utf8_is_replaced_not_fatal() {
    let out = parse_pieces(&[b"data: a\xFFb\n\n"]);
    assert_eq!(out[0].data, "a\u{FFFD}b");
}

#[test]
fn a_bom_only_counts_at_the_start() {
    let out = parse_pieces(&[b"data: x\n\n\xEF\xBB\xBFdata: y\n\n"]);
    // Not at the start: the second line's field name is "\u{FEFF}data", an unknown field.
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].data, "x");
}

#[test]
fn encoded_events_parse_back_at_every_split() {
    let mut bytes = Vec::new();
    encode_event(
        &mut bytes,
        Some("content_block_delta"),
        "{\"text\":\"a\\nb 世界\"}",
    );
    encode_event(&mut bytes, None, "multi\nline\r\ndata");
    encode_event(&mut bytes, None, "[DONE]");
    let want = vec![
        SseEvent {
            event: Some("content_block_delta".into()),
            data: "{\"text\":\"a\\nb 世界\"}".into(),
            id: None,
            retry: None,
        },
        SseEvent {
            event: None,
            data: "multi\nline\ndata".into(),
            id: None,
            retry: None,
        },
        SseEvent {
            event: None,
            data: "[DONE]".into(),
            id: None,
            retry: None,
        },
    ];
    for i in 0..=bytes.len() {
        assert_eq!(
            parse_pieces(&[&bytes[..i], &bytes[i..]]),
            want,
            "split at {i}"
        );
    }
}
