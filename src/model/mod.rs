//! The shared model of Kubernetes objects: what the controller, the speaker
//! and `l2lb status` all need to know about a Service, a pool or an
//! advertisement, decided in exactly one place.
//!
//! Owns: which Services are l2lb's ([`ClassFilter`]), the Service →
//! [`crate::ipam::ServiceRequest`] and pool → [`crate::ipam::PoolSpec`]
//! translations (with the one rule for malformed pools), the published
//! ingress addresses, the VIP → pool lookup ([`PoolIndex`]) and compiled
//! L2Advertisements ([`CompiledAd`]).
//!
//! Must never import a component (`controller`, `speaker`, `lab`) and never
//! do I/O: both components evaluate these functions on their own watch
//! caches, and they agree only because the code is the same.

pub mod advertisement;
pub mod pool;
pub mod service;

pub use advertisement::{CompiledAd, advertisements_of};
pub use pool::{PoolIndex, PoolSpecs, pool_spec};
pub use service::{
    ClassFilter, ConvertError, ingress_ips, load_balancer_status, service_key, service_request,
    status_matches,
};

/// A Service's identity (one type for every component; it lives in `ipam`
/// because allocation, the pure core, keys its state by it).
pub use crate::ipam::ServiceKey;
