//! Criterion benches of the HTTP/1.1 codec's hot paths, next to httparse alone.
//!
//! What one iteration measures:
//!
//! - `head/<input>/httparse`: `httparse::Request::parse_with_uninit_headers` over the head
//!   bytes with 128 uninitialised header slots: the configuration our parser uses, so the
//!   difference to the next two lines is exactly the cost of our layer.
//! - `head/<input>/parse`: `RequestParser::new(..).parse(&mut buf)` as the engine calls it: scan
//!   for the end of the head (rejecting bare CR/LF), httparse, the framing / connection / Host
//!   interpretation, the field-index `Vec` (allocated per call) and the zero-copy split of the
//!   head off the buffer.
//! - `head/<input>/parse_into`: the same into a reused `RequestHead`, which keeps its
//!   field-index storage (no allocation; the head's previous buffer is released with a
//!   reference-count decrement, its storage being freed outside the timed section).
//!
//! The input buffer of our parser is consumed (the head is split off it), so every iteration
//! needs a fresh one. They are made by `iter_batched` *outside* the timed section, in batches of
//! 32 so that they are still in cache, and prepared as a connection's buffer is after its first
//! request (already in the shared representation, see `headwater_bench::read_buffer`). The
//! parsed heads are dropped outside the timed section too. httparse only reads, so it parses
//! the same bytes in place every iteration.
//!
//! Throughput is in bytes of head (criterion's `thrpt`); heads per second is 1 / time per
//! iteration, which `perf/codec_table.py` prints next to it from criterion's estimates.
//!
//! Also: chunked decoding of a 64 KiB body in 4 KiB and in 64 B chunks (payload bytes/s),
//! `encode_proxy_request` of the browser head, and a response head (ours and httparse).

use std::hint::black_box;
use std::mem::MaybeUninit;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use headwater_bench::{
    chunked_body, cookie_heavy_get, read_buffer, read_buffer_pinned, BROWSER_GET,
    CHUNKED_BODY_BYTES, RESPONSE_200, SHORT_GET,
};
use headwater_http1::{
    encode_proxy_request, request_framing, ChunkedDecoder, Decoded, Limits, RequestEdits,
    RequestParser, ResponseParser,
};

/// Inputs per batch of `iter_batched`: small enough that the prepared buffers stay in cache.
const BATCH: BatchSize = BatchSize::NumIterations(32);
/// Header slots given to httparse, as our parser does with the default limits.
const SLOTS: usize = 128;

fn httparse_request(raw: &[u8]) -> usize {
    let mut slots: [MaybeUninit<httparse::Header<'_>>; SLOTS] =
        [const { MaybeUninit::uninit() }; SLOTS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(raw, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n + req.headers.len(),
        other => panic!("httparse: {other:?}"),
    }
}

fn httparse_response(raw: &[u8]) -> usize {
    let mut slots: [MaybeUninit<httparse::Header<'_>>; SLOTS] =
        [const { MaybeUninit::uninit() }; SLOTS];
    let mut res = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, raw, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n + res.headers.len(),
        other => panic!("httparse: {other:?}"),
    }
}

fn heads(c: &mut Criterion) {
    let cookies = cookie_heavy_get();
    let inputs: [(&str, &[u8]); 3] = [
        ("short", SHORT_GET),
        ("browser", BROWSER_GET),
        ("cookies_4k", &cookies),
    ];
    for (name, raw) in inputs {
        let mut g = c.benchmark_group(format!("head/{name}"));
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function("httparse", |b| b.iter(|| httparse_request(black_box(raw))));
        g.bench_function("parse", |b| {
            b.iter_batched(
                || read_buffer(raw),
                |mut buf| {
                    let head = RequestParser::new(Limits::default()).parse(&mut buf);
                    (head, buf)
                },
                BATCH,
            )
        });
        g.bench_function("parse_into", |b| {
            let mut head = RequestParser::new(Limits::default())
                .parse(&mut read_buffer(raw))
                .unwrap()
                .unwrap();
            // The head releases its previous buffer when it takes the new one; the pin keeps
            // that storage alive until the batch's outputs are dropped (outside the timing),
            // so the release is a reference-count decrement, not a free.
            b.iter_batched(
                || read_buffer_pinned(raw),
                |(mut buf, pin)| {
                    let ok = RequestParser::new(Limits::default()).parse_into(&mut buf, &mut head);
                    (ok, buf, pin)
                },
                BATCH,
            )
        });
        g.finish();
    }

    let mut g = c.benchmark_group("head/response");
    g.throughput(Throughput::Bytes(RESPONSE_200.len() as u64));
    g.bench_function("httparse", |b| {
        b.iter(|| httparse_response(black_box(RESPONSE_200)))
    });
    g.bench_function("parse", |b| {
        b.iter_batched(
            || read_buffer(RESPONSE_200),
            |mut buf| {
                let head = ResponseParser::new(Limits::default()).parse(&mut buf);
                (head, buf)
            },
            BATCH,
        )
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let head = RequestParser::new(Limits::default())
        .parse(&mut read_buffer(BROWSER_GET))
        .unwrap()
        .unwrap();
    let framing = request_framing(head.body_kind());
    let edits = RequestEdits::default();
    let fwd = headwater_bench::forwarding();
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Bytes(BROWSER_GET.len() as u64));
    // One write buffer reused (cleared) per iteration, as a connection does.
    let mut dst = BytesMut::with_capacity(4096);
    g.bench_function("proxy_request/browser", |b| {
        b.iter(|| {
            dst.clear();
            encode_proxy_request(black_box(&head), framing, &edits, &fwd, &mut dst);
            black_box(dst.len())
        })
    });
    g.finish();
}

fn chunked(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunked");
    g.throughput(Throughput::Bytes(CHUNKED_BODY_BYTES as u64));
    for (name, chunk) in [("64k_in_4k_chunks", 4096), ("64k_in_64b_chunks", 64)] {
        let wire = chunked_body(chunk);
        g.bench_function(name, |b| {
            b.iter_batched(
                || read_buffer(&wire),
                |mut buf| {
                    let mut dec = ChunkedDecoder::new();
                    let mut n = 0;
                    loop {
                        match dec.decode(&mut buf) {
                            Ok(Some(Decoded::Data(d))) => n += d.len(),
                            Ok(Some(Decoded::Done)) => break,
                            other => panic!("{other:?}"),
                        }
                    }
                    assert_eq!(n, CHUNKED_BODY_BYTES);
                    buf
                },
                BatchSize::NumIterations(4),
            )
        });
    }
    g.finish();
}

criterion_group!(benches, heads, encode, chunked);
criterion_main!(benches);
