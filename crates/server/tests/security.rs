//! Security on a real TLS cluster (`ClusterBuilder::secure`: a cluster CA, node certificates,
//! mutual TLS between nodes, the first admin token from a file):
//!
//! - every `vexil.v1` RPC and the admin port refuse a call without a token, with a wrong, an
//!   expired or a revoked one (UNAUTHENTICATED), and with a token of the wrong role or namespace
//!   (PERMISSION_DENIED naming the role); health probes stay open;
//! - an editor of `a` cannot touch `b`, a reader cannot write, only an admin manages tokens and
//!   membership; the audit names the principal of flag, token and membership changes, and the
//!   chain verifies;
//! - a watch stream ends when its token is revoked;
//! - the Raft port refuses plaintext, a client without a certificate and one with a certificate
//!   of another CA; a node with a certificate of another CA cannot join.

use std::time::Duration;

use futures::future::BoxFuture;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request, Status};
use vexil_proto::v1::audit_client::AuditClient;
use vexil_proto::v1::cluster_client::ClusterClient;
use vexil_proto::v1::evaluation_client::EvaluationClient;
use vexil_proto::v1::flags_client::FlagsClient;
use vexil_proto::v1::tokens_client::TokensClient;
use vexil_proto::v1::watch_client::WatchClient;
use vexil_proto::v1::*;
use vexil_proto::vexil::raft::v1::RaftPayload;
use vexil_proto::vexil::raft::v1::raft_transport_client::RaftTransportClient;
use vexil_server::error::ErrorReason;
use vexil_testkit::{Cluster, Listener, spec, verify_chain};

fn secure(voters: u64) -> vexil_testkit::ClusterBuilder {
    Cluster::builder(voters).bin(env!("CARGO_BIN_EXE_vexil")).secure()
}

/// `msg` with `authorization: Bearer <token>` when a token is given.
fn with_token<T>(msg: T, token: &Option<String>) -> Request<T> {
    let mut req = Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().expect("header"));
    }
    req
}

/// How a watch stream ends: it must end with an error within 5 s (messages before it are
/// skipped).
async fn stream_end(stream: &mut tonic::Streaming<WatchResponse>) -> Status {
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends within seconds");
    end.expect_err("it ends with an error")
}

fn reason(status: &Status) -> Option<String> {
    vexil_server::error::error_info(status).map(|(r, _)| r)
}

/// Creates a token as the cluster's admin and returns its secret.
async fn create_token(c: &Cluster, name: &str, role: Role, namespaces: &[&str], expires_ms: i64) -> String {
    let mut tokens = TokensClient::new(c.channel(1).await);
    let resp = tokens
        .create_token(c.request(CreateTokenRequest {
            name: name.into(),
            role: role as i32,
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            expires_ms,
            options: None,
        }))
        .await
        .unwrap_or_else(|s| panic!("create token {name}: {s:?}"))
        .into_inner();
    assert!(resp.secret.starts_with("vexil_") && resp.secret.len() == 70, "{}", resp.secret);
    resp.secret
}

/// What an RPC needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    Admin,
    /// Editor (or admin) of namespace `a`.
    WriteA,
    /// Any role on namespace `a`.
    ReadA,
    /// Any valid token.
    AnyRole,
    /// `Init`: a caller without a token may call it (an initialised cluster refuses what it
    /// asks); a token must be an admin's.
    Init,
}

type Call = Box<dyn Fn(Channel, Option<String>) -> BoxFuture<'static, Result<(), Status>> + Send + Sync>;

macro_rules! call {
    ($client:ident, $method:ident, $msg:expr) => {
        Box::new(|ch: Channel, token: Option<String>| -> BoxFuture<'static, Result<(), Status>> {
            Box::pin(async move { $client::new(ch).$method(with_token($msg, &token)).await.map(|_| ()) })
        }) as Call
    };
}

