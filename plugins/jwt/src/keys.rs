//! Verification keys: parsed at configure (PEM, JWK or an HMAC secret), each bound to one
//! algorithm.

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
    pem: Option<String>,
    jwk: Option<Value>,
}

/// The key material, by type.
#[derive(Debug)]
enum Material {
    Hmac(Vec<u8>),
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
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
    /// A config holding only a JWK, for unit tests.
    #[cfg(test)]
    pub(crate) fn jwk_for_tests(jwk: Value) -> Self {
        Self { kid: None, issuer: None, alg: None, secret: None, pem: None, jwk: Some(jwk) }
    }

    /// Parses and checks the key.
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
        let given = [self.secret.is_some(), self.pem.is_some(), jwk.is_some()].iter().filter(|g| **g).count();
        if given != 1 {
            return Err("give exactly one of `secret` (HS*), `pem` or `jwk`".into());
        }
        let material = if let Some(secret) = &self.secret {
            Material::Hmac(secret.as_bytes().to_vec())
        } else if let Some(pem) = &self.pem {
            from_pem(alg, pem)?
        } else {
            from_jwk(alg, jwk.expect("counted"))?
        };
        let fits = match (&material, alg) {
            (Material::Hmac(secret), Alg::HS256 | Alg::HS384 | Alg::HS512) => {
                let min = match alg {
                    Alg::HS256 => 32,
                    Alg::HS384 => 48,
                    _ => 64,
                };
                if secret.len() < min {
                    return Err(format!("`secret`: {alg_name} needs a secret of at least {min} bytes (RFC 7518 3.2)"));
                }
                true
            }
            (Material::Rsa(key), Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512) => {
                use rsa::traits::PublicKeyParts;
                if key.size() * 8 < 2048 {
                    return Err(format!("the RSA key has {} bits; at least 2048 are required", key.size() * 8));
                }
                true
            }
            (Material::P256(_), Alg::ES256) | (Material::P384(_), Alg::ES384) | (Material::Ed25519(_), Alg::EdDSA) => {
                true
            }
            _ => false,
        };
        if !fits {
            return Err(format!("the key does not fit `alg = \"{alg_name}\"`"));
        }
        Ok(Key { kid, issuer: self.issuer.clone(), alg, material })
    }
}

fn from_pem(alg: Alg, pem: &str) -> Result<Material, String> {
    let pem = pem.trim();
    let bad = |e: &dyn std::fmt::Display| format!("`pem`: not a public key for {alg:?}: {e}");
    Ok(match alg {
        Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
            use rsa::pkcs1::DecodeRsaPublicKey;
            use rsa::pkcs8::DecodePublicKey;
            let key = match rsa::RsaPublicKey::from_public_key_pem(pem) {
                Ok(key) => key,
                Err(e) => rsa::RsaPublicKey::from_pkcs1_pem(pem).map_err(|_| bad(&e))?,
            };
            Material::Rsa(key)
        }
        Alg::ES256 => {
            use p256::pkcs8::DecodePublicKey;
            Material::P256(p256::ecdsa::VerifyingKey::from_public_key_pem(pem).map_err(|e| bad(&e))?)
        }
        Alg::ES384 => {
            use p384::pkcs8::DecodePublicKey;
            Material::P384(p384::ecdsa::VerifyingKey::from_public_key_pem(pem).map_err(|e| bad(&e))?)
        }
        Alg::EdDSA => {
            use ed25519_dalek::pkcs8::DecodePublicKey;
            Material::Ed25519(ed25519_dalek::VerifyingKey::from_public_key_pem(pem).map_err(|e| bad(&e))?)
        }
        Alg::HS256 | Alg::HS384 | Alg::HS512 => {
            return Err("`pem`: HMAC algorithms take a `secret`".into());
        }
    })
}

