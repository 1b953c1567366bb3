//! One request on an LLM route (`llm = true`), from its head to the last byte of the answer.
//!
//! This module owns the I/O of the LLM gateway's request path; every decision is taken by
//! `headwater_llm` (sans-IO) and this code carries it out:
//!
//! 1. The endpoint is chosen by method and path: `POST …/chat/completions` (OpenAI ingress),
//!    `POST …/messages` (Anthropic ingress), `POST …/embeddings`, `GET …/models`. Anything else
//!    is a 404 (405 for a known path with the wrong method) in the OpenAI error format.
//! 2. The body is read whole (it is a JSON document the gateway must parse), up to
//!    `[llm.upstream] max_request_body` (413 above), honouring `Expect: 100-continue`.
//! 3. The client's virtual key is authenticated, its model permission, budget and RPM/TPM
//!    checked and reserved ([`super::LlmNode`]).
//! 4. The router's failover plan is followed: each attempt goes to one deployment through the
//!    shard's [`ProviderClient`]; its result is reported back to the plan, which decides
//!    whether to try another deployment, fall back to another model, wait for a
//!    `Retry-After`, or give up with the error to show.
//! 5. A streamed answer goes through a [`StreamTranslator`]: nothing is sent to the client
//!    before the first content token, so a failure until then fails over invisibly; after it,
//!    a failure ends the client's stream with an explicit error event and a proper end of the
//!    chunked body, never a silent close.
//! 6. Usage and cost are charged to the key, summed in the ledger for `/metrics`, and returned
//!    as a JSON record for the access log.
//!
//! Errors the client sees are in the format of the API it spoke (OpenAI or Anthropic), with
//! the matching status and `Retry-After` when the gateway knows when to come back.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use headwater_http1::chunked::encode_chunk;
use headwater_http1::encode::put_u64;
use headwater_http1::{
    encode_response_head, BodyDecoder, BodyKind, ClientConnection, Decoded, RequestHead,
    CONTINUE_100,
};
use headwater_llm::embeddings::{parse_openai_request, render_openai_response};
use headwater_llm::keys::{authenticate, presented_key, Reservation};
use headwater_llm::EmbeddingRequest;
use headwater_llm::{
    estimate_tokens, Attempt, AttemptResult, ChatRequest, ErrorKind, Ingress, KeyError, KeySpec,
    KeyStore, LlmError, Origin, RequestOutcome, RequestRecord, Step, StreamTranslator, Usage,
};
use http::{Method, StatusCode, Version};
use monoio::net::TcpStream;

use super::client::{ClientSettings, Joined, ProviderClient, ProviderResponse};
use super::state::LlmRuntime;
use super::unix_now;
use crate::io::{read_timeout, write_all_timeout, ReadOutcome};
use crate::proxy::{Generation, Shard};

/// How long the rest of a provider's stream body is waited for after the answer ended.
const DRAIN_AFTER_STREAM: Duration = Duration::from_secs(1);

/// Who owns the models `GET /v1/models` lists.
const OWNED_BY: &str = "headwater";

/// What the connection needs to know after an LLM request.
pub(crate) struct Served {
    /// Whether the client connection can carry another request.
    pub keep_alive: bool,
    /// The status sent (0 when nothing could be sent).
    pub status: u16,
    /// Request body bytes read from the client.
    pub body_in: u64,
    /// Response bytes written to the client.
    pub bytes_out: u64,
    /// Attempts beyond the first.
    pub retries: u32,
    /// The accounting record (JSON), for the access log; `None` for models/404 answers.
    pub record: Option<String>,
}

/// The endpoints of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat(Ingress),
    Embeddings,
    Models,
}

fn endpoint(path: &[u8]) -> Option<(Endpoint, Method)> {
    let path = std::str::from_utf8(path).ok()?;
    if let Some(ingress) = Ingress::for_chat_path(path) {
        return Some((Endpoint::Chat(ingress), Method::POST));
    }
    let path = path.trim_end_matches('/');
    if path.ends_with("/embeddings") {
        Some((Endpoint::Embeddings, Method::POST))
    } else if path.ends_with("/models") {
        Some((Endpoint::Models, Method::GET))
    } else {
        None
    }
}

