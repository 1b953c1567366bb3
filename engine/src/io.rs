//! Cancel-safe timed I/O on monoio.
//!
//! This module owns reading, writing and accepting with a deadline without losing data.
//!
//! Why: monoio hands buffers to the kernel. Under io_uring, dropping an in-flight read (which is
//! what `monoio::time::timeout` does when it fires) abandons the operation: if the kernel had
//! already received bytes into the buffer, they are gone and the stream is out of step. Here a
//! deadline instead cancels the operation (`monoio::io::Canceller`) and then awaits it to
//! completion, so the buffer always comes back, with whatever did arrive:
//!
//! - under io_uring an `IORING_OP_ASYNC_CANCEL` is submitted; the read then completes either with
//!   `ECANCELED` (nothing consumed) or with its data, if it won the race;
//! - under epoll the pending read is woken with a "cancelled" readiness and returns `ECANCELED`
//!   without calling `recv`; unread bytes stay in the socket.
//!
//! The operation is polled before the timer, so data that is ready when the deadline fires is
//! returned as data.
//!
//! Do not drop these futures half-way either (for instance inside another `timeout`): that
//! reintroduces the problem they solve. Put the deadline in `dur` (or `stop`) instead.
//!
//! # Operations that end the stream when they are stopped
//!
//! Most of the proxy's operations are on a stream that is closed if they time out: a write to
//! a peer that stops reading, a read of a response head or of a body that stalls. For those,
//! [`read_or_drop`], [`write_all_or_drop`] and [`write_vectored_all_or_drop`] use plain monoio
//! operations and *drop* the one in flight when the deadline passes, instead of cancelling it.
//! Dropping is safe for the buffer: the io_uring driver keeps a dropped operation's buffer until
//! the kernel completes it (after the `ASYNC_CANCEL` it submits), and the epoll driver makes the
//! system call inside `poll`, so a dropped operation never handed anything over. What is lost is
//! what the last operation did (bytes a read received, how much of a write went out), which a
//! stream that is closed next does not need. And it is cheaper: a cancelable operation
//! registers with its canceller, an insert into and a removal from monoio's `HashSet` with
//! SipHash, about 0.35k instructions per operation (perf stat).
//!
//! Operations whose stream lives on after a stop keep the cancelable form: the client's
//! request-head reads, which a keep-alive timeout, a reload or a drain may interrupt while the
//! next request is arriving ([`read_until`] returns those bytes), and the one-off helpers below,
//! which serve streams that may be used again (TLS sessions, whose records must not be cut).
//!
//! # Kept per connection: a read canceller and a timer
//!
//! A canceller costs an `Rc` and a hash table, and a monoio timer (`Sleep`) a timer-wheel entry
//! and half a kilobyte of future state. So a connection keeps both for its whole life and lends
//! them to each operation ([`read_until`], [`read_or_drop`], ...):
//!
//! - a `Canceller` for the stream's cancelable reads. After a cancel the used canceller is
//!   replaced by a fresh one (a cancelled canceller refuses every later operation).
//! - one pinned timer ([`timer`]) per task, re-armed by each operation's [`Deadline`]
//!   (`Sleep::reset`), and only once the operation has to wait: an operation that completes
//!   at once reads no clock and touches no timer. A `Sleep` keeps the waker of the task that
//!   first polled it until it fires, so a timer must stay with one task (a client connection's
//!   task, not a pooled upstream connection that serves one task after another), and
//!   operations that run at the same time (the two directions of a tunnel, the two tries of a
//!   hedged request) need a timer each.
//!
//! [`read_timeout`], [`write_all_timeout`] and [`write_vectored_all_timeout`] are cancelable
//! operations with a canceller and a timer of their own, for one-off use ([`write_all_until`]
//! and [`write_vectored_all_until`] take them from the caller); so is [`accept_timeout`], which
//! has no other form.

