//! TLS for the engine: rustls sessions over monoio TCP streams, for HTTPS listeners (server side)
//! and HTTPS upstreams (client side).
//!
//! # What this module owns
//!
//! - Turning PEM material into rustls configurations, once: [`TlsConnector::new`] from a
//!   [`ClientTlsConfig`] (trust roots, verification, ALPN, optional client certificate) and
//!   [`TlsAcceptor::new`] from a [`ServerTlsConfig`] (a default certificate, optional
//!   certificates chosen by SNI, ALPN). Both keep an `Arc` of the rustls configuration that every
//!   connection shares (and with it the session-resumption caches). Errors name the file and what
//!   is wrong with it ([`TlsError::Config`]).
//! - The handshake with a deadline ([`TlsConnector::connect`], [`TlsAcceptor::accept`]), which
//!   is cancelled rather than dropped when the deadline passes.
//! - [`TlsStream`], the encrypted stream. It implements monoio's `AsyncReadRent`,
//!   `AsyncWriteRent` and their `Cancelable` variants, so the engine's timed I/O
//!   ([`crate::io::read_timeout`], [`crate::io::write_all_timeout`], ...) works on it as on a
//!   `TcpStream`.
//! - [`TlsError`]: where a failure came from and whether retrying can help.
//!
//! It does not own listeners, sockets, the configuration file's schema, certificate reloading or
//! the proxy's use of any of this: callers hand it a connected `TcpStream` and get a
//! [`TlsStream`] back. The crypto provider is *ring* (no cmake/nasm needed); TLS 1.2 and 1.3 are
//! enabled on both sides.
//!
//! # Cancel safety
//!
//! Under io_uring, dropping an in-flight read loses whatever the kernel had already copied into
//! its buffer (see [`crate::io`]). [`TlsStream`] therefore keeps its ciphertext buffers itself:
//!
//! - Reads: the socket is read into a buffer the stream owns. A cancelled socket read gives that
//!   buffer back, with any bytes that did arrive; those go to rustls, and a record that is still
//!   incomplete waits there for the next read. A cancelled `cancelable_read` returns `ECANCELED`
//!   without having handed out any plaintext, and decrypted plaintext that the caller's buffer
//!   could not take is kept for the next read. Nothing is lost and the session stays usable.
//! - Writes: a write encrypts at most [`MAX_PLAINTEXT_PER_WRITE`] bytes of the caller's
//!   plaintext and returns once all of the resulting ciphertext is on the socket, so the stream
//!   never holds more than one write's worth. `Ok(n)` means `n` bytes were committed to the
//!   session. If the write is cancelled after the plaintext was encrypted, it still returns
//!   `Ok(n)` (those bytes must not be written again); the ciphertext that had not reached the
//!   socket yet is sent first by the next write, flush, shutdown or read. A cancelled write that
//!   had committed nothing returns `ECANCELED`.
//! - Dropping a `TlsStream` future half-way (instead of cancelling it) is as bad as with a
//!   `TcpStream`: the bytes in flight are lost, and with TLS that breaks the session (the peer
//!   or this side then fails with a record error). Use the `Cancelable` traits or the engine's
//!   timed I/O, which cancel.
//!
//! # End of stream
//!
//! A read returns `Ok(0)` only after the peer's `close_notify`; a TCP end of stream without it
//! is `Err(UnexpectedEof)` (it may be a truncation). [`TlsStream`]'s shutdown sends
//! `close_notify` and then shuts the TCP write side.
//!
//! # Verification
//!
//! The client side verifies the server's certificate chain and name by default. Turning that off
//! (`ClientTlsConfig::verify = false`) must be explicit; it is logged on stderr when the
//! connector is built, and handshake signatures are still checked.

mod config;
mod error;
mod stream;

pub use config::{
    CertKey, ClientTlsConfig, PemSource, RootSource, ServerTlsConfig, SniCert, TlsAcceptor,
    TlsConnector, DEFAULT_ALPN,
};
pub use error::{ConfigProblem, TlsError};
/// The rustls version this module is built on, for its types (`ProtocolVersion`,
/// `CertificateError`, configurations).
pub use rustls;
pub use stream::{TlsStream, MAX_PLAINTEXT_PER_WRITE};
