//! A raw HTTP/1.1 client for the engine's in-process test servers (the demo upstreams, the mock
//! providers): requests go out as the bytes given, responses are read with the project's codec
//! into a [`Resp`] that keeps the headers as text, the trailers, whether the body ended as its
//! framing says, and when the head and the end arrived.

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::Method;
use serde_json::Value;

use super::{read_into, read_message};

/// One response as read by [`Client::response`].
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The raw trailer section of a chunked body (empty without trailers).
    pub trailers: Vec<u8>,
    /// The body ended as its framing says (false: the connection closed first).
    pub complete: bool,
    /// From sending the request to the response head.
    pub head_after: Duration,
    /// From sending the request to the end of the body.
    pub total: Duration,
}

impl Resp {
    /// The first header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (a panic naming the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection (10 s read timeout) and its read buffer.
pub struct Client {
    pub stream: TcpStream,
    pub buf: BytesMut,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Sends `data` as it is.
    pub fn send(&mut self, data: &[u8]) {
        self.stream.write_all(data).unwrap();
    }

    /// Reads more bytes; false at EOF or reset.
    pub fn fill(&mut self) -> bool {
        fill(&mut self.stream, &mut self.buf)
    }

    /// Reads one whole response (an interim 1xx counts as one) to a request with `method`; a
    /// body cut short is a panic.
    pub fn response(&mut self, method: &Method) -> Resp {
        let r = self.response_since(method, Instant::now());
        assert!(
            r.complete,
            "the connection closed before the end of the body"
        );
        r
    }

    /// Reads one response to a request with `method` sent at `sent`; its body may be cut short
    /// (see [`Resp::complete`]).
    pub fn response_since(&mut self, method: &Method, sent: Instant) -> Resp {
        let (stream, buf) = (&mut self.stream, &mut self.buf);
        let m = read_message(buf, method, |b| Ok(fill(stream, b)))
            .unwrap_or_else(|e| panic!("no response read: {e}"));
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Resp {
            status: m.head.status().as_u16(),
            headers: m.head.headers().map(|(n, v)| (text(n), text(v))).collect(),
            body: m.body.to_vec(),
            trailers: m.trailers.map(|t| t.to_vec()).unwrap_or_default(),
            complete: m.cut.is_none(),
            head_after: m.head_at.duration_since(sent),
            total: sent.elapsed(),
        }
    }
}

/// Reads more of `stream` into `buf`; false at EOF or reset.
fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> bool {
    match read_into(stream, buf) {
        Ok(n) => n > 0,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
        Err(e) => panic!("read: {e}"),
    }
}
