//! Public-key signature verification and digests, done natively by the gateway (interface
//! `airlock:plugin/crypto`, always available: it computes and reaches nothing outside the
//! sandbox).
//!
//! [`sha256`] and [`digest`] hash natively, with the CPU's SHA instructions where it has them:
//! a plugin hashing per request (an API key compared by its digest) pays less than the same hash
//! costs inside Wasm, the call included. Needs a gateway speaking `airlock:plugin@0.2.4` or
//! later.
//!
//! RSA, RSA-PSS, ECDSA and Ed25519 verification inside Wasm cost milliseconds; natively, tens of
//! microseconds. Parse each key once (at configure) and keep the [`PublicKey`]:
//!
//! ```no_run
//! use airlock_sdk::crypto::{PublicKey, SignatureAlgorithm};
//!
//! let alg = SignatureAlgorithm::from_jws("ES256").expect("a JWS algorithm");
//! let key = PublicKey::from_jwk(alg, r#"{"kty":"EC","crv":"P-256","x":"...","y":"..."}"#)?;
//! let valid = key.verify(b"header.payload", &[0u8; 64]);
//! # Ok::<(), String>(())
//! ```

use crate::bindings::airlock::plugin::crypto as raw;

pub use raw::{DigestAlgorithm, SignatureAlgorithm};

/// The digest of `data` with `alg` (32, 48 or 64 bytes), computed by the gateway.
pub fn digest(alg: DigestAlgorithm, data: &[u8]) -> Vec<u8> {
    raw::digest(alg, data)
}

/// The SHA-256 digest of `data`, computed by the gateway.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    // The gateway always answers 32 bytes for SHA-256; all zeros is no key's digest.
    raw::digest(DigestAlgorithm::Sha256, data).try_into().unwrap_or([0; 32])
}

impl SignatureAlgorithm {
    /// The algorithm a JWS `alg` value names (`RS256` ... `EdDSA`), if the host verifies it.
    /// HMAC (`HS*`) is not here: it is fast inside Wasm, and its keys are secrets.
    pub fn from_jws(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::Rs256,
            "RS384" => Self::Rs384,
            "RS512" => Self::Rs512,
            "PS256" => Self::Ps256,
            "PS384" => Self::Ps384,
            "PS512" => Self::Ps512,
            "ES256" => Self::Es256,
            "ES384" => Self::Es384,
            "EdDSA" => Self::EdDsa,
            _ => return None,
        })
    }
}

/// A public key held by the gateway, bound to one algorithm.
#[derive(Debug)]
pub struct PublicKey(raw::PublicKey);

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY` (or, for RSA, `RSA PUBLIC KEY`) for `alg`.
    pub fn from_pem(alg: SignatureAlgorithm, pem: &str) -> Result<Self, String> {
        raw::PublicKey::from_pem(alg, pem).map(Self)
    }

    /// Parses a JSON Web Key (the JSON object text) for `alg`.
    pub fn from_jwk(alg: SignatureAlgorithm, jwk: &str) -> Result<Self, String> {
        raw::PublicKey::from_jwk(alg, jwk).map(Self)
    }

    /// True if `signature` is a valid signature of `message` with this key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.0.verify(message, signature)
    }
}
