//! The controller's decisions, free of I/O: given Services, pools and
//! namespaces as the watch caches hold them, say which status writes and
//! Events should happen.
//!
//! `Core` owns the [`Allocator`] and nothing else that is stateful except the
//! memory needed to emit one Event per change (not per resync) and the
//! Services waiting for an address. Tests feed it objects and assert the
//! exact actions; the lead loop (`lead.rs`) and the status writer
//! (`writer.rs`) only carry actions out. Pool status is derived elsewhere
//! (`pool_status.rs`) from the allocator this core keeps.

use crate::api::IPAddressPool;
use crate::api::annotations::{self, AnnotationError};
use crate::api::events::Reason;
use crate::ipam::{
    AllocError, Allocator, Assignment, Family, PoolSpec, ServiceKey, ServiceRequest,
};
use crate::labels::Labels;
use crate::model::{self as convert, ClassFilter, ConvertError, PoolSpecs};
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// Something the runtime must do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Publish `ips` in `status.loadBalancer` (empty clears it), as a
    /// replace conditional on the object's resourceVersion: a stale leader's
    /// write fails with 409 instead of clobbering.
    WriteStatus {
        /// The object as seen; its resourceVersion is the precondition.
        service: Arc<Service>,
        /// The addresses to publish.
        ips: Vec<IpAddr>,
    },
    /// Record an Event on a Service.
    Event {
        /// The Service the event is about.
        service: Arc<Service>,
        /// Why (Warning or Normal follows from it).
        reason: Reason,
        /// Human-readable detail.
        note: String,
    },
}

/// Why a Service holds no (new) address. Its text is the note of the
/// `AllocationFailed` Event; an unchanged failure is reported only once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationFailure {
    /// The Service's annotations cannot be honoured.
    #[error("bad annotation: {0}")]
    BadAnnotation(AnnotationError),
    /// The Service cannot be turned into an IPAM request for another reason.
    #[error(transparent)]
    Request(ConvertError),
    /// IPAM has no address for the request (boxed: it is large, and
    /// failures are rare next to successes).
    #[error(transparent)]
    Ipam(Box<AllocError>),
}

impl From<AllocError> for AllocationFailure {
    fn from(e: AllocError) -> Self {
        Self::Ipam(Box::new(e))
    }
}

impl From<ConvertError> for AllocationFailure {
    fn from(e: ConvertError) -> Self {
        match e {
            ConvertError::Annotation(a) => Self::BadAnnotation(a),
            other => Self::Request(other),
        }
    }
}

/// The allocation state machine of the leading controller.
#[derive(Debug)]
pub struct Core {
    /// Address state; rebuilt from Services' status when leadership starts.
    alloc: Allocator,
    /// Which Services are ours (`--require-class`).
    class: ClassFilter,
    /// Last failure per Service, so a failure is reported once per change
    /// and not on every resync.
    failures: HashMap<ServiceKey, AllocationFailure>,
    /// Services that wanted an address and did not get one; retried when
    /// addresses are freed or pools change.
    pending: BTreeSet<ServiceKey>,
    /// Pools whose `serviceAllocation` could not be parsed, with the reason.
    /// They keep serving existing and explicitly requested addresses.
    malformed_pools: BTreeMap<String, ConvertError>,
    /// Whether any pool object has been seen during this term. Until one
    /// is (a fresh install whose pools are not applied yet, or a start with
    /// an empty pool list) published addresses are left alone rather than
    /// wiped (MetalLB #2887). Once pools have been seen, deleting them is a
    /// real change: addresses they held are cleared like any other.
    pools_seen: bool,
    /// Services already told that they use deprecated annotations (once
    /// per Service and term, not on every resync).
    warned_deprecated: BTreeSet<ServiceKey>,
}

/// Looks up a namespace's labels.
pub type NamespaceLabels<'a> = &'a dyn Fn(&str) -> Labels;

impl Core {
    /// A core with no pools and no assignments.
    pub fn new(class: ClassFilter) -> Self {
        Self {
            alloc: Allocator::new(),
            class,
            failures: HashMap::new(),
            pending: BTreeSet::new(),
            malformed_pools: BTreeMap::new(),
            pools_seen: false,
            warned_deprecated: BTreeSet::new(),
        }
    }

    /// The allocator, for metrics, pool status and tests.
    pub fn allocator(&self) -> &Allocator {
        &self.alloc
    }

    /// Pools whose `serviceAllocation` could not be parsed, with the reason
    /// (for their `Invalid` condition).
    pub fn malformed_pools(&self) -> &BTreeMap<String, ConvertError> {
        &self.malformed_pools
    }

