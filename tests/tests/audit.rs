//! What a security team runs, end to end with the real binary: `airlock plugin keygen/sign/verify`,
//! `[trust] require_signatures` refusing unsigned, tampered and untrusted components at load
//! (and accepting signed ones and built-ins), `airlock inspect` and `airlock audit` in text and JSON.

use std::path::Path;
use std::process::{Command, Output};

use airlock_tests::{Gateway, HttpClient, Upstream, airlock_binary, plugins, sha256_hex};

fn airlock(args: &[&str], dir: &Path) -> Output {
    Command::new(airlock_binary()).args(args).current_dir(dir).env("RUST_LOG", "off").output().expect("run airlock")
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    assert!(!out.status.success(), "unexpectedly succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A config trusting `key`, with `plugin` (a path) on one route and a built-in on another.
fn trusted_config(key: &str, plugin: &str) -> String {
    format!(
        r#"
[trust]
require_signatures = true
keys = ["{key}"]

[upstreams.backend]
targets = ["{{upstream}}"]

[[routes]]
id = "third-party"
path_prefix = "/hello"
upstream = "backend"
[[routes.plugins]]
plugin = "{plugin}"

[[routes]]
id = "builtin"
path_prefix = "/"
upstream = "backend"
[[routes.plugins]]
plugin = "builtin:headers"
config = {{ response = {{ set = {{ "x-checked" = "yes" }} }} }}
"#
    )
}

#[tokio::test]
async fn signing_keys_trust_and_refusals() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    // Two key pairs: the operator trusts the first only.
    stdout(&airlock(&["plugin", "keygen", "--out", "signer"], dir));
    stdout(&airlock(&["plugin", "keygen", "--out", "stranger"], dir));
    let key = std::fs::read_to_string(dir.join("signer.pub")).expect("public key").trim().to_owned();
    assert!(key.starts_with("ed25519:"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("signer")).expect("private key").permissions().mode();
        assert_eq!(mode & 0o077, 0, "the private key is readable by its owner only");
    }
    // Refuses to overwrite a key.
    stderr(&airlock(&["plugin", "keygen", "--out", "signer"], dir));

    let signed = dir.join("signed.wasm");
    std::fs::copy(plugins::HELLO_PLUGIN, &signed).expect("copy");
    stdout(&airlock(&["plugin", "sign", "signed.wasm", "--key", "signer"], dir));
    let ok = stdout(&airlock(&["plugin", "verify", "signed.wasm", "--trusted-key", "signer.pub"], dir));
    assert!(ok.contains("signature ok") && ok.contains(&key), "{ok}");
    let untrusted = stderr(&airlock(&["plugin", "verify", "signed.wasm", "--trusted-key", "stranger.pub"], dir));
    assert!(untrusted.contains("not a trusted key"), "{untrusted}");

    let upstream = Upstream::start().await;
    // Signed by a trusted key: loads and serves; the built-in needs no signature.
    let gw = Gateway::start(&trusted_config(&key, &signed.display().to_string()), Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.get(&gw.url("/hello/x")).await;
    assert_eq!((r.status.as_u16(), r.header("x-hello-plugin").as_deref()), (200, Some("seen")));
    assert_eq!(client.get(&gw.url("/other")).await.header("x-checked").as_deref(), Some("yes"));
    // A reload checks signatures again: the component swapped for other bytes is refused and
    // the signed one keeps serving.
    let original = std::fs::read(&signed).expect("read");
    std::fs::write(&signed, [original.as_slice(), b"\0"].concat()).expect("write");
    let err = gw.reload(&trusted_config(&key, &signed.display().to_string()), Some(&upstream)).await.expect_err("refused").to_string();
    assert!(err.contains("refused by [trust]") && err.contains("tampered"), "{err}");
    assert_eq!(client.get(&gw.url("/hello/x")).await.header("x-hello-plugin").as_deref(), Some("seen"));
    std::fs::write(&signed, original).expect("restore");
    gw.stop().await;

    // Unsigned, tampered and signed-by-a-stranger components are refused at load, by name.
    let unsigned = dir.join("unsigned.wasm");
    std::fs::copy(plugins::HELLO_PLUGIN, &unsigned).expect("copy");
    let tampered = dir.join("tampered.wasm");
    let mut bytes = std::fs::read(plugins::HELLO_PLUGIN).expect("read");
    std::fs::copy(dir.join("signed.wasm.sig"), dir.join("tampered.wasm.sig")).expect("copy sig");
    bytes.extend_from_slice(b"\0");
    std::fs::write(&tampered, bytes).expect("write");
    let foreign = dir.join("foreign.wasm");
    std::fs::copy(plugins::HELLO_PLUGIN, &foreign).expect("copy");
    stdout(&airlock(&["plugin", "sign", "foreign.wasm", "--key", "stranger"], dir));
    for (path, why) in [(&unsigned, "unsigned"), (&tampered, "tampered"), (&foreign, "not a trusted key")] {
        let shown = path.display().to_string();
        let err = Gateway::try_start(&trusted_config(&key, &shown), Some(&upstream)).await.err().expect("refused").to_string();
        assert!(err.contains(&format!("plugin `{shown}`")) && err.contains("refused by [trust]") && err.contains(why), "{err}");
    }
    // A malformed trusted key is a config error at its line.
    let err = Gateway::try_start(&trusted_config("ed25519:nope", "x.wasm"), Some(&upstream)).await.err().expect("refused").to_string();
    assert!(err.contains("trust.keys[0]") && err.contains("is not a public key"), "{err}");
}

#[tokio::test]
async fn inspect_and_audit_report_requests_grants_and_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    // inspect: a third-party component asking for `files` and `state`... as it declares them.
    let json: serde_json::Value = serde_json::from_str(&stdout(&airlock(&["inspect", plugins::READS_FILE, "--json"], dir.path()))).expect("JSON");
    assert_eq!(json["wit_version"], "0.2.9");
    assert_eq!(json["capabilities"], serde_json::json!(["files"]));
    assert_eq!(json["signature"], "unsigned");
    assert_eq!(json["size"].as_u64(), Some(std::fs::metadata(plugins::READS_FILE).expect("meta").len()));
    assert_eq!(json["sha256"], sha256_hex(&std::fs::read(plugins::READS_FILE).expect("read")));
    assert!(json["imports"].as_array().expect("imports").iter().any(|i| i["kind"] == "capability" && i["detail"] == "files"));
    assert_eq!(json["phases"]["on_request"], true);
    assert!(json.get("load_error").is_none());
    // A built-in's digest comes with the binary (hashed by the build), and is its bytes' digest.
    let json: serde_json::Value = serde_json::from_str(&stdout(&airlock(&["inspect", "builtin:rate-limit", "--json"], dir.path()))).expect("JSON");
    assert_eq!(json["sha256"], sha256_hex(airlock::runtime::builtin::bytes("rate-limit").expect("built-in")));
    let text = stdout(&airlock(&["inspect", "builtin:rate-limit"], dir.path()));
    assert!(text.contains("capabilities: state") && text.contains("built-in: trusted"), "{text}");
    // The bodies a plugin reads are named for what they are, apart from its phases.
    let text = stdout(&airlock(&["inspect", "builtin:transform"], dir.path()));
    assert!(text.contains("phases:       on-request, on-response (reads the request body and the response body)"), "{text}");

    // audit: every route's chain, what each plugin asked for, was granted, and its limits.
    std::fs::write(
        dir.path().join("airlock.toml"),
        format!(
            r#"
[plugins.reader]
source = "{}"
capabilities = ["files", "http-client"]
memory_mb = 16
cpu_ms = 50
isolation = "request"
failure = "open"
[plugins.reader.files]
dir = "."
[plugins.reader.http_client]
allow = ["https://IdP.example.com", "http://127.0.0.1:8081"]
timeout_ms = 2500

[upstreams.backend]
targets = ["127.0.0.1:9"]

[[routes]]
id = "files"
path_prefix = "/files"
upstream = "backend"
max_body_bytes = 4096
[[routes.plugins]]
plugin = "builtin:key-auth"
[[routes.plugins]]
plugin = "reader"

[[routes]]
id = "open"
path_prefix = "/"
upstream = "backend"
"#,
            plugins::READS_FILE
        ),
    )
    .expect("write config");
    let audit: serde_json::Value = serde_json::from_str(&stdout(&airlock(&["audit", "--json"], dir.path()))).expect("JSON");
    assert_eq!(audit["require_signatures"], false);
    let routes = audit["routes"].as_array().expect("routes");
    let files = routes.iter().find(|r| r["route"] == "files").expect("files route");
    let chain = files["chain"].as_array().expect("chain");
    assert_eq!(chain[0]["plugin"], "builtin:key-auth");
    assert_eq!(chain[0]["consumers"], true, "key-auth receives the consumers list");
    let reader = &chain[1];
    assert_eq!(reader["requested"], serde_json::json!(["files"]));
    assert_eq!(reader["granted"], serde_json::json!(["files", "http-client"]));
    // What the grants reach: the directory and the origins, so widening either shows in a diff.
    let files_dir = reader["files_dir"].as_str().expect("files_dir");
    assert_eq!(std::fs::canonicalize(files_dir).ok(), std::fs::canonicalize(dir.path()).ok(), "{files_dir}");
    assert_eq!(reader["http_client"]["allow"], serde_json::json!(["https://idp.example.com:443", "http://127.0.0.1:8081"]));
    assert_eq!(reader["http_client"]["timeout_ms"], 2500);
    assert!(reader["http_client"]["max_response_bytes"].as_u64().is_some_and(|n| n > 0));
    assert_eq!(chain[0]["files_dir"], serde_json::Value::Null, "key-auth is granted no directory");
    assert_eq!(reader["consumers"], false);
    assert_eq!(
        (reader["memory_bytes"].as_u64(), reader["cpu_ms"].as_u64(), reader["max_body_bytes"].as_u64()),
        (Some(16 << 20), Some(50), Some(4096))
    );
    assert_eq!((reader["isolation"].as_str(), reader["failure"].as_str()), (Some("request"), Some("open")));
    assert_eq!(reader["signature"], "unsigned");
    assert!(routes.iter().find(|r| r["route"] == "open").expect("open route")["chain"].as_array().expect("chain").is_empty());
    let text = stdout(&airlock(&["audit"], dir.path()));
    assert!(text.contains("route files") && text.contains("requested: files; granted: files, http-client"), "{text}");
    assert!(text.contains("calls: https://idp.example.com:443, http://127.0.0.1:8081 (timeout 2500 ms"), "{text}");
    assert!(text.contains("reads files under: "), "{text}");
}

#[test]
fn a_report_read_only_in_part_ends_quietly_with_the_commands_status() {
    // `airlock audit | head -1`: the reader goes away while the report is written.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("airlock.toml"), "[[routes]]\npath = \"/\"\n[[routes.plugins]]\nplugin = \"builtin:respond\"\nconfig = { status = 200 }\n")
        .expect("write config");
    for args in [&["audit"][..], &["audit", "--json"], &["check"]] {
        let mut child = Command::new(airlock_binary())
            .args(args)
            .current_dir(dir.path())
            .env("RUST_LOG", "off")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run airlock");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !stderr.contains("panicked"), "{args:?}: {:?} {stderr}", out.status);
    }
}
