//! Shared helpers of the fuzz targets: how a fuzz input is split into control bytes and the
//! message, and how the message is cut into pieces.
//!
//! Input layout (every target): the first [`CTL`] bytes steer the run, the rest is the message.
//!
//! | byte | use |
//! |------|-----|
//! | 0, 1 | split point of the two-piece run (little-endian u16, modulo `len + 1`) |
//! | 2    | flags: bits 0-1 limits mode (0-1 default, 2 small, 3 tiny), bits 2-7 per target |
//! | 3    | small limit A (target bytes / chunk-line bytes) |
//! | 4    | small limit B (head bytes / header count / trailer bytes) |
//! | 5    | seed of the piece sizes of the many-piece run |
//!
//! Inputs shorter than `CTL` bytes are the message alone, with all control bytes zero.

use bytes::BytesMut;
use headwater_http1::{
    Error, ErrorKind, Limits, RequestHead, RequestParser, ResponseHead, ResponseParser,
};

/// Number of control bytes in front of the message.
pub const CTL: usize = 6;

/// A fuzz input taken apart.
pub struct Input<'a> {
    /// Control bytes (zero when the input was too short).
    pub ctl: [u8; CTL],
    /// The message bytes.
    pub msg: &'a [u8],
}

impl<'a> Input<'a> {
    /// Splits `data` into control bytes and message.
    pub fn new(data: &'a [u8]) -> Self {
        if data.len() < CTL {
            return Input {
                ctl: [0; CTL],
                msg: data,
            };
        }
        let mut ctl = [0; CTL];
        ctl.copy_from_slice(&data[..CTL]);
        Input {
            ctl,
            msg: &data[CTL..],
        }
    }

    /// The split point of the two-piece run, in `0..=msg.len()`.
    pub fn split(&self) -> usize {
        usize::from(u16::from_le_bytes([self.ctl[0], self.ctl[1]])) % (self.msg.len() + 1)
    }

    /// The per-target flag bits (bits 2-7 of byte 2, shifted down).
    pub fn flags(&self) -> u8 {
        self.ctl[2] >> 2
    }

    /// Head limits: the defaults, or small ones so that limit checks are reached by short
    /// inputs (the default limits need 8 KiB targets and 64 KiB heads).
    pub fn head_limits(&self) -> Limits {
        match self.ctl[2] & 3 {
            2 => Limits {
                max_uri_bytes: 1 + usize::from(self.ctl[3]),
                max_head_bytes: 16 + 4 * usize::from(self.ctl[4]),
                max_headers: 1 + usize::from(self.ctl[4] % 32),
            },
            3 => Limits {
                max_uri_bytes: 1 + usize::from(self.ctl[3] % 16),
                max_head_bytes: 1 + usize::from(self.ctl[4]),
                max_headers: usize::from(self.ctl[4] % 4),
            },
            _ => Limits::default(),
        }
    }

    /// Chunked decoder limits: `None` for the defaults, or (max chunk line, max trailer bytes).
    pub fn chunk_limits(&self) -> Option<(usize, usize)> {
        match self.ctl[2] & 3 {
            2 | 3 => Some((usize::from(self.ctl[3]), 2 * usize::from(self.ctl[4]))),
            _ => None,
        }
    }

    /// The message cut in two at [`split`](Self::split).
    pub fn two_pieces(&self) -> [&'a [u8]; 2] {
        let (a, b) = self.msg.split_at(self.split());
        [a, b]
    }

    /// The message cut in many pieces of data-derived sizes (1 to 32 bytes, some empty).
    pub fn many_pieces(&self) -> Vec<&'a [u8]> {
        cut(self.msg, self.ctl[5])
    }
}

/// Cuts `msg` into pieces whose sizes come from a small xorshift generator seeded by `seed`:
/// mostly 1 to 32 bytes, now and then an empty piece (a read that brought nothing new).
pub fn cut(msg: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut state = u32::from(seed)
        .wrapping_mul(0x9E37_79B9)
        .wrapping_add(0x7F4A_7C15);
    let mut pieces = Vec::new();
    let mut rest = msg;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = if state % 11 == 0 {
            0
        } else {
            1 + (state >> 8) as usize % 32
        };
        let (a, b) = rest.split_at(n.min(rest.len()));
        pieces.push(a);
        rest = b;
    }
    pieces
}

