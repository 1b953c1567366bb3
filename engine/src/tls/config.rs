//! Client and server TLS configuration: PEM loading, trust roots, SNI certificate selection, and
//! the [`TlsConnector`] / [`TlsAcceptor`] built from them.

use std::{collections::HashMap, fmt, path::PathBuf, sync::Arc, time::Duration};

use monoio::net::TcpStream;
use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        ResolvesClientCert,
    },
    crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ClientConfig, ClientConnection, Connection, DigitallySignedStruct, InconsistentKeys,
    RootCertStore, ServerConfig, ServerConnection, SignatureScheme,
};
use rustls_pki_types::{
    pem::{self, PemObject},
    CertificateDer, PrivateKeyDer, ServerName, UnixTime,
};

use super::{ConfigProblem, TlsError, TlsStream};

/// The ALPN protocols offered and accepted by default: HTTP/1.1 only.
pub const DEFAULT_ALPN: &[&[u8]] = &[b"http/1.1"];

fn default_alpn() -> Vec<Vec<u8>> {
    DEFAULT_ALPN.iter().map(|p| p.to_vec()).collect()
}

/// The crypto provider (ring), shared by every configuration.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Where PEM data comes from.
#[derive(Clone)]
pub enum PemSource {
    /// A file, read when the configuration is built.
    File(PathBuf),
    /// PEM text already in memory; `label` names it in errors.
    Inline {
        /// What to call it in errors (e.g. "upstream 'llm' CA").
        label: String,
        /// The PEM text.
        pem: Vec<u8>,
    },
}

impl PemSource {
    /// A file.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        PemSource::File(path.into())
    }

    /// PEM text in memory.
    pub fn inline(label: impl Into<String>, pem: impl Into<Vec<u8>>) -> Self {
        PemSource::Inline {
            label: label.into(),
            pem: pem.into(),
        }
    }

    /// The name used in errors: the path as given, or the label.
    pub fn name(&self) -> String {
        match self {
            PemSource::File(path) => path.display().to_string(),
            PemSource::Inline { label, .. } => label.clone(),
        }
    }

    fn error(&self, problem: ConfigProblem) -> TlsError {
        TlsError::config(Some(self.name()), problem)
    }

    fn bytes(&self) -> Result<std::borrow::Cow<'_, [u8]>, TlsError> {
        match self {
            PemSource::File(path) => std::fs::read(path)
                .map(Into::into)
                .map_err(|e| self.error(ConfigProblem::Unreadable(e))),
            PemSource::Inline { pem, .. } => Ok(pem.as_slice().into()),
        }
    }

    /// Every certificate in the source, in order; at least one.
    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let bytes = self.bytes()?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.error(ConfigProblem::BadPem(e.to_string())))?;
        if certs.is_empty() {
            return Err(self.error(ConfigProblem::NoCertificate));
        }
        Ok(certs)
    }

    /// The first private key in the source.
    fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        let bytes = self.bytes()?;
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
            pem::Error::NoItemsFound => self.error(ConfigProblem::NoPrivateKey),
            e => self.error(ConfigProblem::BadPem(e.to_string())),
        })
    }
}

impl fmt::Debug for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemSource::File(path) => f.debug_tuple("File").field(path).finish(),
            // Not the PEM: it may be a private key.
            PemSource::Inline { label, pem } => f
                .debug_struct("Inline")
                .field("label", label)
                .field("bytes", &pem.len())
                .finish(),
        }
    }
}

/// A certificate chain (end-entity first, then intermediates) and its private key.
#[derive(Clone, Debug)]
pub struct CertKey {
    /// PEM with one or more `CERTIFICATE` sections.
    pub cert_chain: PemSource,
    /// PEM with a private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PemSource,
}

impl CertKey {
    /// A chain and a key from two files (they may be the same file).
    pub fn files(cert_chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        CertKey {
            cert_chain: PemSource::file(cert_chain),
            key: PemSource::file(key),
        }
    }

    /// Loads both and checks that the key is the end-entity certificate's.
    fn load(&self, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        let chain = self.cert_chain.certificates()?;
        let key = self.key.private_key()?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| self.key.error(ConfigProblem::UnsupportedKey(e.to_string())))?;
        let certified = CertifiedKey::new(chain, signing);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
                Ok(certified)
            }
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                Err(self.key.error(ConfigProblem::KeyMismatch {
                    cert: self.cert_chain.name(),
                }))
            }
            Err(e) => Err(self
                .cert_chain
                .error(ConfigProblem::BadCertificate(e.to_string()))),
        }
    }
}

