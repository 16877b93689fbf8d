//! The `vexil` binary: parse configuration, start logging, run the node until a signal or until
//! it fails, and exit with a code that says which (`vexil_server::error::exit_code`).

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use vexil_server::error::exit_code;
use vexil_server::{Args, Config};

/// mimalloc instead of glibc's allocator: the write path allocates many small, short-lived
/// values (JSON trees, keys, audit entries), and glibc's malloc/free took about a sixth of the
/// leader's CPU under load (`perf record`, benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vexil: {e}");
            return ExitCode::from(exit_code::CONFIG);
        }
    };
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: logs written to files stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).init();
    let runtime = match config.runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vexil: cannot start the async runtime: {e}");
            return ExitCode::from(exit_code::FAILURE);
        }
    };
    match runtime.block_on(vexil_server::run(config, vexil_server::shutdown_signal())) {
        Ok(()) => ExitCode::from(exit_code::OK),
        Err(e) => {
            eprintln!("vexil: {e:#}");
            ExitCode::from(e.exit_code())
        }
    }
}
