//! Plugin signing: ed25519 detached signatures over a component's bytes, so an operator can
//! refuse plugins nobody they trust has signed (`[trust] require_signatures = true`).
//!
//! - A key pair comes from `airlock plugin keygen`: the private key as a PKCS#8 PEM file, the
//!   public key as one line, `ed25519:<base64 of the 32 key bytes>`, the form `[trust] keys` takes.
//! - `airlock plugin sign PLUGIN.wasm --key KEY` writes `PLUGIN.wasm.sig` beside the component:
//!   the signer's public key, the component's sha256 and the signature, one `name value` per line.
//! - What is signed is `airlock-plugin-signature-v1\n` followed by the hex sha256 of the bytes, so
//!   a signature can never be replayed as anything else.
//!
//! Built-in plugins are part of the binary: they are trusted with it and never need a signature.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};

/// The domain-separation prefix of every signed message.
const CONTEXT: &[u8] = b"airlock-plugin-signature-v1\n";
/// First line of a signature file.
const HEADER: &str = "airlock-plugin-signature v1";

/// Why signing or verifying failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    /// A public key is not `ed25519:<base64 of 32 bytes>`. Holds what was given as
    /// [`PublicKey::parse`] describes it: never a private key's text.
    #[error("{0} is not a public key: expected `ed25519:<base64 of 32 bytes>` (from `airlock plugin keygen`)")]
    BadPublicKey(String),
    /// The private key file is not an ed25519 PKCS#8 key.
    #[error("{0}: not an ed25519 private key (PKCS#8 PEM, from `airlock plugin keygen`)")]
    BadPrivateKey(String),
    /// No signature file beside the component.
    #[error("unsigned: no signature file {0}")]
    Unsigned(String),
    /// The signature file cannot be read as one.
    #[error("{file}: malformed signature file: {reason}")]
    Malformed {
        /// The signature file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The component's bytes are not the ones signed.
    #[error("tampered: its sha256 is {actual}, the signature is for {signed}")]
    Tampered {
        /// Hash of the bytes now.
        actual: String,
        /// Hash the signature covers.
        signed: String,
    },
    /// The signer is not among the trusted keys.
    #[error("signed by {0}, which is not a trusted key")]
    Untrusted(String),
    /// The signature does not verify.
    #[error("the signature does not verify (by {0})")]
    Invalid(String),
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
}

/// A trusted (or signing) public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Parses `ed25519:<base64>`.
    pub fn parse(text: &str) -> Result<Self, SigningError> {
        let bad = || SigningError::BadPublicKey(describe_non_key(text));
        let b64 = text.trim().strip_prefix("ed25519:").ok_or_else(bad)?;
        let bytes = B64.decode(b64).map_err(|_| bad())?;
        Ok(Self(bytes.try_into().map_err(|_| bad())?))
    }
}

/// What was given where a public key belongs, fit for an error message and a CI log: a private
/// key (the easy mix-up with `keygen`'s two files) is named, never printed, and other long text
/// only counted.
fn describe_non_key(text: &str) -> String {
    let text = text.trim();
    if text.contains("PRIVATE KEY") {
        return "a private key (keep it secret; the public key is the `.pub` file `keygen` wrote beside it)".to_owned();
    }
    if text.len() <= 64 && !text.contains('\n') {
        return format!("`{text}`");
    }
    format!("a {}-line value of {} characters", text.lines().count(), text.chars().count())
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ed25519:{}", B64.encode(self.0))
    }
}

/// A new key pair: (private key as PKCS#8 PEM, public key).
pub fn generate() -> Result<(String, PublicKey), SigningError> {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| SigningError::BadPrivateKey("the system random source failed".into()))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| SigningError::BadPrivateKey("generated".into()))?;
    let public = PublicKey(pair.public_key().as_ref().try_into().map_err(|_| SigningError::BadPrivateKey("generated".into()))?);
    let pem = pem_rfc7468::encode_string("PRIVATE KEY", pem_rfc7468::LineEnding::LF, pkcs8.as_ref())
        .map_err(|e| SigningError::BadPrivateKey(e.to_string()))?;
    Ok((pem, public))
}

/// Where the signature of the component at `path` lives: `<path>.sig`.
pub fn signature_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

fn message(bytes: &[u8]) -> (String, Vec<u8>) {
    let digest = hex::encode(Sha256::digest(bytes));
    let mut msg = CONTEXT.to_vec();
    msg.extend_from_slice(digest.as_bytes());
    (digest, msg)
}

/// The signature file text for `bytes` signed with the PKCS#8 PEM `private_pem` (read from `key_file`).
pub fn sign(bytes: &[u8], private_pem: &str, key_file: &str) -> Result<String, SigningError> {
    let (label, der) = pem_rfc7468::decode_vec(private_pem.as_bytes()).map_err(|_| SigningError::BadPrivateKey(key_file.into()))?;
    if label != "PRIVATE KEY" {
        return Err(SigningError::BadPrivateKey(key_file.into()));
    }
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| SigningError::BadPrivateKey(key_file.into()))?;
    let public = PublicKey(pair.public_key().as_ref().try_into().map_err(|_| SigningError::BadPrivateKey(key_file.into()))?);
    let (digest, msg) = message(bytes);
    let sig = pair.sign(&msg);
    Ok(format!("{HEADER}\nkey {public}\nsha256 {digest}\nsignature {}\n", B64.encode(sig.as_ref())))
}

