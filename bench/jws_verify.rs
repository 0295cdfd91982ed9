//! JWS signature verification, natively in the gateway (interface `airlock:plugin/crypto`) and as
//! a whole `builtin:jwt` request phase that uses it. Run:
//! `cargo bench -p airlock --bench jws_verify`. Issue 3: in-Wasm RS256 and ES256 verification cost
//! more than 3x native, so public-key verification moved to the host; these are the figures that
//! decision is checked against (bench/README.md).

#[path = "support.rs"]
mod support;

use airlock::config::Isolation;
use airlock::exchange::RequestState;
use airlock::runtime::host::airlock::plugin::crypto::SignatureAlgorithm;
use airlock::runtime::host::crypto::PublicKey;
use base64::Engine as _;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

const RSA_PRIVATE: &str = include_str!("../tests/fixtures/jwt/rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../tests/fixtures/jwt/rsa-public.pem");
const P256_PRIVATE: &str = include_str!("../tests/fixtures/jwt/p256-private.pem");
const P256_PUBLIC: &str = include_str!("../tests/fixtures/jwt/p256-public.pem");

fn token(alg: Algorithm) -> String {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()),
        _ => EncodingKey::from_ec_pem(P256_PRIVATE.as_bytes()),
    }
    .expect("fixture key");
    let mut header = Header::new(alg);
    header.kid = Some(format!("{alg:?}").to_lowercase());
    encode(&header, &serde_json::json!({"sub": "bench", "exp": 4_000_000_000u64}), &key).expect("token")
}

fn split(token: &str) -> (Vec<u8>, Vec<u8>) {
    let (message, signature) = token.rsplit_once('.').expect("three parts");
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    (message.as_bytes().to_vec(), signature)
}

fn request(token: &str) -> RequestState {
    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).expect("header"));
    support::request_with_headers(http::Method::GET, headers, None)
}

fn jws_verify(c: &mut Criterion) {
    for (alg, sig, pem) in
        [(Algorithm::RS256, SignatureAlgorithm::Rs256, RSA_PUBLIC), (Algorithm::ES256, SignatureAlgorithm::Es256, P256_PUBLIC)]
    {
        let key = PublicKey::from_pem(sig, pem).expect("public key");
        let (message, signature) = split(&token(alg));
        assert!(key.verify(&message, &signature), "the measured verification succeeds");
        c.bench_function(&format!("native_verify/{alg:?}"), |b| b.iter(|| key.verify(&message, &signature)));
    }

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let config = serde_json::json!({"keys": [
        {"kid": "rs256", "alg": "RS256", "pem": RSA_PUBLIC},
        {"kid": "es256", "alg": "ES256", "pem": P256_PUBLIC},
    ]});
    let grants = ["state", "http-client", "files"];
    let pool = support::pool_with_grants(&rt, "jwt", &grants, &config.to_string(), Isolation::Pool);
    for alg in [Algorithm::RS256, Algorithm::ES256] {
        let token = token(alg);
        let (req, result) = rt.block_on(pool.on_request(Box::new(request(&token)), false, std::time::Instant::now()));
        assert!(matches!(result, Ok(airlock::runtime::pool::PhaseAction::Continue)), "{alg:?}: {result:?}");
        assert!(req.headers.get("authorization").is_none(), "the token was accepted and stripped");
        c.bench_function(&format!("jwt_plugin_on_request/{alg:?}"), |b| {
            b.to_async(&rt).iter_batched(
                || Box::new(request(&token)),
                |req| {
                    let pool = pool.clone();
                    async move { pool.on_request(req, false, std::time::Instant::now()).await }
                },
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(benches, jws_verify);
criterion_main!(benches);