/// The response under construction toward the client.
struct Reply<'a> {
    client: &'a mut TcpStream,
    wbuf: &'a mut BytesMut,
    version: Version,
    /// The client wants (and may have) another request on this connection.
    keep: bool,
    write_timeout: Duration,
    status: u16,
    bytes_out: u64,
    /// The stream's head was written (chunked body under way).
    streaming: bool,
    /// A write failed: the client is gone.
    broken: bool,
}

impl Reply<'_> {
    fn connection(&self) -> ClientConnection {
        if self.keep {
            ClientConnection::KeepAlive
        } else {
            ClientConnection::Close
        }
    }

    async fn flush(&mut self) -> bool {
        if self.broken {
            return false;
        }
        if self.wbuf.is_empty() {
            return true;
        }
        let data = std::mem::take(self.wbuf);
        let n = data.len() as u64;
        let (res, mut data) = write_all_timeout(self.client, data, self.write_timeout).await;
        data.clear();
        *self.wbuf = data;
        match res {
            Ok(()) => {
                self.bytes_out += n;
                true
            }
            Err(e) => {
                self.bytes_out += e.written() as u64;
                self.broken = true;
                false
            }
        }
    }

    /// A whole JSON answer.
    async fn json(&mut self, status: u16, body: &[u8], retry_after: Option<u64>) -> bool {
        let status_code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut ra = BytesMut::new();
        if let Some(secs) = retry_after {
            put_u64(&mut ra, secs);
        }
        let headers: [(&str, &[u8]); 2] =
            [("content-type", b"application/json"), ("retry-after", &ra)];
        let headers = if retry_after.is_some() {
            &headers[..]
        } else {
            &headers[..1]
        };
        self.wbuf.clear();
        encode_response_head(
            status_code,
            headers,
            BodyKind::Length(body.len() as u64),
            self.version,
            self.connection(),
            self.wbuf,
        );
        self.wbuf.put_slice(body);
        self.status = status;
        self.flush().await
    }

    /// `err` in the client's API format (`status` instead of the format's own when given),
    /// with `Retry-After` when the error says when to come back.
    async fn error(&mut self, ingress: Ingress, err: &LlmError, status: Option<u16>) -> bool {
        let r = ingress.render_error(err);
        let retry_after = err
            .retry_after
            .map(|ra| ra.delay_at(unix_now()).as_secs().max(1));
        self.json(status.unwrap_or(r.status), &r.body, retry_after)
            .await
    }

    /// A refused key in the client's API format, with `Retry-After` for a rate limit.
    async fn key_error(&mut self, ingress: Ingress, e: &KeyError) -> bool {
        let r = e.render(ingress);
        let retry_after = e.retry_after().map(|d| d.as_secs().max(1));
        self.json(r.status, &r.body, retry_after).await
    }

    /// Starts a server-sent-events answer.
    async fn start_stream(&mut self) -> bool {
        self.wbuf.clear();
        let framing = if self.version == Version::HTTP_11 {
            BodyKind::Chunked
        } else {
            // HTTP/1.0 has no chunked coding: the end of the stream is the end of the
            // connection.
            self.keep = false;
            BodyKind::Close
        };
        encode_response_head(
            StatusCode::OK,
            &[
                ("content-type", b"text/event-stream"),
                ("cache-control", b"no-cache"),
            ],
            framing,
            self.version,
            self.connection(),
            self.wbuf,
        );
        self.status = 200;
        self.streaming = true;
        self.flush().await
    }

    /// Sends stream bytes (the head must have been sent).
    async fn stream(&mut self, data: &[u8]) -> bool {
        if data.is_empty() {
            return !self.broken;
        }
        if self.version == Version::HTTP_11 {
            encode_chunk(data, self.wbuf);
        } else {
            self.wbuf.put_slice(data);
        }
        self.flush().await
    }

    /// Ends the stream's body.
    async fn end_stream(&mut self) -> bool {
        if self.version == Version::HTTP_11 {
            self.wbuf.put_slice(b"0\r\n\r\n");
        }
        self.flush().await
    }
}

/// Reads the request body whole into a buffer, or says why not.
enum BodyError {
    /// Larger than the limit: 413, and the connection closes (the rest is unread).
    TooLarge,
    /// Malformed framing: 400, close.
    Malformed,
    /// The client went quiet or away: nothing to answer.
    Gone,
}

