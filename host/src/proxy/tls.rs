//! TLS to upstreams: the rustls client config an `https` upstream connects with (the system's
//! root certificates, or only the CAs of a configured file; a client certificate for upstreams
//! that require one), and the HTTPS connector built on it ([`UpstreamTls`]), whose handshake
//! is held to `connect_ms` as the TCP connect is.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::{FixedServerNameResolver, MaybeHttpsStream, ResolveServerName};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpStream;

use super::dns::LastGoodResolver;
use crate::tls::KeyPairError;

/// Why the TLS settings of an upstream could not be turned into a client config.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The system's root certificates could not be loaded.
    #[error("cannot load the system's root certificates: {0}")]
    NativeRoots(String),
    /// The CA file could not be read or holds no usable certificate.
    #[error("CA file `{path}`: {reason}")]
    CaFile {
        /// The file, as configured (resolved against the config's directory).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The client certificate file could not be read or holds no certificate.
    #[error("client certificate file `{path}`: {reason}")]
    CertFile {
        /// The file, as configured (resolved against the config's directory).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The client certificate's key file could not be read or holds no private key.
    #[error("private key file `{path}`: {reason}")]
    KeyFile {
        /// The file, as configured (resolved against the config's directory).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key is not the key of the client certificate.
    #[error("the private key in `{key}` is not the key of the certificate in `{cert}` (is it another certificate's key?)")]
    KeyMismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
    },
    /// `server_name` is not a DNS name or IP address.
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
    /// rustls refused the protocol versions (never expected with its defaults).
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

impl TlsError {
    /// The key of `[upstreams.<name>.tls]` the error is about, if it is about one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            TlsError::CaFile { .. } => Some("ca_file"),
            TlsError::CertFile { .. } => Some("cert"),
            TlsError::KeyFile { .. } | TlsError::KeyMismatch { .. } => Some("key"),
            TlsError::ServerName(_) => Some("server_name"),
            TlsError::NativeRoots(_) | TlsError::Setup(_) => None,
        }
    }
}

/// Which ALPN protocol an HTTPS upstream is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// HTTP/1.1: no ALPN offered (as hyper-rustls offers none for it).
    Http1,
    /// `h2` only.
    H2,
}

/// How to reach an upstream over TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file of the CAs that may sign the upstream's certificate; `None`: the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// The name sent as SNI and checked against the certificate; `None`: the target's host.
    pub server_name: Option<String>,
    /// The certificate presented to the upstream when it asks for one; `None`: none.
    pub client_cert: Option<ClientCert>,
}

/// The PEM files of the client certificate an upstream is shown (paths only: the files are read
/// each time a connector is built).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// Builds the HTTPS connector for an upstream, resolving target names with `resolver`. Reads
/// certificate files: call it off the async workers.
pub fn connector(settings: &TlsSettings, alpn: Alpn, connect_timeout: Duration, resolver: LastGoodResolver) -> Result<UpstreamTls, TlsError> {
    let mut config = client_config(settings)?;
    // As hyper-rustls's builder offers them: `h2` alone for HTTP/2, none for HTTP/1.1 (a
    // server that lists only `h2` still takes the handshake, as it always did).
    config.alpn_protocols = match alpn {
        Alpn::Http1 => Vec::new(),
        Alpn::H2 => vec![b"h2".to_vec()],
    };
    let names: Arc<dyn ResolveServerName + Send + Sync> = match &settings.server_name {
        Some(name) => {
            let name = rustls::pki_types::ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name.clone()))?;
            Arc::new(FixedServerNameResolver::new(name))
        }
        None => Arc::new(hyper_rustls::DefaultServerNameResolver::default()),
    };
    let mut tcp = HttpConnector::new_with_resolver(resolver);
    tcp.set_connect_timeout(Some(connect_timeout));
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    Ok(UpstreamTls { tcp, tls: tokio_rustls::TlsConnector::from(Arc::new(config)), names, handshake_timeout: connect_timeout })
}

