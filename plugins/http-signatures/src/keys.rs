//! Verification keys, each bound to one RFC 9421 algorithm (section 3.3): HMAC secrets are
//! checked here (HMAC is fast in Wasm and the secret stays in the plugin); public keys are handed
//! to the gateway (`airlock_sdk::crypto`), which verifies natively.

use airlock_sdk::crypto::{PublicKey, SignatureAlgorithm};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

/// Smallest HMAC secret accepted, in bytes: the output size of SHA-256 (RFC 2104 section 3 calls
/// shorter keys "strongly discouraged"; RFC 7518 3.2 makes it a must for HS256).
pub(crate) const MIN_SECRET_BYTES: usize = 32;

/// An algorithm of the HTTP Signature Algorithms registry (RFC 9421 section 3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    /// `hmac-sha256` (3.3.3): a shared secret, computed in the plugin.
    HmacSha256,
    /// `rsa-pss-sha512` (3.3.1): RSASSA-PSS, SHA-512, MGF1 with SHA-512, 64-byte salt.
    RsaPssSha512,
    /// `rsa-v1_5-sha256` (3.3.2): RSASSA-PKCS1-v1_5 with SHA-256.
    RsaV15Sha256,
    /// `ecdsa-p256-sha256` (3.3.4): signatures are the 64-byte `r || s`.
    EcdsaP256Sha256,
    /// `ecdsa-p384-sha384` (3.3.5): signatures are the 96-byte `r || s`.
    EcdsaP384Sha384,
    /// `ed25519` (3.3.6).
    Ed25519,
}

/// The algorithm names this plugin verifies, for error messages.
pub(crate) const ALGS: &str = "hmac-sha256, rsa-pss-sha512, rsa-v1_5-sha256, ecdsa-p256-sha256, ecdsa-p384-sha384, ed25519";

impl Alg {
    /// The algorithm a registry name (the signature's `alg` parameter) names; case-sensitive.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "hmac-sha256" => Self::HmacSha256,
            "rsa-pss-sha512" => Self::RsaPssSha512,
            "rsa-v1_5-sha256" => Self::RsaV15Sha256,
            "ecdsa-p256-sha256" => Self::EcdsaP256Sha256,
            "ecdsa-p384-sha384" => Self::EcdsaP384Sha384,
            "ed25519" => Self::Ed25519,
            _ => return None,
        })
    }

    /// The registry name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::RsaPssSha512 => "rsa-pss-sha512",
            Self::RsaV15Sha256 => "rsa-v1_5-sha256",
            Self::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            Self::EcdsaP384Sha384 => "ecdsa-p384-sha384",
            Self::Ed25519 => "ed25519",
        }
    }

    /// The gateway's algorithm for the public-key ones (same primitives as their JWS twins:
    /// PS512, RS256, ES256, ES384, EdDSA).
    fn host(self) -> Option<SignatureAlgorithm> {
        match self {
            Self::HmacSha256 => None,
            Self::RsaPssSha512 => Some(SignatureAlgorithm::Ps512),
            Self::RsaV15Sha256 => Some(SignatureAlgorithm::Rs256),
            Self::EcdsaP256Sha256 => Some(SignatureAlgorithm::Es256),
            Self::EcdsaP384Sha384 => Some(SignatureAlgorithm::Es384),
            Self::Ed25519 => Some(SignatureAlgorithm::EdDsa),
        }
    }
}

/// A key as written in the config: `keys[i]` or a consumer's `credentials.http_signatures[i]`.
/// Exactly one source of key material: `secret`, `secret_base64` or `secret_file` for
/// `hmac-sha256`; `pem`, `pem_file` or `jwk` for the others.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyConfig {
    /// The `keyid` signers name in `Signature-Input`.
    keyid: String,
    /// The one algorithm the key verifies.
    alg: String,
    /// An HMAC secret as text (its UTF-8 bytes are the key).
    secret: Option<String>,
    /// An HMAC secret as base64 (standard alphabet, padding optional, whitespace ignored).
    secret_base64: Option<String>,
    /// An HMAC secret read from a file in the plugin's granted directory.
    secret_file: Option<String>,
    /// A PEM public key (`PUBLIC KEY`, or `RSA PUBLIC KEY` for the RSA algorithms).
    pem: Option<String>,
    /// A PEM public key read from a file in the plugin's granted directory.
    pem_file: Option<String>,
    /// A public JSON Web Key (`kty` `RSA`, `EC` or `OKP`).
    jwk: Option<Value>,
}