async fn read_body(
    client: &mut TcpStream,
    rbuf: &mut BytesMut,
    head: &RequestHead,
    limit: u64,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    let kind = head.body_kind();
    if let BodyKind::Length(n) = kind {
        if n > limit {
            return Err(BodyError::TooLarge);
        }
    }
    if !kind.has_body() {
        return Ok(Bytes::new());
    }
    if head.expects_continue() {
        let (res, _) = write_all_timeout(client, CONTINUE_100, timeout).await;
        if res.is_err() {
            return Err(BodyError::Gone);
        }
    }
    let mut decoder = BodyDecoder::new(kind);
    let mut body = Joined::default();
    loop {
        loop {
            match decoder.decode(rbuf) {
                Ok(Some(Decoded::Data(d))) => {
                    if body.len() + d.len() as u64 > limit {
                        return Err(BodyError::TooLarge);
                    }
                    body.push(d);
                }
                Ok(Some(Decoded::Trailers(_))) => {}
                Ok(Some(Decoded::Done)) => return Ok(body.into_bytes()),
                Ok(None) => break,
                Err(_) => return Err(BodyError::Malformed),
            }
        }
        if rbuf.capacity() - rbuf.len() < 8 * 1024 {
            rbuf.reserve(16 * 1024);
        }
        let buf = std::mem::take(rbuf);
        let (outcome, buf) = read_timeout(client, buf, timeout).await;
        *rbuf = buf;
        match outcome {
            ReadOutcome::Read(0) | ReadOutcome::TimedOut | ReadOutcome::Err(_) => {
                return Err(BodyError::Gone)
            }
            ReadOutcome::Read(_) => {}
        }
    }
}

/// Serves one request on an LLM route. `rbuf` holds what was read after the head.
pub(crate) async fn serve(
    shard: &Rc<Shard>,
    generation: &Generation,
    client: &mut TcpStream,
    rbuf: &mut BytesMut,
    wbuf: &mut BytesMut,
    head: &RequestHead,
) -> Served {
    let config = &generation.config;
    let runtime = generation
        .llm
        .as_ref()
        .expect("a config with an llm route has an [llm] section");
    let mut reply = Reply {
        client,
        wbuf,
        version: head.version(),
        keep: head.keep_alive() && !shard.drain.fired(),
        write_timeout: config.server.timeouts.client_body,
        status: 0,
        bytes_out: 0,
        streaming: false,
        broken: false,
    };
    let mut served = Served {
        keep_alive: false,
        status: 0,
        body_in: 0,
        bytes_out: 0,
        retries: 0,
        record: None,
    };

    let route = endpoint(head.path());
    let error_ingress = match route {
        Some((Endpoint::Chat(i), _)) => i,
        _ => Ingress::OpenAi,
    };
    let body_unread = head.body_kind().has_body();

    let (endpoint, method) = match route {
        Some(r) => r,
        None => {
            let err = LlmError::new(
                ErrorKind::NotFound,
                Origin::Gateway,
                format!(
                    "unknown endpoint `{}`; this route serves POST /v1/chat/completions, POST /v1/messages, POST /v1/embeddings and GET /v1/models",
                    String::from_utf8_lossy(head.path())
                ),
            );
            reply.keep &= !body_unread;
            reply.error(error_ingress, &err, None).await;
            return finish(served, &reply);
        }
    };
    if head.method() != method {
        let err = LlmError::new(
            ErrorKind::InvalidRequest,
            Origin::Client,
            format!(
                "`{}` is not allowed on `{}`; use {method}",
                head.method(),
                String::from_utf8_lossy(head.path())
            ),
        );
        reply.keep &= !body_unread;
        reply.error(error_ingress, &err, Some(405)).await;
        return finish(served, &reply);
    }

    let catalogue = &*runtime.section.catalogue;
    let max_body = catalogue.upstream.max_request_body;
    let body = match read_body(
        reply.client,
        rbuf,
        head,
        max_body,
        config.server.timeouts.client_body,
    )
    .await
    {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            let err = LlmError::new(
                ErrorKind::RequestTooLarge,
                Origin::Client,
                format!("the request body is larger than the gateway's limit of {max_body} bytes"),
            );
            reply.keep = false;
            reply.error(error_ingress, &err, None).await;
            return finish(served, &reply);
        }
        Err(BodyError::Malformed) => {
            let err = LlmError::client("body", "the request body's framing is malformed");
            reply.keep = false;
            reply.error(error_ingress, &err, None).await;
            return finish(served, &reply);
        }
        Err(BodyError::Gone) => {
            reply.keep = false;
            return finish(served, &reply);
        }
    };
    served.body_in = body.len() as u64;

    // Authentication first: even the model list is for key holders when keys are configured.
    let key = match authenticate(catalogue.keys(), presented_key(|n| head.header(n))) {
        Ok(k) => k,
        Err(e) => {
            reply.key_error(error_ingress, &e).await;
            served.record = log_record(shard, &RequestRecord::rejected("", None, e.code()));
            return finish(served, &reply);
        }
    };

    match endpoint {
        Endpoint::Models => {
            let cards: Vec<_> = catalogue
                .model_cards(0, OWNED_BY)
                .into_iter()
                .filter(|c| {
                    key.is_none_or(|k| catalogue.model_id(&c.id).is_some_and(|m| k.allows(m)))
                })
                .collect();
            let ingress = if head.header("anthropic-version").is_some() {
                Ingress::Anthropic
            } else {
                Ingress::OpenAi
            };
            let body = ingress.render_models(&cards);
            reply.json(200, &body, None).await;
            finish(served, &reply)
        }
        Endpoint::Chat(ingress) => {
            let job = match ingress.parse_request(&body) {
                Ok(req) => Job::Chat { req, ingress },
                Err(e) => return reject(shard, served, reply, ingress, &e, key).await,
            };
            let record = run(shard, runtime, &mut reply, &job, key, &mut served).await;
            served.record = log_record(shard, &record);
            finish(served, &reply)
        }
        Endpoint::Embeddings => {
            let job = match parse_openai_request(&body) {
                Ok(req) => Job::Embeddings {
                    req,
                    tokens: (body.len() as u64 / 4).max(1),
                },
                Err(e) => return reject(shard, served, reply, Ingress::OpenAi, &e, key).await,
            };
            let record = run(shard, runtime, &mut reply, &job, key, &mut served).await;
            served.record = log_record(shard, &record);
            finish(served, &reply)
        }
    }
}

