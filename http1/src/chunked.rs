//! The chunked transfer coding (RFC 9112 §7.1): a strict, streaming, zero-copy decoder and the
//! encoder helpers.
//!
//! This module owns everything about chunked bodies on the wire and nothing else: the framing
//! decision (whether a message is chunked at all) lives in `framing`, heads in `head`.
//!
//! [`ChunkedDecoder`] is sans-IO. The caller appends whatever it read to one `BytesMut` and calls
//! [`ChunkedDecoder::decode`] until it gets `Ok(None)` (read more) or [`Decoded::Done`]. Body bytes
//! are split off that buffer without copying and handed out as soon as they arrive; the decoder
//! never waits for a whole chunk. Incomplete size and trailer lines stay in the buffer (the decoder
//! only remembers how far it has already scanned them, so no byte is looked at twice on the
//! scanning path), which makes the result independent of how the input is split across reads.
//!
//! The decoder is strict because lenient chunked parsing is a classic request-smuggling vector
//! (a front end and a back end disagreeing on where a body ends):
//!
//! - chunk-size is 1 to 16 hex digits, nothing else: no sign, no `0x`, no empty size;
//! - chunk extensions are validated against the RFC grammar (token names, token or quoted-string
//!   values, whitespace only around `;` and `=`) and discarded;
//! - every line ends in CRLF: a bare LF or a CR not followed by LF is an error, as is any control
//!   byte (NUL, DEL, ...) other than HTAB in a size or trailer line;
//! - chunk data must be followed by exactly CRLF;
//! - trailer fields are `token ":" value` with no whitespace before the colon and no obs-fold;
//! - size lines and the trailer section are bounded (bytes and field count).
//!
//! Once the decoder has returned an error it keeps returning that error.
//!
//! The encoder side is a handful of functions and constants that write chunk framing into a
//! `BytesMut` without allocating beyond the buffer's own growth.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{bad_chunk, Error};
use crate::syntax::token_len;

/// Default limit on a chunk-size line (size and extensions, without the CRLF), in bytes.
const DEFAULT_MAX_CHUNK_LINE: usize = 4096;
/// Default limit on the trailer field lines (including their CRLFs), in bytes.
const DEFAULT_MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Limit on the number of trailer fields.
const MAX_TRAILER_FIELDS: usize = 64;
/// chunk-size = 1*16 HEXDIG: more digits could not fit a u64 (leading zeros are not special).
const MAX_SIZE_DIGITS: usize = 16;

/// The chunk data terminator.
pub const CRLF: &[u8] = b"\r\n";
/// Last chunk with an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// What the decoder produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes, split off the input buffer without copying (`buf.split_to(n).freeze()`).
    Data(Bytes),
    /// The trailer section: raw field lines, validated, INCLUDING the final empty line's CRLF
    /// (so it can be written verbatim after a "0\r\n" last-chunk line). Not produced when the
    /// message has no trailer fields.
    Trailers(Bytes),
    /// The last chunk and trailer section are complete. Bytes left in the buffer belong to the
    /// next message (pipelining) and must not have been touched.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line that starts at the front of the buffer. The first `scanned`
    /// bytes are known to hold no control byte and no line end.
    Size { scanned: usize },
    /// Inside chunk data, `remaining` (> 0) bytes to go.
    Data { remaining: u64 },
    /// Chunk data is complete; the CRLF after it is next.
    DataEnd,
    /// Reading the trailer section, which stays at the front of the buffer until it is complete.
    /// `line_start` is where the current line begins, `scanned` how far the current line is known
    /// to be clean, `fields` how many field lines were validated so far.
    Trailers {
        line_start: usize,
        scanned: usize,
        fields: usize,
    },
    /// The whole body has been consumed.
    Done,
    /// An error was returned; it is returned again on every call.
    Failed(Error),
}

