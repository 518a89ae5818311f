//! The speaker's seam to the L2 dataplane: [`Announcer`] for
//! [`Dataplane`], and the dataplane's counters as Prometheus metrics with
//! MetalLB-like names (`l2lb_layer2_*`), labelled by interface only.

use super::{Announcer, IpConflict};
use crate::l2::{Dataplane, L2Error};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use std::net::IpAddr;

impl Announcer for Dataplane {
    fn announce(&self, vip: IpAddr, interface: &str) -> Result<(), L2Error> {
        Dataplane::announce(self, vip, interface)
    }

    fn withdraw(&self, vip: IpAddr) {
        Dataplane::withdraw(self, vip);
    }

    fn withdraw_all(&self) {
        Dataplane::withdraw_all(self);
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

/// Exposes the dataplane's per-interface counters at scrape time.
#[derive(Debug)]
pub struct DataplaneMetrics(pub Dataplane);

impl Collector for DataplaneMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        type Pick = fn(&crate::l2::IfaceCounters) -> u64;
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
            for (iface, counters) in &stats.interfaces {
                let labels = [("interface", iface.as_str())];
                let metric = family.encode_family(&labels)?;
                ConstCounter::new(pick(counters)).encode(metric)?;
            }
        }
        Ok(())
    }
}
