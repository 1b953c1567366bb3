//! Route matching on the hot path: pure, allocation-free, case-insensitive on hosts.

use super::{Config, HeaderMatch, HostMatch, PathMatch, RouteMatch};

/// The host part of a Host header value: without `:port`, without one trailing dot.
/// `"[::1]:8080"` gives `"[::1]"`. Case is left as is.
pub fn host_without_port(host: &[u8]) -> &[u8] {
    let host = if host.first() == Some(&b'[') {
        match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.iter().position(|&b| b == b':') {
            Some(colon) => &host[..colon],
            None => host,
        }
    };
    host.strip_suffix(b".").unwrap_or(host)
}

impl Config {
    /// First route whose matcher accepts the request.
    ///
    /// `host` is the Host header value (may include `:port`; compared case-insensitively
    /// without the port), `path` the request-target's path without the query, `header` looks
    /// up a request header's (first) value.
    pub fn match_route<'h>(
        &self,
        method: &http::Method,
        host: Option<&[u8]>,
        path: &[u8],
        header: impl Fn(&http::HeaderName) -> Option<&'h [u8]>,
    ) -> Option<usize> {
        let host = host.map(host_without_port);
        self.routes
            .iter()
            .position(|route| route.matcher.matches_bare_host(method, host, path, &header))
    }
}

impl RouteMatch {
    /// Whether this matcher accepts the request; arguments as for [`Config::match_route`].
    pub fn matches<'h>(
        &self,
        method: &http::Method,
        host: Option<&[u8]>,
        path: &[u8],
        header: impl Fn(&http::HeaderName) -> Option<&'h [u8]>,
    ) -> bool {
        self.matches_bare_host(method, host.map(host_without_port), path, &header)
    }

    /// As [`RouteMatch::matches`], with `host` already passed through [`host_without_port`].
    fn matches_bare_host<'h>(
        &self,
        method: &http::Method,
        host: Option<&[u8]>,
        path: &[u8],
        header: &impl Fn(&http::HeaderName) -> Option<&'h [u8]>,
    ) -> bool {
        if let Some(want) = &self.path {
            if !want.matches(path) {
                return false;
            }
        }
        if let Some(want) = &self.host {
            match host {
                Some(host) if want.matches(host) => {}
                _ => return false,
            }
        }
        if !self.methods.is_empty() && !self.methods.contains(method) {
            return false;
        }
        self.headers.iter().all(|h| h.matches(header(&h.name)))
    }
}

impl HostMatch {
    /// `host` without port (see [`host_without_port`]); compared case-insensitively.
    pub fn matches(&self, host: &[u8]) -> bool {
        match self {
            HostMatch::Exact(want) => host.eq_ignore_ascii_case(want.as_bytes()),
            HostMatch::Suffix(suffix) => {
                let suffix = suffix.as_bytes();
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

impl PathMatch {
    /// Byte comparison against the request path (no query).
    pub fn matches(&self, path: &[u8]) -> bool {
        match self {
            PathMatch::Exact(want) => path == want.as_bytes(),
            PathMatch::Prefix(prefix) => path.starts_with(prefix.as_bytes()),
        }
    }
}

impl HeaderMatch {
    /// `value` is the request's value of this header, if present.
    pub fn matches(&self, value: Option<&[u8]>) -> bool {
        match (&self.value, value) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(want), Some(got)) => want.as_bytes() == got,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_port_and_trailing_dot() {
        assert_eq!(host_without_port(b"a.example.com:8080"), b"a.example.com");
        assert_eq!(host_without_port(b"a.example.com"), b"a.example.com");
        assert_eq!(host_without_port(b"a.example.com."), b"a.example.com");
        assert_eq!(host_without_port(b"a.example.com.:80"), b"a.example.com");
        assert_eq!(host_without_port(b"[::1]:8080"), b"[::1]");
        assert_eq!(host_without_port(b"[::1]"), b"[::1]");
        assert_eq!(host_without_port(b""), b"");
    }

    #[test]
    fn suffix_needs_a_label() {
        let m = HostMatch::Suffix(".example.com".into());
        assert!(m.matches(b"a.example.com"));
        assert!(m.matches(b"A.B.Example.COM"));
        assert!(!m.matches(b"example.com"));
        assert!(!m.matches(b"badexample.com"));
    }
}
