//! `airlock:plugin/crypto`: public-key signature verification and digests done natively (always
//! granted).
//!
//! RSA, RSA-PSS, ECDSA and Ed25519 verification run tens of times slower inside Wasm than natively
//! (bench/README.md), so a plugin hands the host a public key once (PEM or JWK), keeps the
//! resource, and asks for verifications. Only public keys ever cross the boundary, and the host
//! only answers yes or no: nothing here reaches outside the sandbox. Keys live in the instance's
//! resource table, which is capped, so a plugin cannot grow host memory without bound.
//!
//! Parsing is done with the RustCrypto DER crates (`spki`, `pkcs1`, `pem-rfc7468`), verification
//! with `ring`. `digest` hashes what the plugin hands it with `ring` (SHA-256 on the CPU's SHA
//! instructions where it has them) and returns only the digest.

use base64::Engine as _;
use ring::signature::{self, RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm};
use serde_json::Value;
use spki::ObjectIdentifier;
use spki::der::Decode as _;
use wasmtime::component::Resource;

use super::HostState;
use super::airlock::plugin::crypto::{DigestAlgorithm, Host, HostPublicKey, SignatureAlgorithm};

/// Smallest RSA modulus accepted, in bits (RFC 7518 section 3.3).
const MIN_RSA_BITS: usize = 2048;

/// Largest RSA modulus accepted, in bits: the most ring verifies with. A larger key could never
/// verify, and a held key is host memory outside the plugin's own (1024 held 3 MiB moduli took
/// a plugin granted nothing past 800 MB).
const MAX_RSA_BITS: usize = 8192;

/// Longest RSA public exponent accepted, in bytes: ring takes exponents below 2^33.
const MAX_RSA_EXPONENT_BYTES: usize = 5;

/// Longest PEM or JWK text a key is read from: an 8192-bit RSA key's is under 2 KiB, a JWK with
/// an `x5c` certificate chain a few KiB. Longer text is refused before it is parsed.
const MAX_KEY_TEXT_BYTES: usize = 64 * 1024;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// A key type as an operator knows it (`an RSA key`), its OID only when it is none of these.
fn key_type(oid: ObjectIdentifier) -> String {
    match oid {
        RSA_ENCRYPTION => "an RSA key".to_owned(),
        RSA_PSS => "an RSA-PSS key".to_owned(),
        EC_PUBLIC_KEY => "an EC key".to_owned(),
        ED25519 => "an Ed25519 key".to_owned(),
        other => format!("a key of type {other}"),
    }
}

/// A parsed public key with the one algorithm it verifies (the `public-key` resource).
pub struct PublicKey {
    material: Material,
}

