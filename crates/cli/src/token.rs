//! `vexilctl token`: create, list and revoke the cluster's bearer tokens (role `admin`
//! needed). A token's secret exists only in what `token create` prints: the cluster stores its
//! SHA-256, so the secret is printed once, clearly, with how to use it.

use std::collections::BTreeSet;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use vexil_client::{Role, WriteOpts};
use vexil_model::access::{self, Grant};
use vexil_proto::v1 as pb;

use crate::errors::{self, Subject};
use crate::output;
use crate::{Ctx, Failure, Output};

/// The longest `--expires-in`: ten years (a longer-lived credential should not be a bearer
/// token).
pub const EXPIRES_IN_MAX: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret (shown once: the cluster keeps only its hash).
    Create(CreateArgs),
    /// Every token: name, role, namespaces, expiry, creator (never a secret).
    List,
    /// Revoke a token: it stops working on every node, and its open streams are closed.
    Revoke(RevokeArgs),
    /// Namespaces callers without a token may read (for flagd providers that cannot send one).
    #[command(subcommand)]
    AnonymousRead(AnonymousReadCommand),
}

#[derive(Debug, Subcommand)]
pub enum AnonymousReadCommand {
    /// Let callers without a token read a namespace: get, list, evaluate, watch. Audited.
    Enable(AnonymousReadArgs),
    /// Stop it again; streams opened without a token on it are closed.
    Disable(AnonymousReadArgs),
    /// The namespaces open to callers without a token.
    List,
}

#[derive(Debug, Args)]
pub struct AnonymousReadArgs {
    pub namespace: String,
    /// Why: recorded in the audit log with who asked.
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// The cluster (membership, tokens, snapshots) and every namespace.
    Admin,
    /// Reads and writes flags of its --namespace(s).
    Editor,
    /// Reads flags of its --namespace(s): get, list, evaluation, watch.
    Reader,
}

impl RoleArg {
    fn model(self) -> access::Role {
        match self {
            RoleArg::Admin => access::Role::Admin,
            RoleArg::Editor => access::Role::Editor,
            RoleArg::Reader => access::Role::Reader,
        }
    }

