//! flagd's sync protocol, `flagd.sync.v1.FlagSyncService`, for in-process providers: they
//! receive the whole flag set as a flagd document and evaluate it themselves.
//!
//! - `SyncFlags`: the selected namespace's document on connect, and again after every committed
//!   change to it (a flag, or its `$evaluators` or metadata).
//! - `FetchAllFlags`: the document once.
//! - `GetMetadata` (deprecated, still called by providers on every connect): `metadata` always
//!   set (empty), because Python's provider never becomes ready when it is unset.
//!
//! The document is strict flagd JSON (`NamespaceDocument::to_flagd_value`): each flag holds only
//! `state`, `variants`, `defaultVariant`, `targeting` and `metadata` (Vexil's governance fields
//! would make providers reject the whole document). The selector comes from the
//! `Flagd-Selector` header, else the request's (deprecated) `selector` field.

use std::pin::Pin;

use prost_types::Struct;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vexil_proto::flagd::sync::v1 as pb;

use super::OpenFeature;
use super::flagd::{NamespaceChanges, selector};
use crate::api::watch::{Currency, WatchSlot};
use crate::auth::{Principal, caller, still_valid};
use crate::error::ServerError;
use crate::limits::FLAGD_EVENTS_BUFFER;

impl OpenFeature {
    /// The namespace's applied state as a flagd document, after a lease read barrier.
    async fn flagd_document(&self, who: &Principal, namespace: &str) -> Result<String, ServerError> {
        self.readable(who, namespace).await?;
        let (_, doc) = crate::api::current_document(&self.node, namespace)?;
        Ok(doc.to_flagd_value().to_string())
    }

    /// Sends the document now and after every change of `namespace`, until the client goes
    /// or the node leaves.
    async fn sync(
        &self,
        who: &Principal,
        namespace: &str,
        tx: &mpsc::Sender<Result<pb::SyncFlagsResponse, Status>>,
    ) -> Result<(), Status> {
        let mut applied = self.node.reader.applied_revision();
        let mut cursor = *applied.borrow_and_update();
        let mut currency = Currency::new(&self.node);
        let namespaces = [namespace.to_string()];
        loop {
            let message = pb::SyncFlagsResponse {
                flag_configuration: self.flagd_document(who, namespace).await?,
                sync_context: None,
            };
            if tx.send(Ok(message)).await.is_err() {
                return Ok(());
            }
            loop {
                // A node cut off ends the stream: the provider keeps evaluating its last
                // document and reconnects to a node that is current.
                if !self.wake(tx, &mut applied, &mut currency).await? {
                    return Ok(());
                }
                still_valid(&self.node, who, &namespaces)?;
                // A retention cut it missed: the whole document goes again anyway.
                match self.changed_flags(namespace, &mut cursor)? {
                    NamespaceChanges::Changed { touched: false, .. } => {}
                    NamespaceChanges::Changed { touched: true, .. } | NamespaceChanges::Compacted { .. } => break,
                }
            }
        }
    }
}

/// The namespace a sync request selects: the header first, then the deprecated field.
fn sync_namespace<T>(of: &OpenFeature, req: &Request<T>, field: &str) -> Result<String, ServerError> {
    let header = selector(req);
    of.namespace(header.as_deref().filter(|s| !s.trim().is_empty()).or(Some(field)))
}

/// `flagd.sync.v1.FlagSyncService`.
pub struct Sync(pub OpenFeature);

type SyncStream = Pin<Box<dyn Stream<Item = Result<pb::SyncFlagsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::flag_sync_service_server::FlagSyncService for Sync {
    type SyncFlagsStream = SyncStream;

    async fn sync_flags(&self, req: Request<pb::SyncFlagsRequest>) -> Result<Response<SyncStream>, Status> {
        let who = caller(&self.0.node, &req).await?;
        #[allow(deprecated)]
        let namespace = sync_namespace(&self.0, &req, &req.get_ref().selector)?;
        // Refused now rather than on the stream: a provider reports the status it gets.
        self.0.readable(&who, &namespace).await?;
        let slot = WatchSlot::take(&self.0.slots, &self.0.node)?;
        let (tx, rx) = mpsc::channel(FLAGD_EVENTS_BUFFER);
        let of = self.0.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(status) = of.sync(&who, &namespace, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch_all_flags(
        &self,
        req: Request<pb::FetchAllFlagsRequest>,
    ) -> Result<Response<pb::FetchAllFlagsResponse>, Status> {
        let who = caller(&self.0.node, &req).await?;
        #[allow(deprecated)]
        let namespace = sync_namespace(&self.0, &req, &req.get_ref().selector)?;
        let flag_configuration = self.0.flagd_document(&who, &namespace).await?;
        Ok(Response::new(pb::FetchAllFlagsResponse { flag_configuration }))
    }

    async fn get_metadata(
        &self,
        req: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        caller(&self.0.node, &req).await?;
        Ok(Response::new(pb::GetMetadataResponse { metadata: Some(Struct::default()) }))
    }
}
