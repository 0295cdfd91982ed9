//! `builtin:http-signatures` end to end: HTTP Message Signatures (RFC 9421) made by an
//! independent signer (the signature bases written out here, signed with the `jsonwebtoken`
//! crate's ring primitives: HS256, PS512, RS256, ES256, ES384 and EdDSA are the RFC 9421
//! `hmac-sha256`, `rsa-pss-sha512`, `rsa-v1_5-sha256`, `ecdsa-p256-sha256`, `ecdsa-p384-sha384`
//! and `ed25519`), and the RFC's own appendix B requests, sent through the real gateway to a
//! real upstream.

use airlock_tests::{Gateway, HttpClient, Reply, Upstream};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use sha2::Digest as _;

const RSA_PRIVATE: &str = include_str!("../fixtures/jwt/rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../fixtures/jwt/rsa-public.pem");
const P256_PRIVATE: &str = include_str!("../fixtures/jwt/p256-private.pem");
const P256_PUBLIC: &str = include_str!("../fixtures/jwt/p256-public.pem");
const P384_PRIVATE: &str = include_str!("../fixtures/jwt/p384-private.pem");
const P384_PUBLIC: &str = include_str!("../fixtures/jwt/p384-public.pem");
const ED_PRIVATE: &str = include_str!("../fixtures/jwt/ed-private.pem");
const ED_PUBLIC: &str = include_str!("../fixtures/jwt/ed-public.pem");
const PARTNER_SECRET: &str = "partner-hmac-secret-of-at-least-32-bytes";
const SERVICE_SECRET: &str = "service-hmac-secret-of-at-least-32-bytes";

/// RFC 9421 appendix B.1's keys: B.1.2 `test-key-rsa-pss`, B.1.4 `test-key-ed25519`, B.1.5
/// `test-shared-secret`.
const RFC_RSA_PSS: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAr4tmm3r20Wd/PbqvP1s2
+QEtvpuRaV8Yq40gjUR8y2Rjxa6dpG2GXHbPfvMs8ct+Lh1GH45x28Rw3Ry53mm+
oAXjyQ86OnDkZ5N8lYbggD4O3w6M6pAvLkhk95AndTrifbIFPNU8PPMO7OyrFAHq
gDsznjPFmTOtCEcN2Z1FpWgchwuYLPL+Wokqltd11nqqzi+bJ9cvSKADYdUAAN5W
Utzdpiy6LbTgSxP7ociU4Tn0g5I6aDZJ7A8Lzo0KSyZYoA485mqcO0GVAdVw9lq4
aOT9v6d+nb4bnNkQVklLQ3fVAvJm+xdDOp9LCNCN48V2pnDOkFV6+U9nV5oyc6XI
2wIDAQAB
-----END PUBLIC KEY-----";
const RFC_ED25519: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=
-----END PUBLIC KEY-----";
const RFC_SHARED_SECRET: &str = "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==";

/// The keys of consumer `partner`: (keyid, RFC 9421 algorithm, the signing algorithm here,
/// TOML key material).
fn partner_keys() -> Vec<(&'static str, &'static str, Algorithm, String)> {
    let pem = |pem: &str| format!("pem = '''{}'''", pem.trim());
    vec![
        ("partner-hmac", "hmac-sha256", Algorithm::HS256, format!("secret = \"{PARTNER_SECRET}\"")),
        ("partner-ps512", "rsa-pss-sha512", Algorithm::PS512, pem(RSA_PUBLIC)),
        ("partner-rs256", "rsa-v1_5-sha256", Algorithm::RS256, pem(RSA_PUBLIC)),
        ("partner-es256", "ecdsa-p256-sha256", Algorithm::ES256, pem(P256_PUBLIC)),
        ("partner-es384", "ecdsa-p384-sha384", Algorithm::ES384, pem(P384_PUBLIC)),
        ("partner-ed", "ed25519", Algorithm::EdDSA, pem(ED_PUBLIC)),
    ]
}

