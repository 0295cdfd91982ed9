//! Every scenario folder under `examples/` (its `airlock.toml` and README), as a new user runs it:
//! `airlock check` accepts the config, `airlock run -c airlock.toml --demo-upstream` serves it on
//! the documented 127.0.0.1:8080, and every `curl` line of the README's shell blocks, run with the
//! real `curl`, answers the status written after it (`# 200`). One test: the examples share the
//! port and run one after the other. `rest-over-grpc` runs its demo gRPC server beside the gateway
//! instead of `--demo-upstream`.

use std::path::Path;
use std::process::Command;

use airlock_tests::{airlock_binary, start_documented, stop_documented};

/// The examples run here; `quickstart` and `hello-plugin` are run by tests/tests/quickstart.rs.
const SCENARIOS: [&str; 4] = ["public-api", "jwt-internal", "graphql-facade", "mock-respond"];

/// The README's shell blocks, as (variable assignments, curl lines with their expected status).
fn documented_commands(readme: &str) -> (Vec<String>, Vec<(String, u16)>) {
    let (mut vars, mut curls) = (Vec::new(), Vec::new());
    let mut in_sh = false;
    for line in readme.lines() {
        match line.trim() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            l if in_sh && l.starts_with("curl ") => {
                let (cmd, status) = l.rsplit_once('#').expect("every curl line ends with `# <status>`");
                let status = status.trim().parse().unwrap_or_else(|_| panic!("`{l}`: `# <status>` expected"));
                curls.push((cmd.trim().to_owned(), status));
            }
            l if in_sh && l.split_once('=').is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_')) => {
                vars.push(l.to_owned())
            }
            _ => {}
        }
    }
    (vars, curls)
}

#[tokio::test]
async fn every_example_checks_runs_and_answers_as_its_readme_says() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    for name in SCENARIOS {
        let dir = root.join("examples").join(name);
        let check = Command::new(airlock_binary()).args(["check", "-c", "airlock.toml"]).current_dir(&dir).output().expect("run check");
        assert!(check.status.success(), "{name}: airlock check: {}", String::from_utf8_lossy(&check.stderr));
        let readme = std::fs::read_to_string(dir.join("README.md")).expect("README.md");
        assert!(readme.contains("airlock run -c airlock.toml --demo-upstream"), "{name}: README shows how to run it");
        let (vars, curls) = documented_commands(&readme);
        assert!(curls.len() >= 3, "{name}: README has curl lines");

        let child = start_documented(&["run", "-c", "airlock.toml", "--demo-upstream"], &dir).await;
        let wrong = run_curls(&vars, &curls).await;
        // Stopped before asserting, so a failure never leaves the gateway holding the port.
        stop_documented(child).await;
        assert!(wrong.is_empty(), "{name}:\n{}", wrong.join("\n"));
    }
    // In the same test: it uses the same port.
    rest_over_grpc(&root.join("examples/rest-over-grpc")).await;
}

/// Runs the README's curl lines (with its variables); what answered other than documented.
async fn run_curls(vars: &[String], curls: &[(String, u16)]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (cmd, expected) in curls {
        // The README's line as written (with its variables), its status printed by curl.
        let script = format!("{}\n{cmd} -s -o /dev/null -w '%{{http_code}}'", vars.join("\n"));
        let out = tokio::process::Command::new("sh").arg("-c").arg(&script).output().await.expect("run curl");
        let status = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if status != expected.to_string() {
            wrong.push(format!("`{cmd}` answered {status}, the README says {expected}"));
        }
    }
    wrong
}

/// The demo gRPC server of `examples/rest-over-grpc`, killed when dropped.
struct DemoServer(std::process::Child);

impl Drop for DemoServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `examples/rest-over-grpc`: its demo gRPC server (built with the workspace, as `cargo run -p
/// bookstore-grpc-demo` builds it) beside `airlock run -c airlock.toml`, and the README's curl lines.
async fn rest_over_grpc(dir: &Path) {
    let demo = airlock_binary().with_file_name("bookstore-grpc-demo");
    // The checked-in descriptor set is what the server's .proto compiles to.
    let scratch = tempfile::tempdir().expect("tempdir");
    let written = scratch.path().join("bookstore.pb");
    let out = Command::new(&demo).arg("--descriptor-out").arg(&written).output().expect("run the demo server");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let checked_in = std::fs::read(dir.join("proto/bookstore.pb")).expect("proto/bookstore.pb");
    assert!(std::fs::read(&written).expect("written") == checked_in, "proto/bookstore.pb is stale: make it again (README)");

    let check = Command::new(airlock_binary()).args(["check", "-c", "airlock.toml"]).current_dir(dir).output().expect("run check");
    assert!(check.status.success(), "rest-over-grpc: airlock check: {}", String::from_utf8_lossy(&check.stderr));
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("README.md");
    assert!(readme.contains("cargo run -p bookstore-grpc-demo &") && readme.contains("airlock run -c airlock.toml\n"));
    let (vars, curls) = documented_commands(&readme);
    assert!(curls.len() >= 5, "rest-over-grpc: README has curl lines");

    let _server = DemoServer(Command::new(&demo).current_dir(dir).spawn().expect("start the demo server"));
    let started = std::time::Instant::now();
    while tokio::net::TcpStream::connect("127.0.0.1:50051").await.is_err() {
        assert!(started.elapsed() < std::time::Duration::from_secs(15), "the demo server does not listen on 50051");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let child = start_documented(&["run", "-c", "airlock.toml"], dir).await;
    let wrong = run_curls(&vars, &curls).await;
    stop_documented(child).await;
    assert!(wrong.is_empty(), "rest-over-grpc:\n{}", wrong.join("\n"));
}

#[test]
fn the_deployment_config_checks_and_the_configmap_carries_the_same_text() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").join("examples/deploy");
    // Checked where it is deployed: beside the admin token its orchestrator mounts.
    let deployed = tempfile::tempdir().expect("tempdir");
    std::fs::copy(dir.join("airlock.toml"), deployed.path().join("airlock.toml")).expect("copy airlock.toml");
    std::fs::create_dir(deployed.path().join("secrets")).expect("secrets dir");
    std::fs::write(deployed.path().join("secrets/admin-token"), "9b1f0c2e7d4a\n").expect("token");
    let check =
        Command::new(airlock_binary()).args(["check", "-c", "airlock.toml"]).current_dir(deployed.path()).output().expect("run check");
    assert!(check.status.success(), "airlock check: {}", String::from_utf8_lossy(&check.stderr));
    let config = std::fs::read_to_string(dir.join("airlock.toml")).expect("airlock.toml");
    let k8s = std::fs::read_to_string(dir.join("kubernetes.yaml")).expect("kubernetes.yaml");
    let block = k8s.split_once("  airlock.toml: |\n").expect("the ConfigMap's airlock.toml").1;
    let block = block.split_once("\n---").expect("end of the ConfigMap").0;
    let embedded: String = block.lines().map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l))).collect();
    assert_eq!(embedded, config, "kubernetes.yaml's ConfigMap and airlock.toml differ");
    let unit = std::fs::read_to_string(dir.join("airlock.service")).expect("airlock.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/airlock run -c /etc/airlock/airlock.toml"));
    let dockerfile = std::fs::read_to_string(dir.join("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("rustup target add wasm32-wasip2") && dockerfile.contains("distroless"));
}
