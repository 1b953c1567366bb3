//! [`TlsStream`]: a rustls session over a monoio `TcpStream`, with cancel-safe I/O.

use std::{
    fmt,
    io::{self, BufRead, IoSlice, Write},
    pin::pin,
    time::Duration,
};

use monoio::{
    buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut},
    io::{
        AsyncReadRent, AsyncWriteRent, CancelHandle, CancelableAsyncReadRent,
        CancelableAsyncWriteRent, Canceller,
    },
    net::TcpStream,
    BufResult,
};
use rustls::{pki_types::CertificateDer, Connection, ProtocolVersion};

use super::TlsError;
use crate::io::{is_cancelled, until_deadline};

/// Most plaintext bytes one write (or writev) encrypts; the rest of the caller's buffer is left
/// for the next call, as a short write.
pub const MAX_PLAINTEXT_PER_WRITE: usize = 64 * 1024;

/// Room made for one socket read: a maximal TLS record (16 KiB of payload plus header and
/// expansion) fits.
const READ_BUF: usize = 18 * 1024;

/// The ciphertext write buffer is kept between writes up to this capacity; a larger one (after a
/// large write) is freed once flushed.
const KEEP_OUT_CAPACITY: usize = 18 * 1024;

/// What stopped a handshake or a read, before it is mapped to a public error.
enum Fail {
    Io(io::Error),
    Tls(rustls::Error),
}

/// An established TLS session (client or server side) over a TCP stream.
///
/// Made by [`TlsConnector::connect`](super::TlsConnector::connect) or
/// [`TlsAcceptor::accept`](super::TlsAcceptor::accept). Reads and writes plaintext through
/// monoio's I/O traits, cancelable ones included; see the [module docs](super) for what
/// cancellation and end of stream mean.
pub struct TlsStream {
    tcp: TcpStream,
    conn: Connection,
    /// Ciphertext read from the socket; `inbuf[in_pos..]` has not been handed to rustls yet.
    inbuf: Vec<u8>,
    in_pos: usize,
    /// Ciphertext made by rustls; `out[out_pos..]` has not reached the socket yet.
    out: Vec<u8>,
    out_pos: usize,
    /// The socket reported end of stream.
    tcp_eof: bool,
    close_notify_queued: bool,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("side", &if self.is_client() { "client" } else { "server" })
            .field("protocol_version", &self.protocol_version())
            .field("buffered_ciphertext_in", &(self.inbuf.len() - self.in_pos))
            .field(
                "unsent_ciphertext",
                &self.out.len().saturating_sub(self.out_pos),
            )
            .finish()
    }
}

impl TlsStream {
    pub(crate) fn new(tcp: TcpStream, conn: Connection) -> Self {
        TlsStream {
            tcp,
            conn,
            inbuf: Vec::new(),
            in_pos: 0,
            out: Vec::new(),
            out_pos: 0,
            tcp_eof: false,
            close_notify_queued: false,
        }
    }

    /// The TCP stream (for its addresses and socket options; reading or writing it directly
    /// would break the session).
    pub fn get_ref(&self) -> &TcpStream {
        &self.tcp
    }

    /// The rustls session, for what this type does not expose.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Whether this is the client side.
    pub fn is_client(&self) -> bool {
        matches!(self.conn, Connection::Client(_))
    }

    /// The ALPN protocol agreed on, if any (e.g. `b"http/1.1"`).
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The TLS version agreed on.
    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// The peer's certificate chain, end-entity first (the server's, on the client side; on the
    /// server side none, as client certificates are not requested).
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// Server side: the name the client asked for with SNI.
    pub fn sni_hostname(&self) -> Option<&str> {
        match &self.conn {
            Connection::Server(s) => s.server_name(),
            Connection::Client(_) => None,
        }
    }

