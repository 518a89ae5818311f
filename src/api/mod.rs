//! The Kubernetes-facing vocabulary of l2lb: CRD types, fixed names,
//! annotation parsing, and conversion of k8s label selectors into
//! [`crate::labels::Selector`].
//!
//! Everything a user writes into the cluster is read through this module, so
//! MetalLB's spellings and ours are accepted in exactly one place. It must
//! never talk to the API server: it only describes and parses.

pub mod annotations;
pub mod crds;
pub mod events;
pub mod rbac;
mod types;

pub use types::*;

use crate::labels::{Selector, SelectorError};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// API group of l2lb's custom resources.
pub const GROUP: &str = "l2lb.io";
/// API version of l2lb's custom resources.
pub const VERSION: &str = "v1beta1";
/// Namespace l2lb is installed into; pools, advertisements and leases live here.
pub const INSTALL_NAMESPACE: &str = "l2lb-system";
/// `spec.loadBalancerClass` that selects l2lb explicitly.
pub const LOAD_BALANCER_CLASS: &str = "l2lb.io/l2";
/// Node label that excludes a node from announcing any VIP (upstream well-known label).
pub const EXCLUDE_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// Label on `ServiceL2Status` objects naming the announcing node.
pub const STATUS_NODE_LABEL: &str = "l2lb.io/node";
/// Label on `ServiceL2Status` objects naming the Service.
pub const STATUS_SERVICE_NAME_LABEL: &str = "l2lb.io/service-name";
/// Label on `ServiceL2Status` objects naming the Service's namespace.
pub const STATUS_SERVICE_NAMESPACE_LABEL: &str = "l2lb.io/service-namespace";
/// Prefix of each speaker's membership Lease name; the node name follows.
pub const SPEAKER_LEASE_PREFIX: &str = "l2lb-speaker-";
/// Name of the controller's leader-election Lease.
pub const CONTROLLER_LEASE: &str = "l2lb-controller";

/// Converts a k8s `LabelSelector` into our pure selector, rejecting unknown
/// operators the way the API server would.
pub fn selector(ls: &LabelSelector) -> Result<Selector, SelectorError> {
    let match_labels = ls.match_labels.clone().unwrap_or_default();
    let exprs = ls.match_expressions.as_deref().unwrap_or_default();
    Selector::from_parts(
        &match_labels,
        exprs.iter().map(|e| {
            (
                e.key.as_str(),
                e.operator.as_str(),
                e.values.as_deref().unwrap_or_default(),
            )
        }),
    )
}

/// Converts a list of selectors where an empty list means "no restriction".
/// Kubernetes semantics: the object matches when any selector matches.
pub fn selectors(list: &[LabelSelector]) -> Result<Vec<Selector>, SelectorError> {
    list.iter().map(selector).collect()
}
