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
    for watched in ["tests/plugins", "tests/protos", "examples/hello-plugin", "plugin-sdk", "wit"] {
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
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out_dir.join("guest_plugins.rs"), generated).expect("cannot write guest_plugins.rs");
    compile_protos(&root.join("tests/protos"), &out_dir);
}

/// Compiles the test protos with protox (pure Rust: no protoc on these machines): the
/// FileDescriptorSet the grpc-transcode plugin reads (`demo.pb`, imports included, options such
/// as `google.api.http` kept), and the tonic server and prost messages of the test gRPC server.
fn compile_protos(protos: &Path, out_dir: &Path) {
    let mut compiler = protox::Compiler::new([protos]).expect("protox compiler");
    compiler.include_imports(true).include_source_info(false);
    compiler.open_files(["demo/v1/users.proto"]).expect("tests/protos/demo/v1/users.proto compiles");
    std::fs::write(out_dir.join("demo.pb"), compiler.encode_file_descriptor_set()).expect("cannot write demo.pb");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(out_dir)
        .compile_fds(compiler.file_descriptor_set())
        .expect("tonic-prost-build generates the demo service");
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
