//! l2lb: a layer-2 load balancer for bare-metal Kubernetes.
//!
//! The crate is one library behind one binary. Decisions are pure functions
//! (`ipam`, `election`, `labels`, the packet codecs in `l2`); everything that
//! talks to the API server or a socket sits at the edge (`controller`,
//! `speaker`, the responder tasks in `l2`, `lab`).
#![deny(unsafe_code)]

pub mod api;
pub mod bench;
pub mod cluster;
pub mod controller;
pub mod election;
pub mod fastpath;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod flags;
pub mod ipam;
pub mod l2;
pub mod lab;
pub mod labels;
pub mod model;
pub mod speaker;
pub mod status;
pub mod telemetry;