fn config() -> String {
    let keys: String = partner_keys()
        .iter()
        .map(|(keyid, alg, _, material)| format!("  {{ keyid = \"{keyid}\", alg = \"{alg}\", {material} }},\n"))
        .collect();
    format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[[consumers]]
id = "guest"
groups = ["public"]

[[consumers]]
id = "partner"
groups = ["partners", "beta"]
[consumers.credentials]
keys = ["partner-api-key"]
http_signatures = [
{keys}]

[[consumers]]
id = "rfc-9421"
[consumers.credentials]
http_signatures = [
  {{ keyid = "test-key-rsa-pss", alg = "rsa-pss-sha512", pem = '''{RFC_RSA_PSS}''' }},
  {{ keyid = "test-key-ed25519", alg = "ed25519", pem = '''{RFC_ED25519}''' }},
  {{ keyid = "test-shared-secret", alg = "hmac-sha256", secret_base64 = "{RFC_SHARED_SECRET}" }},
]

# The defaults: @method and @target-uri, content-digest with a body, 300 s.
[[routes]]
id = "api"
path_prefix = "/api"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:http-signatures"
config = {{ keys = [{{ keyid = "service", alg = "hmac-sha256", secret = "{SERVICE_SECRET}" }}] }}

# Two credentials: an API key naming the consumer, then a signature by the calling service's
# own key, which names none.
[[routes]]
id = "both"
path_prefix = "/both"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
[[routes.plugins]]
plugin = "builtin:http-signatures"
config = {{ keys = [{{ keyid = "service", alg = "hmac-sha256", secret = "{SERVICE_SECRET}" }}] }}

# Two route-level keys, naming no consumer, before a cache.
[[routes]]
id = "cached"
path_prefix = "/cached"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:http-signatures"
config = {{ keys = [{{ keyid = "service", alg = "hmac-sha256", secret = "{SERVICE_SECRET}" }}, {{ keyid = "service2", alg = "hmac-sha256", secret = "{PARTNER_SECRET}" }}] }}
[[routes.plugins]]
plugin = "builtin:proxy-cache"

[[routes]]
id = "anon"
path_prefix = "/anon"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:http-signatures"
config = {{ anonymous = "guest" }}

# Either credential, the key first: a signature beside a valid key is never checked.
[[routes]]
id = "either"
path_prefix = "/either"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:key-auth"
config = {{ anonymous = "guest" }}
[[routes.plugins]]
plugin = "builtin:http-signatures"
config = {{ anonymous = "guest", hide_credentials = true }}

[[routes]]
id = "once"
path_prefix = "/once"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:http-signatures"
config = {{ require_nonce = true, hide_credentials = true, label = "req", tag = "orders" }}

# The RFC's test request, signed in 2021: what its examples cover, and an age limit that
# reaches back that far.
[[routes]]
id = "rfc"
path = "/foo"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:http-signatures"
config = {{ required_components = [], content_digest = "if-signed", max_age_s = 1000000000 }}
"#
    )
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A request as the signer sees it.
struct Draft {
    method: &'static str,
    /// Origin-form target: path and query.
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Draft {
    fn new(method: &'static str, target: &str) -> Self {
        Self { method, target: target.to_owned(), headers: Vec::new(), body: Vec::new() }
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A JSON body with its `Content-Digest` (RFC 9530, SHA-256).
    fn json(self, body: &str) -> Self {
        let digest = format!("sha-256=:{}:", b64(&sha2::Sha256::digest(body.as_bytes())));
        let mut draft = self.header("content-type", "application/json").header("content-digest", &digest);
        draft.body = body.as_bytes().to_vec();
        draft
    }

    /// The value of one covered component, as RFC 9421 section 2 derives it (written out here
    /// independently of the plugin).
    fn component(&self, name: &str, authority: &str) -> String {
        let (path, query) = self.target.split_once('?').map_or((self.target.as_str(), None), |(p, q)| (p, Some(q)));
        match name {
            "@method" => self.method.to_owned(),
            "@target-uri" => format!("http://{authority}{}", self.target),
            "@authority" => authority.to_owned(),
            "@path" => path.to_owned(),
            "@query" => format!("?{}", query.unwrap_or("")),
            "@request-target" => self.target.clone(),
            field => self.headers.iter().filter(|(n, _)| n == field).map(|(_, v)| v.trim()).collect::<Vec<_>>().join(", "),
        }
    }

    /// Signs the draft with `keyid`: `Signature-Input` and `Signature` under `label`, covering
    /// `components`, with `params` after `created` and `keyid`.
    fn sign(mut self, gw: &Gateway, label: &str, components: &[&str], created: i64, keyid: &str, params: &str) -> Self {
        let authority = gw.addr().to_string();
        let list = components.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(" ");
        let signature_params = format!("({list});created={created};keyid=\"{keyid}\"{params}");
        let mut base = String::new();
        for c in components {
            base.push_str(&format!("\"{c}\": {}\n", self.component(c, &authority)));
        }
        base.push_str(&format!("\"@signature-params\": {signature_params}"));
        let signature = sign_base(keyid, base.as_bytes());
        self.headers.push(("signature-input".into(), format!("{label}={signature_params}")));
        self.headers.push(("signature".into(), format!("{label}=:{}:", b64(&signature))));
        self
    }

    async fn send(&self, client: &HttpClient, gw: &Gateway) -> Reply {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        client.request(self.method, &gw.url(&self.target), &headers, &self.body).await
    }
}

/// A signature of `base` with the private key of `keyid`.
fn sign_base(keyid: &str, base: &[u8]) -> Vec<u8> {
    let (alg, key) = match keyid {
        "service" => (Algorithm::HS256, EncodingKey::from_secret(SERVICE_SECRET.as_bytes())),
        "partner-hmac" | "unknown-key" | "service2" => (Algorithm::HS256, EncodingKey::from_secret(PARTNER_SECRET.as_bytes())),
        "partner-ps512" => (Algorithm::PS512, EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap()),
        "partner-rs256" => (Algorithm::RS256, EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap()),
        "partner-es256" => (Algorithm::ES256, EncodingKey::from_ec_pem(P256_PRIVATE.as_bytes()).unwrap()),
        "partner-es384" => (Algorithm::ES384, EncodingKey::from_ec_pem(P384_PRIVATE.as_bytes()).unwrap()),
        "partner-ed" => (Algorithm::EdDSA, EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap()),
        other => panic!("no private key for {other}"),
    };
    let signature = jsonwebtoken::crypto::sign(base, &key, alg).unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature).unwrap()
}

const DEFAULT: &[&str] = &["@method", "@target-uri"];
const WITH_DIGEST: &[&str] = &["@method", "@target-uri", "content-digest"];

/// A 401 as the plugin answers it: `Accept-Signature` says what to sign, the body says only
/// whether a signature was found, and never echoes it.
fn assert_refused(r: &Reply, accept: &str) {
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("accept-signature").as_deref(), Some(accept));
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    let body = r.json();
    assert_eq!(body["error"], "unauthorized");
    assert_eq!(body["message"], "invalid HTTP message signature");
    // The gateway's error shape: the status and the request id besides, nothing else.
    assert_eq!((body["status"].as_u64(), body["request_id"].as_str()), (Some(401), r.header("x-request-id").as_deref()));
    assert_eq!(body.as_object().unwrap().len(), 4, "nothing else in the body: {body}");
}

