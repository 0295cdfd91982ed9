//! Unit tests: the signature bases of RFC 9421 appendix B byte for byte (and their published
//! signatures verified over them natively, with `ring`), the section 2 examples of every
//! component kind, and the checks `verify` makes.

use std::collections::HashSet;

use base64::Engine as _;
use hmac::Mac as _;
use sha2::Digest as _;

use super::*;
use crate::components::{Component, FieldTypes, Message, signature_base};
use crate::signature::Fields;

/// A message written out by hand.
#[derive(Clone)]
struct TestMessage {
    method: &'static str,
    scheme: &'static str,
    path: String,
    query: Option<String>,
    fields: Vec<(String, Vec<u8>)>,
    status: Option<u16>,
    body: Option<Vec<u8>>,
}

impl TestMessage {
    fn new(method: &'static str, scheme: &'static str, target: &str, fields: &[(&str, &str)]) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.to_owned(), None),
        };
        Self {
            method,
            scheme,
            path,
            query,
            fields: fields.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec())).collect(),
            status: None,
            body: None,
        }
    }

    fn with(mut self, name: &str, value: &str) -> Self {
        self.fields.retain(|(n, _)| n != name);
        self.fields.push((name.to_owned(), value.as_bytes().to_vec()));
        self
    }

    fn with_body(mut self, body: &[u8]) -> Self {
        self.body = Some(body.to_vec());
        self
    }
}

impl Message for TestMessage {
    fn method(&self) -> String {
        self.method.to_owned()
    }
    fn scheme(&self) -> String {
        self.scheme.to_owned()
    }
    fn host(&self) -> Option<Vec<u8>> {
        self.fields.iter().find(|(n, _)| n == "host").map(|(_, v)| v.clone())
    }
    fn path(&self) -> String {
        self.path.clone()
    }
    fn query(&self) -> Option<String> {
        self.query.clone()
    }
    fn field(&self, name: &str) -> Vec<Vec<u8>> {
        self.fields.iter().filter(|(n, _)| n == name).map(|(_, v)| v.clone()).collect()
    }
    fn status(&self) -> Option<u16> {
        self.status
    }
    fn has_body(&self) -> bool {
        self.body.as_ref().is_some_and(|b| !b.is_empty())
    }
    fn body(&self) -> Option<Vec<u8>> {
        self.body.clone()
    }
}

const CREATED: i64 = 1618884473;
const DIGEST_512: &str =
    "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";
const SHARED_SECRET: &str = "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==";
const RSA_PSS_SPKI: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAr4tmm3r20Wd/PbqvP1s2\
+QEtvpuRaV8Yq40gjUR8y2Rjxa6dpG2GXHbPfvMs8ct+Lh1GH45x28Rw3Ry53mm+\
oAXjyQ86OnDkZ5N8lYbggD4O3w6M6pAvLkhk95AndTrifbIFPNU8PPMO7OyrFAHq\
gDsznjPFmTOtCEcN2Z1FpWgchwuYLPL+Wokqltd11nqqzi+bJ9cvSKADYdUAAN5W\
Utzdpiy6LbTgSxP7ociU4Tn0g5I6aDZJ7A8Lzo0KSyZYoA485mqcO0GVAdVw9lq4\
aOT9v6d+nb4bnNkQVklLQ3fVAvJm+xdDOp9LCNCN48V2pnDOkFV6+U9nV5oyc6XI\
2wIDAQAB";
const P256_SPKI: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqIVYZVLCrPZHGHjP17CTW0/+D9Lf\
w0EkjqF7xB4FivAxzic30tMM4GF+hR6Dxh71Z50VGGdldkkDXZCnTNnoXQ==";
const ED25519_SPKI: &str = "MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=";

fn b64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

