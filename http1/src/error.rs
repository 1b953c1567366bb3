//! Codec errors: what was wrong, and which status a server answers with.
//!
//! Errors are allocation-free (`&'static str` details) because they sit on the hot path of a
//! proxy under attack: a flood of malformed requests must not become a flood of allocations.

use core::fmt;
use http::StatusCode;

/// The class of a codec error. Each maps to the status a server sends back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Syntactically invalid message: bad request line, header, token or control byte. 400.
    Malformed,
    /// The head (request line + headers) exceeds the configured byte limit. 431.
    HeadTooLarge,
    /// More header fields than the configured limit. 431.
    TooManyHeaders,
    /// The request-target exceeds the configured length. 414.
    UriTooLong,
    /// A well-formed HTTP version that is not 1.0 or 1.1. 505.
    VersionNotSupported,
    /// An `Expect` value other than `100-continue`. 417.
    ExpectationFailed,
    /// Ambiguous or invalid message framing (Content-Length / Transfer-Encoding). 400.
    BadFraming,
    /// Invalid chunked body encoding. 400.
    BadChunk,
    /// The peer closed the connection in the middle of a message.
    UnexpectedEof,
}

/// A codec error: its kind and a human-readable detail naming the offending part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    detail: &'static str,
}

impl Error {
    /// Builds an error of `kind` with a static `detail`.
    pub const fn new(kind: ErrorKind, detail: &'static str) -> Self {
        Error { kind, detail }
    }

    /// The class of the error.
    pub const fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What exactly was wrong, e.g. "conflicting Content-Length values".
    pub const fn detail(&self) -> &'static str {
        self.detail
    }

    /// The status a server answers this error with when it is found in a request.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::Malformed | ErrorKind::BadFraming | ErrorKind::BadChunk => {
                StatusCode::BAD_REQUEST
            }
            ErrorKind::HeadTooLarge | ErrorKind::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            ErrorKind::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorKind::VersionNotSupported => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            ErrorKind::ExpectationFailed => StatusCode::EXPECTATION_FAILED,
            ErrorKind::UnexpectedEof => StatusCode::BAD_REQUEST,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.detail, self.status().as_u16())
    }
}

impl std::error::Error for Error {}

/// Shorthand constructors used throughout the codec.
pub(crate) const fn malformed(detail: &'static str) -> Error {
    Error::new(ErrorKind::Malformed, detail)
}
pub(crate) const fn bad_framing(detail: &'static str) -> Error {
    Error::new(ErrorKind::BadFraming, detail)
}
pub(crate) const fn bad_chunk(detail: &'static str) -> Error {
    Error::new(ErrorKind::BadChunk, detail)
}