/// Every `vexil.v1` RPC, with what it needs. Namespaced calls use namespace `a`.
fn every_rpc() -> Vec<(&'static str, Needs, Call)> {
    fn ns() -> String {
        "a".to_string()
    }
    vec![
        (
            "Flags.CreateFlag",
            Needs::WriteA,
            call!(
                FlagsClient,
                create_flag,
                CreateFlagRequest {
                    namespace: ns(),
                    key: "x".into(),
                    spec_json: spec("x"),
                    options: None,
                    strict: false
                }
            ),
        ),
        (
            "Flags.UpdateFlag",
            Needs::WriteA,
            call!(
                FlagsClient,
                update_flag,
                UpdateFlagRequest { namespace: ns(), key: "x".into(), spec_json: spec("y"), ..Default::default() }
            ),
        ),
        (
            "Flags.SetFlagState",
            Needs::WriteA,
            call!(
                FlagsClient,
                set_flag_state,
                SetFlagStateRequest { namespace: ns(), key: "x".into(), ..Default::default() }
            ),
        ),
        (
            "Flags.DeleteFlag",
            Needs::WriteA,
            call!(
                FlagsClient,
                delete_flag,
                DeleteFlagRequest { namespace: ns(), key: "nope".into(), ..Default::default() }
            ),
        ),
        (
            "Flags.ApplyNamespace",
            Needs::WriteA,
            call!(
                FlagsClient,
                apply_namespace,
                ApplyNamespaceRequest {
                    namespace: ns(),
                    document_json: r#"{"flags":{}}"#.into(),
                    dry_run: true,
                    ..Default::default()
                }
            ),
        ),
        (
            "Flags.GetFlag",
            Needs::ReadA,
            call!(FlagsClient, get_flag, GetFlagRequest { namespace: ns(), key: "x".into(), ..Default::default() }),
        ),
        (
            "Flags.ListFlags",
            Needs::ReadA,
            call!(FlagsClient, list_flags, ListFlagsRequest { namespace: ns(), ..Default::default() }),
        ),
        ("Flags.ListNamespaces", Needs::AnyRole, call!(FlagsClient, list_namespaces, ListNamespacesRequest::default())),
        (
            "Flags.GetNamespaceSettings",
            Needs::ReadA,
            call!(
                FlagsClient,
                get_namespace_settings,
                GetNamespaceSettingsRequest { namespace: ns(), ..Default::default() }
            ),
        ),
        (
            // The defaults again: an admin's call changes nothing.
            "Flags.SetNamespaceSettings",
            Needs::Admin,
            call!(
                FlagsClient,
                set_namespace_settings,
                SetNamespaceSettingsRequest { namespace: ns(), strict: Some(false), ..Default::default() }
            ),
        ),
        (
            "Evaluation.EvaluateFlag",
            Needs::ReadA,
            call!(
                EvaluationClient,
                evaluate_flag,
                EvaluateFlagRequest { namespace: ns(), key: "x".into(), ..Default::default() }
            ),
        ),
        (
            "Evaluation.EvaluateAll",
            Needs::ReadA,
            call!(EvaluationClient, evaluate_all, EvaluateAllRequest { namespace: ns(), ..Default::default() }),
        ),
        (
            "Watch.Watch",
            Needs::ReadA,
            call!(WatchClient, watch, WatchRequest { namespaces: vec![ns()], ..Default::default() }),
        ),
        (
            "Audit.ListAudit(namespace)",
            Needs::ReadA,
            call!(AuditClient, list_audit, ListAuditRequest { namespace: ns(), ..Default::default() }),
        ),
        ("Audit.ListAudit(all)", Needs::Admin, call!(AuditClient, list_audit, ListAuditRequest::default())),
        (
            // Past the end of the log: an admin's call is refused for what it asks, and removes nothing.
            "Audit.CompactAudit",
            Needs::Admin,
            call!(AuditClient, compact_audit, CompactAuditRequest { through_seq: u64::MAX, ..Default::default() }),
        ),
        ("Cluster.ListAlarms", Needs::AnyRole, call!(ClusterClient, list_alarms, ListAlarmsRequest {})),
        ("Cluster.ClearAlarms", Needs::Admin, call!(ClusterClient, clear_alarms, ClearAlarmsRequest::default())),
        (
            "Cluster.Init",
            Needs::Init,
            call!(
                ClusterClient,
                init,
                InitRequest {
                    members: vec![Member {
                        node_id: 1,
                        api_addr: "127.0.0.1:1".into(),
                        raft_addr: "127.0.0.1:2".into()
                    }]
                }
            ),
        ),
        ("Cluster.Status", Needs::AnyRole, call!(ClusterClient, status, StatusRequest {})),
        (
            "Cluster.AddLearner",
            Needs::Admin,
            call!(
                ClusterClient,
                add_learner,
                AddLearnerRequest {
                    member: Some(Member {
                        node_id: 9,
                        api_addr: "127.0.0.1:1".into(),
                        raft_addr: "127.0.0.1:2".into()
                    }),
                    ..Default::default()
                }
            ),
        ),
        (
            "Cluster.ChangeMembership",
            Needs::Admin,
            call!(ClusterClient, change_membership, ChangeMembershipRequest { voters: vec![1], ..Default::default() }),
        ),
        (
            "Cluster.RemoveNode",
            Needs::Admin,
            call!(ClusterClient, remove_node, RemoveNodeRequest { node_id: 2, ..Default::default() }),
        ),
        ("Cluster.Snapshot", Needs::Admin, call!(ClusterClient, snapshot, SnapshotRequest {})),
        (
            "Tokens.CreateToken",
            Needs::Admin,
            call!(
                TokensClient,
                create_token,
                CreateTokenRequest { name: "sneaky".into(), role: Role::Admin as i32, ..Default::default() }
            ),
        ),
        ("Tokens.ListTokens", Needs::Admin, call!(TokensClient, list_tokens, ListTokensRequest {})),
        (
            "Tokens.RevokeToken",
            Needs::Admin,
            call!(TokensClient, revoke_token, RevokeTokenRequest { name: "admin".into(), ..Default::default() }),
        ),
        (
            "Tokens.SetAnonymousRead",
            Needs::Admin,
            call!(
                TokensClient,
                set_anonymous_read,
                SetAnonymousReadRequest { namespace: ns(), enabled: false, ..Default::default() }
            ),
        ),
    ]
}

