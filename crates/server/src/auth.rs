//! Who is calling, and may they: bearer-token authentication at the door of every public
//! service, and the role check each handler makes for what it does.
//!
//! - **Authentication** ([`Authenticator`], a tonic interceptor on every `vexil.v1` service):
//!   `authorization: Bearer <secret>` is hashed (SHA-256) and looked up in the replicated token
//!   table; an unknown, revoked or expired token is refused UNAUTHENTICATED before the handler
//!   runs. A call without a token goes on as a principal named `anonymous` that may only read
//!   the namespaces an admin opened to such callers (`SetAnonymousRead`, replicated and
//!   audited; none by default); besides that, only `Init` on a node without a cluster takes it.
//! - **Rate** ([`PrincipalRates`]): each principal's calls to one node are limited to
//!   `auth.principal_requests_per_second`.
//! - **Authorization** ([`Principal::check`], called by every handler with the [`Need`] of
//!   what it does): PERMISSION_DENIED names the role that was missing.
//! - A node started `--insecure` checks no tokens: every caller is the admin `anonymous`.
//!
//! The principal's name is the audit `actor` of what it changes (`api::request`).

use std::collections::BTreeSet;
use std::sync::Arc;

use tonic::metadata::MetadataMap;
use vexil_model::access::{Grant, Need, SECRET_PREFIX, TokenRecord, secret_hash};
use vexil_proto::v1::Consistency;

use crate::config::ConfigError;
use crate::error::ServerError;
use crate::node::Node;

/// The metadata key that carries the bearer token.
pub const AUTHORIZATION: &str = "authorization";

/// The name recorded for a caller without credentials (and for every caller of an insecure node).
pub const ANONYMOUS: &str = "anonymous";

/// The rate-limit bucket of tokens this node does not know (yet): made-up ones cannot buy a
/// read barrier each without limit. Not a valid token name, so no token shares it.
const UNRESOLVED_TOKENS: &str = "<unresolved tokens>";

/// The name of the first admin token, created by bootstrap.
pub const BOOTSTRAP_TOKEN_NAME: &str = "admin";

/// An authenticated caller (or the anonymous one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The audit actor: the token's name.
    pub name: String,
    /// `None` for a caller that sent no token to a node that checks tokens.
    pub grant: Option<Grant>,
    /// The hash of the token it authenticated with, so a stream can tell when it is revoked.
    pub token_hash: Option<[u8; 32]>,
    /// A token this node did not know when the call arrived ([`caller`] looks again).
    unknown: Option<[u8; 32]>,
    /// For a caller without a token: the namespaces anyone may read (`SetAnonymousRead`), as
    /// the node knew them when the call arrived.
    anonymous_reads: Arc<BTreeSet<String>>,
}

impl Principal {
    /// A caller without credentials, on a node that checks tokens and opened no namespace to
    /// such callers.
    pub fn anonymous() -> Principal {
        Principal::without_token(None, None, BTreeSet::new())
    }

    /// Every caller of an `--insecure` node.
    pub fn insecure() -> Principal {
        Principal::without_token(Some(Grant::admin()), None, BTreeSet::new())
    }

    fn without_token(grant: Option<Grant>, unknown: Option<[u8; 32]>, open: BTreeSet<String>) -> Principal {
        let name = if unknown.is_some() { String::new() } else { ANONYMOUS.into() };
        Principal { name, grant, token_hash: None, unknown, anonymous_reads: Arc::new(open) }
    }

    /// The namespaces this caller may read only because they are open to callers without a
    /// token (empty for a caller with one).
    pub fn anonymous_reads(&self) -> &BTreeSet<String> {
        &self.anonymous_reads
    }

    /// `Ok` when this caller may do what needs `need`.
    pub fn check(&self, need: Need<'_>) -> Result<(), ServerError> {
        if self.unknown.is_some() {
            return Err(unknown_token());
        }
        let Some(grant) = &self.grant else {
            if let Need::Read(ns) = need
                && self.anonymous_reads.contains(ns)
            {
                return Ok(());
            }
            return Err(ServerError::Unauthenticated(format!(
                "no bearer token was sent; this call needs {need}: send `authorization: Bearer <token>` (vexilctl --token, VEXIL_TOKEN)"
            )));
        };
        grant.check(&need).map_err(|d| ServerError::PermissionDenied { principal: self.name.clone(), needs: d.needs })
    }

