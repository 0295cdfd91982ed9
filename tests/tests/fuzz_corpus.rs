//! The cargo-fuzz targets (`host/fuzz`), on stable: each target's body runs over its checked-in
//! seed corpus (`host/fuzz/corpus/NAME/`) and over every input the fuzzer found breaking it
//! (`host/fuzz/regressions/NAME/`, kept after the fix), so a regression fails the normal test
//! command. Fuzzing itself (nightly) is `host/fuzz/run.sh` (README, "Fuzzing").

use std::path::{Path, PathBuf};

#[path = "../../host/fuzz/src/bodies.rs"]
mod bodies;

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else { continue };
        files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file() && !p.ends_with(".gitkeep")));
    }
    files.sort();
    files
}

/// Runs `body` over every input of `target`, naming the input that panics.
fn replay(target: &str, body: fn(&[u8])) {
    let files = inputs(target);
    assert!(files.len() >= 3, "the `{target}` corpus is missing: {files:?}");
    for file in files {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if std::panic::catch_unwind(|| body(&data)).is_err() {
            panic!("fuzz target `{target}` fails on {}", file.display());
        }
    }
}

#[test]
fn config_corpus() {
    replay("config", bodies::config);
}

#[test]
fn router_corpus() {
    replay("router", bodies::router);
}

#[test]
fn template_corpus() {
    replay("template", bodies::template);
}

#[test]
fn transform_corpus() {
    replay("transform", bodies::transform);
}
