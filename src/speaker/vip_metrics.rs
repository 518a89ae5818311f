//! Per-VIP speaker metrics: which VIPs this node announces for which
//! Services, and how often it started announcing each. They exist for the
//! alerts in `deploy/monitoring/` (no owner, two owners, flapping), which
//! must join what the controller assigned with what speakers announce, IP
//! by IP; a per-node count cannot tell a VIP with no owner from one with
//! two.
//!
//! These are the only speaker metrics labelled with VIPs and Service names.
//! The label values stay bounded: a node has at most one `announced` series
//! per (VIP, Service) it announces now, and one start counter per VIP a
//! Service still uses. This module only publishes what the decision loop
//! did; it must never feed anything back into a decision.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::model::ServiceKey;
use crate::telemetry::GaugeSet;

/// MetalLB's `protocol` label value for layer-2 announcements; kept so
/// dashboards written for `metallb_speaker_announced` carry over.
const PROTOCOL: &str = "layer2";

/// Labels of `l2lb_speaker_announced`, as MetalLB's `metallb_speaker_announced`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnnouncedLabels {
    ip: String,
    node: String,
    protocol: String,
    service: String,
}

/// Labels of `l2lb_speaker_announce_starts_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VipLabels {
    ip: String,
    node: String,
}

/// The per-VIP instruments. Cheap to clone (shared handles).
#[derive(Clone, Debug, Default)]
pub struct VipMetrics {
    /// 1 per (VIP, Service) this node announces now; absent otherwise.
    announced: GaugeSet<AnnouncedLabels>,
    /// Times this node started announcing each VIP: summed over nodes, the
    /// VIP's owner changes.
    announce_starts: Family<VipLabels, Counter>,
    /// What the previous publish saw.
    last: Arc<Mutex<Published>>,
}

/// State carried from one publish to the next.
#[derive(Debug, Default)]
struct Published {
    /// What was announced at the last publish: a VIP not in it starts now,
    /// and an unchanged map needs no new series (most decisions change
    /// nothing announced, and the loop publishes after every one).
    announced: BTreeMap<IpAddr, BTreeSet<ServiceKey>>,
    /// VIPs with a start counter, removed once no Service uses the VIP.
    counted: BTreeSet<IpAddr>,
}

