//! Compiles every `.proto` in this crate into Rust with the pure-Rust protox compiler, so no
//! system `protoc` is needed: messages always, tonic clients and servers with feature `grpc`
//! (so the layers below the server build without tonic).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use protox::prost::Message;

/// Include root; a file's path below it is its import name (`mvccpb/kv.proto`).
const PROTO_ROOT: &str = ".";
/// Encoded descriptor set written to OUT_DIR for gRPC reflection.
const DESCRIPTOR_FILE: &str = "baton_descriptor.bin";

fn main() -> Result<()> {
    // Not "." itself: that would rerun the build whenever anything in the crate changed.

    let mut files = Vec::new();
    collect_protos(Path::new(PROTO_ROOT), &mut files)?;
    // Sorted so the generated output does not depend on directory order.
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "no .proto files found under {PROTO_ROOT}/"
    );
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let fds = protox::compile(&files, [PROTO_ROOT]).context("compiling .proto files")?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR is not set")?);
    let descriptor_path = out_dir.join(DESCRIPTOR_FILE);
    std::fs::write(&descriptor_path, fds.encode_to_vec())
        .with_context(|| format!("writing {}", descriptor_path.display()))?;

    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .compile_fds(fds)
        .context("generating Rust code from descriptors")?;
    Ok(())
}

/// Appends every `.proto` file below `dir`, recursing into subdirectories.
fn collect_protos(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name == "src") {
                continue;
            }
            println!("cargo:rerun-if-changed={}", path.display());
            collect_protos(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(path);
        }
    }
    Ok(())
}