/// Whether `kind` is a size limit that a streaming parser has to enforce on a *prefix* of the
/// message (before it has seen the rest): such an error may legitimately replace a syntax error
/// that lies further on, so whole and split runs can differ in which of two errors they report.
pub fn is_limit(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::HeadTooLarge | ErrorKind::UriTooLong | ErrorKind::TooManyHeaders
    )
}

/// Lower-cased copy.
pub fn lower(s: &[u8]) -> Vec<u8> {
    s.to_ascii_lowercase()
}

/// The comma-separated elements of a list header, trimmed of SP/HTAB, empty ones skipped,
/// lower-cased. Written independently of the codec's own helper.
pub fn list_lower(v: &[u8]) -> Vec<Vec<u8>> {
    v.split(|&b| b == b',')
        .map(|e| {
            let start = e.iter().position(|&b| b != b' ' && b != b'\t');
            let end = e.iter().rposition(|&b| b != b' ' && b != b'\t');
            match (start, end) {
                (Some(s), Some(t)) => lower(&e[s..=t]),
                _ => Vec::new(),
            }
        })
        .filter(|e| !e.is_empty())
        .collect()
}

/// The header fields a proxy must forward, computed from the received fields by RFC 9110
/// §7.6.1 (independently of the encoder): drop the hop-by-hop fields, every field named by a
/// Connection option, and the fields in `also_drop` (lower-case) that the encoder rewrites;
/// but keep the fields in `keep` (lower-case) whatever the Connection options say (`upgrade`
/// when an upgrade is being forwarded: the option names exactly the field that must go along).
///
/// A field literally named `close` is kept even when `Connection: close` is present: the codec
/// treats close / keep-alive / upgrade as connection options, not field names, which is harmless
/// (no server gives a `close` field meaning).
pub fn forwarded_fields<'h>(
    headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
    also_drop: &[&[u8]],
    keep: &[&[u8]],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    const HOP: &[&[u8]] = &[
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
    ];
    let headers: Vec<(&[u8], &[u8])> = headers.collect();
    let options: Vec<Vec<u8>> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| list_lower(v))
        .filter(|o| o != b"close")
        .collect();
    headers
        .into_iter()
        .filter(|(n, _)| {
            let n = lower(n);
            keep.contains(&&n[..])
                || (!HOP.contains(&&n[..]) && !also_drop.contains(&&n[..]) && !options.contains(&n))
        })
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect()
}

/// Drops the fields named in `names` (lower-case) from a list of owned fields.
pub fn without(fields: Vec<(Vec<u8>, Vec<u8>)>, names: &[&[u8]]) -> Vec<(Vec<u8>, Vec<u8>)> {
    fields
        .into_iter()
        .filter(|(n, _)| !names.contains(&&lower(n)[..]))
        .collect()
}

/// Owned copy of a head's fields.
pub fn owned<'h>(headers: impl Iterator<Item = (&'h [u8], &'h [u8])>) -> Vec<(Vec<u8>, Vec<u8>)> {
    headers.map(|(n, v)| (n.to_vec(), v.to_vec())).collect()
}