enum Material {
    /// RSA modulus and exponent (big-endian, no leading zeros) and the padding scheme.
    Rsa { params: &'static RsaParameters, n: Vec<u8>, e: Vec<u8> },
    /// An ECDSA uncompressed point or an Ed25519 key, as `ring` takes them.
    Raw { alg: &'static dyn VerificationAlgorithm, bytes: Vec<u8> },
}

/// The key family an algorithm needs.
#[derive(Clone, Copy)]
enum Family {
    Rsa(&'static RsaParameters),
    Ec { curve: ObjectIdentifier, name: &'static str, len: usize, alg: &'static dyn VerificationAlgorithm },
    Ed25519,
}

fn family(alg: SignatureAlgorithm) -> Family {
    use SignatureAlgorithm as A;
    match alg {
        A::Rs256 => Family::Rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
        A::Rs384 => Family::Rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
        A::Rs512 => Family::Rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
        A::Ps256 => Family::Rsa(&signature::RSA_PSS_2048_8192_SHA256),
        A::Ps384 => Family::Rsa(&signature::RSA_PSS_2048_8192_SHA384),
        A::Ps512 => Family::Rsa(&signature::RSA_PSS_2048_8192_SHA512),
        A::Es256 => Family::Ec { curve: P256, name: "P-256", len: 65, alg: &signature::ECDSA_P256_SHA256_FIXED },
        A::Es384 => Family::Ec { curve: P384, name: "P-384", len: 97, alg: &signature::ECDSA_P384_SHA384_FIXED },
        A::EdDsa => Family::Ed25519,
    }
}

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY` (SPKI) or `RSA PUBLIC KEY` (PKCS#1) for `alg`.
    pub fn from_pem(alg: SignatureAlgorithm, pem: &str) -> Result<Self, String> {
        let (label, der) = pem_rfc7468::decode_vec(pem.trim().as_bytes()).map_err(|e| format!("not a PEM block: {e}"))?;
        let family = family(alg);
        match (label, family) {
            ("RSA PUBLIC KEY", Family::Rsa(params)) => rsa_from_pkcs1(params, &der),
            ("RSA PUBLIC KEY", _) => Err("an RSA key cannot verify this algorithm".into()),
            ("PUBLIC KEY", _) => Self::from_spki(family, &der),
            (other, _) => Err(format!("a `{other}` PEM block is not a public key (expected `PUBLIC KEY`)")),
        }
    }

    fn from_spki(family: Family, der: &[u8]) -> Result<Self, String> {
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der).map_err(|e| format!("not a SubjectPublicKeyInfo: {e}"))?;
        let key = spki.subject_public_key.raw_bytes();
        let oid = spki.algorithm.oid;
        match family {
            Family::Rsa(params) if oid == RSA_ENCRYPTION || oid == RSA_PSS => rsa_from_pkcs1(params, key),
            Family::Ec { curve, name, len, alg } if oid == EC_PUBLIC_KEY => {
                let key_curve = spki.algorithm.parameters_oid().map_err(|_| "the EC key names no curve")?;
                if key_curve != curve {
                    return Err(format!("the EC key is not on {name}"));
                }
                raw(alg, key, len, name)
            }
            Family::Ed25519 if oid == ED25519 => raw(&signature::ED25519, key, 32, "Ed25519"),
            _ => Err(format!("the key is {}, which does not fit the algorithm", key_type(oid))),
        }
    }

    /// Parses a JWK (JSON object text) for `alg`.
    pub fn from_jwk(alg: SignatureAlgorithm, jwk: &str) -> Result<Self, String> {
        let jwk: serde_json::Map<String, Value> = serde_json::from_str(jwk).map_err(|e| format!("not a JSON object: {e}"))?;
        let text = |name: &str| jwk.get(name).and_then(Value::as_str);
        let bytes = |name: &str| -> Result<Vec<u8>, String> {
            let value = text(name).ok_or_else(|| format!("missing `{name}`"))?;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(value.trim_end_matches('='))
                .map_err(|_| format!("`{name}` is not base64url"))
        };
        let kty = text("kty").ok_or("missing `kty`")?;
        match (kty, family(alg)) {
            ("RSA", Family::Rsa(params)) => rsa_key(params, bytes("n")?, bytes("e")?),
            ("EC", Family::Ec { name, len, alg, .. }) => {
                let crv = text("crv").ok_or("missing `crv`")?;
                if crv != name {
                    return Err(format!("`crv` is `{crv}`, the algorithm needs `{name}`"));
                }
                let mut point = vec![0x04];
                for coordinate in ["x", "y"] {
                    let c = bytes(coordinate)?;
                    if c.len() != (len - 1) / 2 {
                        return Err(format!("`{coordinate}` has {} bytes, {name} needs {}", c.len(), (len - 1) / 2));
                    }
                    point.extend_from_slice(&c);
                }
                raw(alg, &point, len, name)
            }
            ("OKP", Family::Ed25519) => match text("crv") {
                Some("Ed25519") => raw(&signature::ED25519, &bytes("x")?, 32, "Ed25519"),
                other => Err(format!("`crv` must be `Ed25519`, not `{}`", other.unwrap_or(""))),
            },
            (kty, _) => Err(format!("a `kty = \"{kty}\"` key does not fit the algorithm")),
        }
    }

    /// Whether `signature` signs `message` under this key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            Material::Rsa { params, n, e } => {
                RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }.verify(params, message, signature).is_ok()
            }
            Material::Raw { alg, bytes } => UnparsedPublicKey::new(*alg, bytes).verify(message, signature).is_ok(),
        }
    }
}