    fn pool_specs(&mut self, pools: &[Arc<IPAddressPool>]) -> Vec<PoolSpec> {
        self.pools_seen |= !pools.is_empty();
        let converted = PoolSpecs::from_pools(pools.iter().map(|p| &**p));
        // A malformed pool is kept so its Services keep their addresses;
        // only automatic assignment stops until it is fixed.
        for (pool, e) in &converted.errors {
            tracing::warn!(%pool, error = %e, "pool has a malformed serviceAllocation");
        }
        self.malformed_pools = converted.errors;
        converted.specs
    }

    /// Starts leadership: loads pools, claims every address already published
    /// in our Services' status (a restart never moves an IP), then allocates
    /// for Services still without one.
    pub fn start(
        &mut self,
        services: &[Arc<Service>],
        pools: &[Arc<IPAddressPool>],
        ns_labels: NamespaceLabels<'_>,
    ) -> Vec<Action> {
        *self = Self::new(self.class);
        let specs = self.pool_specs(pools);
        let _ = self.alloc.set_pools(specs);
        let mut ours: Vec<&Arc<Service>> =
            services.iter().filter(|s| self.class.is_ours(s)).collect();
        ours.sort_by_key(|s| age_order(s));
        let mut claims = Vec::new();
        let mut malformed = HashMap::new();
        for svc in &ours {
            let Some((req, ips)) = published_claim(svc, ns_labels) else {
                continue;
            };
            match too_many_per_family(&ips) {
                Some(problem) if self.pools_seen => {
                    let note = format!("published address {} withdrawn: {problem}", join(&ips));
                    tracing::warn!(service = %req.key, %note, "malformed status at start");
                    malformed.insert(req.key, note);
                }
                _ => claims.push((req, ips)),
            }
        }
        let mut conflicted = self.claim_published(claims);
        conflicted.extend(malformed);
        let mut actions = Vec::new();
        for svc in ours {
            let key = convert::service_key(svc);
            actions.extend(match conflicted.remove(&key) {
                None => self.reconcile_inner(&key, Some(svc), ns_labels, true),
                Some(note) => self.reallocate_conflicted(&key, svc, note, ns_labels),
            });
        }
        actions
    }

    /// Rebuilds the allocator from the published addresses. Returns the
    /// Services that lost a conflict, each with the note of the
    /// `ClearAssignment` Event that tells it so.
    fn claim_published(
        &mut self,
        claims: Vec<(ServiceRequest, Vec<IpAddr>)>,
    ) -> HashMap<ServiceKey, String> {
        let mut conflicted = HashMap::new();
        for conflict in self.alloc.rebuild(claims) {
            let note = format!(
                "published address {} withdrawn: {}",
                join(&conflict.ips),
                self.published_problem(&conflict.key, &conflict.ips, &conflict.error)
            );
            tracing::warn!(service = %conflict.key, %note, "address conflict at start");
            conflicted.insert(conflict.key, note);
        }
        if !self.pools_seen {
            // Nothing can be judged against pools that do not exist yet.
            conflicted.clear();
        }
        conflicted
    }

    /// The loser of a start conflict is allocated afresh as if it had no
    /// status; if that fails too, its published address is cleared.
    fn reallocate_conflicted(
        &mut self,
        key: &ServiceKey,
        svc: &Arc<Service>,
        note: String,
        ns_labels: NamespaceLabels<'_>,
    ) -> Vec<Action> {
        let fresh = Arc::new(without_status(svc));
        let mut more = self.reconcile_inner(key, Some(&fresh), ns_labels, true);
        if !more.iter().any(|a| matches!(a, Action::WriteStatus { .. })) {
            more.push(Action::WriteStatus {
                service: Arc::clone(svc),
                ips: Vec::new(),
            });
        }
        let mut actions = vec![Action::Event {
            service: Arc::clone(svc),
            reason: Reason::ClearAssignment,
            note,
        }];
        actions.extend(more);
        actions
    }

