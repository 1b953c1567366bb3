//! Headwater's HTTP/1.1 codec, sans-IO: no sockets, no runtime.
//!
//! - [`head`] parses request and response heads with httparse into header *indices* over one
//!   frozen buffer, so names and values are zero-copy slices, exposed as `http` crate types.
//! - [`framing`] decides how a message body is delimited (RFC 9112 §6) and rejects ambiguous
//!   framing, the root of request smuggling.
//! - [`body`] and [`chunked`] decode bodies incrementally, yielding bytes as they arrive.
//! - [`encode`] writes heads, applies a proxy's hop-by-hop and forwarding-header rules, and
//!   encodes chunked bodies.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod body;
pub mod chunked;
pub mod encode;
pub mod error;
pub mod framing;
pub mod head;
mod syntax;

pub use body::BodyDecoder;
pub use chunked::{ChunkedDecoder, Decoded};
pub use encode::{
    encode_proxy_request, encode_proxy_response, encode_request_head, encode_response_head,
    ClientConnection, Forwarding, RequestEdits, ResponseEdits, XffMode, CONTINUE_100,
};
pub use error::{Error, ErrorKind};
pub use framing::{request_framing, response_framing, BodyKind};
pub use head::{Limits, RequestHead, RequestParser, ResponseHead, ResponseParser, TargetForm};
