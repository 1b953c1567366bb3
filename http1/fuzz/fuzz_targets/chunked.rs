//! ChunkedDecoder on arbitrary bytes.
//!
//! 1. The message is decoded whole, in two pieces, in many data-derived pieces and (when short)
//!    one byte at a time: every run must produce the same body bytes, trailer section, end of
//!    body, bytes left over, `decoded_len`, and the same error (kind and detail) if it fails
//!    (a size limit may be hit on a prefix before a syntax error further on: then only the
//!    kind is compared). Per-call invariants are checked on the way (no empty Data, nothing
//!    after Trailers, Done is sticky and consumes nothing, errors are sticky).
//! 2. A body that decodes completely is re-encoded with `encode_chunk` (one chunk, and
//!    data-derived chunk sizes) plus `LAST_CHUNK` or its trailer section, and must decode to
//!    the same bytes and trailers.
#![no_main]

use bytes::BytesMut;
use fuzz_support::{cut, show, Input};
use headwater_http1::chunked::{encode_chunk, encode_chunk_header, CRLF, LAST_CHUNK};
use headwater_http1::{ChunkedDecoder, Decoded, ErrorKind};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    data: Vec<u8>,
    trailers: Option<Vec<u8>>,
    done: bool,
    rest: Vec<u8>,
    /// The error, if decoding failed (kind and detail).
    error: Option<(ErrorKind, &'static str)>,
}

fn new_decoder(limits: Option<(usize, usize)>) -> ChunkedDecoder {
    match limits {
        Some((line, trailers)) => ChunkedDecoder::with_limits(line, trailers),
        None => ChunkedDecoder::new(),
    }
}

fn run(limits: Option<(usize, usize)>, pieces: &[&[u8]]) -> Outcome {
    let mut dec = new_decoder(limits);
    let mut buf = BytesMut::new();
    let mut out = Outcome {
        data: Vec::new(),
        trailers: None,
        done: false,
        rest: Vec::new(),
        error: None,
    };
    'pieces: for piece in pieces {
        buf.extend_from_slice(piece);
        while !out.done {
            match dec.decode(&mut buf) {
                Ok(None) => break,
                Ok(Some(Decoded::Data(b))) => {
                    assert!(!b.is_empty(), "empty Data");
                    assert!(out.trailers.is_none(), "Data after Trailers");
                    assert!(!dec.is_done());
                    out.data.extend_from_slice(&b);
                }
                Ok(Some(Decoded::Trailers(t))) => {
                    assert!(out.trailers.is_none(), "two Trailers");
                    assert!(t.ends_with(b"\r\n\r\n"), "trailers without final CRLF");
                    assert!(dec.is_done());
                    out.trailers = Some(t.to_vec());
                }
                Ok(Some(Decoded::Done)) => {
                    assert!(dec.is_done());
                    out.done = true;
                    let before = buf.clone();
                    assert_eq!(dec.decode(&mut buf), Ok(Some(Decoded::Done)));
                    assert_eq!(buf, before, "Done consumed bytes");
                }
                Err(e) => {
                    let before = buf.clone();
                    assert_eq!(dec.decode(&mut buf), Err(e), "error not sticky");
                    assert_eq!(buf, before, "a failed decoder consumed bytes");
                    out.error = Some((e.kind(), e.detail()));
                    break 'pieces;
                }
            }
        }
    }
    assert_eq!(dec.decoded_len(), out.data.len() as u64);
    out.rest = buf.to_vec();
    out
}

/// Size-limit errors: the only ones allowed to differ in detail between runs.
fn is_limit_detail(detail: &str) -> bool {
    detail.contains("too long") || detail.contains("too large") || detail.contains("too many")
}

fn agree(what: &str, whole: &Outcome, other: &Outcome, msg: &[u8]) {
    if let (Some(a), Some(b)) = (whole.error, other.error) {
        if a != b && a.0 == b.0 && (is_limit_detail(a.1) || is_limit_detail(b.1)) {
            // Different lines may be the first to trip a limit vs a syntax rule; the body
            // bytes handed out before the failure still have to agree up to the shorter run.
            let n = whole.data.len().min(other.data.len());
            assert_eq!(
                whole.data[..n],
                other.data[..n],
                "{what}: data before error"
            );
            return;
        }
        // Without a limit involved the error must be the same, at the same place; only the
        // bytes left in the buffer may differ (a split run has not received the rest).
        let (mut w, mut o) = (whole.clone(), other.clone());
        w.rest.clear();
        o.rest.clear();
        assert_eq!(w, o, "{what} differs from whole for {:?}", show(msg));
        return;
    }
    assert_eq!(
        whole,
        other,
        "{what} differs from whole for {:?}",
        show(msg)
    );
}

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data);
    let limits = input.chunk_limits();
    let msg = input.msg;

    let whole = run(limits, &[msg]);
    agree("two pieces", &whole, &run(limits, &input.two_pieces()), msg);
    agree(
        "many pieces",
        &whole,
        &run(limits, &input.many_pieces()),
        msg,
    );
    if msg.len() <= 512 {
        let bytes: Vec<&[u8]> = msg.chunks(1).collect();
        agree("1 byte at a time", &whole, &run(limits, &bytes), msg);
    }

    if !whole.done {
        return;
    }
    // Re-encode what was decoded and decode it again (default limits: our encoder writes
    // short size lines; the trailer section is the one that was accepted).
    let trailers = whole.trailers.as_deref();
    let end = |dst: &mut BytesMut| match trailers {
        Some(t) => {
            dst.extend_from_slice(b"0\r\n");
            dst.extend_from_slice(t);
        }
        None => dst.extend_from_slice(LAST_CHUNK),
    };
    let mut one = BytesMut::new();
    encode_chunk(&whole.data, &mut one);
    end(&mut one);
    let mut many = BytesMut::new();
    for piece in cut(&whole.data, input.ctl[0]) {
        if piece.is_empty() {
            // encode_chunk writes nothing for empty data (a zero-size chunk would end the body).
            let before = many.len();
            encode_chunk(piece, &mut many);
            assert_eq!(many.len(), before);
            continue;
        }
        if input.ctl[1] & 1 == 0 {
            encode_chunk(piece, &mut many);
        } else {
            encode_chunk_header(piece.len(), &mut many);
            many.extend_from_slice(piece);
            many.extend_from_slice(CRLF);
        }
    }
    end(&mut many);
    let dec_limits = limits.map(|(line, trailer)| (line.max(32), trailer));
    for encoded in [one, many] {
        let again = run(dec_limits, &[&encoded]);
        assert!(
            again.error.is_none(),
            "re-encoded body fails: {:?}",
            again.error
        );
        assert!(again.done, "re-encoded body incomplete");
        assert_eq!(again.data, whole.data, "re-encoded body data");
        assert_eq!(again.trailers, whole.trailers, "re-encoded trailers");
        assert!(again.rest.is_empty(), "bytes left after re-encoded body");
    }
});
