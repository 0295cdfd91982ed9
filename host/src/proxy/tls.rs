//! TLS to upstreams: the rustls client config an `https` upstream connects with (the system's
//! root certificates, or only the CAs of a configured file; a client certificate for upstreams
//! that require one), and the HTTPS connector built on it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

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
    /// `http/1.1` only.
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
pub fn connector(
    settings: &TlsSettings,
    alpn: Alpn,
    connect_timeout: Duration,
    resolver: LastGoodResolver,
) -> Result<HttpsConnector<HttpConnector<LastGoodResolver>>, TlsError> {
    let mut builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(client_config(settings)?).https_only();
    if let Some(name) = &settings.server_name {
        let name = rustls::pki_types::ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name.clone()))?;
        builder = builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = match alpn {
        Alpn::Http1 => builder.enable_http1().wrap_connector(http),
        Alpn::H2 => builder.enable_http2().wrap_connector(http),
    };
    Ok(connector)
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
