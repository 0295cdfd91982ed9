//! Builds the guest plugins the tests load (hostile plugins in `tests/plugins`, and the example
//! third-party plugin in `examples/hello-plugin`) for wasm32-wasip2, exactly as a plugin author
//! would, and tells the tests where the `.wasm` files are.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("tests/ sits in the workspace root").to_path_buf();
    let target_root = env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    for watched in ["tests/plugins", "examples/hello-plugin", "plugin-sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let mut generated = String::new();
    let guest_plugins = build(&root.join("tests/plugins/Cargo.toml"), &target_root.join("test-plugins"));
    for entry in std::fs::read_dir(root.join("tests/plugins")).expect("tests/plugins exists").flatten() {
        let dir = entry.path();
        if !dir.join("Cargo.toml").is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let package = package_name(&dir.join("Cargo.toml"));
        let wasm = guest_plugins.join(format!("{}.wasm", package.replace('-', "_")));
        assert!(wasm.is_file(), "test plugin `{name}` was not built at {}", wasm.display());
        let konst = name.to_uppercase().replace('-', "_");
        writeln!(generated, "/// The `{name}` test plugin.\npub const {konst}: &str = {:?};", wasm.display().to_string()).unwrap();
    }
    // The example is built where its README says its author finds it.
    let example_dir = root.join("examples/hello-plugin");
    let example = build(&example_dir.join("Cargo.toml"), &example_dir.join("target"));
    writeln!(
        generated,
        "/// The example third-party plugin.\npub const HELLO_PLUGIN: &str = {:?};",
        example.join("hello_plugin.wasm").display().to_string()
    )
    .unwrap();
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("guest_plugins.rs");
    std::fs::write(out, generated).expect("cannot write guest_plugins.rs");
}

/// Builds every crate of `manifest`'s workspace for wasm32-wasip2; returns the output directory.
fn build(manifest: &Path, target_dir: &Path) -> PathBuf {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir);
    if manifest.ends_with("tests/plugins/Cargo.toml") {
        cmd.arg("--workspace");
    }
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR", "RUSTC_WORKSPACE_WRAPPER"] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("cannot run cargo to build guest plugins");
    assert!(status.success(), "building {} for wasm32-wasip2 failed", manifest.display());
    target_dir.join("wasm32-wasip2/release")
}

fn package_name(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest).expect("readable Cargo.toml");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("name = ").map(|v| v.trim_matches('"').to_owned()))
        .expect("package name in Cargo.toml")
}
