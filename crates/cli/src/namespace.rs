//! `vexilctl namespace list`: the namespaces the caller may read (one per line, for scripts
//! such as the backup in deploy/README.md). `vexilctl namespace settings`: a namespace's own
//! settings — how its `fractional` rules bucket (match the namespace's in-process providers)
//! and whether writes with warnings are refused. Reading needs a role on the namespace;
//! changing them, `admin`.

use clap::{Args, Subcommand};
use serde_json::json;
use vexil_client::WriteOpts;
use vexil_model::NamespaceSettings;
use vexil_model::eval::FractionalAlgorithm;

use crate::errors::{self, Subject};
use crate::output;
use crate::{Ctx, Failure, Output};

#[derive(Debug, Subcommand)]
pub enum NamespaceCommand {
    /// The namespaces you may read, one per line.
    List,
    /// Show a namespace's settings, or change those given (the others stay). Audited.
    Settings(SettingsArgs),
}

#[derive(Debug, Args)]
pub struct SettingsArgs {
    pub namespace: String,
    /// How `fractional` buckets users: choose what the namespace's in-process providers do.
    /// `murmur3-scaled` is flagd's v2 (the default: flagd's server, the Go, Java, JS and .NET
    /// providers), `cbor-murmur3` its v3 (Python openfeature-flagd-core 2.x and Rust
    /// open-feature-flagd 0.3 in-process), `legacy-percent` flagd before core v0.15.
    #[arg(long, value_name = "ALGORITHM", value_parser = parse_fractional)]
    pub fractional: Option<FractionalAlgorithm>,
    /// Refuse writes with warnings in this namespace (as `--strict` does for one write).
    #[arg(long)]
    pub strict: Option<bool>,
    /// Why: recorded in the audit log with who asked.
    #[arg(long, default_value = "")]
    pub reason: String,
}

fn parse_fractional(s: &str) -> Result<FractionalAlgorithm, String> {
    FractionalAlgorithm::parse(s).ok_or_else(|| "expected murmur3-scaled, cbor-murmur3 or legacy-percent".into())
}

pub async fn run(cmd: &NamespaceCommand, ctx: &Ctx) -> Result<String, Failure> {
    match cmd {
        NamespaceCommand::List => list(ctx).await,
        NamespaceCommand::Settings(a) => settings(a, ctx).await,
    }
}

async fn list(ctx: &Ctx) -> Result<String, Failure> {
    let read = ctx.conn.admin.list_namespaces().await.map_err(|e| errors::from_client(e, Subject::Cluster))?;
    Ok(match ctx.output {
        Output::Json => output::json(&json!({"namespaces": read.value, "revision": read.header.revision})),
        Output::Table => read.value.join("\n"),
    })
}

async fn settings(a: &SettingsArgs, ctx: &Ctx) -> Result<String, Failure> {
    vexil_model::flag::validate_namespace(&a.namespace).map_err(|p| Failure::Usage(format!("namespace: {p}")))?;
    let subject = Subject::Namespace(&a.namespace);
    let admin = &ctx.conn.admin;
    let changed = if a.fractional.is_some() || a.strict.is_some() {
        let opts = WriteOpts::reason(&a.reason);
        Some(
            admin
                .set_namespace_settings(&a.namespace, a.fractional, a.strict, opts)
                .await
                .map_err(|e| errors::from_client(e, subject))?,
        )
    } else {
        None
    };
    let read = admin.namespace_settings(&a.namespace).await.map_err(|e| errors::from_client(e, subject))?;
    Ok(render(&a.namespace, &read.value, changed, ctx.output))
}

fn render(namespace: &str, s: &NamespaceSettings, changed: Option<u64>, out: Output) -> String {
    match out {
        Output::Json => {
            let mut v = json!({"namespace": namespace, "settings": s.to_json()});
            if let Some(revision) = changed {
                v["revision"] = json!(revision);
            }
            output::json(&v)
        }
        Output::Table => {
            let mut text = format!("fractional  {}\nstrict      {}", s.fractional.as_str(), s.strict);
            if let Some(revision) = changed {
                text = format!("namespace {namespace:?} changed at revision {revision}:\n{text}");
            }
            text
        }
    }
}
