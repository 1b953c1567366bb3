//! Message body framing (RFC 9112 §6): how a body is delimited, and how a proxy re-frames a body
//! it relays to a peer that speaks a different version.

use http::Version;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all (no framing header on a request; HEAD, 1xx, 204, 304 responses).
    None,
    /// Exactly this many bytes (`Content-Length`, possibly 0).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

impl BodyKind {
    /// Whether any body bytes can follow the head.
    pub fn has_body(self) -> bool {
        !matches!(self, BodyKind::None | BodyKind::Length(0))
    }

    /// Whether the connection can carry another message after this body.
    pub fn reusable(self) -> bool {
        !matches!(self, BodyKind::Close)
    }
}

/// The framing a proxy uses to send a response body with upstream framing `upstream` to a client
/// speaking `client`. Lengths are kept; a chunked or close-delimited body goes to an HTTP/1.1
/// client chunked (so its connection stays reusable) and to an HTTP/1.0 client close-delimited
/// (1.0 has no chunked coding).
pub fn response_framing(upstream: BodyKind, client: Version) -> BodyKind {
    match upstream {
        BodyKind::None | BodyKind::Length(_) => upstream,
        BodyKind::Chunked | BodyKind::Close => {
            if client == Version::HTTP_11 {
                BodyKind::Chunked
            } else {
                BodyKind::Close
            }
        }
    }
}

/// The framing a proxy uses to send a request body upstream (always HTTP/1.1): unchanged.
/// Requests are never close-delimited.
pub fn request_framing(client: BodyKind) -> BodyKind {
    match client {
        BodyKind::Close => BodyKind::Chunked,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reframing_table() {
        use BodyKind::*;
        let h11 = Version::HTTP_11;
        let h10 = Version::HTTP_10;
        for (up, client, want) in [
            (None, h11, None),
            (Length(5), h11, Length(5)),
            (Length(5), h10, Length(5)),
            (Chunked, h11, Chunked),
            (Chunked, h10, Close),
            (Close, h11, Chunked),
            (Close, h10, Close),
        ] {
            assert_eq!(response_framing(up, client), want, "{up:?} to {client:?}");
        }
        assert_eq!(request_framing(None), None);
        assert_eq!(request_framing(Length(0)), Length(0));
        assert_eq!(request_framing(Chunked), Chunked);
        assert_eq!(request_framing(Close), Chunked);
        assert!(!Length(0).has_body() && Length(1).has_body() && !None.has_body());
        assert!(!Close.reusable() && Chunked.reusable());
    }
}