/// The accounting record for the access log, as JSON; `None` when this shard does not log
/// (nobody would read it).
fn log_record(shard: &Shard, record: &RequestRecord) -> Option<String> {
    shard.log.borrow().enabled().then(|| record.to_json())
}

/// Answers a request body that does not parse.
async fn reject(
    shard: &Shard,
    mut served: Served,
    mut reply: Reply<'_>,
    ingress: Ingress,
    err: &LlmError,
    key: Option<&KeySpec>,
) -> Served {
    reply.error(ingress, err, None).await;
    let key_name = key.map(|k| k.name.as_str());
    served.record = log_record(
        shard,
        &RequestRecord::rejected("", key_name, "invalid_request"),
    );
    finish(served, &reply)
}

fn finish(mut served: Served, reply: &Reply<'_>) -> Served {
    served.status = reply.status;
    served.bytes_out = reply.bytes_out;
    served.keep_alive = reply.keep && !reply.broken && reply.status != 0;
    served
}

/// The shard's provider client for `runtime`'s section (a reload with a new section gets a
/// new client: its TLS settings may differ).
fn provider_client(shard: &Rc<Shard>, runtime: &Arc<LlmRuntime>) -> Rc<ProviderClient> {
    let mut slot = shard.llm_client.borrow_mut();
    if let Some((owner, client)) = slot.as_ref() {
        if Arc::ptr_eq(owner, runtime) {
            return client.clone();
        }
    }
    let up = &runtime.section.catalogue.upstream;
    let client = Rc::new(ProviderClient::new(
        ClientSettings {
            connect_timeout: up.connect_timeout,
            max_idle_per_host: up.max_idle_per_host,
            ..ClientSettings::default()
        },
        runtime.section.tls.clone(),
    ));
    *slot = Some((runtime.clone(), client.clone()));
    // Idle provider connections past their idle timeout are closed even when their host is
    // not called again; the task ends when the client is replaced (reload) and dropped.
    let weak = Rc::downgrade(&client);
    monoio::spawn(async move {
        loop {
            monoio::time::sleep(Duration::from_secs(5)).await;
            match weak.upgrade() {
                Some(client) => {
                    client.sweep();
                }
                None => break,
            }
        }
    });
    client
}

