//! The plugin author's workflow, as a new author runs it: `airlock plugin new` writes a crate that
//! builds for wasm32-wasip2 and passes its own `cargo test`; `airlock plugin test` runs requests
//! through the built component and reports its decisions; and the gateway loads the component
//! unchanged and serves real requests through it.

use std::path::{Path, PathBuf};

use airlock_tests::{Gateway, HttpClient, Upstream, airlock_binary};
use tokio::process::Command;

/// Where scaffolded crates are built: inside the workspace's target directory, so the
/// dependencies compiled once are reused by later runs.
fn scaffold_target() -> PathBuf {
    let bin = airlock_binary();
    bin.parent().and_then(Path::parent).expect("target/<profile>/airlock").join("scaffold")
}

/// Runs a command to completion; panics with its output if it fails.
async fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().await.unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed ({}):\n{stdout}\n{stderr}", out.status);
    stdout.into_owned()
}

/// `cargo` for the scaffolded crate, free of the variables this test runs under.
fn cargo(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(args).current_dir(dir).env("CARGO_TARGET_DIR", scaffold_target());
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET", "RUSTC_WORKSPACE_WRAPPER"] {
        cmd.env_remove(var);
    }
    cmd
}

#[tokio::test]
async fn a_new_plugin_builds_tests_and_serves() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo-tag");
    let made = run_ok(
        Command::new(airlock_binary()).args(["plugin", "new", "demo-tag", "--dir"]).arg(&dir),
        "airlock plugin new",
    )
    .await;
    assert!(made.contains("created") && dir.join("src/lib.rs").is_file(), "{made}");
    // A second scaffold into the same place is refused rather than overwriting the author's work.
    let again = Command::new(airlock_binary()).args(["plugin", "new", "demo-tag", "--dir"]).arg(&dir).output().await.expect("run");
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("not empty"));

    // It builds as its README says, and its own unit test passes natively.
    run_ok(&mut cargo(&dir, &["build", "--target", "wasm32-wasip2", "--release"]), "cargo build (wasm32-wasip2)").await;
    let tested = run_ok(&mut cargo(&dir, &["test"]), "cargo test (scaffold)").await;
    assert!(tested.contains("test result: ok. 2 passed"), "{tested}");
    // Put the component where the scaffold's own airlock.toml expects it.
    let built = scaffold_target().join("wasm32-wasip2/release/demo_tag.wasm");
    let wasm = dir.join("target/wasm32-wasip2/release/demo_tag.wasm");
    std::fs::create_dir_all(wasm.parent().expect("parent")).expect("mkdir");
    std::fs::copy(&built, &wasm).expect("copy the component");
    let checked = run_ok(Command::new(airlock_binary()).args(["check", "-c"]).arg(dir.join("airlock.toml")), "airlock check").await;
    assert!(checked.contains(": ok ("), "{checked}");

    // `airlock plugin test`: the request from requests/hello.http continues, tagged.
    let trial = |request: &Path, config: &str| {
        let mut cmd = Command::new(airlock_binary());
        cmd.args(["plugin", "test"]).arg(&wasm).arg("--request").arg(request).args(["--config", config, "--json"]);
        cmd
    };
    let out = run_ok(&mut trial(&dir.join("requests/hello.http"), r#"{"require_header": "x-client", "tag": "v7"}"#), "plugin test").await;
    let outcome: serde_json::Value = serde_json::from_str(&out).expect("JSON outcome");
    assert_eq!(outcome["decision"], "continue", "{outcome}");
    assert_eq!(outcome["request"]["target"], "/anything?greeting=hi");
    assert!(outcome["request"]["headers"].as_array().expect("headers").contains(&serde_json::json!(["x-demo-tag", "v7"])));
    assert_eq!(outcome["response"]["status"], 200);
    // Without the header it answers 400 itself.
    let bare = tmp.path().join("bare.http");
    std::fs::write(&bare, "GET /x HTTP/1.1\n\n").expect("write");
    let out = run_ok(&mut trial(&bare, r#"{"require_header": "x-client"}"#), "plugin test").await;
    let outcome: serde_json::Value = serde_json::from_str(&out).expect("JSON outcome");
    assert_eq!((outcome["decision"].as_str(), outcome["response"]["status"].as_u64()), (Some("respond"), Some(400)));
    // A config the plugin refuses is reported with the plugin's message, and a non-zero exit.
    let refused = trial(&bare, r#"{"tag": ""}"#).output().await.expect("run");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("`tag` must not be empty"));

    // The gateway loads the component unchanged and serves through it.
    let upstream = Upstream::start().await;
    let config = format!(
        r#"
[upstreams.backend]
targets = ["{{upstream}}"]

[[routes]]
path_prefix = "/"
upstream = "backend"
[[routes.plugins]]
plugin = {:?}
config = {{ require_header = "x-client", tag = "live" }}
"#,
        wasm.display().to_string()
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let ok = client.request("GET", &gw.url("/echo"), &[("x-client", "me")], b"").await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-demo-tag").as_deref(), Some("live"));
    assert_eq!(ok.upstream_header("x-demo-tag"), ["live"]);
    let refused = client.get(&gw.url("/echo")).await;
    assert_eq!((refused.status.as_u16(), refused.text()), (400, "missing header `x-client`\n".to_owned()));
    assert_eq!(refused.header("x-demo-tag").as_deref(), Some("live"), "the response edit is made on its own refusal too");
    gw.stop().await;
}

/// `airlock plugin test <args> --json` on this request and upstream response (`.http` texts):
/// the JSON outcome it prints.
async fn plugin_test_outcome(args: &[&str], request: &str, response: &str) -> serde_json::Value {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (request_file, response_file) = (tmp.path().join("request.http"), tmp.path().join("response.http"));
    std::fs::write(&request_file, request).expect("write request");
    std::fs::write(&response_file, response).expect("write response");
    let out = run_ok(
        Command::new(airlock_binary())
            .args(["plugin", "test"])
            .args(args)
            .arg("--json")
            .arg("--request")
            .arg(&request_file)
            .arg("--response")
            .arg(&response_file),
        "airlock plugin test",
    )
    .await;
    serde_json::from_str(&out).expect("JSON outcome")
}

/// `airlock plugin test` makes the response changes a plugin hands to the gateway rather than
/// making them in a response phase, as the gateway does: `builtin:headers`' response rules are
/// fixed edits, made where its response phase would run.
#[tokio::test]
async fn plugin_test_makes_the_response_edits_of_the_request_phase() {
    let config = r#"{"response": {"remove": ["server"], "rename": {"x-old": "x-new"}, "set": {"x-item": "${param.id}"}}}"#;
    let outcome = plugin_test_outcome(
        &["builtin:headers", "--param", "id=7", "--config", config],
        "GET /items/7 HTTP/1.1\nx-in: v\n\n",
        "HTTP/1.1 200 OK\nserver: upstream/1\nx-old: moved\n\nok",
    )
    .await;
    let mut headers: Vec<String> = outcome["response"]["headers"].as_array().expect("headers").iter().map(|h| h.to_string()).collect();
    headers.sort();
    assert_eq!(headers, [r#"["x-item","7"]"#, r#"["x-new","moved"]"#], "{outcome}");
    assert_eq!(outcome["response"]["body"], "ok");
}

/// `airlock plugin test` shows the request as the upstream gets it: a plugin that does not read
/// the body (`builtin:headers`) leaves it streaming through, so it is shown, not `null`.
#[tokio::test]
async fn plugin_test_shows_the_body_a_plugin_streams_through() {
    let config = r#"{"request": {"set": {"x-seen": "yes"}}}"#;
    let outcome =
        plugin_test_outcome(&["builtin:headers", "--config", config], "POST /items HTTP/1.1\ncontent-type: text/plain\n\nthe body", "HTTP/1.1 200\n\nok").await;
    assert_eq!(outcome["request"]["body"], "the body", "{outcome}");
    let headers = outcome["request"]["headers"].to_string();
    assert!(headers.contains(r#"["x-seen","yes"]"#), "{outcome}");
}

/// `airlock plugin test` shows the trailers a plugin sets on the response (sent after the body).
#[tokio::test]
async fn plugin_test_shows_the_trailers_a_plugin_sets() {
    let trailers = airlock_tests::guest_plugin_paths().into_iter().find(|(name, _)| *name == "trailers").expect("trailers plugin").1;
    let outcome = plugin_test_outcome(&[&trailers], "GET /t HTTP/1.1\n\n", "HTTP/1.1 200\n\nok").await;
    assert_eq!(outcome["response"]["trailers"], serde_json::json!([["x-added", "1"]]), "{outcome}");
}

/// `airlock plugin test` shows the response the gateway would send: a 204 goes without the
/// body a plugin gave it (and without a Content-Length), as `write_response` sends it.
#[tokio::test]
async fn plugin_test_shows_a_204_without_content() {
    // `builtin:respond` refuses a body for a 204; a third party's plugin may still set one
    // (body-upper appends `!` to the response body it is given).
    let body_upper = airlock_tests::guest_plugin_paths().into_iter().find(|(name, _)| *name == "body-upper").expect("body-upper plugin").1;
    let outcome = plugin_test_outcome(&[&body_upper], "DELETE /items/7 HTTP/1.1\n\n", "HTTP/1.1 204\n\nnot sent").await;
    assert_eq!(outcome["response"]["status"], 204, "{outcome}");
    assert_eq!(outcome["response"]["body"], serde_json::Value::Null, "{outcome}");
    let headers = outcome["response"]["headers"].to_string();
    assert!(!headers.contains("content-length"), "{outcome}");
}

/// `airlock plugin test` runs a plugin that needs `files`: granted with `--files-dir`, reaching
/// only that directory. Without it the refusal says how a trial grants it (there is no config
/// to add `capabilities` to).
#[tokio::test]
async fn plugin_test_grants_files_with_a_directory() {
    let reads_file = airlock_tests::guest_plugin_paths().into_iter().find(|(name, _)| *name == "reads-file").expect("reads-file plugin").1;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("greeting.txt"), "hello from the granted dir\n").expect("write");
    let dir_arg = dir.path().display().to_string();
    let outcome = plugin_test_outcome(&[&reads_file, "--files-dir", &dir_arg], "GET /x HTTP/1.1\nx-path: /greeting.txt\n\n", "HTTP/1.1 200 OK\n\n").await;
    let headers = outcome["request"]["headers"].to_string();
    assert!(headers.contains(r#"["x-file","hello from the granted dir"]"#), "{outcome}");
    let outside = plugin_test_outcome(&[&reads_file, "--files-dir", &dir_arg], "GET /x HTTP/1.1\nx-path: /etc/passwd\n\n", "HTTP/1.1 200 OK\n\n").await;
    assert!(outside["request"]["headers"].to_string().contains("error:"), "{outside}");

    let tmp = tempfile::tempdir().expect("tempdir");
    let request = tmp.path().join("request.http");
    std::fs::write(&request, "GET /x HTTP/1.1\n\n").expect("write");
    let out = Command::new(airlock_binary()).args(["plugin", "test", &reads_file, "--request"]).arg(&request).output().await.expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--files-dir DIR"), "{stderr}");
}
