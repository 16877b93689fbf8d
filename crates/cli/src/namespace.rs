//! `vexilctl namespace list`: the namespaces the caller may read (one per line, for scripts
//! such as the backup in deploy/README.md). `vexilctl namespace settings`: a namespace's own
//! settings — how its `fractional` rules bucket (match the namespace's in-process providers)
//! and whether writes with warnings are refused. `vexilctl namespace policy`: its
//! change-control policy ([`NamespacePolicy`]: which writes need approval and from whom, what
//! each lifecycle stage requires, whether `depends_on` is enforced). Reading needs a role on the
//! namespace; changing them, `admin`.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand};
use serde_json::{Value, json};
use vexil_client::WriteOpts;
use vexil_model::eval::FractionalAlgorithm;
use vexil_model::policy::{ApprovalRule, Covers};
use vexil_model::{NamespacePolicy, NamespaceSettings};

use crate::errors::{self, Subject};
use crate::output;
use crate::{Ctx, Failure, Output};

#[derive(Debug, Subcommand)]
pub enum NamespaceCommand {
    /// The namespaces you may read, one per line.
    List,
    /// Show a namespace's settings, or change those given (the others stay). Audited.
    Settings(SettingsArgs),
    /// A namespace's change-control policy: get, set (or remove). Audited.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show the policy (every field, defaults included) and its version.
    Get(PolicyGetArgs),
    /// Set the policy from --file or --json (fields left out take their defaults), or --remove
    /// it. Admins only.
    Set(PolicySetArgs),
}

#[derive(Debug, Args)]
pub struct PolicyGetArgs {
    pub namespace: String,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("policy").required(true).args(["file", "json", "remove"])))]
pub struct PolicySetArgs {
    pub namespace: String,
    /// Read the policy (JSON) from this file (`-` for stdin).
    #[arg(long, short = 'f', value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// The policy as JSON, e.g. '{"approval": {"covers": {"tags": ["critical"]}, "approvals": 2}}'.
    #[arg(long, value_name = "JSON")]
    pub json: Option<String>,
    /// Remove the policy: the namespace's writes apply without change control again.
    #[arg(long)]
    pub remove: bool,
    /// Apply only if the policy is at this version (0: the namespace has none); see `policy get`.
    #[arg(long, value_name = "VERSION")]
    pub expected_version: Option<u64>,
    /// Why: recorded in the audit log with who asked.
    #[arg(long, default_value = "")]
    pub reason: String,
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
        NamespaceCommand::Policy(PolicyCommand::Get(a)) => policy(&a.namespace, None, ctx).await,
        NamespaceCommand::Policy(PolicyCommand::Set(a)) => set_policy(a, ctx).await,
    }
}

fn check_namespace(namespace: &str) -> Result<(), Failure> {
    vexil_model::flag::validate_namespace(namespace).map_err(|p| Failure::Usage(format!("namespace: {p}")))
}

async fn list(ctx: &Ctx) -> Result<String, Failure> {
    let read = ctx.conn.admin.list_namespaces().await.map_err(|e| errors::from_client(e, Subject::Cluster))?;
    Ok(match ctx.output {
        Output::Json => output::json(&json!({"namespaces": read.value, "revision": read.header.revision})),
        Output::Table => read.value.join("\n"),
    })
}

