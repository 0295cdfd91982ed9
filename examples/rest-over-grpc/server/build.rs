//! Compiles ../proto with protox (pure Rust: no protoc needed): the tonic server code, and the
//! FileDescriptorSet the binary writes with `--descriptor-out` (the example's bookstore.pb).

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let protos = manifest_dir.join("../proto");
    println!("cargo:rerun-if-changed={}", protos.display());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut compiler = protox::Compiler::new([&protos]).expect("protox compiler");
    compiler.include_imports(true).include_source_info(false);
    compiler.open_files(["bookstore/v1/bookstore.proto"]).expect("proto/bookstore/v1/bookstore.proto compiles");
    std::fs::write(out_dir.join("bookstore.pb"), compiler.encode_file_descriptor_set()).expect("cannot write bookstore.pb");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(&out_dir)
        .compile_fds(compiler.file_descriptor_set())
        .expect("tonic-prost-build generates the Bookstore service");
}
