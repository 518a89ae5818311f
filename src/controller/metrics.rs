//! Controller metrics. Labels are bounded: pool names, address families and
//! event reasons, never Service names or IPs. The caller owns the registry
//! and serves it; the controller only updates the handles.

use crate::ipam::Allocator;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PoolLabels {
    pool: String,
    family: String,
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
    addresses_total: Family<PoolLabels, Gauge>,
    /// Addresses assigned per pool and family.
    addresses_in_use: Family<PoolLabels, Gauge>,
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
            addresses_total: Family::default(),
            addresses_in_use: Family::default(),
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
            self.addresses_total.clone(),
        );
        r.register(
            "allocator_addresses_in_use_total",
            "Addresses assigned to Services, per pool and family",
            self.addresses_in_use.clone(),
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
        for s in alloc.stats() {
            for (family, total, used) in [
                ("IPv4", s.v4_total, s.v4_in_use),
                ("IPv6", s.v6_total, s.v6_in_use),
            ] {
                let l = PoolLabels {
                    pool: s.name.clone(),
                    family: family.into(),
                };
                let clamp = |v: u128| i64::try_from(v).unwrap_or(i64::MAX);
                self.addresses_total.get_or_create(&l).set(clamp(total));
                self.addresses_in_use.get_or_create(&l).set(clamp(used));
            }
        }
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
        ] {
            assert!(out.contains(name), "{name} missing in\n{out}");
        }
    }
}
