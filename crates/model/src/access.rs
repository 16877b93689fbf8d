//! Who may do what: bearer tokens, their roles, and the permission each call needs.
//!
//! A token is replicated state (so every node agrees on it and every change is audited); its
//! secret is never stored, only its SHA-256 ([`secret_hash`]). Authorization is a pure function
//! of the token's [`Grant`] and the call's [`Need`]: the server asks [`Grant::check`] at every
//! RPC, stream and HTTP route.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::limits;

/// A role, from most to least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// The cluster (membership, tokens, snapshots) and every namespace.
    Admin,
    /// Reads and writes flags of its namespaces.
    Editor,
    /// Reads of its namespaces: get, list, evaluation, watch, sync, OFREP.
    Reader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Reader => "reader",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Admin, Role::Editor, Role::Reader].into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a token allows: a role, and for an editor or reader the namespaces it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub role: Role,
    /// Empty for an admin (who has every namespace).
    pub namespaces: BTreeSet<String>,
}

/// The permission a call needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need<'a> {
    /// Cluster operations: membership, tokens, snapshots, namespace settings.
    Admin,
    /// Changing flags of a namespace.
    Write(&'a str),
    /// Reading flags of a namespace (get, list, evaluate, watch, sync, its audit entries).
    Read(&'a str),
    /// Any valid token: cluster status, metrics, and listings that are filtered by
    /// [`Grant::can_read`] afterwards.
    AnyRole,
}

impl std::fmt::Display for Need<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::Admin => f.write_str("role admin"),
            Need::Write(ns) => write!(f, "role editor of namespace {ns:?} (or admin)"),
            Need::Read(ns) => write!(f, "role reader or editor of namespace {ns:?} (or admin)"),
            Need::AnyRole => f.write_str("any role"),
        }
    }
}

impl Grant {
    pub fn admin() -> Grant {
        Grant { role: Role::Admin, namespaces: BTreeSet::new() }
    }

    fn covers(&self, namespace: &str) -> bool {
        self.role == Role::Admin || self.namespaces.contains(namespace)
    }

    /// Whether this grant may read `namespace`.
    pub fn can_read(&self, namespace: &str) -> bool {
        self.covers(namespace)
    }

    /// `Ok` when this grant allows `need`.
    pub fn check(&self, need: &Need<'_>) -> Result<(), Denied> {
        let allowed = match need {
            Need::Admin => self.role == Role::Admin,
            Need::Write(ns) => matches!(self.role, Role::Admin | Role::Editor) && self.covers(ns),
            Need::Read(ns) => self.covers(ns),
            Need::AnyRole => true,
        };
        if allowed { Ok(()) } else { Err(Denied { needs: need.to_string() }) }
    }
}

/// A refused permission: `needs` says what was missing, for the caller's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub needs: String,
}

/// A stored token: everything but the secret, which is kept only as [`secret_hash`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub name: String,
    pub grant: Grant,
    /// Unix milliseconds; 0 = never.
    pub expires_ms: i64,
    pub created_ms: i64,
    pub created_by: String,
    /// The revision that created it.
    pub revision: u64,
}

impl TokenRecord {
    /// Whether the token has expired at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_ms != 0 && now_ms >= self.expires_ms
    }

    /// The audited description of the token: no secret, no hash.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "role": self.grant.role.as_str(),
            "namespaces": self.grant.namespaces,
            "expires_ms": self.expires_ms,
        })
    }
}

/// The prefix of every token secret, so a leaked one is recognisable (secret scanners).
pub const SECRET_PREFIX: &str = "vexil_";