/// Which certificate authorities the client trusts.
#[derive(Clone, Debug, Default)]
pub enum RootSource {
    /// The operating system's store (e.g. `/etc/ssl/certs`, or `SSL_CERT_FILE`/`SSL_CERT_DIR`).
    System,
    /// Mozilla's root program, compiled in (`webpki-roots`): the same everywhere.
    #[default]
    Webpki,
    /// Only the CA certificates in this PEM (one or more), e.g. an internal CA.
    CustomCa(PemSource),
}

/// How a client (towards upstreams and LLM providers) sets up TLS.
#[derive(Clone, Debug)]
pub struct ClientTlsConfig {
    /// Trusted roots. Default: [`RootSource::Webpki`].
    pub roots: RootSource,
    /// Verify the server's certificate chain and name. Default `true`. `false` accepts any
    /// certificate (handshake signatures are still checked): set it only when explicitly
    /// configured; building such a connector logs a warning.
    pub verify: bool,
    /// ALPN protocols offered, most preferred first; empty offers none. Default `["http/1.1"]`.
    pub alpn: Vec<Vec<u8>>,
    /// A client certificate, for servers that ask for one.
    pub client_cert: Option<CertKey>,
}

impl Default for ClientTlsConfig {
    fn default() -> Self {
        ClientTlsConfig {
            roots: RootSource::default(),
            verify: true,
            alpn: default_alpn(),
            client_cert: None,
        }
    }
}

impl ClientTlsConfig {
    /// The defaults, trusting `roots`.
    pub fn with_roots(roots: RootSource) -> Self {
        ClientTlsConfig {
            roots,
            ..Self::default()
        }
    }
}

fn root_store(roots: &RootSource) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match roots {
        RootSource::Webpki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        RootSource::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = match found.errors.first() {
                    Some(e) => format!("none could be loaded from the system store: {e}"),
                    None => "the system store is empty".to_string(),
                };
                return Err(TlsError::config(None, ConfigProblem::NoRoots(why)));
            }
        }
        RootSource::CustomCa(source) => {
            for cert in source.certificates()? {
                store
                    .add(cert)
                    .map_err(|e| source.error(ConfigProblem::BadCertificate(e.to_string())))?;
            }
        }
    }
    Ok(store)
}

/// Accepts any server certificate; still checks that the server holds its key (the handshake
/// signature), so the session is encrypted to whoever answered, unauthenticated.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The one client certificate, offered whenever a server asks.
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Makes client TLS sessions; cheap to clone (one shared rustls configuration).
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("alpn", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Builds the rustls client configuration (reads the PEM files now).
    pub fn new(cfg: &ClientTlsConfig) -> Result<Self, TlsError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| TlsError::config(None, ConfigProblem::Rustls(e)))?;
        let builder = if cfg.verify {
            builder.with_root_certificates(root_store(&cfg.roots)?)
        } else {
            eprintln!(
                "headwater: WARNING: TLS certificate verification is disabled (verify = false): \
                 servers reached through this connector are not authenticated"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider.clone())))
        };
        let mut config = match &cfg.client_cert {
            None => builder.with_no_client_auth(),
            Some(pair) => {
                let certified = pair.load(&provider)?;
                builder.with_client_cert_resolver(Arc::new(ClientCert(Arc::new(certified))))
            }
        };
        config.alpn_protocols = cfg.alpn.clone();
        Ok(Self::from_config(Arc::new(config)))
    }

    /// Uses a rustls configuration as it is.
    pub fn from_config(config: Arc<ClientConfig>) -> Self {
        TlsConnector { config }
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// Runs a client handshake on `tcp` within `timeout`.
    ///
    /// `server_name` is sent as SNI and is what the certificate must be valid for; an IP address
    /// (`"10.0.0.1"`, `"::1"` or `"[::1]"`) is allowed: it is not sent as SNI and must be in the
    /// certificate's IP addresses. The deadline cancels the handshake's socket I/O (nothing is
    /// left in flight).
    pub async fn connect(
        &self,
        tcp: TcpStream,
        server_name: &str,
        timeout: Duration,
    ) -> Result<TlsStream, TlsError> {
        let name = parse_server_name(server_name)?;
        let conn = ClientConnection::new(self.config.clone(), name).map_err(TlsError::Handshake)?;
        let mut stream = TlsStream::new(tcp, Connection::Client(conn));
        stream
            .handshake_within(timeout, || server_name.to_string())
            .await?;
        Ok(stream)
    }
}

