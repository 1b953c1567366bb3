//! Name resolution for provider hosts without blocking the shard.
//!
//! # What this module owns
//!
//! - [`Resolver`]: one per shard (not `Send`). It turns a host name and port into socket
//!   addresses with the system resolver (`getaddrinfo`, through [`ToSocketAddrs`]) on a
//!   short-lived std thread, and awaits the answer through a waker, so the shard keeps serving
//!   while a lookup is slow.
//! - Its cache: an answer is used for [`DEFAULT_TTL`] (30 s). After that the stale addresses are
//!   still returned at once while one lookup refreshes them in the background; if the refresh
//!   fails, the stale addresses stay in use (and the lookup is tried again after
//!   [`STALE_RETRY`]). A name that has never resolved is not looked up again for
//!   [`NEGATIVE_TTL`] after a failure: requests in that window fail at once.
//! - Concurrent requests for the same name on a shard share one lookup.
//! - [`ip_literal`]: IP addresses (`10.0.0.1`, `::1`, `[::1]`) need no lookup at all.
//!
//! It does not own connecting, retries across addresses or the connect deadline: the caller
//! ([`super::client`]) passes the time it may wait.

use std::{
    cell::RefCell,
    collections::HashMap,
    fmt,
    future::poll_fn,
    net::{IpAddr, SocketAddr, ToSocketAddrs},
    rc::Rc,
    sync::{Arc, Mutex, MutexGuard},
    task::{Poll, Waker},
    time::{Duration, Instant},
};

/// How long an answer is used before it is refreshed.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// After a failed refresh, how long the stale answer is used before the next attempt.
pub const STALE_RETRY: Duration = Duration::from_secs(5);
/// After a failed lookup of a name with no answer at all, how long requests fail at once.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// The IP address `host` spells, if it is one: `10.0.0.1`, `::1`, or `[::1]`.
pub fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// A lookup that failed or did not finish in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveError {
    /// The name that was looked up.
    pub host: String,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot resolve {}: {}", self.host, self.message)
    }
}

impl std::error::Error for ResolveError {}

/// One lookup, shared between its thread and the tasks awaiting it: the thread stores the
/// answer and wakes them (monoio's `sync` feature makes such cross-thread wake-ups work under
/// both drivers).
#[derive(Default)]
struct Shared {
    state: Mutex<SharedState>,
}

#[derive(Default)]
struct SharedState {
    result: Option<Result<Vec<SocketAddr>, String>>,
    wakers: Vec<Waker>,
}

