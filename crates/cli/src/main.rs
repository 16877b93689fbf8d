//! `vexilctl`: the operator's command-line tool. A thin entry point: parse the command line,
//! hand it to the library, exit with the code it returns.

use clap::Parser;

fn main() -> std::process::ExitCode {
    vexil_cli::run(vexil_cli::Cli::parse())
}
