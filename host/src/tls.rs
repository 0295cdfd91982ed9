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
        /// The key of `[listeners.tls]` that names the file.
        field: TlsField,
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A private key is not the key of the certificate it is paired with.
    #[error("the private key in `{key}` is not the key of the certificate in `{cert}` (is it another certificate's key?)")]
    KeyMismatch {
        /// Which `certificates` entry (from 0).
        index: usize,
        /// The certificate file, as configured.
        cert: String,
        /// The key file, as configured.
        key: String,
    },
    /// rustls refused the settings.
    #[error("{0}")]
    Rustls(String),
}

/// The key of `[listeners.tls]` a [`TlsError`] is about, so the error points at its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsField {
    /// `certificates[n].cert`.
    Cert(usize),
    /// `certificates[n].key`.
    Key(usize),
    /// `client_ca`.
    ClientCa,
}

impl TlsError {
    /// The key of `[listeners.tls]` the error is about, if it is about one.
    pub fn field(&self) -> Option<TlsField> {
        match self {
            TlsError::File { field, .. } => Some(*field),
            TlsError::KeyMismatch { index, .. } => Some(TlsField::Key(*index)),
            TlsError::Rustls(_) => None,
        }
    }
}

/// The identity a verified client certificate gives a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject distinguished name, e.g. `CN=billing, O=Example`, its values escaped (RFC 4514).
    pub subject: String,
    /// DNS names, emails and URIs from the subject alternative names, in order, each with `\` and
    /// `,` escaped by a `\`.
    pub sans: Vec<String>,
}

/// Builds a listener's rustls server config.
pub fn server_config(tls: &ListenerTlsConfig, base_dir: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut resolver = SniResolver::default();
    for (index, pair) in tls.certificates.iter().enumerate() {
        let certified = certified_key(&base_dir.join(pair.cert.get_ref()), &base_dir.join(pair.key.get_ref()), &provider).map_err(|e| match e {
            KeyPairError::Cert { path, reason } => TlsError::File { field: TlsField::Cert(index), path, reason },
            e @ KeyPairError::OutOfOrder { .. } => {
                TlsError::File { field: TlsField::Cert(index), path: pair.cert.get_ref().clone(), reason: e.to_string() }
            }
            KeyPairError::Key { path, reason } => TlsError::File { field: TlsField::Key(index), path, reason },
            KeyPairError::Mismatch => {
                TlsError::KeyMismatch { index, cert: pair.cert.get_ref().clone(), key: pair.key.get_ref().clone() }
            }
        })?;
        let names = certified.cert.first().map(dns_names).unwrap_or_default();
        resolver.add(names, Arc::new(certified));
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let path = base_dir.join(ca.get_ref());
            let ca_error = |reason: String| TlsError::File { field: TlsField::ClientCa, path: path.display().to_string(), reason };
            let mut roots = rustls::RootCertStore::empty();
            for cert in pem_certs(&path).map_err(ca_error)? {
                roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match tls.client_auth.as_ref().map(|a| *a.get_ref()) {
                None | Some(ClientAuth::Required) => verifier.build(),
                Some(ClientAuth::Optional) => verifier.allow_unauthenticated().build(),
            }
            .map_err(|e| ca_error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of a PEM file, in order; or why not (unreadable, or none in it).
fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> =
        CertificateDer::pem_file_iter(path).map_err(|e| e.to_string())?.collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no CERTIFICATE in it".into());
    }
    Ok(certs)
}

/// Why a certificate chain and its private key could not be loaded as a pair.
#[derive(Debug, thiserror::Error)]
pub enum KeyPairError {
    /// The certificate file could not be read or holds no certificate.
    #[error("{path}: {reason}")]
    Cert {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The key file could not be read or holds no private key.
    #[error("{path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The private key is not the key of the chain's first certificate.
    #[error("the private key is not the key of the certificate")]
    Mismatch,
    /// The private key is the key of a later certificate of the chain: the leaf is not first.
    #[error(
        "the certificates are out of order: the private key is the key of certificate {leaf_at} in the file, and the leaf (the certificate the key is for) must come first, then each certificate's issuer"
    )]
    OutOfOrder {
        /// Where the key's certificate is in the file, from 1.
        leaf_at: usize,
    },
}

/// A certificate chain (PEM, leaf first) and its private key (PEM: PKCS#8, PKCS#1 or SEC1),
/// checked to belong together: a listener's certificate, or the client certificate an upstream
/// is shown. Reads the files: call it off the async workers. No error holds key material.
pub fn certified_key(cert: &Path, key: &Path, provider: &rustls::crypto::CryptoProvider) -> Result<CertifiedKey, KeyPairError> {
    let chain = pem_certs(cert).map_err(|reason| KeyPairError::Cert { path: cert.display().to_string(), reason })?;
    let key_error = |reason: String| KeyPairError::Key { path: key.display().to_string(), reason };
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        key_error(match e {
            // An encrypted key (PKCS#8 `ENCRYPTED PRIVATE KEY`, or a legacy one with
            // `Proc-Type: 4,ENCRYPTED`) is no key rustls reads: say so, and how to decrypt it.
            rustls::pki_types::pem::Error::NoItemsFound if encrypted_pem(key) => {
                "the private key is encrypted, which is not supported: decrypt it (`openssl pkey -in KEY -out KEY.plain`) and keep that file readable by the gateway only".to_owned()
            }
            rustls::pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY in it".to_owned(),
            other => other.to_string(),
        })
    })?;
    let signing_key = provider.key_provider.load_private_key(key_der).map_err(|e| key_error(format!("unusable private key: {e}")))?;
    // As `CertifiedKey::from_der`, telling a key that is another certificate's from a first
    // certificate that cannot be read.
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        // A chain written issuer first (`cat intermediate.pem leaf.pem`) would be sent so, and
        // "another certificate's key" would send the operator looking for the wrong file.
        Err(rustls::Error::InconsistentKeys(_)) => match (1..certified.cert.len()).find(|&i| {
            CertifiedKey::new(vec![certified.cert[i].clone()], certified.key.clone()).keys_match().is_ok()
        }) {
            Some(i) => Err(KeyPairError::OutOfOrder { leaf_at: i + 1 }),
            None => Err(KeyPairError::Mismatch),
        },
        Err(e) => Err(KeyPairError::Cert { path: cert.display().to_string(), reason: format!("its first certificate cannot be read: {e}") }),
    }
}