/// The key material.
enum Material {
    /// An HMAC-SHA256 secret, kept in the plugin.
    Hmac(Vec<u8>),
    /// A public key held and checked natively by the gateway.
    Public(PublicKey),
}

/// A verification key with its one algorithm.
pub(crate) struct Key {
    /// The `keyid` it answers to.
    pub(crate) keyid: String,
    /// Its algorithm: a signature naming another `alg` is refused.
    pub(crate) alg: Alg,
    material: Material,
}

impl KeyConfig {
    /// Parses and checks the key, reading `secret_file` / `pem_file` from the plugin's granted
    /// directory (capability `files`).
    pub(crate) fn build(&self) -> Result<Key, String> {
        if self.keyid.is_empty() {
            return Err("`keyid`: empty".into());
        }
        if !self.keyid.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err("`keyid`: only printable ASCII (it travels as a structured-field string in `Signature-Input`)".into());
        }
        let alg = Alg::parse(&self.alg).ok_or_else(|| format!("`alg`: `{}` is not one of {ALGS}", self.alg))?;
        let given = [
            self.secret.is_some(),
            self.secret_base64.is_some(),
            self.secret_file.is_some(),
            self.pem.is_some(),
            self.pem_file.is_some(),
            self.jwk.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err("give exactly one of `secret`, `secret_base64` or `secret_file` (hmac-sha256), `pem`, `pem_file` or `jwk` (public keys)".into());
        }
        let secret = if let Some(secret) = &self.secret {
            Some(("secret", secret.as_bytes().to_vec()))
        } else if let Some(text) = &self.secret_base64 {
            Some(("secret_base64", decode_base64(text).ok_or("`secret_base64`: not base64 (standard alphabet)")?))
        } else if let Some(path) = &self.secret_file {
            let text = airlock_sdk::files::read_to_string(path).map_err(|e| format!("`secret_file`: {e}"))?;
            Some(("secret_file", text.trim_end_matches(['\r', '\n']).as_bytes().to_vec()))
        } else {
            None
        };
        let material = match (alg.host(), secret) {
            (None, Some((name, secret))) => {
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(format!(
                        "`{name}`: hmac-sha256 needs a secret of at least {MIN_SECRET_BYTES} bytes (this one has {}): a shorter one is easier to guess than the signature it protects",
                        secret.len()
                    ));
                }
                Material::Hmac(secret)
            }
            (None, None) => return Err("hmac-sha256 takes a `secret`, `secret_base64` or `secret_file`, not a public key".into()),
            (Some(_), Some((name, _))) => {
                return Err(format!("`{name}`: {} takes a public key (`pem`, `pem_file` or `jwk`), not a secret", alg.name()));
            }
            (Some(host), None) => Material::Public(if let Some(jwk) = &self.jwk {
                if !jwk.is_object() {
                    return Err("`jwk`: must be a table".into());
                }
                PublicKey::from_jwk(host, &jwk.to_string()).map_err(|e| format!("`jwk`: {e} (`alg = \"{}\"`)", alg.name()))?
            } else {
                let (name, pem) = match (&self.pem, &self.pem_file) {
                    (Some(pem), _) => ("pem", pem.clone()),
                    (None, Some(path)) => {
                        ("pem_file", airlock_sdk::files::read_to_string(path).map_err(|e| format!("`pem_file`: {e}"))?)
                    }
                    (None, None) => return Err("no key material".into()),
                };
                PublicKey::from_pem(host, &pem).map_err(|e| format!("`{name}`: {e} (`alg = \"{}\"`)", alg.name()))?
            }),
        };
        Ok(Key { keyid: self.keyid.clone(), alg, material })
    }

    /// The `keyid`, for messages about a key that did not build.
    pub(crate) fn keyid(&self) -> &str {
        &self.keyid
    }
}

/// Standard base64, padding optional, ASCII whitespace (a secret wrapped over lines) ignored.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(compact).ok()
}

impl Key {
    /// Whether `signature` is this key's signature of `base` (the signature base).
    pub(crate) fn verify(&self, base: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            Material::Public(key) => key.verify(base, signature),
            Material::Hmac(secret) => {
                use hmac::Mac;
                let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else {
                    return false;
                };
                mac.update(base);
                // Constant time: `verify_slice` compares with `subtle`, whatever the length.
                mac.verify_slice(signature).is_ok()
            }
        }
    }
}
