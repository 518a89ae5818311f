//! Why an allocation (or a rebuild claim) failed. Every message names the
//! Service, and where relevant the pools, IPs, conflicting Service and port,
//! so it can go straight into an Event; [`AllocError::reason`] gives the
//! bounded CamelCase reason for the Event reason and metric label.

use std::net::IpAddr;

use super::{Family, HintPrefix, Protocol, ServiceKey};

fn list<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn owner_note(owner: &Option<String>) -> String {
    match owner {
        Some(o) => format!(" (it belongs to pool {o:?})"),
        None => " (it is outside every pool)".to_string(),
    }
}

/// An allocation failure. The Service's previous assignment, if any, is
/// left untouched when this is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// Every candidate pool is out of addresses of the family.
    #[error(
        "no free {family} address for {service} in pool(s) {pools}; add addresses to a pool or delete unused Services",
        pools = list(.pools)
    )]
    PoolExhausted {
        /// The Service.
        service: ServiceKey,
        /// The family that ran out.
        family: Family,
        /// The pools tried, in order.
        pools: Vec<String>,
    },
    /// No pool is eligible without an explicit request.
    #[error(
        "no IPAddressPool admits {service}: no autoAssign pool without serviceAllocation exists and no serviceAllocation matches its namespace or labels; name a pool with the {prefix}address-pool annotation or widen a pool's serviceAllocation"
    )]
    NoPoolAdmits {
        /// The Service.
        service: ServiceKey,
        /// The annotation prefix the Service uses, for the hint.
        prefix: HintPrefix,
    },
    /// The requested pool does not exist.
    #[error("{service} requests pool {pool:?}, which does not exist (known pools: {known})", known = list(.known))]
    UnknownPool {
        /// The Service.
        service: ServiceKey,
        /// The requested pool.
        pool: String,
        /// Valid pools, sorted.
        known: Vec<String>,
    },
    /// The requested pool exists but is invalid and unused.
    #[error("{service} requests pool {pool:?}, which is invalid and unused: {reason}")]
    PoolInvalid {
        /// The Service.
        service: ServiceKey,
        /// The requested pool.
        pool: String,
        /// Why the pool is invalid.
        reason: String,
    },
    /// The pool's serviceAllocation does not admit the Service.
    #[error(
        "{service} asks for pool {pool:?}, but the pool's serviceAllocation does not admit it (namespace or labels do not match)"
    )]
    PoolDisallowsService {
        /// The Service.
        service: ServiceKey,
        /// The pool.
        pool: String,
    },
    /// A requested IP is in no pool.
    #[error(
        "{service} requests {ip}, which is outside every IPAddressPool; pick an address inside a pool"
    )]
    IpOutsidePools {
        /// The Service.
        service: ServiceKey,
        /// The requested IP.
        ip: IpAddr,
    },
    /// A requested IP is not in the requested pool.
    #[error("{service} requests {ip} from pool {pool:?}, but the address is not in that pool{note}", note = owner_note(.owner))]
    IpOutsideRequestedPool {
        /// The Service.
        service: ServiceKey,
        /// The requested IP.
        ip: IpAddr,
        /// The requested pool.
        pool: String,
        /// The pool that does hand out the IP, if any.
        owner: Option<String>,
    },
    /// A requested IP is a .0/.255 address of a pool with avoidBuggyIPs.
    #[error(
        "{service} requests {ip}, but pool {pool:?} sets avoidBuggyIPs and never hands out .0 or .255 addresses"
    )]
    IpAvoided {
        /// The Service.
        service: ServiceKey,
        /// The requested IP.
        ip: IpAddr,
        /// The pool.
        pool: String,
    },
    /// The requested IPs of a dual-stack Service lie in two pools.
    #[error(
        "{service} requests {ips}, which lie in different pools ({pools}); both addresses of a dual-stack Service must come from one pool",
        ips = list(.ips), pools = list(.pools)
    )]
    IpsInDifferentPools {
        /// The Service.
        service: ServiceKey,
        /// The requested IPs.
        ips: Vec<IpAddr>,
        /// Their pools, in the same order.
        pools: Vec<String>,
    },
    /// The IP is held by a Service it may not share with: one of them has no sharing key.
    #[error(
        "{ip} for {service} is in use by {holder}; to share it, give both Services the same {prefix}allow-shared-ip key"
    )]
    IpInUse {
        /// The Service.
        service: ServiceKey,
        /// The contested IP.
        ip: IpAddr,
        /// A Service holding it.
        holder: ServiceKey,
        /// The annotation prefix the Service uses, for the hint.
        prefix: HintPrefix,
    },
    /// The IP is shared under a different key.
    #[error(
        "{ip} for {service} is shared by {holder} under key {:?}, but {service} has key {:?}",
        .keys.1,
        .keys.0
    )]
    SharingKeyMismatch {
        /// The Service.
        service: ServiceKey,
        /// The contested IP.
        ip: IpAddr,
        /// A Service holding it.
        holder: ServiceKey,
        /// (the Service's key, the holder's key); boxed to keep the error small.
        keys: Box<(String, String)>,
    },
    /// Sharing would put two Services on one port.
    #[error("{service} cannot share {ip} with {holder}: both use port {protocol}/{port}")]
    PortConflict {
        /// The Service.
        service: ServiceKey,
        /// The contested IP.
        ip: IpAddr,
        /// A Service holding it.
        holder: ServiceKey,
        /// The overlapping port's protocol.
        protocol: Protocol,
        /// The overlapping port.
        port: u16,
    },
    /// Sharing with externalTrafficPolicy: Local needs equal pod selectors.
    #[error(
        "{service} cannot share {ip} with {holder}: with externalTrafficPolicy: Local both must be Local with the same pod selector (or both Cluster)"
    )]
    TrafficPolicyConflict {
        /// The Service.
        service: ServiceKey,
        /// The contested IP.
        ip: IpAddr,
        /// A Service holding it.
        holder: ServiceKey,
    },
    /// RequireDualStack, but no eligible pool can give the second family.
    #[error(
        "{service} requires dual-stack, but no eligible pool ({pools}) has a free {family} address together with its other family; add {family} addresses to a pool",
        pools = list(.pools)
    )]
    RequiredFamilyUnavailable {
        /// The Service.
        service: ServiceKey,
        /// The missing family.
        family: Family,
        /// The pools tried.
        pools: Vec<String>,
    },
    /// The requested IPs do not fit the Service's families or policy.
    #[error("{service}: {detail}")]
    FamilyMismatch {
        /// The Service.
        service: ServiceKey,
        /// What does not fit, naming the IPs and families.
        detail: String,
    },
}