    fn proto(self) -> Role {
        match self {
            RoleArg::Admin => Role::Admin,
            RoleArg::Editor => Role::Editor,
            RoleArg::Reader => Role::Reader,
        }
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The token's name: a-z, 0-9, - _ . @ (it is the audit actor of what the token does).
    pub name: String,
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// A namespace an editor or reader token covers; repeat for each (not for an admin).
    #[arg(long = "namespace", short = 'n', value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Expire after this long: a number and a unit, s m h d or w (`90m`, `12h`, `30d`).
    /// Default: never.
    #[arg(long, value_name = "DURATION", value_parser = parse_expires_in)]
    pub expires_in: Option<Duration>,
    /// Why: recorded in the audit log with who asked.
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    pub name: String,
    /// Why: recorded in the audit log with who asked.
    #[arg(long, default_value = "")]
    pub reason: String,
}

pub async fn run(cmd: &TokenCommand, ctx: &Ctx) -> Result<String, Failure> {
    match cmd {
        TokenCommand::Create(a) => create(a, ctx, crate::unix_now_ms()).await,
        TokenCommand::List => list(ctx, crate::unix_now_ms()).await,
        TokenCommand::Revoke(a) => revoke(a, ctx).await,
        TokenCommand::AnonymousRead(AnonymousReadCommand::Enable(a)) => set_anonymous_read(a, true, ctx).await,
        TokenCommand::AnonymousRead(AnonymousReadCommand::Disable(a)) => set_anonymous_read(a, false, ctx).await,
        TokenCommand::AnonymousRead(AnonymousReadCommand::List) => list_anonymous_read(ctx).await,
    }
}

async fn set_anonymous_read(a: &AnonymousReadArgs, enabled: bool, ctx: &Ctx) -> Result<String, Failure> {
    vexil_model::flag::validate_namespace(&a.namespace).map_err(|p| Failure::Usage(format!("namespace: {p}")))?;
    let revision = ctx
        .conn
        .admin
        .set_anonymous_read(&a.namespace, enabled, WriteOpts::reason(&a.reason))
        .await
        .map_err(|e| errors::from_client(e, Subject::Cluster))?;
    Ok(match ctx.output {
        Output::Json => {
            output::json(&json!({"namespace": a.namespace, "anonymous_read": enabled, "revision": revision}))
        }
        Output::Table if enabled => format!(
            "namespace {:?} is readable without a token from revision {revision} (get, list, evaluate, watch); \
             `vexilctl token anonymous-read disable {}` closes it again",
            a.namespace, a.namespace
        ),
        Output::Table => format!(
            "namespace {:?} needs a token again from revision {revision}; streams opened without one are closed",
            a.namespace
        ),
    })
}

async fn list_anonymous_read(ctx: &Ctx) -> Result<String, Failure> {
    let open =
        ctx.conn.admin.anonymous_read_namespaces().await.map_err(|e| errors::from_client(e, Subject::Cluster))?.value;
    Ok(match ctx.output {
        Output::Json => output::json(&json!(open)),
        Output::Table if open.is_empty() => "no namespace is readable without a token".into(),
        Output::Table => open.join("\n"),
    })
}

/// `30d`, `12h`, `90m`, `45s`, `2w`: a positive whole number and one unit, at most
/// [`EXPIRES_IN_MAX`].
pub fn parse_expires_in(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a duration such as 90m, 12h, 30d or 2w (a number and one of s m h d w)");
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = s.split_at(unit_at);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(unit_secs).filter(|s| *s > 0).ok_or_else(bad)?;
    let d = Duration::from_secs(secs);
    if d > EXPIRES_IN_MAX {
        return Err(format!("{s:?} is longer than the limit of {} days", EXPIRES_IN_MAX.as_secs() / 86_400));
    }
    Ok(d)
}

/// Checks the name and the role's namespaces before asking the cluster, with the cluster's
/// own rules (`vexil_model::access`).
fn check(a: &CreateArgs) -> Result<(), Failure> {
    access::validate_token_name(&a.name).map_err(|p| Failure::Usage(format!("token name: {p}")))?;
    let grant = Grant { role: a.role.model(), namespaces: a.namespaces.iter().cloned().collect::<BTreeSet<_>>() };
    access::validate_grant(&grant).map_err(|(_, p)| {
        Failure::Usage(match a.role {
            RoleArg::Admin => format!("--namespace {p}; drop --namespace"),
            _ => format!("--namespace {p}; give one --namespace per namespace the token covers"),
        })
    })
}

async fn create(a: &CreateArgs, ctx: &Ctx, now_ms: i64) -> Result<String, Failure> {
    check(a)?;
    let expires_ms = a.expires_in.map_or(0, |d| now_ms.saturating_add(d.as_millis() as i64));
    let created = ctx
        .conn
        .admin
        .create_token(&a.name, a.role.proto(), &a.namespaces, expires_ms, WriteOpts::reason(&a.reason))
        .await
        .map_err(|e| errors::from_client(e, Subject::Token(&a.name)))?;
    if created.secret.is_empty() {
        return Err(Failure::Failed(format!(
            "the cluster created token {:?} at revision {} but returned no secret; revoke it (`vexilctl token revoke {}`) and create it again",
            a.name, created.revision, a.name
        )));
    }
    Ok(render_created(ctx.output, &created.token, &created.secret, created.revision))
}

/// What `token create` prints: the token, then its secret in a block of its own.
pub fn render_created(out: Output, t: &pb::Token, secret: &str, revision: u64) -> String {
    match out {
        Output::Json => {
            let mut v = token_json(t);
            v["revision"] = json!(revision);
            v["secret"] = json!(secret);
            output::json(&v)
        }
        Output::Table => format!(
            "created token {:?} at revision {revision}: {}, {}\n\n{}",
            t.name,
            grant_text(t),
            expiry_text(t.expires_ms),
            render_secret("its secret", secret)
        ),
    }
}

/// The secret in a block of its own, said to be shown once, with how to use it (also used by
/// `cluster init` for the first admin token).
pub fn render_secret(what: &str, secret: &str) -> String {
    format!(
        "{what} (shown only this once: the cluster keeps only its hash; store it now):\n\n    {secret}\n\nuse it with `export VEXIL_TOKEN=<secret>`, `vexilctl --token <secret> ...`, or a file named by `token_file` in vexilctl.toml"
    )
}

fn role_name(t: &pb::Token) -> &'static str {
    match pb::Role::try_from(t.role) {
        Ok(pb::Role::Admin) => "admin",
        Ok(pb::Role::Editor) => "editor",
        Ok(pb::Role::Reader) => "reader",
        Ok(pb::Role::Unspecified) | Err(_) => "unknown",
    }
}

fn grant_text(t: &pb::Token) -> String {
    if t.namespaces.is_empty() {
        format!("role {}", role_name(t))
    } else {
        format!("role {} of {}", role_name(t), t.namespaces.join(", "))
    }
}

fn expiry_text(expires_ms: i64) -> String {
    if expires_ms == 0 { "never expires".into() } else { format!("expires {}", output::time_ms(expires_ms)) }
}

fn token_json(t: &pb::Token) -> Value {
    json!({
        "name": t.name,
        "role": role_name(t),
        "namespaces": t.namespaces,
        "expires_ms": t.expires_ms,
        "created_ms": t.created_ms,
        "created_by": t.created_by,
        "revision": t.revision,
    })
}

async fn list(ctx: &Ctx, now_ms: i64) -> Result<String, Failure> {
    let tokens = ctx.conn.admin.list_tokens().await.map_err(|e| errors::from_client(e, Subject::Cluster))?.value;
    Ok(render_list(ctx.output, &tokens, now_ms))
}

