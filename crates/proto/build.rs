//! Compiles `proto/` into Rust with protox (pure Rust: no `protoc` binary needed).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "vexil/v1/common.proto",
        "vexil/v1/flags.proto",
        "vexil/v1/audit.proto",
        "vexil/v1/cluster.proto",
        "vexil/v1/watch.proto",
        "vexil/v1/evaluation.proto",
        "vexil/v1/tokens.proto",
        "vexil/v1/changes.proto",
        "vexil/raft/v1/raft.proto",
        // OpenFeature's flagd protocols, verbatim from open-feature/flagd-schemas (`protobuf/`).
        "flagd/evaluation/v1/evaluation.proto",
        "flagd/evaluation/v2/evaluation.proto",
        "flagd/sync/v1/sync.proto",
    ];
    let fds = protox::compile(files, [&root])?;
    for f in files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