    /// Runs the handshake within `timeout`. `peer` names the peer in a verification error.
    pub(crate) async fn handshake_within(
        &mut self,
        timeout: Duration,
        peer: impl FnOnce() -> String,
    ) -> Result<(), TlsError> {
        let mut canceller = Canceller::new();
        let handle = canceller.handle();
        let deadline = pin!(monoio::time::sleep(timeout));
        let (res, timed_out) =
            until_deadline(self.handshake(&handle), deadline, &mut canceller).await;
        match res {
            Ok(()) => Ok(()),
            Err(Fail::Io(e)) if timed_out && is_cancelled(&e) => {
                Err(TlsError::Timeout { after: timeout })
            }
            Err(Fail::Io(e)) => Err(TlsError::Io(e)),
            Err(Fail::Tls(rustls::Error::InvalidCertificate(reason))) => {
                Err(TlsError::Verification {
                    peer: peer(),
                    reason,
                })
            }
            Err(Fail::Tls(e)) => Err(TlsError::Handshake(e)),
        }
    }

    async fn handshake(&mut self, c: &CancelHandle) -> Result<(), Fail> {
        loop {
            self.flush_out(c).await.map_err(Fail::Io)?;
            if !self.conn.is_handshaking() {
                return Ok(());
            }
            match self.feed() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(Fail::Tls(e)) => {
                    // Best effort: tell the peer why (rustls queued an alert).
                    let _ = self.flush_out(c).await;
                    return Err(Fail::Tls(e));
                }
                Err(e) => return Err(e),
            }
            if self.tcp_eof {
                return Err(Fail::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                )));
            }
            self.read_socket(c).await.map_err(Fail::Io)?;
        }
    }

    /// Hands buffered ciphertext to rustls and processes it; `Ok(false)` when there was none.
    fn feed(&mut self) -> Result<bool, Fail> {
        if self.in_pos >= self.inbuf.len() {
            return Ok(false);
        }
        let mut pending = &self.inbuf[self.in_pos..];
        let before = pending.len();
        let n = self.conn.read_tls(&mut pending).map_err(Fail::Io)?;
        self.in_pos += before - pending.len();
        if n == 0 {
            // Only after the peer's close_notify: nothing after it counts.
            self.in_pos = self.inbuf.len();
        }
        if self.in_pos == self.inbuf.len() {
            self.inbuf.clear();
            self.in_pos = 0;
        }
        self.conn.process_new_packets().map_err(Fail::Tls)?;
        Ok(true)
    }

    /// Reads the socket once into `inbuf` (at least one byte, or end of stream).
    async fn read_socket(&mut self, c: &CancelHandle) -> io::Result<()> {
        if self.in_pos > 0 {
            self.inbuf.drain(..self.in_pos);
            self.in_pos = 0;
        }
        if self.inbuf.capacity() - self.inbuf.len() < READ_BUF / 2 {
            self.inbuf.reserve(READ_BUF);
        }
        loop {
            let buf = std::mem::take(&mut self.inbuf);
            let (begin, end) = (buf.len(), buf.capacity());
            let (res, slice) = self
                .tcp
                .cancelable_read(buf.slice_mut(begin..end), c.clone())
                .await;
            self.inbuf = slice.into_inner();
            return match res {
                Ok(0) => {
                    self.tcp_eof = true;
                    // Lets rustls tell a clean close from a truncation.
                    let _ = self.conn.read_tls(&mut &[][..]);
                    Ok(())
                }
                Ok(_) => Ok(()),
                // A cancelled handle fails the next read at once: no loop.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// Sends all pending ciphertext, including what rustls has queued.
    async fn flush_out(&mut self, c: &CancelHandle) -> io::Result<()> {
        loop {
            if self.out_pos >= self.out.len() {
                self.out.clear();
                self.out_pos = 0;
                if !self.conn.wants_write() {
                    if self.out.capacity() > KEEP_OUT_CAPACITY {
                        self.out = Vec::new();
                    }
                    return Ok(());
                }
                while self.conn.wants_write() {
                    self.conn.write_tls(&mut self.out)?;
                }
                continue;
            }
            let buf = std::mem::take(&mut self.out);
            let (res, slice) = self
                .tcp
                .cancelable_write(buf.slice(self.out_pos..), c.clone())
                .await;
            self.out = slice.into_inner();
            match res {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Copies decrypted plaintext to `dst` (`cap` bytes): `None` when rustls has none and more
    /// ciphertext is needed; `Some(Ok(0))` at a clean end of stream.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `cap` bytes.
    unsafe fn take_plaintext(&mut self, dst: *mut u8, cap: usize) -> Option<io::Result<usize>> {
        let mut reader = self.conn.reader();
        let mut n = 0;
        while n < cap {
            let took = match reader.fill_buf() {
                Ok([]) => break,
                Ok(chunk) => {
                    let k = chunk.len().min(cap - n);
                    // SAFETY: `dst` has room for `cap` bytes (caller) and `n + k <= cap`.
                    unsafe { dst.add(n).copy_from_nonoverlapping(chunk.as_ptr(), k) };
                    k
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return (n > 0).then_some(Ok(n));
                }
                Err(e) => return Some(if n > 0 { Ok(n) } else { Err(e) }),
            };
            reader.consume(took);
            n += took;
        }
        Some(Ok(n))
    }

    /// Gets plaintext for a read: `fill(self)` copies it out of rustls (`None`: none there).
    async fn read_with<F>(&mut self, c: &CancelHandle, mut fill: F) -> io::Result<usize>
    where
        F: FnMut(&mut Self) -> Option<io::Result<usize>>,
    {
        loop {
            if let Some(res) = fill(self) {
                return res;
            }
            match self.feed() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(Fail::Io(e)) => return Err(e),
                Err(Fail::Tls(e)) => {
                    let _ = self.flush_out(c).await;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
            // Whatever rustls wants to send (a key update, an alert) goes first.
            self.flush_out(c).await?;
            if self.tcp_eof {
                // `fill` reports the end of stream that rustls saw; this is for a state it did
                // not account for, so that the loop cannot spin.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection without close_notify",
                ));
            }
            self.read_socket(c).await?;
        }
    }

    async fn read_into<T: IoBufMut>(&mut self, mut buf: T, c: CancelHandle) -> BufResult<usize, T> {
        let cap = buf.bytes_total();
        if cap == 0 {
            return (Ok(0), buf);
        }
        let dst = buf.write_ptr();
        // SAFETY: `buf` is owned by this future and gives `cap` writable bytes at `dst`; the
        // pointer is into its storage, which moving `buf` does not move (IoBufMut contract).
        let res = self
            .read_with(&c, |s| unsafe { s.take_plaintext(dst, cap) })
            .await;
        if let Ok(n) = res {
            // SAFETY: `n` bytes were written from the start of `buf`'s writable area.
            unsafe { buf.set_init(n) };
        }
        (res, buf)
    }

    async fn readv_into<T: IoVecBufMut>(
        &mut self,
        mut buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        let (ptr, len) = (buf.write_iovec_ptr(), buf.write_iovec_len());
        let iovecs: Vec<libc::iovec> = if len == 0 || ptr.is_null() {
            Vec::new()
        } else {
            // SAFETY: the IoVecBufMut contract: `len` valid iovecs at `ptr`.
            unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec()
        };
        if iovecs.iter().all(|v| v.iov_len == 0) {
            return (Ok(0), buf);
        }
        let res = self
            .read_with(&c, |s| {
                let mut total = 0;
                for v in &iovecs {
                    if v.iov_len == 0 {
                        continue;
                    }
                    // SAFETY: each iovec describes writable memory owned by `buf`.
                    match unsafe { s.take_plaintext(v.iov_base.cast(), v.iov_len) } {
                        // This one is full: go on with the next.
                        Some(Ok(n)) if n == v.iov_len => total += n,
                        // No more plaintext for now, or the end of stream.
                        Some(Ok(n)) => return Some(Ok(total + n)),
                        None => return (total > 0).then_some(Ok(total)),
                        Some(Err(e)) => return Some(if total > 0 { Ok(total) } else { Err(e) }),
                    }
                }
                Some(Ok(total))
            })
            .await;
        if let Ok(n) = res {
            // SAFETY: `n` bytes were written across the iovecs in order.
            unsafe { buf.set_init(n) };
        }
        (res, buf)
    }

    /// After rustls accepted `accepted` plaintext bytes: sends their ciphertext.
    async fn commit(&mut self, accepted: usize, c: &CancelHandle) -> io::Result<usize> {
        match self.flush_out(c).await {
            Ok(()) => Ok(accepted),
            // Committed: the caller must not send these bytes again. The rest of their
            // ciphertext waits in `out` for the next operation.
            Err(e) if is_cancelled(&e) => Ok(accepted),
            Err(e) => Err(e),
        }
    }

    async fn write_from<T: IoBuf>(&mut self, buf: T, c: CancelHandle) -> BufResult<usize, T> {
        if let Err(e) = self.flush_out(&c).await {
            return (Err(e), buf);
        }
        let len = buf.bytes_init().min(MAX_PLAINTEXT_PER_WRITE);
        if len == 0 {
            return (Ok(0), buf);
        }
        // SAFETY: IoBuf contract: `bytes_init` initialized bytes at `read_ptr`.
        let data = unsafe { std::slice::from_raw_parts(buf.read_ptr(), len) };
        let accepted = match self.conn.writer().write(data) {
            Ok(n) => n,
            Err(e) => return (Err(e), buf),
        };
        let res = self.commit(accepted, &c).await;
        (res, buf)
    }

    async fn writev_from<T: IoVecBuf>(&mut self, buf: T, c: CancelHandle) -> BufResult<usize, T> {
        if let Err(e) = self.flush_out(&c).await {
            return (Err(e), buf);
        }
        let accepted = {
            let (ptr, len) = (buf.read_iovec_ptr(), buf.read_iovec_len());
            let iovecs: &[libc::iovec] = if len == 0 || ptr.is_null() {
                &[]
            } else {
                // SAFETY: IoVecBuf contract: `len` valid iovecs at `ptr`.
                unsafe { std::slice::from_raw_parts(ptr, len) }
            };
            let mut slices = Vec::with_capacity(iovecs.len());
            let mut total = 0;
            for v in iovecs {
                if total == MAX_PLAINTEXT_PER_WRITE {
                    break;
                }
                let take = v.iov_len.min(MAX_PLAINTEXT_PER_WRITE - total);
                if take == 0 {
                    continue;
                }
                // SAFETY: each iovec describes initialized memory owned by `buf`.
                slices.push(IoSlice::new(unsafe {
                    std::slice::from_raw_parts(v.iov_base as *const u8, take)
                }));
                total += take;
            }
            if total == 0 {
                return (Ok(0), buf);
            }
            match self.conn.writer().write_vectored(&slices) {
                Ok(n) => n,
                Err(e) => return (Err(e), buf),
            }
        };
        let res = self.commit(accepted, &c).await;
        (res, buf)
    }

    async fn close(&mut self, c: CancelHandle) -> io::Result<()> {
        if !self.close_notify_queued {
            self.conn.send_close_notify();
            self.close_notify_queued = true;
        }
        self.flush_out(&c).await?;
        self.tcp.cancelable_shutdown(c).await
    }
}

/// A handle that is never cancelled, for the plain (non-cancelable) I/O traits.
fn uncancelled() -> CancelHandle {
    Canceller::new().handle()
}

impl AsyncReadRent for TlsStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        self.read_into(buf, uncancelled()).await
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        self.readv_into(buf, uncancelled()).await
    }
}

impl CancelableAsyncReadRent for TlsStream {
    async fn cancelable_read<T: IoBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        self.read_into(buf, c).await
    }

    async fn cancelable_readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        self.readv_into(buf, c).await
    }
}

impl AsyncWriteRent for TlsStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        self.write_from(buf, uncancelled()).await
    }

    async fn writev<T: IoVecBuf>(&mut self, buf_vec: T) -> BufResult<usize, T> {
        self.writev_from(buf_vec, uncancelled()).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.flush_out(&uncancelled()).await
    }

    /// Sends `close_notify`, then shuts the TCP write side.
    async fn shutdown(&mut self) -> io::Result<()> {
        self.close(uncancelled()).await
    }
}

impl CancelableAsyncWriteRent for TlsStream {
    async fn cancelable_write<T: IoBuf>(&mut self, buf: T, c: CancelHandle) -> BufResult<usize, T> {
        self.write_from(buf, c).await
    }

    async fn cancelable_writev<T: IoVecBuf>(
        &mut self,
        buf_vec: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        self.writev_from(buf_vec, c).await
    }

    async fn cancelable_flush(&mut self, c: CancelHandle) -> io::Result<()> {
        self.flush_out(&c).await
    }

    async fn cancelable_shutdown(&mut self, c: CancelHandle) -> io::Result<()> {
        self.close(c).await
    }
}
