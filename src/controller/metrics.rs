//! Controller metrics. Labels are bounded: pool names, address families and
//! event reasons; IPs and Service names only on `l2lb_controller_vip_assigned`,
//! one series per address a Service holds, which the no-owner alert joins
//! with the speakers' `l2lb_speaker_announced` IP by IP. The caller owns
//! the registry and serves it; the controller only updates the handles.
//!
//! Only the leader publishes allocation state, and a term that ends takes
//! its series with it ([`ControllerMetrics::term`]): a standby showing its
//! last term's assignments would make the no-owner alert fire for addresses
//! released since.

use crate::api::IPAddressPoolStatus;
use crate::ipam::Allocator;
use crate::telemetry::GaugeSet;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PoolLabels {
    pool: String,
    family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PoolNameLabels {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VipLabels {
    ip: String,
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabels {
    reason: String,
}

/// The controller's instruments. Cheap to clone (every handle is shared);
/// register them in the caller's registry with [`ControllerMetrics::register`]
/// before [`run`](super::run), as the speaker's are.
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    /// Addresses per pool and family (`l2lb_allocator_addresses_total`).
    addresses_total: GaugeSet<PoolLabels>,
    /// Addresses assigned per pool and family.
    addresses_in_use: GaugeSet<PoolLabels>,
    /// 1 per address a Service holds (shared addresses: one per sharer).
    vip_assigned: GaugeSet<VipLabels>,
    /// 1 while a pool's `Invalid` condition holds, else 0.
    pool_invalid: GaugeSet<PoolNameLabels>,
    /// 1 while a pool's `Overlapping` condition holds, else 0.
    pool_overlapping: GaugeSet<PoolNameLabels>,
    /// Events decided, by reason.
    events: Family<ReasonLabels, Counter>,
    /// Time to decide one batch of changes.
    reconcile_seconds: Histogram,
    /// 1 while this replica leads.
    leader: Gauge,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self {
            addresses_total: GaugeSet::default(),
            addresses_in_use: GaugeSet::default(),
            vip_assigned: GaugeSet::default(),
            pool_invalid: GaugeSet::default(),
            pool_overlapping: GaugeSet::default(),
            events: Family::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
            leader: Gauge::default(),
        }
    }
}

impl ControllerMetrics {
    /// Registers every instrument under the `l2lb_` prefix in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("l2lb");
        r.register(
            "allocator_addresses_total",
            "Addresses in each pool, per family",
            self.addresses_total.family(),
        );
        r.register(
            "allocator_addresses_in_use_total",
            "Addresses assigned to Services, per pool and family",
            self.addresses_in_use.family(),
        );
        r.register(
            "allocator_pool_invalid",
            "1 while the pool is invalid (its Invalid condition is True): it assigns nothing",
            self.pool_invalid.family(),
        );
        r.register(
            "allocator_pool_overlapping",
            "1 while some of the pool's addresses are also in an older pool (its Overlapping condition is True)",
            self.pool_overlapping.family(),
        );
        r.register(
            "controller_vip_assigned",
            "1 for each address a Service holds (status.loadBalancer.ingress), per Service",
            self.vip_assigned.family(),
        );
        r.register(
            "controller_events",
            "Events emitted on Services, by reason (IPAllocated counts allocations, AllocationFailed failures)",
            self.events.clone(),
        );
        r.register(
            "controller_reconcile_duration_seconds",
            "Time to decide one batch of changes",
            self.reconcile_seconds.clone(),
        );
        r.register(
            "controller_leader",
            "1 while this replica leads",
            self.leader.clone(),
        );
    }

    pub(super) fn record_state(&self, alloc: &Allocator) {
        let clamp = |v: u128| i64::try_from(v).unwrap_or(i64::MAX);
        let mut total = Vec::new();
        let mut in_use = Vec::new();
        for s in alloc.stats() {
            for (family, t, used) in [
                ("IPv4", s.v4_total, s.v4_in_use),
                ("IPv6", s.v6_total, s.v6_in_use),
            ] {
                let l = PoolLabels {
                    pool: s.name.clone(),
                    family: family.into(),
                };
                total.push((l.clone(), clamp(t)));
                in_use.push((l, clamp(used)));
            }
        }
        self.addresses_total.publish(total);
        self.addresses_in_use.publish(in_use);
    }

    /// Publishes one series per address a Service holds. O(Services), so
    /// the leader calls it at most once a second (with pool status), not
    /// after every batch as [`ControllerMetrics::record_state`].
    pub(super) fn record_assignments(&self, alloc: &Allocator) {
        self.vip_assigned
            .publish(alloc.assignments().flat_map(|(key, a)| {
                a.ips.iter().map(move |ip| {
                    let l = VipLabels {
                        ip: ip.to_string(),
                        service: key.to_string(),
                    };
                    (l, 1)
                })
            }));
    }

    /// Publishes each pool's `Invalid` and `Overlapping` conditions as
    /// decided for its status, so the alerts and `kubectl get` agree.
    pub(super) fn record_pool_status(&self, desired: &BTreeMap<String, IPAddressPoolStatus>) {
        let holds = |status: &IPAddressPoolStatus, type_: &str| {
            let true_ = status
                .conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == "True");
            i64::from(true_)
        };
        let of = |type_: &'static str| {
            desired.iter().map(move |(pool, status)| {
                (PoolNameLabels { pool: pool.clone() }, holds(status, type_))
            })
        };
        self.pool_invalid.publish(of("Invalid"));
        self.pool_overlapping.publish(of("Overlapping"));
    }

    /// Publishes allocation state for one term of leadership: the returned
    /// guard removes it when the term ends (dropped with the term's future).
    pub(super) fn term(&self) -> TermMetrics {
        TermMetrics(self.clone())
    }

    pub(super) fn record_event(&self, reason: crate::api::events::Reason) {
        self.events
            .get_or_create(&ReasonLabels {
                reason: reason.as_str().into(),
            })
            .inc();
    }

    pub(super) fn observe_reconcile(&self, took: Duration) {
        self.reconcile_seconds.observe(took.as_secs_f64());
    }

    pub(super) fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }
}