    /// Whether this caller may read `namespace` (to filter listings).
    pub fn can_read(&self, namespace: &str) -> bool {
        self.grant.as_ref().is_some_and(|g| g.can_read(namespace)) || self.anonymous_reads.contains(namespace)
    }
}

/// Authenticates the bearer token of a gRPC call's metadata.
pub fn authenticate(node: &Node, metadata: &MetadataMap) -> Result<Principal, ServerError> {
    authenticate_header(node, metadata.get(AUTHORIZATION).map(|v| v.as_bytes()))
}

/// Authenticates an `authorization` header's value (gRPC metadata or HTTP) against `node`'s
/// replicated tokens, and counts the call against its principal's rate ([`PrincipalRates`]).
pub fn authenticate_header(node: &Node, header: Option<&[u8]>) -> Result<Principal, ServerError> {
    let who = identify(node, header)?;
    // A token this node does not know yet (made a moment ago elsewhere, or made up) counts
    // against one shared bucket before `caller` spends a read barrier on looking it up again;
    // once known, against its own.
    node.rates.check(if who.unknown.is_some() { UNRESOLVED_TOKENS } else { &who.name })?;
    Ok(who)
}

fn identify(node: &Node, header: Option<&[u8]>) -> Result<Principal, ServerError> {
    if !node.config.tokens_enabled() {
        return Ok(Principal::insecure());
    }
    let Some(value) = header else {
        return Ok(Principal::without_token(None, None, node.reader.anonymous_read_namespaces()?));
    };
    let value = std::str::from_utf8(value)
        .map_err(|_| ServerError::Unauthenticated("the authorization header is not text".into()))?;
    let Some(secret) = value.strip_prefix("Bearer ").map(str::trim) else {
        return Err(ServerError::Unauthenticated("the authorization header is not `Bearer <token>`".into()));
    };
    let hash = secret_hash(secret);
    match node.reader.token(&hash)? {
        Some(token) => valid(node, token, hash),
        // Maybe made a moment ago on another node: `caller` looks again once this node has
        // caught up.
        None => Ok(Principal::without_token(None, Some(hash), BTreeSet::new())),
    }
}

fn unknown_token() -> ServerError {
    ServerError::Unauthenticated("the bearer token is not known to this cluster (wrong, or revoked)".into())
}

fn valid(node: &Node, token: TokenRecord, hash: [u8; 32]) -> Result<Principal, ServerError> {
    if token.expired(node.now_ms()) {
        return Err(ServerError::Unauthenticated(format!(
            "token {:?} expired at {} (Unix ms); ask an admin for a new one",
            token.name, token.expires_ms
        )));
    }
    Ok(Principal {
        name: token.name,
        grant: Some(token.grant),
        token_hash: Some(hash),
        unknown: None,
        anonymous_reads: Arc::default(),
    })
}

/// The caller of a request that passed the [`Authenticator`]. A token this node did not know
/// when the call arrived may have been created a moment ago through another node: it is looked
/// up again once this node has applied what the cluster had committed (a lease read barrier),
/// and refused if it is still unknown. A request that did not pass the interceptor (a service
/// mounted without it) counts as anonymous, so it is refused, never let through.
pub async fn caller<T>(node: &Arc<Node>, req: &tonic::Request<T>) -> Result<Principal, ServerError> {
    let who = req.extensions().get::<Principal>().cloned().unwrap_or_else(Principal::anonymous);
    resolve(node, who).await
}

/// The caller of an HTTP request (OFREP): its `authorization: Bearer <token>`, or its
/// `x-api-key: <token>` (OFREP's other scheme), or none; then as [`caller`].
pub async fn http_caller(node: &Arc<Node>, headers: &axum::http::HeaderMap) -> Result<Principal, ServerError> {
    let who = match (headers.get(axum::http::header::AUTHORIZATION), headers.get("x-api-key")) {
        (Some(bearer), _) => authenticate_header(node, Some(bearer.as_bytes()))?,
        (None, Some(key)) => {
            let mut bearer = b"Bearer ".to_vec();
            bearer.extend_from_slice(key.as_bytes());
            authenticate_header(node, Some(&bearer))?
        }
        (None, None) => authenticate_header(node, None)?,
    };
    resolve(node, who).await
}

/// Looks up again a token this node did not know when the call arrived (see [`caller`]).
async fn resolve(node: &Arc<Node>, who: Principal) -> Result<Principal, ServerError> {
    let Some(hash) = who.unknown else { return Ok(who) };
    node.read_barrier(Consistency::Lease, Consistency::Lease, 0).await?;
    let who = match node.reader.token(&hash)? {
        Some(token) => valid(node, token, hash)?,
        None => return Err(unknown_token()),
    };
    node.rates.check(&who.name)?;
    Ok(who)
}

