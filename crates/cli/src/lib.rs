//! The `vexilctl` command tree and what each command does; `main.rs` only parses and calls
//! [`run`].
//!
//! One module per command group: `cluster` (membership, status, snapshots), `flag` (one flag:
//! reads, writes, history, rollback, server-side evaluation), `apply` (`apply` and `export`:
//! a namespace as one flagd document), `change` (the change requests a namespace's policy holds
//! for approval), `audit` (list, tail, verify the hash chain), `token` (bearer tokens),
//! `namespace` (a namespace's settings and change-control policy), `eval` (offline evaluation
//! of a local file) and `tls` (offline: a CA and certificates). `endpoints` resolves where the cluster is and how to reach it (endpoints,
//! token, TLS: flags, then their variables, then `vexilctl.toml`), `conn` reaches it (any node,
//! or the leader for membership changes), `errors` turns what the cluster said into a message
//! that says what to do next, `output` renders tables and JSON.
//!
//! Exit codes scripts can rely on: 0 when the command did its job (an evaluation that reports
//! an error such as `FLAG_NOT_FOUND` still did its job), 1 when the operation failed (the
//! cluster refused it or could not be reached, an input file is missing or invalid, the audit
//! chain does not verify), 2 for bad usage (clap uses 2 for its own usage errors too). A reader
//! that closes stdout early (`vexilctl export | head`) ends the command quietly with 0
//! ([`output::print_line`]).

// Output goes through `output::print_line`, which ends quietly on a closed pipe.
#![deny(clippy::print_stdout)]

pub mod apply;
pub mod audit;
pub mod change;
pub mod cluster;
pub mod conn;
pub mod endpoints;
pub mod errors;
pub mod eval;
pub mod flag;
pub mod namespace;
pub mod output;
pub mod tls;
pub mod token;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "vexilctl", version, about = "Operate a Vexil cluster and its feature flags")]
pub struct Cli {
    /// Output format: a human table, or JSON for scripts.
    #[arg(long, value_enum, global = true, default_value_t = Output::Table)]
    pub output: Output,
    /// Node API addresses (`host:port`, comma-separated). Default: `VEXIL_ENDPOINTS`, then the
    /// config file, then the three local nodes 127.0.0.1:7001-7003.
    #[arg(long, global = true, env = "VEXIL_ENDPOINTS", value_delimiter = ',', value_name = "HOST:PORT,...")]
    pub endpoints: Option<Vec<String>>,
    /// Config file (TOML: endpoints, regions, region, consistency, token or token_file, cacert,
    /// cert, key).
    /// Default: ./vexilctl.toml, else `$XDG_CONFIG_HOME/vexil/vexilctl.toml` or
    /// `~/.config/vexil/vexilctl.toml`, if present. Flags and variables override it.
    #[arg(long, global = true, env = "VEXILCTL_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Bearer token (`vexil_...`) sent on every call. Prefer `VEXIL_TOKEN` or `token_file` in
    /// the config file: other users can read command lines.
    #[arg(long, global = true, env = "VEXIL_TOKEN", hide_env_values = true, value_name = "SECRET")]
    pub token: Option<String>,
    /// TLS: the CA certificate (PEM) that issued the nodes' certificates. With it, endpoints
    /// are dialed as https:// (an http:// endpoint is then an error).
    #[arg(long, global = true, env = "VEXIL_CACERT", value_name = "PEM_FILE")]
    pub cacert: Option<PathBuf>,
    /// Mutual TLS: this client's certificate (PEM). Give it before the command
    /// (`vexilctl --cert c.pem --key k.pem flag list ns`): after one, `--key` is the command's own.
    #[arg(long, env = "VEXIL_CERT", value_name = "PEM_FILE")]
    pub cert: Option<PathBuf>,
    /// Mutual TLS: the private key (PEM) of --cert. Give it before the command.
    #[arg(long, env = "VEXIL_KEY", value_name = "PEM_FILE")]
    pub key: Option<PathBuf>,
    /// This client's region: its nodes (listed under `[regions]` in the config file) are asked
    /// first, the others only when none of them answers.
    #[arg(long, global = true, env = "VEXIL_REGION", value_name = "NAME")]
    pub region: Option<String>,
    /// Read consistency: `linearizable`, `lease`, or `stale` (whatever the node you ask has
    /// applied; use it to inspect one node, e.g. `audit verify` on a suspect node).
    #[arg(long, value_enum, global = true)]
    pub consistency: Option<ConsistencyArg>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsistencyArg {
    Linearizable,
    Lease,
    Stale,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Cluster membership and health: status, init, add-learner, promote, demote, remove, snapshot.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// One flag: get, list, create, update, enable, disable, delete, history, rollback, eval.
    #[command(subcommand)]
    Flag(flag::FlagCommand),
    /// Make a namespace match a flagd document, atomically (`--dry-run` shows the diff only).
    Apply(apply::ApplyArgs),
    /// Write a namespace as a flagd document that `apply` accepts unchanged.
    Export(apply::ExportArgs),
    /// A namespace's settings (`fractional` bucketing, strict writes) and its change-control
    /// policy.
    #[command(subcommand)]
    Namespace(namespace::NamespaceCommand),
    /// Change requests awaiting approval under a namespace's policy: list, show, approve,
    /// reject, cancel.
    #[command(subcommand)]
    Change(change::ChangeCommand),
    /// The hash-chained audit log: list, tail (--follow), verify.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Bearer tokens and their roles: create (prints the secret once), list, revoke.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Evaluate a flag offline against a local flagd file (no cluster needed).
    Eval(eval::EvalArgs),
    /// Certificates for TLS, offline: create-ca, issue.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
}

/// A failed command: what to tell the user and which exit code to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Bad usage (exit 2).
    Usage(String),
    /// A missing or invalid input (exit 1).
    Input(String),
    /// The operation failed: refused by the cluster, unreachable, or a check that did not pass
    /// (exit 1).
    Failed(String),
    /// Whoever read stdout has gone (`| head`): stop, quietly, with exit 0, as Unix tools end
    /// on SIGPIPE.
    OutputClosed,
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Input(_) | Failure::Failed(_) => 1,
            Failure::OutputClosed => 0,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(m) | Failure::Input(m) | Failure::Failed(m) => f.write_str(m),
            Failure::OutputClosed => f.write_str("stdout was closed"),
        }
    }
}

