//! The README's run command and the example plugin's README, as a user runs them: the `airlock`
//! binary on fixed ports (127.0.0.1:8080 and the demo upstream on :9090), exercised with a real
//! HTTP client, then stopped with SIGTERM. One test, so the two runs never share the ports.

use std::path::Path;

use airlock_tests::{HttpClient, start_documented as start, stop_documented as stop};

#[tokio::test]
async fn quickstart_and_example_plugin_run_as_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let client = HttpClient::http1();

    // README: examples/quickstart/run.sh, i.e. `airlock run --quickstart`.
    let child = start(&["run", "--quickstart"], root).await;
    let r = client.get("http://127.0.0.1:8080/users/42").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-user-id"], "42", "a header added by a plugin reached the upstream");
    assert_eq!(r.header("x-powered-by").as_deref(), Some("airlock"), "the global chain set a response header");
    let r = client.get("http://127.0.0.1:8080/anything").await;
    assert_eq!(r.json()["headers"]["x-airlock-route"], "echo");
    let r = client.get("http://127.0.0.1:8080/health").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok", "a short-circuit answered by the respond plugin");
    let r = client.get("http://127.0.0.1:8080/legacy/orders").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after").as_deref(), Some("3600"));
    stop(child).await;

    // With the demo upstream's port taken (Prometheus's default), the quickstart still runs: its
    // demo upstream moves to a free port and the embedded config follows it.
    let held = std::net::TcpListener::bind("127.0.0.1:9090");
    let child = start(&["run", "--quickstart"], root).await;
    let r = client.get("http://127.0.0.1:8080/users/42").await;
    assert_eq!((r.status.as_u16(), &r.json()["headers"]["x-user-id"]), (200, &serde_json::json!("42")), "{}", r.text());
    stop(child).await;
    // A config of one's own names 9090 itself: there a taken port (held here, or by whatever
    // held it already) is an error that says why, and the gateway does not start.
    let out = tokio::process::Command::new(airlock_tests::airlock_binary())
        .args(["run", "-c", "airlock.toml", "--demo-upstream"])
        .current_dir(root.join("examples/hello-plugin"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), out).await.expect("exits at once").expect("ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("cannot start the demo upstream on 127.0.0.1:9090") && stderr.contains("another program holds the port"), "{stderr}");
    drop(held);

    // examples/hello-plugin/README.md: built by this crate's build script exactly as documented.
    let example = root.join("examples/hello-plugin");
    assert!(example.join("target/wasm32-wasip2/release/hello_plugin.wasm").is_file());
    let child = start(&["run", "-c", "airlock.toml", "--demo-upstream"], &example).await;
    let r = client.get("http://127.0.0.1:8080/hello/world").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-hello-plugin").as_deref(), Some("seen"));
    assert_eq!(r.json()["headers"]["x-hello"], "hi there");
    let r = client.get("http://127.0.0.1:8080/hello/teapot").await;
    assert_eq!(r.status, 418);
    stop(child).await;
}