/// Checks the key's permission, budget and rate for `model` and reserves `tokens`.
fn admit_key(
    shard: &Rc<Shard>,
    runtime: &LlmRuntime,
    key: Option<&KeySpec>,
    model: headwater_llm::ModelId,
    tokens: u64,
) -> Result<Option<Reservation>, headwater_llm::KeyError> {
    let Some(key) = key else { return Ok(None) };
    key.check_model(&runtime.section.catalogue, model)?;
    shard
        .shared
        .llm
        .keys()
        .check_and_reserve(key, tokens, Instant::now())
        .map(Some)
}

/// Charges the key, sums the record in the ledger.
fn account(
    shard: &Rc<Shard>,
    key: Option<&KeySpec>,
    reservation: Option<Reservation>,
    record: &RequestRecord,
) {
    if let (Some(key), Some(res)) = (key, reservation) {
        shard.shared.llm.keys().record_usage(
            key,
            res,
            record.usage.map(|u| u.total_tokens()),
            record.cost_usd,
            Instant::now(),
        );
    }
    shard.shared.llm.ledger().record(record);
}

/// How one attempt went, seen from the request.
enum Tried {
    /// The client has its answer (whole, or a stream that ended properly).
    Answered {
        usage: Option<Usage>,
        ttft: Duration,
        /// Output tokens per second after the first token (streams with usage only).
        tokens_per_second: Option<f64>,
    },
    /// The attempt failed; `committed` when part of the answer reached the client.
    Failed { error: LlmError, committed: bool },
    /// The client went away while the answer was being written.
    ClientGone,
}

impl Tried {
    fn failed(error: LlmError) -> Tried {
        Tried::Failed {
            error,
            committed: false,
        }
    }
}

/// What the client asked for, parsed. One per request, never moved after it is built: the
/// size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Job {
    Chat { req: ChatRequest, ingress: Ingress },
    Embeddings { req: EmbeddingRequest, tokens: u64 },
}

impl Job {
    /// The format errors are rendered in.
    fn ingress(&self) -> Ingress {
        match self {
            Job::Chat { ingress, .. } => *ingress,
            Job::Embeddings { .. } => Ingress::OpenAi,
        }
    }

    fn model(&self) -> &str {
        match self {
            Job::Chat { req, .. } => &req.model,
            Job::Embeddings { req, .. } => &req.model,
        }
    }

    /// The estimate reserved against rate limits before the provider says.
    fn tokens(&self) -> u64 {
        match self {
            Job::Chat { req, .. } => estimate_tokens(req),
            Job::Embeddings { tokens, .. } => *tokens,
        }
    }

    fn stream(&self) -> bool {
        matches!(self, Job::Chat { req, .. } if req.stream)
    }
}

