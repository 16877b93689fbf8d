//! The etcd backend: etcd's v3 gRPC API (messages in [`super::etcd_proto`]) over the same tonic
//! stack as the Vexil backend.
//!
//! In a secure cluster ([`super::security`]) the connections speak mutual TLS, and once
//! [`Backend::prepare`] has enabled auth every call carries the `bench` user's token as
//! `token` metadata, as etcd's own client sends it. etcd keeps `simple` tokens (its default)
//! in each member's memory, so a member that restarted (the failover scenario) or has not seen
//! the token for five minutes answers "invalid auth token": the connection then logs in again
//! and repeats the call once, as etcd's Go client does.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use super::backend::{Backend, Level, NodeStatus, Receipt};
use super::etcd_proto::{
    AUTH_ENABLE, AUTHENTICATE, AuthEnableRequest, AuthHeaderResponse, AuthRoleAddRequest,
    AuthRoleGrantPermissionRequest, AuthUserAddRequest, AuthUserGrantRoleRequest, AuthenticateRequest,
    AuthenticateResponse, PERMISSION_READWRITE, PUT, Permission, PutRequest, PutResponse, RANGE, ROLE_ADD,
    ROLE_GRANT_PERMISSION, RangeRequest, RangeResponse, STATUS, StatusRequest, StatusResponse, TOKEN_METADATA,
    USER_ADD, USER_GRANT_ROLE, WATCH, WatchCreateRequest, WatchRequest, WatchResponse,
};
use super::security::{self, Login, Secure};
use super::workload::NAMESPACE;

pub struct Etcd;

/// The etcd key of a benchmark key: `bench/<key>`.
fn etcd_key(key: &str) -> Vec<u8> {
    format!("{NAMESPACE}/{key}").into_bytes()
}

