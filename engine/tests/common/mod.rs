//! Shared helpers for the engine's integration tests: start a gateway from TOML on loopback (and
//! a mock LLM provider), a raw-socket HTTP/1.1 client that parses responses with the project's
//! codec, and an SSE parser; in submodules, running under each monoio driver ([`drivers`]), a
//! test CA ([`certs`]), and a raw client for the in-process test servers ([`raw`]).
#![allow(dead_code)]

pub mod certs;
pub mod drivers;
pub mod raw;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use headwater_engine::config;
use headwater_engine::llm_mock::MockProvider;
use headwater_engine::server::Server;
use headwater_http1::{
    BodyDecoder, Decoded, Limits, RequestHead, RequestParser, ResponseHead, ResponseParser,
};
use http::Method;
use serde_json::Value;

/// Starts a gateway from `toml` (which should listen on 127.0.0.1:0).
pub fn start(toml: &str) -> Server {
    let config = config::parse(toml, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    Server::start(config, None).expect("gateway starts")
}

/// Starts a gateway with one LLM route (`/v1/`, `llm = true`), two shards and an admin
/// listener; `llm` holds its `[llm]` tables.
pub fn start_llm(llm: &str) -> Server {
    start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\nadmin = \"127.0.0.1:0\"\n\n[[route]]\nname = \"ai\"\nmatch = {{ path_prefix = \"/v1/\" }}\nllm = true\n\n{llm}\n"
    ))
}

/// Starts a mock LLM provider on a free loopback port.
pub fn start_mock() -> MockProvider {
    MockProvider::start("127.0.0.1:0".parse().unwrap()).expect("mock provider starts")
}

static SERIAL: Mutex<()> = Mutex::new(());

/// For tests that share the machine's two cores with a gateway each: one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts a gateway from a config file (so that reload re-reads it).
pub fn start_file(path: &std::path::Path) -> Server {
    let config = config::load(path).unwrap_or_else(|e| panic!("{e}"));
    Server::start(config, Some(path.to_path_buf())).expect("gateway starts")
}

/// A config with one cluster of `endpoints` and a catch-all route; `extra_server` lines go into
/// `[server]`, `route_extra` into the route.
pub fn config(endpoints: &[SocketAddr], extra_server: &str, route_extra: &str) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 2\nadmin = \"127.0.0.1:0\"\n{extra_server}\n\n[[cluster]]\nname = \"app\"\nendpoints = [{}]\n\n[[route]]\nname = \"all\"\ncluster = \"app\"\n{route_extra}\n",
        eps.join(", ")
    )
}

/// A parsed response and its body.
#[derive(Debug)]
pub struct Response {
    pub head: ResponseHead,
    pub body: Bytes,
    pub trailers: Option<Bytes>,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head.status().as_u16()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.head
            .header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A client connection that keeps its read buffer between responses (pipelining-safe).
pub struct Conn {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        Conn::try_open(addr).expect("connect")
    }

    /// Like [`open`](Self::open), but a failure to connect is returned, not a panic.
    pub fn try_open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: BytesMut::new(),
        })
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).expect("write");
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        read_into(&mut self.stream, &mut self.buf)
    }

    /// Reads one response to a request with `method`.
    pub fn read_response(&mut self, method: &Method) -> std::io::Result<Response> {
        let (stream, buf) = (&mut self.stream, &mut self.buf);
        let m = read_message(buf, method, |b| Ok(read_into(stream, b)? > 0))?;
        if let Some(e) = m.cut {
            return Err(io::Error::other(e));
        }
        Ok(Response {
            head: m.head,
            body: m.body.freeze(),
            trailers: m.trailers,
        })
    }

    /// Sends `raw` and reads the response.
    pub fn request(&mut self, raw: &[u8], method: &Method) -> Response {
        self.send(raw);
        self.read_response(method).expect("response")
    }

    /// POSTs `body` as JSON to `path`, with `headers` (whole lines, each ending in CRLF).
    pub fn post_json(&mut self, path: &str, headers: &str, body: &Value) -> Response {
        let body = body.to_string();
        let raw = format!(
            "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.request(raw.as_bytes(), &Method::POST)
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.request(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
            &Method::GET,
        )
    }

    /// Whether the server closed the connection: EOF (or a reset) within the read timeout. A
    /// connection still open when the timeout passes is not closed, nor is one that sends more.
    pub fn is_closed(&mut self) -> bool {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionReset};
        match self.fill() {
            Ok(n) => n == 0,
            Err(e) => matches!(e.kind(), ConnectionReset | ConnectionAborted),
        }
    }
}

