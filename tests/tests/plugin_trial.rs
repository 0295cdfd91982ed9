//! `airlock plugin test` with several requests (`--request` repeated, `--repeat N`): the built
//! `airlock` binary runs them in order through one plugin pool and one `state` store, numbers
//! each outcome and sums them up (`--json`: an array), stops at the first plugin failure naming
//! the request, and refuses bad input before anything runs.

use std::path::{Path, PathBuf};
use std::process::Output;

use airlock_tests::airlock_binary;
use tokio::process::Command;

/// `builtin:rate-limit` by client IP (always 127.0.0.1 in a trial): two requests a minute.
const TWO_A_MINUTE: &str = r#"{"by": ["ip"], "limits": [{"name": "m", "limit": 2, "window": "minute"}]}"#;

/// Writes each `(name, text)` as a file in `dir`; their paths, in order.
fn write_files(dir: &Path, files: &[(&str, &str)]) -> Vec<PathBuf> {
    files
        .iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write a request file");
            path
        })
        .collect()
}

/// `airlock plugin test <plugin> --request <each file> <args>`, run to completion.
async fn plugin_test(plugin: &str, requests: &[PathBuf], args: &[&str]) -> Output {
    let mut cmd = Command::new(airlock_binary());
    cmd.args(["plugin", "test", plugin]);
    for request in requests {
        cmd.arg("--request").arg(request);
    }
    cmd.args(args).output().await.expect("run airlock plugin test")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Stdout as JSON; panics with the whole output if it is not.
fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", stdout(out), stderr(out)))
}

/// Each element's decision and response status.
fn decisions(outcomes: &serde_json::Value) -> Vec<(String, u64)> {
    let outcomes = outcomes.as_array().unwrap_or_else(|| panic!("an array: {outcomes}"));
    outcomes
        .iter()
        .map(|o| (o["decision"].as_str().expect("decision").to_owned(), o["response"]["status"].as_u64().expect("status")))
        .collect()
}

fn pairs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(d, s)| ((*d).to_owned(), *s)).collect()
}

/// The path of a test plugin built from tests/plugins.
fn guest_plugin(name: &str) -> String {
    airlock_tests::guest_plugin_paths().into_iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no test plugin `{name}`")).1
}

