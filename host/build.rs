//! Builds the built-in plugins (`plugins/*`) for wasm32-wasip2 and embeds their bytes in the
//! binary, so one `airlock` binary runs anywhere. They are loaded through exactly the same path as
//! a third-party `.wasm` file; only where the bytes come from differs.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ sits in the workspace root").to_path_buf();
    for watched in ["plugins", "plugin-sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let plugins = plugin_crates(&root.join("plugins"));
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("builtin-plugins");

    // A cargo-fuzz build (`--cfg fuzzing`, host/fuzz) runs the parsers only, never a plugin, and
    // its nightly toolchain may lack the wasm32-wasip2 target: it embeds no built-ins.
    if plugins.is_empty() || env::var_os("CARGO_CFG_FUZZING").is_some() {
        write_generated(&[], &target_dir);
        return;
    }
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // Built-ins ship inside the binary: no debug info, stripped, LTO. Optimised for speed, not
    // size: at opt-level 3 a request through key-auth, rate-limit and headers runs 3.8% fewer
    // instructions than at "s" (callgrind, bench/README "Forty-third session"), for 0.8 MB more
    // binary and no change in RSS or startup.
    cmd.current_dir(&root)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir)
        .args(["--config", "profile.release.debug=false", "--config", "profile.release.strip=true"])
        .args(["--config", "profile.release.lto=true", "--config", "profile.release.codegen-units=1"])
        .args(["--config", "profile.release.opt-level=3"]);
    for (_, package) in &plugins {
        cmd.args(["-p", package]);
    }
    // Flags meant for the host build must not leak into the guest build.
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR", "RUSTC_WORKSPACE_WRAPPER"] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("cannot run cargo to build the built-in plugins");
    assert!(
        status.success(),
        "building the built-in plugins for wasm32-wasip2 failed: see the compiler output above \
         (if the target is missing: `rustup target add wasm32-wasip2`)"
    );

    write_generated(&plugins, &target_dir);
}

/// Writes `BUILTINS`: each built-in's name, its place in the bundle of every built-in's bytes
/// (`builtin_plugins.bin`, beside it) and the SHA-256 of its bytes, hashed here so the gateway
/// never reads a built-in's bytes when its compiled form is already in the compile cache.
fn write_generated(plugins: &[(String, String)], target_dir: &Path) {
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut bundle = Vec::new();
    let mut generated = String::from("/// Built-in plugins, in name order.\npub static BUILTINS: &[Builtin] = &[\n");
    for (name, package) in plugins {
        let wasm = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", package.replace('-', "_")));
        let bytes = std::fs::read(&wasm)
            .unwrap_or_else(|e| panic!("built-in plugin `{name}` was not built at {}: {e}", wasm.display()));
        let sha256: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        let start = bundle.len();
        bundle.extend_from_slice(&bytes);
        writeln!(generated, "    Builtin {{ name: {name:?}, at: {start}..{}, sha256: {sha256:?} }},", bundle.len()).unwrap();
    }
    generated.push_str("];\n");
    generated.push_str(
        "\n/// Every built-in's component bytes, one after another.\n\
         static BUNDLE: &[u8] = include_bytes!(concat!(env!(\"OUT_DIR\"), \"/builtin_plugins.bin\"));\n",
    );
    std::fs::write(out_dir.join("builtin_plugins.bin"), bundle).expect("cannot write builtin_plugins.bin");
    std::fs::write(out_dir.join("builtin_plugins.rs"), generated).expect("cannot write builtin_plugins.rs");
}

/// (config name, package name) of each crate under `plugins/`.
fn plugin_crates(dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let manifest = entry.path().join("Cargo.toml");
        if manifest.is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            found.push((name.clone(), format!("airlock-plugin-{name}")));
        }
    }
    found.sort();
    found
}
