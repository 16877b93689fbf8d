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
    Audit,
    Cluster,
    /// A bearer token, by name.
    Token(&'a str),
}

/// A failure from a raw gRPC status (calls made with the generated clients).
pub fn from_status(status: &tonic::Status, subject: Subject<'_>) -> Failure {
    from_client(Error::from_status(status), subject)
}

/// A failure from a client-library error.
pub fn from_client(e: Error, subject: Subject<'_>) -> Failure {
    let (ns, key) = match subject {
        Subject::Flag { namespace, key } => (namespace, key),
        Subject::Namespace(ns) => (ns, ""),
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