/// Reads what `stream` has into `buf` (retrying interrupted reads); 0 at EOF.
fn read_into(stream: &mut (impl Read + ?Sized), buf: &mut BytesMut) -> io::Result<usize> {
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A response as [`read_message`] reads it.
struct Message {
    head: ResponseHead,
    /// When the head was complete.
    head_at: Instant,
    body: BytesMut,
    trailers: Option<Bytes>,
    /// Why the body is incomplete: the connection closed before its framing said it ends.
    cut: Option<headwater_http1::Error>,
}

/// Reads one response to a request with `method` from `buf`, which `fill` tops up (`Ok(false)`
/// at EOF). EOF before the head, or a response the codec rejects, is an error; EOF in the body
/// is reported in [`Message::cut`].
fn read_message(
    buf: &mut BytesMut,
    method: &Method,
    mut fill: impl FnMut(&mut BytesMut) -> io::Result<bool>,
) -> io::Result<Message> {
    let mut parser = ResponseParser::new(Limits::default());
    let head = loop {
        if let Some(h) = parser.parse(buf).map_err(io::Error::other)? {
            break h;
        }
        if !fill(buf)? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    };
    let head_at = Instant::now();
    let mut dec = BodyDecoder::new(head.body_kind(method));
    let (mut body, mut trailers) = (BytesMut::new(), None);
    let cut = loop {
        match dec.decode(buf).map_err(io::Error::other)? {
            Some(Decoded::Data(d)) => body.extend_from_slice(&d),
            Some(Decoded::Trailers(t)) => trailers = Some(t),
            Some(Decoded::Done) => break None,
            None => {
                if !fill(buf)? {
                    if let Err(e) = dec.eof() {
                        break Some(e);
                    }
                }
            }
        }
    };
    Ok(Message {
        head,
        head_at,
        body,
        trailers,
        cut,
    })
}

/// Reads one request, its head and whole body, from `io` after what `buf` already holds (the
/// rest stays in `buf`); `None` when the stream ends (or fails) first. A request the codec
/// rejects is a panic.
pub fn read_request(
    io: &mut (impl Read + ?Sized),
    buf: &mut BytesMut,
) -> Option<(RequestHead, Bytes)> {
    let mut more = |buf: &mut BytesMut| read_into(io, buf).is_ok_and(|n| n > 0);
    let mut parser = RequestParser::new(Limits::default());
    let head = loop {
        if let Some(h) = parser.parse(buf).expect("valid request head") {
            break h;
        }
        if !more(buf) {
            return None;
        }
    };
    let mut dec = BodyDecoder::new(head.body_kind());
    let mut body = BytesMut::new();
    loop {
        match dec.decode(buf).expect("valid request body") {
            Some(Decoded::Data(d)) => body.extend_from_slice(&d),
            Some(Decoded::Trailers(_)) => {}
            Some(Decoded::Done) => return Some((head, body.freeze())),
            None => {
                if !more(buf) {
                    return None;
                }
            }
        }
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sse {
    pub event: Option<String>,
    pub data: String,
}

/// The `id`s of an OpenAI-style model list (`{"object": "list", "data": [{"id": ...}, ...]}`), in
/// order.
pub fn model_ids(list: &Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .expect("a data array")
        .iter()
        .map(|m| m["id"].as_str().expect("a string id"))
        .collect()
}

/// The events of an SSE body, in order (LF or CRLF line ends; `data:` lines joined by LF;
/// blocks with neither `event:` nor `data:`, such as comments, skipped).
pub fn parse_sse(body: &str) -> Vec<Sse> {
    let body = body.replace("\r\n", "\n");
    body.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data: Vec<&str> = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            (event.is_some() || !data.is_empty()).then(|| Sse {
                event,
                data: data.join("\n"),
            })
        })
        .collect()
}

/// One GET on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    Conn::open(addr).get(path)
}

/// A plain admin GET/POST, returning (status, body).
pub fn admin(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut c = Conn::open(addr);
    let m = Method::from_bytes(method.as_bytes()).unwrap();
    let r = c.request(
        format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        &m,
    );
    (r.status(), r.text())
}