/// The per-principal call rate of one node (`auth.principal_requests_per_second`): a token
/// bucket per principal name, refilled at the configured rate and holding a second's worth.
/// Keys are principals that authenticated (token names, at most `TOKENS_MAX` of them, and
/// `anonymous`), so the table cannot be grown by made-up credentials; buckets idle for a
/// second are full again and are dropped when the table grows past that.
pub struct PrincipalRates {
    limiter: Option<governor::DefaultKeyedRateLimiter<String>>,
    per_second: u32,
}

impl PrincipalRates {
    /// No limit when `per_second` is 0 or the node checks no tokens (`--insecure`).
    pub fn new(per_second: u32, tokens_enabled: bool) -> PrincipalRates {
        let limiter = std::num::NonZeroU32::new(per_second)
            .filter(|_| tokens_enabled)
            .map(|n| governor::RateLimiter::keyed(governor::Quota::per_second(n)));
        PrincipalRates { limiter, per_second }
    }

    /// Counts one call of `principal`; RESOURCE_EXHAUSTED when its bucket is empty.
    pub fn check(&self, principal: &str) -> Result<(), ServerError> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        let key = principal.to_string();
        if limiter.len() > vexil_model::limits::TOKENS_MAX + 1 {
            // Names of revoked tokens: their buckets are full again, so forgetting them is exact.
            limiter.retain_recent();
        }
        match limiter.check_key(&key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(limiter.clock()));
                Err(ServerError::RateLimited {
                    principal: key,
                    per_second: self.per_second,
                    retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
                })
            }
        }
    }
}

/// Whether `principal` may still read `namespaces`, now: for open streams. A token must still
/// exist and not have expired; a caller without one needs each namespace still open to such
/// callers.
pub fn still_valid(node: &Node, principal: &Principal, namespaces: &[String]) -> Result<(), ServerError> {
    if principal.grant.is_none() {
        let open = node.reader.anonymous_read_namespaces()?;
        return match namespaces.iter().find(|ns| !open.contains(ns.as_str())) {
            Some(ns) => Err(ServerError::Unauthenticated(format!(
                "namespace {ns:?} is no longer readable without a token; reconnect with one"
            ))),
            None => Ok(()),
        };
    }
    let Some(hash) = &principal.token_hash else { return Ok(()) };
    match node.reader.token(hash)? {
        None => Err(ServerError::Unauthenticated(format!("token {:?} was revoked", principal.name))),
        Some(t) if t.expired(node.now_ms()) => {
            Err(ServerError::Unauthenticated(format!("token {:?} expired", principal.name)))
        }
        Some(_) => Ok(()),
    }
}

/// The tonic interceptor of every public service: authenticates, and hands the handler the
/// [`Principal`] as a request extension ([`principal`] reads it).
#[derive(Clone)]
pub struct Authenticator {
    pub node: Arc<Node>,
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let principal = authenticate(&self.node, req.metadata())?;
        req.extensions_mut().insert(principal);
        Ok(req)
    }
}

/// Reads the first admin token's secret from `auth.bootstrap_token_file`.
pub fn read_bootstrap_secret(path: &std::path::Path) -> Result<String, ConfigError> {
    let key = "auth.bootstrap_token_file";
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError { key: key.into(), problem: format!("cannot read {}: {e}", path.display()) })?;
    let secret = text.trim().to_string();
    check_secret_format(&secret).map_err(|problem| ConfigError { key: key.into(), problem })?;
    Ok(secret)
}

/// A token secret: [`SECRET_PREFIX`] and 64 lowercase hex digits (256 bits).
pub fn check_secret_format(secret: &str) -> Result<(), String> {
    let ok = secret
        .strip_prefix(SECRET_PREFIX)
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    if ok { Ok(()) } else { Err(format!("a token secret is {SECRET_PREFIX} followed by 64 lowercase hex digits")) }
}

/// A fresh token secret: 256 bits from the operating system's generator.
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    // ThreadRng: a CSPRNG seeded from the operating system.
    rand::rng().fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", hex::encode(bytes))
}

/// The proposed command that creates a token.
pub fn create_token_command(
    name: &str,
    grant: Grant,
    secret: &str,
    expires_ms: i64,
    bootstrap: bool,
) -> vexil_raft_store::Command {
    vexil_raft_store::Command::CreateToken {
        name: name.into(),
        grant,
        secret_hash: secret_hash(secret),
        expires_ms,
        bootstrap,
    }
}

