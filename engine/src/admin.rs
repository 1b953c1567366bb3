//! The admin listener: its own thread, off the shards, serving `/metrics` (Prometheus),
//! `/status` (JSON), `/healthz`, `/readyz` and `POST /-/reload`. Blocking std I/O is fine here:
//! admin traffic is a scrape every few seconds, and it never touches a shard.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::BytesMut;
use headwater_http1::{encode_response_head, BodyKind, ClientConnection, Limits, RequestParser};
use http::{Method, StatusCode};

use crate::server::Control;

/// The running admin listener.
pub struct Admin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    /// Binds `addr` and serves admin requests on a new thread.
    pub fn start(addr: SocketAddr, control: Arc<Control>) -> std::io::Result<Admin> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("headwater-admin".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            // A thread per admin connection, so one slow client cannot hold up
                            // a scrape or a reload.
                            let control = control.clone();
                            let _ = std::thread::Builder::new()
                                .name("headwater-admin-conn".into())
                                .spawn(move || serve(stream, &control));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })?;
        Ok(Admin {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Serves the requests of one admin connection (keep-alive supported, one at a time).
fn serve(mut stream: TcpStream, control: &Control) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut parser = RequestParser::new(Limits::default());
    loop {
        let head = loop {
            match parser.parse(&mut buf) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(e) => {
                    let body = format!("{{\"error\":\"{}\"}}\n", e.detail());
                    return respond(
                        &mut stream,
                        e.status(),
                        "application/json",
                        body.as_bytes(),
                        false,
                    );
                }
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        // Admin requests carry no meaningful body; skip a small one, refuse a big one.
        if let BodyKind::Length(n) = head.body_kind() {
            if n > 64 * 1024 {
                return respond(
                    &mut stream,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "text/plain",
                    b"body too large\n",
                    false,
                );
            }
            while (buf.len() as u64) < n {
                let mut chunk = [0u8; 4096];
                let got = stream.read(&mut chunk)?;
                if got == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..got]);
            }
            let _ = buf.split_to(n as usize);
        } else if head.body_kind() == BodyKind::Chunked {
            return respond(
                &mut stream,
                StatusCode::LENGTH_REQUIRED,
                "text/plain",
                b"length required\n",
                false,
            );
        }
        let keep = head.keep_alive();
        let (status, ctype, body) = route(head.method(), head.path(), control);
        respond(&mut stream, status, ctype, body.as_bytes(), keep)?;
        if !keep {
            return Ok(());
        }
    }
}

fn route(method: &Method, path: &[u8], control: &Control) -> (StatusCode, &'static str, String) {
    const JSON: &str = "application/json";
    match (method, path) {
        (&Method::GET, b"/metrics") => (StatusCode::OK, "text/plain; version=0.0.4", control.metrics_text()),
        (&Method::GET, b"/status") => {
            let body = serde_json::to_string_pretty(&control.status()).unwrap_or_default() + "\n";
            (StatusCode::OK, JSON, body)
        }
        (&Method::GET, b"/healthz") => (StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::GET, b"/readyz") => {
            if control.is_draining() {
                (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n".into())
            } else {
                (StatusCode::OK, "text/plain", "ready\n".into())
            }
        }
        (&Method::POST, b"/-/reload") => match control.reload() {
            Ok(g) => (StatusCode::OK, JSON, serde_json::json!({"reloaded": true, "generation": g}).to_string() + "\n"),
            Err(e) => (
                StatusCode::BAD_REQUEST,
                JSON,
                serde_json::json!({"reloaded": false, "error": e, "generation": control.generation()}).to_string() + "\n",
            ),
        },
        (_, b"/metrics" | b"/status" | b"/healthz" | b"/readyz" | b"/-/reload") => {
            (StatusCode::METHOD_NOT_ALLOWED, JSON, "{\"error\":\"method not allowed\"}\n".into())
        }
        _ => (StatusCode::NOT_FOUND, JSON, "{\"error\":\"not found\"}\n".into()),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: StatusCode,
    ctype: &str,
    body: &[u8],
    keep: bool,
) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(body.len() + 128);
    let conn = if keep {
        ClientConnection::KeepAlive
    } else {
        ClientConnection::Close
    };
    encode_response_head(
        status,
        &[("content-type", ctype.as_bytes())],
        BodyKind::Length(body.len() as u64),
        http::Version::HTTP_11,
        conn,
        &mut out,
    );
    out.extend_from_slice(body);
    stream.write_all(&out)
}