/// Whether the PEM file at `path` holds an encrypted private key (read again, on the error path
/// only).
fn encrypted_pem(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|pem| {
        let has = |needle: &[u8]| pem.windows(needle.len()).any(|w| w == needle);
        has(b"ENCRYPTED PRIVATE KEY") || has(b"Proc-Type: 4,ENCRYPTED")
    })
}

/// What load says of a listener's certificate file besides loading it: what clients will
/// refuse in it, and when its leaf expires.
#[derive(Debug)]
pub struct CertificateRemarks {
    /// Each problem, said as a warning: the certificate is served all the same.
    pub problems: Vec<String>,
    /// The leaf's `notAfter`, in seconds since the Unix epoch
    /// (`airlock_tls_certificate_expiry_timestamp_seconds`).
    pub expires: i64,
}

/// Reads the PEM chain at `path` once for [`CertificateRemarks`] as of `now`. `None`:
/// unreadable (said by the load itself).
pub fn certificate_remarks(path: &Path, now: std::time::SystemTime) -> Option<CertificateRemarks> {
    let chain = pem_certs(path).ok()?;
    let (_, leaf) = x509_parser::parse_x509_certificate(chain.first()?.as_ref()).ok()?;
    let now = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX));
    let problems = [validity_problem(&leaf, now), missing_intermediate(&leaf, chain.len())];
    Some(CertificateRemarks { problems: problems.into_iter().flatten().collect(), expires: leaf.validity().not_after.timestamp() })
}

/// What is wrong with when `leaf` is valid, at `now` (Unix seconds): expired, or not valid yet
/// (clients refuse it either way, so the gateway says so at load rather than serve it
/// unremarked).
fn validity_problem(leaf: &x509_parser::certificate::X509Certificate<'_>, now: i64) -> Option<String> {
    let validity = leaf.validity();
    if now > validity.not_after.timestamp() {
        Some(format!("the certificate expired on {}: clients will refuse it, renew it", validity.not_after))
    } else if now < validity.not_before.timestamp() {
        Some(format!("the certificate is not valid until {}: clients will refuse it until then", validity.not_before))
    } else {
        None
    }
}