use std::{
    fmt,
    future::{poll_fn, Future},
    io,
    net::SocketAddr,
    pin::{pin, Pin},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use monoio::{
    buf::{IoBuf, IoBufMut, IoVecBuf},
    io::{
        AsyncReadRent, AsyncWriteRent, CancelableAsyncReadRent, CancelableAsyncWriteRent, Canceller,
    },
    net::{TcpListener, TcpStream},
    time::Sleep,
};

/// A timer for [`Deadline`]s, not armed yet. Pin it where it stays for the task's life (e.g.
/// `std::pin::pin!(io::timer())` in the connection's task) and lend it to one deadline after
/// another.
pub fn timer() -> Sleep {
    // Never polled before a deadline resets it, so the deadline given here does not matter.
    monoio::time::sleep(Duration::MAX)
}

/// A deadline kept by a reusable timer ([`timer`]): the `stop` of [`read_until`],
/// [`write_all_until`] and [`write_vectored_all_until`].
///
/// It arms the timer (`Sleep::reset`) when it is first polled, which those helpers do only once
/// their operation has to wait, so an operation that completes at once costs no clock read and
/// no timer work. A deadline made with [`after`](Self::after) therefore runs from the first
/// wait of the operation (or of the loop that awaits it more than once, e.g. a head read over
/// several reads), not from its creation; both are the same moment up to the time of the
/// system calls that did not wait.
///
/// Dropped unfired, it leaves the timer armed: the next deadline re-arms it, and if the old
/// deadline passes first, the task is woken once for nothing.
pub struct Deadline<'a> {
    timer: Pin<&'a mut Sleep>,
    when: When,
    armed: bool,
}

/// When a [`Deadline`] passes.
#[derive(Clone, Copy)]
enum When {
    /// This long after it is armed.
    After(Duration),
    /// At this instant.
    At(Instant),
}

impl<'a> Deadline<'a> {
    /// Passes `dur` after it is armed (see the type's documentation).
    pub fn after(timer: Pin<&'a mut Sleep>, dur: Duration) -> Self {
        Deadline {
            timer,
            when: When::After(dur),
            armed: false,
        }
    }

    /// Passes at `at`.
    pub fn at(timer: Pin<&'a mut Sleep>, at: Instant) -> Self {
        Deadline {
            timer,
            when: When::At(at),
            armed: false,
        }
    }
}

/// Beyond this, a deadline is as far as `monoio::time::sleep` takes a duration that `Instant`
/// cannot represent: about 30 years.
const FAR_FUTURE: Duration = Duration::from_secs(86400 * 365 * 30);

impl Future for Deadline<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if !this.armed {
            let at = match this.when {
                When::After(dur) => {
                    let now = Instant::now();
                    now.checked_add(dur).unwrap_or(now + FAR_FUTURE)
                }
                When::At(at) => at,
            };
            this.timer
                .as_mut()
                .reset(monoio::time::Instant::from_std(at));
            this.armed = true;
        }
        this.timer.as_mut().poll(cx)
    }
}

/// Spare capacity reserved by [`read_timeout`] when the buffer has none.
pub const MIN_READ_SPARE: usize = 8 * 1024;

/// How a timed read ended.
#[derive(Debug)]
pub enum ReadOutcome {
    /// `n` bytes were appended to the buffer; 0 means end of stream.
    Read(usize),
    /// The deadline passed before any byte arrived; the stream is still usable.
    TimedOut,
    /// The read failed.
    Err(io::Error),
}

/// Why a timed write did not complete.
#[derive(Debug)]
pub enum WriteError {
    /// The deadline passed; `written` bytes (from the start of the buffer) had been sent.
    TimedOut {
        /// Bytes sent before the deadline.
        written: usize,
    },
    /// The write failed after `written` bytes.
    Io {
        /// The error.
        error: io::Error,
        /// Bytes sent before the error.
        written: usize,
    },
}

impl WriteError {
    /// Bytes that were sent before the write stopped (0: nothing reached the peer).
    pub fn written(&self) -> usize {
        match self {
            WriteError::TimedOut { written } | WriteError::Io { written, .. } => *written,
        }
    }