const ACCEPT_GET: &str = "sig1=(\"@method\" \"@target-uri\");created";
const ACCEPT_BODY: &str = "sig1=(\"@method\" \"@target-uri\" \"content-digest\");created";

#[tokio::test]
async fn every_algorithm_reaches_the_upstream_as_its_consumer() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(), Some(&upstream)).await;
    for client in [HttpClient::http1(), HttpClient::http2()] {
        for (keyid, alg, _, _) in partner_keys() {
            // The client's own identity headers never pass.
            let r = Draft::new("GET", "/api/orders?status=open&page=2")
                .header("x-consumer-id", "admin")
                .header("x-anonymous-consumer", "true")
                .sign(&gw, "sig1", DEFAULT, now(), keyid, "")
                .send(&client, &gw)
                .await;
            assert_eq!(r.status, 200, "{alg}: {}", r.text());
            assert_eq!(r.upstream_header("x-consumer-id"), vec!["partner"], "{alg}");
            assert_eq!(r.upstream_header("x-consumer-groups"), vec!["partners,beta"]);
            assert!(r.upstream_header("x-anonymous-consumer").is_empty());
            // `hide_credentials` is off by default: the upstream may verify again.
            assert_eq!(r.upstream_header("signature-input").len(), 1);

            // A body, bound by its Content-Digest; the algorithm named as the key's.
            let r = Draft::new("POST", "/api/orders")
                .json(r#"{"item": "widget", "quantity": 3}"#)
                .sign(&gw, "sig1", WITH_DIGEST, now(), keyid, &format!(";alg=\"{alg}\""))
                .send(&client, &gw)
                .await;
            assert_eq!(r.status, 200, "{alg} with a body: {}", r.text());
            assert_eq!(r.json()["body"], r#"{"item": "widget", "quantity": 3}"#, "the body reaches the upstream whole");
            assert_eq!(r.upstream_header("x-consumer-id"), vec!["partner"]);
        }
        // A route's own key authenticates without naming a consumer.
        let r = Draft::new("GET", "/api/status").header("x-consumer-id", "admin").sign(&gw, "s", DEFAULT, now(), "service", "").send(&client, &gw).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.upstream_header("x-consumer-id").is_empty(), "no consumer, and the forged one removed");
    }
    gw.stop().await;
}

