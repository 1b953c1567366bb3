//! Property tests: encoding then parsing any valid head gives it back, and no split of the input
//! across reads changes what the parser returns.

use bytes::BytesMut;
use headwater_http1::{
    encode_request_head, encode_response_head, BodyKind, ClientConnection, Limits, RequestParser,
    ResponseParser,
};
use http::{Method, StatusCode, Version};
use proptest::prelude::*;

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::HEAD),
        Just(Method::OPTIONS),
        Just(Method::PATCH),
        "[A-Z]{3,10}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    (
        "(/[a-zA-Z0-9._~!$&'()*+,;=:@-]{0,12}){1,5}",
        proptest::option::of("[a-zA-Z0-9=&%/?]{0,20}"),
    )
        .prop_map(|(p, q)| match q {
            Some(q) => format!("{p}?{}", q.replace('%', "%25")),
            None => p,
        })
}

/// Header names that do not affect framing or need special rules.
fn header() -> impl Strategy<Value = (String, String)> {
    (
        "x-[a-z0-9!#$&'*+.^_`|~-]{1,20}",
        "[!-~]([ \t!-~]{0,40}[!-~])?",
    )
}

#[derive(Debug, Clone)]
struct Req {
    method: Method,
    path: String,
    host: String,
    headers: Vec<(String, String)>,
    framing: BodyKind,
}

fn request() -> impl Strategy<Value = Req> {
    (
        method(),
        path(),
        "[a-z0-9.-]{1,30}(:[0-9]{1,5})?",
        proptest::collection::vec(header(), 0..20),
        prop_oneof![
            Just(BodyKind::None),
            (0u64..u64::MAX / 2).prop_map(BodyKind::Length),
            Just(BodyKind::Chunked)
        ],
    )
        .prop_map(|(method, path, host, headers, framing)| Req {
            method,
            path,
            host,
            headers,
            framing,
        })
}

fn encode(r: &Req) -> BytesMut {
    let headers: Vec<(&str, &[u8])> = r
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    let mut out = BytesMut::new();
    encode_request_head(
        &r.method,
        r.path.as_bytes(),
        r.host.as_bytes(),
        &headers,
        r.framing,
        &mut out,
    );
    out
}

/// `raw` cut at the positions `cuts` (taken modulo `raw.len() + 1`, in ascending order).
fn cut_at<'a>(raw: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (raw.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(raw.len());
    let mut start = 0;
    cuts.into_iter()
        .map(|cut| {
            let piece = &raw[start..cut];
            start = cut;
            piece
        })
        .collect()
}

/// Parses `raw` fed in pieces cut at `cuts` (positions), returning the head and the leftover.
fn parse_split(
    raw: &[u8],
    cuts: &[usize],
) -> (Result<Option<String>, headwater_http1::ErrorKind>, Vec<u8>) {
    let mut parser = RequestParser::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut fed = 0;
    for piece in cut_at(raw, cuts) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        match parser.parse(&mut buf) {
            Ok(Some(h)) => {
                buf.extend_from_slice(&raw[fed..]);
                return (Ok(Some(summary(&h))), buf.to_vec());
            }
            Ok(None) => {}
            Err(e) => return (Err(e.kind()), Vec::new()),
        }
    }
    (Ok(None), buf.to_vec())
}

fn summary(h: &headwater_http1::RequestHead) -> String {
    let mut s = format!(
        "{} {:?} {:?} {:?}",
        h.method(),
        h.target(),
        h.version(),
        h.body_kind()
    );
    for (n, v) in h.headers() {
        s.push_str(&format!("|{:?}={:?}", n, v));
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn request_round_trip(r in request()) {
        let raw = encode(&r);
        let head = RequestParser::new(Limits::default()).parse(&mut raw.clone()).unwrap().unwrap();
        prop_assert_eq!(head.method(), &r.method);
        prop_assert_eq!(head.target(), r.path.as_bytes());
        prop_assert_eq!(head.version(), Version::HTTP_11);
        prop_assert_eq!(head.authority(), Some(r.host.as_bytes()));
        prop_assert_eq!(head.body_kind(), r.framing);
        let got: Vec<(Vec<u8>, Vec<u8>)> = head.headers().skip(1)
            .take(r.headers.len())
            .map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> = r.headers.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect();
        prop_assert_eq!(got, want);
        // The http crate views agree with the byte views.
        for i in 0..head.header_count() {
            let (n, v) = head.headers().nth(i).unwrap();
            let name = head.header_name(i);
            let value = head.header_value(i);
            prop_assert_eq!(name.as_str().as_bytes(), n.to_ascii_lowercase());
            prop_assert_eq!(value.as_bytes(), v);
        }
    }

    #[test]
    fn splits_do_not_change_the_result(r in request(), cuts in proptest::collection::vec(any::<usize>(), 0..6), tail in "[ -~]{0,20}") {
        let mut raw = encode(&r).to_vec();
        raw.extend_from_slice(tail.as_bytes());
        let whole = parse_split(&raw, &[]);
        let split = parse_split(&raw, &cuts);
        prop_assert_eq!(&whole, &split);
        prop_assert_eq!(whole.1, tail.as_bytes().to_vec());
    }

    #[test]
    fn arbitrary_bytes_split_anywhere_give_the_same_answer(raw in proptest::collection::vec(any::<u8>(), 0..300), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        prop_assert_eq!(parse_split(&raw, &[]), parse_split(&raw, &cuts));
    }

    #[test]
    fn mutated_requests_split_anywhere_give_the_same_answer(r in request(), pos in any::<usize>(), byte in any::<u8>(), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let mut raw = encode(&r).to_vec();
        let p = pos % raw.len();
        raw[p] = byte;
        prop_assert_eq!(parse_split(&raw, &[]), parse_split(&raw, &cuts));
    }

    #[test]
    fn response_round_trip(code in 200u16..600, headers in proptest::collection::vec(header(), 0..20), len in 0u64..1_000_000, cuts in proptest::collection::vec(any::<usize>(), 0..4)) {
        let status = StatusCode::from_u16(code).unwrap();
        let hs: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
        let mut raw = BytesMut::new();
        encode_response_head(status, &hs, BodyKind::Length(len), Version::HTTP_11, ClientConnection::KeepAlive, &mut raw);
        let mut parser = ResponseParser::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut got = None;
        for piece in cut_at(&raw, &cuts) {
            buf.extend_from_slice(piece);
            if let Some(h) = parser.parse(&mut buf).unwrap() {
                got = Some(h);
                break;
            }
        }
        let h = got.unwrap();
        prop_assert_eq!(h.status(), status);
        let expect = if code == 204 || code == 304 { BodyKind::None } else { BodyKind::Length(len) };
        prop_assert_eq!(h.body_kind(&Method::GET), expect);
        prop_assert_eq!(h.header_count(), headers.len() + 1);
        prop_assert!(buf.is_empty());
    }
}