async fn settings(a: &SettingsArgs, ctx: &Ctx) -> Result<String, Failure> {
    check_namespace(&a.namespace)?;
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

/// The policy `set` sends: from --json or --file, checked locally first (the same validation
/// the cluster runs) so a mistake is reported with its field before anything is sent, in the
/// canonical form; empty for --remove.
fn read_policy(a: &PolicySetArgs) -> Result<String, Failure> {
    let text = match (&a.json, &a.file) {
        _ if a.remove => return Ok(String::new()),
        (Some(j), _) => j.clone(),
        (None, Some(p)) => crate::read_input(p, "the policy")?,
        (None, None) => {
            return Err(Failure::Usage("give the policy with --file PATH or --json JSON, or --remove".into()));
        }
    };
    let value: Value =
        serde_json::from_str(&text).map_err(|e| Failure::Input(format!("the policy is not valid JSON: {e}")))?;
    let policy = NamespacePolicy::from_json(&value)
        .map_err(|e| Failure::Input(format!("the policy is invalid: `{}`: {}", e.field, e.problem)))?;
    Ok(policy.to_json().to_string())
}

async fn set_policy(a: &PolicySetArgs, ctx: &Ctx) -> Result<String, Failure> {
    check_namespace(&a.namespace)?;
    let policy_json = read_policy(a)?;
    let revision = ctx
        .conn
        .admin
        .set_namespace_policy(&a.namespace, &policy_json, a.expected_version, WriteOpts::reason(&a.reason))
        .await
        .map_err(|e| errors::from_client(e, Subject::Policy(&a.namespace)))?;
    policy(&a.namespace, Some(revision), ctx).await
}

/// Reads the policy and renders it; `changed` is the revision of a change just made.
async fn policy(namespace: &str, changed: Option<u64>, ctx: &Ctx) -> Result<String, Failure> {
    check_namespace(namespace)?;
    let read = ctx
        .conn
        .admin
        .namespace_policy(namespace)
        .await
        .map_err(|e| errors::from_client(e, Subject::Policy(namespace)))?;
    let (policy_json, version) = &read.value;
    Ok(render_policy(
        namespace,
        policy_json,
        *version,
        changed.unwrap_or(read.header.revision),
        changed.is_some(),
        ctx.output,
    ))
}

/// `2 approvals from admin or editor for flags tagged critical; not the author's own; open
/// 72h; break-glass disables allowed`.
pub fn describe_approval(rule: &ApprovalRule) -> String {
    let covers = match &rule.covers {
        Covers::Namespace => "every flag".to_string(),
        Covers::Tags(tags) => format!("flags tagged {}", tags.join(" or ")),
        Covers::Stages(stages) => {
            format!("flags in stage {}", stages.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" or "))
        }
    };
    let roles = rule.approver_roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" or ");
    format!(
        "{} approval{} from {roles} for {covers}; {}; requests stay open {}h; {}",
        rule.approvals,
        if rule.approvals == 1 { "" } else { "s" },
        if rule.author_may_approve { "the author's own counts" } else { "not the author's own" },
        rule.open_hours,
        if rule.break_glass { "break-glass disables allowed" } else { "no break-glass" },
    )
}