    /// Pools (or namespace labels) changed: apply the new pool set, give
    /// orphaned Services new addresses, and retry pending ones.
    pub fn sync_pools(
        &mut self,
        services: &[Arc<Service>],
        pools: &[Arc<IPAddressPool>],
        ns_labels: NamespaceLabels<'_>,
    ) -> Vec<Action> {
        let specs = self.pool_specs(pools);
        let change = self.alloc.set_pools(specs);
        for key in &change.orphaned {
            tracing::info!(service = %key, "address left every pool; reallocating");
        }
        // A re-list reports no deletions: anything IPAM holds for a Service
        // the cache no longer has was deleted meanwhile.
        let present: BTreeSet<ServiceKey> =
            services.iter().map(|s| convert::service_key(s)).collect();
        let gone: Vec<ServiceKey> = self
            .alloc
            .assignments()
            .map(|(k, _)| k.clone())
            .chain(self.pending.iter().cloned())
            .filter(|k| !present.contains(k))
            .collect();
        for key in gone {
            self.forget(&key);
        }
        let mut sorted: Vec<&Arc<Service>> = services.iter().collect();
        sorted.sort_by_key(|s| age_order(s));
        let mut actions = Vec::new();
        for svc in sorted {
            actions.extend(self.reconcile(&convert::service_key(svc), Some(svc), ns_labels));
        }
        actions
    }

    /// Reconciles one Service (`None` when it was deleted).
    pub fn reconcile(
        &mut self,
        key: &ServiceKey,
        svc: Option<&Arc<Service>>,
        ns_labels: NamespaceLabels<'_>,
    ) -> Vec<Action> {
        self.reconcile_inner(key, svc, ns_labels, false)
    }

    /// Services waiting for an address, oldest request first is not needed:
    /// IPAM is deterministic, so key order is enough.
    pub fn pending(&self) -> Vec<ServiceKey> {
        self.pending.iter().cloned().collect()
    }

    /// One Service, in steps: a deleted one is forgotten, one no longer ours
    /// gives its address back, any other is allocated (keeping what it has
    /// published where the pools allow) and the outcome is reported.
    /// `starting`: during [`Core::start`], where keeping an address is not
    /// news.
    fn reconcile_inner(
        &mut self,
        key: &ServiceKey,
        svc: Option<&Arc<Service>>,
        ns_labels: NamespaceLabels<'_>,
        starting: bool,
    ) -> Vec<Action> {
        let Some(svc) = svc else {
            self.forget(key);
            return Vec::new();
        };
        if !self.class.is_ours(svc) {
            return self.release_not_ours(key, svc);
        }
        let mut actions = self.warn_deprecated(key, svc);
        let before = self.alloc.assignment(key).cloned();
        actions.extend(
            match self.allocate_keeping_published(svc, before.is_none(), ns_labels) {
                Ok(assignment) => {
                    let mut done = self.replaced_faulty_status(key, svc, &before, &assignment);
                    done.extend(self.on_allocated(key, svc, before, assignment, starting));
                    done
                }
                Err(failure) => self.on_failed(key, svc, failure),
            },
        );
        actions
    }

    /// A Service that held nothing and had addresses in its status that
    /// could not be kept (another controller or a user wrote them) is told
    /// what was wrong with them when they are replaced.
    fn replaced_faulty_status(
        &self,
        key: &ServiceKey,
        svc: &Arc<Service>,
        before: &Option<Assignment>,
        assignment: &Assignment,
    ) -> Vec<Action> {
        let published = convert::ingress_ips(svc);
        if before.is_some() || published.is_empty() || published == assignment.ips {
            return Vec::new();
        }
        let Some(problem) = self.published_fault(key, &published) else {
            return Vec::new();
        };
        vec![Action::Event {
            service: Arc::clone(svc),
            reason: Reason::ClearAssignment,
            note: format!(
                "replaced {} in status with {}: {problem}",
                join(&published),
                join(&assignment.ips)
            ),
        }]
    }

    /// MetalLB warns that `metallb.universe.tf/` annotations are deprecated;
    /// so do we, once per Service. They keep working.
    fn warn_deprecated(&mut self, key: &ServiceKey, svc: &Arc<Service>) -> Vec<Action> {
        if self.warned_deprecated.contains(key) {
            return Vec::new();
        }
        let keys = annotations::deprecated_keys(svc.annotations());
        if keys.is_empty() {
            return Vec::new();
        }
        self.warned_deprecated.insert(key.clone());
        let renamed: Vec<String> = keys
            .iter()
            .map(|k| {
                k.replacen(
                    annotations::DEPRECATED_PREFIX,
                    annotations::METALLB_PREFIX,
                    1,
                )
            })
            .collect();
        vec![Action::Event {
            service: Arc::clone(svc),
            reason: Reason::DeprecatedAnnotation,
            note: format!(
                "annotation {} is deprecated; it still works, but rename it to {}",
                keys.join(", "),
                renamed.join(", ")
            ),
        }]
    }

