//! What the cluster said, turned into what the operator should do next.
//!
//! Every error the cluster returns carries a stable `ErrorInfo` reason; the client library
//! parses it into [`vexil_client::Error`] with a typed [`ErrorReason`] (the CLI never reads a
//! status itself). This module is the one place that maps those to messages: each says what
//! happened and the command (or flag) that fixes it.

use vexil_client::Error;
use vexil_client::error::ErrorReason;

use crate::Failure;

/// What the failed call was about, so messages can name it.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    Flag {
        namespace: &'a str,
        key: &'a str,
    },
    Namespace(&'a str),
    /// A namespace's change-control policy.
    Policy(&'a str),
    Audit,
    Cluster,
    /// A bearer token, by name.
    Token(&'a str),
    /// A change request of a namespace, by id.
    Change {
        namespace: &'a str,
        id: u64,
    },
}

/// A failure from a raw gRPC status (calls made with the generated clients).
pub fn from_status(status: &tonic::Status, subject: Subject<'_>) -> Failure {
    from_client(Error::from_status(status), subject)
}

/// A failure from a client-library error.
pub fn from_client(e: Error, subject: Subject<'_>) -> Failure {
    let (ns, key) = match subject {
        Subject::Flag { namespace, key } => (namespace, key),
        Subject::Namespace(ns) | Subject::Policy(ns) | Subject::Change { namespace: ns, .. } => (ns, ""),
        _ => ("", ""),
    };
    let msg = match e {
        Error::Config(m) => {
            return Failure::Usage(format!(
                "{m}; check --endpoints, --cacert, --cert, --key and --token (or their variables, or vexilctl.toml)"
            ));
        }
        Error::Invalid { field, problem } => {
            format!("the cluster refused the input: `{field}`: {problem}; fix it and run the command again")
        }
        Error::NotFound { .. } if matches!(subject, Subject::Flag { .. }) => {
            format!("flag {ns}/{key} does not exist; see the flags of the namespace with `vexilctl flag list {ns}`")
        }
        Error::NotFound { namespace, key } => format!("{namespace}/{key} was not found"),
        Error::AlreadyExists { current } => format!(
            "flag {ns}/{key} already exists{}; change it with `vexilctl flag update {ns} {key}`",
            current.map(|v| format!(" (at version {v})")).unwrap_or_default()
        ),
        Error::VersionMismatch { current, .. } if matches!(subject, Subject::Policy(_)) => format!(
            "the policy of namespace {ns} is at version {current}; re-read it (`vexilctl namespace policy get {ns}`) and retry with --expected-version {current}"
        ),
        Error::VersionMismatch { current, .. } => format!(
            "flag {ns}/{key} is at version {current}; re-read it (`vexilctl flag get {ns} {key}`) and retry with --expected-version {current}"
        ),
        Error::RequestIdReused { message } => {
            format!("the request id was already used for a different change ({message}); run the command again")
        }
        Error::Unauthenticated { message } => format!(
            "the cluster did not accept the credentials ({message}); pass a token with --token or VEXIL_TOKEN (or `token` in vexilctl.toml)"
        ),
        Error::PermissionDenied { principal, needs, .. } => format!(
            "token {principal:?} may not do this: it needs {needs}; use a token with that role (an admin creates one with `vexilctl token create`)"
        ),
        Error::Unavailable { reason, message, attempts } => match reason {
            Some(ErrorReason::WriteOutcomeUnknown) => format!(
                "the cluster did not confirm the change in time, so it may or may not have happened ({message}); check with a read before retrying"
            ),
            Some(ErrorReason::LeaseExpired) => format!(
                "{message}; retry against another node (--endpoints), or pass --consistency stale to read this node's possibly stale state"
            ),
            Some(ErrorReason::NoLeader | ErrorReason::NotLeader) => format!(
                "the cluster has no reachable leader after {attempts} attempt(s) ({message}); check `vexilctl cluster status` and that a majority of voters run"
            ),
            _ => format!(
                "cannot reach the cluster after {attempts} attempt(s): {message}; check that the nodes run, that --endpoints / VEXIL_ENDPOINTS point at their API ports, and with TLS that --cacert is the CA that issued their certificates"
            ),
        },
        Error::Server { code, reason, message } => match reason {
            Some(ErrorReason::Membership) => {
                format!("{message}; see the current members with `vexilctl cluster status`")
            }
            Some(ErrorReason::AlreadyInitialized) => {
                "the cluster is already initialised; nothing was changed (see `vexilctl cluster status`)".to_string()
            }
            Some(ErrorReason::RevisionCompacted) => format!("{message}; start again from a newer revision"),
            Some(ErrorReason::RuleViolated) => format!("{message}; {}", rule_advice(&message, subject)),
            Some(ErrorReason::ChangeNotFound) => match subject {
                Subject::Change { namespace, id } => format!(
                    "namespace {namespace} has no change request {id}; see its requests with `vexilctl change list {namespace}` (--all for closed ones)"
                ),
                _ => format!("{message}; see the requests with `vexilctl change list <namespace>`"),
            },
            Some(ErrorReason::TokenNotFound) => match subject {
                Subject::Token(name) => {
                    format!("there is no token named {name:?}; see the tokens with `vexilctl token list`")
                }
                _ => format!("{message}; see the tokens with `vexilctl token list`"),
            },
            Some(ErrorReason::TokenExists) => match subject {
                Subject::Token(name) => format!(
                    "a token named {name:?} already exists; pick another name, or revoke it first with `vexilctl token revoke {name}`"
                ),
                _ => format!("{message}; see the tokens with `vexilctl token list`"),
            },
            _ => format!(
                "the cluster failed the request ({code:?}{}): {message}",
                reason.map(|r| format!(", {r}")).unwrap_or_default()
            ),
        },
    };
    Failure::Failed(msg)
}

/// The rule and the flag (`namespace/key`) a `RULE_VIOLATED` message names: the cluster words
/// it `refused by rule <rule> (<namespace>/<key>): <problem>`.
fn rule_of(message: &str) -> Option<(&str, &str, &str)> {
    let rest = message.strip_prefix("refused by rule ")?;
    let (rule, rest) = rest.split_once(" (")?;
    let (target, _) = rest.split_once("): ")?;
    let (ns, key) = target.split_once('/')?;
    Some((rule, ns, key))
}

/// What to do about a rule of a namespace's change-control policy (`message` names the rule;
/// the cluster's own words say what is wrong).
fn rule_advice(message: &str, subject: Subject<'_>) -> String {
    let (rule, ns, key) = rule_of(message).unwrap_or(("", "", ""));
    let ns = match subject {
        Subject::Flag { namespace, .. }
        | Subject::Namespace(namespace)
        | Subject::Policy(namespace)
        | Subject::Change { namespace, .. } => namespace,
        _ => ns,
    };
    let key = match subject {
        Subject::Flag { key, .. } => key,
        _ if key.is_empty() => "<key>",
        _ => key,
    };
    let change = match subject {
        Subject::Change { id, .. } => id.to_string(),
        _ => "<id>".to_string(),
    };
    let policy = format!("see the namespace's rules with `vexilctl namespace policy get {ns}`");
    match rule {
        "dependency.enabled_dependents" => format!(
            "to turn it off together with the enabled flags that depend on it, run `vexilctl flag disable {ns} {key} --cascade`"
        ),
        "dependency.disabled" | "dependency.missing" => {
            format!("create or enable the flags it depends on first, or change its `depends_on`; {policy}")
        }
        "dependency.cycle" => "remove one of the `depends_on` entries that form the cycle".to_string(),
        "approval.author" => format!(
            "ask a reviewer other than its author to review it; the author may withdraw it with `vexilctl change cancel {ns} {change}`"
        ),
        "approval.role" => format!("a reviewer with one of the policy's `approver_roles` must review it; {policy}"),
        "approval.duplicate" => "each reviewer counts once: another reviewer must approve it".to_string(),
        "approval.cancel" => "ask its author or an admin to cancel it".to_string(),
        "change.stale" | "change.expired" => {
            format!("cancel it with `vexilctl change cancel {ns} {change}` and propose the write again")
        }
        "change.closed" => format!("see it with `vexilctl change show {ns} {change}`"),
        "break_glass.reason" => "give the reason with --reason (the audit log records it)".to_string(),
        "break_glass.not_allowed" => {
            "disable without --break-glass: that opens a change request for reviewers to approve".to_string()
        }
        r if r.starts_with("lifecycle.") => {
            format!("give the flag what its lifecycle stage requires (or move it to another stage); {policy}")
        }
        _ => policy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_mismatch_says_which_version_to_retry_with() {
        let f = from_client(
            Error::VersionMismatch { current: 7, expected: Some(3) },
            Subject::Flag { namespace: "shop", key: "banner" },
        );
        assert_eq!(f.exit_code(), 1);
        assert!(f.to_string().contains("flag shop/banner is at version 7"), "{f}");
        assert!(f.to_string().contains("--expected-version 7"), "{f}");
    }

    #[test]
    fn a_policy_version_mismatch_says_how_to_reread_the_policy() {
        let f = from_client(Error::VersionMismatch { current: 2, expected: Some(1) }, Subject::Policy("shop"));
        assert_eq!(
            f.to_string(),
            "the policy of namespace shop is at version 2; re-read it (`vexilctl namespace policy get shop`) and retry with --expected-version 2"
        );
    }

    #[test]
    fn unreachable_points_at_the_endpoints() {
        let f = from_client(
            Error::Unavailable { reason: None, message: "connection refused".into(), attempts: 3 },
            Subject::Cluster,
        );
        assert!(f.to_string().contains("--endpoints"), "{f}");
        let f = from_client(
            Error::NotFound { namespace: "a".into(), key: "b".into() },
            Subject::Flag { namespace: "a", key: "b" },
        );
        assert!(f.to_string().contains("vexilctl flag list a"), "{f}");
    }

    #[test]
    fn typed_reasons_pick_the_advice() {
        let unavailable = |reason| Error::Unavailable { reason: Some(reason), message: "m".into(), attempts: 2 };
        let f = from_client(unavailable(ErrorReason::WriteOutcomeUnknown), Subject::Cluster);
        assert!(f.to_string().contains("may or may not have happened"), "{f}");
        let f = from_client(unavailable(ErrorReason::LeaseExpired), Subject::Cluster);
        assert!(f.to_string().contains("--consistency stale"), "{f}");
        let f = from_client(unavailable(ErrorReason::NotLeader), Subject::Cluster);
        assert!(f.to_string().contains("no reachable leader after 2 attempt(s)"), "{f}");
        let server =
            |reason| Error::Server { code: tonic::Code::FailedPrecondition, reason: Some(reason), message: "m".into() };
        let f = from_client(server(ErrorReason::AlreadyInitialized), Subject::Cluster);
        assert!(f.to_string().contains("already initialised"), "{f}");
        let f = from_client(server(ErrorReason::Internal), Subject::Cluster);
        assert_eq!(f.to_string(), "the cluster failed the request (FailedPrecondition, INTERNAL): m");
        let f = from_client(server(ErrorReason::TokenNotFound), Subject::Token("ci"));
        assert!(f.to_string().contains("no token named \"ci\"") && f.to_string().contains("token list"), "{f}");
        let f = from_client(server(ErrorReason::TokenExists), Subject::Token("ci"));
        assert!(f.to_string().contains("vexilctl token revoke ci"), "{f}");
    }

    #[test]
    fn policy_rules_get_advice_naming_the_command() {
        let rule = |rule: &str, problem: &str| Error::Server {
            code: tonic::Code::FailedPrecondition,
            reason: Some(ErrorReason::RuleViolated),
            message: format!("refused by rule {rule} (shop/banner): {problem}"),
        };
        let flag = Subject::Flag { namespace: "shop", key: "banner" };
        let f = from_client(rule("dependency.enabled_dependents", "enabled flag \"promo\" depends on it"), flag);
        assert!(f.to_string().starts_with("refused by rule dependency.enabled_dependents (shop/banner)"), "{f}");
        assert!(f.to_string().contains("`vexilctl flag disable shop banner --cascade`"), "{f}");
        let change = Subject::Change { namespace: "shop", id: 7 };
        let f = from_client(rule("approval.author", "alice wrote change 7"), change);
        assert!(
            f.to_string().contains("a reviewer other than its author")
                && f.to_string().contains("change cancel shop 7"),
            "{f}"
        );
        let f = from_client(rule("change.stale", "flag \"banner\" changed"), change);
        assert!(f.to_string().contains("`vexilctl change cancel shop 7`") && f.to_string().contains("again"), "{f}");
        let f = from_client(rule("lifecycle.active.owner", "the flag has no owner"), Subject::Namespace("shop"));
        assert!(f.to_string().contains("lifecycle.active.owner") && f.to_string().contains("policy get shop"), "{f}");
        // The key comes from the message when the subject has none (an apply).
        let f = from_client(rule("dependency.enabled_dependents", "x"), Subject::Namespace("shop"));
        assert!(f.to_string().contains("`vexilctl flag disable shop banner --cascade`"), "{f}");
        assert_eq!(f.exit_code(), 1);

        let missing = Error::Server {
            code: tonic::Code::NotFound,
            reason: Some(ErrorReason::ChangeNotFound),
            message: "change request 9 of namespace shop does not exist".into(),
        };
        let f = from_client(missing, Subject::Change { namespace: "shop", id: 9 });
        assert!(
            f.to_string().contains("no change request 9") && f.to_string().contains("vexilctl change list shop"),
            "{f}"
        );
    }

    #[test]
    fn credentials_errors_say_how_to_give_a_token() {
        let f = from_client(Error::Unauthenticated { message: "no token".into() }, Subject::Cluster);
        assert!(f.to_string().contains("--token") && f.to_string().contains("VEXIL_TOKEN"), "{f}");
        let f = from_client(
            Error::PermissionDenied { principal: "ci".into(), needs: "role admin".into(), message: "m".into() },
            Subject::Cluster,
        );
        assert!(f.to_string().contains("needs role admin"), "{f}");
        let f = from_client(Error::Config("endpoint \"http://x:1\" is http://".into()), Subject::Cluster);
        assert_eq!(f.exit_code(), 2);
        assert!(f.to_string().contains("--cacert"), "{f}");
    }
}