/// Carries out the failover plan for `job`: model lookup, key admission, then one attempt
/// after another until one answers or the plan gives up; returns the accounting record.
async fn run(
    shard: &Rc<Shard>,
    runtime: &Arc<LlmRuntime>,
    reply: &mut Reply<'_>,
    job: &Job,
    key: Option<&KeySpec>,
    served: &mut Served,
) -> RequestRecord {
    let started = Instant::now();
    let ingress = job.ingress();
    let catalogue = &*runtime.section.catalogue;
    let key_name = key.map(|k| k.name.as_str());
    let Some(model) = catalogue.model_id(job.model()) else {
        let mut e = LlmError::new(
            ErrorKind::NotFound,
            Origin::Gateway,
            format!("the model `{}` does not exist", job.model()),
        );
        e.param = Some("model".to_owned());
        reply.error(ingress, &e, None).await;
        return RequestRecord::rejected(job.model(), key_name, "model_not_found");
    };
    let tokens = job.tokens();
    let reservation = match admit_key(shard, runtime, key, model, tokens) {
        Ok(r) => r,
        Err(e) => {
            reply.key_error(ingress, &e).await;
            return RequestRecord::rejected(job.model(), key_name, e.code());
        }
    };

    let client = provider_client(shard, runtime);
    // The router is locked once per step (the plan, then each report with the next step),
    // and never across an `.await`.
    let (mut plan, mut step) = {
        let mut router = runtime.router();
        let mut plan = router.plan(model, tokens, started, unix_now());
        let step = plan.next(&mut router, Instant::now());
        (plan, step)
    };
    let mut last: Option<Attempt> = None;
    let mut first_token: Option<Duration> = None;
    let mut usage = None;
    let outcome = loop {
        let attempt = match step {
            Step::Try(a) => a,
            Step::Done => break RequestOutcome::Success,
            Step::GiveUp(err) => {
                if !reply.streaming {
                    reply.error(ingress, &err, None).await;
                }
                break RequestOutcome::Failed(err.kind);
            }
        };
        if !attempt.wait.is_zero() {
            monoio::time::sleep(attempt.wait).await;
        }
        served.retries = plan.attempts_made().saturating_sub(1);
        let spec = catalogue.deployment(attempt.deployment);
        let tried = attempt_once(
            job,
            spec,
            &client,
            &catalogue.upstream,
            reply,
            started,
            &mut first_token,
        )
        .await;
        let result = match tried {
            Tried::Answered {
                usage: u,
                ttft,
                tokens_per_second,
            } => {
                usage = u;
                AttemptResult::Success {
                    ttft,
                    tokens_per_second,
                    usage: u,
                }
            }
            Tried::Failed { error, committed } => AttemptResult::Failure { error, committed },
            Tried::ClientGone => AttemptResult::Cancelled,
        };
        let cancelled = matches!(result, AttemptResult::Cancelled);
        // Released at the end of this iteration, before anything is awaited.
        let mut router = runtime.router();
        plan.report(&mut router, &attempt, result, Instant::now());
        last = Some(attempt);
        if cancelled {
            reply.keep = false;
            break RequestOutcome::Cancelled;
        }
        step = plan.next(&mut router, Instant::now());
    };
    let mut record =
        RequestRecord::from_plan(catalogue, &plan, last.as_ref(), key_name, usage, outcome);
    record.latency = started.elapsed();
    record.ttft = first_token;
    record.stream = job.stream();
    account(shard, key, reservation, &record);
    record
}

/// One attempt of `job` on deployment `spec`: the provider call, and the answer relayed to
/// the client when it succeeds.
async fn attempt_once(
    job: &Job,
    spec: &headwater_llm::DeploymentSpec,
    client: &ProviderClient,
    upstream: &headwater_llm::UpstreamPolicy,
    reply: &mut Reply<'_>,
    started: Instant,
    first_token: &mut Option<Duration>,
) -> Tried {
    let request = match job {
        Job::Chat { req, .. } => spec.deployment.chat_request(req),
        Job::Embeddings { req, .. } => spec.deployment.embeddings_request(req),
    };
    let up = match request {
        Ok(up) => up,
        Err(e) => return Tried::failed(e),
    };
    let sent = Instant::now();
    let resp = match client.send(&up, upstream.first_byte_timeout).await {
        Ok(resp) => resp,
        Err(e) => return Tried::failed(e.to_llm_error()),
    };
    if !resp.status.is_success() {
        return Tried::failed(provider_error(spec, resp, upstream).await);
    }
    if let Job::Chat { req, ingress } = job {
        if req.stream {
            return stream_answer(
                reply,
                *ingress,
                spec,
                resp,
                req.include_usage,
                upstream,
                sent,
                first_token,
                started,
            )
            .await;
        }
    }
    let bytes = match resp
        .read_all(upstream.idle_timeout, upstream.max_response_body as usize)
        .await
    {
        Ok(b) => b,
        Err(e) => return Tried::failed(e.to_llm_error()),
    };
    let rendered = match job {
        Job::Chat { ingress, .. } => spec.deployment.parse_chat_response(&bytes).and_then(|r| {
            ingress
                .render_response(&r, unix_now())
                .map(|b| (b, r.usage))
        }),
        Job::Embeddings { req, .. } => {
            spec.deployment
                .parse_embeddings_response(req, &bytes)
                .map(|r| {
                    let usage = r.usage.map(|u| Usage {
                        input_tokens: u.prompt_tokens,
                        ..Usage::default()
                    });
                    (render_openai_response(req, &r), usage)
                })
        }
    };
    let (out, usage) = match rendered {
        Ok(x) => x,
        Err(e) => return Tried::failed(e),
    };
    let ttft = sent.elapsed();
    *first_token = Some(started.elapsed());
    if reply.json(200, &out, None).await {
        Tried::Answered {
            usage,
            ttft,
            tokens_per_second: None,
        }
    } else {
        Tried::ClientGone
    }
}