/// Streaming decoder for a chunked message body.
///
/// Feed it one growing buffer: the caller may append to `buf` between calls but must not
/// otherwise modify the bytes the decoder left at its front.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    decoded: u64,
    max_chunk_line: usize,
    max_trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// Default limits: chunk-size line (size + extensions) at most 4096 bytes; trailer section at
    /// most 16 KiB, at most 64 trailer fields.
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_CHUNK_LINE, DEFAULT_MAX_TRAILER_BYTES)
    }

    /// A decoder with explicit limits: `max_chunk_line` bytes for a chunk-size line (size and
    /// extensions, without its CRLF) and `max_trailer_bytes` for the trailer field lines
    /// (with their CRLFs, without the final empty line). At most 64 trailer fields either way.
    pub fn with_limits(max_chunk_line: usize, max_trailer_bytes: usize) -> Self {
        ChunkedDecoder {
            state: State::Size { scanned: 0 },
            decoded: 0,
            max_chunk_line,
            max_trailer_bytes,
        }
    }

    /// Consume as much of `buf` as possible.
    ///
    /// `Ok(None)` means more input is needed; undecoded bytes of an incomplete line stay in
    /// `buf`. `Ok(Some(Data(b)))` yields at most the bytes of the current chunk available now.
    /// Trailer fields, if any, come as one [`Decoded::Trailers`] before [`Decoded::Done`]. After
    /// `Done`, further calls return `Ok(Some(Done))` without consuming anything. After an error,
    /// further calls return the same error.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, Error> {
        let result = self.step(buf);
        if let Err(e) = result {
            self.state = State::Failed(e);
        }
        result
    }

    /// Whether the last chunk and the trailer section have been consumed completely.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes decoded so far (sum of Data lengths).
    pub fn decoded_len(&self) -> u64 {
        self.decoded
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, Error> {
        loop {
            match self.state {
                State::Data { remaining } => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
                    let data = buf.split_to(n).freeze();
                    // n <= remaining, so neither can wrap.
                    let n = n as u64;
                    self.decoded += n;
                    let left = remaining - n;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data { remaining: left }
                    };
                    return Ok(Some(Decoded::Data(data)));
                }
                State::DataEnd => {
                    match buf.first() {
                        None => return Ok(None),
                        Some(b'\r') => {}
                        Some(_) => return Err(bad_chunk("chunk data not followed by CRLF")),
                    }
                    match buf.get(1) {
                        None => return Ok(None),
                        Some(b'\n') => {}
                        Some(_) => return Err(bad_chunk("CR after chunk data not followed by LF")),
                    }
                    buf.advance(2);
                    self.state = State::Size { scanned: 0 };
                }
                State::Size { scanned } => {
                    let end = match scan_line(buf, scanned, &SIZE_LINE)? {
                        Line::Partial(scanned) => {
                            if scanned > self.max_chunk_line {
                                return Err(bad_chunk("chunk size line too long"));
                            }
                            self.state = State::Size { scanned };
                            return Ok(None);
                        }
                        Line::Complete(cr) => cr,
                    };
                    if end > self.max_chunk_line {
                        return Err(bad_chunk("chunk size line too long"));
                    }
                    let size = parse_size_line(&buf[..end])?;
                    buf.advance(end + CRLF.len());
                    self.state = if size == 0 {
                        State::Trailers {
                            line_start: 0,
                            scanned: 0,
                            fields: 0,
                        }
                    } else {
                        State::Data { remaining: size }
                    };
                }
                State::Trailers {
                    line_start,
                    scanned,
                    fields,
                } => return self.trailers(buf, line_start, scanned, fields),
                State::Done => return Ok(Some(Decoded::Done)),
                State::Failed(e) => return Err(e),
            }
        }
    }

    /// Scans the trailer section from the saved position; it is handed out whole once complete.
    fn trailers(
        &mut self,
        buf: &mut BytesMut,
        mut line_start: usize,
        mut scanned: usize,
        mut fields: usize,
    ) -> Result<Option<Decoded>, Error> {
        loop {
            let cr = match scan_line(buf, scanned, &TRAILER_LINE)? {
                Line::Partial(scanned) => {
                    if scanned > self.max_trailer_bytes {
                        return Err(bad_chunk("trailer section too large"));
                    }
                    self.state = State::Trailers {
                        line_start,
                        scanned,
                        fields,
                    };
                    return Ok(None);
                }
                Line::Complete(cr) => cr,
            };
            let end = cr + CRLF.len();
            if cr == line_start {
                // The empty line: the section (and the body) ends here.
                self.state = State::Done;
                if line_start == 0 {
                    buf.advance(end);
                    return Ok(Some(Decoded::Done));
                }
                return Ok(Some(Decoded::Trailers(buf.split_to(end).freeze())));
            }
            if end > self.max_trailer_bytes {
                return Err(bad_chunk("trailer section too large"));
            }
            validate_trailer_field(&buf[line_start..cr])?;
            fields += 1;
            if fields > MAX_TRAILER_FIELDS {
                return Err(bad_chunk("too many trailer fields"));
            }
            line_start = end;
            scanned = end;
        }
    }
}

/// Error details for the line scanner, per kind of line.
struct LineErrors {
    bare_lf: Error,
    bare_cr: Error,
    control: Error,
}

const SIZE_LINE: LineErrors = LineErrors {
    bare_lf: bad_chunk("bare LF in chunk size line"),
    bare_cr: bad_chunk("CR not followed by LF in chunk size line"),
    control: bad_chunk("control byte in chunk size line"),
};

const TRAILER_LINE: LineErrors = LineErrors {
    bare_lf: bad_chunk("bare LF in trailer section"),
    bare_cr: bad_chunk("CR not followed by LF in trailer section"),
    control: bad_chunk("control byte in trailer section"),
};

/// Result of scanning for the end of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// No complete line yet; bytes before this offset are clean and need not be scanned again.
    Partial(usize),
    /// The line's content ends at this offset, where its CRLF starts.
    Complete(usize),
}