/// Printable form of bytes for assertion messages.
pub fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// How one run of a head parser over a message ended.
#[derive(Debug, PartialEq)]
pub enum Outcome<S> {
    /// `Ok(None)` after all input: what is left in the buffer.
    Incomplete(Vec<u8>),
    /// The error's kind and detail.
    Failed(ErrorKind, &'static str),
    /// A snapshot of the head and the bytes left in the buffer after it.
    Parsed(Box<S>, Vec<u8>),
}

/// The request and response parsers, seen alike by [`run`].
pub trait HeadParser {
    /// The head it produces.
    type Head: Clone + std::fmt::Debug;
    /// `parse`.
    fn parse_new(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Head>, Error>;
    /// `parse_into`.
    fn parse_reuse(&mut self, buf: &mut BytesMut, head: &mut Self::Head) -> Result<bool, Error>;
}

impl HeadParser for RequestParser {
    type Head = RequestHead;
    fn parse_new(&mut self, buf: &mut BytesMut) -> Result<Option<RequestHead>, Error> {
        self.parse(buf)
    }
    fn parse_reuse(&mut self, buf: &mut BytesMut, head: &mut RequestHead) -> Result<bool, Error> {
        self.parse_into(buf, head)
    }
}

impl HeadParser for ResponseParser {
    type Head = ResponseHead;
    fn parse_new(&mut self, buf: &mut BytesMut) -> Result<Option<ResponseHead>, Error> {
        self.parse(buf)
    }
    fn parse_reuse(&mut self, buf: &mut BytesMut, head: &mut ResponseHead) -> Result<bool, Error> {
        self.parse_into(buf, head)
    }
}

/// Feeds `pieces` one after the other into one buffer, calling the parser after each (into
/// `reuse` when given), and snapshots the head with `snap`.
pub fn run<P: HeadParser, S>(
    mut parser: P,
    pieces: &[&[u8]],
    mut reuse: Option<&mut P::Head>,
    snap: impl FnOnce(&P::Head) -> S,
) -> Outcome<S> {
    let mut buf = BytesMut::new();
    for (i, piece) in pieces.iter().enumerate() {
        buf.extend_from_slice(piece);
        let result = match reuse.as_deref_mut() {
            Some(head) => parser
                .parse_reuse(&mut buf, head)
                .map(|done| done.then(|| head.clone())),
            None => parser.parse_new(&mut buf),
        };
        match result {
            Ok(None) => {}
            Ok(Some(head)) => {
                for rest in &pieces[i + 1..] {
                    buf.extend_from_slice(rest);
                }
                return Outcome::Parsed(Box::new(snap(&head)), buf.to_vec());
            }
            Err(e) => return Outcome::Failed(e.kind(), e.detail()),
        }
    }
    Outcome::Incomplete(buf.to_vec())
}

/// Asserts that a split or reused run agrees with the whole run. Two failures may name
/// different errors when one is a size limit (a streaming parser enforces limits on a prefix
/// before it can see a syntax error further on).
pub fn agree<S: std::fmt::Debug + PartialEq>(
    what: &str,
    whole: &Outcome<S>,
    other: &Outcome<S>,
    msg: &[u8],
) {
    match (whole, other) {
        (Outcome::Failed(a, _), Outcome::Failed(b, _)) if a == b => {}
        (Outcome::Failed(a, _), Outcome::Failed(b, _)) if is_limit(*a) || is_limit(*b) => {}
        _ => assert_eq!(
            whole,
            other,
            "{what} differs from whole for {:?}",
            show(msg)
        ),
    }
}

/// Runs a head parser (made by `new_parser` with the input's limits) over the message of
/// `input` whole, in two pieces, in many pieces, and into a reused head that already holds the
/// fields of `previous` (parsed with the default limits): every run must agree with the whole
/// run (see [`agree`]). Returns the head of the whole run, if it parsed.
pub fn check_runs<P: HeadParser, S: std::fmt::Debug + PartialEq>(
    new_parser: impl Fn(Limits) -> P,
    input: &Input<'_>,
    previous: &[u8],
    snap: impl Fn(&P::Head) -> S,
) -> Option<P::Head> {
    let limits = input.head_limits();
    let msg = input.msg;
    let mut head = None;
    let whole = run(new_parser(limits), &[msg], None, |h| {
        head = Some(h.clone());
        snap(h)
    });
    let pieces = run(new_parser(limits), &input.two_pieces(), None, &snap);
    agree("two pieces", &whole, &pieces, msg);
    let pieces = run(new_parser(limits), &input.many_pieces(), None, &snap);
    agree("many pieces", &whole, &pieces, msg);
    let mut reused = new_parser(Limits::default())
        .parse_new(&mut BytesMut::from(previous))
        .unwrap()
        .unwrap();
    let reused = run(new_parser(limits), &[msg], Some(&mut reused), &snap);
    agree("reused head", &whole, &reused, msg);
    head
}

/// Limits for parsing a re-encoded head: the upstream (or client) enforces its own, and ours
/// may be smaller than what forwarding adds (a Host field for an HTTP/1.0 request, forwarding
/// fields).
pub const ROOMY: Limits = Limits {
    max_head_bytes: 1 << 20,
    max_headers: 1024,
    max_uri_bytes: 1 << 20,
};

/// Parses a head a proxy encoder wrote: it must be exactly one complete head. `ctx` describes
/// the run for the failure messages.
pub fn reparse<P: HeadParser>(mut parser: P, encoded: &[u8], ctx: impl Fn() -> String) -> P::Head {
    let mut buf = BytesMut::from(encoded);
    let head = match parser.parse_new(&mut buf) {
        Ok(Some(head)) => head,
        other => panic!("re-encoded head does not parse: {other:?}{}", ctx()),
    };
    assert!(
        buf.is_empty(),
        "bytes left after re-encoded head: {}",
        ctx()
    );
    head
}
