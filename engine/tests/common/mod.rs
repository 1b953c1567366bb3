//! Shared helpers for the engine's integration tests: start a gateway from TOML on loopback, and
//! a raw-socket HTTP/1.1 client that parses responses with the project's codec; in submodules,
//! running under each monoio driver ([`drivers`]), a test CA ([`certs`]), and a raw client for
//! the in-process test servers ([`raw`]).
#![allow(dead_code)]

pub mod certs;
pub mod drivers;
pub mod raw;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use headwater_engine::config;
use headwater_engine::server::Server;
use headwater_http1::{BodyDecoder, Decoded, Limits, ResponseHead, ResponseParser};
use http::Method;

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
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one response to a request with `method`.
    pub fn read_response(&mut self, method: &Method) -> std::io::Result<Response> {
        let mut parser = ResponseParser::new(Limits::default());
        let head = loop {
            if let Some(h) = parser.parse(&mut self.buf).map_err(std::io::Error::other)? {
                break h;
            }
            if self.fill()? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        };
        let mut dec = BodyDecoder::new(head.body_kind(method));
        let mut body = BytesMut::new();
        let mut trailers = None;
        loop {
            match dec.decode(&mut self.buf).map_err(std::io::Error::other)? {
                Some(Decoded::Data(d)) => body.extend_from_slice(&d),
                Some(Decoded::Trailers(t)) => trailers = Some(t),
                Some(Decoded::Done) => break,
                None => {
                    if self.fill()? == 0 {
                        dec.eof().map_err(std::io::Error::other)?;
                    }
                }
            }
        }
        Ok(Response {
            head,
            body: body.freeze(),
            trailers,
        })
    }

    /// Sends `raw` and reads the response.
    pub fn request(&mut self, raw: &[u8], method: &Method) -> Response {
        self.send(raw);
        self.read_response(method).expect("response")
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