/// The end of the benchmark's key range: every key under `bench/` is below `bench0`.
fn prefix_end() -> Vec<u8> {
    let mut end = format!("{NAMESPACE}/").into_bytes();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// One connection to a member and, in a secure cluster, its login.
#[derive(Clone)]
pub struct EtcdConn {
    channel: Channel,
    auth: Option<Arc<EtcdAuth>>,
}

/// The user a connection logs in as, and the token it holds (none until auth is enabled).
struct EtcdAuth {
    name: String,
    password: String,
    root_password: String,
    token: RwLock<Option<AsciiMetadataValue>>,
    /// One login at a time per connection: the clients sharing it wait for it, and do not each
    /// ask etcd for a token (every login costs a bcrypt comparison on the member).
    login: tokio::sync::Mutex<()>,
}

impl EtcdConn {
    fn token(&self) -> Option<AsciiMetadataValue> {
        let auth = self.auth.as_ref()?;
        auth.token.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn set_token(&self, token: AsciiMetadataValue) {
        if let Some(auth) = &self.auth {
            *auth.token.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(token);
        }
    }

    fn request<T>(&self, msg: T, token: Option<&AsciiMetadataValue>) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(token) = token {
            req.metadata_mut().insert(TOKEN_METADATA, token.clone());
        }
        req
    }

    /// Exchanges the user's password for a new token, unless another client of this connection
    /// already replaced `stale` (the token that was refused).
    async fn relogin(&self, stale: Option<&AsciiMetadataValue>) -> Result<(), tonic::Status> {
        let Some(auth) = &self.auth else { return Ok(()) };
        let _one_at_a_time = auth.login.lock().await;
        if self.token().as_ref() != stale {
            return Ok(());
        }
        let token = authenticate(&self.channel, &auth.name, &auth.password).await?;
        self.set_token(token);
        // Rare (a restarted member, an idle one): said, so that a run that logs in often shows.
        eprintln!("    etcd: a member refused the token; this connection logged in again");
        Ok(())
    }
}

/// Whether etcd refused a call for its token (unknown to the member, or expired there).
fn token_refused(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unauthenticated && status.message().contains("invalid auth token")
}

async fn call<Req, Resp>(channel: &Channel, path: &'static str, req: tonic::Request<Req>) -> Result<Resp, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| tonic::Status::unknown(format!("the channel is not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    grpc.unary(req, PathAndQuery::from_static(path), codec).await.map(|r| r.into_inner())
}

/// `user`'s token from `Auth/Authenticate`, as metadata.
async fn authenticate(channel: &Channel, user: &str, password: &str) -> Result<AsciiMetadataValue, tonic::Status> {
    let req = AuthenticateRequest { name: user.into(), password: password.into() };
    let reply: AuthenticateResponse = call(channel, AUTHENTICATE, tonic::Request::new(req)).await?;
    reply.token.parse().map_err(|_| tonic::Status::internal("etcd answered a token that is not ASCII metadata"))
}

/// One unary call, with the connection's token; logged in again and repeated once if the
/// member refuses the token.
async fn unary<Req, Resp>(conn: &EtcdConn, path: &'static str, req: Req) -> Result<Resp, tonic::Status>
where
    Req: prost::Message + Clone + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let Some(token) = conn.token() else {
        return call(&conn.channel, path, conn.request(req, None)).await;
    };
    match call(&conn.channel, path, conn.request(req.clone(), Some(&token))).await {
        Err(status) if token_refused(&status) => {
            conn.relogin(Some(&token)).await?;
            call(&conn.channel, path, conn.request(req, conn.token().as_ref())).await
        }
        result => result,
    }
}

/// Creates user `root` (role `root`) and user `name` with role `bench`, which may read and
/// write the benchmark's keys, then enables auth.
async fn enable_auth(conn: &EtcdConn, auth: &EtcdAuth) -> anyhow::Result<()> {
    let step = |what: &'static str| move |e: tonic::Status| anyhow::anyhow!("enabling etcd auth: {what}: {e}");
    let _: AuthHeaderResponse =
        unary(conn, ROLE_ADD, AuthRoleAddRequest { name: "root".into() }).await.map_err(step("adding role root"))?;
    let root = AuthUserAddRequest { name: "root".into(), password: auth.root_password.clone() };
    let _: AuthHeaderResponse = unary(conn, USER_ADD, root).await.map_err(step("adding user root"))?;
    let grant = AuthUserGrantRoleRequest { user: "root".into(), role: "root".into() };
    let _: AuthHeaderResponse = unary(conn, USER_GRANT_ROLE, grant).await.map_err(step("granting root to root"))?;
    let _: AuthHeaderResponse =
        unary(conn, ROLE_ADD, AuthRoleAddRequest { name: "bench".into() }).await.map_err(step("adding role bench"))?;
    let perm = Permission {
        perm_type: PERMISSION_READWRITE,
        key: format!("{NAMESPACE}/").into_bytes(),
        range_end: prefix_end(),
    };
    let grant = AuthRoleGrantPermissionRequest { name: "bench".into(), perm: Some(perm) };
    let _: AuthHeaderResponse =
        unary(conn, ROLE_GRANT_PERMISSION, grant).await.map_err(step("granting bench/ to role bench"))?;
    let user = AuthUserAddRequest { name: auth.name.clone(), password: auth.password.clone() };
    let _: AuthHeaderResponse = unary(conn, USER_ADD, user).await.map_err(step("adding the bench user"))?;
    let grant = AuthUserGrantRoleRequest { user: auth.name.clone(), role: "bench".into() };
    let _: AuthHeaderResponse = unary(conn, USER_GRANT_ROLE, grant).await.map_err(step("granting bench"))?;
    let _: AuthHeaderResponse = unary(conn, AUTH_ENABLE, AuthEnableRequest {}).await.map_err(step("AuthEnable"))?;
    Ok(())
}

impl Backend for Etcd {
    type Conn = EtcdConn;
    const NAME: &'static str = "etcd";
    const LEVELS: &'static [Level] = &[Level::Linearizable, Level::Serializable];

    async fn connect(endpoint: &str, secure: Option<&Secure>) -> anyhow::Result<EtcdConn> {
        let auth = match secure.map(|s| &s.login) {
            None => None,
            Some(Login::EtcdUser { name, password, root_password }) => Some(Arc::new(EtcdAuth {
                name: name.clone(),
                password: password.clone(),
                root_password: root_password.clone(),
                token: RwLock::new(None),
                login: tokio::sync::Mutex::new(()),
            })),
            Some(Login::Bearer(_)) => {
                anyhow::bail!("an etcd cluster is logged into as a user, not with a bearer token")
            }
        };
        Ok(EtcdConn { channel: security::channel(endpoint, secure).await?, auth })
    }

    async fn prepare(leader: &EtcdConn, all: &[EtcdConn]) -> anyhow::Result<()> {
        let Some(auth) = &leader.auth else { return Ok(()) };
        enable_auth(leader, auth).await?;
        // One token for every connection: etcd replicates a login to every member.
        let token = authenticate(&leader.channel, &auth.name, &auth.password)
            .await
            .with_context(|| format!("logging in as etcd user {:?}", auth.name))?;
        for conn in all {
            conn.set_token(token.clone());
        }
        Ok(())
    }

    async fn seed(conn: &EtcdConn, keys: &[String], value: &str) -> anyhow::Result<()> {
        for key in keys {
            let req = PutRequest { key: etcd_key(key), value: value.as_bytes().to_vec() };
            unary::<_, PutResponse>(conn, PUT, req).await.with_context(|| format!("seeding {key}"))?;
        }
        Ok(())
    }

    async fn write(conn: &EtcdConn, key: &str, value: String, _request_id: String) -> anyhow::Result<u64> {
        let req = PutRequest { key: etcd_key(key), value: value.into_bytes() };
        let reply: PutResponse = unary(conn, PUT, req).await?;
        Ok(reply.header.map(|h| h.revision.max(0) as u64).unwrap_or(0))
    }

    async fn read(conn: &EtcdConn, key: &str, level: Level) -> anyhow::Result<()> {
        let req =
            RangeRequest { key: etcd_key(key), range_end: Vec::new(), serializable: level != Level::Linearizable };
        let _: RangeResponse = unary(conn, RANGE, req).await?;
        Ok(())
    }

    async fn watch(
        conn: &EtcdConn,
        ready: oneshot::Sender<()>,
        tx: mpsc::UnboundedSender<Receipt>,
    ) -> anyhow::Result<()> {
        let create = WatchRequest {
            create_request: Some(WatchCreateRequest {
                key: format!("{NAMESPACE}/").into_bytes(),
                range_end: prefix_end(),
                start_revision: 0,
            }),
        };
        let mut ready = Some(ready);
        // A second attempt only after a login, when the member refused the token.
        let mut logged_in_again = false;
        'attempt: loop {
            let token = conn.token();
            // The request stream must stay open: etcd ends the watch when the client half-closes.
            let requests = tokio_stream::once(create.clone()).chain(tokio_stream::pending());
            let mut grpc = Grpc::new(conn.channel.clone());
            grpc.ready().await.map_err(|e| anyhow::anyhow!("the channel is not ready: {e}"))?;
            let codec = tonic_prost::ProstCodec::<WatchRequest, WatchResponse>::default();
            let opened =
                grpc.streaming(conn.request(requests, token.as_ref()), PathAndQuery::from_static(WATCH), codec).await;
            let mut stream = match opened {
                Err(status) if token.is_some() && !logged_in_again && token_refused(&status) => {
                    conn.relogin(token.as_ref()).await?;
                    logged_in_again = true;
                    continue 'attempt;
                }
                opened => opened?.into_inner(),
            };
            while let Some(msg) = stream.next().await {
                let now = Instant::now();
                let msg = msg?;
                if msg.canceled {
                    // etcd refuses a watch it may not authorise (a token the member does not
                    // know included) by cancelling it at creation.
                    if msg.created && token.is_some() && !logged_in_again {
                        conn.relogin(token.as_ref()).await?;
                        logged_in_again = true;
                        continue 'attempt;
                    }
                    anyhow::bail!("etcd cancelled the watch: {}", msg.cancel_reason);
                }
                if msg.created
                    && let Some(r) = ready.take()
                {
                    let _ = r.send(());
                }
                if let Some(rev) = msg.events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| kv.mod_revision).max()
                    && tx.send((rev.max(0) as u64, now)).is_err()
                {
                    break;
                }
            }
            return Ok(());
        }
    }

    async fn status(conn: &EtcdConn) -> anyhow::Result<NodeStatus> {
        let s: StatusResponse = unary(conn, STATUS, StatusRequest {}).await?;
        let self_id = s.header.map(|h| h.member_id).unwrap_or(0);
        Ok(NodeStatus { self_id, leader_id: s.leader })
    }
}