/// What is missing from a chain of `certificates` whose leaf is `leaf`, when it is a publicly
/// issued certificate alone: not self-issued, and saying where its issuer's certificate is
/// (Authority Information Access, `caIssuers`), as public CAs' certificates do. Public CAs issue
/// from intermediates only, and the clients that do not fetch a missing intermediate (curl,
/// OpenSSL, Go, Java, Python: most API clients) refuse the chain while browsers, which fetch it,
/// accept it: the common mistake of serving `cert.pem` where `fullchain.pem` was meant. A
/// certificate issued straight by a private CA names no `caIssuers` and is not named here.
fn missing_intermediate(leaf: &x509_parser::certificate::X509Certificate<'_>, certificates: usize) -> Option<String> {
    if certificates != 1 || leaf.issuer() == leaf.subject() {
        return None;
    }
    let names_issuer = leaf.iter_extensions().any(|ext| match ext.parsed_extension() {
        x509_parser::extensions::ParsedExtension::AuthorityInfoAccess(aia) => {
            aia.iter().any(|desc| desc.access_method == x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_CA_ISSUERS)
        }
        _ => false,
    });
    names_issuer.then(|| {
        format!(
            "the file holds the certificate alone, without the intermediate certificate of its issuer `{}`: \
             clients that do not fetch it (curl, Go, Java, Python) will refuse the certificate; append the \
             intermediate(s) to the file (the CA's full chain, `fullchain.pem` rather than `cert.pem`)",
            leaf.issuer()
        )
    })
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

/// The identity in a client's (already verified) certificate. The subject's attribute values
/// and each SAN are escaped (RFC 4514: `\,` and the like), so a value with a comma in it cannot
/// pass for another attribute or another SAN: a CN of `alice, O=Admins` reads
/// `CN=alice\, O=Admins`, not as an `O=Admins` beside it.
pub fn client_identity(cert: &CertificateDer<'_>) -> Option<ClientIdentity> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let sans = alternative_names(&parsed, false).iter().map(|san| escape_list_item(san)).collect();
    Some(ClientIdentity { subject: distinguished_name(parsed.subject()), sans })
}

/// A distinguished name as x509-parser writes it (`CN=billing, O=Example`: RDNs in the
/// certificate's order, joined by `, `; several attributes of one RDN by ` + `), with each
/// value escaped as RFC 4514 says, which x509-parser does not do.
fn distinguished_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    use x509_parser::der_parser::asn1_rs::Tag;
    let registry = x509_parser::objects::oid_registry();
    let attribute = |attr: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        let key = x509_parser::objects::oid2abbrev(attr.attr_type(), registry)
            .map(str::to_owned)
            .unwrap_or_else(|_| attr.attr_type().to_id_string());
        let data = attr.attr_value().data;
        let value = match attr.attr_value().tag() {
            Tag::NumericString
            | Tag::VisibleString
            | Tag::PrintableString
            | Tag::GeneralString
            | Tag::ObjectDescriptor
            | Tag::GraphicString
            | Tag::T61String
            | Tag::VideotexString
            | Tag::Utf8String
            | Tag::Ia5String => escape_dn_value(&String::from_utf8_lossy(data)),
            Tag::BmpString => {
                let units: Vec<u16> = data.chunks(2).map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])).collect();
                escape_dn_value(&String::from_utf16_lossy(&units))
            }
            // Not a string: `#` and its DER in hex, as RFC 4514 writes such a value.
            _ => format!("#{}", attr.as_slice().iter().map(|b| format!("{b:02X}")).collect::<String>()),
        };
        format!("{key}={value}")
    };
    name.iter().map(|rdn| rdn.iter().map(attribute).collect::<Vec<_>>().join(" + ")).collect::<Vec<_>>().join(", ")
}

/// An attribute value escaped as RFC 4514 2.4 says: `"`, `+`, `,`, `;`, `<`, `>` and `\`
/// anywhere, a leading `#` or space, a trailing space, and NUL.
fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => out.push('\\'),
            '#' if i == 0 => out.push('\\'),
            ' ' if i == 0 || i == last => out.push('\\'),
            '\0' => {
                out.push_str("\\00");
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// One item of a comma-separated list (`tls.client.sans`): `\` and `,` escaped with a `\`.
fn escape_list_item(item: &str) -> String {
    item.replace('\\', "\\\\").replace(',', "\\,")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The PEM files of the upstream client certificate config fixtures.
    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tls").join(name)
    }

    #[test]
    fn a_certificate_and_its_key_are_loaded_only_together() {
        let provider = rustls::crypto::ring::default_provider();
        let pair = certified_key(&fixture("client.pem"), &fixture("client.key"), &provider).expect("a PKCS#8 key and its certificate");
        assert_eq!(pair.cert.len(), 1);
        // `other.key` (SEC1) is read, and found to be another certificate's.
        assert!(matches!(certified_key(&fixture("client.pem"), &fixture("other.key"), &provider), Err(KeyPairError::Mismatch)));
        let no_key = certified_key(&fixture("client.pem"), &fixture("client.pem"), &provider);
        assert!(matches!(&no_key, Err(KeyPairError::Key { reason, .. }) if reason == "no PRIVATE KEY in it"), "{no_key:?}");
        let no_cert = certified_key(&fixture("client.key"), &fixture("client.key"), &provider);
        assert!(matches!(&no_cert, Err(KeyPairError::Cert { reason, .. }) if reason == "no CERTIFICATE in it"), "{no_cert:?}");
        let dir = tempfile::tempdir().expect("tempdir");
        let encrypted = dir.path().join("encrypted.key");
        std::fs::write(&encrypted, "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n").expect("write");
        let locked = certified_key(&fixture("client.pem"), &encrypted, &provider);
        assert!(matches!(&locked, Err(KeyPairError::Key { reason, .. }) if reason.contains("encrypted, which is not supported")), "{locked:?}");
        let missing = certified_key(&fixture("missing.pem"), &fixture("client.key"), &provider);
        assert!(matches!(&missing, Err(KeyPairError::Cert { path, .. }) if path.ends_with("missing.pem")), "{missing:?}");
    }
}