impl VipMetrics {
    /// Registers `announced` and `announce_starts` in `registry` (which the
    /// caller has prefixed with `l2lb_speaker`).
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "announced",
            "1 for each VIP and Service this node announces (answers ARP/NDP for); absent otherwise",
            self.announced.family(),
        );
        registry.register(
            "announce_starts",
            "Times this node started announcing a VIP; summed over nodes, the VIP's owner changes",
            self.announce_starts.clone(),
        );
    }

    /// Publishes what `node` announces after a decision: `announced` maps
    /// each announced VIP to the Services using it. `in_use` says whether
    /// any Service still uses a VIP; a start counter lives while it does,
    /// so a withdrawn VIP keeps its history for the flapping alert, and a
    /// deleted Service's VIP stops being exported.
    pub(super) fn publish(
        &self,
        node: &str,
        announced: &BTreeMap<IpAddr, BTreeSet<ServiceKey>>,
        in_use: impl Fn(IpAddr) -> bool,
    ) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.announced != *announced {
            self.publish_changed(node, announced, &mut last);
        }
        let vip_labels = |vip: &IpAddr| VipLabels {
            ip: vip.to_string(),
            node: node.to_string(),
        };
        let forgotten: Vec<IpAddr> = last
            .counted
            .iter()
            .filter(|vip| !announced.contains_key(vip) && !in_use(**vip))
            .copied()
            .collect();
        for vip in forgotten {
            self.announce_starts.remove(&vip_labels(&vip));
            last.counted.remove(&vip);
        }
    }

    /// The part of [`VipMetrics::publish`] for a changed `announced`.
    fn publish_changed(
        &self,
        node: &str,
        announced: &BTreeMap<IpAddr, BTreeSet<ServiceKey>>,
        last: &mut Published,
    ) {
        self.announced
            .publish(announced.iter().flat_map(|(vip, services)| {
                let labels = |service: String| AnnouncedLabels {
                    ip: vip.to_string(),
                    node: node.to_string(),
                    protocol: PROTOCOL.to_string(),
                    service,
                };
                // A VIP announced for no known Service (its Service vanished
                // between decisions) still answers on the wire: show it.
                let names: Vec<String> = if services.is_empty() {
                    vec![String::new()]
                } else {
                    services.iter().map(ToString::to_string).collect()
                };
                names.into_iter().map(move |s| (labels(s), 1))
            }));
        for vip in announced.keys() {
            if !last.announced.contains_key(vip) {
                let labels = VipLabels {
                    ip: vip.to_string(),
                    node: node.to_string(),
                };
                self.announce_starts.get_or_create(&labels).inc();
                last.counted.insert(*vip);
            }
        }
        last.announced = announced.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    fn vip(i: u8) -> IpAddr {
        IpAddr::from([198, 18, 0, i])
    }

    fn announced(vips: &[(u8, &[&str])]) -> BTreeMap<IpAddr, BTreeSet<ServiceKey>> {
        vips.iter()
            .map(|(i, names)| {
                let services = names.iter().map(|n| ServiceKey::new("default", *n));
                (vip(*i), services.collect())
            })
            .collect()
    }

    fn registered() -> (VipMetrics, Registry) {
        let m = VipMetrics::default();
        let mut registry = Registry::default();
        m.register(registry.sub_registry_with_prefix("l2lb_speaker"));
        (m, registry)
    }

    const A1: &str = r#"l2lb_speaker_announced{ip="198.18.0.1",node="n1",protocol="layer2",service="default/a"} 1"#;
    const B1: &str = r#"l2lb_speaker_announced{ip="198.18.0.1",node="n1",protocol="layer2",service="default/b"} 1"#;

    #[test]
    fn announced_gauge_is_set_on_announce_and_removed_on_withdraw() {
        let (m, registry) = registered();
        m.publish("n1", &announced(&[(1, &["a", "b"]), (2, &["c"])]), |_| true);
        let out = text(&registry);
        for line in [
            A1,
            B1,
            r#"l2lb_speaker_announced{ip="198.18.0.2",node="n1",protocol="layer2",service="default/c"} 1"#,
        ] {
            assert!(out.contains(line), "{line} missing in\n{out}");
        }
        m.publish("n1", &announced(&[(1, &["a"])]), |_| true);
        let out = text(&registry);
        assert!(out.contains(A1), "{out}");
        assert!(!out.contains("default/b"), "withdrawn sharer left:\n{out}");
        assert!(!out.contains("default/c"), "withdrawn VIP left:\n{out}");
        m.publish("n1", &BTreeMap::new(), |_| true);
        assert!(!text(&registry).contains("l2lb_speaker_announced{"));
    }

    #[test]
    fn starts_count_each_new_announcement_and_live_while_the_vip_is_used() {
        let (m, registry) = registered();
        let starts = |r: &Registry| {
            text(r)
                .lines()
                .find(|l| l.starts_with("l2lb_speaker_announce_starts_total{ip=\"198.18.0.1\""))
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
        };
        let one = announced(&[(1, &["a"])]);
        m.publish("n1", &one, |_| true);
        assert_eq!(starts(&registry).as_deref(), Some("1"));
        // Deciding again while announcing is not a new start.
        m.publish("n1", &one, |_| true);
        assert_eq!(starts(&registry).as_deref(), Some("1"));
        // Lost to another node, then back: a second start; the counter
        // stays between them, the flapping alert needs its history.
        m.publish("n1", &BTreeMap::new(), |_| true);
        assert_eq!(starts(&registry).as_deref(), Some("1"));
        m.publish("n1", &one, |_| true);
        assert_eq!(starts(&registry).as_deref(), Some("2"));
        // Withdrawn and no Service uses it any more: gone.
        m.publish("n1", &BTreeMap::new(), |_| false);
        assert_eq!(starts(&registry), None);
    }
}