/// `--repeat 3` runs the request three times through one `state`: the rate limit of two a
/// minute lets two through and answers the third 429 itself, which one run per request (a fresh
/// `state` each) could never show. The text output numbers each outcome and sums them up.
#[tokio::test]
async fn repeat_shares_state_so_a_rate_limit_answers_the_third_request() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let request = write_files(tmp.path(), &[("get.http", "GET /items?page=2 HTTP/1.1\nx-client: me\n\n")]);

    let out = plugin_test("builtin:rate-limit", &request, &["--config", TWO_A_MINUTE, "--repeat", "3", "--json"]).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let outcomes = json(&out);
    assert_eq!(decisions(&outcomes), pairs(&[("continue", 200), ("continue", 200), ("respond", 429)]), "{outcomes}");
    // The state the limiter keeps is counted down across the requests, in its RateLimit header.
    let remaining: Vec<String> = (0..2)
        .map(|i| {
            let headers = outcomes[i]["response"]["headers"].as_array().expect("headers");
            let field = headers.iter().find(|h| h[0] == "ratelimit").unwrap_or_else(|| panic!("no ratelimit header: {outcomes}"));
            field[1].as_str().expect("value").to_owned()
        })
        .collect();
    assert_eq!(remaining, [r#""m";r=1;t=60"#, r#""m";r=0;t=60"#]);
    // Each request has an id of its own, as in a gateway (the 429 body carries it).
    let refusal = outcomes[2]["response"]["body"].as_str().expect("429 body");
    assert!(refusal.contains(r#""error":"rate_limited""#) && refusal.contains("trial-request-3"), "{refusal}");

    let out = plugin_test("builtin:rate-limit", &request, &["--config", TWO_A_MINUTE, "--repeat", "3"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for line in ["request 1/3: GET /items?page=2 -> continue\n", "request 2/3: GET /items?page=2 -> continue\n", "request 3/3: GET /items?page=2 -> respond 429\n"] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(!text.contains("decision:"), "the numbered line replaces the decision line:\n{text}");
    assert!(text.contains("\nresponse to the client:\n  429\n"), "{text}");
    assert!(text.ends_with("\n\n3 requests: 2 continue, 1 respond (429)\n"), "{text}");
}

/// Two request files run in order, the sequence twice, through one `state`: limited by a header
/// at one a minute, each client's first request goes through and its second is answered 429, in
/// the order a, b, a, b.
#[tokio::test]
async fn several_request_files_run_in_order_through_one_state() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let requests = write_files(
        tmp.path(),
        &[("a.http", "GET /a HTTP/1.1\nx-key: alice\n\n"), ("b.http", "# the second client\nPOST /b HTTP/1.1\nx-key: bob\n\nhello")],
    );
    let config = r#"{"by": ["header:x-key"], "limits": [{"limit": 1, "window": "minute"}]}"#;
    let out = plugin_test("builtin:rate-limit", &requests, &["--config", config, "--repeat", "2", "--json"]).await;
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let outcomes = json(&out);
    assert_eq!(decisions(&outcomes), pairs(&[("continue", 200), ("continue", 200), ("respond", 429), ("respond", 429)]), "{outcomes}");
    let targets: Vec<&str> = (0..4).map(|i| outcomes[i]["request"]["target"].as_str().expect("target")).collect();
    assert_eq!(targets, ["/a", "/b", "/a", "/b"]);
    assert_eq!(outcomes[1]["request"]["body"], "hello", "each file's own request: {outcomes}");
    // Each element says which request it is (1-based, through the repeats) and its file, as given.
    let given: Vec<String> = requests.iter().map(|p| p.display().to_string()).collect();
    let numbered: Vec<(u64, &str)> =
        (0..4).map(|i| (outcomes[i]["index"].as_u64().expect("index"), outcomes[i]["file"].as_str().expect("file"))).collect();
    assert_eq!(numbered, [(1, given[0].as_str()), (2, given[1].as_str()), (3, given[0].as_str()), (4, given[1].as_str())]);

    // Without --repeat, several files are numbered and summed up too.
    let out = plugin_test("builtin:rate-limit", &requests, &["--config", config]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("request 1/2: GET /a -> continue\n") && text.contains("request 2/2: POST /b -> continue\n"), "{text}");
    assert!(text.ends_with("\n2 requests: 2 continue\n"), "{text}");
}

/// `--json` keeps its single object for one request without `--repeat` (what scripts written
/// before several requests existed parse), and is an array of the same objects otherwise, each
/// with its `index` (1-based) and `file` first: `--repeat 1` asks for the array whatever the
/// number of requests.
#[tokio::test]
async fn json_is_one_object_for_one_request_and_an_array_otherwise() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let request = write_files(tmp.path(), &[("get.http", "GET /x HTTP/1.1\n\n")]);
    let config = r#"{"request": {"set": {"x-seen": "yes"}}, "response": {"set": {"x-served-by": "airlock"}}}"#;

    let out = plugin_test("builtin:headers", &request, &["--config", config, "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let single = json(&out);
    assert!(single.is_object(), "{single}");
    // Literal rules are fixed edits, made without a call: the trial makes them where the gateway does.
    assert_eq!(single["decision"], "continue");
    assert!(single["request"]["headers"].to_string().contains(r#"["x-seen","yes"]"#), "{single}");
    assert!(single["response"]["headers"].to_string().contains(r#"["x-served-by","airlock"]"#), "{single}");
    // The single object is as it always was: no number, no file.
    let keys: Vec<&str> = single.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["decision", "request", "response", "context"], "{single}");
    assert!(stdout(&out).starts_with("{\n  \"decision\": \"continue\",\n  \"request\": {\n"), "{}", stdout(&out));

    let out = plugin_test("builtin:headers", &request, &["--config", config, "--json", "--repeat", "1"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let mut numbered = serde_json::Map::new();
    numbered.insert("index".into(), 1.into());
    numbered.insert("file".into(), request[0].display().to_string().into());
    numbered.extend(single.as_object().unwrap().clone());
    let array = json(&out);
    assert_eq!(array, serde_json::json!([numbered]), "the array holds the same object, numbered");
    let keys: Vec<&str> = array[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["index", "file", "decision", "request", "response", "context"], "{array}");

    // And the text output of one request is as it always was: no number, no summary. Its
    // decision says that literal rules cost no call (the JSON's keys stay as they were).
    let out = plugin_test("builtin:headers", &request, &["--config", config]).await;
    let text = stdout(&out);
    assert!(text.starts_with("decision: continue (fixed edits only: the plugin was not called)\n"), "{text}");
    assert!(!text.contains("request 1/") && !text.contains("1 request"), "{text}");
    // A plugin that is called: no such note.
    let out = plugin_test("builtin:rate-limit", &request, &["--config", TWO_A_MINUTE]).await;
    assert!(stdout(&out).starts_with("decision: continue\n"), "{}", stdout(&out));
}

/// Bad input is exit status 1 before anything runs: `--repeat` out of 1..=10000 or not a whole
/// number (clap's own usage errors exit 2, which here means the plugin failed), a missing
/// request file, a malformed one after a good one (every file is parsed first, and each bad one
/// reported).
#[tokio::test]
async fn bad_repeat_counts_and_request_files_stop_before_anything_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut requests = write_files(tmp.path(), &[("good.http", "GET /x HTTP/1.1\n\n"), ("bad.http", "GET /x HTTP/1.1\nno colon here\n\n")]);

    for repeat in ["0", "10001", "99999999999999999999999"] {
        let out = plugin_test("builtin:rate-limit", &requests[..1], &["--config", TWO_A_MINUTE, "--repeat", repeat]).await;
        assert_eq!(out.status.code(), Some(1), "--repeat {repeat}: {}", stderr(&out));
        assert!(stderr(&out).contains(&format!("--repeat {repeat}: the requests run 1 to 10000 times")), "{}", stderr(&out));
        assert!(out.stdout.is_empty(), "{}", stdout(&out));
    }
    // Not a whole number: exit status 1 too (2 is the plugin failing), however it is written.
    for args in [&["--repeat", "abc"][..], &["--repeat", "-1"], &["--repeat", "1.5"], &["--repeat", ""], &["--repeat=-1"], &["--repeat", "--json"]] {
        let out = plugin_test("builtin:rate-limit", &requests[..1], &[&["--config", TWO_A_MINUTE][..], args].concat()).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let value = match args {
            [given] => given.strip_prefix("--repeat").unwrap().trim_start_matches('='),
            given => given[1],
        };
        let expected = format!("--repeat `{value}`: not a whole number; the requests run 1 to 10000 times");
        assert!(stderr(&out).contains(&expected), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{}", stdout(&out));
    }

    requests.push(tmp.path().join("missing.http"));
    let out = plugin_test("builtin:rate-limit", &requests, &["--config", TWO_A_MINUTE, "--repeat", "2"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("bad.http: line 2: expected `name: value`, found `no colon here`"), "{err}");
    assert!(err.contains("cannot read") && err.contains("missing.http"), "{err}");
    assert!(out.stdout.is_empty(), "nothing ran, not even good.http: {}", stdout(&out));
}

/// A plugin failure stops the run with exit status 2 naming the request it happened in (k of
/// n, and its file), after the outcomes of the requests before it; none after it runs. `spin`
/// burns as many iterations as the request's `x-spin` asks: the second file's request runs past
/// the CPU deadline.
#[tokio::test]
async fn a_failure_in_a_later_request_names_it_and_stops_the_run() {
    let spin = guest_plugin("spin");
    let tmp = tempfile::tempdir().expect("tempdir");
    let requests =
        write_files(tmp.path(), &[("quick.http", "GET /quick HTTP/1.1\nx-spin: 0\n\n"), ("endless.http", "GET /endless HTTP/1.1\nx-spin: 100000000000000\n\n")]);

    let out = plugin_test(&spin, &requests, &["--repeat", "2"]).await;
    assert_eq!(out.status.code(), Some(2), "{}\n{}", stdout(&out), stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("request 2 of 4 (") && err.contains("endless.http): the plugin failed in on-request:"), "{err}");
    assert!(err.contains("deadline"), "{err}");
    let text = stdout(&out);
    assert!(text.contains("request 1/4: GET /quick -> continue\n"), "{text}");
    assert!(!text.contains("request 2/4") && !text.contains("request 3/4") && !text.contains(" requests: "), "{text}");

    // With --json, the array of the requests before the failure, still valid JSON, ending with
    // the failure itself, numbered as the request it happened in.
    let out = plugin_test(&spin, &requests, &["--repeat", "2", "--json"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let mut outcomes = json(&out);
    let failure = outcomes.as_array_mut().and_then(Vec::pop).unwrap_or_else(|| panic!("an array: {}", stdout(&out)));
    assert_eq!(decisions(&outcomes), pairs(&[("continue", 200)]));
    assert_eq!(failure["index"], 2, "{failure}");
    assert_eq!(failure["decision"], "failed", "{failure}");
    assert_eq!(failure["phase"], "on-request", "{failure}");
    assert!(failure["file"].as_str().is_some_and(|f| f.ends_with("endless.http")), "{failure}");
    assert!(failure["error"].as_str().is_some_and(|e| e.contains("deadline")), "{failure}");

    // A trap (`panic` panics in every request phase) stops the run at the first request.
    let out = plugin_test(&guest_plugin("panic"), &requests[..1], &["--repeat", "3"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("request 1 of 3 (") && err.contains("the plugin failed in on-request: trapped"), "{err}");
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
}

/// `--json` prints its report whatever the outcome, so a script always has JSON to read: one
/// request whose plugin fails is an object with `"decision": "failed"`, the phase and the error
/// (exit status 2 still, the message on stderr too); a run whose first request fails is an array
/// holding that failure; a plugin refusing its config is reported alike (no phase ran).
#[tokio::test]
async fn json_reports_a_failure_too() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let request = write_files(tmp.path(), &[("get.http", "GET /x HTTP/1.1\n\n")]);
    let panic = guest_plugin("panic");

    let out = plugin_test(&panic, &request, &["--json"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("the plugin failed in on-request: trapped"), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["decision"], "failed", "{report}");
    assert_eq!(report["phase"], "on-request", "{report}");
    assert!(report["error"].as_str().is_some_and(|e| e.starts_with("trapped")), "{report}");
    assert!(report.get("index").is_none(), "one request is not numbered: {report}");

    let out = plugin_test(&panic, &request, &["--json", "--repeat", "3"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let array = json(&out);
    assert_eq!(array.as_array().map(Vec::len), Some(1), "{array}");
    assert_eq!(array[0]["index"], 1, "{array}");
    assert_eq!(array[0]["decision"], "failed", "{array}");
    assert_eq!(array[0]["phase"], "on-request", "{array}");
    assert_eq!(array[0]["file"], request[0].display().to_string(), "{array}");

    let out = plugin_test("builtin:rate-limit", &request, &["--json", "--config", r#"{"limits": "many"}"#]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["decision"], "failed", "{report}");
    assert!(report["phase"].is_null(), "no phase ran: {report}");
    assert!(report["error"].as_str().is_some_and(|e| !e.is_empty() && stderr(&out).contains(e)), "{report}\n{}", stderr(&out));
}

/// A request change past the gateway's default header limits (`[limits]`, here a 40,000-byte
/// value past `max_header_bytes`) fails the trial as the gateway answers it, a 431, rather
/// than showing a request the gateway would never send.
#[tokio::test]
async fn a_change_past_the_header_limits_fails_as_the_gateway_answers_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let request = write_files(tmp.path(), &[("get.http", "GET /x HTTP/1.1\n\n")]);
    let config = format!(r#"{{"request": {{"set": {{"x-big": "{}"}}}}}}"#, "a".repeat(40_000));
    let out = plugin_test("builtin:headers", &request, &["--config", &config, "--json"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let failed = json(&out);
    assert_eq!((failed["decision"].as_str(), failed["phase"].as_str()), (Some("failed"), Some("on-request")), "{failed}");
    assert!(failed["error"].as_str().is_some_and(|e| e.contains("431 headers_too_large")), "{failed}");
    // Within them, the same change is made.
    let config = format!(r#"{{"request": {{"set": {{"x-big": "{}"}}}}}}"#, "a".repeat(4_000));
    let out = plugin_test("builtin:headers", &request, &["--config", &config, "--json"]).await;
    assert_eq!(json(&out)["decision"], "continue", "{}", stderr(&out));
}
