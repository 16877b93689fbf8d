//! `loadgen`: Vexil and etcd side by side. See `benches/README.md` and
//! `vexil_benches::loadgen`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    vexil_benches::loadgen::main(vexil_benches::loadgen::Cli::parse()).await
}
