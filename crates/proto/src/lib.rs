//! Generated protobuf and gRPC code for Vexil, produced once here from `proto/`.
//!
//! - [`vexil::v1`]: the public API (flags, audit, cluster).
//! - [`vexil::raft::v1`]: the internal Raft transport between nodes.
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

pub use vexil::v1;

mod contract;
mod evaluation;
pub use contract::{ERROR_DOMAIN, ErrorReason};