/// What every networked command is given: where the cluster is and how to print.
pub struct Ctx {
    pub conn: conn::Conn,
    pub output: Output,
}

/// Runs a parsed command line, printing its output, and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match &cli.command {
        Command::Eval(args) => eval::run(args, cli.output, unix_now_secs()),
        Command::Tls(c) => tls::run(c, cli.output),
        _ => run_networked(&cli),
    };
    let printed = result.and_then(|text| if text.is_empty() { Ok(()) } else { output::print_line(&text) });
    match printed {
        Ok(()) | Err(Failure::OutputClosed) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("vexilctl: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}

/// What the command line says about reaching the cluster, for [`endpoints::resolve`].
pub fn given(cli: &Cli) -> endpoints::Given<'_> {
    endpoints::Given {
        endpoints: cli.endpoints.as_deref(),
        config: cli.config.as_deref(),
        token: cli.token.as_deref(),
        cacert: cli.cacert.as_deref(),
        cert: cli.cert.as_deref(),
        key: cli.key.as_deref(),
        region: cli.region.as_deref(),
    }
}

fn run_networked(cli: &Cli) -> Result<String, Failure> {
    let settings = endpoints::resolve(&given(cli), &endpoints::default_config_paths())?;
    let consistency = cli.consistency.or(settings.consistency);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let ctx = Ctx { conn: conn::Conn::new(&settings, consistency)?, output: cli.output };
        match &cli.command {
            Command::Cluster(c) => cluster::run(c, &ctx).await,
            Command::Flag(c) => flag::run(c, &ctx).await,
            Command::Apply(a) => apply::run_apply(a, &ctx).await,
            Command::Export(a) => apply::run_export(a, &ctx).await,
            Command::Audit(c) => audit::run(c, &ctx).await,
            Command::Token(c) => token::run(c, &ctx).await,
            Command::Namespace(c) => namespace::run(c, &ctx).await,
            Command::Change(c) => change::run(c, &ctx).await,
            Command::Eval(_) => Err(Failure::Usage("eval runs offline".into())),
            Command::Tls(_) => Err(Failure::Usage("tls runs offline".into())),
        }
    })
}

/// The text of an input file, or of stdin for `-`; `what` names it in the error ("the
/// definition", "the document").
pub(crate) fn read_input(path: &Path, what: &str) -> Result<String, Failure> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| Failure::Input(format!("cannot read {what} from stdin: {e}")))?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).map_err(|e| Failure::Input(format!("cannot read {}: {e}", path.display())))
    }
}

/// The binary may read the clock; the evaluator never does (it is given this).
fn unix_now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Unix milliseconds now (for reports that age flags).
pub(crate) fn unix_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_tree_is_consistent() {
        // clap's own checks: unique flags per command (a global `--key` would clash with
        // `audit list --key`, which is why --cert/--key are top-level only), valid defaults.
        Cli::command().debug_assert();
    }

    #[test]
    fn the_security_options_parse_where_they_are_allowed() {
        let cli = Cli::try_parse_from([
            "vexilctl",
            "--cert",
            "me.pem",
            "--key",
            "me-key.pem",
            "audit",
            "list",
            "-n",
            "shop",
            "--key",
            "banner",
            "--token",
            "vexil_x",
            "--cacert",
            "ca.pem",
        ])
        .expect("parses");
        assert_eq!(cli.cert, Some(PathBuf::from("me.pem")));
        assert_eq!(cli.key, Some(PathBuf::from("me-key.pem")));
        assert_eq!(cli.token.as_deref(), Some("vexil_x"), "--token is global");
        assert_eq!(cli.cacert, Some(PathBuf::from("ca.pem")), "--cacert is global");
        let Command::Audit(audit::AuditCommand::List(list)) = &cli.command else { panic!("{:?}", cli.command) };
        assert_eq!(list.key.as_deref(), Some("banner"), "after the command, --key is the audit filter");
        assert!(Cli::try_parse_from(["vexilctl", "cluster", "status", "--cert", "me.pem"]).is_err());
    }
}
