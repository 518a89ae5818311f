//! The speaker's seam to the L2 dataplane: [`Announcer`] for
//! [`Dataplane`], and the dataplane's counters as Prometheus metrics with
//! MetalLB-like names (`l2lb_layer2_*`), labelled by interface only.

use super::{Announcer, IpConflict};
use crate::l2::{Dataplane, IfaceCounters, L2Error, L2Stats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use std::collections::BTreeMap;
use std::net::IpAddr;

impl Announcer for Dataplane {
    fn usable_links(
        &self,
        interfaces: &std::collections::BTreeSet<String>,
    ) -> std::collections::BTreeSet<String> {
        super::netinfo::usable_links(interfaces)
    }

    fn announce(&self, vip: IpAddr, interface: &str) -> Result<(), L2Error> {
        Dataplane::announce(self, vip, interface)
    }

    fn withdraw(&self, vip: IpAddr) {
        Dataplane::withdraw(self, vip);
    }

    fn withdraw_all(&self) {
        Dataplane::withdraw_all(self);
    }

    fn set_answer_window(&self, window: crate::l2::AnswerWindow) {
        Dataplane::set_answer_window(self, window);
    }

    fn subscribe_conflicts(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<IpConflict>> {
        let conflicts = Dataplane::subscribe_conflicts(self);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        // The dataplane reports from its own threads over a std channel;
        // this thread only forwards, and ends when either side goes away.
        std::thread::Builder::new()
            .name("l2-conflicts".into())
            .spawn(move || {
                while let Ok(c) = conflicts.recv() {
                    let conflict = IpConflict {
                        vip: c.vip,
                        interface: c.interface,
                        mac: c.their_mac,
                    };
                    if tx.send(conflict).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        Some(rx)
    }
}

/// Exposes the dataplane's per-interface counters at scrape time: for every
/// interface announced on, and at zero for every other interface that is up
/// and holds an address, so a speaker that never owned a VIP has its series
/// too (rates and alerts need them to exist).
#[derive(Debug)]
pub struct DataplaneMetrics(pub Dataplane);

/// Counters per interface: those of `stats`, plus zero for each of `idle`
/// that has none yet.
fn per_interface(
    stats: L2Stats,
    idle: impl IntoIterator<Item = String>,
) -> BTreeMap<String, IfaceCounters> {
    let mut all = stats.interfaces;
    for iface in idle {
        all.entry(iface).or_default();
    }
    all
}

impl Collector for DataplaneMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let interfaces = per_interface(self.0.stats(), super::netinfo::addressed_interfaces());
        type Pick = fn(&IfaceCounters) -> u64;
        let families: [(&str, &str, Pick); 5] = [
            (
                "layer2_requests_received",
                "ARP requests and neighbour solicitations received",
                |c| c.requests_received,
            ),
            (
                "layer2_responses_sent",
                "ARP replies and neighbour advertisements sent",
                |c| c.responses_sent,
            ),
            (
                "layer2_gratuitous_sent",
                "Gratuitous ARP and unsolicited NA frames sent",
                |c| c.gratuitous_sent,
            ),
            (
                "layer2_conflicts",
                "Frames from another MAC claiming a VIP this node announces",
                |c| c.conflicts,
            ),
            (
                "layer2_malformed",
                "Frames dropped because they did not parse",
                |c| c.malformed,
            ),
        ];
        for (name, help, pick) in families {
            let counter = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            for (iface, counters) in &interfaces {
                let labels = [("interface", iface.as_str())];
                let metric = family.encode_family(&labels)?;
                ConstCounter::new(pick(counters)).encode(metric)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_never_announced_on_are_exposed_at_zero() {
        let used = IfaceCounters {
            requests_received: 3,
            ..IfaceCounters::default()
        };
        let stats = L2Stats {
            interfaces: [("eth0".to_string(), used)].into(),
        };
        let all = per_interface(stats, ["eth0".to_string(), "eth1".to_string()]);
        assert_eq!(all["eth0"], used, "counted interfaces keep their counts");
        assert_eq!(all["eth1"], IfaceCounters::default());
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn a_speaker_that_never_announced_has_every_family_at_zero() {
        let mut registry = prometheus_client::registry::Registry::with_prefix("l2lb");
        let dataplane = Dataplane::new(crate::l2::DataplaneConfig::default());
        registry.register_collector(Box::new(DataplaneMetrics(dataplane)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let idle = super::super::netinfo::addressed_interfaces();
        for family in [
            "requests_received",
            "responses_sent",
            "gratuitous_sent",
            "conflicts",
            "malformed",
        ] {
            for iface in &idle {
                let series = format!("l2lb_layer2_{family}_total{{interface=\"{iface}\"}} 0");
                assert!(text.contains(&series), "{series} missing in\n{text}");
            }
        }
    }
}
