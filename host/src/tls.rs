//! TLS on listeners (rustls): certificates and keys from PEM files, several certificates chosen by
//! SNI, TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`, and optional mTLS client authentication
//! against a CA bundle. A verified client certificate's subject and DNS/email SANs are handed to
//! plugins in the request context (`tls.client.subject`, `tls.client.sans`), so an auth plugin can
//! map it to a consumer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

use crate::config::{ClientAuth, ListenerTlsConfig};

/// Why a listener's TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the settings.
    #[error("{0}")]
    Rustls(String),
}

/// The identity a verified client certificate gives a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject distinguished name, e.g. `CN=billing,O=Example`.
    pub subject: String,
    /// DNS names, emails and URIs from the subject alternative names, in order.
    pub sans: Vec<String>,
}

/// Builds a listener's rustls server config.
pub fn server_config(tls: &ListenerTlsConfig, base_dir: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut resolver = SniResolver::default();
    for pair in &tls.certificates {
        let chain = read_certs(&base_dir.join(pair.cert.get_ref()))?;
        let key_path = base_dir.join(pair.key.get_ref());
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .map_err(|e| TlsError::File { path: key_path.display().to_string(), reason: format!("no private key: {e}") })?;
        let names = dns_names(&chain[0]);
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
            let reason = match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "the private key in `{}` is not the key of the certificate (is it another certificate's key?)",
                    pair.key.get_ref()
                ),
                other => other.to_string(),
            };
            TlsError::Rustls(format!("{}: {reason}", pair.cert.get_ref()))
        })?;
        resolver.add(names, Arc::new(certified));
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(&base_dir.join(ca.get_ref()))? {
                roots.add(cert).map_err(|e| TlsError::Rustls(format!("{}: {e}", ca.get_ref())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match tls.client_auth {
                ClientAuth::Required => verifier.build(),
                ClientAuth::Optional => verifier.allow_unauthenticated().build(),
            }
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = || path.display().to_string();
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::File { path: shown(), reason: e.to_string() })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::File { path: shown(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::File { path: shown(), reason: "no CERTIFICATE in it".into() });
    }
    Ok(certs)
}

/// The DNS names a certificate is for (its SANs, else its subject CN), lower-case.
fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else { return Vec::new() };
    let mut names: Vec<String> = alternative_names(&parsed, true).into_iter().map(|n| n.to_ascii_lowercase()).collect();
    if names.is_empty()
        && let Some(cn) = parsed.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok())
    {
        names.push(cn.to_ascii_lowercase());
    }
    names
}

/// The identity in a client's (already verified) certificate.
pub fn client_identity(cert: &CertificateDer<'_>) -> Option<ClientIdentity> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(ClientIdentity { subject: parsed.subject().to_string(), sans: alternative_names(&parsed, false) })
}

/// A certificate's subject alternative names: DNS names only, or DNS names, emails and URIs.
fn alternative_names(cert: &x509_parser::certificate::X509Certificate<'_>, dns_only: bool) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            GeneralName::RFC822Name(v) | GeneralName::URI(v) if !dns_only => Some((*v).to_owned()),
            _ => None,
        })
        .collect()
}

/// Picks a certificate by SNI: an exact name, then a `*.` wildcard one label up, then the first
/// certificate configured (clients without SNI, or names no certificate covers).
#[derive(Debug, Default)]
struct SniResolver {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn add(&mut self, names: Vec<String>, key: Arc<CertifiedKey>) {
        for name in names {
            self.by_name.entry(name).or_insert_with(|| key.clone());
        }
        self.default.get_or_insert(key);
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            if let Some(key) = self.by_name.get(&name) {
                return Some(key.clone());
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(key) = self.by_name.get(&format!("*.{parent}"))
            {
                return Some(key.clone());
            }
        }
        self.default.clone()
    }
}