    /// What is wrong with addresses found in a Service's status that IPAM
    /// refused (written by an older version, another controller or a
    /// user): said about the addresses, since the Service may well not be
    /// requesting them.
    fn published_problem(&self, key: &ServiceKey, ips: &[IpAddr], error: &AllocError) -> String {
        if let Some(problem) = too_many_per_family(ips) {
            return problem;
        }
        for ip in ips {
            match self.alloc.pool_of(*ip) {
                None => return format!("{ip} is outside every IPAddressPool"),
                Some(pool) if !self.alloc.hands_out(*ip) => {
                    return format!(
                        "{ip} is a .0 or .255 address, which pool {pool:?} never hands out (avoidBuggyIPs)"
                    );
                }
                Some(_) => {}
            }
            if let Some(holder) = self.alloc.holders(*ip).into_iter().find(|h| h != key) {
                return format!("{ip} is held by {holder}: {error}");
            }
        }
        error.to_string()
    }

    /// A Service that stopped being a LoadBalancer of our class gives back
    /// what it held, and its published address is cleared.
    fn release_not_ours(&mut self, key: &ServiceKey, svc: &Arc<Service>) -> Vec<Action> {
        let released = self.alloc.release(key);
        self.failures.remove(key);
        self.pending.remove(key);
        let Some(released) = released else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        if !convert::ingress_ips(svc).is_empty() {
            actions.push(Action::WriteStatus {
                service: Arc::clone(svc),
                ips: Vec::new(),
            });
        }
        actions.push(Action::Event {
            service: Arc::clone(svc),
            reason: Reason::IpReleased,
            note: format!(
                "released {} from pool {}: the Service is no longer a LoadBalancer of this class",
                join(&released.ips),
                released.pool
            ),
        });
        actions
    }

    /// Allocates for `svc`. A Service that holds nothing yet but has a
    /// published address (pools appeared after it, or it waited) keeps that
    /// address if the pools allow it; otherwise it gets what its request
    /// asks for.
    fn allocate_keeping_published(
        &mut self,
        svc: &Service,
        holds_nothing: bool,
        ns_labels: NamespaceLabels<'_>,
    ) -> Result<Assignment, AllocationFailure> {
        let ns = svc.namespace().unwrap_or_default();
        let req = convert::service_request(svc, &ns_labels(&ns))?;
        let published = convert::ingress_ips(svc);
        if holds_nothing && req.ips.is_empty() && !published.is_empty() {
            let mut claim = req.clone();
            claim.ips = published;
            if let Ok(a) = self.alloc.allocate(&claim) {
                return Ok(a);
            }
        }
        Ok(self.alloc.allocate(&req)?)
    }

    /// Publishes `assignment` unless the status already shows it, and says
    /// `IPAllocated` when it is new (not for a Service keeping its address
    /// across a leadership change).
    fn on_allocated(
        &mut self,
        key: &ServiceKey,
        svc: &Arc<Service>,
        before: Option<Assignment>,
        assignment: Assignment,
        starting: bool,
    ) -> Vec<Action> {
        self.failures.remove(key);
        self.pending.remove(key);
        let mut actions = Vec::new();
        if !convert::status_matches(svc, &assignment.ips) {
            actions.push(Action::WriteStatus {
                service: Arc::clone(svc),
                ips: assignment.ips.clone(),
            });
        }
        let kept_at_start = starting && before.is_some();
        if before.as_ref() != Some(&assignment) && !kept_at_start {
            actions.push(Action::Event {
                service: Arc::clone(svc),
                reason: Reason::IpAllocated,
                note: format!(
                    "assigned {} from pool {}",
                    join(&assignment.ips),
                    assignment.pool
                ),
            });
        }
        actions
    }

    /// A Service that holds nothing waits for an address and loses any it
    /// has published; the failure is reported once until it changes.
    fn on_failed(
        &mut self,
        key: &ServiceKey,
        svc: &Arc<Service>,
        failure: AllocationFailure,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.alloc.assignment(key).is_none() {
            self.pending.insert(key.clone());
            actions.extend(self.withdraw_unheld(svc, &failure));
        }
        if self.failures.get(key) != Some(&failure) {
            tracing::info!(service = %key, reason = %failure, "allocation failed");
            actions.push(Action::Event {
                service: Arc::clone(svc),
                reason: Reason::AllocationFailed,
                note: failure.to_string(),
            });
            self.failures.insert(key.clone(), failure);
        }
        actions
    }