/// The `token list` table (or JSON): never a secret, which the cluster does not have.
pub fn render_list(out: Output, tokens: &[pb::Token], now_ms: i64) -> String {
    match out {
        Output::Json => output::json(&Value::Array(tokens.iter().map(token_json).collect())),
        Output::Table if tokens.is_empty() => {
            "no tokens; an admin creates one with `vexilctl token create NAME --role ...`".into()
        }
        Output::Table => {
            let rows = tokens.iter().map(|t| {
                let expires = match t.expires_ms {
                    0 => "never".to_string(),
                    ms if ms <= now_ms => format!("{} (expired)", output::time_ms(ms)),
                    ms => output::time_ms(ms),
                };
                vec![
                    t.name.clone(),
                    role_name(t).to_string(),
                    if t.namespaces.is_empty() { "*".to_string() } else { t.namespaces.join(",") },
                    expires,
                    output::or_dash(&t.created_by),
                    output::time_ms(t.created_ms),
                ]
            });
            output::table(&["NAME", "ROLE", "NAMESPACES", "EXPIRES", "CREATED BY", "CREATED"], rows)
        }
    }
}

async fn revoke(a: &RevokeArgs, ctx: &Ctx) -> Result<String, Failure> {
    access::validate_token_name(&a.name).map_err(|p| Failure::Usage(format!("token name: {p}")))?;
    let revision = ctx
        .conn
        .admin
        .revoke_token(&a.name, WriteOpts::reason(&a.reason))
        .await
        .map_err(|e| errors::from_client(e, Subject::Token(&a.name)))?;
    Ok(match ctx.output {
        Output::Json => output::json(&json!({"revoked": a.name, "revision": revision})),
        Output::Table => format!(
            "revoked token {:?} at revision {revision}: it no longer works on any node, and the streams it opened are closed",
            a.name
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, role: pb::Role, namespaces: &[&str], expires_ms: i64) -> pb::Token {
        pb::Token {
            name: name.into(),
            role: role as i32,
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            expires_ms,
            created_ms: 1_767_225_600_000,
            created_by: "admin".into(),
            revision: 7,
        }
    }

    #[test]
    fn durations_parse_with_one_unit() {
        assert_eq!(parse_expires_in("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_expires_in("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert_eq!(parse_expires_in("90m"), Ok(Duration::from_secs(90 * 60)));
        assert_eq!(parse_expires_in("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_expires_in("45s"), Ok(Duration::from_secs(45)));
        for bad in ["", "d", "30", "0d", "-1d", "1.5h", "3y", "12 h", "99999999999999999999d"] {
            assert!(parse_expires_in(bad).is_err(), "{bad:?}");
        }
        assert!(parse_expires_in("3651d").expect_err("over the limit").contains("limit"));
    }

    #[test]
    fn names_and_namespaces_are_checked_before_the_cluster_is_asked() {
        let args = |name: &str, role, ns: &[&str]| CreateArgs {
            name: name.into(),
            role,
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
            expires_in: None,
            reason: String::new(),
        };
        assert!(check(&args("ci", RoleArg::Admin, &[])).is_ok());
        assert!(check(&args("ci", RoleArg::Editor, &["shop"])).is_ok());
        let f = check(&args("CI", RoleArg::Admin, &[])).expect_err("upper case");
        assert_eq!(f.exit_code(), 2);
        assert!(f.to_string().starts_with("token name:"), "{f}");
        let f = check(&args("ci", RoleArg::Admin, &["shop"])).expect_err("admin with a namespace");
        assert!(f.to_string().contains("drop --namespace"), "{f}");
        let f = check(&args("ci", RoleArg::Reader, &[])).expect_err("reader of nothing");
        assert!(f.to_string().contains("--namespace"), "{f}");
    }

    #[test]
    fn the_secret_is_printed_once_and_clearly() {
        let t = token("ci", pb::Role::Editor, &["shop", "search"], 1_767_225_600_000 + 86_400_000);
        let secret = "vexil_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let text = render_created(Output::Table, &t, secret, 42);
        assert_eq!(text.matches(secret).count(), 1, "{text}");
        assert!(text.contains("shown only this once"), "{text}");
        assert!(text.contains("\n    vexil_"), "the secret stands on a line of its own: {text}");
        assert!(text.contains("VEXIL_TOKEN"), "{text}");
        assert!(text.contains("role editor of shop, search, expires 2026-01-02T00:00:00Z"), "{text}");
        let v: Value = serde_json::from_str(&render_created(Output::Json, &t, secret, 42)).expect("JSON");
        assert_eq!(v["secret"], secret);
        assert_eq!(v["role"], "editor");
        assert_eq!(v["revision"], 42);
    }

    #[test]
    fn the_list_shows_grants_and_expiry_but_no_secret() {
        let now = 1_767_225_600_000 + 10;
        let tokens = vec![
            token("admin", pb::Role::Admin, &[], 0),
            token("ci", pb::Role::Editor, &["shop", "search"], 1_767_225_600_000 + 86_400_000),
            token("old", pb::Role::Reader, &["shop"], 1_767_225_600_000),
        ];
        insta::assert_snapshot!(render_list(Output::Table, &tokens, now));
        let v: Value = serde_json::from_str(&render_list(Output::Json, &tokens, now)).expect("JSON");
        assert_eq!(v[1]["namespaces"], json!(["shop", "search"]));
        assert!(v[0].get("secret").is_none());
        assert!(render_list(Output::Table, &[], now).contains("token create"));
    }
}