/// The policy as `namespace policy get` shows it: a summary, then the canonical JSON. `revision`
/// is the read's, or with `changed` the change's.
pub fn render_policy(
    namespace: &str,
    policy_json: &str,
    version: u64,
    revision: u64,
    changed: bool,
    out: Output,
) -> String {
    let policy = (!policy_json.is_empty()).then(|| output::parse_json(policy_json));
    match out {
        Output::Json => output::json(&json!({
            "namespace": namespace, "policy": policy, "version": version, "revision": revision,
        })),
        Output::Table => {
            let Some(value) = policy else {
                return if changed {
                    format!(
                        "policy of namespace {namespace:?} removed at revision {revision}: its writes apply without change control"
                    )
                } else {
                    format!(
                        "namespace {namespace:?} has no policy: its writes apply without change control (at revision {revision})"
                    )
                };
            };
            // A policy this vexilctl cannot read (from a newer cluster) is still shown as JSON.
            let typed = NamespacePolicy::from_json(&value).ok();
            let approval = match typed.as_ref().map(|p| p.approval.as_ref()) {
                Some(Some(rule)) => describe_approval(rule),
                Some(None) => "none: writes apply at once".to_string(),
                None => "-".to_string(),
            };
            let dependencies = match typed.as_ref().map(|p| p.dependencies) {
                Some(true) => "enforced",
                Some(false) => "not enforced",
                None => "-",
            };
            let pretty = serde_json::to_string_pretty(&value).unwrap_or_else(|_| policy_json.to_string());
            let fields = output::fields(&[
                ("NAMESPACE", namespace.to_string()),
                ("VERSION", version.to_string()),
                ("APPROVAL", approval),
                ("DEPENDENCIES", dependencies.to_string()),
                (if changed { "SET AT" } else { "READ AT" }, format!("revision {revision}")),
            ]);
            format!("{fields}\n\n{pretty}")
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn set_args(args: &[&str]) -> Result<PolicySetArgs, clap::Error> {
        let cli = crate::Cli::try_parse_from([&["vexilctl", "namespace", "policy", "set", "shop"], args].concat())?;
        let crate::Command::Namespace(NamespaceCommand::Policy(PolicyCommand::Set(a))) = cli.command else {
            panic!("{:?}", cli.command)
        };
        Ok(a)
    }

    #[test]
    fn policy_set_takes_exactly_one_source() {
        assert!(set_args(&[]).is_err(), "one of --file, --json, --remove is required");
        assert!(set_args(&["--json", "{}", "--remove"]).is_err());
        assert!(set_args(&["--file", "p.json", "--json", "{}"]).is_err());
        let a = set_args(&["--remove", "--expected-version", "3"]).expect("parses");
        assert_eq!((a.remove, a.expected_version), (true, Some(3)));
        assert_eq!(read_policy(&a), Ok(String::new()), "--remove sends an empty policy");
    }

    #[test]
    fn a_policy_is_checked_locally_and_sent_in_canonical_form() {
        let a = set_args(&["--json", r#"{"approval": {"approvals": 2}}"#]).expect("parses");
        let sent: Value = serde_json::from_str(&read_policy(&a).expect("valid")).expect("json");
        assert_eq!(sent["approval"]["approvals"], 2);
        assert_eq!(sent["approval"]["approver_roles"], json!(["admin", "editor"]), "defaults filled in: {sent}");
        let a = set_args(&["--json", r#"{"approval": {"approvals": 0}}"#]).expect("parses");
        let f = read_policy(&a).expect_err("refused");
        assert_eq!(f.exit_code(), 1);
        assert!(f.to_string().contains("`approval.approvals`"), "{f}");
        let a = set_args(&["--json", "{nope"]).expect("parses");
        assert!(read_policy(&a).expect_err("refused").to_string().contains("not valid JSON"));
    }

    #[test]
    fn policy_table() {
        let value = json!({
            "approval": {"covers": {"tags": ["critical"]}, "approvals": 2, "approver_roles": ["admin"], "open_hours": 24},
            "dependencies": true,
        });
        let canonical = NamespacePolicy::from_json(&value).expect("valid").to_json().to_string();
        insta::assert_snapshot!(render_policy("shop", &canonical, 3, 41, false, Output::Table));
        let set = render_policy("shop", &canonical, 3, 41, true, Output::Table);
        assert!(set.contains("SET AT        revision 41"), "{set}");
        let v: Value = serde_json::from_str(&render_policy("shop", &canonical, 3, 41, false, Output::Json)).unwrap();
        assert_eq!((v["version"].clone(), v["policy"]["approval"]["approvals"].clone()), (json!(3), json!(2)));
    }

    #[test]
    fn no_policy_says_writes_apply_without_change_control() {
        assert_eq!(
            render_policy("shop", "", 0, 41, false, Output::Table),
            "namespace \"shop\" has no policy: its writes apply without change control (at revision 41)"
        );
        assert!(
            render_policy("shop", "", 4, 42, true, Output::Table).starts_with("policy of namespace \"shop\" removed")
        );
        let v: Value = serde_json::from_str(&render_policy("shop", "", 0, 41, false, Output::Json)).unwrap();
        assert_eq!(v["policy"], Value::Null);
    }
}
