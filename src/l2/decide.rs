//! Pure decisions of the responder and announcer: which reply a request gets,
//! which frames announce a VIP, and when a frame reveals another host claiming
//! one of our VIPs.
//!
//! Imports no socket, libc or async code and must never do I/O: the socket
//! loop feeds parsed [`FrameRepr`]s in and carries the answers out.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::wire::{
    ALL_NODES, ArpOp, ArpRepr, ETHERTYPE_ARP, ETHERTYPE_IPV6, EthernetRepr, FrameRepr, Mac,
    NdpRepr, Payload, ipv6_multicast_mac,
};

/// The set of VIPs this node answers for on one interface (O(1) lookup).
pub trait OwnedVips {
    /// True when `ip` is owned.
    fn owns(&self, ip: IpAddr) -> bool;
}

impl OwnedVips for HashSet<IpAddr> {
    fn owns(&self, ip: IpAddr) -> bool {
        self.contains(&ip)
    }
}

fn is_unicast_mac(mac: &Mac) -> bool {
    !mac.is_multicast() && *mac != Mac::ZERO
}

/// The reply to `req`, or None. Answers only ARP requests and NS for owned
/// VIPs; never answers frames from `our_mac`, gratuitous ARPs, requests from
/// a multicast/zero source MAC, or frames unicast to another host (a flooded
/// unicast probe for the previous owner is not ours to answer, as in the kernel).
pub fn reply(req: &FrameRepr, owned: &impl OwnedVips, our_mac: Mac) -> Option<FrameRepr> {
    if req.eth.src == our_mac || !is_unicast_mac(&req.eth.src) {
        return None;
    }
    if req.eth.dst != our_mac && !req.eth.dst.is_multicast() {
        return None;
    }
    match req.payload {
        Payload::Arp(arp) => {
            if arp.op != ArpOp::Request
                || arp.is_gratuitous()
                || !owned.owns(IpAddr::V4(arp.target_ip))
            {
                return None;
            }
            let to = if is_unicast_mac(&arp.sender_mac) {
                arp.sender_mac
            } else {
                req.eth.src
            };
            Some(FrameRepr {
                eth: EthernetRepr {
                    dst: to,
                    src: our_mac,
                    ethertype: ETHERTYPE_ARP,
                },
                payload: Payload::Arp(ArpRepr {
                    op: ArpOp::Reply,
                    sender_mac: our_mac,
                    sender_ip: arp.target_ip,
                    target_mac: arp.sender_mac,
                    target_ip: arp.sender_ip,
                }),
            })
        }
        Payload::Ndp(NdpRepr::Solicit {
            src_ip,
            target,
            source_mac,
            ..
        }) => {
            if !owned.owns(IpAddr::V6(target)) {
                return None;
            }
            if src_ip.is_unspecified() {
                // DAD probe for our VIP (RFC 4861 § 7.2.4): answer to all-nodes,
                // S=0. A DAD NS must not carry a source lladdr option.
                if source_mac.is_some() {
                    return None;
                }
                return Some(advert(
                    target,
                    our_mac,
                    ALL_NODES,
                    ipv6_multicast_mac(ALL_NODES),
                    false,
                ));
            }
            let to = source_mac.filter(is_unicast_mac).unwrap_or(req.eth.src);
            Some(advert(target, our_mac, src_ip, to, true))
        }
        Payload::Ndp(NdpRepr::Advert { .. }) => None,
    }
}

fn advert(
    target: Ipv6Addr,
    our_mac: Mac,
    dst_ip: Ipv6Addr,
    dst_mac: Mac,
    solicited: bool,
) -> FrameRepr {
    FrameRepr {
        eth: EthernetRepr {
            dst: dst_mac,
            src: our_mac,
            ethertype: ETHERTYPE_IPV6,
        },
        payload: Payload::Ndp(NdpRepr::Advert {
            src_ip: target,
            dst_ip,
            target,
            router: false,
            solicited,
            override_flag: true,
            target_mac: Some(our_mac),
        }),
    }
}

/// A VIP of ours claimed by another MAC, as seen in one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// Our VIP.
    pub vip: IpAddr,
    /// The other host's MAC.
    pub their_mac: Mac,
}

/// When `frame` shows another host answering or announcing an owned VIP
/// (ARP with sender IP = VIP, or NA for the VIP) with a MAC other than ours.
pub fn conflict(frame: &FrameRepr, owned: &impl OwnedVips, our_mac: Mac) -> Option<Claim> {
    if frame.eth.src == our_mac {
        return None;
    }
    let (vip, their_mac) = match frame.payload {
        Payload::Arp(arp) => (IpAddr::V4(arp.sender_ip), arp.sender_mac),
        Payload::Ndp(NdpRepr::Advert {
            target, target_mac, ..
        }) => (IpAddr::V6(target), target_mac.unwrap_or(frame.eth.src)),
        Payload::Ndp(NdpRepr::Solicit { .. }) => return None,
    };
    (their_mac != our_mac && owned.owns(vip)).then_some(Claim { vip, their_mac })
}

/// The frames announcing `vip` with `our_mac`: for IPv4 a gratuitous ARP
/// request and a gratuitous reply whose target MAC is our own MAC (a reply to
/// ff:ff:ff:ff:ff:ff is ignored by Linux inside `locktime`); for IPv6 an
/// unsolicited NA with Override to ff02::1.
pub fn announcements(vip: IpAddr, our_mac: Mac) -> Vec<FrameRepr> {
    match vip {
        IpAddr::V4(ip) => vec![
            garp(ip, our_mac, ArpOp::Request),
            garp(ip, our_mac, ArpOp::Reply),
        ],
        IpAddr::V6(ip) => vec![advert(
            ip,
            our_mac,
            ALL_NODES,
            ipv6_multicast_mac(ALL_NODES),
            false,
        )],
    }
}