fn lock(m: &Mutex<SharedState>) -> MutexGuard<'_, SharedState> {
    // A panic while holding the lock cannot leave the state half-updated (both fields are
    // replaced whole), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// The result, if the thread has finished.
    fn peek(&self) -> Option<Result<Vec<SocketAddr>, String>> {
        lock(&self.state).result.clone()
    }

    /// Waits for the thread's result.
    async fn wait(&self) -> Result<Vec<SocketAddr>, String> {
        poll_fn(|cx| {
            let mut state = lock(&self.state);
            if let Some(r) = &state.result {
                return Poll::Ready(r.clone());
            }
            if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                state.wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    fn complete(&self, result: Result<Vec<SocketAddr>, String>) {
        let wakers = {
            let mut state = lock(&self.state);
            state.result = Some(result);
            std::mem::take(&mut state.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }
}

/// Starts a lookup of `host:port` on its own thread.
fn spawn_lookup(host: &str, port: u16) -> Arc<Shared> {
    let shared = Arc::new(Shared::default());
    let theirs = shared.clone();
    let name = host.to_owned();
    let spawned = std::thread::Builder::new()
        .name("headwater-dns".into())
        .spawn(move || {
            let result = match (name.as_str(), port).to_socket_addrs() {
                Ok(addrs) => {
                    let addrs: Vec<SocketAddr> = addrs.collect();
                    if addrs.is_empty() {
                        Err("no addresses".to_owned())
                    } else {
                        Ok(addrs)
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            theirs.complete(result);
        });
    if let Err(e) = spawned {
        shared.complete(Err(format!("cannot start a lookup thread: {e}")));
    }
    shared
}

struct Entry {
    /// The last good answer.
    addrs: Option<Rc<[SocketAddr]>>,
    /// Until when `addrs` is used without a refresh (or, without `addrs`, until when the last
    /// failure is returned without a new lookup).
    fresh_until: Instant,
    /// The last failure, for a name without an answer.
    failure: Option<String>,
    /// A lookup in flight.
    pending: Option<Arc<Shared>>,
}

impl Entry {
    /// Applies the result of the lookup in flight, if it has finished.
    fn harvest(&mut self, now: Instant, ttl: Duration) {
        let Some(result) = self.pending.as_ref().and_then(|p| p.peek()) else {
            return;
        };
        self.pending = None;
        self.apply(result, now, ttl);
    }

    fn apply(&mut self, result: Result<Vec<SocketAddr>, String>, now: Instant, ttl: Duration) {
        match result {
            Ok(addrs) => {
                self.addrs = Some(addrs.into());
                self.failure = None;
                self.fresh_until = now + ttl;
            }
            Err(_) if self.addrs.is_some() => {
                // Keep the stale answer; try again a little later.
                self.fresh_until = now + STALE_RETRY;
            }
            Err(message) => {
                self.failure = Some(message);
                self.fresh_until = now + NEGATIVE_TTL;
            }
        }
    }

    fn start(&mut self, host: &str, port: u16) -> Arc<Shared> {
        self.pending
            .get_or_insert_with(|| spawn_lookup(host, port))
            .clone()
    }
}

/// A per-shard caching resolver. See the [module docs](self).
pub struct Resolver {
    ttl: Duration,
    cache: RefCell<HashMap<(String, u16), Entry>>,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::new(DEFAULT_TTL)
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("ttl", &self.ttl)
            .field("names", &self.cache.borrow().len())
            .finish()
    }
}

impl Resolver {
    /// A resolver that uses answers for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Resolver {
            ttl,
            cache: RefCell::new(HashMap::new()),
        }
    }

    /// The addresses of `host` (a name or an IP literal) at `port`, waiting at most `timeout`
    /// for a lookup when there is no answer to use yet.
    pub async fn resolve(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Rc<[SocketAddr]>, ResolveError> {
        if let Some(ip) = ip_literal(host) {
            return Ok(Rc::from([SocketAddr::new(ip, port)]));
        }
        let error = |message: String| ResolveError {
            host: host.to_owned(),
            message,
        };
        let key = (host.to_ascii_lowercase(), port);
        let now = Instant::now();
        let pending = {
            let mut cache = self.cache.borrow_mut();
            let entry = cache.entry(key.clone()).or_insert_with(|| Entry {
                addrs: None,
                fresh_until: now,
                failure: None,
                pending: None,
            });
            entry.harvest(now, self.ttl);
            match (&entry.addrs, &entry.failure) {
                (Some(addrs), _) => {
                    let addrs = addrs.clone();
                    if now >= entry.fresh_until {
                        // Stale: use it now, refresh in the background.
                        entry.start(&key.0, port);
                    }
                    return Ok(addrs);
                }
                (None, Some(failure)) if now < entry.fresh_until => {
                    return Err(error(failure.clone()));
                }
                _ => entry.start(&key.0, port),
            }
        };
        let result = match monoio::time::timeout(timeout, pending.wait()).await {
            Ok(result) => result,
            Err(_) => {
                return Err(error(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                )))
            }
        };
        let now = Instant::now();
        let mut cache = self.cache.borrow_mut();
        if let Some(entry) = cache.get_mut(&key) {
            if entry
                .pending
                .as_ref()
                .is_some_and(|p| Arc::ptr_eq(p, &pending))
            {
                entry.pending = None;
                entry.apply(result.clone(), now, self.ttl);
            }
        }
        match result {
            Ok(addrs) => Ok(addrs.into()),
            Err(message) => Err(error(message)),
        }
    }

    /// Names with a cache entry.
    pub fn cached_names(&self) -> usize {
        self.cache.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals() {
        assert_eq!(ip_literal("10.0.0.1"), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(ip_literal("::1"), Some("::1".parse().unwrap()));
        assert_eq!(ip_literal("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(ip_literal("api.openai.com"), None);
        assert_eq!(ip_literal("[api]"), None);
    }

    #[test]
    fn stale_answer_survives_a_failed_refresh() {
        let now = Instant::now();
        let mut e = Entry {
            addrs: None,
            fresh_until: now,
            failure: None,
            pending: None,
        };
        let a: SocketAddr = "10.0.0.1:443".parse().unwrap();
        e.apply(Ok(vec![a]), now, DEFAULT_TTL);
        assert_eq!(e.fresh_until, now + DEFAULT_TTL);
        e.apply(Err("SERVFAIL".into()), now, DEFAULT_TTL);
        assert_eq!(e.addrs.as_deref(), Some(&[a][..]));
        assert_eq!(e.fresh_until, now + STALE_RETRY);
        let mut never = Entry {
            addrs: None,
            fresh_until: now,
            failure: None,
            pending: None,
        };
        never.apply(Err("NXDOMAIN".into()), now, DEFAULT_TTL);
        assert_eq!(never.failure.as_deref(), Some("NXDOMAIN"));
    }
}