    /// Never leaves an address published that IPAM does not hold for this
    /// Service: it could be given to another. Until pools have been seen
    /// nothing is cleared (see `pools_seen`).
    fn withdraw_unheld(&self, svc: &Arc<Service>, failure: &AllocationFailure) -> Vec<Action> {
        let published = convert::ingress_ips(svc);
        if published.is_empty() || !self.pools_seen {
            return Vec::new();
        }
        let key = convert::service_key(svc);
        let note = match self.published_fault(&key, &published) {
            Some(problem) => format!(
                "withdrew {}: {problem}; no new address: {failure}",
                join(&published)
            ),
            None => format!("withdrew {}: {failure}", join(&published)),
        };
        vec![
            Action::WriteStatus {
                service: Arc::clone(svc),
                ips: Vec::new(),
            },
            Action::Event {
                service: Arc::clone(svc),
                reason: Reason::ClearAssignment,
                note,
            },
        ]
    }

    /// A fault of the published addresses themselves, if they have one
    /// that is not about the Service's request: too many of a family,
    /// outside every pool, or held by another Service.
    fn published_fault(&self, key: &ServiceKey, ips: &[IpAddr]) -> Option<String> {
        if let Some(problem) = too_many_per_family(ips) {
            return Some(problem);
        }
        ips.iter().find_map(|ip| {
            if self.alloc.pool_of(*ip).is_none() {
                return Some(format!("{ip} is outside every IPAddressPool"));
            }
            let holder = self.alloc.holders(*ip).into_iter().find(|h| h != key)?;
            Some(format!("{ip} is held by {holder}"))
        })
    }

    fn forget(&mut self, key: &ServiceKey) {
        self.alloc.release(key);
        self.warned_deprecated.remove(key);
        self.failures.remove(key);
        self.pending.remove(key);
    }
}

/// The claim a Service makes at start on the addresses it has published,
/// if any. Bad annotations must not cost the Service its address: it then
/// claims what it holds with a plain request.
fn published_claim(
    svc: &Service,
    ns_labels: NamespaceLabels<'_>,
) -> Option<(ServiceRequest, Vec<IpAddr>)> {
    let ips = convert::ingress_ips(svc);
    if ips.is_empty() {
        return None;
    }
    let ns_labels = ns_labels(&svc.namespace().unwrap_or_default());
    let req = convert::service_request(svc, &ns_labels).unwrap_or_else(|e| {
        tracing::warn!(service = %convert::service_key(svc), error = %e, "cannot parse Service; keeping its published address");
        let mut req = convert::service_request(&strip_annotations(svc), &ns_labels)
            .expect("a Service without annotations always converts");
        req.ips = ips.clone();
        req
    });
    Some((req, ips))
}

/// "3 IPv4 addresses in status" when `ips` hold more than one address of
/// a family (a Service holds at most one per family), else `None`.
fn too_many_per_family(ips: &[IpAddr]) -> Option<String> {
    [Family::V4, Family::V6].into_iter().find_map(|family| {
        let n = ips.iter().filter(|ip| Family::of(**ip) == family).count();
        (n > 1).then(|| {
            format!("{n} {family} addresses in status; a Service holds at most one per family")
        })
    })
}

/// Oldest first, then namespace/name: the order in which Services are
/// allocated, so older Services win when addresses are contested.
fn age_order(svc: &Service) -> (Option<i64>, ServiceKey) {
    let created = svc
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second());
    (created, convert::service_key(svc))
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn without_status(svc: &Service) -> Service {
    let mut s = svc.clone();
    s.status = None;
    s
}

