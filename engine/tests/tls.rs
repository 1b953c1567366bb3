//! The TLS module on real loopback sockets, under both monoio drivers: handshakes, verification
//! failures, deadlines, cancel safety of reads and writes, certificate loading and SNI.
//!
//! io_uring cases are skipped (with a note on stderr) where io_uring cannot be set up; set
//! `HEADWATER_REQUIRE_IO_URING=1` to make that a failure instead.

mod common;

use std::{
    io::{Read, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc,
    },
    thread,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use common::certs::{Ca, Leaf};
use common::drivers::{block_on, each_driver};
use headwater_engine::{
    io::{read_timeout, write_all_timeout, write_vectored_all_timeout, BytesVec, ReadOutcome},
    tls::{
        rustls::{
            self,
            pki_types::{pem::PemObject, PrivateKeyDer, ServerName},
            CertificateError, ProtocolVersion,
        },
        CertKey, ClientTlsConfig, ConfigProblem, PemSource, RootSource, ServerTlsConfig,
        TlsAcceptor, TlsConnector, TlsError, TlsStream,
    },
};
use monoio::{
    buf::VecBuf,
    io::{AsyncReadRent, AsyncReadRentExt, AsyncWriteRent, AsyncWriteRentExt},
    net::{TcpListener, TcpStream},
};

/// Handshake deadline where the handshake is expected to succeed.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Read deadline where data is expected.
const LONG: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Certificates

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "headwater-tls-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Leaf {
    /// Writes `<stem>.crt` and `<stem>.key` into `dir`.
    fn files(&self, dir: &TempDir, stem: &str) -> CertKey {
        CertKey::files(
            dir.write(&format!("{stem}.crt"), &self.cert_pem),
            dir.write(&format!("{stem}.key"), &self.key_pem),
        )
    }
}

/// A CA, its PEM file, and a server certificate for `localhost` and `127.0.0.1`.
struct Fixture {
    dir: TempDir,
    ca: Ca,
    ca_file: PathBuf,
    server: Leaf,
    server_files: CertKey,
}

fn fixture() -> Fixture {
    let dir = TempDir::new();
    let ca = Ca::new("Headwater Test CA");
    let ca_file = dir.write("ca.pem", ca.pem());
    let server = ca.issue(&["localhost", "127.0.0.1"], false);
    let server_files = server.files(&dir, "server");
    Fixture {
        dir,
        ca,
        ca_file,
        server,
        server_files,
    }
}

impl Fixture {
    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::new(&ServerTlsConfig::new(self.server_files.clone())).unwrap()
    }

    fn connector(&self) -> TlsConnector {
        TlsConnector::new(&ClientTlsConfig::with_roots(RootSource::CustomCa(
            PemSource::file(&self.ca_file),
        )))
        .unwrap()
    }

    /// A sync rustls client configuration trusting the CA.
    fn sync_client(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers inside a runtime

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed)
        .collect::<Vec<u8>>()
        .into()
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// One accepted server session and one client session connected to it as `server_name`.
async fn pair_result(
    acceptor: &TlsAcceptor,
    connector: &TlsConnector,
    server_name: &str,
) -> (Result<TlsStream, TlsError>, Result<TlsStream, TlsError>) {
    let (listener, addr) = bind().await;
    let acceptor = acceptor.clone();
    let server = monoio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp, HANDSHAKE).await
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client = connector.connect(tcp, server_name, HANDSHAKE).await;
    (client, server.await)
}

async fn pair(
    acceptor: &TlsAcceptor,
    connector: &TlsConnector,
    server_name: &str,
) -> (TlsStream, TlsStream) {
    let (client, server) = pair_result(acceptor, connector, server_name).await;
    (
        client.expect("client handshake"),
        server.expect("server handshake"),
    )
}

/// Reads (10 s deadline per read) until `buf` holds at least `n` bytes.
async fn read_at_least(s: &mut TlsStream, mut buf: BytesMut, n: usize) -> BytesMut {
    while buf.len() < n {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        let (out, b) = read_timeout(s, buf, LONG).await;
        buf = b;
        match out {
            ReadOutcome::Read(0) => panic!("end of stream after {} of {n} bytes", buf.len()),
            ReadOutcome::Read(_) => {}
            ReadOutcome::TimedOut => panic!("timed out after {} of {n} bytes", buf.len()),
            ReadOutcome::Err(e) => panic!("read failed after {} of {n} bytes: {e}", buf.len()),
        }
    }
    buf
}

/// Reads an HTTP/1.1 message with a content-length: (head, body). Extra bytes are an error.
async fn read_message(s: &mut TlsStream) -> (String, BytesMut) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let need = buf.len() + 1;
        buf = read_at_least(s, buf, need).await;
    };
    let head = String::from_utf8(buf.split_to(head_end).to_vec()).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("content-length")
        .parse()
        .unwrap();
    let body = read_at_least(s, buf, len).await;
    assert_eq!(body.len(), len, "bytes beyond the message");
    (head, body)
}

