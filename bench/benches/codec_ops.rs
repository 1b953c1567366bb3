//! Not a criterion bench: a driver for the same codec operations as `codec.rs`, for
//! allocation counts and instruction counts (callgrind, `perf stat`).
//!
//! ```text
//! codec_ops                      print heap allocations per operation (also what
//!                                `cargo bench` runs; unknown arguments such as --bench are
//!                                ignored)
//! codec_ops run OP N             run OP N times, each on a freshly prepared buffer
//! codec_ops setup OP N           only prepare the N buffers (subtract it from `run`)
//! codec_ops list                 list the operations
//! ```
//!
//! Every operation is an `#[inline(never)]` function named `op_*`, so that callgrind can count
//! only inside them: `--toggle-collect='codec_ops::op_*'`.
//!
//! The binary counts allocations with a wrapper around the system allocator (one relaxed atomic
//! increment per allocation; it does not change what is allocated).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use headwater_bench::{
    chunked_body, cookie_heavy_get, read_buffer, read_buffer_pinned, BROWSER_GET, RESPONSE_200,
    SHORT_GET,
};
use headwater_http1::{
    encode_proxy_request, request_framing, ChunkedDecoder, Decoded, Forwarding, Limits,
    RequestEdits, RequestHead, RequestParser, ResponseParser,
};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[inline(never)]
fn op_httparse_request(raw: &[u8]) -> usize {
    let mut slots: [MaybeUninit<httparse::Header<'_>>; 128] =
        [const { MaybeUninit::uninit() }; 128];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(raw, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n + req.headers.len(),
        other => panic!("{other:?}"),
    }
}

#[inline(never)]
fn op_httparse_response(raw: &[u8]) -> usize {
    let mut slots: [MaybeUninit<httparse::Header<'_>>; 128] =
        [const { MaybeUninit::uninit() }; 128];
    let mut res = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, raw, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n + res.headers.len(),
        other => panic!("{other:?}"),
    }
}

#[inline(never)]
fn op_parse(buf: &mut BytesMut) -> RequestHead {
    RequestParser::new(Limits::default())
        .parse(buf)
        .unwrap()
        .unwrap()
}

#[inline(never)]
fn op_parse_into(buf: &mut BytesMut, head: &mut RequestHead) -> bool {
    RequestParser::new(Limits::default())
        .parse_into(buf, head)
        .unwrap()
}

#[inline(never)]
fn op_parse_response(buf: &mut BytesMut) -> usize {
    ResponseParser::new(Limits::default())
        .parse(buf)
        .unwrap()
        .unwrap()
        .header_count()
}

#[inline(never)]
fn op_chunked(buf: &mut BytesMut) -> usize {
    let mut dec = ChunkedDecoder::new();
    let mut n = 0;
    loop {
        match dec.decode(buf) {
            Ok(Some(Decoded::Data(d))) => n += d.len(),
            Ok(Some(Decoded::Done)) => return n,
            other => panic!("{other:?}"),
        }
    }
}

#[inline(never)]
fn op_encode(head: &RequestHead, fwd: &Forwarding<'_>, dst: &mut BytesMut) -> usize {
    dst.clear();
    encode_proxy_request(
        head,
        request_framing(head.body_kind()),
        &RequestEdits::default(),
        fwd,
        dst,
    );
    dst.len()
}

const OPS: &[&str] = &[
    "httparse-short",
    "httparse-browser",
    "httparse-cookies_4k",
    "parse-short",
    "parse-browser",
    "parse-cookies_4k",
    "parse_into-short",
    "parse_into-browser",
    "parse_into-cookies_4k",
    "httparse-response",
    "parse-response",
    "encode-browser",
    "chunked-4k",
    "chunked-64b",
];

/// Runs `op` `n` times; with `setup_only`, prepares the inputs and does nothing else.
/// Returns the allocations made inside the operations (setup excluded).
fn run(op: &str, n: u64, setup_only: bool) -> u64 {
    let cookies = cookie_heavy_get();
    let input = |name: &str| -> Vec<u8> {
        match name {
            "short" => SHORT_GET.to_vec(),
            "browser" => BROWSER_GET.to_vec(),
            "cookies_4k" => cookies.clone(),
            "response" => RESPONSE_200.to_vec(),
            "4k" => chunked_body(4096),
            "64b" => chunked_body(64),
            other => panic!("unknown input {other}"),
        }
    };
    let (kind, which) = op
        .split_once('-')
        .unwrap_or_else(|| panic!("unknown op {op}"));
    let raw = input(which);
    let fwd = headwater_bench::forwarding();
    let mut head = op_parse(&mut read_buffer(BROWSER_GET));
    let mut dst = BytesMut::with_capacity(4096);
    let mut allocs = 0;
    let mut pin_prev = BytesMut::new();
    for _ in 0..n {
        // Inputs are prepared per iteration (outside the counted section), as in codec.rs.
        // The pin keeps the previous iteration's storage alive across this iteration's op
        // (parse_into releases the head's previous buffer), as the batches of codec.rs do.
        let (mut buf, pin) = read_buffer_pinned(&raw);
        if setup_only {
            black_box(&mut buf);
            pin_prev = pin;
            continue;
        }
        let before = ALLOCS.load(Ordering::Relaxed);
        let out = match kind {
            "httparse" if which == "response" => op_httparse_response(black_box(&raw)),
            "httparse" => op_httparse_request(black_box(&raw)),
            "parse" if which == "response" => op_parse_response(&mut buf),
            "parse" => op_parse(&mut buf).header_count(),
            "parse_into" => usize::from(op_parse_into(&mut buf, &mut head)),
            "encode" => op_encode(black_box(&head), &fwd, &mut dst),
            "chunked" => op_chunked(&mut buf),
            _ => panic!("unknown op {op}"),
        };
        allocs += ALLOCS.load(Ordering::Relaxed) - before;
        black_box(out);
        pin_prev = pin;
    }
    drop(pin_prev);
    allocs
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["list"] => OPS.iter().for_each(|op| println!("{op}")),
        [mode @ ("run" | "setup"), op, n] => {
            let n: u64 = n.parse().expect("N must be a number");
            run(op, n, mode == "setup");
        }
        _ => {
            // Default (also under `cargo bench`): allocations per operation.
            println!("heap allocations per operation (average over 1000 runs):");
            for op in OPS {
                let allocs = run(op, 1000, false);
                println!("  {op:<24} {:>6.2}", allocs as f64 / 1000.0);
            }
        }
    }
}