/// The connector of an `https` upstream: hyper-rustls's `HttpsConnector` (the same stream type,
/// server names and ALPN), but with the TLS handshake held to `connect_ms` as the TCP connect
/// is. A target that takes the connection and never finishes the handshake (a hung process
/// whose kernel still accepts, an `https` target on a plain-HTTP port) is a connect timeout,
/// left for the next target, rather than a request held until `request_ms` (or, with a body,
/// `body_idle_ms`). The name lookup before is not held to it: a lookup that times out falls back
/// to the name's last good addresses ([`super::dns`]).
#[derive(Clone)]
pub struct UpstreamTls {
    tcp: HttpConnector<LastGoodResolver>,
    tls: tokio_rustls::TlsConnector,
    names: Arc<dyn ResolveServerName + Send + Sync>,
    handshake_timeout: Duration,
}

/// A TLS handshake with an upstream target did not finish within `connect_ms`.
#[derive(Debug, thiserror::Error)]
#[error("the TLS handshake did not finish within {} ms (timeouts.connect_ms)", .0.as_millis())]
pub struct HandshakeTimedOut(pub Duration);

/// The upstream presented a CA certificate (`CA:TRUE`, as `openssl req -x509` makes by
/// default) as its own: webpki refuses it, in words (`CaUsedAsEndEntity`) an operator pinning a
/// self-signed certificate with `ca_file` cannot act on.
#[derive(Debug, thiserror::Error)]
#[error(
    "the upstream's certificate is a CA certificate (basicConstraints CA:TRUE) served as its own, which TLS refuses: \
     reissue it with CA:FALSE, or have that CA sign a server certificate and keep the CA as `tls.ca_file`"
)]
pub struct CaAsServerCertificate;

/// Whether a handshake failed for webpki's `CaUsedAsEndEntity`.
fn ca_as_server_certificate(e: &std::io::Error) -> bool {
    let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return false;
    };
    other.0.downcast_ref::<webpki::Error>() == Some(&webpki::Error::CaUsedAsEndEntity)
}

/// An error a connector returns, boxed.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for UpstreamTls {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, target: Uri) -> Self::Future {
        if target.scheme() != Some(&http::uri::Scheme::HTTPS) {
            return Box::pin(async { Err(std::io::Error::other("an https upstream's connector takes only https URIs").into()) });
        }
        let name = self.names.resolve(&target);
        let connecting = self.tcp.call(target);
        let (tls, limit) = (self.tls.clone(), self.handshake_timeout);
        Box::pin(async move {
            let name = name?;
            let tcp = connecting.await?;
            let handshake = tls.connect(name, TokioIo::new(tcp));
            match tokio::time::timeout(limit, handshake).await {
                Ok(Ok(stream)) => Ok(MaybeHttpsStream::Https(TokioIo::new(stream))),
                Ok(Err(e)) if ca_as_server_certificate(&e) => Err(std::io::Error::other(CaAsServerCertificate).into()),
                Ok(Err(e)) => Err(std::io::Error::other(e).into()),
                // A timed-out IO error: the upstream's classification makes it a connect timeout.
                Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, HandshakeTimedOut(limit)).into()),
            }
        })
    }
}

/// The client config of `settings`: trusting the system's roots or exactly the CAs of
/// `ca_file`, and presenting `client_cert` when the upstream asks for a certificate.
fn client_config(settings: &TlsSettings) -> Result<rustls::ClientConfig, TlsError> {
    use hyper_rustls::ConfigBuilderExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = match &settings.ca_file {
        None => builder.with_native_roots().map_err(|e| TlsError::NativeRoots(e.to_string()))?,
        Some(path) => builder.with_root_certificates(ca_roots(path)?),
    };
    let Some(client) = &settings.client_cert else { return Ok(builder.with_no_client_auth()) };
    let certified = crate::tls::certified_key(&client.cert, &client.key, &provider).map_err(|e| match e {
        KeyPairError::Cert { path, reason } => TlsError::CertFile { path, reason },
        e @ KeyPairError::OutOfOrder { .. } => TlsError::CertFile { path: client.cert.display().to_string(), reason: e.to_string() },
        KeyPairError::Key { path, reason } => TlsError::KeyFile { path, reason },
        KeyPairError::Mismatch => {
            TlsError::KeyMismatch { cert: client.cert.display().to_string(), key: client.key.display().to_string() }
        }
    })?;
    Ok(builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified))))
}

/// The CAs of the PEM file at `path` (at least one).
fn ca_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let shown = path.display().to_string();
    let ca_error = |reason: String| TlsError::CaFile { path: shown.clone(), reason };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| ca_error(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| ca_error(e.to_string()))?;
        roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ca_error("no certificate in it".into()));
    }
    Ok(roots)
}