/// Removes the leader-only series when dropped; see [`ControllerMetrics::term`].
pub(super) struct TermMetrics(ControllerMetrics);

impl Drop for TermMetrics {
    fn drop(&mut self) {
        let m = &self.0;
        m.addresses_total.clear();
        m.addresses_in_use.clear();
        m.vip_assigned.clear();
        m.pool_invalid.clear();
        m.pool_overlapping.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_register_with_expected_names() {
        let mut registry = Registry::default();
        let m = ControllerMetrics::default();
        m.register(&mut registry);
        m.set_leader(true);
        m.record_event(crate::api::events::Reason::IpAllocated);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        for name in [
            "# TYPE l2lb_allocator_addresses_total gauge",
            "# TYPE l2lb_allocator_addresses_in_use_total gauge",
            "l2lb_controller_events_total{reason=\"IPAllocated\"} 1",
            "l2lb_controller_reconcile_duration_seconds_bucket",
            "l2lb_controller_leader 1",
            "# TYPE l2lb_controller_vip_assigned gauge",
            "# TYPE l2lb_allocator_pool_invalid gauge",
            "# TYPE l2lb_allocator_pool_overlapping gauge",
        ] {
            assert!(out.contains(name), "{name} missing in\n{out}");
        }
    }

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn assigned_addresses_follow_the_allocator_and_end_with_the_term() {
        use crate::ipam::{PoolSpec, ServiceKey, ServiceRequest};
        let mut registry = Registry::default();
        let m = ControllerMetrics::default();
        m.register(&mut registry);
        let term = m.term();
        let mut alloc = Allocator::new();
        alloc.set_pools(vec![
            PoolSpec::new("a", ["198.18.0.1/32"]),
            PoolSpec::new("b", ["198.18.1.0/31"]),
        ]);
        alloc
            .allocate(&ServiceRequest::new("default", "web"))
            .unwrap();
        m.record_state(&alloc);
        m.record_assignments(&alloc);
        let out = text(&registry);
        for line in [
            r#"l2lb_controller_vip_assigned{ip="198.18.0.1",service="default/web"} 1"#,
            r#"l2lb_allocator_addresses_in_use_total{pool="a",family="IPv4"} 1"#,
            r#"l2lb_allocator_addresses_total{pool="b",family="IPv4"} 2"#,
        ] {
            assert!(out.contains(line), "{line} missing in\n{out}");
        }
        alloc.release(&ServiceKey::new("default", "web"));
        alloc.set_pools(vec![PoolSpec::new("a", ["198.18.0.1/32"])]);
        m.record_state(&alloc);
        m.record_assignments(&alloc);
        let out = text(&registry);
        assert!(!out.contains("l2lb_controller_vip_assigned{"), "{out}");
        assert!(!out.contains("pool=\"b\""), "deleted pool left:\n{out}");
        drop(term);
        let out = text(&registry);
        assert!(
            !out.contains("pool=\"a\""),
            "series outlived the term:\n{out}"
        );
    }

    #[test]
    fn pool_conditions_become_gauges_and_deleted_pools_vanish() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        let status = |invalid: bool, overlapping: bool| {
            let condition = |type_: &str, holds: bool| Condition {
                type_: type_.into(),
                status: if holds { "True" } else { "False" }.into(),
                reason: "Test".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            };
            IPAddressPoolStatus {
                conditions: vec![
                    condition("Invalid", invalid),
                    condition("Overlapping", overlapping),
                ],
                ..IPAddressPoolStatus::default()
            }
        };
        let mut registry = Registry::default();
        let m = ControllerMetrics::default();
        m.register(&mut registry);
        m.record_pool_status(&BTreeMap::from([
            ("good".to_string(), status(false, false)),
            ("bad".to_string(), status(true, false)),
            ("late".to_string(), status(false, true)),
        ]));
        let out = text(&registry);
        for line in [
            r#"l2lb_allocator_pool_invalid{pool="good"} 0"#,
            r#"l2lb_allocator_pool_invalid{pool="bad"} 1"#,
            r#"l2lb_allocator_pool_overlapping{pool="bad"} 0"#,
            r#"l2lb_allocator_pool_overlapping{pool="late"} 1"#,
        ] {
            assert!(out.contains(line), "{line} missing in\n{out}");
        }
        m.record_pool_status(&BTreeMap::from([(
            "good".to_string(),
            status(false, false),
        )]));
        let out = text(&registry);
        assert!(!out.contains("pool=\"bad\""), "{out}");
        assert!(!out.contains("pool=\"late\""), "{out}");
    }
}
