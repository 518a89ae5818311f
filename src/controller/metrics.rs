//! Controller metrics. Labels are bounded: pool names, address families and
//! event reasons, never Service names or IPs.

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

/// The controller's instruments.
pub(super) struct Metrics {
    addresses_total: Family<PoolLabels, Gauge>,
    addresses_in_use: Family<PoolLabels, Gauge>,
    events: Family<ReasonLabels, Counter>,
    reconcile_seconds: Histogram,
    leader: Gauge,
}

impl Metrics {
    /// Registers every instrument (prefix `l2lb_` comes from the registry).
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            addresses_total: Family::default(),
            addresses_in_use: Family::default(),
            events: Family::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
            leader: Gauge::default(),
        };
        registry.register(
            "allocator_addresses_total",
            "Addresses in each pool, per family",
            m.addresses_total.clone(),
        );
        registry.register(
            "allocator_addresses_in_use_total",
            "Addresses assigned to Services, per pool and family",
            m.addresses_in_use.clone(),
        );
        registry.register(
            "controller_events",
            "Events emitted on Services, by reason (IPAllocated counts allocations, AllocationFailed failures)",
            m.events.clone(),
        );
        registry.register(
            "controller_reconcile_duration_seconds",
            "Time to decide one batch of changes",
            m.reconcile_seconds.clone(),
        );
        registry.register(
            "controller_leader",
            "1 while this replica leads",
            m.leader.clone(),
        );
        m
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
