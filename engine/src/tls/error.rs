//! [`TlsError`]: what went wrong setting up TLS or during a handshake, and whether to retry.

use std::{fmt, io, time::Duration};

use rustls::CertificateError;

/// A TLS failure: building a connector or acceptor, or a handshake.
///
/// Errors on an established [`TlsStream`](super::TlsStream) are `io::Error`s (as its I/O traits
/// require); a TLS protocol failure there has kind `InvalidData` and wraps the `rustls::Error`.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// The configuration could not be built; `file` names the PEM file (or inline source) at
    /// fault, when one is.
    Config {
        /// The file (its path as given) or the label of inline PEM data.
        file: Option<String>,
        /// What is wrong.
        problem: ConfigProblem,
    },
    /// The name given to `connect` is neither a DNS name nor an IP address.
    InvalidServerName {
        /// The name as given.
        name: String,
    },
    /// The peer's certificate was rejected (client side: the server's certificate).
    Verification {
        /// The name that was verified (client side) or the peer's address (server side).
        peer: String,
        /// Why the certificate was rejected.
        reason: CertificateError,
    },
    /// The handshake failed at the TLS level: the peer sent an alert (for instance it rejected
    /// our certificate), no version, cipher suite or ALPN protocol in common, a malformed
    /// message. Retrying the same peer will fail the same way.
    Handshake(rustls::Error),
    /// The socket failed during the handshake, including the peer closing it.
    Io(io::Error),
    /// The handshake did not finish within its deadline.
    Timeout {
        /// The deadline that passed.
        after: Duration,
    },
}

/// What is wrong with a TLS configuration.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// The file cannot be read.
    Unreadable(io::Error),
    /// The file is not valid PEM.
    BadPem(String),
    /// The file has no `CERTIFICATE` section.
    NoCertificate,
    /// The file has no private key section (`PRIVATE KEY`, `RSA PRIVATE KEY`, `EC PRIVATE KEY`).
    NoPrivateKey,
    /// The private key cannot be used (unsupported algorithm or malformed).
    UnsupportedKey(String),
    /// A certificate cannot be parsed or used.
    BadCertificate(String),
    /// The private key is not the one of the certificate chain's first certificate (in `cert`).
    KeyMismatch {
        /// The certificate file that the key does not match.
        cert: String,
    },
    /// No trusted root certificate was found (system roots).
    NoRoots(String),
    /// An SNI name is empty or malformed.
    InvalidSniName(String),
    /// An SNI name is configured for two certificates.
    DuplicateSniName(String),
    /// rustls refused the configuration.
    Rustls(rustls::Error),
}

impl TlsError {
    pub(crate) fn config(file: Option<String>, problem: ConfigProblem) -> Self {
        TlsError::Config { file, problem }
    }

    /// Whether trying again (a new connection to the same peer) may succeed: yes for socket
    /// failures and timeouts during the handshake, no for verification, protocol and
    /// configuration errors.
    pub fn is_retryable(&self) -> bool {
        matches!(self, TlsError::Io(_) | TlsError::Timeout { .. })
    }

    /// Whether the handshake deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, TlsError::Timeout { .. })
    }

    /// Whether the peer's certificate was rejected.
    pub fn is_verification(&self) -> bool {
        matches!(self, TlsError::Verification { .. })
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Config {
                file: Some(file),
                problem,
            } => write!(f, "TLS configuration: {file}: {problem}"),
            TlsError::Config {
                file: None,
                problem,
            } => write!(f, "TLS configuration: {problem}"),
            TlsError::InvalidServerName { name } => {
                write!(f, "invalid TLS server name {name:?}")
            }
            TlsError::Verification { peer, reason } => {
                write!(
                    f,
                    "TLS certificate verification failed for {peer}: {reason}"
                )
            }
            TlsError::Handshake(e) => write!(f, "TLS handshake failed: {e}"),
            TlsError::Io(e) => write!(f, "I/O error during the TLS handshake: {e}"),
            TlsError::Timeout { after } => {
                write!(f, "TLS handshake timed out after {} ms", after.as_millis())
            }
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigProblem::Unreadable(e) => write!(f, "cannot read the file: {e}"),
            ConfigProblem::BadPem(e) => write!(f, "not valid PEM: {e}"),
            ConfigProblem::NoCertificate => f.write_str("no certificate (CERTIFICATE section)"),
            ConfigProblem::NoPrivateKey => f.write_str("no private key (PRIVATE KEY section)"),
            ConfigProblem::UnsupportedKey(e) => write!(f, "unusable private key: {e}"),
            ConfigProblem::BadCertificate(e) => write!(f, "unusable certificate: {e}"),
            ConfigProblem::KeyMismatch { cert } => {
                write!(f, "private key does not match the certificate in {cert}")
            }
            ConfigProblem::NoRoots(why) => write!(f, "no trusted root certificates: {why}"),
            ConfigProblem::InvalidSniName(name) => write!(f, "invalid SNI name {name:?}"),
            ConfigProblem::DuplicateSniName(name) => {
                write!(f, "SNI name {name:?} is configured twice")
            }
            ConfigProblem::Rustls(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Config {
                problem: ConfigProblem::Unreadable(e),
                ..
            } => Some(e),
            TlsError::Config {
                problem: ConfigProblem::Rustls(e),
                ..
            } => Some(e),
            TlsError::Handshake(e) => Some(e),
            TlsError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> io::Error {
        let kind = match &e {
            TlsError::Io(e) => e.kind(),
            TlsError::Timeout { .. } => io::ErrorKind::TimedOut,
            TlsError::Config { .. } | TlsError::InvalidServerName { .. } => {
                io::ErrorKind::InvalidInput
            }
            TlsError::Verification { .. } | TlsError::Handshake(_) => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}