/// Control bytes (CTL) other than HTAB; CR and LF are among them and handled by the caller.
#[inline]
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// Finds the CRLF ending the line that starts at the front of `buf`, resuming at `from`.
/// Any other control byte, a bare LF or a CR followed by anything but LF is an error, so the
/// line content returned is free of control bytes except HTAB.
#[inline]
fn scan_line(buf: &[u8], from: usize, errors: &LineErrors) -> Result<Line, Error> {
    let from = from.min(buf.len());
    let Some(i) = buf[from..].iter().position(|&b| is_ctl(b)) else {
        return Ok(Line::Partial(buf.len()));
    };
    let pos = from + i;
    match buf[pos] {
        b'\r' => match buf.get(pos + 1) {
            // Rescan the CR next time, when the byte after it has arrived.
            None => Ok(Line::Partial(pos)),
            Some(b'\n') => Ok(Line::Complete(pos)),
            Some(_) => Err(errors.bare_cr),
        },
        // A CR right before this LF would have been found first.
        b'\n' => Err(errors.bare_lf),
        _ => Err(errors.control),
    }
}

/// Index of the first byte at or after `i` that is not BWS (SP / HTAB).
#[inline]
fn skip_bws(s: &[u8], i: usize) -> usize {
    s[i..]
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .map_or(s.len(), |n| i + n)
}

#[inline]
fn hex_value(b: u8) -> u64 {
    u64::from(match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    })
}

/// Parses a chunk-size line without its CRLF (`chunk-size [ chunk-ext ]`) and returns the size.
fn parse_size_line(line: &[u8]) -> Result<u64, Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(match line.first() {
            Some(b'+' | b'-') => bad_chunk("chunk size has a sign"),
            _ => bad_chunk("chunk size has no hex digits"),
        });
    }
    if digits > MAX_SIZE_DIGITS {
        return Err(bad_chunk("chunk size has more than 16 hex digits"));
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(hex_value(b)))
            .ok_or(bad_chunk("chunk size overflows u64"))?;
    }
    let rest = &line[digits..];
    if digits == 1 && line[0] == b'0' && matches!(rest.first(), Some(b'x' | b'X')) {
        return Err(bad_chunk("chunk size has a 0x prefix"));
    }
    if !rest.is_empty() {
        validate_extensions(rest)?;
    }
    Ok(size)
}

/// Validates `*( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] )`, the whole of
/// `s`. The caller guarantees `s` holds no control bytes other than HTAB.
fn validate_extensions(s: &[u8]) -> Result<(), Error> {
    let mut i = 0;
    loop {
        let semi = skip_bws(s, i);
        if semi == s.len() {
            if semi > i {
                return Err(bad_chunk(
                    "whitespace after chunk size or extension not followed by ';'",
                ));
            }
            return Ok(());
        }
        if s[semi] != b';' {
            return Err(if i == 0 {
                bad_chunk("invalid byte after chunk size")
            } else {
                bad_chunk("invalid byte after chunk extension")
            });
        }
        i = skip_bws(s, semi + 1);
        let name = token_len(&s[i..]);
        if name == 0 {
            return Err(bad_chunk("empty or invalid chunk extension name"));
        }
        i += name;
        let eq = skip_bws(s, i);
        if s.get(eq) != Some(&b'=') {
            // No value: the loop's top deals with what follows (";", end, or an error).
            continue;
        }
        i = skip_bws(s, eq + 1);
        match s.get(i) {
            None => return Err(bad_chunk("missing chunk extension value after '='")),
            Some(b'"') => i = quoted_string_end(s, i)?,
            Some(_) => {
                let value = token_len(&s[i..]);
                if value == 0 {
                    return Err(bad_chunk("invalid byte in chunk extension value"));
                }
                i += value;
            }
        }
    }
}

/// Given `s[start] == '"'`, returns the index just past the closing quote.
///
/// qdtext and quoted-pair admit HTAB, SP, VCHAR and obs-text; the caller has already rejected
/// every other byte, so only the quote and the backslash need attention here.
fn quoted_string_end(s: &[u8], start: usize) -> Result<usize, Error> {
    let mut i = start + 1;
    loop {
        let Some(n) = s[i..].iter().position(|&b| b == b'"' || b == b'\\') else {
            return Err(bad_chunk("unterminated quoted string in chunk extension"));
        };
        i += n;
        if s[i] == b'"' {
            return Ok(i + 1);
        }
        if i + 1 == s.len() {
            return Err(bad_chunk(
                "backslash at end of chunk extension quoted string",
            ));
        }
        i += 2;
    }
}