    /// Whether the deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, WriteError::TimedOut { .. })
    }
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::TimedOut { written } => {
                write!(f, "write timed out after {written} bytes")
            }
            WriteError::Io { error, written } => {
                write!(f, "write failed after {written} bytes: {error}")
            }
        }
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WriteError::TimedOut { .. } => None,
            WriteError::Io { error, .. } => Some(error),
        }
    }
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> io::Error {
        match e {
            WriteError::TimedOut { .. } => io::Error::new(io::ErrorKind::TimedOut, e.to_string()),
            WriteError::Io { error, .. } => error,
        }
    }
}

/// Whether `e` is what a cancelled operation returns.
pub(crate) fn is_cancelled(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ECANCELED) || e.kind() == io::ErrorKind::Interrupted
}

/// Runs `op` until it completes or `deadline` fires; in the latter case cancels it through
/// `canceller` (which is replaced by a fresh one) and still awaits it. Returns the operation's
/// output and whether the deadline fired.
///
/// A canceller that was not used to cancel serves the next operation too: connections keep
/// theirs (a read canceller per stream) rather than making one per operation.
pub(crate) async fn until_deadline<F: Future, D: Future<Output = ()>>(
    op: F,
    deadline: Pin<&mut D>,
    canceller: &mut Canceller,
) -> (F::Output, bool) {
    let mut op = pin!(op);
    // Raced by reference: when the deadline wins, the operation itself is still here.
    match unless_stopped(op.as_mut(), deadline).await {
        Some(out) => (out, false),
        None => {
            // The op has been polled, so it is registered with the canceller.
            *canceller = std::mem::take(canceller).cancel();
            (op.await, true)
        }
    }
}

/// Reads once into the spare capacity of `buf`, after its existing bytes, waiting at most `dur`.
///
/// If `buf` has no spare capacity, [`MIN_READ_SPARE`] bytes are reserved (so the buffer may
/// reallocate; pass one with room to avoid that). On `Read(n)`, `buf.len()` grew by `n`.
pub async fn read_timeout<T: CancelableAsyncReadRent>(
    io: &mut T,
    buf: BytesMut,
    dur: Duration,
) -> (ReadOutcome, BytesMut) {
    read_until(io, buf, monoio::time::sleep(dur), &mut Canceller::new()).await
}

/// Writes all of `buf` within `dur` (one deadline for the whole buffer).
///
/// On a timeout, the bytes sent so far are reported in [`WriteError::TimedOut`]; the stream may be
/// written again (continue from `written`), though usually a peer that stops reading is dropped.
pub async fn write_all_timeout<T: CancelableAsyncWriteRent, B: IoBuf>(
    io: &mut T,
    buf: B,
    dur: Duration,
) -> (Result<(), WriteError>, B) {
    write_all_until(io, buf, monoio::time::sleep(dur), &mut Canceller::new()).await
}

/// Writes all of `buf` (as [`write_all_timeout`]) until `stop` resolves, through `canceller`.
pub async fn write_all_until<T: CancelableAsyncWriteRent, B: IoBuf, S: Future<Output = ()>>(
    io: &mut T,
    mut buf: B,
    stop: S,
    canceller: &mut Canceller,
) -> (Result<(), WriteError>, B) {
    let total = buf.bytes_init();
    let mut written = 0;
    let mut stop = pin!(stop);
    while written < total {
        let write = io.cancelable_write(buf.slice(written..total), canceller.handle());
        let ((res, slice), timed_out) = until_deadline(write, stop.as_mut(), canceller).await;
        buf = slice.into_inner();
        if let Err(e) = after_write(res, timed_out, &mut written, total) {
            return (Err(e), buf);
        }
    }
    (Ok(()), buf)
}

