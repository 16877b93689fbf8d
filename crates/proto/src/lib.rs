//! Generated protobuf and gRPC code for Vexil, produced once here from `proto/`.
//!
//! - [`vexil::v1`]: the public API (flags, audit, cluster).
//! - [`vexil::raft::v1`]: the internal Raft transport between nodes.
//! - [`flagd`]: OpenFeature's flagd protocols (evaluation v1 and v2, sync v1), compiled from the
//!   verbatim `.proto` files of open-feature/flagd-schemas, and [`flagd_struct`]: JSON to and
//!   from their `google.protobuf.Struct`.
//! - [`ErrorReason`]: the stable error reasons; conversions of audit entries to and from the model.
//! - `FlagEvaluation::from_resolution`: the one conversion of an evaluation result to the wire.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod vexil {
    pub mod v1 {
        tonic::include_proto!("vexil.v1");
    }
    pub mod raft {
        pub mod v1 {
            tonic::include_proto!("vexil.raft.v1");
        }
    }
}

pub mod flagd {
    pub mod evaluation {
        pub mod v1 {
            tonic::include_proto!("flagd.evaluation.v1");
        }
        pub mod v2 {
            tonic::include_proto!("flagd.evaluation.v2");
        }
    }
    pub mod sync {
        pub mod v1 {
            tonic::include_proto!("flagd.sync.v1");
        }
    }
}

pub use vexil::v1;

pub mod flagd_struct;

mod contract;
mod evaluation;
pub use contract::{ERROR_DOMAIN, ErrorReason};
