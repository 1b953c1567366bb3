//! Benchmark support crate; the benches live in `benches/`.
//!
//! This module holds the inputs the codec benches share (so `benches/codec.rs`, the criterion
//! suite, and `benches/codec_ops.rs`, the allocation counter and instruction-count driver,
//! measure exactly the same bytes), and the helpers that prepare read buffers the way a
//! connection holds them.

use bytes::BytesMut;
use headwater_http1::chunked::{encode_chunk, LAST_CHUNK};

/// The smallest realistic request: request line and Host.
pub const SHORT_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";

/// A top-level navigation as Chrome 124 on Linux sends it: 16 header fields, 871 bytes.
pub const BROWSER_GET: &[u8] = b"GET /search?q=headwater+gateway&sourceid=chrome&ie=UTF-8 HTTP/1.1\r\n\
Host: www.example.com\r\n\
Connection: keep-alive\r\n\
sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n\
sec-ch-ua-mobile: ?0\r\n\
sec-ch-ua-platform: \"Linux\"\r\n\
Upgrade-Insecure-Requests: 1\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-User: ?1\r\n\
Sec-Fetch-Dest: document\r\n\
Referer: https://www.example.com/\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n\
Cookie: _ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700000000; session=6f1c2a9e4b7d4e0f8a3b5c6d7e8f9012\r\n\
\r\n";

/// Size of [`cookie_heavy_get`]'s head.
pub const COOKIE_HEAD_BYTES: usize = 4096;

/// A request whose head is exactly 4 KiB, most of it cookies (an analytics- and A/B-test-laden
/// site): the browser request's fields, with the Cookie field grown by `name=value` pairs.
pub fn cookie_heavy_get() -> Vec<u8> {
    let base = BROWSER_GET;
    let end = base.len() - 2; // before the final CRLF of the head
    let cookie_line_end = end - 2; // before the CRLF ending the Cookie line
    let mut out = base[..cookie_line_end].to_vec();
    let mut i = 0;
    while out.len() + 2 + 2 < COOKIE_HEAD_BYTES {
        let pair = format!(
            "; exp_{i:03}=v{:016x}",
            0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i + 1)
        );
        let room = COOKIE_HEAD_BYTES - 4 - out.len();
        out.extend_from_slice(&pair.as_bytes()[..pair.len().min(room)]);
        i += 1;
    }
    out.extend_from_slice(b"\r\n\r\n");
    assert_eq!(out.len(), COOKIE_HEAD_BYTES);
    out
}

/// A typical response head from an nginx origin: 11 header fields.
pub const RESPONSE_200: &[u8] = b"HTTP/1.1 200 OK\r\n\
Server: nginx/1.25.3\r\n\
Date: Tue, 14 May 2024 09:21:07 GMT\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Content-Length: 48213\r\n\
Connection: keep-alive\r\n\
Last-Modified: Mon, 13 May 2024 17:02:44 GMT\r\n\
ETag: \"6642477c-bc55\"\r\n\
Cache-Control: public, max-age=300\r\n\
Vary: Accept-Encoding\r\n\
Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n\
X-Content-Type-Options: nosniff\r\n\
\r\n";

/// Payload size of the chunked benches.
pub const CHUNKED_BODY_BYTES: usize = 64 * 1024;

/// A 64 KiB body chunk-encoded in chunks of `chunk` bytes, then the last chunk.
pub fn chunked_body(chunk: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..CHUNKED_BODY_BYTES).map(|i| (i % 251) as u8).collect();
    let mut out = BytesMut::new();
    for piece in payload.chunks(chunk) {
        encode_chunk(piece, &mut out);
    }
    out.extend_from_slice(LAST_CHUNK);
    out.to_vec()
}

/// A read buffer holding `bytes`, prepared the way a connection's buffer is after its first
/// message: its storage is already shared (`bytes`' "arc" representation), so the parser's
/// `split_to(..).freeze()` only bumps a reference count instead of allocating the shared
/// header that a fresh `Vec`-backed `BytesMut` needs on its first split.
pub fn read_buffer(bytes: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(bytes.len() + 64);
    buf.extend_from_slice(bytes);
    // Splitting promotes the storage to the shared form; dropping the tail leaves `buf` the
    // only owner.
    drop(buf.split_off(bytes.len()));
    buf
}

/// As [`read_buffer`], plus a second handle on the same storage (an empty `BytesMut` split off
/// its end). Keeping the handle alive keeps the storage alive after everything parsed out of
/// the buffer is dropped, so that a bench can choose where that release happens: in
/// `parse_into`, replacing the head's previous buffer would otherwise free it inside the timed
/// section.
pub fn read_buffer_pinned(bytes: &[u8]) -> (BytesMut, BytesMut) {
    let mut buf = BytesMut::with_capacity(bytes.len() + 64);
    buf.extend_from_slice(bytes);
    let pin = buf.split_off(bytes.len());
    (buf, pin)
}

/// The forwarding settings both encode benchmarks use: `X-Forwarded-For` appended for a
/// documentation address, `X-Forwarded-Proto: https`.
pub fn forwarding() -> headwater_http1::Forwarding<'static> {
    headwater_http1::Forwarding {
        via: None,
        xff: headwater_http1::XffMode::Append,
        client_ip: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
            203, 0, 113, 7,
        ))),
        proto: Some(b"https"),
        forwarded_host: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use headwater_http1::{ChunkedDecoder, Decoded, Limits, RequestParser, ResponseParser};

    #[test]
    fn inputs_parse() {
        let cookies = cookie_heavy_get();
        for (raw, fields) in [(SHORT_GET, 1), (BROWSER_GET, 16), (&cookies[..], 16)] {
            let mut buf = read_buffer(raw);
            let head = RequestParser::new(Limits::default())
                .parse(&mut buf)
                .unwrap()
                .unwrap();
            assert_eq!(head.header_count(), fields);
            assert!(buf.is_empty());
        }
        let head = ResponseParser::new(Limits::default())
            .parse(&mut read_buffer(RESPONSE_200))
            .unwrap()
            .unwrap();
        assert_eq!(head.header_count(), 11);
        for chunk in [4096, 64] {
            let mut buf = read_buffer(&chunked_body(chunk));
            let mut dec = ChunkedDecoder::new();
            let mut n = 0;
            loop {
                match dec.decode(&mut buf).unwrap().unwrap() {
                    Decoded::Data(d) => n += d.len(),
                    Decoded::Trailers(_) => unreachable!(),
                    Decoded::Done => break,
                }
            }
            assert_eq!(n, CHUNKED_BODY_BYTES);
        }
    }
}
