//! Pure IP address management: pools, address ranges, sharing and the
//! allocator that hands Services their load-balancer IPs.
//!
//! Input is the set of `IPAddressPool`s (as [`PoolSpec`]), the existing
//! assignments (for [`Allocator::rebuild`]) and one [`ServiceRequest`] at a
//! time; output is an [`Assignment`] or an [`AllocError`] a user can act on.
//! This module must never call kube, tokio or do any I/O: the controller
//! converts API objects into these types and carries the answers back out.
//!
//! Layout: `addr` owns address parsing and the free-interval set, `pool`
//! turns specs into validated, overlap-free pools, `error` the typed errors,
//! `allocator` the state machine.

mod addr;
mod allocator;
mod error;
mod lookup;
mod pool;

#[cfg(test)]
mod metallb_cases;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;

use crate::labels::{Labels, Selector};

pub use allocator::Allocator;
pub use error::AllocError;

/// An IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The other family (dual-stack partner).
    pub fn other(self) -> Self {
        match self {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// A Service port protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// Identifies a Service: namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
}

impl ServiceKey {
    /// The key of Service `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The Service's `spec.ipFamilyPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FamilyPolicy {
    /// One IP, of the primary family.
    #[default]
    SingleStack,
    /// Both families when one pool can give both, else the primary only.
    PreferDualStack,
    /// Both families or an error.
    RequireDualStack,
}

/// A pool's `serviceAllocation`: which Services it is dedicated to, and its
/// priority among such pools.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllocationScope {
    /// Lower is tried first; `None` and `Some(0)` (MetalLB's "unset") sort
    /// after every pool with a positive priority.
    pub priority: Option<i32>,
    /// Namespaces admitted by name. A namespace is admitted when it is
    /// listed here *or* matches a `namespace_selectors` entry (MetalLB's
    /// rule); with both lists empty every namespace is.
    pub namespaces: Vec<String>,
    /// Selectors over the Service's namespace labels; see `namespaces`.
    pub namespace_selectors: Vec<Selector>,
    /// Selectors over the Service's labels; any may match (empty: any).
    pub service_selectors: Vec<Selector>,
}

impl AllocationScope {
    /// The priority pools are ordered by: MetalLB reads 0 as "not set".
    pub fn effective_priority(&self) -> Option<i32> {
        self.priority.filter(|p| *p > 0)
    }

    /// Whether the scope admits the Service's namespace: listed by name or
    /// matched by a namespace selector (either admits, as in MetalLB).
    pub fn admits_namespace(&self, req: &ServiceRequest) -> bool {
        (self.namespaces.is_empty() && self.namespace_selectors.is_empty())
            || self.namespaces.contains(&req.key.namespace)
            || self
                .namespace_selectors
                .iter()
                .any(|s| s.matches(&req.namespace_labels))
    }

    /// Whether the scope admits `req`: its namespace is admitted (see
    /// [`AllocationScope::admits_namespace`]) and, when service selectors
    /// are set, one of them matches the Service's labels.
    pub fn admits(&self, req: &ServiceRequest) -> bool {
        self.admits_namespace(req)
            && (self.service_selectors.is_empty()
                || self
                    .service_selectors
                    .iter()
                    .any(|s| s.matches(&req.labels)))
    }

    /// Whether the scope restricts nothing and sets no priority, so the pool
    /// behaves as if it had no `serviceAllocation` at all.
    pub fn is_unrestricted(&self) -> bool {
        self.priority.is_none()
            && self.namespaces.is_empty()
            && self.namespace_selectors.is_empty()
            && self.service_selectors.is_empty()
    }
}

/// One `IPAddressPool`, as the allocator needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    /// The pool's name (unique in the install namespace).
    pub name: String,
    /// `metadata.creationTimestamp` in unix seconds; orders overlapping pools
    /// (earlier wins, ties by name).
    pub created: i64,
    /// `spec.addresses`: CIDRs, `a-b` ranges or single IPs.
    pub addresses: Vec<String>,
    /// `spec.autoAssign`: whether the pool is used without an explicit request.
    pub auto_assign: bool,
    /// `spec.avoidBuggyIPs`: skip IPv4 addresses ending in .0 and .255.
    pub avoid_buggy_ips: bool,
    /// `spec.serviceAllocation`.
    pub allocation: Option<AllocationScope>,
}

impl PoolSpec {
    /// A pool with the CRD's defaults: created at 0, autoAssign on,
    /// avoidBuggyIPs off, no serviceAllocation.
    pub fn new<S: Into<String>>(
        name: impl Into<String>,
        addresses: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            name: name.into(),
            created: 0,
            addresses: addresses.into_iter().map(Into::into).collect(),
            auto_assign: true,
            avoid_buggy_ips: false,
            allocation: None,
        }
    }
}