/// The SHA-256 of a token secret: what the cluster stores and looks tokens up by. A secret has
/// 256 random bits, so a plain hash needs no salt or stretching.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Checks a token name: 1 to [`limits::TOKEN_NAME_BYTES_MAX`] bytes of `a-z 0-9 - _ . @`,
/// starting with a letter or digit (it becomes the audit actor).
pub fn validate_token_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > limits::TOKEN_NAME_BYTES_MAX {
        return Err(format!("is {} bytes; the limit is {}", name.len(), limits::TOKEN_NAME_BYTES_MAX));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.@".contains(c);
    if let Some(c) = name.chars().find(|c| !ok_char(*c)) {
        return Err(format!("{name:?} contains {c:?}; token names may hold a-z, 0-9, - _ . and @"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!("{name:?} must start with a letter or digit"));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(format!("{name:?} is reserved: it names callers without a token and other built-in actors"));
    }
    Ok(())
}

/// Actor names the cluster uses itself: a token of one of these names could not be told apart
/// from them in the audit log (and would share the rate of callers without a token).
pub const RESERVED_NAMES: [&str; 4] = ["anonymous", "raft", "bootstrap", "init"];

/// Checks a grant: an admin names no namespaces; an editor or reader names 1 to
/// [`limits::TOKEN_NAMESPACES_MAX`] valid ones. Returns the field and the problem.
pub fn validate_grant(grant: &Grant) -> Result<(), (&'static str, String)> {
    match grant.role {
        Role::Admin if !grant.namespaces.is_empty() => {
            Err(("namespaces", "must be empty for an admin, who has every namespace".into()))
        }
        Role::Admin => Ok(()),
        Role::Editor | Role::Reader if grant.namespaces.is_empty() => {
            Err(("namespaces", format!("must name at least one namespace for an {}", grant.role)))
        }
        Role::Editor | Role::Reader => {
            if grant.namespaces.len() > limits::TOKEN_NAMESPACES_MAX {
                return Err((
                    "namespaces",
                    format!(
                        "names {} namespaces; the limit is {}",
                        grant.namespaces.len(),
                        limits::TOKEN_NAMESPACES_MAX
                    ),
                ));
            }
            for ns in &grant.namespaces {
                crate::flag::validate_namespace(ns).map_err(|p| ("namespaces", p))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(role: Role, namespaces: &[&str]) -> Grant {
        Grant { role, namespaces: namespaces.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn each_role_allows_exactly_its_needs() {
        let admin = Grant::admin();
        let editor = grant(Role::Editor, &["a"]);
        let reader = grant(Role::Reader, &["a"]);
        for need in [Need::Admin, Need::Write("a"), Need::Read("a"), Need::Write("b"), Need::Read("b"), Need::AnyRole] {
            assert!(admin.check(&need).is_ok(), "admin: {need}");
        }
        assert!(editor.check(&Need::Write("a")).is_ok());
        assert!(editor.check(&Need::Read("a")).is_ok());
        assert!(editor.check(&Need::AnyRole).is_ok());
        assert!(reader.check(&Need::Read("a")).is_ok());
        assert!(reader.check(&Need::AnyRole).is_ok());

        let denied = editor.check(&Need::Write("b")).expect_err("an editor of a cannot write b");
        assert_eq!(denied.needs, r#"role editor of namespace "b" (or admin)"#);
        assert!(editor.check(&Need::Read("b")).is_err());
        assert_eq!(editor.check(&Need::Admin).expect_err("not admin").needs, "role admin");
        assert!(reader.check(&Need::Write("a")).is_err(), "a reader cannot write");
        assert!(reader.check(&Need::Read("b")).is_err());
        assert!(reader.check(&Need::Admin).is_err());
    }

    #[test]
    fn names_and_grants_are_validated() {
        assert!(validate_token_name("ci-deployer@team.1").is_ok());
        assert!(validate_token_name("").is_err());
        assert!(validate_token_name("-x").is_err());
        assert!(validate_token_name("Upper").is_err());
        assert!(validate_token_name(&"x".repeat(limits::TOKEN_NAME_BYTES_MAX + 1)).is_err());
        for reserved in RESERVED_NAMES {
            assert!(validate_token_name(reserved).expect_err(reserved).contains("reserved"));
        }

        assert!(validate_grant(&Grant::admin()).is_ok());
        assert_eq!(validate_grant(&grant(Role::Admin, &["a"])).expect_err("admin with ns").0, "namespaces");
        assert!(validate_grant(&grant(Role::Editor, &[])).is_err());
        assert!(validate_grant(&grant(Role::Reader, &["Bad"])).is_err());
        assert!(validate_grant(&grant(Role::Reader, &["a", "b"])).is_ok());
    }

    #[test]
    fn expiry_and_hash() {
        let t = TokenRecord {
            name: "t".into(),
            grant: Grant::admin(),
            expires_ms: 100,
            created_ms: 0,
            created_by: "x".into(),
            revision: 1,
        };
        assert!(!t.expired(99));
        assert!(t.expired(100));
        assert!(!TokenRecord { expires_ms: 0, ..t.clone() }.expired(i64::MAX));
        assert!(!t.describe().to_string().contains("hash"));
        // A known vector: SHA-256 of "abc".
        assert_eq!(hex::encode(secret_hash("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