fn b64e(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// RFC 9421 B.2's `test-request`.
fn test_request() -> TestMessage {
    TestMessage::new(
        "POST",
        "https",
        "/foo?param=Value&Pet=dog",
        &[
            ("Host", "example.com"),
            ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
            ("Content-Type", "application/json"),
            ("Content-Digest", DIGEST_512),
            ("Content-Length", "18"),
        ],
    )
    .with_body(br#"{"hello": "world"}"#)
}

/// RFC 9421 B.2's `test-response`.
fn test_response() -> TestMessage {
    let mut response = TestMessage::new(
        "",
        "https",
        "",
        &[
            ("Date", "Tue, 20 Apr 2021 02:07:56 GMT"),
            ("Content-Type", "application/json"),
            ("Content-Digest", "sha-512=:mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWdXymyU0rjJuahq4l5aGgfLQ==:"),
            ("Content-Length", "23"),
        ],
    )
    .with_body(br#"{"message": "good dog"}"#);
    response.status = Some(200);
    response
}

/// The base of the signature `label` of `input` / `signature` over `message`, and its bytes.
fn base_of(message: &impl Message, input: &str, signature: &str, label: &str) -> (String, Vec<u8>) {
    let fields = Fields::parse(&[input.as_bytes().to_vec()], &[signature.as_bytes().to_vec()]).unwrap();
    let signed = fields.signed(label).unwrap();
    let base = signature_base(&signed.components, &signed.params, message, &FieldTypes::default()).unwrap();
    (String::from_utf8(base).unwrap(), signed.signature)
}

/// Checks `signature` over `base` with `ring`, the key given as SubjectPublicKeyInfo DER
/// without its `prefix` bytes of algorithm header.
fn ring_verify(alg: &'static dyn ring::signature::VerificationAlgorithm, spki: &str, prefix: usize, base: &str, signature: &[u8]) -> bool {
    let der = b64(spki);
    ring::signature::UnparsedPublicKey::new(alg, &der[prefix..]).verify(base.as_bytes(), signature).is_ok()
}

#[test]
fn rfc_b_2_1_minimal_rsa_pss() {
    let (base, sig) = base_of(
        &test_request(),
        r#"sig-b21=();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd""#,
        "sig-b21=:d2pmTvmbncD3xQm8E9ZV2828BjQWGgiwAaw5bAkgibUopemLJcWDy/lkbbHAve4cRAtx31Iq786U7it++wgGxbtRxf8Udx7zFZsckzXaJMkA7ChG52eSkFxykJeNqsrWH5S+oxNFlD4dzVuwe8DhTSja8xxbR/Z2cOGdCbzR72rgFWhzx2VjBqJzsPLMIQKhO4DGezXehhWwE56YCE+O6c0mKZsfxVrogUvA4HELjVKWmAvtl6UnCh8jYzuVG5WSb/QEVPnP5TmcAnLH1g+s++v6d4s8m0gCw1fV5/SITLq9mhho8K3+7EPYTU8IU1bLhdxO5Nyt8C8ssinQ98Xw9Q==:",
        "sig-b21",
    );
    assert_eq!(base, r#""@signature-params": ();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd""#);
    assert!(ring_verify(&ring::signature::RSA_PSS_2048_8192_SHA512, RSA_PSS_SPKI, 24, &base, &sig));
}

#[test]
fn rfc_b_2_2_selective_rsa_pss() {
    let (base, sig) = base_of(
        &test_request(),
        r#"sig-b22=("@authority" "content-digest" "@query-param";name="Pet");created=1618884473;keyid="test-key-rsa-pss";tag="header-example""#,
        "sig-b22=:LjbtqUbfmvjj5C5kr1Ugj4PmLYvx9wVjZvD9GsTT4F7GrcQEdJzgI9qHxICagShLRiLMlAJjtq6N4CDfKtjvuJyE5qH7KT8UCMkSowOB4+ECxCmT8rtAmj/0PIXxi0A0nxKyB09RNrCQibbUjsLS/2YyFYXEu4TRJQzRw1rLEuEfY17SARYhpTlaqwZVtR8NV7+4UKkjqpcAoFqWFQh62s7Cl+H2fjBSpqfZUJcsIk4N6wiKYd4je2U/lankenQ99PZfB4jY3I5rSV2DSBVkSFsURIjYErOs0tFTQosMTAoxk//0RoKUqiYY8Bh0aaUEb0rQl3/XaVe4bXTugEjHSw==:",
        "sig-b22",
    );
    let expected = format!(
        "\"@authority\": example.com\n\"content-digest\": {DIGEST_512}\n\"@query-param\";name=\"Pet\": dog\n\"@signature-params\": (\"@authority\" \"content-digest\" \"@query-param\";name=\"Pet\");created=1618884473;keyid=\"test-key-rsa-pss\";tag=\"header-example\""
    );
    assert_eq!(base, expected);
    assert!(ring_verify(&ring::signature::RSA_PSS_2048_8192_SHA512, RSA_PSS_SPKI, 24, &base, &sig));
}

#[test]
fn rfc_b_2_3_full_coverage_rsa_pss() {
    let (base, sig) = base_of(
        &test_request(),
        r#"sig-b23=("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-rsa-pss""#,
        "sig-b23=:bbN8oArOxYoyylQQUU6QYwrTuaxLwjAC9fbY2F6SVWvh0yBiMIRGOnMYwZ/5MR6fb0Kh1rIRASVxFkeGt683+qRpRRU5p2voTp768ZrCUb38K0fUxN0O0iC59DzYx8DFll5GmydPxSmme9v6ULbMFkl+V5B1TP/yPViV7KsLNmvKiLJH1pFkh/aYA2HXXZzNBXmIkoQoLd7YfW91kE9o/CCoC1xMy7JA1ipwvKvfrs65ldmlu9bpG6A9BmzhuzF8Eim5f8ui9eH8LZH896+QIF61ka39VBrohr9iyMUJpvRX2Zbhl5ZJzSRxpJyoEZAFL2FUo5fTIztsDZKEgM4cUA==:",
        "sig-b23",
    );
    let expected = format!(
        "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@method\": POST\n\"@path\": /foo\n\"@query\": ?param=Value&Pet=dog\n\"@authority\": example.com\n\"content-type\": application/json\n\"content-digest\": {DIGEST_512}\n\"content-length\": 18\n\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@query\" \"@authority\" \"content-type\" \"content-digest\" \"content-length\");created=1618884473;keyid=\"test-key-rsa-pss\""
    );
    assert_eq!(base, expected);
    assert!(ring_verify(&ring::signature::RSA_PSS_2048_8192_SHA512, RSA_PSS_SPKI, 24, &base, &sig));
    // The body matches its Content-Digest, as the plugin checks it.
    assert_eq!(digest::check(&test_request().field("content-digest"), br#"{"hello": "world"}"#), Ok(()));
}

#[test]
fn rfc_b_2_4_response_ecdsa_p256() {
    let response = test_response();
    let (base, sig) = base_of(
        &response,
        r#"sig-b24=("@status" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-ecc-p256""#,
        "sig-b24=:wNmSUAhwb5LxtOtOpNa6W5xj067m5hFrj0XQ4fvpaCLx0NKocgPquLgyahnzDnDAUy5eCdlYUEkLIj+32oiasw==:",
        "sig-b24",
    );
    let expected = "\"@status\": 200\n\"content-type\": application/json\n\"content-digest\": sha-512=:mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWdXymyU0rjJuahq4l5aGgfLQ==:\n\"content-length\": 23\n\"@signature-params\": (\"@status\" \"content-type\" \"content-digest\" \"content-length\");created=1618884473;keyid=\"test-key-ecc-p256\"";
    assert_eq!(base, expected);
    // ECDSA signatures in RFC 9421 are the fixed r || s (3.3.4), as ring's `_FIXED` and the
    // gateway's `crypto` interface (JWS ES256) take them.
    assert_eq!(sig.len(), 64);
    assert!(ring_verify(&ring::signature::ECDSA_P256_SHA256_FIXED, P256_SPKI, 26, &base, &sig));
    assert_eq!(digest::check(&response.field("content-digest"), br#"{"message": "good dog"}"#), Ok(()));
    // A request has no status: a request signature covering it cannot verify.
    let err = Component::parse_config("@status").unwrap_err();
    assert!(err.contains("response"), "{err}");
}

#[test]
fn rfc_b_2_5_hmac_sha256_through_the_plugin() {
    let input = r#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#;
    let signature = "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:";
    let (base, _) = base_of(&test_request(), input, signature, "sig-b25");
    assert_eq!(
        base,
        "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@authority\": example.com\n\"content-type\": application/json\n\"@signature-params\": (\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\""
    );
    // The whole verification: key from `secret_base64`, label chosen by its keyid, HMAC in
    // constant time. The RFC signature covers neither the method and target nor the body, so
    // this route asks for less than the defaults.
    let plugin = build(&format!(
        r#"{{"keys": [{{"keyid": "test-shared-secret", "alg": "hmac-sha256", "secret_base64": "{SHARED_SECRET}"}}],
            "required_components": ["@authority", "date"], "content_digest": "if-signed", "max_age_s": 300}}"#
    ))
    .unwrap();
    let ok = Verified { owner: None, keyid: "test-shared-secret".into() };
    assert_eq!(verify(&plugin, &test_request(), input, signature, CREATED + 10), Ok(ok));
    // One changed covered field, and the MAC no longer matches.
    let tampered = test_request().with("content-type", "text/plain");
    assert!(invalid(verify(&plugin, &tampered, input, signature, CREATED + 10)).contains("does not verify"));
    // Uncovered fields may change.
    let other = test_request().with("content-length", "19");
    assert!(verify(&plugin, &other, input, signature, CREATED + 10).is_ok());
    // The defaults want `@method` and `@target-uri`, and `content-digest` with a body.
    let strict = build(&format!(r#"{{"keys": [{{"keyid": "test-shared-secret", "alg": "hmac-sha256", "secret_base64": "{SHARED_SECRET}"}}]}}"#)).unwrap();
    assert!(invalid(verify(&strict, &test_request(), input, signature, CREATED + 10)).contains("does not cover \"@method\""));
}

#[test]
fn rfc_b_2_6_ed25519() {
    let (base, sig) = base_of(
        &test_request(),
        r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#,
        "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:",
        "sig-b26",
    );
    let expected = "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@method\": POST\n\"@path\": /foo\n\"@authority\": example.com\n\"content-type\": application/json\n\"content-length\": 18\n\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\");created=1618884473;keyid=\"test-key-ed25519\"";
    assert_eq!(base, expected);
    assert!(ring_verify(&ring::signature::ED25519, ED25519_SPKI, 12, &base, &sig));
}

/// The base of one component of `message`, without the `@signature-params` line.
fn line(message: &impl Message, component: &str) -> Result<String, String> {
    line_with(message, component, &FieldTypes::default())
}

fn line_with(message: &impl Message, component: &str, types: &FieldTypes) -> Result<String, String> {
    let component = Component::parse_config(component)?;
    let base = signature_base(std::slice::from_ref(&component), "()", message, types)?;
    let text = String::from_utf8(base).unwrap();
    Ok(text.split('\n').next().unwrap().to_owned())
}

#[test]
fn rfc_2_1_fields() {
    let mut message = TestMessage::new(
        "GET",
        "https",
        "/",
        &[
            ("Host", "www.example.com"),
            ("Date", "Tue, 20 Apr 2021 02:07:56 GMT"),
            ("X-OWS-Header", "   Leading and trailing whitespace.   "),
            ("X-Obs-Fold-Header", "Obsolete\r\n    line folding."),
            ("Cache-Control", "max-age=60"),
            ("Cache-Control", "   must-revalidate"),
            ("Example-Dict", " a=1,    b=2;x=1;y=2,   c=(a   b   c)"),
            ("X-Empty-Header", ""),
        ],
    );
    assert_eq!(line(&message, "host").unwrap(), "\"host\": www.example.com");
    assert_eq!(line(&message, "date").unwrap(), "\"date\": Tue, 20 Apr 2021 02:07:56 GMT");
    assert_eq!(line(&message, "x-ows-header").unwrap(), "\"x-ows-header\": Leading and trailing whitespace.");
    assert_eq!(line(&message, "x-obs-fold-header").unwrap(), "\"x-obs-fold-header\": Obsolete line folding.");
    assert_eq!(line(&message, "cache-control").unwrap(), "\"cache-control\": max-age=60, must-revalidate");
    assert_eq!(line(&message, "example-dict").unwrap(), "\"example-dict\": a=1,    b=2;x=1;y=2,   c=(a   b   c)");
    // An empty field is there, with an empty value (note the space after the colon).
    assert_eq!(line(&message, "x-empty-header").unwrap(), "\"x-empty-header\": ");
    assert!(line(&message, "x-absent").unwrap_err().contains("does not have"));
    // Names are lower-case in identifiers: an upper-case one is not a field name.
    assert!(line(&message, "Cache-Control").is_err());

    // 2.1.1: strict serialization of a known (or configured) structured field.
    let types = FieldTypes::new([("example-dict".to_owned(), SfType::Dictionary)].into());
    assert_eq!(line_with(&message, "example-dict;sf", &types).unwrap(), "\"example-dict\";sf: a=1, b=2;x=1;y=2, c=(a b c)");
    assert!(line(&message, "example-dict;sf").unwrap_err().contains("structured_fields"));
    message = message.with("priority", "u=1,   i");
    assert_eq!(line(&message, "priority;sf").unwrap(), "\"priority\";sf: u=1, i");

    // 2.1.2: one dictionary member.
    message = message.with("example-dict", "a=1, b=2;x=1;y=2, c=(a b c), d");
    assert_eq!(line(&message, "example-dict;key=\"a\"").unwrap(), "\"example-dict\";key=\"a\": 1");
    assert_eq!(line(&message, "example-dict;key=\"d\"").unwrap(), "\"example-dict\";key=\"d\": ?1");
    assert_eq!(line(&message, "example-dict;key=\"b\"").unwrap(), "\"example-dict\";key=\"b\": 2;x=1;y=2");
    assert_eq!(line(&message, "example-dict;key=\"c\"").unwrap(), "\"example-dict\";key=\"c\": (a b c)");
    assert!(line(&message, "example-dict;key=\"e\"").unwrap_err().contains("no member"));

    // 2.1.3: each instance as a byte sequence.
    let message = TestMessage::new("GET", "https", "/", &[("Example-Header", "value, with, lots"), ("Example-Header", "of, commas")]);
    assert_eq!(line(&message, "example-header").unwrap(), "\"example-header\": value, with, lots, of, commas");
    assert_eq!(
        line(&message, "example-header;bs").unwrap(),
        "\"example-header\";bs: :dmFsdWUsIHdpdGgsIGxvdHM=:, :b2YsIGNvbW1hcw==:"
    );
}

#[test]
fn rfc_2_2_derived_components() {
    let message = TestMessage::new("POST", "https", "/path?param=value", &[("Host", "www.example.com")]);
    assert_eq!(line(&message, "@method").unwrap(), "\"@method\": POST");
    assert_eq!(line(&message, "@target-uri").unwrap(), "\"@target-uri\": https://www.example.com/path?param=value");
    assert_eq!(line(&message, "@authority").unwrap(), "\"@authority\": www.example.com");
    assert_eq!(line(&message, "@scheme").unwrap(), "\"@scheme\": https");
    assert_eq!(line(&message, "@request-target").unwrap(), "\"@request-target\": /path?param=value");
    assert_eq!(line(&message, "@path").unwrap(), "\"@path\": /path");
    assert_eq!(line(&message, "@query").unwrap(), "\"@query\": ?param=value");

    let message = TestMessage::new("POST", "https", "/path?param=value&foo=bar&baz=bat%2Dman", &[("Host", "www.example.com")]);
    assert_eq!(line(&message, "@query").unwrap(), "\"@query\": ?param=value&foo=bar&baz=bat%2Dman");
    let message = TestMessage::new("GET", "https", "/path?queryString", &[("Host", "www.example.com")]);
    assert_eq!(line(&message, "@query").unwrap(), "\"@query\": ?queryString");
    // No query: a lone `?`; an empty path: `/`.
    let message = TestMessage::new("GET", "http", "", &[("Host", "www.example.com")]);
    assert_eq!(line(&message, "@query").unwrap(), "\"@query\": ?");
    assert_eq!(line(&message, "@path").unwrap(), "\"@path\": /");
    assert_eq!(line(&message, "@target-uri").unwrap(), "\"@target-uri\": http://www.example.com/");

    // The authority is normalized: lower case, no default port for the scheme.
    let with_host = |scheme, host| TestMessage::new("GET", scheme, "/", &[("Host", host)]);
    assert_eq!(line(&with_host("https", "Example.COM:443"), "@authority").unwrap(), "\"@authority\": example.com");
    assert_eq!(line(&with_host("http", "example.com:80"), "@authority").unwrap(), "\"@authority\": example.com");
    assert_eq!(line(&with_host("http", "example.com:443"), "@authority").unwrap(), "\"@authority\": example.com:443");
    assert_eq!(line(&with_host("https", "example.com:8443"), "@authority").unwrap(), "\"@authority\": example.com:8443");
    assert_eq!(line(&with_host("https", "[::1]:443"), "@authority").unwrap(), "\"@authority\": [::1]");
    assert_eq!(line(&with_host("https", "EXAMPLE.com:443"), "@target-uri").unwrap(), "\"@target-uri\": https://example.com/");
    let no_host = TestMessage::new("GET", "https", "/", &[]);
    assert!(line(&no_host, "@authority").is_err());
    assert!(line(&no_host, "@target-uri").is_err());
}

#[test]
fn rfc_2_2_8_query_parameters() {
    let message = TestMessage::new("GET", "https", "/path?param=value&foo=bar&baz=batman&qux=", &[("Host", "www.example.com")]);
    assert_eq!(line(&message, "@query-param;name=\"baz\"").unwrap(), "\"@query-param\";name=\"baz\": batman");
    assert_eq!(line(&message, "@query-param;name=\"qux\"").unwrap(), "\"@query-param\";name=\"qux\": ");
    assert_eq!(line(&message, "@query-param;name=\"param\"").unwrap(), "\"@query-param\";name=\"param\": value");
    assert!(line(&message, "@query-param;name=\"nope\"").unwrap_err().contains("does not have"));

    let message = TestMessage::new(
        "GET",
        "https",
        "/parameters?var=this%20is%20a%20big%0Amultiline%20value&bar=with+plus+whitespace&fa%C3%A7ade%22%3A%20=something",
        &[("Host", "www.example.com")],
    );
    assert_eq!(
        line(&message, "@query-param;name=\"var\"").unwrap(),
        "\"@query-param\";name=\"var\": this%20is%20a%20big%0Amultiline%20value"
    );
    assert_eq!(line(&message, "@query-param;name=\"bar\"").unwrap(), "\"@query-param\";name=\"bar\": with%20plus%20whitespace");
    assert_eq!(
        line(&message, "@query-param;name=\"fa%C3%A7ade%22%3A%20\"").unwrap(),
        "\"@query-param\";name=\"fa%C3%A7ade%22%3A%20\": something"
    );
    // A name that occurs twice (once encoded) cannot be covered alone.
    let message = TestMessage::new("GET", "https", "/path?param=value&%70aram=other", &[("Host", "www.example.com")]);
    assert!(line(&message, "@query-param;name=\"param\"").unwrap_err().contains("repeated"));
    // A `%` without two hex digits is itself; bytes that are not UTF-8 become U+FFFD.
    let message = TestMessage::new("GET", "https", "/p?a=100%&b=%FF", &[("Host", "www.example.com")]);
    assert_eq!(line(&message, "@query-param;name=\"a\"").unwrap(), "\"@query-param\";name=\"a\": 100%25");
    assert_eq!(line(&message, "@query-param;name=\"b\"").unwrap(), "\"@query-param\";name=\"b\": %EF%BF%BD");
}

#[test]
fn identifiers_the_plugin_cannot_verify_are_refused() {
    for (text, why) in [
        ("@signature-params", "cannot be covered"),
        ("@nope", "not a derived component"),
        ("@query-param", "needs a `name`"),
        ("@query-param;name=5", "needs a `name`"),
        ("@method;name=\"x\"", "unknown parameter"),
        ("@path;req", "`req`"),
        ("content-type;req", "`req`"),
        ("content-type;tr", "trailers"),
        ("content-type;bs;sf", "`bs` cannot be combined"),
        ("content-type;bs;key=\"a\"", "`bs` cannot be combined"),
        ("content-type;sf=?0", "takes no value"),
        ("content-type;key=1", "is a string"),
        ("content-type;foo", "unknown parameter"),
        ("Content-Type", "lower-case"),
        ("", "lower-case"),
        ("a\"b", "not a component identifier"),
    ] {
        let err = Component::parse_config(text).unwrap_err();
        assert!(err.contains(why), "{text}: {err}");
    }
    // The identifier itself, as a signature writes it, is taken too.
    let quoted = Component::parse_config("\"@query-param\";name=\"id\"").unwrap();
    assert_eq!(quoted.id, "\"@query-param\";name=\"id\"");
    assert_eq!(quoted, Component::parse_config("@query-param;name=\"id\"").unwrap());
    // Parameter order does not make another component.
    assert_eq!(Component::parse_config("x;sf;key=\"a\"").unwrap(), Component::parse_config("x;key=\"a\";sf").unwrap());
}

fn build(json: &str) -> Result<HttpSignatures, String> {
    airlock_sdk::configure::<HttpSignatures>(json)
}

fn verify(plugin: &HttpSignatures, message: &impl Message, input: &str, signature: &str, now: i64) -> Result<Verified, Refusal> {
    plugin.verify(message, &[input.as_bytes().to_vec()], &[signature.as_bytes().to_vec()], now, &mut |_, _| Ok(true))
}

fn invalid(result: Result<Verified, Refusal>) -> String {
    match result {
        Err(Refusal::Invalid(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

const SECRET: &str = "a shared secret of at least 32 bytes!";
const OTHER_SECRET: &str = "another secret of at least 32 bytes!!";

fn hmac_b64(secret: &str, base: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(base);
    b64e(&mac.finalize().into_bytes())
}

/// `Signature-Input` and `Signature` for `message`, signed with `secret` under `label`.
fn sign(message: &impl Message, label: &str, inner: &str, secret: &str) -> (String, String) {
    let input = format!("{label}={inner}");
    let fields = Fields::parse(&[input.as_bytes().to_vec()], &[format!("{label}=:AA==:").into_bytes()]).unwrap();
    let signed = fields.signed(label).unwrap();
    let base = signature_base(&signed.components, &signed.params, message, &FieldTypes::default()).unwrap();
    (input, format!("{label}=:{}:", hmac_b64(secret, &base)))
}

fn plugin() -> HttpSignatures {
    build(&format!(
        r#"{{"keys": [{{"keyid": "route-key", "alg": "hmac-sha256", "secret": "{OTHER_SECRET}"}}],
            "consumers": [{{"id": "guest"}},
                          {{"id": "alice", "groups": ["a", "b"], "credentials": {{"http_signatures": [{{"keyid": "alice-key", "alg": "hmac-sha256", "secret": "{SECRET}"}}]}}}}]}}"#
    ))
    .unwrap()
}

fn get() -> TestMessage {
    TestMessage::new("GET", "https", "/orders/7?expand=items", &[("Host", "api.example.com"), ("Date", "now")])
}

const NOW: i64 = 1_800_000_000;

fn params(created: i64) -> String {
    format!(";created={created};keyid=\"alice-key\"")
}

#[test]
fn a_valid_signature_names_its_consumer() {
    let plugin = plugin();
    let (input, sig) = sign(&get(), "sig1", &format!("(\"@method\" \"@target-uri\"){}", params(NOW)), SECRET);
    assert_eq!(verify(&plugin, &get(), &input, &sig, NOW), Ok(Verified { owner: Some(1), keyid: "alice-key".into() }));
    // A plugin-level key names no consumer.
    let route = format!("(\"@method\" \"@target-uri\");created={NOW};keyid=\"route-key\"");
    let (input, sig) = sign(&get(), "sig1", &route, OTHER_SECRET);
    assert_eq!(verify(&plugin, &get(), &input, &sig, NOW), Ok(Verified { owner: None, keyid: "route-key".into() }));
    // Alice's key does not verify as the route key's keyid.
    let (input, sig) = sign(&get(), "sig1", &route, SECRET);
    assert!(invalid(verify(&plugin, &get(), &input, &sig, NOW)).contains("does not verify"));
}

/// Keys are found by binary search over their keyids: among hundreds of partners' keys, given
/// in no order, each signature finds its own key and consumer, and an unknown keyid none.
#[test]
fn each_of_many_keys_is_found_by_its_keyid() {
    let consumers: Vec<String> = (0..600)
        .map(|i| (i * 337) % 600)
        .map(|n| format!(r#"{{"id": "p{n}", "credentials": {{"http_signatures": [{{"keyid": "partner-{n}", "alg": "hmac-sha256", "secret": "{SECRET}-{n}"}}]}}}}"#))
        .collect();
    let plugin = build(&format!(
        r#"{{"keys": [{{"keyid": "route-key", "alg": "hmac-sha256", "secret": "{OTHER_SECRET}"}}], "consumers": [{}]}}"#,
        consumers.join(",")
    ))
    .unwrap();
    for n in [0, 1, 299, 337, 598, 599] {
        let keyid = format!("partner-{n}");
        let inner = format!("(\"@method\" \"@target-uri\");created={NOW};keyid=\"{keyid}\"");
        let (input, sig) = sign(&get(), "sig1", &inner, &format!("{SECRET}-{n}"));
        let owner = (0..600).position(|i| (i * 337) % 600 == n);
        assert_eq!(verify(&plugin, &get(), &input, &sig, NOW), Ok(Verified { owner, keyid }), "partner {n}");
    }
    let route = format!("(\"@method\" \"@target-uri\");created={NOW};keyid=\"route-key\"");
    let (input, sig) = sign(&get(), "sig1", &route, OTHER_SECRET);
    assert_eq!(verify(&plugin, &get(), &input, &sig, NOW), Ok(Verified { owner: None, keyid: "route-key".into() }));
    let unknown = format!("(\"@method\" \"@target-uri\");created={NOW};keyid=\"partner-600\"");
    let (input, sig) = sign(&get(), "sig1", &unknown, SECRET);
    assert!(verify(&plugin, &get(), &input, &sig, NOW).is_err(), "a keyid no one was given");
}

#[test]
fn tampering_with_covered_components_is_refused() {
    let plugin = plugin();
    let covered = format!("(\"@method\" \"@target-uri\" \"date\"){}", params(NOW));
    let (input, sig) = sign(&get(), "sig1", &covered, SECRET);
    let mut other_method = get();
    other_method.method = "DELETE";
    let mut other_path = get();
    other_path.path = "/orders/8".into();
    let mut other_query = get();
    other_query.query = Some("expand=none".into());
    let mut other_scheme = get();
    other_scheme.scheme = "http";
    for (what, message) in [
        ("method", other_method),
        ("path", other_path),
        ("query", other_query),
        ("scheme", other_scheme),
        ("host", get().with("host", "evil.example.com")),
        ("header", get().with("date", "later")),
    ] {
        assert!(invalid(verify(&plugin, &message, &input, &sig, NOW)).contains("does not verify"), "{what}");
    }
    // A signature value that is not this one.
    let forged = format!("sig1=:{}:", hmac_b64(SECRET, b"something else"));
    assert!(invalid(verify(&plugin, &get(), &input, &forged, NOW)).contains("does not verify"));
    // A truncated MAC.
    assert!(invalid(verify(&plugin, &get(), &input, "sig1=:AAAA:", NOW)).contains("does not verify"));
}

#[test]
fn time_checks() {
    let plugin = plugin();
    let check = |created: i64, extra: &str, now: i64| {
        let (input, sig) = sign(&get(), "sig1", &format!("(\"@method\" \"@target-uri\"){}{extra}", params(created)), SECRET);
        verify(&plugin, &get(), &input, &sig, now)
    };
    assert!(check(NOW, "", NOW).is_ok());
    // 300 s plus 30 s of leeway.
    assert!(check(NOW - 330, "", NOW).is_ok());
    assert!(invalid(check(NOW - 331, "", NOW)).contains("older than `max_age_s`"));
    assert!(check(NOW + 30, "", NOW).is_ok());
    assert!(invalid(check(NOW + 31, "", NOW)).contains("in the future"));
    assert!(check(NOW, &format!(";expires={}", NOW + 10), NOW).is_ok());
    assert!(invalid(check(NOW - 100, &format!(";expires={}", NOW - 31), NOW)).contains("expired"));
    // No `created` at all.
    let (input, sig) = sign(&get(), "sig1", "(\"@method\" \"@target-uri\");keyid=\"alice-key\"", SECRET);
    assert!(invalid(verify(&plugin, &get(), &input, &sig, NOW)).contains("no `created`"));
    // `created` must be an integer.
    let input = "sig1=(\"@method\" \"@target-uri\");created=\"1\";keyid=\"alice-key\"";
    assert!(invalid(verify(&plugin, &get(), input, "sig1=:AAAA:", NOW)).contains("not an integer"));
}

#[test]
fn choosing_the_signature() {
    let plugin = plugin();
    let good = format!("(\"@method\" \"@target-uri\"){}", params(NOW));
    let (input, sig) = sign(&get(), "mine", &good, SECRET);
    // Another signature first, by a key this plugin does not hold: skipped.
    let theirs = format!("theirs=(\"@method\");created={NOW};keyid=\"someone-else\", {input}");
    let signatures = format!("theirs=:AAAA:, {sig}");
    assert!(verify(&plugin, &get(), &theirs, &signatures, NOW).is_ok());
    // Two field lines are one field.
    let lines = plugin.verify(
        &get(),
        &[b"theirs=(\"@method\");created=1;keyid=\"x\"".to_vec(), input.clone().into_bytes()],
        &[b"theirs=:AAAA:".to_vec(), sig.clone().into_bytes()],
        NOW,
        &mut |_, _| Ok(true),
    );
    assert!(lines.is_ok());
    // Only unknown keyids.
    let (input2, sig2) = sign(&get(), "sig1", &format!("(\"@method\" \"@target-uri\");created={NOW};keyid=\"nobody\""), SECRET);
    assert!(invalid(verify(&plugin, &get(), &input2, &sig2, NOW)).contains("no signature with a known `keyid`"));
    // A label with no `Signature` member.
    assert!(invalid(verify(&plugin, &get(), &input, "other=:AAAA:", NOW)).contains("`Signature` has no member `mine`"));
    // Not structured fields at all.
    assert!(invalid(verify(&plugin, &get(), "mine", "not a dictionary!", NOW)).contains("not a dictionary"));
    assert!(invalid(verify(&plugin, &get(), &input, "mine=\"text\"", NOW)).contains("not a byte sequence"));

    // With `label`, that label only.
    let labelled = build(&format!(
        r#"{{"label": "mine", "keys": [{{"keyid": "alice-key", "alg": "hmac-sha256", "secret": "{SECRET}"}}]}}"#
    ))
    .unwrap();
    assert!(verify(&labelled, &get(), &theirs, &signatures, NOW).is_ok());
    let (input3, sig3) = sign(&get(), "sig1", &good, SECRET);
    assert!(invalid(verify(&labelled, &get(), &input3, &sig3, NOW)).contains("no inner list labelled `mine`"));

    // With `tag`, only a signature carrying it.
    let tagged = build(&format!(
        r#"{{"tag": "partner-api", "keys": [{{"keyid": "alice-key", "alg": "hmac-sha256", "secret": "{SECRET}"}}]}}"#
    ))
    .unwrap();
    assert!(invalid(verify(&tagged, &get(), &input, &sig, NOW)).contains("required `tag`"));
    let (input4, sig4) = sign(&get(), "sig1", &format!("{good};tag=\"partner-api\""), SECRET);
    assert!(verify(&tagged, &get(), &input4, &sig4, NOW).is_ok());

    // `alg`, when given, must be the key's.
    let (input5, sig5) = sign(&get(), "sig1", &format!("{good};alg=\"ed25519\""), SECRET);
    assert!(invalid(verify(&plugin, &get(), &input5, &sig5, NOW)).contains("`alg` is not the algorithm"));
    let (input6, sig6) = sign(&get(), "sig1", &format!("{good};alg=\"hmac-sha256\""), SECRET);
    assert!(verify(&plugin, &get(), &input6, &sig6, NOW).is_ok());
}

#[test]
fn required_components_and_the_body() {
    let plugin = plugin();
    let (input, sig) = sign(&get(), "sig1", &format!("(\"@method\" \"@authority\" \"@path\"){}", params(NOW)), SECRET);
    assert!(invalid(verify(&plugin, &get(), &input, &sig, NOW)).contains("does not cover \"@target-uri\""));
    // More components than any signature needs.
    let many: Vec<String> = (0..65).map(|i| format!("\"x-h{i}\"")).collect();
    let input = format!("sig1=({}){}", many.join(" "), params(NOW));
    assert!(invalid(verify(&plugin, &get(), &input, "sig1=:AAAA:", NOW)).contains("more than 64"));
    // A component covered twice.
    let input = format!("sig1=(\"@method\" \"@target-uri\" \"@method\"){}", params(NOW));
    assert!(invalid(verify(&plugin, &get(), &input, "sig1=:AAAA:", NOW)).contains("covered twice"));

    let body = br#"{"amount": 10}"#;
    let digest = format!("sha-256=:{}:", b64e(&sha2::Sha256::digest(body)));
    let post = TestMessage::new("POST", "https", "/orders", &[("Host", "api.example.com"), ("Content-Digest", &digest)]).with_body(body);
    // A body must be covered through `content-digest` (the default `content_digest = "required"`).
    let (input, sig) = sign(&post, "sig1", &format!("(\"@method\" \"@target-uri\"){}", params(NOW)), SECRET);
    assert!(invalid(verify(&plugin, &post, &input, &sig, NOW)).contains("does not cover \"content-digest\""));
    let covered = format!("(\"@method\" \"@target-uri\" \"content-digest\"){}", params(NOW));
    let (input, sig) = sign(&post, "sig1", &covered, SECRET);
    assert!(verify(&plugin, &post, &input, &sig, NOW).is_ok());
    // The same signed digest over another body.
    let swapped = post.clone().with_body(br#"{"amount": 10000}"#);
    assert!(invalid(verify(&plugin, &swapped, &input, &sig, NOW)).contains("does not match"));
    // `"if-signed"` lets a body go uncovered, but checks a covered digest.
    let if_signed = build(&format!(r#"{{"content_digest": "if-signed", "keys": [{{"keyid": "alice-key", "alg": "hmac-sha256", "secret": "{SECRET}"}}]}}"#)).unwrap();
    assert!(invalid(verify(&if_signed, &swapped, &input, &sig, NOW)).contains("does not match"));
    let (bare_input, bare_sig) = sign(&post, "sig1", &format!("(\"@method\" \"@target-uri\"){}", params(NOW)), SECRET);
    assert!(verify(&if_signed, &swapped, &bare_input, &bare_sig, NOW).is_ok());
    // `"off"` reads no body: the signed digest is not matched to it.
    let off = build(&format!(r#"{{"content_digest": "off", "keys": [{{"keyid": "alice-key", "alg": "hmac-sha256", "secret": "{SECRET}"}}]}}"#)).unwrap();
    assert!(verify(&off, &swapped, &input, &sig, NOW).is_ok());
    assert_eq!(off.configured_descriptor(), Descriptor::request_only());
    assert_eq!(plugin.configured_descriptor(), Descriptor::request_only().with_request_body());
    assert_eq!(HttpSignatures::descriptor(), Descriptor::request_only().with_request_body());
    // A request without a body needs no digest.
    let (input, sig) = sign(&get(), "sig1", &format!("(\"@method\" \"@target-uri\"){}", params(NOW)), SECRET);
    assert!(verify(&plugin, &get(), &input, &sig, NOW).is_ok());
}

#[test]
fn nonces_are_single_use() {
    let strict = build(&format!(
        r#"{{"require_nonce": true, "keys": [{{"keyid": "alice-key", "alg": "hmac-sha256", "secret": "{SECRET}"}}]}}"#
    ))
    .unwrap();
    assert_eq!(strict.nonce_ttl_ms, 360_000, "max_age_s + 2 x leeway_s");
    let mut seen = HashSet::new();
    let mut nonces = |keyid: &str, nonce: &str| Ok(seen.insert(format!("{keyid}\n{nonce}")));
    let signed = |nonce: &str| sign(&get(), "sig1", &format!("(\"@method\" \"@target-uri\"){};nonce=\"{nonce}\"", params(NOW)), SECRET);
    let (input, sig) = signed("n-1");
    let run = |input: &str, sig: &str, nonces: &mut dyn FnMut(&str, &str) -> Result<bool, String>| {
        strict.verify(&get(), &[input.as_bytes().to_vec()], &[sig.as_bytes().to_vec()], NOW, nonces)
    };
    assert!(run(&input, &sig, &mut nonces).is_ok());
    assert!(invalid(run(&input, &sig, &mut nonces)).contains("already used"));
    let (input2, sig2) = signed("n-2");
    assert!(run(&input2, &sig2, &mut nonces).is_ok());
    // Without a nonce, when one is required.
    let (input3, sig3) = sign(&get(), "sig1", &format!("(\"@method\" \"@target-uri\"){}", params(NOW)), SECRET);
    assert!(invalid(run(&input3, &sig3, &mut nonces)).contains("no `nonce`"));
    // A forged signature never spends a nonce.
    let (input4, _) = signed("n-3");
    assert!(invalid(run(&input4, "sig1=:AAAA:", &mut nonces)).contains("does not verify"));
    let (input4, sig4) = signed("n-3");
    assert!(run(&input4, &sig4, &mut nonces).is_ok());
    // A state backend that does not answer is not a 401.
    let (input5, sig5) = signed("n-5");
    assert_eq!(run(&input5, &sig5, &mut |_, _| Err("down".into())), Err(Refusal::Unavailable("down".into())));
}

#[test]
fn accept_signature_says_what_to_sign() {
    let plugin = plugin();
    assert_eq!(plugin.accept[0], "sig1=(\"@method\" \"@target-uri\");created");
    assert_eq!(plugin.accept[1], "sig1=(\"@method\" \"@target-uri\" \"content-digest\");created");
    let custom = build(&format!(
        r#"{{"label": "partner", "tag": "a \"b\"", "required_components": ["@method", "@query-param;name=\"id\""], "content_digest": "off",
            "keys": [{{"keyid": "k", "alg": "hmac-sha256", "secret": "{SECRET}"}}]}}"#
    ))
    .unwrap();
    assert_eq!(custom.accept[1], "partner=(\"@method\" \"@query-param\";name=\"id\");created;tag=\"a \\\"b\\\"\"");
    // The value is a structured dictionary a client can parse.
    let parsed: sfv::Dictionary = sfv::Parser::new(&custom.accept[1]).parse().unwrap();
    assert_eq!(parsed.len(), 1);
}

#[test]
fn config_errors_name_the_key() {
    let err = |json: &str| build(json).err().unwrap();
    let key = |extra: &str| format!(r#"{{"keys": [{{"keyid": "k", "alg": "hmac-sha256", "secret": "{SECRET}"}}]{extra}}}"#);
    assert!(err("{}").starts_with("no keys"));
    assert_eq!(
        err(r#"{"keys": [{"keyid": "k", "alg": "hmac-sha256", "secret": "short"}]}"#),
        "`keys[0]`: `secret`: hmac-sha256 needs a secret of at least 32 bytes (this one has 5): a shorter one is easier to guess than the signature it protects"
    );
    assert!(err(r#"{"keys": [{"keyid": "k", "alg": "hmac-sha256", "secret_base64": "c2hvcnQ="}]}"#).contains("`secret_base64`: hmac-sha256 needs a secret of at least 32 bytes"));
    assert!(err(r#"{"keys": [{"keyid": "k", "alg": "hmac-sha256", "secret_base64": "not base64!"}]}"#).contains("not base64"));
    assert_eq!(
        err(r#"{"keys": [{"keyid": "k", "alg": "hmac-sha1", "secret": "x"}]}"#),
        "`keys[0]`: `alg`: `hmac-sha1` is not one of hmac-sha256, rsa-pss-sha512, rsa-v1_5-sha256, ecdsa-p256-sha256, ecdsa-p384-sha384, ed25519"
    );
    assert!(err(&format!(r#"{{"keys": [{{"keyid": "k", "alg": "ed25519", "secret": "{SECRET}"}}]}}"#)).contains("takes a public key"));
    assert!(err(r#"{"keys": [{"keyid": "k", "alg": "hmac-sha256", "pem": "x"}]}"#).contains("not a public key"));
    assert!(err(&format!(r#"{{"keys": [{{"keyid": "k", "alg": "hmac-sha256", "secret": "{SECRET}", "pem": "x"}}]}}"#)).contains("exactly one"));
    assert!(err(&format!(r#"{{"keys": [{{"keyid": "", "alg": "hmac-sha256", "secret": "{SECRET}"}}]}}"#)).contains("`keyid`: empty"));
    assert!(err(&format!(r#"{{"keys": [{{"keyid": "é", "alg": "hmac-sha256", "secret": "{SECRET}"}}]}}"#)).contains("printable ASCII"));
    assert!(err(r#"{"keys": [{"alg": "hmac-sha256", "secret": "x"}]}"#).contains("missing field `keyid`"));
    assert_eq!(
        err(&format!(
            r#"{{"keys": [{{"keyid": "k", "alg": "hmac-sha256", "secret": "{SECRET}"}}, {{"keyid": "k", "alg": "hmac-sha256", "secret": "{OTHER_SECRET}"}}]}}"#
        )),
        "`keys[1]`: the keyid `k` is already the keyid of `keys[0]`; each keyid must name one key"
    );
    assert_eq!(
        err(&format!(
            r#"{{"keys": [{{"keyid": "k", "alg": "hmac-sha256", "secret": "{SECRET}"}}], "consumers": [{{"id": "a", "credentials": {{"http_signatures": [{{"keyid": "k", "alg": "hmac-sha256", "secret": "{OTHER_SECRET}"}}]}}}}]}}"#
        )),
        "`consumers[0].credentials.http_signatures[0]` (consumer `a`): the keyid `k` is already the keyid of `keys[0]`; each keyid must name one key"
    );
    assert!(
        err(r#"{"consumers": [{"id": "a", "credentials": {"http_signatures": [{"keyid": "k", "alg": "hmac-sha256", "secret": "x"}]}}]}"#)
            .starts_with("`consumers[0].credentials.http_signatures[0]` (consumer `a`): `secret`: hmac-sha256 needs")
    );
    assert!(err(&key(r#", "required_components": ["@method", "@nope"]"#)).starts_with("`required_components[1]`: `@nope` is not a derived component"));
    assert!(err(&key(r#", "required_components": ["@method", "@method"]"#)).contains("listed twice"));
    assert!(err(&key(r#", "required_components": ["@status"]"#)).contains("response"));
    assert!(err(&key(r#", "label": "Sig1""#)).starts_with("`label`:"));
    assert!(err(&key(r#", "tag": "é""#)).starts_with("`tag`:"));
    assert!(err(&key(r#", "max_age_s": 0"#)).starts_with("`max_age_s`: at least 1"));
    assert!(err(&key(r#", "content_digest": "sometimes""#)).starts_with("`content_digest`: unknown variant"));
    assert!(err(&key(r#", "structured_fields": {"X-Dict": "dictionary"}"#)).starts_with("`structured_fields.X-Dict`"));
    assert!(err(&key(r#", "structured_fields": {"x-dict": "map"}"#)).contains("not `item`, `list` or `dictionary`"));
    assert!(err(&key(r#", "anonymous": "guest""#)).starts_with("`anonymous`: no consumer with id `guest`"));
    assert!(err(&key(r#", "www_authenticate": " ""#)).starts_with("`www_authenticate`: a challenge is one line"));
    assert!(err(&key(r#", "www_authenticate": "Signature\nrealm""#)).starts_with("`www_authenticate`:"));
    assert!(err(&key(r#", "keys_typo": []"#)).contains("unknown field"));
    // Every default accepted; `[]` lets a route require nothing beyond what signers cover.
    assert!(build(&key(r#", "required_components": []"#)).is_ok());
    assert!(build(&key(r#", "structured_fields": {"x-dict": "dictionary"}"#)).is_ok());
}

/// Components parsing one large dictionary again and again are refused before the parsing adds
/// up (64 of them over 29 KB ran the plugin past its CPU deadline); one parse of it is fine.
#[test]
fn structured_parsing_has_a_budget() {
    let dict: String = (0..2000).map(|i| format!("k{i}=:AAAAAAAA:")).collect::<Vec<_>>().join(", ");
    assert!(dict.len() > 20_000 && dict.len() < crate::components::MAX_PARSED_BYTES);
    let message = TestMessage::new("GET", "https", "/", &[("host", "example.com"), ("x-d", &dict)]);
    assert_eq!(line(&message, "\"x-d\";key=\"k7\"").unwrap(), "\"x-d\";key=\"k7\": :AAAAAAAA:");
    let components: Vec<Component> = (0..4).map(|i| Component::parse_config(&format!("\"x-d\";key=\"k{i}\"")).unwrap()).collect();
    let refused = signature_base(&components, "()", &message, &FieldTypes::default()).unwrap_err();
    assert!(refused.contains("over 65536 bytes to parse"), "{refused}");
}