fn from_jwk(alg: Alg, jwk: &serde_json::Map<String, Value>) -> Result<Material, String> {
    let field = |name: &str| -> Result<Vec<u8>, String> {
        jwk.get(name)
            .and_then(Value::as_str)
            .and_then(b64)
            .ok_or_else(|| format!("`jwk.{name}`: missing or not base64url"))
    };
    let kty = jwk.get("kty").and_then(Value::as_str).ok_or("`jwk.kty`: missing")?;
    let crv = jwk.get("crv").and_then(Value::as_str).unwrap_or("");
    Ok(match (kty, crv) {
        ("oct", _) => Material::Hmac(field("k")?),
        ("RSA", _) => {
            let n = rsa::BigUint::from_bytes_be(&field("n")?);
            let e = rsa::BigUint::from_bytes_be(&field("e")?);
            Material::Rsa(rsa::RsaPublicKey::new(n, e).map_err(|e| format!("`jwk`: invalid RSA key: {e}"))?)
        }
        ("EC", "P-256") => {
            let (x, y) = (field("x")?, field("y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("`jwk`: P-256 coordinates are 32 bytes".into());
            }
            let sec1 = [&[4u8][..], &x, &y].concat();
            Material::P256(p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| "`jwk`: not a P-256 point")?)
        }
        ("EC", "P-384") => {
            let (x, y) = (field("x")?, field("y")?);
            if x.len() != 48 || y.len() != 48 {
                return Err("`jwk`: P-384 coordinates are 48 bytes".into());
            }
            let sec1 = [&[4u8][..], &x, &y].concat();
            Material::P384(p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| "`jwk`: not a P-384 point")?)
        }
        ("OKP", "Ed25519") => {
            let x: [u8; 32] = field("x")?.try_into().map_err(|_| "`jwk.x`: an Ed25519 key is 32 bytes")?;
            Material::Ed25519(ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| "`jwk.x`: not an Ed25519 key")?)
        }
        _ => {
            return Err(format!("`jwk`: unsupported key type `{kty}` {crv} for {alg:?}"));
        }
    })
}

impl Key {
    /// Whether `signature` is this key's signature of `message` under its algorithm.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use rsa::signature::Verifier;
        match (&self.material, self.alg) {
            (Material::Hmac(secret), alg) => {
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
                match alg {
                    Alg::HS256 => check!(sha2::Sha256),
                    Alg::HS384 => check!(sha2::Sha384),
                    Alg::HS512 => check!(sha2::Sha512),
                    _ => false,
                }
            }
            (Material::Rsa(key), alg) => {
                macro_rules! pkcs1 {
                    ($hash:ty) => {{
                        let Ok(sig) = rsa::pkcs1v15::Signature::try_from(signature) else {
                            return false;
                        };
                        rsa::pkcs1v15::VerifyingKey::<$hash>::new(key.clone()).verify(message, &sig).is_ok()
                    }};
                }
                macro_rules! pss {
                    ($hash:ty) => {{
                        let Ok(sig) = rsa::pss::Signature::try_from(signature) else {
                            return false;
                        };
                        rsa::pss::VerifyingKey::<$hash>::new(key.clone()).verify(message, &sig).is_ok()
                    }};
                }
                match alg {
                    Alg::RS256 => pkcs1!(sha2::Sha256),
                    Alg::RS384 => pkcs1!(sha2::Sha384),
                    Alg::RS512 => pkcs1!(sha2::Sha512),
                    Alg::PS256 => pss!(sha2::Sha256),
                    Alg::PS384 => pss!(sha2::Sha384),
                    Alg::PS512 => pss!(sha2::Sha512),
                    _ => false,
                }
            }
            (Material::P256(key), Alg::ES256) => {
                p256::ecdsa::Signature::from_slice(signature).is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
            (Material::P384(key), Alg::ES384) => {
                p384::ecdsa::Signature::from_slice(signature).is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
            (Material::Ed25519(key), Alg::EdDSA) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify_strict(message, &sig).is_ok()),
            _ => false,
        }
    }
}
