//! The controller's decisions, free of I/O: given Services, pools and
//! namespaces as the watch caches hold them, say which status writes and
//! Events should happen.
//!
//! `Core` owns the [`Allocator`] and nothing else that is stateful except the
//! memory needed to emit one Event per change (not per resync). Tests feed it
//! objects and assert the exact actions; the runtime in `mod.rs` only carries
//! actions out.

use crate::api::IPAddressPool;
use crate::api::events::Reason;
use crate::ipam::{Allocator, Assignment, PoolSpec, ServiceKey};
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

/// The allocation state machine of the leading controller.
#[derive(Debug)]
pub struct Core {
    /// Address state; rebuilt from Services' status when leadership starts.
    alloc: Allocator,
    /// Which Services are ours (`--require-class`).
    class: ClassFilter,
    /// Last failure message per Service, so a failure is reported once per
    /// change and not on every resync.
    failures: HashMap<ServiceKey, String>,
    /// Services that wanted an address and did not get one; retried when
    /// addresses are freed or pools change.
    pending: BTreeSet<ServiceKey>,
    /// Pools whose `serviceAllocation` could not be parsed, with the reason.
    /// They keep serving existing and explicitly requested addresses.
    malformed_pools: BTreeMap<String, ConvertError>,
    /// Whether any pool object exists. With none (a fresh install whose
    /// pools are not applied yet) published addresses are left alone rather
    /// than wiped (MetalLB #2887).
    have_pools: bool,
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
            have_pools: false,
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
        self.have_pools = !pools.is_empty();
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
        let mut existing = Vec::new();
        let mut actions = Vec::new();
        for svc in &ours {
            let ips = convert::ingress_ips(svc);
            if ips.is_empty() {
                continue;
            }
            let ns = svc.namespace().unwrap_or_default();
            match convert::service_request(svc, &ns_labels(&ns)) {
                Ok(req) => existing.push((req, ips)),
                Err(e) => {
                    // Bad annotations must not cost the Service its address:
                    // claim what it holds with a plain request.
                    tracing::warn!(service = %convert::service_key(svc), error = %e, "cannot parse Service; keeping its published address");
                    let mut req =
                        convert::service_request(&strip_annotations(svc), &ns_labels(&ns))
                            .expect("a Service without annotations always converts");
                    req.ips = ips.clone();
                    existing.push((req, ips));
                }
            }
        }
        let mut conflicted: HashMap<ServiceKey, String> = HashMap::new();
        for conflict in self.alloc.rebuild(existing) {
            let note = format!(
                "published address {} withdrawn: {}",
                join(&conflict.ips),
                conflict.error
            );
            tracing::warn!(service = %conflict.key, %note, "address conflict at start");
            conflicted.insert(conflict.key, note);
        }
        if !self.have_pools {
            // Nothing can be judged against pools that do not exist yet.
            conflicted.clear();
        }
        for svc in ours {
            let key = convert::service_key(svc);
            let Some(note) = conflicted.remove(&key) else {
                actions.extend(self.reconcile_inner(&key, Some(svc), ns_labels, true));
                continue;
            };
            // The loser of a conflict is allocated afresh as if it had no
            // status; if that fails too, its published address is cleared.
            let fresh = Arc::new(without_status(svc));
            let mut more = self.reconcile_inner(&key, Some(&fresh), ns_labels, true);
            if !more.iter().any(|a| matches!(a, Action::WriteStatus { .. })) {
                more.push(Action::WriteStatus {
                    service: Arc::clone(svc),
                    ips: Vec::new(),
                });
            }
            actions.push(Action::Event {
                service: Arc::clone(svc),
                reason: Reason::ClearAssignment,
                note,
            });
            actions.extend(more);
        }
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
            return actions;
        }

        let ns = svc.namespace().unwrap_or_default();
        let before: Option<Assignment> = self.alloc.assignment(key).cloned();
        let result = convert::service_request(svc, &ns_labels(&ns))
            .map_err(|e| match e {
                ConvertError::Annotation(a) => format!("bad annotation: {a}"),
                other => other.to_string(),
            })
            .and_then(|req| {
                // A Service that holds nothing yet but has a published
                // address (pools appeared after it, or it waited) keeps that
                // address if the pools allow it.
                let published = convert::ingress_ips(svc);
                if before.is_none() && req.ips.is_empty() && !published.is_empty() {
                    let mut claim = req.clone();
                    claim.ips = published;
                    if let Ok(a) = self.alloc.allocate(&claim) {
                        return Ok(a);
                    }
                }
                self.alloc.allocate(&req).map_err(|e| e.to_string())
            });
        let mut actions = Vec::new();
        match result {
            Ok(assignment) => {
                self.failures.remove(key);
                self.pending.remove(key);
                if !convert::status_matches(svc, &assignment.ips) {
                    actions.push(Action::WriteStatus {
                        service: Arc::clone(svc),
                        ips: assignment.ips.clone(),
                    });
                }
                let changed = before.as_ref() != Some(&assignment);
                if changed && !(starting && before.is_some()) {
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
            }
            Err(message) => {
                let held = self.alloc.assignment(key).is_some();
                if !held {
                    self.pending.insert(key.clone());
                    // Never leave an address published that IPAM does not
                    // hold for this Service: it could be given to another.
                    let published = convert::ingress_ips(svc);
                    if !published.is_empty() && self.have_pools {
                        actions.push(Action::WriteStatus {
                            service: Arc::clone(svc),
                            ips: Vec::new(),
                        });
                        actions.push(Action::Event {
                            service: Arc::clone(svc),
                            reason: Reason::ClearAssignment,
                            note: format!("withdrew {}: {message}", join(&published)),
                        });
                    }
                }
                if self.failures.get(key) != Some(&message) {
                    tracing::info!(service = %key, reason = %message, "allocation failed");
                    actions.push(Action::Event {
                        service: Arc::clone(svc),
                        reason: Reason::AllocationFailed,
                        note: message.clone(),
                    });
                    self.failures.insert(key.clone(), message);
                }
            }
        }
        actions
    }

    fn forget(&mut self, key: &ServiceKey) {
        self.alloc.release(key);
        self.failures.remove(key);
        self.pending.remove(key);
    }
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
        let services = [svc("b", 2).build(), svc("a", 1).build()];
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
        core.start(&[svc("a", 1).build()], &pools, &no_labels);
        let landed = svc("a", 1).published(&["198.18.0.100"]).build();
        let key = convert::service_key(&landed);
        assert!(core.reconcile(&key, Some(&landed), &no_labels).is_empty());
        assert!(core.reconcile(&key, Some(&landed), &no_labels).is_empty());
    }

    #[test]
    fn restart_keeps_every_published_address_and_writes_nothing() {
        let mut core = Core::new(ClassFilter::default());
        let pools = [pool("default", 0, &["198.18.0.100-198.18.0.120"])];
        let services = [
            svc("a", 1).published(&["198.18.0.107"]).build(),
            svc("b", 2).published(&["198.18.0.100"]).build(),
        ];
        let actions = core.start(&services, &pools, &no_labels);
        assert!(
            actions.is_empty(),
            "restart must not touch Services: {actions:?}"
        );
        let c = svc("c", 3).build();
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
            svc("young", 5).published(&["198.18.0.100"]).build(),
            svc("old", 1).published(&["198.18.0.100"]).build(),
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
        let a = svc("a", 1).build();
        let b = svc("b", 2).build();
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
            &[svc("a", 1).published(&["198.18.0.100"]).build()],
            &pools,
            &no_labels,
        );
        let changed = svc("a", 1)
            .published(&["198.18.0.100"])
            .spec("type", json!("ClusterIP"))
            .build();
        let got = core.reconcile(&convert::service_key(&changed), Some(&changed), &no_labels);
        assert_eq!(writes(&got), vec![("a".into(), vec![])]);
        assert_eq!(events(&got), vec![("a".into(), Reason::IpReleased)]);
    }

    #[test]
    fn other_load_balancer_classes_are_never_touched() {
        let mut core = Core::new(ClassFilter::default());
        let pools = [pool("default", 0, &["198.18.0.100-198.18.0.120"])];
        let other = svc("x", 1)
            .spec("loadBalancerClass", json!("other.io/lb"))
            .published(&["198.18.0.100"])
            .build();
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
                .start(&[svc("y", 1).build()], &pools, &no_labels)
                .is_empty()
        );
    }

    #[test]
    fn removing_a_pool_moves_its_services_or_clears_them_with_an_event() {
        let mut core = Core::new(ClassFilter::default());
        let a_pool = pool("a", 0, &["198.18.0.100/32"]);
        let b_pool = pool("b", 1, &["198.18.1.100/32"]);
        let s = svc("s", 1).published(&["198.18.0.100"]).build();
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
        let taken = svc("t", 0).published(&["198.18.2.0"]).build();
        core.reconcile(&convert::service_key(&taken), Some(&taken), &no_labels);
        let got = core.sync_pools(&[s.clone(), taken], &[unrelated], &no_labels);
        assert_eq!(writes(&got), vec![("s".into(), vec![])]);
        assert!(events(&got).contains(&("s".into(), Reason::ClearAssignment)));
    }

    #[test]
    fn with_no_pools_at_all_published_addresses_are_left_alone() {
        let mut core = Core::new(ClassFilter::default());
        let s = svc("a", 1).published(&["198.18.0.100"]).build();
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
        let s = svc("a", 1).published(&["198.18.0.100"]).build();
        core.start(&[s], &pools, &no_labels);
        let bad = svc("a", 1)
            .published(&["198.18.0.100"])
            .annotate("l2lb.io/loadBalancerIPs", "banana")
            .build();
        let got = core.reconcile(&convert::service_key(&bad), Some(&bad), &no_labels);
        assert!(writes(&got).is_empty(), "the published address stays");
        assert_eq!(events(&got), vec![("a".into(), Reason::AllocationFailed)]);
        assert!(note_of(&got, Reason::AllocationFailed).contains("banana"));
    }

    #[test]
    fn sharing_services_share_and_port_overlap_names_the_other_service() {
        let mut core = Core::new(ClassFilter::default());
        let pools = [pool("default", 0, &["198.18.0.100-198.18.0.120"])];
        let share = |name: &str, created, port| {
            svc(name, created)
                .annotate("l2lb.io/allow-shared-ip", "web")
                .annotate("l2lb.io/loadBalancerIPs", "198.18.0.110")
                .port(port)
                .build()
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
}