/// Reads a provider's error answer and turns it into an [`LlmError`].
async fn provider_error(
    spec: &headwater_llm::DeploymentSpec,
    resp: ProviderResponse,
    upstream: &headwater_llm::UpstreamPolicy,
) -> LlmError {
    let status = resp.status.as_u16();
    let retry_after = resp.header("retry-after").map(str::to_owned);
    // An error body is small; a huge one is cut (the status still tells the kind).
    match resp.read_all(upstream.idle_timeout, 256 * 1024).await {
        Ok(body) => spec
            .deployment
            .parse_error(status, &body, retry_after.as_deref()),
        Err(_) => spec
            .deployment
            .parse_error(status, b"", retry_after.as_deref()),
    }
}

/// Relays one streamed answer through a translator.
#[allow(clippy::too_many_arguments)]
async fn stream_answer(
    reply: &mut Reply<'_>,
    ingress: Ingress,
    spec: &headwater_llm::DeploymentSpec,
    mut resp: ProviderResponse,
    include_usage: bool,
    upstream: &headwater_llm::UpstreamPolicy,
    sent: Instant,
    first_token: &mut Option<Duration>,
    started: Instant,
) -> Tried {
    let mut translator =
        StreamTranslator::new(ingress, &spec.deployment, include_usage, unix_now());
    let mut ttft = None;
    let mut first_at: Option<Instant> = None;
    loop {
        let piece = match resp.chunk(upstream.idle_timeout).await {
            Ok(Some(bytes)) => translator.feed(&bytes),
            Ok(None) => translator.finish(),
            Err(e) => Err(e.to_llm_error()),
        };
        let ended = piece.is_ok() && translator.state() == headwater_llm::StreamState::Closed;
        match piece {
            Ok(out) => {
                if !out.is_empty() {
                    if !reply.streaming {
                        ttft = Some(sent.elapsed());
                        first_at = Some(Instant::now());
                        *first_token = Some(started.elapsed());
                        if !reply.start_stream().await {
                            return Tried::ClientGone;
                        }
                    }
                    if !reply.stream(&out).await {
                        return Tried::ClientGone;
                    }
                }
                if ended {
                    if !reply.streaming {
                        // A proper end with nothing to show (no content at all): the head and
                        // the (empty) stream still go out.
                        if !reply.start_stream().await {
                            return Tried::ClientGone;
                        }
                    }
                    if !reply.end_stream().await {
                        return Tried::ClientGone;
                    }
                    // The provider's body usually ends right after its last event (the chunked
                    // terminator, or `data: [DONE]`): read it, so that the connection goes back
                    // to the pool instead of being closed half-read. The client already has its
                    // whole answer; a provider that keeps the body open costs it nothing but
                    // this connection.
                    if !resp.is_finished() {
                        let linger = upstream.idle_timeout.min(DRAIN_AFTER_STREAM);
                        while let Ok(Some(_)) = resp.chunk(linger).await {}
                    }
                    let usage = translator.usage();
                    // Generation speed after the first token: the output tokens the provider
                    // reported, less the first, over the time since it was released.
                    let tokens_per_second = match (usage, first_at) {
                        (Some(u), Some(at)) if u.output_tokens > 1 => {
                            let secs = at.elapsed().as_secs_f64();
                            (secs > 0.0).then(|| (u.output_tokens - 1) as f64 / secs)
                        }
                        _ => None,
                    };
                    return Tried::Answered {
                        usage,
                        ttft: ttft.unwrap_or_else(|| sent.elapsed()),
                        tokens_per_second,
                    };
                }
            }
            Err(error) => {
                if !translator.committed() {
                    return Tried::Failed {
                        error,
                        committed: false,
                    };
                }
                // Part of the answer is out: say so in the stream, end it properly, and close
                // the connection (the client must not mistake this for a complete answer).
                let tail = translator.fail(&error);
                reply.keep = false;
                reply.stream(&tail).await;
                reply.end_stream().await;
                return Tried::Failed {
                    error,
                    committed: true,
                };
            }
        }
    }
}