impl AllocError {
    /// A short CamelCase reason from a fixed set, for Event reasons and
    /// metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            AllocError::PoolExhausted { .. } => "PoolExhausted",
            AllocError::NoPoolAdmits { .. } => "NoPoolAdmitsService",
            AllocError::UnknownPool { .. } => "UnknownPool",
            AllocError::PoolInvalid { .. } => "PoolInvalid",
            AllocError::PoolDisallowsService { .. } => "PoolDisallowsService",
            AllocError::IpOutsidePools { .. } => "IPOutsidePools",
            AllocError::IpOutsideRequestedPool { .. } => "IPOutsideRequestedPool",
            AllocError::IpAvoided { .. } => "IPAvoidedByPool",
            AllocError::IpsInDifferentPools { .. } => "IPsInDifferentPools",
            AllocError::IpInUse { .. } => "IPInUse",
            AllocError::SharingKeyMismatch { .. } => "SharingKeyMismatch",
            AllocError::PortConflict { .. } => "SharingPortConflict",
            AllocError::TrafficPolicyConflict { .. } => "SharingTrafficPolicyConflict",
            AllocError::RequiredFamilyUnavailable { .. } => "RequiredFamilyUnavailable",
            AllocError::FamilyMismatch { .. } => "IPFamilyMismatch",
        }
    }

    /// The Service the error is about.
    pub fn service(&self) -> &ServiceKey {
        match self {
            AllocError::PoolExhausted { service, .. }
            | AllocError::NoPoolAdmits { service, .. }
            | AllocError::UnknownPool { service, .. }
            | AllocError::PoolInvalid { service, .. }
            | AllocError::PoolDisallowsService { service, .. }
            | AllocError::IpOutsidePools { service, .. }
            | AllocError::IpOutsideRequestedPool { service, .. }
            | AllocError::IpAvoided { service, .. }
            | AllocError::IpsInDifferentPools { service, .. }
            | AllocError::IpInUse { service, .. }
            | AllocError::SharingKeyMismatch { service, .. }
            | AllocError::PortConflict { service, .. }
            | AllocError::TrafficPolicyConflict { service, .. }
            | AllocError::RequiredFamilyUnavailable { service, .. }
            | AllocError::FamilyMismatch { service, .. } => service,
        }
    }
}
