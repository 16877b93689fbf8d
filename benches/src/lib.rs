//! Shared helpers for Vexil benchmarks, and the cluster load generator ([`loadgen`]).

pub mod loadgen;