/// Accounts for one write of a write-all loop that has sent `written` of `total` bytes: adds
/// what it sent to `written`, and tells whether the loop must stop (the error to return) or
/// go on.
fn after_write(
    res: io::Result<usize>,
    timed_out: bool,
    written: &mut usize,
    total: usize,
) -> Result<(), WriteError> {
    match res {
        Ok(0) => Err(WriteError::Io {
            error: io::ErrorKind::WriteZero.into(),
            written: *written,
        }),
        Ok(n) => {
            *written += n;
            if timed_out && *written < total {
                Err(WriteError::TimedOut { written: *written })
            } else {
                Ok(())
            }
        }
        Err(e) if timed_out && is_cancelled(&e) => Err(WriteError::TimedOut { written: *written }),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
        Err(error) => Err(WriteError::Io {
            error,
            written: *written,
        }),
    }
}

/// Writes all of `bufs` (e.g. a response head and a body chunk) with `writev`, within `dur`.
///
/// The returned [`BytesVec`] still holds all the original `Bytes` (cheap to keep for a replay);
/// [`WriteError::written`] tells how far a failed write got.
pub async fn write_vectored_all_timeout<T: CancelableAsyncWriteRent>(
    io: &mut T,
    bufs: BytesVec,
    dur: Duration,
) -> (Result<(), WriteError>, BytesVec) {
    write_vectored_all_until(io, bufs, monoio::time::sleep(dur), &mut Canceller::new()).await
}

/// Writes all of `bufs` (as [`write_vectored_all_timeout`]) until `stop` resolves, through
/// `canceller`.
pub async fn write_vectored_all_until<T: CancelableAsyncWriteRent, S: Future<Output = ()>>(
    io: &mut T,
    mut bufs: BytesVec,
    stop: S,
    canceller: &mut Canceller,
) -> (Result<(), WriteError>, BytesVec) {
    let total = bufs.rewind();
    let mut written = 0;
    let mut stop = pin!(stop);
    while written < total {
        let write = io.cancelable_writev(bufs, canceller.handle());
        let ((res, returned), timed_out) = until_deadline(write, stop.as_mut(), canceller).await;
        bufs = returned;
        if let Err(e) = after_write(res, timed_out, &mut written, total) {
            return (Err(e), bufs);
        }
        // Only a short write needs the iovecs redone (a buffer written whole keeps them,
        // describing all of it again for a next write).
        if written < total {
            bufs.set_consumed(written);
        }
    }
    (Ok(()), bufs)
}