fn rsa_from_pkcs1(params: &'static RsaParameters, der: &[u8]) -> Result<PublicKey, String> {
    let key = pkcs1::RsaPublicKey::from_der(der).map_err(|e| format!("not an RSA public key: {e}"))?;
    rsa_key(params, key.modulus.as_bytes().to_vec(), key.public_exponent.as_bytes().to_vec())
}

fn rsa_key(params: &'static RsaParameters, n: Vec<u8>, e: Vec<u8>) -> Result<PublicKey, String> {
    let strip = |v: Vec<u8>| v.iter().position(|b| *b != 0).map(|i| v[i..].to_vec()).unwrap_or_default();
    let (n, e) = (strip(n), strip(e));
    let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
    if bits < MIN_RSA_BITS {
        return Err(format!("the RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"));
    }
    if bits > MAX_RSA_BITS {
        return Err(format!("the RSA key has {bits} bits; at most {MAX_RSA_BITS} are taken (no larger key can verify)"));
    }
    if e.is_empty() {
        return Err("the RSA exponent is zero".into());
    }
    if e.len() > MAX_RSA_EXPONENT_BYTES {
        return Err(format!("the RSA exponent has {} bytes; at most {MAX_RSA_EXPONENT_BYTES} are taken", e.len()));
    }
    Ok(PublicKey { material: Material::Rsa { params, n, e } })
}

fn raw(alg: &'static dyn VerificationAlgorithm, bytes: &[u8], len: usize, name: &str) -> Result<PublicKey, String> {
    if bytes.len() != len || (len != 32 && bytes[0] != 0x04) {
        return Err(format!("not an uncompressed {name} public key of {len} bytes"));
    }
    Ok(PublicKey { material: Material::Raw { alg, bytes: bytes.to_vec() } })
}

impl Host for HostState {
    fn digest(&mut self, alg: DigestAlgorithm, data: Vec<u8>) -> Vec<u8> {
        let alg = match alg {
            DigestAlgorithm::Sha256 => &ring::digest::SHA256,
            DigestAlgorithm::Sha384 => &ring::digest::SHA384,
            DigestAlgorithm::Sha512 => &ring::digest::SHA512,
        };
        self.charged(data.len(), || ring::digest::digest(alg, &data).as_ref().to_vec())
    }
}

/// Refuses key text longer than [`MAX_KEY_TEXT_BYTES`], before it is parsed.
fn bounded(text: &str, form: &str) -> Result<(), String> {
    if text.len() > MAX_KEY_TEXT_BYTES {
        return Err(format!("the {form} is {} bytes; a public key's is at most {MAX_KEY_TEXT_BYTES}", text.len()));
    }
    Ok(())
}

impl HostState {
    fn keep_key(&mut self, key: Result<PublicKey, String>) -> Result<Resource<PublicKey>, String> {
        let key = key?;
        self.table.push(key).map_err(|e| format!("too many keys held: {e}"))
    }
}

impl HostPublicKey for HostState {
    fn from_pem(&mut self, alg: SignatureAlgorithm, pem: String) -> Result<Resource<PublicKey>, String> {
        bounded(&pem, "PEM text")?;
        let key = self.charged(pem.len(), || PublicKey::from_pem(alg, &pem));
        self.keep_key(key)
    }

    fn from_jwk(&mut self, alg: SignatureAlgorithm, jwk: String) -> Result<Resource<PublicKey>, String> {
        bounded(&jwk, "JWK")?;
        let key = self.charged(jwk.len(), || PublicKey::from_jwk(alg, &jwk));
        self.keep_key(key)
    }

    fn verify(&mut self, key: Resource<PublicKey>, message: Vec<u8>, signature: Vec<u8>) -> bool {
        let Ok(key) = self.table.get(&key) else { return false };
        self.charged(message.len(), || key.verify(&message, &signature))
    }