fn garp(ip: Ipv4Addr, our_mac: Mac, op: ArpOp) -> FrameRepr {
    FrameRepr {
        eth: EthernetRepr {
            dst: Mac::BROADCAST,
            src: our_mac,
            ethertype: ETHERTYPE_ARP,
        },
        payload: Payload::Arp(ArpRepr {
            op,
            sender_mac: our_mac,
            sender_ip: ip,
            target_mac: if op == ArpOp::Reply {
                our_mac
            } else {
                Mac::ZERO
            },
            target_ip: ip,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l2::wire::solicited_node;
    use proptest::prelude::*;

    const OURS: Mac = Mac([2, 0x18, 0, 0, 1, 0]);
    const CLIENT: Mac = Mac([2, 0x18, 0, 0, 2, 0]);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

    fn owned() -> HashSet<IpAddr> {
        [IpAddr::V4(VIP), "fd00:198:18::100".parse().unwrap()]
            .into_iter()
            .collect()
    }

    fn arp_request(target: Ipv4Addr, sender_ip: Ipv4Addr, src: Mac) -> FrameRepr {
        FrameRepr {
            eth: EthernetRepr {
                dst: Mac::BROADCAST,
                src,
                ethertype: ETHERTYPE_ARP,
            },
            payload: Payload::Arp(ArpRepr {
                op: ArpOp::Request,
                sender_mac: src,
                sender_ip,
                target_mac: Mac::ZERO,
                target_ip: target,
            }),
        }
    }

    #[test]
    fn answers_arp_for_owned_vip_only() {
        let client_ip = Ipv4Addr::new(198, 18, 0, 201);
        let r = reply(&arp_request(VIP, client_ip, CLIENT), &owned(), OURS).unwrap();
        assert_eq!(r.eth.dst, CLIENT);
        assert_eq!(
            r.payload,
            Payload::Arp(ArpRepr {
                op: ArpOp::Reply,
                sender_mac: OURS,
                sender_ip: VIP,
                target_mac: CLIENT,
                target_ip: client_ip
            })
        );
        assert!(
            reply(
                &arp_request(Ipv4Addr::new(198, 18, 0, 101), client_ip, CLIENT),
                &owned(),
                OURS
            )
            .is_none()
        );
        // Our own frames and gratuitous ARPs from others are never answered.
        assert!(reply(&arp_request(VIP, client_ip, OURS), &owned(), OURS).is_none());
        assert!(reply(&arp_request(VIP, VIP, CLIENT), &owned(), OURS).is_none());
        // Unicast to us is answered; unicast to another host is not.
        let mut to_us = arp_request(VIP, client_ip, CLIENT);
        to_us.eth.dst = OURS;
        assert!(reply(&to_us, &owned(), OURS).is_some());
        let mut to_other = arp_request(VIP, client_ip, CLIENT);
        to_other.eth.dst = Mac([2, 0x18, 0, 0, 1, 7]);
        assert!(reply(&to_other, &owned(), OURS).is_none());
    }

    #[test]
    fn answers_ns_with_solicited_override_na() {
        let vip: Ipv6Addr = "fd00:198:18::100".parse().unwrap();
        let client: Ipv6Addr = "fd00:198:18::c9".parse().unwrap();
        let ns = FrameRepr {
            eth: EthernetRepr {
                dst: ipv6_multicast_mac(solicited_node(vip)),
                src: CLIENT,
                ethertype: ETHERTYPE_IPV6,
            },
            payload: Payload::Ndp(NdpRepr::Solicit {
                src_ip: client,
                dst_ip: solicited_node(vip),
                target: vip,
                source_mac: Some(CLIENT),
            }),
        };
        let r = reply(&ns, &owned(), OURS).unwrap();
        assert_eq!(r.eth.dst, CLIENT);
        assert_eq!(
            r.payload,
            Payload::Ndp(NdpRepr::Advert {
                src_ip: vip,
                dst_ip: client,
                target: vip,
                router: false,
                solicited: true,
                override_flag: true,
                target_mac: Some(OURS)
            })
        );
    }

    #[test]
    fn detects_other_mac_announcing_our_vip() {
        let garp = announcements(IpAddr::V4(VIP), CLIENT);
        for f in &garp {
            assert_eq!(
                conflict(f, &owned(), OURS),
                Some(Claim {
                    vip: IpAddr::V4(VIP),
                    their_mac: CLIENT
                })
            );
        }
        for f in announcements(IpAddr::V4(VIP), OURS) {
            assert_eq!(conflict(&f, &owned(), OURS), None);
        }
    }

    fn any_frame() -> impl Strategy<Value = FrameRepr> {
        crate::l2::wire::tests_support::frame()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Whatever arrives, a reply only ever claims an owned VIP with our MAC.
        #[test]
        fn replies_only_for_owned_with_our_mac(f in any_frame()) {
            if let Some(r) = reply(&f, &owned(), OURS) {
                prop_assert_eq!(r.eth.src, OURS);
                match r.payload {
                    Payload::Arp(a) => { prop_assert!(owned().owns(IpAddr::V4(a.sender_ip))); prop_assert_eq!(a.sender_mac, OURS); }
                    Payload::Ndp(NdpRepr::Advert { target, target_mac, .. }) => { prop_assert!(owned().owns(IpAddr::V6(target))); prop_assert_eq!(target_mac, Some(OURS)); }
                    Payload::Ndp(NdpRepr::Solicit { .. }) => prop_assert!(false, "replied with NS"),
                }
                // Replies themselves round-trip through the codec.
                prop_assert_eq!(FrameRepr::parse(&r.emit()), Ok(r));
            }
        }
    }
}