/// Validates one trailer field line (without its CRLF, never empty): `token ":" field-value`.
/// The caller has already rejected control bytes other than HTAB, which leaves the value with
/// only bytes a field value admits (SP, HTAB, VCHAR, obs-text).
fn validate_trailer_field(line: &[u8]) -> Result<(), Error> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(bad_chunk("obs-fold (line folding) in trailer section"));
    }
    let name = token_len(line);
    match line.get(name) {
        Some(b':') if name == 0 => Err(bad_chunk("empty trailer field name")),
        Some(b':') => Ok(()),
        Some(b' ' | b'\t') => Err(bad_chunk(
            "whitespace in trailer field name or before colon",
        )),
        Some(_) => Err(bad_chunk("invalid byte in trailer field name")),
        None => Err(bad_chunk("trailer field line has no colon")),
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends "{len in lowercase hex}\r\n" to dst. len must be > 0.
///
/// A zero `len` would write a last-chunk and end the body early, so it is a debug assertion
/// failure, and in release builds writes nothing.
pub fn encode_chunk_header(len: usize, dst: &mut BytesMut) {
    debug_assert!(len > 0, "a chunk header must announce at least one byte");
    if len == 0 {
        return;
    }
    let mut tmp = [0u8; 2 * core::mem::size_of::<usize>() + 2];
    let mut i = tmp.len() - CRLF.len();
    tmp[i..].copy_from_slice(CRLF);
    let mut n = len;
    while n > 0 {
        i -= 1;
        tmp[i] = HEX_DIGITS[n & 0xf];
        n >>= 4;
    }
    dst.extend_from_slice(&tmp[i..]);
}

/// Convenience: appends one whole chunk (header, data, CRLF) to dst; no-op for empty data.
pub fn encode_chunk(data: &[u8], dst: &mut BytesMut) {
    if data.is_empty() {
        return;
    }
    dst.reserve(2 * core::mem::size_of::<usize>() + data.len() + 2 * CRLF.len());
    encode_chunk_header(data.len(), dst);
    dst.extend_from_slice(data);
    dst.extend_from_slice(CRLF);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use proptest::prelude::*;

    /// Everything a decode run produced.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Outcome {
        data: Vec<u8>,
        trailers: Vec<Vec<u8>>,
        done: bool,
        rest: Vec<u8>,
        decoded_len: u64,
    }

    /// Feeds `pieces` one after the other into one buffer, decoding after each until the decoder
    /// needs more input. Checks the per-call invariants on the way.
    fn run_pieces(mut dec: ChunkedDecoder, pieces: &[&[u8]]) -> Result<Outcome, Error> {
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = Vec::new();
        let mut done = false;
        for piece in pieces {
            buf.extend_from_slice(piece);
            while !done {
                match dec.decode(&mut buf)? {
                    None => break,
                    Some(Decoded::Data(b)) => {
                        assert!(!b.is_empty(), "empty Data");
                        assert!(trailers.is_empty(), "Data after Trailers");
                        data.extend_from_slice(&b);
                    }
                    Some(Decoded::Trailers(t)) => {
                        assert!(trailers.is_empty(), "two Trailers");
                        assert!(t.ends_with(b"\r\n\r\n"), "trailers without final CRLF");
                        assert!(dec.is_done());
                        trailers.push(t.to_vec());
                    }
                    Some(Decoded::Done) => {
                        assert!(dec.is_done());
                        done = true;
                        // Done is sticky and consumes nothing.
                        let before = buf.clone();
                        assert_eq!(dec.decode(&mut buf), Ok(Some(Decoded::Done)));
                        assert_eq!(buf, before);
                    }
                }
            }
        }
        assert_eq!(dec.decoded_len(), data.len() as u64);
        Ok(Outcome {
            data,
            trailers,
            done,
            rest: buf.to_vec(),
            decoded_len: dec.decoded_len(),
        })
    }

    fn run(input: &[u8]) -> Result<Outcome, Error> {
        run_pieces(ChunkedDecoder::new(), &[input])
    }

    fn one_byte_pieces(input: &[u8]) -> Vec<&[u8]> {
        input.chunks(1).collect()
    }

    /// Whole, every 2-way split and 1 byte at a time: all must give the same outcome.
    fn assert_split_invariant(dec: &ChunkedDecoder, input: &[u8]) -> Result<Outcome, Error> {
        let whole = run_pieces(dec.clone(), &[input]);
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            assert_eq!(
                run_pieces(dec.clone(), &[a, b]),
                whole,
                "split at {at} of {:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(
            run_pieces(dec.clone(), &one_byte_pieces(input)),
            whole,
            "1 byte at a time: {:?}",
            String::from_utf8_lossy(input)
        );
        whole
    }

    /// (input, body, trailer section or empty)
    const VALID: &[(&[u8], &[u8], &[u8])] = &[
        (b"0\r\n\r\n", b"", b""),
        (b"5\r\nhello\r\n0\r\n\r\n", b"hello", b""),
        (
            b"5\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\n\r\n",
            b"hello world!",
            b"",
        ),
        (
            b"a\r\n0123456789\r\nA\r\nabcdefghij\r\n0\r\n\r\n",
            b"0123456789abcdefghij",
            b"",
        ),
        (
            b"1F\r\n0123456789012345678901234567890\r\n0\r\n\r\n",
            b"0123456789012345678901234567890",
            b"",
        ),
        (
            b"0000000000000003\r\nabc\r\n0000000000000000\r\n\r\n",
            b"abc",
            b"",
        ),
        (b"00000003\r\nabc\r\n000\r\n\r\n", b"abc", b""),
        (b"5;name=value\r\nhello\r\n0\r\n\r\n", b"hello", b""),
        (
            b"5;name=\"quoted \\\" str\"\r\nhello\r\n0\r\n\r\n",
            b"hello",
            b"",
        ),
        (b"5 ; a ; b=c\r\nhello\r\n0\r\n\r\n", b"hello", b""),
        (
            b"5\t;\ta\t=\t\"\"\r\nhello\r\n0;last\r\n\r\n",
            b"hello",
            b"",
        ),
        (b"5;a=\"\t\xff\\\t\"\r\nhello\r\n0\r\n\r\n", b"hello", b""),
        (b"5;a;b;c=d;e=\"f\"\r\nhello\r\n0\r\n\r\n", b"hello", b""),
        (b"3\r\n\r\n\r\r\n0\r\n\r\n", b"\r\n\r", b""),
        (
            b"5\r\nhello\r\n0\r\nExpires: never\r\n\r\n",
            b"hello",
            b"Expires: never\r\n\r\n",
        ),
        (
            b"0\r\nA: b\r\nX-Checksum:abc  def \t\r\nEmpty:\r\nObs: \x80\xff\r\n\r\n",
            b"",
            b"A: b\r\nX-Checksum:abc  def \t\r\nEmpty:\r\nObs: \x80\xff\r\n\r\n",
        ),
    ];

    const PIPELINED: &[u8] = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn valid_bodies_decode() {
        for &(input, body, trailers) in VALID {
            let out = run(input).unwrap_or_else(|e| panic!("{:?}: {e}", input));
            assert!(out.done, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(out.data, body, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(out.decoded_len, body.len() as u64);
            let expected: Vec<Vec<u8>> = if trailers.is_empty() {
                vec![]
            } else {
                vec![trailers.to_vec()]
            };
            assert_eq!(
                out.trailers,
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert!(out.rest.is_empty());
        }
    }

    #[test]
    fn trailers_come_whole_then_done() {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"0\r\nA: 1\r\nB: 2\r\n\r\nnext"[..]);
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Decoded::Trailers(Bytes::from_static(
                b"A: 1\r\nB: 2\r\n\r\n"
            ))))
        );
        assert!(dec.is_done());
        assert_eq!(dec.decode(&mut buf), Ok(Some(Decoded::Done)));
        assert_eq!(&buf[..], b"next");
    }

    #[test]
    fn pipelined_bytes_stay_untouched() {
        for &(input, body, _) in VALID {
            let mut all = input.to_vec();
            all.extend_from_slice(PIPELINED);
            let out = assert_split_invariant(&ChunkedDecoder::new(), &all).unwrap();
            assert!(out.done);
            assert_eq!(out.data, body);
            assert_eq!(out.rest, PIPELINED, "{:?}", String::from_utf8_lossy(input));
        }
        // Also directly: the buffer after Done is exactly the next message, even when the
        // next message starts with bytes a lenient parser might skip.
        for next in [&b"\r\n"[..], b"\n", b"0\r\n\r\n", b"garbage\0"] {
            let mut buf = BytesMut::from(&b"1\r\nx\r\n0\r\n\r\n"[..]);
            buf.extend_from_slice(next);
            let mut dec = ChunkedDecoder::new();
            assert_eq!(
                dec.decode(&mut buf),
                Ok(Some(Decoded::Data(Bytes::from_static(b"x"))))
            );
            assert_eq!(dec.decode(&mut buf), Ok(Some(Decoded::Done)));
            assert_eq!(&buf[..], next);
        }
    }

    #[test]
    fn valid_bodies_are_split_invariant() {
        for &(input, body, _) in VALID {
            let out = assert_split_invariant(&ChunkedDecoder::new(), input).unwrap();
            assert!(out.done);
            assert_eq!(out.data, body);
        }
    }

    /// (input, expected detail). Every input is a complete line or chunk so that it errors
    /// whatever the split.
    const INVALID: &[(&[u8], &str)] = &[
        // chunk-size
        (b"\r\n", "chunk size has no hex digits"),
        (b";a\r\n", "chunk size has no hex digits"),
        (b"g\r\n", "chunk size has no hex digits"),
        (b" 1\r\n", "chunk size has no hex digits"),
        (b"0x1\r\n", "chunk size has a 0x prefix"),
        (b"0X1\r\n", "chunk size has a 0x prefix"),
        (b"-1\r\n", "chunk size has a sign"),
        (b"+1\r\n", "chunk size has a sign"),
        (
            b"00000000000000001\r\n",
            "chunk size has more than 16 hex digits",
        ),
        (
            b"10000000000000000\r\nx",
            "chunk size has more than 16 hex digits",
        ),
        (
            b"00000000000000000\r\n\r\n",
            "chunk size has more than 16 hex digits",
        ),
        (b"1x\r\n", "invalid byte after chunk size"),
        (b"1 x\r\n", "invalid byte after chunk size"),
        (b"1,2\r\n", "invalid byte after chunk size"),
        // whitespace not followed by an extension
        (
            b"1 \r\n",
            "whitespace after chunk size or extension not followed by ';'",
        ),
        (
            b"1\t\r\n",
            "whitespace after chunk size or extension not followed by ';'",
        ),
        (
            b"1;a \r\n",
            "whitespace after chunk size or extension not followed by ';'",
        ),
        (
            b"1;a=b \r\n",
            "whitespace after chunk size or extension not followed by ';'",
        ),
        // extensions
        (b"1;\r\n", "empty or invalid chunk extension name"),
        (b"1; \r\n", "empty or invalid chunk extension name"),
        (b"1;=x\r\n", "empty or invalid chunk extension name"),
        (b"1;;a\r\n", "empty or invalid chunk extension name"),
        (b"1;(a)\r\n", "empty or invalid chunk extension name"),
        (b"1;a;\r\n", "empty or invalid chunk extension name"),
        (b"1;a=\r\n", "missing chunk extension value after '='"),
        (b"1;a= \r\n", "missing chunk extension value after '='"),
        (b"1;a=(\r\n", "invalid byte in chunk extension value"),
        (b"1;a==b\r\n", "invalid byte in chunk extension value"),
        (b"1;a=b c\r\n", "invalid byte after chunk extension"),
        (b"1;a b\r\n", "invalid byte after chunk extension"),
        (b"1;a=\"x\"y\r\n", "invalid byte after chunk extension"),
        (b"1;a(=b\r\n", "invalid byte after chunk extension"),
        (b"1;a=b=c\r\n", "invalid byte after chunk extension"),
        (
            b"1;a=\"x\r\n",
            "unterminated quoted string in chunk extension",
        ),
        (
            b"1;a=\"x\\\"\r\n",
            "unterminated quoted string in chunk extension",
        ),
        (
            b"1;a=\"x\\\r\n",
            "backslash at end of chunk extension quoted string",
        ),
        // control bytes and line ends in the size line
        (b"1\0\r\n", "control byte in chunk size line"),
        (b"\x001\r\n", "control byte in chunk size line"),
        (b"1;a=\"\x01\"\r\n", "control byte in chunk size line"),
        (b"1;a=\"\x7f\"\r\n", "control byte in chunk size line"),
        (b"1;a=b\x0b\r\n", "control byte in chunk size line"),
        (b"1\n", "bare LF in chunk size line"),
        (b"1;a\nx\r\n", "bare LF in chunk size line"),
        (b"\n", "bare LF in chunk size line"),
        (b"1\rx", "CR not followed by LF in chunk size line"),
        (b"1\r\r\n", "CR not followed by LF in chunk size line"),
        (b"1\r\na\r\n\rX", "CR not followed by LF in chunk size line"),
        // after chunk data
        (b"1\r\nab", "chunk data not followed by CRLF"),
        (b"1\r\naX\r\n", "chunk data not followed by CRLF"),
        (b"1\r\na\n0\r\n\r\n", "chunk data not followed by CRLF"),
        (b"1\r\na0\r\n\r\n", "chunk data not followed by CRLF"),
        (b"3\r\nabcd\r\n", "chunk data not followed by CRLF"),
        (
            b"1\r\na\r0\r\n\r\n",
            "CR after chunk data not followed by LF",
        ),
        (b"1\r\na\r\r\n", "CR after chunk data not followed by LF"),
        // trailer section
        (
            b"0\r\nFoo : bar\r\n\r\n",
            "whitespace in trailer field name or before colon",
        ),
        (
            b"0\r\nFoo\t: bar\r\n\r\n",
            "whitespace in trailer field name or before colon",
        ),
        (
            b"0\r\nFoo bar: x\r\n\r\n",
            "whitespace in trailer field name or before colon",
        ),
        (b"0\r\n: bar\r\n\r\n", "empty trailer field name"),
        (b"0\r\nFoo\r\n\r\n", "trailer field line has no colon"),
        (
            b"0\r\nA: b\r\nFoo\r\n\r\n",
            "trailer field line has no colon",
        ),
        (
            b"0\r\nFo(o: x\r\n\r\n",
            "invalid byte in trailer field name",
        ),
        (
            b"0\r\nF\xffo: x\r\n\r\n",
            "invalid byte in trailer field name",
        ),
        (
            b"0\r\n\"A\": x\r\n\r\n",
            "invalid byte in trailer field name",
        ),
        (
            b"0\r\nA: b\r\n c\r\n\r\n",
            "obs-fold (line folding) in trailer section",
        ),
        (
            b"0\r\nA: b\r\n\tc\r\n\r\n",
            "obs-fold (line folding) in trailer section",
        ),
        (
            b"0\r\n A: b\r\n\r\n",
            "obs-fold (line folding) in trailer section",
        ),
        (b"0\r\nA: b\0\r\n\r\n", "control byte in trailer section"),
        (
            b"0\r\nA: b\x1b[0m\r\n\r\n",
            "control byte in trailer section",
        ),
        (b"0\r\nA: \x7f\r\n\r\n", "control byte in trailer section"),
        (b"0\r\n\0\r\n", "control byte in trailer section"),
        (b"0\r\nA: b\n\r\n", "bare LF in trailer section"),
        (b"0\r\nA: b\r\n\n", "bare LF in trailer section"),
        (b"0\r\n\n", "bare LF in trailer section"),
        (
            b"0\r\nA: b\rc\r\n\r\n",
            "CR not followed by LF in trailer section",
        ),
        (b"0\r\n\r\r\n", "CR not followed by LF in trailer section"),
        (b"0\r\n\rX", "CR not followed by LF in trailer section"),
    ];

    #[test]
    fn invalid_inputs_are_rejected() {
        for &(input, detail) in INVALID {
            let err =
                run(input).expect_err(&format!("accepted {:?}", String::from_utf8_lossy(input)));
            assert_eq!(
                err.kind(),
                ErrorKind::BadChunk,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(err.detail(), detail, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn invalid_inputs_are_rejected_whatever_the_split() {
        for &(input, detail) in INVALID {
            let err = assert_split_invariant(&ChunkedDecoder::new(), input)
                .expect_err(&format!("accepted {:?}", String::from_utf8_lossy(input)));
            assert_eq!(err.detail(), detail, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn error_details_differ_per_rule() {
        let mut details: Vec<&str> = INVALID.iter().map(|&(_, d)| d).collect();
        details.extend(LIMITS.iter().map(|&(_, _, _, d)| d));
        details.sort_unstable();
        details.dedup();
        // One distinct detail per rule in the tables above.
        assert_eq!(details.len(), 27, "{details:#?}");
        for d in &details {
            assert!(d.contains("chunk") || d.contains("trailer"), "{d}");
        }
    }

    #[test]
    fn errors_are_sticky() {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"0x1\r\n5\r\nhello\r\n0\r\n\r\n"[..]);
        let err = dec.decode(&mut buf).unwrap_err();
        assert_eq!(dec.decode(&mut buf), Err(err));
        assert!(!dec.is_done());
    }

    /// (max_chunk_line, max_trailer_bytes, input, expected detail)
    const LIMITS: &[(usize, usize, &[u8], &str)] = &[
        (
            8,
            64,
            b"1;aaaaaaa\r\nx\r\n0\r\n\r\n",
            "chunk size line too long",
        ),
        // Incomplete, but already longer than the limit: rejected without waiting for the LF.
        (8, 64, b"1;aaaaaaaaaaaaaaaaaaaa", "chunk size line too long"),
        (8, 64, b"000000001\r\nx\r\n", "chunk size line too long"),
        (
            64,
            12,
            b"0\r\nAaaa: bbbbbbbbb\r\n\r\n",
            "trailer section too large",
        ),
        (
            64,
            12,
            b"0\r\nA: bb\r\nC: d\r\n\r\n",
            "trailer section too large",
        ),
        (
            64,
            12,
            b"0\r\nAaaa: bbbbbbbbbbbbbbb",
            "trailer section too large",
        ),
    ];

    #[test]
    fn limits_are_enforced() {
        for &(line, trailer, input, detail) in LIMITS {
            let dec = ChunkedDecoder::with_limits(line, trailer);
            let err = assert_split_invariant(&dec, input)
                .expect_err(&format!("accepted {:?}", String::from_utf8_lossy(input)));
            assert_eq!(err.kind(), ErrorKind::BadChunk);
            assert_eq!(err.detail(), detail, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn limits_are_inclusive() {
        // Exactly at the limits is fine: an 8-byte size line, 12 bytes of trailer field lines.
        let dec = ChunkedDecoder::with_limits(8, 12);
        let out =
            assert_split_invariant(&dec, b"1;aaaaaa\r\nx\r\n0\r\nA: 1\r\nB: 2\r\n\r\n").unwrap();
        assert_eq!(out.data, b"x");
        assert_eq!(out.trailers, vec![b"A: 1\r\nB: 2\r\n\r\n".to_vec()]);
        // An empty trailer section needs no trailer budget at all.
        let out = run_pieces(ChunkedDecoder::with_limits(8, 0), &[b"0\r\n\r\n"]).unwrap();
        assert!(out.done);
    }

    #[test]
    fn default_limits() {
        let mut ok = b"1;".to_vec();
        ok.resize(4096, b'a');
        ok.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(run(&ok).unwrap().data, b"x");
        let mut long = b"1;".to_vec();
        long.resize(4097, b'a');
        long.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(run(&long).unwrap_err().detail(), "chunk size line too long");

        let field_lines = |n: usize| {
            let mut v = b"0\r\n".to_vec();
            for i in 0..n {
                v.extend_from_slice(format!("F{i}: v\r\n").as_bytes());
            }
            v.extend_from_slice(b"\r\n");
            v
        };
        assert_eq!(run(&field_lines(64)).unwrap().trailers.len(), 1);
        assert_eq!(
            run(&field_lines(65)).unwrap_err().detail(),
            "too many trailer fields"
        );

        let mut big = b"0\r\nBig: ".to_vec();
        big.resize(3 + 16 * 1024 - 2, b'v');
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(run(&big).unwrap().trailers.len(), 1);
        let mut too_big = b"0\r\nBig: ".to_vec();
        too_big.resize(3 + 16 * 1024 - 1, b'v');
        too_big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            run(&too_big).unwrap_err().detail(),
            "trailer section too large"
        );
    }

    #[test]
    fn streams_without_waiting_for_the_whole_chunk() {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"100000\r\n0123456789"[..]);
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Decoded::Data(Bytes::from_static(b"0123456789"))))
        );
        assert!(buf.is_empty());
        assert_eq!(dec.decoded_len(), 10);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"abc");
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Decoded::Data(Bytes::from_static(b"abc"))))
        );
        assert_eq!(dec.decoded_len(), 13);
        assert!(!dec.is_done());
    }

    #[test]
    fn data_never_crosses_a_chunk_boundary() {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"[..]);
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Decoded::Data(Bytes::from_static(b"abc"))))
        );
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Decoded::Data(Bytes::from_static(b"def"))))
        );
        assert_eq!(dec.decode(&mut buf), Ok(Some(Decoded::Done)));
        assert!(buf.is_empty());
    }

    #[test]
    fn large_sizes_parse() {
        for (line, size) in [
            (&b"ffffffffffffffff"[..], u64::MAX),
            (b"FFFFFFFFFFFFFFFF", u64::MAX),
            (b"7fffffffffffffff", i64::MAX as u64),
            (b"0000000000000001", 1),
            (b"aBcD", 0xabcd),
        ] {
            assert_eq!(parse_size_line(line), Ok(size));
        }
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"ffffffffffffffff\r\nab"[..]);
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Decoded::Data(Bytes::from_static(b"ab"))))
        );
        assert_eq!(dec.decode(&mut buf), Ok(None));
    }

    #[test]
    fn encode_chunk_headers() {
        for (len, hex) in [
            (1usize, &b"1\r\n"[..]),
            (9, b"9\r\n"),
            (10, b"a\r\n"),
            (255, b"ff\r\n"),
            (4096, b"1000\r\n"),
            (0xdead_beef, b"deadbeef\r\n"),
        ] {
            let mut dst = BytesMut::from(&b"prefix"[..]);
            encode_chunk_header(len, &mut dst);
            assert_eq!(&dst[6..], hex);
            assert_eq!(&dst[..6], b"prefix");
        }
        let mut dst = BytesMut::new();
        encode_chunk_header(usize::MAX, &mut dst);
        let digits = 2 * core::mem::size_of::<usize>();
        assert_eq!(dst.len(), digits + 2);
        assert!(dst[..digits].iter().all(|&b| b == b'f'));
    }

    #[test]
    fn encode_whole_chunks() {
        let mut dst = BytesMut::new();
        encode_chunk(b"", &mut dst);
        assert!(dst.is_empty());
        encode_chunk(b"hello world!", &mut dst);
        encode_chunk(b"", &mut dst);
        encode_chunk(&[b'x'; 16], &mut dst);
        dst.extend_from_slice(LAST_CHUNK);
        assert_eq!(
            &dst[..],
            b"c\r\nhello world!\r\n10\r\nxxxxxxxxxxxxxxxx\r\n0\r\n\r\n"
        );
        assert_eq!(run(&dst).unwrap().data, b"hello world!xxxxxxxxxxxxxxxx");
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "at least one byte")]
    fn zero_length_chunk_header_is_a_bug() {
        encode_chunk_header(0, &mut BytesMut::new());
    }

    /// Cuts `input` into pieces of the given sizes (cycled), the last piece taking what is left.
    fn cut<'a>(input: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
        let mut pieces = Vec::new();
        let mut rest = input;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len());
            let (a, b) = rest.split_at(n);
            pieces.push(a);
            rest = b;
            i += 1;
        }
        pieces
    }

    proptest! {
        #[test]
        fn encode_then_decode_roundtrips(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
            sizes in prop::collection::vec(1usize..80, 1..16),
            tail in prop::collection::vec(any::<u8>(), 0..20),
        ) {
            let mut wire = BytesMut::new();
            for c in &chunks {
                encode_chunk(c, &mut wire);
            }
            wire.extend_from_slice(LAST_CHUNK);
            wire.extend_from_slice(&tail);
            let out = run_pieces(ChunkedDecoder::new(), &cut(&wire, &sizes)).unwrap();
            prop_assert!(out.done);
            prop_assert_eq!(out.data, chunks.concat());
            prop_assert!(out.trailers.is_empty());
            prop_assert_eq!(out.rest, tail);
        }

        /// Arbitrary corruption of a valid body never panics, and whether and what it decodes
        /// to does not depend on how the input is split.
        #[test]
        fn corrupted_input_is_split_invariant(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..20), 0..5),
            trailer in prop::option::of("[A-Za-z-]{1,8}: [ -~]{0,8}"),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<bool>()), 0..3),
            sizes in prop::collection::vec(1usize..8, 1..8),
        ) {
            let mut wire = BytesMut::new();
            for c in &chunks {
                encode_chunk(c, &mut wire);
            }
            wire.extend_from_slice(b"0\r\n");
            if let Some(t) = &trailer {
                wire.extend_from_slice(t.as_bytes());
                wire.extend_from_slice(CRLF);
            }
            wire.extend_from_slice(CRLF);
            let mut wire = wire.to_vec();
            for (at, byte, insert) in edits {
                let at = at.index(wire.len());
                if insert { wire.insert(at, byte) } else { wire[at] = byte }
            }
            let dec = ChunkedDecoder::with_limits(16, 32);
            let whole = run_pieces(dec.clone(), &[&wire]);
            let split = run_pieces(dec.clone(), &cut(&wire, &sizes));
            match (&whole, &split) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(a), Err(b)) => prop_assert_eq!(a.kind(), b.kind()),
                _ => prop_assert!(false, "whole {:?} vs split {:?}", whole, split),
            }
        }
    }
}
