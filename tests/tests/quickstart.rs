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