/// What one Service asks of IPAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRequest {
    /// The Service.
    pub key: ServiceKey,
    /// `metadata.creationTimestamp` in unix seconds; the older Service wins a
    /// rebuild conflict (ties by key).
    pub created: i64,
    /// The Service's labels (for `serviceSelectors`).
    pub labels: Labels,
    /// The labels of the Service's namespace (for `namespaceSelectors`).
    pub namespace_labels: Labels,
    /// The requested pool (annotation), if any.
    pub pool: Option<String>,
    /// Requested IPs (annotation or `spec.loadBalancerIP`), at most one per family.
    pub ips: Vec<IpAddr>,
    /// `spec.ipFamilies`, primary first; empty means `[V4]`.
    pub families: Vec<Family>,
    /// `spec.ipFamilyPolicy`.
    pub family_policy: FamilyPolicy,
    /// The `allow-shared-ip` key, if any.
    pub sharing_key: Option<String>,
    /// The Service's ports.
    pub ports: Vec<(Protocol, u16)>,
    /// `Some(pod selector)` when `externalTrafficPolicy: Local`.
    pub local_selector: Option<Labels>,
    /// The annotation prefix the Service uses; hints in errors name
    /// annotations with it.
    pub hint_prefix: HintPrefix,
}

impl ServiceRequest {
    /// A plain request: created at 0, no labels, IPv4 SingleStack, no pool or
    /// IP requested, not shared, no ports, `externalTrafficPolicy: Cluster`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            key: ServiceKey::new(namespace, name),
            created: 0,
            labels: Labels::new(),
            namespace_labels: Labels::new(),
            pool: None,
            ips: Vec::new(),
            families: Vec::new(),
            family_policy: FamilyPolicy::SingleStack,
            sharing_key: None,
            ports: Vec::new(),
            local_selector: None,
            hint_prefix: HintPrefix::L2lb,
        }
    }

    /// The families this request wants, primary first: SingleStack gives the
    /// primary only; PreferDualStack the listed families (the API server lists
    /// both only on dual-stack clusters); RequireDualStack always both.
    pub fn wanted_families(&self) -> Vec<Family> {
        let primary = self.families.first().copied().unwrap_or(Family::V4);
        match self.family_policy {
            FamilyPolicy::SingleStack => vec![primary],
            FamilyPolicy::PreferDualStack => {
                match self.families.iter().copied().find(|f| *f != primary) {
                    Some(second) => vec![primary, second],
                    None => vec![primary],
                }
            }
            FamilyPolicy::RequireDualStack => vec![primary, primary.other()],
        }
    }
}

/// The annotation prefix a Service spells its settings with, so that hints
/// in errors name annotations the user recognises. One byte, to keep
/// [`AllocError`] small.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HintPrefix {
    /// `l2lb.io/` (also when the Service uses no annotation).
    #[default]
    L2lb,
    /// `metallb.io/`.
    Metallb,
    /// `metallb.universe.tf/` (MetalLB's deprecated spelling).
    MetallbUniverse,
}

impl HintPrefix {
    /// The prefix `s`, ours for anything else.
    pub fn from_prefix(s: &str) -> Self {
        match s {
            "metallb.io/" => Self::Metallb,
            "metallb.universe.tf/" => Self::MetallbUniverse,
            _ => Self::L2lb,
        }
    }
}

impl fmt::Display for HintPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::L2lb => "l2lb.io/",
            Self::Metallb => "metallb.io/",
            Self::MetallbUniverse => "metallb.universe.tf/",
        })
    }
}

/// The IPs a Service holds and the pool they came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The pool of the (first) IP.
    pub pool: String,
    /// The IPs, in the order of the Service's families.
    pub ips: Vec<IpAddr>,
}

/// A problem with one pool, for its status conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolIssue {
    /// The pool with the problem.
    pub pool: String,
    /// What the problem is.
    pub kind: PoolIssueKind,
}

/// The kinds of pool problems.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolIssueKind {
    /// Some addresses are also in `other`, an earlier pool (by creation time,
    /// then name); those addresses are handed out only by `other`.
    Overlapping {
        /// The earlier pool that owns the shared addresses.
        other: String,
    },
    /// The pool cannot be used at all.
    Invalid {
        /// Why, naming the offending entry.
        reason: String,
    },
}

impl fmt::Display for PoolIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            PoolIssueKind::Overlapping { other } => write!(
                f,
                "pool {:?} overlaps earlier pool {other:?}; the shared addresses are handed out only by {other:?}",
                self.pool
            ),
            PoolIssueKind::Invalid { reason } => {
                write!(f, "pool {:?} is invalid and unused: {reason}", self.pool)
            }
        }
    }
}

/// Address counts of one valid pool (addresses it can hand out, after
/// overlaps and avoidBuggyIPs; counts saturate at `u128::MAX`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// The pool.
    pub name: String,
    /// IPv4 addresses the pool can hand out.
    pub v4_total: u128,
    /// IPv4 addresses held by at least one Service.
    pub v4_in_use: u128,
    /// IPv6 addresses the pool can hand out.
    pub v6_total: u128,
    /// IPv6 addresses held by at least one Service.
    pub v6_in_use: u128,
}

/// The outcome of [`Allocator::set_pools`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolChange {
    /// Problems of the new pool set (same as [`Allocator::pool_issues`]).
    pub issues: Vec<PoolIssue>,
    /// Services released because an IP of theirs left every valid pool, sorted.
    pub orphaned: Vec<ServiceKey>,
}

/// A claim [`Allocator::rebuild`] could not keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildConflict {
    /// The Service whose claim was refused.
    pub key: ServiceKey,
    /// The IPs it claimed.
    pub ips: Vec<IpAddr>,
    /// Why: outside every pool, or held by an older Service it may not share with.
    pub error: AllocError,
}
