//! Verification keys: parsed at configure (PEM, JWK, an HMAC secret, or a JWKS document), each
//! bound to one algorithm. Public keys are handed to the gateway (`airlock_sdk::crypto`), which
//! verifies natively; HMAC is computed here.

use airlock_sdk::crypto::{PublicKey, SignatureAlgorithm};
use serde::Deserialize;
use serde_json::Value;

use crate::b64;

/// A JWS algorithm this plugin verifies. There is no `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Alg {
    /// The algorithm named by a JOSE `alg` value (case-sensitive, as RFC 7515 says).
    pub(crate) fn parse(name: &str) -> Option<Alg> {
        Some(match name {
            "HS256" => Alg::HS256,
            "HS384" => Alg::HS384,
            "HS512" => Alg::HS512,
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "EdDSA" => Alg::EdDSA,
            _ => return None,
        })
    }
}

/// A key as written in the config: `keys[i]` or a consumer's `credentials.jwt[i]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyConfig {
    kid: Option<String>,
    issuer: Option<String>,
    alg: Option<String>,
    secret: Option<String>,
    secret_file: Option<String>,
    pem: Option<String>,
    pem_file: Option<String>,
    jwk: Option<Value>,
}

/// The key material: an HMAC secret (checked here, HMAC is fast in Wasm and the secret stays in
/// the plugin) or a public key held and checked natively by the gateway (`airlock_sdk::crypto`).
enum Material {
    Hmac(Vec<u8>),
    Public(PublicKey),
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Material::Hmac(_) => "Hmac(..)",
            Material::Public(_) => "Public(..)",
        })
    }
}

/// A verification key with its one algorithm.
#[derive(Debug)]
pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    /// Tokens verified with this key must carry exactly this `iss`.
    pub(crate) issuer: Option<String>,
    pub(crate) alg: Alg,
    material: Material,
}

const ALGS: &str = "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

impl KeyConfig {
    /// Parses and checks the key, reading `secret_file` / `pem_file` from the plugin's granted
    /// directory (capability `files`).
    pub(crate) fn build(&self) -> Result<Key, String> {
        let jwk = self.jwk.as_ref().map(|v| v.as_object().ok_or("`jwk` must be a table")).transpose()?;
        let jwk_str = |name: &str| jwk.and_then(|j| j.get(name)).and_then(Value::as_str);
        let alg_name = self
            .alg
            .as_deref()
            .or_else(|| jwk_str("alg"))
            .ok_or_else(|| format!("`alg` is required (one of {ALGS})"))?;
        let alg = Alg::parse(alg_name).ok_or_else(|| format!("`alg`: `{alg_name}` is not one of {ALGS}"))?;
        let kid = self.kid.clone().or_else(|| jwk_str("kid").map(str::to_owned));
        let given = [self.secret.is_some(), self.secret_file.is_some(), self.pem.is_some(), self.pem_file.is_some(), jwk.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err("give exactly one of `secret` or `secret_file` (HS*), `pem`, `pem_file` or `jwk`".into());
        }
        let material = if let Some(secret) = &self.secret {
            Material::Hmac(secret.as_bytes().to_vec())
        } else if let Some(path) = &self.secret_file {
            Material::Hmac(read_granted_file("secret_file", path)?.trim_end_matches(['\r', '\n']).as_bytes().to_vec())
        } else if let Some(jwk) = jwk
            && jwk.get("kty").and_then(Value::as_str) == Some("oct")
        {
            Material::Hmac(jwk.get("k").and_then(Value::as_str).and_then(b64).ok_or("`jwk.k`: missing or not base64url")?)
        } else {
            let sig = alg.public().ok_or_else(|| format!("{alg_name} takes a `secret`, not a public key"))?;
            Material::Public(if let Some(jwk) = jwk {
                PublicKey::from_jwk(sig, &Value::Object(jwk.clone()).to_string()).map_err(|e| format!("`jwk`: {e}"))?
            } else {
                let (key, pem) = match (&self.pem, &self.pem_file) {
                    (Some(pem), _) => ("pem", pem.clone()),
                    (None, Some(path)) => ("pem_file", read_granted_file("pem_file", path)?),
                    (None, None) => return Err("no key material".into()),
                };
                PublicKey::from_pem(sig, &pem).map_err(|e| format!("`{key}`: {e}"))?
            })
        };
        if let Material::Hmac(secret) = &material {
            let min = match alg {
                Alg::HS256 => 32,
                Alg::HS384 => 48,
                Alg::HS512 => 64,
                _ => return Err(format!("the key does not fit `alg = \"{alg_name}\"`: a secret is only for HS*")),
            };
            if secret.len() < min {
                return Err(format!("`secret`: {alg_name} needs a secret of at least {min} bytes (RFC 7518 3.2)"));
            }
        }
        Ok(Key { kid, issuer: self.issuer.clone(), alg, material })
    }
}

