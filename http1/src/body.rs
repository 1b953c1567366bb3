//! Streaming body decoders for every framing: they yield body bytes as they arrive (split off
//! the read buffer without copying) and never hold a whole body.

use bytes::BytesMut;

use crate::chunked::{ChunkedDecoder, Decoded};
use crate::error::{Error, ErrorKind};
use crate::framing::BodyKind;

/// Decodes one message body from a connection's read buffer.
#[derive(Debug, Clone)]
pub enum BodyDecoder {
    /// A fixed number of bytes remain.
    Length {
        /// Bytes still to come.
        remaining: u64,
    },
    /// Chunked transfer coding.
    Chunked(ChunkedDecoder),
    /// Everything until the peer closes; `done` once it has.
    Close {
        /// The peer has closed.
        done: bool,
    },
}

impl BodyDecoder {
    /// A decoder for a body framed as `kind`.
    pub fn new(kind: BodyKind) -> Self {
        match kind {
            BodyKind::None => BodyDecoder::Length { remaining: 0 },
            BodyKind::Length(n) => BodyDecoder::Length { remaining: n },
            BodyKind::Chunked => BodyDecoder::Chunked(ChunkedDecoder::new()),
            BodyKind::Close => BodyDecoder::Close { done: false },
        }
    }

    /// Takes the next piece of body from `buf`: `Some(Data)` with bytes, `Some(Trailers)`,
    /// `Some(Done)` at the end (bytes after the body stay in `buf`), or `None` when `buf` holds
    /// nothing usable yet.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, Error> {
        match self {
            BodyDecoder::Length { remaining } => {
                if *remaining == 0 {
                    return Ok(Some(Decoded::Done));
                }
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = (*remaining).min(buf.len() as u64) as usize;
                *remaining -= n as u64;
                Ok(Some(Decoded::Data(buf.split_to(n).freeze())))
            }
            BodyDecoder::Chunked(d) => d.decode(buf),
            BodyDecoder::Close { done } => {
                if !buf.is_empty() {
                    Ok(Some(Decoded::Data(buf.split().freeze())))
                } else if *done {
                    Ok(Some(Decoded::Done))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// The peer closed the connection. For a close-delimited body that is its end; for any
    /// other framing still in progress it is an error (a truncated message must never be
    /// passed off as complete).
    pub fn eof(&mut self) -> Result<(), Error> {
        match self {
            BodyDecoder::Close { done } => {
                *done = true;
                Ok(())
            }
            _ if self.is_done() => Ok(()),
            _ => Err(Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed before the body ended",
            )),
        }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        match self {
            BodyDecoder::Length { remaining } => *remaining == 0,
            BodyDecoder::Chunked(d) => d.is_done(),
            BodyDecoder::Close { done } => *done,
        }
    }

    /// A lower bound of the bytes still expected, when known (for sizing reads).
    pub fn remaining_hint(&self) -> Option<u64> {
        match self {
            BodyDecoder::Length { remaining } => Some(*remaining),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn drain(dec: &mut BodyDecoder, buf: &mut BytesMut) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        loop {
            match dec.decode(buf).unwrap() {
                Some(Decoded::Data(b)) => out.extend_from_slice(&b),
                Some(Decoded::Trailers(_)) => {}
                Some(Decoded::Done) => return (out, true),
                None => return (out, false),
            }
        }
    }

    #[test]
    fn length_body_stops_at_its_end_and_leaves_the_next_request() {
        let mut dec = BodyDecoder::new(BodyKind::Length(5));
        let mut buf = BytesMut::from(&b"hel"[..]);
        assert_eq!(drain(&mut dec, &mut buf), (b"hel".to_vec(), false));
        buf.extend_from_slice(b"loGET / HTTP/1.1\r\n");
        assert_eq!(drain(&mut dec, &mut buf), (b"lo".to_vec(), true));
        assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn none_and_zero_length_are_done_at_once() {
        for kind in [BodyKind::None, BodyKind::Length(0)] {
            let mut dec = BodyDecoder::new(kind);
            let mut buf = BytesMut::from(&b"next"[..]);
            assert_eq!(dec.decode(&mut buf).unwrap(), Some(Decoded::Done));
            assert_eq!(&buf[..], b"next");
        }
    }

    #[test]
    fn close_delimited_ends_only_at_eof() {
        let mut dec = BodyDecoder::new(BodyKind::Close);
        let mut buf = BytesMut::from(&b"abc"[..]);
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Some(Decoded::Data(Bytes::from_static(b"abc")))
        );
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        dec.eof().unwrap();
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(Decoded::Done));
    }

    #[test]
    fn truncated_bodies_are_errors_at_eof() {
        let mut dec = BodyDecoder::new(BodyKind::Length(10));
        let mut buf = BytesMut::from(&b"abc"[..]);
        drain(&mut dec, &mut buf);
        assert_eq!(dec.eof().unwrap_err().kind(), ErrorKind::UnexpectedEof);
        let mut dec = BodyDecoder::new(BodyKind::Chunked);
        let mut buf = BytesMut::from(&b"5\r\nab"[..]);
        drain(&mut dec, &mut buf);
        assert_eq!(dec.eof().unwrap_err().kind(), ErrorKind::UnexpectedEof);
    }
}