fn strip_annotations(svc: &Service) -> Service {
    let mut s = svc.clone();
    s.metadata.annotations = None;
    if let Some(spec) = s.spec.as_mut() {
        spec.load_balancer_ip = None;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{no_labels, pool, svc};
    use super::*;
    use serde_json::json;

    /// Status writes as (service name, ips).
    fn writes(actions: &[Action]) -> Vec<(String, Vec<String>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::WriteStatus { service, ips } => Some((
                    service.name_any(),
                    ips.iter().map(ToString::to_string).collect(),
                )),
                _ => None,
            })
            .collect()
    }

    /// Events as (service name, reason).
    fn events(actions: &[Action]) -> Vec<(String, Reason)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Event {
                    service, reason, ..
                } => Some((service.name_any(), *reason)),
                _ => None,
            })
            .collect()
    }

    fn note_of(actions: &[Action], want: Reason) -> String {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Event { reason, note, .. } if *reason == want => Some(note.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    #[test]
    fn new_services_get_the_lowest_free_addresses_oldest_first() {
        let mut core = Core::new(ClassFilter::default());
        let pools = [pool("default", 0, &["198.18.0.100-198.18.0.120"])];
        let services = [svc("b", 2).build_arc(), svc("a", 1).build_arc()];
        let actions = core.start(&services, &pools, &no_labels);
        assert_eq!(
            writes(&actions),
            vec![
                ("a".into(), vec!["198.18.0.100".into()]),
                ("b".into(), vec!["198.18.0.101".into()])
            ]
        );
        assert_eq!(
            events(&actions),
            vec![
                ("a".into(), Reason::IpAllocated),
                ("b".into(), Reason::IpAllocated)
            ]
        );
        assert!(note_of(&actions, Reason::IpAllocated).contains("pool default"));
    }

    #[test]
    fn once_published_a_resync_writes_nothing() {
        let mut core = Core::new(ClassFilter::default());
        let pools = [pool("default", 0, &["198.18.0.100-198.18.0.120"])];
        core.start(&[svc("a", 1).build_arc()], &pools, &no_labels);
        let landed = svc("a", 1).ingress(&["198.18.0.100"]).build_arc();
        let key = convert::service_key(&landed);
        assert!(core.reconcile(&key, Some(&landed), &no_labels).is_empty());
        assert!(core.reconcile(&key, Some(&landed), &no_labels).is_empty());
    }

    #[test]
    fn restart_keeps_every_published_address_and_writes_nothing() {
        let mut core = Core::new(ClassFilter::default());
        let pools = [pool("default", 0, &["198.18.0.100-198.18.0.120"])];
        let services = [
            svc("a", 1).ingress(&["198.18.0.107"]).build_arc(),
            svc("b", 2).ingress(&["198.18.0.100"]).build_arc(),
        ];
        let actions = core.start(&services, &pools, &no_labels);
        assert!(
            actions.is_empty(),
            "restart must not touch Services: {actions:?}"
        );
        let c = svc("c", 3).build_arc();
        let got = core.reconcile(&convert::service_key(&c), Some(&c), &no_labels);
        assert_eq!(
            writes(&got),
            vec![("c".into(), vec!["198.18.0.101".into()])]
        );
    }

    #[test]
    fn start_conflict_keeps_the_older_and_moves_the_younger() {
        let mut core = Core::new(ClassFilter::default());
        let pools = [pool("default", 0, &["198.18.0.100-198.18.0.120"])];
        let services = [
            svc("young", 5).ingress(&["198.18.0.100"]).build_arc(),
            svc("old", 1).ingress(&["198.18.0.100"]).build_arc(),
        ];
        let actions = core.start(&services, &pools, &no_labels);
        assert_eq!(
            writes(&actions),
            vec![("young".into(), vec!["198.18.0.101".into()])]
        );
        assert!(events(&actions).contains(&("young".into(), Reason::ClearAssignment)));
        assert!(note_of(&actions, Reason::ClearAssignment).contains("198.18.0.100"));
    }

    #[test]
    fn exhaustion_is_reported_once_and_retried_when_an_address_frees() {
        let mut core = Core::new(ClassFilter::default());
        let pools = [pool("tiny", 0, &["198.18.0.100/32"])];
        let a: Arc<Service> = svc("a", 1).build_arc();
        let b: Arc<Service> = svc("b", 2).build_arc();
        let actions = core.start(&[a.clone(), b.clone()], &pools, &no_labels);
        assert_eq!(
            writes(&actions),
            vec![("a".into(), vec!["198.18.0.100".into()])]
        );
        assert!(events(&actions).contains(&("b".into(), Reason::AllocationFailed)));
        let kb = convert::service_key(&b);
        assert!(
            core.reconcile(&kb, Some(&b), &no_labels).is_empty(),
            "no event storm on resync"
        );
        assert_eq!(core.pending(), vec![kb.clone()]);
        core.reconcile(&convert::service_key(&a), None, &no_labels);
        let got = core.reconcile(&kb, Some(&b), &no_labels);
        assert_eq!(
            writes(&got),
            vec![("b".into(), vec!["198.18.0.100".into()])]
        );
    }

    #[test]
    fn a_service_that_stops_being_a_load_balancer_is_released_and_cleared() {
        let mut core = Core::new(ClassFilter::default());
        let pools = [pool("default", 0, &["198.18.0.100-198.18.0.120"])];
        core.start(
            &[svc("a", 1).ingress(&["198.18.0.100"]).build_arc()],
            &pools,
            &no_labels,
        );
        let changed = svc("a", 1)
            .ingress(&["198.18.0.100"])
            .spec(json!({"type": "ClusterIP"}))
            .build_arc();
        let got = core.reconcile(&convert::service_key(&changed), Some(&changed), &no_labels);
        assert_eq!(writes(&got), vec![("a".into(), vec![])]);
        assert_eq!(events(&got), vec![("a".into(), Reason::IpReleased)]);
    }

    #[test]
    fn other_load_balancer_classes_are_never_touched() {
        let mut core = Core::new(ClassFilter::default());
        let pools = [pool("default", 0, &["198.18.0.100-198.18.0.120"])];
        let other = svc("x", 1)
            .spec(json!({"loadBalancerClass": "other.io/lb"}))
            .ingress(&["198.18.0.100"])
            .build_arc();
        assert!(
            core.start(std::slice::from_ref(&other), &pools, &no_labels)
                .is_empty()
        );
        assert!(
            core.reconcile(&convert::service_key(&other), Some(&other), &no_labels)
                .is_empty()
        );
        let mut strict = Core::new(ClassFilter::new(true));
        assert!(
            strict
                .start(&[svc("y", 1).build_arc()], &pools, &no_labels)
                .is_empty()
        );
    }

    #[test]
    fn removing_a_pool_moves_its_services_or_clears_them_with_an_event() {
        let mut core = Core::new(ClassFilter::default());
        let a_pool = pool("a", 0, &["198.18.0.100/32"]);
        let b_pool = pool("b", 1, &["198.18.1.100/32"]);
        let s = svc("s", 1).ingress(&["198.18.0.100"]).build_arc();
        core.start(
            std::slice::from_ref(&s),
            &[a_pool.clone(), b_pool.clone()],
            &no_labels,
        );
        let got = core.sync_pools(std::slice::from_ref(&s), &[b_pool], &no_labels);
        assert_eq!(
            writes(&got),
            vec![("s".into(), vec!["198.18.1.100".into()])]
        );
        let unrelated = pool("c", 2, &["198.18.2.0/32"]);
        let taken = svc("t", 0).ingress(&["198.18.2.0"]).build_arc();
        core.reconcile(&convert::service_key(&taken), Some(&taken), &no_labels);
        let got = core.sync_pools(&[s.clone(), taken], &[unrelated], &no_labels);
        assert_eq!(writes(&got), vec![("s".into(), vec![])]);
        assert!(events(&got).contains(&("s".into(), Reason::ClearAssignment)));
    }

    #[test]
    fn with_no_pools_at_all_published_addresses_are_left_alone() {
        let mut core = Core::new(ClassFilter::default());
        let s = svc("a", 1).ingress(&["198.18.0.100"]).build_arc();
        let actions = core.start(std::slice::from_ref(&s), &[], &no_labels);
        assert!(
            writes(&actions).is_empty(),
            "no pools yet must not wipe addresses: {actions:?}"
        );
        let pools = [pool("default", 0, &["198.18.0.100-198.18.0.120"])];
        let got = core.sync_pools(std::slice::from_ref(&s), &pools, &no_labels);
        assert!(
            writes(&got).is_empty(),
            "the address is claimed once its pool appears"
        );
        assert_eq!(
            core.allocator().pool_of("198.18.0.100".parse().unwrap()),
            Some("default")
        );
    }

    #[test]
    fn bad_annotations_are_reported_and_the_address_is_kept() {
        let mut core = Core::new(ClassFilter::default());
        let pools = [pool("default", 0, &["198.18.0.100-198.18.0.120"])];
        let s = svc("a", 1).ingress(&["198.18.0.100"]).build_arc();
        core.start(&[s], &pools, &no_labels);
        let bad = svc("a", 1)
            .ingress(&["198.18.0.100"])
            .annotate("l2lb.io/loadBalancerIPs", "banana")
            .build_arc();
        let got = core.reconcile(&convert::service_key(&bad), Some(&bad), &no_labels);
        assert!(writes(&got).is_empty(), "the published address stays");
        assert_eq!(events(&got), vec![("a".into(), Reason::AllocationFailed)]);
        let note = note_of(&got, Reason::AllocationFailed);
        assert!(note.starts_with("bad annotation: "), "{note}");
        assert!(note.contains("banana"), "{note}");
        assert!(
            core.reconcile(&convert::service_key(&bad), Some(&bad), &no_labels)
                .is_empty(),
            "the same failure is reported once"
        );
    }

    #[test]
    fn sharing_services_share_and_port_overlap_names_the_other_service() {
        let mut core = Core::new(ClassFilter::default());
        let pools = [pool("default", 0, &["198.18.0.100-198.18.0.120"])];
        let share = |name: &str, created, port| {
            svc(name, created)
                .annotate("l2lb.io/allow-shared-ip", "web")
                .annotate("l2lb.io/loadBalancerIPs", "198.18.0.110")
                .tcp_ports(&[port])
                .build_arc()
        };
        let actions = core.start(
            &[share("http", 1, 80), share("https", 2, 443)],
            &pools,
            &no_labels,
        );
        assert_eq!(
            writes(&actions),
            vec![
                ("http".into(), vec!["198.18.0.110".into()]),
                ("https".into(), vec!["198.18.0.110".into()])
            ]
        );
        let clash = share("clash", 3, 80);
        let got = core.reconcile(&convert::service_key(&clash), Some(&clash), &no_labels);
        assert!(writes(&got).is_empty());
        let note = note_of(&got, Reason::AllocationFailed);
        assert!(
            note.contains("default/http"),
            "note must name the other Service: {note}"
        );
    }

    #[test]
    fn deleting_every_pool_while_running_clears_addresses_with_an_event() {
        let mut core = Core::new(ClassFilter::default());
        let pools = [pool("only", 0, &["198.18.0.100/32"])];
        let s = svc("a", 1).ingress(&["198.18.0.100"]).build_arc();
        assert!(
            core.start(std::slice::from_ref(&s), &pools, &no_labels)
                .is_empty()
        );
        let got = core.sync_pools(std::slice::from_ref(&s), &[], &no_labels);
        assert_eq!(writes(&got), vec![("a".into(), vec![])]);
        let note = note_of(&got, Reason::ClearAssignment);
        assert!(note.contains("198.18.0.100"), "{note}");
        assert!(note.contains("outside every IPAddressPool"), "{note}");
    }

    #[test]
    fn hints_name_the_annotation_prefix_the_service_uses() {
        let mut core = Core::new(ClassFilter::default());
        let pools = [pool("default", 0, &["198.18.0.100/32"])];
        let a = svc("a", 1).ingress(&["198.18.0.100"]).build_arc();
        core.start(&[a], &pools, &no_labels);
        let b = svc("b", 2)
            .annotate("metallb.io/loadBalancerIPs", "198.18.0.100")
            .build_arc();
        let got = core.reconcile(&convert::service_key(&b), Some(&b), &no_labels);
        let note = note_of(&got, Reason::AllocationFailed);
        assert!(note.contains("metallb.io/allow-shared-ip"), "{note}");
        assert!(!note.contains("l2lb.io/"), "{note}");
    }

    #[test]
    fn deprecated_metallb_universe_annotations_warn_once() {
        let mut core = Core::new(ClassFilter::default());
        let pools = [pool("default", 0, &["198.18.0.100-198.18.0.110"])];
        let old = svc("old", 1)
            .annotate("metallb.universe.tf/address-pool", "default")
            .build_arc();
        let got = core.start(std::slice::from_ref(&old), &pools, &no_labels);
        let note = note_of(&got, Reason::DeprecatedAnnotation);
        assert!(note.contains("metallb.universe.tf/address-pool"), "{note}");
        assert!(note.contains("metallb.io/address-pool"), "{note}");
        assert_eq!(writes(&got).len(), 1, "the annotation still works");
        let again = core.reconcile(&convert::service_key(&old), Some(&old), &no_labels);
        assert!(
            !events(&again).contains(&("old".into(), Reason::DeprecatedAnnotation)),
            "warned once: {again:?}"
        );
    }

    #[test]
    fn withdrawing_a_foreign_address_says_what_is_wrong_with_it() {
        let mut core = Core::new(ClassFilter::default());
        let pools = [pool("default", 0, &["198.18.0.100-198.18.0.120"])];
        let outside = svc("outside", 1).ingress(&["198.18.9.9"]).build_arc();
        let three = svc("three", 2)
            .ingress(&["198.18.0.100", "198.18.0.101", "198.18.0.102"])
            .build_arc();
        let got = core.start(&[outside, three], &pools, &no_labels);
        let notes: Vec<String> = got
            .iter()
            .filter_map(|a| match a {
                Action::Event {
                    reason: Reason::ClearAssignment,
                    note,
                    ..
                } => Some(note.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(notes.len(), 2, "{got:?}");
        assert!(notes.iter().all(|n| !n.contains("requests")), "{notes:?}");
        assert!(
            notes
                .iter()
                .any(|n| n.contains("198.18.9.9 is outside every IPAddressPool")),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.contains("3 IPv4 addresses in status")),
            "{notes:?}"
        );
        assert_eq!(
            writes(&got),
            vec![
                ("outside".into(), vec!["198.18.0.100".into()]),
                ("three".into(), vec!["198.18.0.101".into()]),
            ]
        );
    }
}