/// The wire form of a stored token.
pub fn token_to_proto(t: &TokenRecord) -> vexil_proto::v1::Token {
    use vexil_model::access::Role;
    let role = match t.grant.role {
        Role::Admin => vexil_proto::v1::Role::Admin,
        Role::Editor => vexil_proto::v1::Role::Editor,
        Role::Reader => vexil_proto::v1::Role::Reader,
    };
    vexil_proto::v1::Token {
        name: t.name.clone(),
        role: role as i32,
        namespaces: t.grant.namespaces.iter().cloned().collect(),
        expires_ms: t.expires_ms,
        created_ms: t.created_ms,
        created_by: t.created_by.clone(),
        revision: t.revision,
    }
}

/// The write that creates the first admin token, `admin`, with `secret`: a bootstrap token,
/// which the state machine applies at most once in the cluster's life (`Init` and the
/// configured file both propose it).
pub fn first_token_request(node: &Node, secret: &str, actor: &str, reason: &str) -> vexil_raft_store::Request {
    vexil_raft_store::Request {
        // One id per node and secret: a retry applies once, another node's proposal is its own.
        request_id: format!("first-token-{}-{}", node.id, &hex::encode(secret_hash(secret))[..16]),
        actor: actor.into(),
        reason: reason.into(),
        time_ms: node.now_ms(),
        command: create_token_command(BOOTSTRAP_TOKEN_NAME, Grant::admin(), secret, 0, true),
    }
}

/// While this node leads, creates the first admin token from `auth.bootstrap_token_file`
/// unless one was bootstrapped already (the state machine applies a bootstrap token at most
/// once in the cluster's life, so racing leaders are harmless).
pub async fn bootstrap_admin_token(node: Arc<Node>, secret: String) {
    let mut metrics = node.raft.metrics();
    loop {
        let leads = metrics.borrow_and_update().current_leader == Some(node.id);
        if leads {
            match node.reader.tokens_bootstrapped() {
                Ok(true) => return,
                Ok(false) => {
                    let req = first_token_request(&node, &secret, "bootstrap", "auth.bootstrap_token_file");
                    match node.write(req).await {
                        Ok((resp, _)) => {
                            match resp.outcome {
                                Ok(_) => tracing::info!("created the first admin token from auth.bootstrap_token_file"),
                                Err(e) => tracing::info!(error = %e, "the first admin token exists already"),
                            }
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "could not create the first admin token yet; retrying"),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read whether the first admin token exists"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            continue;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_one_format() {
        let s = new_secret();
        assert!(check_secret_format(&s).is_ok(), "{s}");
        assert_ne!(s, new_secret());
        assert!(check_secret_format("vexil_abc").is_err());
        assert!(check_secret_format(&s.to_uppercase()).is_err());
    }

    #[test]
    fn the_anonymous_caller_is_refused_as_unauthenticated_and_a_reader_as_denied() {
        let err = Principal::anonymous().check(Need::Read("a")).expect_err("no token");
        assert!(matches!(&err, ServerError::Unauthenticated(m) if m.contains("reader or editor of namespace \"a\"")));
        let reader = Principal {
            name: "svc".into(),
            grant: Some(Grant { role: vexil_model::access::Role::Reader, namespaces: ["a".to_string()].into() }),
            token_hash: None,
            unknown: None,
            anonymous_reads: Arc::default(),
        };
        assert!(reader.check(Need::Read("a")).is_ok());
        let err = reader.check(Need::Write("a")).expect_err("a reader cannot write");
        assert!(
            matches!(&err, ServerError::PermissionDenied { principal, needs } if principal == "svc" && needs.contains("editor"))
        );
        assert!(Principal::insecure().check(Need::Admin).is_ok());
    }

    #[test]
    fn a_caller_without_a_token_reads_only_the_namespaces_open_to_it() {
        let open = Principal::without_token(None, None, ["public".to_string()].into());
        assert!(open.check(Need::Read("public")).is_ok());
        assert!(open.can_read("public") && !open.can_read("a"));
        for need in [Need::Read("a"), Need::Write("public"), Need::Admin, Need::AnyRole] {
            let err = open.check(need.clone()).expect_err("only reads of open namespaces");
            assert!(matches!(&err, ServerError::Unauthenticated(_)), "{need}: {err:?}");
        }
    }
}