/// Polls `op` until it completes (`Some`) or `stop` resolves first (`None`). The operation is
/// polled before `stop`, so one that is ready when `stop` fires counts as done. Given an
/// operation by value, `None` drops it unfinished: only for operations that may be dropped (see
/// the [module docs](self)); [`until_deadline`] passes its operation by reference and cancels it.
async fn unless_stopped<F: Future, S: Future<Output = ()>>(
    op: F,
    mut stop: Pin<&mut S>,
) -> Option<F::Output> {
    let mut op = pin!(op);
    poll_fn(|cx| {
        if let Poll::Ready(out) = op.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        stop.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// Writes all of `buf` until `stop` resolves, for a stream that is closed when this fails: each
/// write is a plain operation, dropped when `stop` fires (see the [module docs](self)).
///
/// The buffer comes back unless a write was dropped. On [`WriteError::TimedOut`], `written`
/// counts the bytes of the writes that completed; the dropped one may have sent some more, so
/// the stream must not be written again.
pub async fn write_all_or_drop<T: AsyncWriteRent, B: IoBuf, S: Future<Output = ()>>(
    io: &mut T,
    mut buf: B,
    stop: S,
) -> (Result<(), WriteError>, Option<B>) {
    let total = buf.bytes_init();
    let mut written = 0;
    let mut stop = pin!(stop);
    while written < total {
        let write = io.write(buf.slice(written..total));
        let Some((res, slice)) = unless_stopped(write, stop.as_mut()).await else {
            return (Err(WriteError::TimedOut { written }), None);
        };
        buf = slice.into_inner();
        if let Err(e) = after_write(res, false, &mut written, total) {
            return (Err(e), Some(buf));
        }
    }
    (Ok(()), Some(buf))
}

/// Writes all of `bufs` with `writev` until `stop` resolves, for a stream that is closed when
/// this fails, as [`write_all_or_drop`] does with one buffer.
pub async fn write_vectored_all_or_drop<T: AsyncWriteRent, S: Future<Output = ()>>(
    io: &mut T,
    mut bufs: BytesVec,
    stop: S,
) -> (Result<(), WriteError>, Option<BytesVec>) {
    let total = bufs.rewind();
    let mut written = 0;
    let mut stop = pin!(stop);
    while written < total {
        let Some((res, returned)) = unless_stopped(io.writev(bufs), stop.as_mut()).await else {
            return (Err(WriteError::TimedOut { written }), None);
        };
        bufs = returned;
        if let Err(e) = after_write(res, false, &mut written, total) {
            return (Err(e), Some(bufs));
        }
        if written < total {
            bufs.set_consumed(written);
        }
    }
    (Ok(()), Some(bufs))
}

/// Accepts one connection, waiting at most `dur`; `Ok(None)` on timeout.
///
/// Cancel-safe: a connection the kernel accepted as the deadline fired is returned, not leaked
/// (dropping a plain `accept()` future under io_uring loses such a connection).
pub async fn accept_timeout(
    listener: &TcpListener,
    dur: Duration,
) -> io::Result<Option<(TcpStream, SocketAddr)>> {
    let mut deadline = pin!(monoio::time::sleep(dur));
    let mut canceller = Canceller::new();
    loop {
        let accept = listener.cancelable_accept(canceller.handle());
        let (res, timed_out) = until_deadline(accept, deadline.as_mut(), &mut canceller).await;
        return match res {
            Ok(conn) => Ok(Some(conn)),
            Err(e) if timed_out && is_cancelled(&e) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

/// Most iovecs passed to one `writev` (Linux `IOV_MAX`); the rest go in later calls.
const IOV_MAX: usize = 1024;

/// An owned list of [`Bytes`] written with one `writev`, e.g. `BytesVec::from(vec![head, body])`.
///
/// Empty parts are skipped. It keeps the parts unchanged; what was written is tracked aside.
#[derive(Default)]
pub struct BytesVec {
    parts: Vec<Bytes>,
    /// Describes `parts` from byte `consumed` on; at most `IOV_MAX` entries.
    iovecs: Vec<libc::iovec>,
    consumed: usize,
}

impl BytesVec {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a part.
    pub fn push(&mut self, part: Bytes) {
        // `consumed` never exceeds the earlier parts, and `iovecs` describes all of them unless
        // it is full: describing the new part is all a rebuild would add.
        if !part.is_empty() && self.iovecs.len() < IOV_MAX {
            self.iovecs.push(iovec(&part));
        }
        self.parts.push(part);
    }

    /// Total bytes in all parts.
    pub fn total_len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    /// Whether there are no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(Bytes::is_empty)
    }

    /// The parts.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The parts, unchanged by writing.
    pub fn into_inner(self) -> Vec<Bytes> {
        self.parts
    }

    /// Drops the first `n` bytes (e.g. [`WriteError::written`], to write the rest later).
    ///
    /// # Panics
    /// If `n` exceeds [`total_len`](Self::total_len).
    pub fn advance(&mut self, mut n: usize) {
        assert!(n <= self.total_len(), "advance past the end of a BytesVec");
        self.parts.retain_mut(|part| {
            if n >= part.len() {
                n -= part.len();
                false
            } else {
                *part = Bytes::slice(part, n..);
                n = 0;
                true
            }
        });
        self.set_consumed(0);
    }

    /// Makes the iovecs describe all of the buffers again (a write-all loop starts from the
    /// first byte) and returns their length.
    fn rewind(&mut self) -> usize {
        if self.consumed != 0 {
            self.set_consumed(0);
        }
        self.total_len()
    }

    fn set_consumed(&mut self, consumed: usize) {
        self.consumed = consumed;
        self.rebuild();
    }

    fn rebuild(&mut self) {
        self.iovecs.clear();
        let mut skip = self.consumed;
        for part in &self.parts {
            if self.iovecs.len() == IOV_MAX {
                break;
            }
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            self.iovecs.push(iovec(&part[skip..]));
            skip = 0;
        }
    }
}

/// An iovec describing `bytes`.
fn iovec(bytes: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    }
}

impl From<Vec<Bytes>> for BytesVec {
    fn from(parts: Vec<Bytes>) -> Self {
        let mut v = BytesVec {
            parts,
            iovecs: Vec::new(),
            consumed: 0,
        };
        v.rebuild();
        v
    }
}

impl fmt::Debug for BytesVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BytesVec")
            .field("parts", &self.parts.len())
            .field("total_len", &self.total_len())
            .field("consumed", &self.consumed)
            .finish()
    }
}

// SAFETY: `iovecs` only points into the `Bytes` in `parts`, which this value owns; `Bytes`
// contents never move or change while referenced, and the `iovecs` heap array does not move when
// the value does. Both are only changed through `&mut self`, which the runtime's ownership of
// the value during an operation rules out.
unsafe impl IoVecBuf for BytesVec {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iovecs.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iovecs.len()
    }
}

/// Reads once into the spare capacity of `buf` until `stop` resolves, for a stream that is
/// closed when this times out: a plain read, dropped when `stop` fires (see the
/// [module docs](self)). The buffer comes back unless the read was dropped
/// ([`ReadOutcome::TimedOut`]); the bytes that read may have received go with it.
///
/// As [`read_until`], it reserves [`MIN_READ_SPARE`] when `buf` is full, and an operation that
/// is ready when `stop` fires counts as done.
pub async fn read_or_drop<T: AsyncReadRent, S: Future<Output = ()>>(
    io: &mut T,
    mut buf: BytesMut,
    stop: S,
) -> (ReadOutcome, Option<BytesMut>) {
    if buf.len() == buf.capacity() {
        buf.reserve(MIN_READ_SPARE);
    }
    let mut stop = pin!(stop);
    loop {
        let (begin, end) = (buf.len(), buf.capacity());
        let Some((res, slice)) =
            unless_stopped(io.read(buf.slice_mut(begin..end)), stop.as_mut()).await
        else {
            return (ReadOutcome::TimedOut, None);
        };
        buf = slice.into_inner();
        return match res {
            Ok(n) => (ReadOutcome::Read(n), Some(buf)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => (ReadOutcome::Err(e), Some(buf)),
        };
    }
}

/// Reads once into the spare capacity of `buf` (as [`read_timeout`]) until `stop` resolves,
/// whatever `stop` is: a timer raced with a shutdown signal, for instance. When `stop` fires
/// first the read is cancelled through `canceller` (the stream's read canceller) and awaited,
/// and the outcome is [`ReadOutcome::TimedOut`] unless data won the race.
pub async fn read_until<T: CancelableAsyncReadRent, S: Future<Output = ()>>(
    io: &mut T,
    mut buf: BytesMut,
    stop: S,
    canceller: &mut Canceller,
) -> (ReadOutcome, BytesMut) {
    if buf.len() == buf.capacity() {
        buf.reserve(MIN_READ_SPARE);
    }
    let mut stop = pin!(stop);
    loop {
        let (begin, end) = (buf.len(), buf.capacity());
        let read = io.cancelable_read(buf.slice_mut(begin..end), canceller.handle());
        let ((res, slice), stopped) = until_deadline(read, stop.as_mut(), canceller).await;
        buf = slice.into_inner();
        return match res {
            Ok(n) => (ReadOutcome::Read(n), buf),
            Err(e) if stopped && is_cancelled(&e) => (ReadOutcome::TimedOut, buf),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => (ReadOutcome::Err(e), buf),
        };
    }
}