/// Sends `msg` from `from` with `write_all` and reads it at `to` with `read_exact` (the plain,
/// non-cancelable traits): it must arrive exactly.
async fn send_plain(from: &mut TlsStream, to: &mut TlsStream, msg: &[u8]) {
    let (res, _) = from.write_all(msg.to_vec()).await;
    assert_eq!(res.unwrap(), msg.len());
    let (res, got) = to.read_exact(vec![0u8; msg.len()]).await;
    assert_eq!(res.unwrap(), msg.len());
    assert!(got[..] == msg[..], "the {} bytes differ", msg.len());
}

/// Accepts one connection on `listener` and completes a sync rustls server handshake on it
/// (its last flight sent).
fn accept_sync(
    listener: &std::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> (std::net::TcpStream, rustls::ServerConnection) {
    let (mut sock, _) = listener.accept().unwrap();
    let mut conn = rustls::ServerConnection::new(config).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    while conn.wants_write() {
        conn.write_tls(&mut sock).unwrap();
    }
    (sock, conn)
}

/// Expects the next read to report a clean end of stream.
async fn expect_clean_eof(s: &mut TlsStream) {
    let (out, buf) = read_timeout(s, BytesMut::with_capacity(1024), LONG).await;
    match out {
        ReadOutcome::Read(0) => {}
        other => panic!(
            "expected a clean end of stream, got {other:?} ({} bytes)",
            buf.len()
        ),
    }
}

fn expect_verification(res: Result<TlsStream, TlsError>, peer: &str) -> CertificateError {
    match res {
        Err(e @ TlsError::Verification { .. }) => {
            assert!(!e.is_retryable(), "{e}");
            assert!(e.is_verification());
            assert!(e.to_string().contains(peer), "{e}");
            match e {
                TlsError::Verification { peer: p, reason } => {
                    assert_eq!(p, peer);
                    reason
                }
                _ => unreachable!(),
            }
        }
        Err(e) => panic!("expected a verification error, got {e:?}"),
        Ok(s) => panic!("expected a verification error, got a session {s:?}"),
    }
}

/// The server side of a handshake the client refused: the client's alert, not retryable.
fn expect_alert(res: Result<TlsStream, TlsError>, alert: rustls::AlertDescription) {
    match res {
        Err(e @ TlsError::Handshake(rustls::Error::AlertReceived(_))) => {
            assert!(!e.is_retryable(), "{e}");
            match e {
                TlsError::Handshake(rustls::Error::AlertReceived(got)) => assert_eq!(got, alert),
                _ => unreachable!(),
            }
        }
        other => panic!("expected the client's alert {alert:?}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Exchanges

/// Client (CustomCa) and acceptor exchange HTTP/1.1 requests and responses of several KiB and
/// 1 MiB both ways, written with writev (BytesVec) and write_all, read with read_timeout and
/// read_exact; the bytes arrive exactly; TLS 1.3 and ALPN http/1.1 are agreed; shutdown sends
/// close_notify, which the peer reads as a clean end of stream.
#[test]
fn http_exchange_both_directions() {
    let f = fixture();
    each_driver("http_exchange_both_directions", |kind| {
        let (acceptor, connector) = (f.acceptor(), f.connector());
        let server_der = f.server.der.clone();
        block_on(kind, async move {
            let (mut client, mut server) = pair(&acceptor, &connector, "localhost").await;
            assert!(client.is_client() && !server.is_client());
            assert_eq!(client.alpn_protocol(), Some(&b"http/1.1"[..]));
            assert_eq!(server.alpn_protocol(), Some(&b"http/1.1"[..]));
            assert_eq!(client.protocol_version(), Some(ProtocolVersion::TLSv1_3));
            assert_eq!(server.sni_hostname(), Some("localhost"));
            assert!(client.peer_certificates().unwrap()[0] == server_der);

            for (round, (req_len, resp_len)) in [(5 * 1024 + 3, 1 << 20), (1 << 20, 7 * 1024)]
                .into_iter()
                .enumerate()
            {
                let req_body = pattern(req_len, round as u8);
                let resp_body = pattern(resp_len, 0x5a ^ round as u8);

                // Server: reads the request, answers with a head and the body in three parts.
                let expect = req_body.clone();
                let resp = resp_body.clone();
                let server_task = monoio::spawn(async move {
                    let (head, body) = read_message(&mut server).await;
                    assert!(head.starts_with("POST /upload HTTP/1.1\r\n"), "{head}");
                    assert_eq!(&body[..], &expect[..]);
                    let head = Bytes::from(format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                        resp.len()
                    ));
                    let third = resp.len() / 3;
                    let parts = vec![
                        head,
                        resp.slice(..third),
                        resp.slice(third..2 * third),
                        resp.slice(2 * third..),
                    ];
                    let (res, _) =
                        write_vectored_all_timeout(&mut server, BytesVec::from(parts), LONG).await;
                    res.unwrap();
                    server
                });

                // Client: the request with writev, then the response.
                let head = Bytes::from(format!(
                    "POST /upload HTTP/1.1\r\nhost: localhost\r\ncontent-length: {req_len}\r\n\r\n"
                ));
                let (res, _) = write_vectored_all_timeout(
                    &mut client,
                    BytesVec::from(vec![head, req_body.clone()]),
                    LONG,
                )
                .await;
                res.unwrap();
                let (head, body) = read_message(&mut client).await;
                assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
                assert_eq!(body.len(), resp_len);
                assert!(body[..] == resp_body[..], "response body differs");
                server = server_task.await;
            }

            // Plain write_all / read_exact (the non-cancelable traits) too.
            send_plain(&mut client, &mut server, &pattern(300 * 1024, 7)).await;

            // Vectored read: 12 bytes spread over a 5-byte and a 20-byte buffer.
            let (res, _) = server.write_all(b"hello world!".to_vec()).await;
            res.unwrap();
            let (res, bufs) = client
                .readv(VecBuf::from(vec![vec![0u8; 5], vec![0u8; 20]]))
                .await;
            assert_eq!(res.unwrap(), 12);
            let bufs: Vec<Vec<u8>> = bufs.into();
            assert_eq!(bufs[0], b"hello");
            assert_eq!(&bufs[1][..7], b" world!");

            // close_notify both ways.
            client.shutdown().await.unwrap();
            expect_clean_eof(&mut server).await;
            server.shutdown().await.unwrap();
            expect_clean_eof(&mut client).await;
        });
    });
}

/// A session whose peer closes TCP without close_notify: the read is an UnexpectedEof error,
/// not an end of stream (truncation is detectable).
#[test]
fn tcp_close_without_close_notify_is_an_error() {
    let f = fixture();
    each_driver("tcp_close_without_close_notify_is_an_error", |kind| {
        let (acceptor, connector) = (f.acceptor(), f.connector());
        block_on(kind, async move {
            let (mut client, mut server) = pair(&acceptor, &connector, "127.0.0.1").await;
            // A round trip first, so that the client has read everything (session tickets
            // included): closing with unread bytes would reset the connection instead.
            send_plain(&mut server, &mut client, b"x").await;
            drop(client);
            let (out, _) = read_timeout(&mut server, BytesMut::with_capacity(1024), LONG).await;
            match out {
                ReadOutcome::Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}")
                }
                other => panic!("expected UnexpectedEof, got {other:?}"),
            }
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Verification

/// Wrong server name, unknown CA and an expired certificate each fail the client's handshake
/// with a verification error naming the reason, not retryable; the server sees the client's
/// alert. The same server name against the right certificate succeeds (control).
#[test]
fn verification_failures() {
    let f = fixture();
    let other_ca = Ca::new("Some Other CA");
    let other_ca_file = f.dir.write("other-ca.pem", other_ca.pem());
    let expired = f.ca.issue(&["localhost"], true).files(&f.dir, "expired");
    each_driver("verification_failures", |kind| {
        let acceptor = f.acceptor();
        let connector = f.connector();
        let stranger = TlsConnector::new(&ClientTlsConfig::with_roots(RootSource::CustomCa(
            PemSource::file(&other_ca_file),
        )))
        .unwrap();
        let expired_acceptor = TlsAcceptor::new(&ServerTlsConfig::new(expired.clone())).unwrap();
        block_on(kind, async move {
            // Control: the right name works.
            let (client, _server) = pair(&acceptor, &connector, "localhost").await;
            drop(client);

            let (client, server) = pair_result(&acceptor, &connector, "wrong.example").await;
            let reason = expect_verification(client, "wrong.example");
            assert!(
                matches!(
                    reason,
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                ),
                "{reason:?}"
            );
            expect_alert(server, rustls::AlertDescription::BadCertificate);

            let (client, server) = pair_result(&acceptor, &stranger, "localhost").await;
            assert_eq!(
                expect_verification(client, "localhost"),
                CertificateError::UnknownIssuer
            );
            expect_alert(server, rustls::AlertDescription::UnknownCA);

            let (client, server) = pair_result(&expired_acceptor, &connector, "localhost").await;
            let reason = expect_verification(client, "localhost");
            assert!(
                matches!(
                    reason,
                    CertificateError::Expired | CertificateError::ExpiredContext { .. }
                ),
                "{reason:?}"
            );
            expect_alert(server, rustls::AlertDescription::CertificateExpired);
        });
    });
}

/// Webpki roots do not trust the test CA (UnknownIssuer); system roots load on this machine;
/// verify = false accepts the unknown CA; invalid server names are refused before any I/O.
#[test]
fn client_roots_and_server_names() {
    let f = fixture();
    let webpki = TlsConnector::new(&ClientTlsConfig::default()).unwrap();
    let has_system_store =
        std::fs::read_dir("/etc/ssl/certs").is_ok_and(|mut d| d.next().is_some());
    match TlsConnector::new(&ClientTlsConfig::with_roots(RootSource::System)) {
        Ok(_) => {}
        Err(e) => {
            assert!(!has_system_store, "system roots exist but: {e}");
            assert!(
                matches!(
                    e,
                    TlsError::Config {
                        problem: ConfigProblem::NoRoots(_),
                        ..
                    }
                ),
                "{e:?}"
            );
        }
    }
    let insecure = TlsConnector::new(&ClientTlsConfig {
        verify: false,
        ..ClientTlsConfig::default()
    })
    .unwrap();
    each_driver("client_roots_and_server_names", |kind| {
        let acceptor = f.acceptor();
        let (webpki, insecure) = (webpki.clone(), insecure.clone());
        block_on(kind, async move {
            let (client, _) = pair_result(&acceptor, &webpki, "localhost").await;
            assert_eq!(
                expect_verification(client, "localhost"),
                CertificateError::UnknownIssuer
            );

            let (mut client, mut server) = pair(&acceptor, &insecure, "not-the-name.test").await;
            send_plain(&mut client, &mut server, b"ping").await;

            for bad in ["", "bad name", "a..b"] {
                let (listener, addr) = bind().await;
                let tcp = TcpStream::connect(addr).await.unwrap();
                match webpki.connect(tcp, bad, HANDSHAKE).await {
                    Err(e @ TlsError::InvalidServerName { .. }) => {
                        assert!(!e.is_retryable());
                        assert!(matches!(&e, TlsError::InvalidServerName { name } if name == bad));
                    }
                    other => panic!("{bad:?}: expected InvalidServerName, got {other:?}"),
                }
                drop(listener);
            }
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Deadlines

/// A server that accepts TCP and never speaks TLS: connect fails with a timeout at the
/// deadline (not before, not much after), retryable. A client that connects and never speaks:
/// accept fails the same way.
#[test]
fn handshake_deadline() {
    let f = fixture();
    each_driver("handshake_deadline", |kind| {
        let (acceptor, connector) = (f.acceptor(), f.connector());
        block_on(kind, async move {
            let deadline = Duration::from_millis(300);

            let (listener, addr) = bind().await;
            let mute = monoio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                monoio::time::sleep(Duration::from_secs(3)).await;
                drop(tcp);
            });
            let tcp = TcpStream::connect(addr).await.unwrap();
            let start = Instant::now();
            let res = connector.connect(tcp, "localhost", deadline).await;
            let took = start.elapsed();
            match res {
                Err(e @ TlsError::Timeout { .. }) => {
                    assert!(e.is_retryable() && e.is_timeout(), "{e}");
                    assert!(matches!(e, TlsError::Timeout { after } if after == deadline));
                }
                other => panic!("expected a timeout, got {other:?}"),
            }
            assert!(took >= deadline, "gave up early: {took:?}");
            assert!(took < deadline + Duration::from_secs(1), "late: {took:?}");
            drop(mute);

            let (listener, addr) = bind().await;
            let silent = TcpStream::connect(addr).await.unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let start = Instant::now();
            let res = acceptor.accept(tcp, deadline).await;
            let took = start.elapsed();
            assert!(
                matches!(res, Err(TlsError::Timeout { after }) if after == deadline),
                "{res:?}"
            );
            assert!(took >= deadline && took < deadline + Duration::from_secs(1));
            drop(silent);
        });
    });
}

/// A client that speaks plain HTTP to a TLS listener: the handshake fails at once with a
/// protocol error (not retryable), without waiting for the deadline.
#[test]
fn plain_http_to_tls_listener_is_a_handshake_error() {
    let f = fixture();
    each_driver("plain_http_to_tls_listener_is_a_handshake_error", |kind| {
        let acceptor = f.acceptor();
        block_on(kind, async move {
            let (listener, addr) = bind().await;
            let mut plain = TcpStream::connect(addr).await.unwrap();
            let (res, _) = plain
                .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n".to_vec())
                .await;
            res.unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let start = Instant::now();
            match acceptor.accept(tcp, Duration::from_secs(5)).await {
                Err(e @ TlsError::Handshake(rustls::Error::InvalidMessage(_))) => {
                    assert!(!e.is_retryable(), "{e}")
                }
                other => panic!("expected an invalid-message handshake error, got {other:?}"),
            }
            assert!(start.elapsed() < Duration::from_secs(2));
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Cancel safety

/// read_timeout on a session times out (several times, also between two bursts of data), and
/// every byte the peer sends afterwards is read, in order, with nothing lost.
#[test]
fn read_timeout_loses_no_plaintext() {
    let f = fixture();
    each_driver("read_timeout_loses_no_plaintext", |kind| {
        let (acceptor, connector) = (f.acceptor(), f.connector());
        block_on(kind, async move {
            let (mut client, mut server) = pair(&acceptor, &connector, "localhost").await;
            let short = Duration::from_millis(50);

            // Nothing sent yet: times out, twice.
            for _ in 0..2 {
                let (out, buf) =
                    read_timeout(&mut client, BytesMut::with_capacity(4096), short).await;
                assert!(matches!(out, ReadOutcome::TimedOut), "{out:?}");
                assert!(buf.is_empty());
            }

            let first = pattern(200 * 1024, 1);
            let second = pattern(50 * 1024 + 17, 2);
            let (a, b) = (first.clone(), second.clone());
            let writer = monoio::spawn(async move {
                let (res, _) = write_all_timeout(&mut server, a, LONG).await;
                res.unwrap();
                monoio::time::sleep(Duration::from_millis(400)).await;
                let (res, _) = write_all_timeout(&mut server, b, LONG).await;
                res.unwrap();
                server
            });

            let total = first.len() + second.len();
            let mut got = BytesMut::with_capacity(total + 1024);
            let mut timeouts = 0;
            while got.len() < total {
                if got.capacity() - got.len() < 8 * 1024 {
                    got.reserve(64 * 1024);
                }
                let (out, buf) = read_timeout(&mut client, got, short).await;
                got = buf;
                match out {
                    ReadOutcome::Read(0) => panic!("end of stream at {}", got.len()),
                    ReadOutcome::Read(_) => {}
                    ReadOutcome::TimedOut => {
                        assert!(
                            got.len() >= first.len(),
                            "timed out mid-burst at {}",
                            got.len()
                        );
                        timeouts += 1;
                    }
                    ReadOutcome::Err(e) => panic!("read failed at {}: {e}", got.len()),
                }
            }
            assert_eq!(got.len(), total);
            assert!(got[..first.len()] == first[..], "first burst differs");
            assert!(got[first.len()..] == second[..], "second burst differs");
            assert!(
                timeouts >= 3,
                "expected timeouts between the bursts: {timeouts}"
            );

            // Still a working session both ways.
            let mut server = writer.await;
            send_plain(&mut client, &mut server, b"done").await;
        });
    });
}

/// A peer (sync rustls in a thread) sends TLS records in pieces with pauses longer than the
/// read deadline, so reads are cancelled while a record is half received: the ciphertext that
/// had arrived is kept, and the plaintext comes out exact once the rest arrives.
#[test]
fn cancelled_read_keeps_partial_record() {
    let f = fixture();
    each_driver("cancelled_read_keeps_partial_record", |kind| {
        let acceptor = f.acceptor();
        let connector = f.connector();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        let payload = pattern(12_000, 3);
        let records = [pattern(10_000, 4), pattern(3_000, 5)];
        let expect: Vec<u8> = records.iter().flat_map(|r| r.to_vec()).collect();
        let config = acceptor.config().clone();
        let peer = thread::spawn(move || {
            let (mut sock, mut conn) = accept_sync(&std_listener, config);
            // Each record's ciphertext in three pieces, 250 ms apart.
            for record in &records {
                conn.writer().write_all(record).unwrap();
                let mut ciphertext = Vec::new();
                while conn.wants_write() {
                    conn.write_tls(&mut ciphertext).unwrap();
                }
                let third = ciphertext.len() / 3;
                for piece in [
                    &ciphertext[..third],
                    &ciphertext[third..2 * third],
                    &ciphertext[2 * third..],
                ] {
                    thread::sleep(Duration::from_millis(250));
                    sock.write_all(piece).unwrap();
                }
            }
            // Then the client's message back.
            let mut stream = rustls::Stream::new(&mut conn, &mut sock);
            let mut back = vec![0u8; 12_000];
            stream.read_exact(&mut back).unwrap();
            back
        });
        block_on(kind, async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut client = connector
                .connect(tcp, "localhost", HANDSHAKE)
                .await
                .unwrap();
            let mut got = BytesMut::with_capacity(32 * 1024);
            let mut timeouts = 0;
            while got.len() < expect.len() {
                let (out, buf) = read_timeout(&mut client, got, Duration::from_millis(40)).await;
                got = buf;
                match out {
                    ReadOutcome::Read(0) => panic!("end of stream at {}", got.len()),
                    ReadOutcome::Read(_) => {}
                    ReadOutcome::TimedOut => timeouts += 1,
                    ReadOutcome::Err(e) => panic!("read failed at {}: {e}", got.len()),
                }
            }
            assert_eq!(got.len(), expect.len());
            assert!(got[..] == expect[..], "plaintext differs");
            // Six pauses of 250 ms with 40 ms deadlines.
            assert!(timeouts >= 12, "too few cancelled reads: {timeouts}");
            let (res, _) = write_all_timeout(&mut client, payload.clone(), LONG).await;
            res.unwrap();
            let back = peer.join().unwrap();
            assert!(back[..] == payload[..]);
        });
    });
}

/// write_all_timeout to a peer that does not read times out having committed `written` bytes;
/// writing the rest from there delivers exactly the whole payload once the peer reads (the
/// committed bytes are neither lost nor repeated).
#[test]
fn write_timeout_then_resume_delivers_exactly() {
    let f = fixture();
    each_driver("write_timeout_then_resume_delivers_exactly", |kind| {
        let connector = f.connector();
        let config = f.acceptor().config().clone();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket2::SockRef::from(&std_listener)
            .set_recv_buffer_size(16 * 1024)
            .unwrap();
        let addr = std_listener.local_addr().unwrap();
        let payload = pattern(4 << 20, 9);
        let (hs_done_tx, hs_done_rx) = mpsc::channel::<()>();
        let peer = thread::spawn(move || {
            let (mut sock, mut conn) = accept_sync(&std_listener, config);
            hs_done_tx.send(()).unwrap();
            // Not reading for a while: the client's write deadline passes.
            thread::sleep(Duration::from_millis(800));
            let mut stream = rustls::Stream::new(&mut conn, &mut sock);
            let mut got = Vec::new();
            stream.read_to_end(&mut got).unwrap();
            got
        });
        block_on(kind, async move {
            let std_tcp = std::net::TcpStream::connect(addr).unwrap();
            socket2::SockRef::from(&std_tcp)
                .set_send_buffer_size(16 * 1024)
                .unwrap();
            std_tcp.set_nonblocking(true).unwrap();
            let tcp = TcpStream::from_std(std_tcp).unwrap();
            let mut client = connector
                .connect(tcp, "localhost", HANDSHAKE)
                .await
                .unwrap();
            hs_done_rx.recv().unwrap();
            let (res, _) =
                write_all_timeout(&mut client, payload.clone(), Duration::from_millis(200)).await;
            let written = match res {
                Err(e) if e.is_timeout() => e.written(),
                other => panic!("expected a write timeout, got {other:?}"),
            };
            assert!(
                written > 0 && written < payload.len(),
                "written {written} of {}",
                payload.len()
            );
            let (res, _) = write_all_timeout(
                &mut client,
                payload.slice(written..),
                Duration::from_secs(30),
            )
            .await;
            res.unwrap();
            client.shutdown().await.unwrap();
            let got = peer.join().unwrap();
            assert_eq!(got.len(), payload.len());
            assert!(got[..] == payload[..], "payload differs");
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Server side

/// Sync rustls clients (in a thread), TLS 1.2 and TLS 1.3, reach the acceptor, agree on
/// http/1.1, send a request and read the response up to close_notify.
#[test]
fn acceptor_serves_tls12_and_tls13_clients() {
    let f = fixture();
    each_driver("acceptor_serves_tls12_and_tls13_clients", |kind| {
        for (version, expect) in [
            (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
            (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
        ] {
            let acceptor = f.acceptor();
            let client_config = f.sync_client(&[version]);
            block_on(kind, async move {
                let (listener, addr) = bind().await;
                let client = thread::spawn(move || {
                    let mut sock = std::net::TcpStream::connect(addr).unwrap();
                    let name = ServerName::try_from("localhost").unwrap();
                    let mut conn = rustls::ClientConnection::new(client_config, name).unwrap();
                    let mut stream = rustls::Stream::new(&mut conn, &mut sock);
                    stream
                        .write_all(
                            b"GET /hello HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n",
                        )
                        .unwrap();
                    let mut response = Vec::new();
                    stream.read_to_end(&mut response).unwrap();
                    (
                        conn.protocol_version(),
                        conn.alpn_protocol().map(<[u8]>::to_vec),
                        response,
                    )
                });
                let (tcp, _) = listener.accept().await.unwrap();
                let mut server = acceptor.accept(tcp, HANDSHAKE).await.unwrap();
                assert_eq!(server.protocol_version(), Some(expect));
                assert_eq!(server.sni_hostname(), Some("localhost"));
                let (head, body) = read_message(&mut server).await;
                assert!(head.starts_with("GET /hello HTTP/1.1\r\n"), "{head}");
                assert!(body.is_empty());
                let (res, _) = server
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".to_vec())
                    .await;
                res.unwrap();
                server.shutdown().await.unwrap();
                let (version, alpn, response) = client.join().unwrap();
                assert_eq!(version, Some(expect));
                assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
                assert_eq!(
                    response,
                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
                );
            });
        }
    });
}

fn config_error(res: Result<TlsAcceptor, TlsError>) -> (String, ConfigProblem, String) {
    match res {
        Err(e) => {
            let text = e.to_string();
            assert!(!e.is_retryable());
            match e {
                TlsError::Config {
                    file: Some(file),
                    problem,
                } => (file, problem, text),
                other => panic!("expected a config error naming a file, got {other:?}"),
            }
        }
        Ok(a) => panic!("expected a config error, got {a:?}"),
    }
}

fn name(path: &Path) -> String {
    path.display().to_string()
}

/// The error of an acceptor for the chain in `cert` and the key in `key`.
fn pair_error(cert: &Path, key: &Path) -> (String, ConfigProblem, String) {
    config_error(TlsAcceptor::new(&ServerTlsConfig::new(CertKey::files(
        cert, key,
    ))))
}

/// The path of a PEM file source.
fn file_of(source: &PemSource) -> PathBuf {
    match source {
        PemSource::File(p) => p.clone(),
        PemSource::Inline { .. } => unreachable!("a file source"),
    }
}

/// Bad certificate and key files are refused with the file's name and what is wrong:
/// unreadable, not PEM, no certificate, no private key, key of another certificate; the same
/// for SNI entries, CA files and client certificates; bad and duplicate SNI names too.
#[test]
fn bad_pem_files_are_named() {
    let f = fixture();
    let d = &f.dir;
    let good = f.server_files.clone();
    let (cert, key) = (file_of(&good.cert_chain), file_of(&good.key));

    // Unreadable.
    let missing = d.path("missing.crt");
    let (file, problem, text) = pair_error(&missing, &key);
    assert_eq!(file, name(&missing));
    assert!(
        matches!(problem, ConfigProblem::Unreadable(ref e) if e.kind() == std::io::ErrorKind::NotFound)
    );
    assert!(
        text.contains(&name(&missing)) && text.contains("cannot read"),
        "{text}"
    );

    // No certificate in the file.
    let junk = d.write("junk.crt", "this is not a certificate\n");
    let (file, problem, text) = pair_error(&junk, &key);
    assert_eq!(file, name(&junk));
    assert!(
        matches!(problem, ConfigProblem::NoCertificate),
        "{problem:?}"
    );
    assert!(text.contains("no certificate"), "{text}");

    // Broken PEM.
    let broken = d.write(
        "broken.crt",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    );
    let (file, problem, _) = pair_error(&broken, &key);
    assert_eq!(file, name(&broken));
    assert!(matches!(problem, ConfigProblem::BadPem(_)), "{problem:?}");

    // No private key (a certificate given as the key).
    let (file, problem, text) = pair_error(&cert, &cert);
    assert_eq!(file, name(&cert));
    assert!(
        matches!(problem, ConfigProblem::NoPrivateKey),
        "{problem:?}"
    );
    assert!(text.contains("no private key"), "{text}");

    // The key of another certificate.
    let other = f.ca.issue(&["other.test"], false).files(d, "other");
    let other_key = file_of(&other.key);
    let (file, problem, text) = pair_error(&cert, &other_key);
    assert_eq!(file, name(&other_key));
    assert!(
        matches!(&problem, ConfigProblem::KeyMismatch { cert: c } if *c == name(&cert)),
        "{problem:?}"
    );
    assert!(text.contains("does not match"), "{text}");

    // An SNI entry's files are checked too.
    let (file, problem, _) = config_error(TlsAcceptor::new(
        &ServerTlsConfig::new(good.clone()).with_sni(["a.test"], CertKey::files(&junk, &key)),
    ));
    assert_eq!(file, name(&junk));
    assert!(matches!(problem, ConfigProblem::NoCertificate));

    // Bad and duplicate SNI names.
    for bad in ["", "*.", "a..test", "*.*.test", "a*b.test"] {
        let (_, problem, _) = config_error(TlsAcceptor::new(
            &ServerTlsConfig::new(good.clone()).with_sni([bad], other.clone()),
        ));
        assert!(
            matches!(&problem, ConfigProblem::InvalidSniName(n) if n == bad),
            "{bad:?}: {problem:?}"
        );
    }
    let (_, problem, _) = config_error(TlsAcceptor::new(
        &ServerTlsConfig::new(good.clone())
            .with_sni(["dup.test"], other.clone())
            .with_sni(["DUP.test"], good.clone()),
    ));
    assert!(matches!(&problem, ConfigProblem::DuplicateSniName(n) if n == "DUP.test"));

    // Client side: CA file and client certificate.
    let ca_err = TlsConnector::new(&ClientTlsConfig::with_roots(RootSource::CustomCa(
        PemSource::file(&missing),
    )))
    .unwrap_err();
    assert!(
        matches!(&ca_err, TlsError::Config { file: Some(p), problem: ConfigProblem::Unreadable(_) } if *p == name(&missing)),
        "{ca_err:?}"
    );
    let ca_err = TlsConnector::new(&ClientTlsConfig::with_roots(RootSource::CustomCa(
        PemSource::inline("inline CA", "nothing here"),
    )))
    .unwrap_err();
    assert!(
        matches!(&ca_err, TlsError::Config { file: Some(p), problem: ConfigProblem::NoCertificate } if p == "inline CA"),
        "{ca_err:?}"
    );
    let cc_err = TlsConnector::new(&ClientTlsConfig {
        client_cert: Some(CertKey::files(&cert, &other_key)),
        ..ClientTlsConfig::default()
    })
    .unwrap_err();
    assert!(
        matches!(&cc_err, TlsError::Config { file: Some(p), problem: ConfigProblem::KeyMismatch { .. } } if *p == name(&other_key)),
        "{cc_err:?}"
    );

    // And the good pair loads.
    TlsAcceptor::new(&ServerTlsConfig::new(good)).unwrap();
}

/// SNI picks the certificate: exact names (any case), one-label wildcards, and the default for
/// no SNI (an IP address), unknown names and deeper subdomains.
#[test]
fn sni_selects_matching_cert() {
    let f = fixture();
    let a = f.ca.issue(&["a.test", "a2.test"], false);
    let wild = f.ca.issue(&["*.wild.test"], false);
    let config = ServerTlsConfig::new(f.server_files.clone())
        .with_sni(["a.test", "A2.Test"], a.files(&f.dir, "a"))
        .with_sni(["*.wild.test"], wild.files(&f.dir, "wild"));
    let insecure = TlsConnector::new(&ClientTlsConfig {
        verify: false,
        ..ClientTlsConfig::default()
    })
    .unwrap();
    each_driver("sni_selects_matching_cert", |kind| {
        let acceptor = TlsAcceptor::new(&config).unwrap();
        let connector = f.connector();
        let insecure = insecure.clone();
        let cases = [
            ("a.test", &a.der, &connector, Some("a.test")),
            ("A2.TEST", &a.der, &connector, Some("a2.test")),
            ("x.wild.test", &wild.der, &connector, Some("x.wild.test")),
            ("localhost", &f.server.der, &connector, Some("localhost")),
            ("127.0.0.1", &f.server.der, &connector, None),
            (
                "unknown.test",
                &f.server.der,
                &insecure,
                Some("unknown.test"),
            ),
            (
                "deep.x.wild.test",
                &f.server.der,
                &insecure,
                Some("deep.x.wild.test"),
            ),
        ];
        block_on(kind, async move {
            for (server_name, expect, connector, sni) in cases {
                let (client, server) = pair(&acceptor, connector, server_name).await;
                let chain = client.peer_certificates().expect("peer certificates");
                assert!(chain[0] == *expect, "{server_name}: wrong certificate");
                assert_eq!(server.sni_hostname(), sni, "{server_name}");
            }
        });
    });
}

/// A client certificate is presented to a server that requires one (sync rustls server that
/// verifies it against the test CA).
#[test]
fn client_certificate_is_presented() {
    let f = fixture();
    let client_leaf = f.ca.issue(&["client.test"], false);
    let client_files = client_leaf.files(&f.dir, "client");
    each_driver("client_certificate_is_presented", |kind| {
        let connector = TlsConnector::new(&ClientTlsConfig {
            roots: RootSource::CustomCa(PemSource::inline("test CA", f.ca.pem())),
            client_cert: Some(client_files.clone()),
            ..ClientTlsConfig::default()
        })
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(f.ca.der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let server_key = PrivateKeyDer::from_pem_slice(f.server.key_pem.as_bytes()).unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(vec![f.server.der.clone()], server_key)
                .unwrap(),
        );
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        let peer = thread::spawn(move || {
            let (mut sock, _) = std_listener.accept().unwrap();
            let mut conn = rustls::ServerConnection::new(config).unwrap();
            let mut stream = rustls::Stream::new(&mut conn, &mut sock);
            stream.write_all(b"welcome").unwrap();
            stream.flush().unwrap();
            let mut got = [0u8; 3];
            stream.read_exact(&mut got).unwrap();
            let presented = conn.peer_certificates().map(|c| c[0].clone());
            (presented, got)
        });
        let expect = client_leaf.der.clone();
        block_on(kind, async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut client = connector
                .connect(tcp, "localhost", HANDSHAKE)
                .await
                .unwrap();
            let mut buf = read_at_least(&mut client, BytesMut::with_capacity(64), 7).await;
            assert_eq!(&buf.split_to(7)[..], b"welcome");
            let (res, _) = client.write_all(b"bye".to_vec()).await;
            res.unwrap();
            let (presented, got) = peer.join().unwrap();
            assert_eq!(&got, b"bye");
            assert!(presented == Some(expect), "wrong or no client certificate");
        });
    });
}