/// The requests of RFC 9421 appendix B.2 (`test-request` with its published `Signature-Input`
/// and `Signature`), byte for byte: other implementations' signatures verify here.
#[tokio::test]
async fn rfc_9421_appendix_b_requests_verify_as_published() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(), Some(&upstream)).await;
    let client = HttpClient::http1();
    let digest = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";
    let send = |input: &'static str, signature: &'static str, date: &'static str, body: &'static [u8]| {
        let client = client.clone();
        let url = gw.url("/foo?param=Value&Pet=dog");
        async move {
            let headers = [
                ("host", "example.com"),
                ("date", date),
                ("content-type", "application/json"),
                ("content-digest", digest),
                ("content-length", if body.len() == 18 { "18" } else { "19" }),
                ("signature-input", input),
                ("signature", signature),
            ];
            client.request("POST", &url, &headers, body).await
        }
    };
    let date = "Tue, 20 Apr 2021 02:07:55 GMT";
    let body: &[u8] = br#"{"hello": "world"}"#;
    let vectors: [(&str, &str, &str); 4] = [
        (
            "B.2.2 rsa-pss-sha512",
            r#"sig-b22=("@authority" "content-digest" "@query-param";name="Pet");created=1618884473;keyid="test-key-rsa-pss";tag="header-example""#,
            "sig-b22=:LjbtqUbfmvjj5C5kr1Ugj4PmLYvx9wVjZvD9GsTT4F7GrcQEdJzgI9qHxICagShLRiLMlAJjtq6N4CDfKtjvuJyE5qH7KT8UCMkSowOB4+ECxCmT8rtAmj/0PIXxi0A0nxKyB09RNrCQibbUjsLS/2YyFYXEu4TRJQzRw1rLEuEfY17SARYhpTlaqwZVtR8NV7+4UKkjqpcAoFqWFQh62s7Cl+H2fjBSpqfZUJcsIk4N6wiKYd4je2U/lankenQ99PZfB4jY3I5rSV2DSBVkSFsURIjYErOs0tFTQosMTAoxk//0RoKUqiYY8Bh0aaUEb0rQl3/XaVe4bXTugEjHSw==:",
        ),
        (
            "B.2.3 rsa-pss-sha512",
            r#"sig-b23=("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-rsa-pss""#,
            "sig-b23=:bbN8oArOxYoyylQQUU6QYwrTuaxLwjAC9fbY2F6SVWvh0yBiMIRGOnMYwZ/5MR6fb0Kh1rIRASVxFkeGt683+qRpRRU5p2voTp768ZrCUb38K0fUxN0O0iC59DzYx8DFll5GmydPxSmme9v6ULbMFkl+V5B1TP/yPViV7KsLNmvKiLJH1pFkh/aYA2HXXZzNBXmIkoQoLd7YfW91kE9o/CCoC1xMy7JA1ipwvKvfrs65ldmlu9bpG6A9BmzhuzF8Eim5f8ui9eH8LZH896+QIF61ka39VBrohr9iyMUJpvRX2Zbhl5ZJzSRxpJyoEZAFL2FUo5fTIztsDZKEgM4cUA==:",
        ),
        (
            "B.2.5 hmac-sha256",
            r#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#,
            "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:",
        ),
        (
            "B.2.6 ed25519",
            r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#,
            "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:",
        ),
    ];
    for (name, input, signature) in vectors {
        let r = send(input, signature, date, body).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(r.upstream_header("x-consumer-id"), vec!["rfc-9421"], "{name}");
    }
    // The same signatures over a changed message.
    let (_, b23_input, b23_signature) = vectors[1];
    let r = send(b23_input, b23_signature, date, br#"{"hello": "world!"}"#).await;
    assert_eq!(r.status, 401, "B.2.3 covers the length and the digest, and the digest binds the body");
    let (_, b22_input, b22_signature) = vectors[0];
    let r = send(b22_input, b22_signature, date, br#"{"hello": "world!"}"#).await;
    assert_eq!(r.status, 401, "B.2.2's digest is checked against the body, though its length is not signed");
    for (name, input, signature) in vectors {
        let r = send(input, signature, "Tue, 20 Apr 2021 02:07:56 GMT", body).await;
        if name.starts_with("B.2.2") {
            assert_eq!(r.status, 200, "B.2.2 does not cover the date");
        } else {
            assert_eq!(r.status, 401, "{name} covers the date");
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn tampered_requests_are_refused() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(), Some(&upstream)).await;
    let client = HttpClient::http1();
    let covered = ["@method", "@target-uri", "content-digest", "x-order-ref"];
    let signed = || {
        Draft::new("POST", "/api/orders?account=7")
            .header("x-order-ref", "A-100")
            .json(r#"{"amount": 10}"#)
            .sign(&gw, "sig1", &covered, now(), "partner-ed", "")
    };
    let r = signed().send(&client, &gw).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let hits = upstream.hits();

    let mut method = signed();
    method.method = "PUT";
    let mut path = signed();
    path.target = "/api/refunds?account=7".into();
    let mut query = signed();
    query.target = "/api/orders?account=8".into();
    let mut header = signed();
    header.headers.retain(|(n, _)| n != "x-order-ref");
    header = header.header("x-order-ref", "A-101");
    let mut body = signed();
    body.body = br#"{"amount": 10000}"#.to_vec();
    let mut digest = signed().json(r#"{"amount": 10000}"#);
    digest.headers.retain(|(n, v)| n != "content-digest" || !v.contains(&b64(&sha2::Sha256::digest(br#"{"amount": 10}"#))));
    let mut signature = signed();
    for (name, value) in &mut signature.headers {
        if name == "signature" {
            // One bit of the signature flipped.
            let bytes = base64::engine::general_purpose::STANDARD.decode(value.trim_start_matches("sig1=:").trim_end_matches(':')).unwrap();
            let mut flipped = bytes.clone();
            flipped[10] ^= 1;
            *value = format!("sig1=:{}:", b64(&flipped));
        }
    }
    for (what, draft) in [
        ("method", method),
        ("path", path),
        ("query", query),
        ("covered header", header),
        ("body", body),
        ("body and digest", digest),
        ("signature", signature),
    ] {
        let r = draft.send(&client, &gw).await;
        assert_refused(&r, ACCEPT_BODY);
        assert!(!r.text().contains("sig1=:"), "{what}: the signature is not echoed");
    }
    assert_eq!(upstream.hits(), hits, "no refused request reached the upstream");
    gw.stop().await;
}

#[tokio::test]
async fn stale_future_and_expired_signatures_are_refused() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(), Some(&upstream)).await;
    let client = HttpClient::http1();
    let send = |created: i64, params: String| {
        let draft = Draft::new("GET", "/api/orders").sign(&gw, "sig1", DEFAULT, created, "partner-hmac", &params);
        let client = client.clone();
        let gw = &gw;
        async move { draft.send(&client, gw).await }
    };
    assert_eq!(send(now() - 200, String::new()).await.status, 200);
    assert_eq!(send(now(), format!(";expires={}", now() + 60)).await.status, 200);
    assert_refused(&send(now() - 400, String::new()).await, ACCEPT_GET);
    assert_refused(&send(now() + 120, String::new()).await, ACCEPT_GET);
    assert_refused(&send(now() - 100, format!(";expires={}", now() - 60)).await, ACCEPT_GET);
    gw.stop().await;
}

#[tokio::test]
async fn unknown_keys_and_missing_components_are_refused() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(), Some(&upstream)).await;
    let client = HttpClient::http1();
    // No signature at all.
    let r = client.get(&gw.url("/api/orders")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("accept-signature").as_deref(), Some(ACCEPT_GET));
    // RFC 9110 15.5.2: every 401 carries a challenge.
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Signature"));
    assert_eq!(r.json()["message"], "no HTTP message signature (Signature-Input and Signature) in the request");
    // A body asks for content-digest too.
    let r = client.request("POST", &gw.url("/api/orders"), &[], b"{}").await;
    assert_eq!(r.header("accept-signature").as_deref(), Some(ACCEPT_BODY));

    // A keyid no key answers to (signed with a real secret).
    let r = Draft::new("GET", "/api/orders").sign(&gw, "sig1", DEFAULT, now(), "unknown-key", "").send(&client, &gw).await;
    assert_refused(&r, ACCEPT_GET);
    // The method alone can be replayed on any path: @target-uri is required.
    let r = Draft::new("GET", "/api/orders").sign(&gw, "sig1", &["@method"], now(), "partner-hmac", "").send(&client, &gw).await;
    assert_refused(&r, ACCEPT_GET);
    let r = Draft::new("GET", "/api/orders").sign(&gw, "sig1", &["@method", "@path", "@authority"], now(), "partner-hmac", "").send(&client, &gw).await;
    assert_refused(&r, ACCEPT_GET);
    // A body without content-digest covered.
    let r = Draft::new("POST", "/api/orders").json("{}").sign(&gw, "sig1", DEFAULT, now(), "partner-hmac", "").send(&client, &gw).await;
    assert_refused(&r, ACCEPT_BODY);
    // Content-Digest that does not match the body (covered, signed, and wrong).
    let mut wrong = Draft::new("POST", "/api/orders").json("{}");
    wrong.body = b"[]".to_vec();
    let r = wrong.sign(&gw, "sig1", WITH_DIGEST, now(), "partner-hmac", "").send(&client, &gw).await;
    assert_refused(&r, ACCEPT_BODY);
    // A key used with another algorithm than its own.
    let r = Draft::new("GET", "/api/orders").sign(&gw, "sig1", DEFAULT, now(), "partner-hmac", ";alg=\"ed25519\"").send(&client, &gw).await;
    assert_refused(&r, ACCEPT_GET);
    // Malformed fields are a 401, never a 500.
    for (input, signature) in [("garbage(", "sig1=:AAAA:"), ("sig1=(\"@method\");created=1;keyid=\"partner-hmac\"", "sig1=\"text\""), ("sig1=(\"@nope\");keyid=\"partner-hmac\"", "sig1=:AAAA:")] {
        let r = client.request("GET", &gw.url("/api/orders"), &[("signature-input", input), ("signature", signature)], b"").await;
        assert_refused(&r, ACCEPT_GET);
    }
    assert_eq!(upstream.hits(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn anonymous_fallback() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(), Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.request("GET", &gw.url("/anon/x"), &[("x-consumer-id", "partner")], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["guest"]);
    assert_eq!(r.upstream_header("x-consumer-groups"), vec!["public"]);
    assert_eq!(r.upstream_header("x-anonymous-consumer"), vec!["true"]);
    // An invalid signature counts as none.
    let r = Draft::new("GET", "/anon/x").sign(&gw, "sig1", DEFAULT, now() - 3600, "partner-hmac", "").send(&client, &gw).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["guest"]);
    // A valid one names its consumer, not anonymous.
    let r = Draft::new("GET", "/anon/x")
        .header("x-anonymous-consumer", "true")
        .sign(&gw, "sig1", DEFAULT, now(), "partner-es256", "")
        .send(&client, &gw)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["partner"]);
    assert!(r.upstream_header("x-anonymous-consumer").is_empty());
    gw.stop().await;
}

/// Either credential (key-auth, then http-signatures, both with `anonymous`): a signature beside
/// a valid key is never checked, and with `hide_credentials` it does not go on (before: passed
/// on unchecked, beside the key's consumer).
#[tokio::test]
async fn an_unchecked_signature_is_hidden_as_a_checked_one() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(), Some(&upstream)).await;
    let client = HttpClient::http1();
    let forged = [("x-api-key", "partner-api-key"), ("signature-input", "sig1=(\"@method\");created=1;keyid=\"partner-hmac\""), ("signature", "sig1=:AAAA:")];
    let r = client.request("GET", &gw.url("/either/x"), &forged, b"").await;
    assert_eq!((r.status.as_u16(), r.upstream_header("x-consumer-id")), (200, vec!["partner".to_owned()]), "{}", r.text());
    assert!(r.upstream_header("signature").is_empty() && r.upstream_header("signature-input").is_empty(), "{}", r.text());
    gw.stop().await;
}

/// After `key-auth` named the consumer, a signature by a route-level key (naming none) leaves
/// that consumer's headers for the upstream: they are key-auth's, not the client's.
#[tokio::test]
async fn a_key_naming_no_consumer_keeps_the_consumer_an_earlier_plugin_named() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(), Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = Draft::new("GET", "/both/x").header("x-api-key", "partner-api-key").sign(&gw, "sig1", DEFAULT, now(), "service", "").send(&client, &gw).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((r.upstream_header("x-consumer-id"), r.upstream_header("x-consumer-groups")), (vec!["partner".to_owned()], vec!["partners,beta".to_owned()]));
    // With no consumer named before, a client's own copies are still removed.
    let r = Draft::new("GET", "/api/x").header("x-consumer-id", "partner").sign(&gw, "sig1", DEFAULT, now(), "service", "").send(&client, &gw).await;
    assert_eq!((r.status.as_u16(), r.upstream_header("x-consumer-id")), (200, vec![]), "{}", r.text());
    gw.stop().await;
}

/// A signature by a route-level key names no consumer; the key id is recorded as the request's
/// credential, so a cache after the plugin keeps each signer's answers apart.
#[tokio::test]
async fn a_cache_after_a_key_naming_no_consumer_keeps_each_signers_answers() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(), Some(&upstream)).await;
    let client = HttpClient::http1();
    let mut seen = Vec::new();
    for keyid in ["service", "service2", "service", "service2"] {
        let r = Draft::new("GET", "/cached/report").sign(&gw, "sig1", DEFAULT, now(), keyid, "").send(&client, &gw).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let signed_by = r.upstream_header("signature-input").concat();
        assert!(signed_by.contains(&format!("keyid=\"{keyid}\"")), "{keyid} got the answer to {signed_by}");
        seen.push(r.header("x-cache-status").unwrap_or_default());
    }
    assert_eq!(seen, ["Miss", "Miss", "Hit", "Hit"]);
    assert_eq!(upstream.hits(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn nonces_are_single_use_labels_and_tags_chosen_and_credentials_hidden() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config(), Some(&upstream)).await;
    let client = HttpClient::http1();
    let nonce = format!("n-{}", now());
    let signed = Draft::new("GET", "/once/pay?id=9").sign(&gw, "req", DEFAULT, now(), "partner-ed", &format!(";nonce=\"{nonce}\";tag=\"orders\""));
    let r = signed.send(&client, &gw).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_header("x-consumer-id"), vec!["partner"]);
    assert!(r.upstream_header("signature").is_empty() && r.upstream_header("signature-input").is_empty(), "hidden");
    // The same request again: a replay.
    let r = signed.send(&client, &gw).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("accept-signature").as_deref(), Some("req=(\"@method\" \"@target-uri\");created;tag=\"orders\""));
    // No nonce; the wrong tag; another label.
    for (label, params) in [("req", ";tag=\"orders\"".to_owned()), ("req", format!(";nonce=\"{nonce}-2\";tag=\"admin\"")), ("sig1", format!(";nonce=\"{nonce}-3\";tag=\"orders\""))] {
        let r = Draft::new("GET", "/once/pay?id=9").sign(&gw, label, DEFAULT, now(), "partner-ed", &params).send(&client, &gw).await;
        assert_eq!(r.status, 401, "{label}{params}: {}", r.text());
    }
    gw.stop().await;
}