/// Checks the signature file text `sig` (read from `sig_file`) for `bytes` against `trusted`.
/// Returns the signer's key.
pub fn verify(bytes: &[u8], sig: &str, sig_file: &str, trusted: &[PublicKey]) -> Result<PublicKey, SigningError> {
    let malformed = |reason: &str| SigningError::Malformed { file: sig_file.to_owned(), reason: reason.to_owned() };
    let mut lines = sig.lines();
    if lines.next() != Some(HEADER) {
        return Err(malformed(&format!("the first line must be `{HEADER}`")));
    }
    let (mut key, mut signed, mut signature) = (None, None, None);
    for line in lines.filter(|l| !l.trim().is_empty()) {
        match line.split_once(' ') {
            Some(("key", v)) => key = Some(PublicKey::parse(v)?),
            Some(("sha256", v)) => signed = Some(v.trim().to_owned()),
            Some(("signature", v)) => signature = Some(B64.decode(v.trim()).map_err(|_| malformed("the signature is not base64"))?),
            _ => return Err(malformed(&format!("unexpected line `{line}`"))),
        }
    }
    let (key, signed, signature) = match (key, signed, signature) {
        (Some(k), Some(s), Some(g)) => (k, s, g),
        _ => return Err(malformed("needs `key`, `sha256` and `signature` lines")),
    };
    let (digest, msg) = message(bytes);
    if digest != signed {
        return Err(SigningError::Tampered { actual: digest, signed });
    }
    if !trusted.contains(&key) {
        return Err(SigningError::Untrusted(key.to_string()));
    }
    UnparsedPublicKey::new(&ED25519, key.0).verify(&msg, &signature).map_err(|_| SigningError::Invalid(key.to_string()))?;
    Ok(key)
}

/// Verifies the component at `path` (whose bytes are `bytes`) by its `<path>.sig`.
pub fn verify_file(path: &Path, bytes: &[u8], trusted: &[PublicKey]) -> Result<PublicKey, SigningError> {
    let sig_path = signature_path(path);
    let text = signature_text(&sig_path, std::fs::read_to_string(&sig_path))?;
    verify(bytes, &text, &sig_path.display().to_string(), trusted)
}

/// The outcome of reading the signature file `sig_path` (read by the caller, blocking or not):
/// a missing file means the component is unsigned.
pub fn signature_text(sig_path: &Path, read: std::io::Result<String>) -> Result<String, SigningError> {
    read.map_err(|e| {
        let shown = sig_path.display().to_string();
        if e.kind() == std::io::ErrorKind::NotFound {
            SigningError::Unsigned(shown)
        } else {
            SigningError::Io { path: shown, reason: e.to_string() }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_tamper_and_trust() {
        let (pem, public) = generate().unwrap();
        assert_eq!(PublicKey::parse(&public.to_string()).unwrap(), public);
        let bytes = b"\0asm component bytes";
        let sig = sign(bytes, &pem, "k.pem").unwrap();
        assert_eq!(verify(bytes, &sig, "x.sig", std::slice::from_ref(&public)), Ok(public.clone()));
        assert!(matches!(verify(b"\0asm other bytes", &sig, "x.sig", std::slice::from_ref(&public)), Err(SigningError::Tampered { .. })));
        let (_, stranger) = generate().unwrap();
        assert!(matches!(verify(bytes, &sig, "x.sig", &[stranger]), Err(SigningError::Untrusted(_))));
        // A signature with one bit flipped no longer verifies.
        let line = sig.lines().find_map(|l| l.strip_prefix("signature ")).unwrap();
        let mut raw = B64.decode(line).unwrap();
        raw[0] ^= 1;
        let forged = sig.replace(line, &B64.encode(raw));
        assert!(matches!(verify(bytes, &forged, "x.sig", std::slice::from_ref(&public)), Err(SigningError::Invalid(_))));
        assert!(matches!(verify(bytes, "nonsense", "x.sig", &[public]), Err(SigningError::Malformed { .. })));
        assert!(PublicKey::parse("ed25519:short").is_err());
        assert!(sign(bytes, "not a key", "k.pem").is_err());
    }

    #[test]
    fn a_private_key_given_as_a_public_one_is_named_never_printed() {
        let (pem, _) = generate().unwrap();
        let secret_line = pem.lines().nth(1).unwrap();
        let message = PublicKey::parse(&pem).unwrap_err().to_string();
        assert!(message.contains("a private key") && !message.contains(secret_line), "{message}");
        let long = "x".repeat(500);
        let message = PublicKey::parse(&long).unwrap_err().to_string();
        assert!(message.contains("500 characters") && !message.contains(&long), "{message}");
        let message = PublicKey::parse("ed25519:short").unwrap_err().to_string();
        assert!(message.starts_with("`ed25519:short` is not a public key"), "{message}");
    }
}