fn parse_server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare)
        .map(|n| n.to_owned())
        .map_err(|_| TlsError::InvalidServerName {
            name: name.to_string(),
        })
}

/// A certificate served to clients asking for one of `names` (SNI).
#[derive(Clone, Debug)]
pub struct SniCert {
    /// Host names, exact (`api.example.com`) or one-label wildcards (`*.example.com`, which
    /// matches `a.example.com`, not `example.com` nor `a.b.example.com`). Case does not matter.
    pub names: Vec<String>,
    /// The chain and key.
    pub cert: CertKey,
}

/// How a listener sets up TLS.
#[derive(Clone, Debug)]
pub struct ServerTlsConfig {
    /// Served when the client sends no SNI or one that no [`SniCert`] matches.
    pub default_cert: CertKey,
    /// Certificates chosen by SNI: exact names first, then wildcards.
    pub sni: Vec<SniCert>,
    /// ALPN protocols accepted, most preferred first; a client that offers ALPN but none of
    /// these is refused (`no_application_protocol`), one that offers none is served. Default
    /// `["http/1.1"]`.
    pub alpn: Vec<Vec<u8>>,
}

impl ServerTlsConfig {
    /// One certificate for every client, ALPN `http/1.1`.
    pub fn new(default_cert: CertKey) -> Self {
        ServerTlsConfig {
            default_cert,
            sni: Vec::new(),
            alpn: default_alpn(),
        }
    }

    /// Adds a certificate for the given SNI names.
    pub fn with_sni<I, S>(mut self, names: I, cert: CertKey) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.sni.push(SniCert {
            names: names.into_iter().map(Into::into).collect(),
            cert,
        });
        self
    }
}

/// Picks the certificate by SNI: exact name, then `*.parent` wildcard, then the default.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the parent domain (`example.com` for `*.example.com`).
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

/// Lower case, without a trailing dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl SniResolver {
    fn new(cfg: &ServerTlsConfig, provider: &CryptoProvider) -> Result<Self, TlsError> {
        let mut resolver = SniResolver {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: Arc::new(cfg.default_cert.load(provider)?),
        };
        for entry in &cfg.sni {
            let key = Arc::new(entry.cert.load(provider)?);
            let bad = |problem| TlsError::config(Some(entry.cert.cert_chain.name()), problem);
            if entry.names.is_empty() {
                return Err(bad(ConfigProblem::InvalidSniName(String::new())));
            }
            for raw in &entry.names {
                let name = normalize(raw);
                let (map, host) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut resolver.wildcard, parent.to_string()),
                    None => (&mut resolver.exact, name.clone()),
                };
                if host.is_empty()
                    || host.contains('*')
                    || host.split('.').any(str::is_empty)
                    || ServerName::try_from(host.as_str()).is_err()
                {
                    return Err(bad(ConfigProblem::InvalidSniName(raw.clone())));
                }
                if map.insert(host, key.clone()).is_some() {
                    return Err(bad(ConfigProblem::DuplicateSniName(raw.clone())));
                }
            }
        }
        Ok(resolver)
    }

    fn pick(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name.map(normalize) else {
            return &self.default;
        };
        if let Some(key) = self.exact.get(&name) {
            return key;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()).clone())
    }
}

/// Makes server TLS sessions; cheap to clone (one shared rustls configuration).
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<ServerConfig>,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("alpn", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// Builds the rustls server configuration (reads the PEM files now and checks that every
    /// key matches its certificate).
    pub fn new(cfg: &ServerTlsConfig) -> Result<Self, TlsError> {
        let provider = provider();
        let resolver = SniResolver::new(cfg, &provider)?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(VERSIONS)
            .map_err(|e| TlsError::config(None, ConfigProblem::Rustls(e)))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = cfg.alpn.clone();
        Ok(Self::from_config(Arc::new(config)))
    }

    /// Uses a rustls configuration as it is.
    pub fn from_config(config: Arc<ServerConfig>) -> Self {
        TlsAcceptor { config }
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    /// Runs a server handshake on an accepted `tcp` within `timeout` (a client that connects
    /// and says nothing is dropped then).
    pub async fn accept(&self, tcp: TcpStream, timeout: Duration) -> Result<TlsStream, TlsError> {
        let conn = ServerConnection::new(self.config.clone()).map_err(TlsError::Handshake)?;
        let peer = tcp.peer_addr().ok();
        let mut stream = TlsStream::new(tcp, Connection::Server(conn));
        stream
            .handshake_within(timeout, || match peer {
                Some(addr) => addr.to_string(),
                None => "client".to_string(),
            })
            .await?;
        Ok(stream)
    }
}