/// A credential a caller presents, and what the cluster must make of it.
enum Caller {
    /// Refused as UNAUTHENTICATED whatever the call (`Init` aside for no token).
    Invalid(Option<String>),
    /// A valid token with this role on these namespaces.
    Valid { role: Role, namespaces: &'static [&'static str], token: String },
}

fn allowed(role: Role, namespaces: &[&str], needs: Needs) -> bool {
    let on_a = namespaces.contains(&"a");
    match needs {
        Needs::Admin | Needs::Init => role == Role::Admin,
        Needs::WriteA => role == Role::Admin || (role == Role::Editor && on_a),
        Needs::ReadA => role == Role::Admin || on_a,
        Needs::AnyRole => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_missing_wrong_expired_revoked_and_insufficient_tokens() {
    let c = secure(3).listener(Listener::Admin).start().await;
    let expiring = create_token(&c, "short-lived", Role::Admin, &[], now_ms() + 1_500).await;
    let revoked = create_token(&c, "gone", Role::Admin, &[], 0).await;
    TokensClient::new(c.channel(1).await)
        .revoke_token(c.request(RevokeTokenRequest { name: "gone".into(), options: None }))
        .await
        .expect("revoke");
    let callers = vec![
        ("no token", Caller::Invalid(None)),
        ("a wrong token", Caller::Invalid(Some(format!("vexil_{}", "0".repeat(64))))),
        ("a revoked token", Caller::Invalid(Some(revoked))),
        (
            "an editor of b",
            Caller::Valid {
                role: Role::Editor,
                namespaces: &["b"],
                token: create_token(&c, "editor-b", Role::Editor, &["b"], 0).await,
            },
        ),
        (
            "a reader of a",
            Caller::Valid {
                role: Role::Reader,
                namespaces: &["a"],
                token: create_token(&c, "reader-a", Role::Reader, &["a"], 0).await,
            },
        ),
        (
            "an editor of a",
            Caller::Valid {
                role: Role::Editor,
                namespaces: &["a"],
                token: create_token(&c, "editor-a", Role::Editor, &["a"], 0).await,
            },
        ),
        ("an expired token", Caller::Invalid(Some(expiring))),
    ];
    // The expiring token was created first; by now it has expired.
    tokio::time::sleep(Duration::from_millis(1_600)).await;

    // Ask a follower too: authentication reads the replicated tokens on whichever node.
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut checked = 0;
    for node in [leader, follower] {
        let ch = c.channel(node).await;
        for (caller, credential) in &callers {
            for (rpc, needs, call) in every_rpc() {
                let (token, want_allowed) = match credential {
                    Caller::Invalid(token) => (token.clone(), false),
                    Caller::Valid { role, namespaces, token } => {
                        (Some(token.clone()), allowed(*role, namespaces, needs))
                    }
                };
                let result = call(ch.clone(), token.clone()).await;
                let what = format!("{rpc} by {caller} on node {node}: {result:?}");
                match (credential, needs) {
                    (Caller::Invalid(None), Needs::Init) => {
                        // Past authentication, refused for what it asks (the cluster exists).
                        let s = result.expect_err(&what);
                        assert!(!matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied), "{what}");
                    }
                    (Caller::Invalid(_), _) => {
                        let s = result.expect_err(&what);
                        assert_eq!(s.code(), Code::Unauthenticated, "{what}");
                        assert_eq!(reason(&s).as_deref(), Some(ErrorReason::Unauthenticated.as_str()), "{what}");
                    }
                    (Caller::Valid { .. }, _) if want_allowed => {
                        if let Err(s) = &result {
                            assert!(
                                !matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied),
                                "{what}: allowed, yet refused"
                            );
                        }
                    }
                    (Caller::Valid { .. }, _) => {
                        let s = result.expect_err(&what);
                        assert_eq!(s.code(), Code::PermissionDenied, "{what}");
                        assert_eq!(reason(&s).as_deref(), Some(ErrorReason::PermissionDenied.as_str()), "{what}");
                        assert!(s.message().contains("needs role"), "{what}: the message names the role");
                    }
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 2 * callers.len() * every_rpc().len());

    // Health probes answer anyone; the admin port's metrics need a token, over TLS.
    let mut health = tonic_health::pb::health_client::HealthClient::new(c.channel(leader).await);
    let serving = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
    assert!(serving.is_ok(), "grpc.health.v1 needs no token: {serving:?}");
    assert_eq!(c.admin_get_as(leader, "/livez", None).0, 200);
    assert_eq!(c.admin_get_as(leader, "/metrics", None).0, 401);
    assert_eq!(c.admin_get_as(leader, "/metrics", Some(&format!("vexil_{}", "1".repeat(64)))).0, 401);
    let Caller::Valid { token: reader, .. } = &callers[4].1 else { unreachable!() };
    let (code, body) = c.admin_get_as(leader, "/metrics", Some(reader));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("vexil_"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_names_the_principal_of_every_change_and_editors_stay_in_their_namespace() {
    let mut c = secure(3).start().await;
    let editor = Some(create_token(&c, "editor-a", Role::Editor, &["a"], 0).await);
    let reader = Some(create_token(&c, "reader-a", Role::Reader, &["a"], 0).await);
    let mut flags = FlagsClient::new(c.channel(2).await);
    let create = |ns: &str, key: &str| CreateFlagRequest {
        namespace: ns.into(),
        key: key.into(),
        spec_json: spec(key),
        options: Some(WriteOptions { request_id: String::new(), reason: format!("{ns}/{key}") }),
        strict: false,
    };
    flags.create_flag(with_token(create("a", "banner"), &editor)).await.expect("an editor of a writes a");
    let denied = flags.create_flag(with_token(create("b", "banner"), &editor)).await.expect_err("not b");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("\"editor-a\"") && denied.message().contains("namespace \"b\""), "{denied:?}");
    let denied = flags.create_flag(with_token(create("a", "other"), &reader)).await.expect_err("a reader");
    assert_eq!(denied.code(), Code::PermissionDenied);
    // Nothing of the refused writes exists.
    let got =
        flags.get_flag(c.request(GetFlagRequest { namespace: "b".into(), key: "banner".into(), read: None })).await;
    assert_eq!(got.expect_err("never written").code(), Code::NotFound);
    let mut namespaces = flags.list_namespaces(with_token(ListNamespacesRequest::default(), &reader)).await;
    let seen = namespaces.as_mut().map(|r| std::mem::take(&mut r.get_mut().namespaces)).expect("list");
    assert_eq!(seen, ["a"], "a reader sees only the namespaces it may read");

    // A membership change by the admin (a learner that joins over mutual TLS).
    c.start_outsider(4);
    let mut cluster = ClusterClient::new(c.channel(1).await);
    cluster
        .add_learner(c.request(AddLearnerRequest {
            member: Some(Member {
                node_id: 4,
                api_addr: c.addr(4, Listener::Api),
                raft_addr: c.addr(4, Listener::Raft),
            }),
            blocking: true,
            options: Some(WriteOptions { request_id: String::new(), reason: "read replica".into() }),
        }))
        .await
        .expect("the admin adds a learner with a certificate of the cluster CA");
    let revoked = TokensClient::new(c.channel(3).await)
        .revoke_token(c.request(RevokeTokenRequest { name: "reader-a".into(), options: None }))
        .await
        .expect("revoke")
        .into_inner();

    // The learner follows the leader and knows the admin token.
    c.wait_leader_among(&[1, 2, 3, 4], Duration::from_secs(20)).await;
    let entries = c.audit_log(4, revoked.header.expect("header").revision).await;
    verify_chain(&entries).expect("the chain verifies on the learner");
    let by = |action: &str, key: &str| -> Vec<String> {
        entries.iter().filter(|e| e.action == action && e.key == key).map(|e| e.actor.clone()).collect()
    };
    assert_eq!(by("token.create", "admin"), ["bootstrap"], "the first admin token came from the file");
    assert_eq!(by("token.create", "editor-a"), ["admin"]);
    assert_eq!(by("token.revoke", "reader-a"), ["admin"]);
    assert_eq!(by("flag.create", "banner"), ["editor-a"]);
    let membership: Vec<&AuditEntry> =
        entries.iter().filter(|e| e.action == "membership.change" && e.actor != "raft").collect();
    assert!(
        membership.iter().any(|e| e.actor == "admin" && e.reason == "read replica"),
        "the learner's addition names who asked: {membership:#?}"
    );
    assert!(entries.iter().filter_map(|e| e.after.as_deref()).all(|a| !a.contains("secret") && !a.contains("hash")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_ends_when_its_token_is_revoked() {
    let c = secure(1).start().await;
    let reader = Some(create_token(&c, "watcher", Role::Reader, &["a"], 0).await);
    let mut watch = WatchClient::new(c.channel(1).await);
    let mut stream = watch
        .watch(with_token(
            WatchRequest { namespaces: vec!["a".into()], initial_snapshot: true, ..Default::default() },
            &reader,
        ))
        .await
        .expect("a reader of a watches a")
        .into_inner();
    stream.message().await.expect("the snapshot").expect("a message");
    TokensClient::new(c.channel(1).await)
        .revoke_token(c.request(RevokeTokenRequest { name: "watcher".into(), options: None }))
        .await
        .expect("revoke");
    let status = stream_end(&mut stream).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_port_takes_only_peers_with_a_certificate_of_the_cluster_ca() {
    let mut c = secure(3).start().await;
    let raft = format!("127.0.0.1:{}", c.port(1, Listener::Raft));
    let payload = || RaftPayload { data: vec![1, 2, 3] };
    let ca = Certificate::from_pem(c.credentials().ca_pem());

    // Plaintext: the TLS port does not speak it.
    let plain = Channel::from_shared(format!("http://{raft}")).expect("url").connect().await;
    if let Ok(ch) = plain {
        let refused = RaftTransportClient::new(ch).append_entries(payload()).await;
        assert!(refused.is_err(), "plaintext Raft was answered: {refused:?}");
    }
    // TLS without a client certificate, and with one of another CA: the handshake fails.
    let other = vexil_pki::Ca::generate("another CA").expect("CA");
    let other_cert = other.issue("intruder", &["127.0.0.1".to_string()]).expect("cert");
    for (what, identity) in [
        ("no client certificate", None),
        ("a certificate of another CA", Some(Identity::from_pem(&other_cert.cert_pem, &other_cert.key_pem))),
    ] {
        let mut tls = ClientTlsConfig::new().ca_certificate(ca.clone());
        if let Some(id) = identity {
            tls = tls.identity(id);
        }
        let ch = Channel::from_shared(format!("https://{raft}")).expect("url").tls_config(tls).expect("tls");
        let result = match ch.connect().await {
            Ok(ch) => RaftTransportClient::new(ch).append_entries(payload()).await.map(|_| ()),
            Err(e) => Err(Status::unavailable(e.to_string())),
        };
        let status = result.expect_err(what);
        assert_ne!(status.code(), Code::InvalidArgument, "{what}: the payload was read: {status:?}");
    }
    // The same call with a certificate of the cluster CA passes the handshake and the peer
    // check, and is refused by the next one: it carries no cluster id (`identity.rs`).
    let (cert, key) = c.credentials().issue("a-peer", &["127.0.0.1".to_string()]);
    let tls = ClientTlsConfig::new().ca_certificate(ca).identity(Identity::from_pem(cert, key));
    let ch = Channel::from_shared(format!("https://{raft}")).expect("url").tls_config(tls).expect("tls");
    let status = RaftTransportClient::new(ch.connect().await.expect("mutual TLS"))
        .append_entries(payload())
        .await
        .expect_err("no cluster id");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("without a cluster id"), "{status:?}");

    // A node whose certificate another CA signed cannot join: the leader's Join never reaches
    // it, so it is never added and never receives the log.
    let pki = c.credentials().ca_file().parent().expect("pki dir").to_path_buf();
    let intruder = other.issue("node-4", &["127.0.0.1".to_string(), "localhost".to_string()]).expect("cert");
    std::fs::write(pki.join("node-4.pem"), &intruder.cert_pem).expect("write");
    std::fs::write(pki.join("node-4-key.pem"), &intruder.key_pem).expect("write");
    c.start_outsider(4);
    let leader = c.wait_leader_among(&[1, 2, 3], Duration::from_secs(10)).await;
    let refused = ClusterClient::new(c.channel(leader).await)
        .add_learner(c.request(AddLearnerRequest {
            member: Some(Member {
                node_id: 4,
                api_addr: c.addr(4, Listener::Api),
                raft_addr: c.addr(4, Listener::Raft),
            }),
            blocking: false,
            options: None,
        }))
        .await
        .expect_err("a node the cluster cannot reach over mutual TLS is not added");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("did not answer a join"), "{refused:?}");
    let status = c.status(leader).await.expect("the leader's status");
    assert!(status.learners.iter().all(|m| m.node_id != 4), "{status:?}");
    assert!(!status.lag.contains_key(&4), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_creates_the_first_admin_token_once() {
    let c = secure(3).uninitialised().spawn().expect("start the nodes");
    let members: Vec<Member> = (1..=3)
        .map(|id| Member { node_id: id, api_addr: c.addr(id, Listener::Api), raft_addr: c.addr(id, Listener::Raft) })
        .collect();
    // No token exists yet: Init is the one call a caller without one may make.
    let mut cluster = ClusterClient::new(c.channel(1).await);
    let init = cluster.init(InitRequest { members: members.clone() }).await.expect("init").into_inner();
    let admin = Some(init.admin_token);
    assert!(admin.as_deref().is_some_and(|t| t.starts_with("vexil_") && t.len() == 70), "{admin:?}");

    // The token works on every node, also on one that learns of it a moment later.
    for id in 1..=3 {
        let status = ClusterClient::new(c.channel(id).await).status(with_token(StatusRequest {}, &admin)).await;
        assert!(status.is_ok(), "node {id}: {status:?}");
    }
    // Once: a second Init (with no token, or with the admin's) creates nothing.
    let again = cluster.init(InitRequest { members: members.clone() }).await.expect_err("initialised");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    let again = cluster.init(with_token(InitRequest { members }, &admin)).await.expect_err("initialised");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    let tokens = TokensClient::new(c.channel(2).await)
        .list_tokens(with_token(ListTokensRequest {}, &admin))
        .await
        .expect("list")
        .into_inner()
        .tokens;
    let names: Vec<(&str, &str)> = tokens.iter().map(|t| (t.name.as_str(), t.created_by.as_str())).collect();
    assert_eq!(names, [("admin", "init")]);
}

/// Each principal has its own bucket of `auth.principal_requests_per_second` calls per node: a
/// reader calling in a tight loop is refused RESOURCE_EXHAUSTED (RATE_LIMITED, naming the
/// setting and when to retry) while an editor's calls go on; a refused write writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_calling_too_often_is_refused_and_others_are_not() {
    const PER_SECOND: usize = 40;
    let c = secure(1).flags(&["--auth-principal-requests-per-second", &PER_SECOND.to_string()]).start().await;
    let reader = Some(create_token(&c, "busy-reader", Role::Reader, &["a"], 0).await);
    let editor = Some(create_token(&c, "editor", Role::Editor, &["a"], 0).await);
    let mut flags = FlagsClient::new(c.channel(1).await);
    let get = || GetFlagRequest { namespace: "a".into(), key: "none".into(), read: None };

    // Never more accepted than the bucket holds plus what it refilled meanwhile.
    let (mut refused, mut calls) = (Vec::new(), 0);
    let started = std::time::Instant::now();
    while calls < 4 * PER_SECOND || refused.is_empty() {
        calls += 1;
        match flags.get_flag(with_token(get(), &reader)).await {
            Err(s) if s.code() == Code::ResourceExhausted => refused.push(s),
            Err(s) => assert_eq!(s.code(), Code::NotFound, "{s:?}"),
            Ok(_) => panic!("flag `none` does not exist"),
        }
        assert!(calls < 100 * PER_SECOND, "no call refused in {calls}");
    }
    let accepted = calls - refused.len();
    let could = PER_SECOND + (PER_SECOND as f64 * started.elapsed().as_secs_f64()).ceil() as usize + 1;
    assert!(accepted <= could, "{accepted} of {calls} calls accepted; at most {could} in {:?}", started.elapsed());
    let first = &refused[0];
    let (why, meta) = vexil_server::error::error_info(first).expect("error info");
    assert_eq!(why, ErrorReason::RateLimited.as_str());
    assert_eq!(meta.get("principal").map(String::as_str), Some("busy-reader"));
    assert_eq!(meta.get("limit").map(String::as_str), Some("auth.principal_requests_per_second=40"));
    assert!(meta.get("retry_after_ms").and_then(|ms| ms.parse::<u64>().ok()).is_some_and(|ms| ms >= 1), "{meta:?}");
    assert!(first.message().contains("busy-reader") && first.message().contains("retry in"), "{first:?}");

    // The editor's bucket is its own; its refused writes leave nothing behind.
    let (mut written, mut refused_keys) = (Vec::new(), Vec::new());
    let editor_started = std::time::Instant::now();
    for i in 0..3 * PER_SECOND {
        let key = format!("f{i:03}");
        let create = CreateFlagRequest {
            namespace: "a".into(),
            key: key.clone(),
            spec_json: spec(&key),
            options: None,
            strict: false,
        };
        match flags.create_flag(with_token(create, &editor)).await {
            Ok(_) => written.push(key),
            Err(s) if s.code() == Code::ResourceExhausted => refused_keys.push(key),
            Err(s) => panic!("{key}: {s:?}"),
        }
    }
    assert!(written.len() >= PER_SECOND / 2, "the editor was not held back by the reader: {} written", written.len());
    // Its own burst crossed its limit, unless the machine was too slow to send faster than the
    // bucket refills (every write commits through Raft first).
    let could_refill = PER_SECOND + PER_SECOND * editor_started.elapsed().as_secs() as usize;
    assert!(!refused_keys.is_empty() || written.len() <= could_refill + PER_SECOND, "{} written", written.len());
    let listed = flags
        .list_flags(c.request(ListFlagsRequest { namespace: "a".into(), limit: 1000, ..Default::default() }))
        .await
        .expect("the admin lists")
        .into_inner();
    let keys: Vec<String> = listed.flags.into_iter().map(|f| f.key).collect();
    assert_eq!(keys, written, "exactly the accepted writes exist");
    // A second later the reader is served again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let again = flags.get_flag(with_token(get(), &reader)).await.expect_err("still no such flag");
    assert_eq!(again.code(), Code::NotFound, "{again:?}");
}

/// Anonymous read is off until an admin opens a namespace; then a caller without a token may
/// read that namespace (get, evaluate, watch) on every node, and nothing else; closing it ends
/// the streams opened without a token. Both changes are audited with the admin as actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_read_is_an_audited_setting_of_one_namespace() {
    let c = secure(3).start().await;
    let mut flags = FlagsClient::new(c.channel(2).await);
    for ns in ["public", "a"] {
        let create = CreateFlagRequest {
            namespace: ns.into(),
            key: "banner".into(),
            spec_json: spec("banner"),
            options: None,
            strict: false,
        };
        flags.create_flag(c.request(create)).await.expect("the admin creates");
    }
    let get = |ns: &str| GetFlagRequest { namespace: ns.into(), key: "banner".into(), read: None };
    let refused = flags.get_flag(get("public")).await.expect_err("off by default");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    let editor = Some(create_token(&c, "editor-public", Role::Editor, &["public"], 0).await);
    let mut tokens = TokensClient::new(c.channel(1).await);
    let open = |enabled| SetAnonymousReadRequest {
        namespace: "public".into(),
        enabled,
        options: Some(WriteOptions { request_id: String::new(), reason: "flagd providers".into() }),
    };
    let denied = tokens.set_anonymous_read(with_token(open(true), &editor)).await.expect_err("admins only");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let opened = tokens.set_anonymous_read(c.request(open(true))).await.expect("the admin opens it").into_inner();
    let at = opened.header.expect("header").revision;

    // Every node lets a caller without a token read `public` once it has applied the setting.
    for id in 1..=3 {
        let mut node = FlagsClient::new(c.channel(id).await);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match node.get_flag(get("public")).await {
                Ok(got) => {
                    assert!(got.into_inner().flag.is_some());
                    break;
                }
                Err(s) if s.code() == Code::Unauthenticated && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(s) => panic!("node {id}: {s:?}"),
            }
        }
        // Nothing else: another namespace, a write, the cluster.
        assert_eq!(node.get_flag(get("a")).await.expect_err("a is closed").code(), Code::Unauthenticated);
        let write = UpdateFlagRequest {
            namespace: "public".into(),
            key: "banner".into(),
            spec_json: spec("banner"),
            ..Default::default()
        };
        assert_eq!(node.update_flag(write).await.expect_err("read only").code(), Code::Unauthenticated);
        let status = ClusterClient::new(c.channel(id).await).status(StatusRequest {}).await;
        assert_eq!(status.expect_err("not the cluster").code(), Code::Unauthenticated);
        let history = AuditClient::new(c.channel(id).await)
            .list_audit(ListAuditRequest { namespace: "public".into(), ..Default::default() })
            .await;
        assert_eq!(history.expect_err("not its history").code(), Code::Unauthenticated);
    }
    let evaluated = EvaluationClient::new(c.channel(3).await)
        .evaluate_flag(EvaluateFlagRequest { namespace: "public".into(), key: "banner".into(), ..Default::default() })
        .await;
    assert!(evaluated.is_ok(), "{evaluated:?}");

    // A watch without a token and without namespaces watches the open ones.
    let mut watch = WatchClient::new(c.channel(3).await);
    let mut stream = watch
        .watch(WatchRequest { initial_snapshot: true, after_revision: at, ..Default::default() })
        .await
        .expect("a watch of the open namespaces")
        .into_inner();
    let first = stream.message().await.expect("the snapshot").expect("a message");
    let Some(watch_response::Kind::Snapshot(snapshot)) = first.kind else { panic!("{first:?}") };
    let names: Vec<&str> = snapshot.namespaces.iter().map(|n| n.namespace.as_str()).collect();
    assert_eq!(names, ["public"]);
    let closed = tokens.set_anonymous_read(c.request(open(false))).await.expect("the admin closes it").into_inner();
    let status = stream_end(&mut stream).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("no longer readable without a token"), "{status:?}");
    let refused = FlagsClient::new(c.channel(3).await).get_flag(get("public")).await.expect_err("closed again");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    let entries = c.audit_log(1, closed.header.expect("header").revision).await;
    let access: Vec<(&str, &str, Option<&str>)> = entries
        .iter()
        .filter(|e| e.action == "namespace.access")
        .map(|e| (e.actor.as_str(), e.namespace.as_str(), e.after.as_deref()))
        .collect();
    assert_eq!(
        access,
        [
            ("admin", "public", Some(r#"{"anonymous_read":true}"#)),
            ("admin", "public", Some(r#"{"anonymous_read":false}"#))
        ]
    );
    verify_chain(&entries).expect("the chain verifies");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}