impl Alg {
    /// The host-verified algorithm, for the public-key ones.
    fn public(self) -> Option<SignatureAlgorithm> {
        match self {
            Alg::HS256 | Alg::HS384 | Alg::HS512 => None,
            Alg::RS256 => Some(SignatureAlgorithm::Rs256),
            Alg::RS384 => Some(SignatureAlgorithm::Rs384),
            Alg::RS512 => Some(SignatureAlgorithm::Rs512),
            Alg::PS256 => Some(SignatureAlgorithm::Ps256),
            Alg::PS384 => Some(SignatureAlgorithm::Ps384),
            Alg::PS512 => Some(SignatureAlgorithm::Ps512),
            Alg::ES256 => Some(SignatureAlgorithm::Es256),
            Alg::ES384 => Some(SignatureAlgorithm::Es384),
            Alg::EdDSA => Some(SignatureAlgorithm::EdDsa),
        }
    }
}

/// Reads a file from the directory granted to the plugin (capability `files`), naming the key.
pub(crate) fn read_granted_file(key: &str, path: &str) -> Result<String, String> {
    airlock_sdk::files::read_to_string(path).map_err(|e| format!("`{key}`: {e}"))
}

/// A key from a JWKS document (RFC 7517 section 5): public keys only, `use` absent or `sig`.
/// Without `alg`, the algorithm follows from the key: `EC` P-256 is ES256, P-384 ES384, `OKP`
/// Ed25519 EdDSA, `RSA` RS256.
pub(crate) fn from_jwks_entry(jwk: &serde_json::Map<String, Value>) -> Result<Key, String> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    if let Some(usage) = text("use")
        && usage != "sig"
    {
        return Err(format!("`use` is `{usage}`"));
    }
    let alg_name = match (text("alg"), text("kty"), text("crv")) {
        (Some(alg), _, _) => alg,
        (None, Some("EC"), Some("P-256")) => "ES256",
        (None, Some("EC"), Some("P-384")) => "ES384",
        (None, Some("OKP"), Some("Ed25519")) => "EdDSA",
        (None, Some("RSA"), _) => "RS256",
        (None, kty, _) => return Err(format!("no `alg`, and key type `{}` names none", kty.unwrap_or("?"))),
    };
    let alg = Alg::parse(alg_name).ok_or_else(|| format!("algorithm `{alg_name}` is not accepted"))?;
    let sig = alg.public().ok_or("symmetric keys are not taken from a JWKS document")?;
    let key = PublicKey::from_jwk(sig, &Value::Object(jwk.clone()).to_string())?;
    Ok(Key { kid: text("kid").map(str::to_owned), issuer: None, alg, material: Material::Public(key) })
}

impl Key {
    /// Whether `signature` is this key's signature of `message` under its algorithm.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            Material::Public(key) => key.verify(message, signature),
            Material::Hmac(secret) => {
                use hmac::Mac;
                macro_rules! check {
                    ($hash:ty) => {{
                        let Ok(mut mac) = hmac::Hmac::<$hash>::new_from_slice(secret) else {
                            return false;
                        };
                        mac.update(message);
                        mac.verify_slice(signature).is_ok()
                    }};
                }
                match self.alg {
                    Alg::HS256 => check!(sha2::Sha256),
                    Alg::HS384 => check!(sha2::Sha384),
                    Alg::HS512 => check!(sha2::Sha512),
                    _ => false,
                }
            }
        }
    }
}