    fn drop(&mut self, key: Resource<PublicKey>) -> wasmtime::Result<()> {
        self.table.delete(key)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8037 appendix A.1 / A.4: Ed25519 public key and the signature of the example JWS.
    const RFC8037_JWK: &str = r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
    const RFC8037_INPUT: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
    const RFC8037_SIG: &str = "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap_or_default()
    }

    /// FIPS 180-2's "abc" vectors: each algorithm gives its own digest of its own length; and
    /// nothing at all hashes as SHA-256's empty-input vector.
    #[test]
    fn digests_are_the_standard_ones() {
        let mut state = HostState::new("p".into(), 1 << 20, std::time::Duration::from_millis(10));
        let mut digest = |alg, data: &[u8]| hex::encode(state.digest(alg, data.to_vec()));
        assert_eq!(digest(DigestAlgorithm::Sha256, b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(
            digest(DigestAlgorithm::Sha384, b"abc"),
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"
        );
        assert_eq!(
            digest(DigestAlgorithm::Sha512, b"abc"),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
        assert_eq!(digest(DigestAlgorithm::Sha256, b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn rfc8037_ed25519_example_verifies_and_tampering_does_not() {
        let key = PublicKey::from_jwk(SignatureAlgorithm::EdDsa, RFC8037_JWK).unwrap();
        assert!(key.verify(RFC8037_INPUT.as_bytes(), &b64(RFC8037_SIG)));
        let mut tampered = RFC8037_INPUT.as_bytes().to_vec();
        tampered[3] ^= 1;
        assert!(!key.verify(&tampered, &b64(RFC8037_SIG)));
    }

    #[test]
    fn keys_must_fit_their_algorithm() {
        let err = |r: Result<PublicKey, String>| r.err().unwrap_or_default();
        assert!(err(PublicKey::from_jwk(SignatureAlgorithm::Rs256, RFC8037_JWK)).contains("does not fit"));
        let small_rsa = r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#;
        assert!(err(PublicKey::from_jwk(SignatureAlgorithm::Rs256, small_rsa)).contains("at least 2048"));
        // Past what ring verifies with: host memory a plugin could hold 1024 of, never a key.
        let modulus = |bits: usize| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![0xff; bits / 8]);
        let large_rsa = format!(r#"{{"kty":"RSA","n":"{}","e":"AQAB"}}"#, modulus(8200));
        assert_eq!(err(PublicKey::from_jwk(SignatureAlgorithm::Rs256, &large_rsa)), "the RSA key has 8200 bits; at most 8192 are taken (no larger key can verify)");
        let largest = format!(r#"{{"kty":"RSA","n":"{}","e":"AQAB"}}"#, modulus(8192));
        assert!(PublicKey::from_jwk(SignatureAlgorithm::Rs256, &largest).is_ok());
        let long_exponent = format!(r#"{{"kty":"RSA","n":"{}","e":"AQAAAAAB"}}"#, modulus(2048));
        assert!(err(PublicKey::from_jwk(SignatureAlgorithm::Rs256, &long_exponent)).contains("exponent has 6 bytes"));
        let mut state = HostState::new("p".into(), 1 << 20, std::time::Duration::from_millis(10));
        let huge = format!(r#"{{"kty":"RSA","n":"{}","e":"AQAB"}}"#, modulus(1 << 20));
        assert_eq!(state.from_jwk(SignatureAlgorithm::Rs256, huge).err().unwrap_or_default(), "the JWK is 174794 bytes; a public key's is at most 65536");
        let wrong_curve = r#"{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}"#;
        assert!(err(PublicKey::from_jwk(SignatureAlgorithm::Es256, wrong_curve)).contains("P-256"));
        assert!(err(PublicKey::from_pem(SignatureAlgorithm::Es256, "not pem")).contains("not a PEM block"));
        // The key's type is named as an operator knows it, not by its OID.
        let rsa = include_str!("../../../../tests/fixtures/jwt/rsa-public.pem");
        assert_eq!(err(PublicKey::from_pem(SignatureAlgorithm::EdDsa, rsa)), "the key is an RSA key, which does not fit the algorithm");
    }
}
