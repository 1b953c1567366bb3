//! Streaming translation for one request: a provider's SSE bytes in, a client format's SSE
//! bytes out, through the canonical events.
//!
//! The translator holds its output back until the first content token (text or a tool call)
//! so that, until then, the engine can drop it and fail over to another deployment without
//! the client seeing anything: [`StreamTranslator::committed`] says whether that point has
//! passed. After it, a failure must be shown to the client: [`StreamTranslator::fail`]
//! renders the ingress format's error event (never a clean end).

use bytes::Bytes;

use crate::canonical::{FinishReason, StreamEvent};
use crate::egress::{Deployment, StreamDecoder};
use crate::error::LlmError;
use crate::ingress::{Ingress, StreamEncoder};
use crate::usage::Usage;

/// Where the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Running; nothing released to the client yet.
    Pending,
    /// Running; content has been released to the client.
    Committed,
    /// The provider's stream failed; the client has not been told yet.
    UpstreamFailed,
    /// The client's stream has ended (properly, or with an error event).
    Closed,
}

/// Translates one streamed answer from a deployment's format to the client's.
#[derive(Debug)]
pub struct StreamTranslator {
    decoder: StreamDecoder,
    encoder: StreamEncoder,
    events: Vec<StreamEvent>,
    held: Vec<u8>,
    committed: bool,
    upstream_ended: bool,
    client_closed: bool,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
}

impl StreamTranslator {
    /// A translator from `deployment`'s stream to `ingress`. `include_usage` is the client's
    /// wish to see usage; `now_unix` stands in for a creation time the provider omits.
    pub fn new(
        ingress: Ingress,
        deployment: &Deployment,
        include_usage: bool,
        now_unix: u64,
    ) -> StreamTranslator {
        StreamTranslator {
            decoder: deployment.stream_decoder(),
            encoder: ingress.stream_encoder(include_usage, now_unix),
            events: Vec::new(),
            held: Vec::new(),
            committed: false,
            upstream_ended: false,
            client_closed: false,
            usage: None,
            finish: None,
        }
    }

    /// Translates the next piece of the provider's body. `Ok` holds the bytes to send to the
    /// client now (empty while held back). `Err` means the provider's stream failed: when
    /// [`committed`](Self::committed) is false nothing has been sent and the engine may fail
    /// over (see [`LlmError::retryable`]) or answer with [`Ingress::render_error`]; otherwise
    /// it must send [`fail`](Self::fail)'s bytes and close.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Bytes, LlmError> {
        if self.upstream_ended {
            return Ok(Bytes::new());
        }
        self.decoder.feed(bytes, &mut self.events);
        self.pump()
    }

    /// The provider's body ended. Same contract as [`feed`](Self::feed); a body that ended
    /// before the provider's end marker is an error.
    pub fn finish(&mut self) -> Result<Bytes, LlmError> {
        if self.upstream_ended {
            return Ok(Bytes::new());
        }
        self.decoder.finish(&mut self.events);
        self.pump()
    }

    /// Renders `err` as the client format's error event and ends the client's stream, after
    /// any output still held; for failures the engine detects itself (timeouts, resets) as
    /// well as provider errors. Nothing is rendered once the client's stream has ended.
    pub fn fail(&mut self, err: &LlmError) -> Bytes {
        if self.client_closed {
            return Bytes::new();
        }
        let mut out = std::mem::take(&mut self.held);
        self.encoder
            .encode(&StreamEvent::Error(err.clone()), &mut out);
        self.client_closed = true;
        self.upstream_ended = true;
        Bytes::from(out)
    }

    /// Whether content has reached the client (a failover would no longer be invisible).
    pub fn committed(&self) -> bool {
        self.committed
    }

    /// The stream's state.
    pub fn state(&self) -> StreamState {
        if self.client_closed {
            StreamState::Closed
        } else if self.upstream_ended {
            StreamState::UpstreamFailed
        } else if self.committed {
            StreamState::Committed
        } else {
            StreamState::Pending
        }
    }

    /// Usage the provider reported; `None` (unknown) when its stream carried none.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The finish reason, once known.
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.finish.as_ref()
    }

    fn pump(&mut self) -> Result<Bytes, LlmError> {
        let mut events = std::mem::take(&mut self.events);
        let mut failure = None;
        for ev in events.drain(..) {
            if let StreamEvent::Error(e) = ev {
                self.upstream_ended = true;
                failure = Some(e);
                break;
            }
            match &ev {
                StreamEvent::Usage(u) => self.usage = Some(*u),
                StreamEvent::Finish(r) => self.finish = Some(r.clone()),
                StreamEvent::Done => {
                    self.upstream_ended = true;
                    self.client_closed = true;
                }
                _ => {}
            }
            if ev.is_content() {
                self.committed = true;
            }
            self.encoder.encode(&ev, &mut self.held);
        }
        self.events = events;
        if let Some(e) = failure {
            // Before the first content token nothing was sent: drop what is held so that a
            // failover starts clean. After it, `fail` sends what is held, then the error.
            if !self.committed {
                self.held.clear();
            }
            return Err(e);
        }
        if self.committed || self.client_closed {
            Ok(Bytes::from(std::mem::take(&mut self.held)))
        } else {
            Ok(Bytes::new())
        }
    }
}
