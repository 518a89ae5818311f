//! Pure codecs for the frames the responder handles: Ethernet II carrying ARP
//! (Ethernet/IPv4 only) or ICMPv6 Neighbor Solicitation / Advertisement.
//!
//! Byte layouts come from pnet's `packet` module; this module adds checking
//! (every length and option is validated before pnet reads it, so no getter
//! can panic on hostile input) and small typed `Repr`s with symmetric
//! `parse` / `emit`. It must never do I/O, allocate per-frame state beyond the
//! returned values, or panic on any input.

use std::net::{Ipv4Addr, Ipv6Addr};

use pnet::packet::Packet;
use pnet::packet::arp::{ArpHardwareTypes, ArpOperation, ArpPacket, MutableArpPacket};
use pnet::packet::ethernet::{EtherType, EthernetPacket, MutableEthernetPacket};
use pnet::packet::icmpv6::ndp::{
    MutableNdpOptionPacket, MutableNeighborAdvertPacket, MutableNeighborSolicitPacket,
    NdpOptionPacket, NdpOptionType, NeighborAdvertPacket, NeighborSolicitPacket,
};
use pnet::packet::icmpv6::{Icmpv6Code, Icmpv6Packet, Icmpv6Type, checksum};
use pnet::packet::ip::IpNextHeaderProtocols;
use pnet::packet::ipv6::{Ipv6Packet, MutableIpv6Packet};
use pnet::util::MacAddr;

/// An Ethernet (EUI-48) MAC address.
///
/// Prints as `aa:bb:cc:dd:ee:ff` (lowercase), the form arping, `ip neigh`,
/// tshark and our logs, Events and control replies all use, so a MAC can be
/// compared with their output as text. Every 6-byte value is a valid `Mac`,
/// so the bytes are public.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// ff:ff:ff:ff:ff:ff, where gratuitous ARPs go.
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    /// 00:00:00:00:00:00: the "unknown" target hardware address of an ARP
    /// request; never a real host's source.
    pub const ZERO: Mac = Mac([0; 6]);

    /// The six bytes, in wire order.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// True for group addresses (I/G bit set), broadcast included: never the
    /// source of a frame from a real host.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl From<[u8; 6]> for Mac {
    fn from(octets: [u8; 6]) -> Mac {
        Mac(octets)
    }
}

impl From<Mac> for [u8; 6] {
    fn from(mac: Mac) -> [u8; 6] {
        mac.0
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The text form, so test failures and `?` log fields read like arping's.
impl std::fmt::Debug for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mac({self})")
    }
}

/// Text that is not six `:`-separated two-digit hex bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?} (want aa:bb:cc:dd:ee:ff)")]
pub struct MacParseError(pub String);

/// Parses `aa:bb:cc:dd:ee:ff` in either case (arping prints upper case,
/// `ip neigh` lower), exactly the form [`Display`](std::fmt::Display) writes.
impl std::str::FromStr for Mac {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Mac, MacParseError> {
        let bad = || MacParseError(s.to_string());
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for o in &mut octets {
            let part = parts.next().ok_or_else(bad)?;
            // from_str_radix alone would accept "+f" and one-digit groups.
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *o = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        match parts.next() {
            Some(_) => Err(bad()),
            None => Ok(Mac(octets)),
        }
    }
}

/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

const ETH_LEN: usize = 14;
const ARP_LEN: usize = 28;
const IPV6_LEN: usize = 40;
/// ICMPv6 NS/NA fixed part (type, code, checksum, flags/reserved, target).
const ND_LEN: usize = 24;
const ICMPV6_NS: u8 = 135;
const ICMPV6_NA: u8 = 136;
const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_TARGET_LLADDR: u8 = 2;
/// NA flags (RFC 4861 § 4.4): Router, Solicited, Override.
const NA_ROUTER: u8 = 0x80;
const NA_SOLICITED: u8 = 0x40;
const NA_OVERRIDE: u8 = 0x20;

/// Why a frame was rejected. Values, never panics: the read loop counts and drops them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the header (or the declared length) needs.
    #[error("truncated {layer}: {len} bytes")]
    Truncated {
        /// Which header was cut short.
        layer: &'static str,
        /// Bytes available.
        len: usize,
    },
    /// An EtherType this codec does not handle.
    #[error("unsupported ethertype {0:#06x}")]
    EtherType(u16),
    /// ARP for something other than Ethernet/IPv4 (htype, ptype, hlen, plen).
    #[error("unsupported ARP format htype={htype} ptype={ptype:#06x} hlen={hlen} plen={plen}")]
    ArpFormat {
        /// Hardware type.
        htype: u16,
        /// Protocol type.
        ptype: u16,
        /// Hardware address length.
        hlen: u8,
        /// Protocol address length.
        plen: u8,
    },
    /// IPv6 header problem (version, next header, hop limit).
    #[error("unsupported IPv6 packet: {0}")]
    Ipv6(&'static str),
    /// ICMPv6 other than NS/NA, or a code other than 0.
    #[error("unsupported ICMPv6 type {icmp_type} code {code}")]
    Icmpv6Type {
        /// ICMPv6 type.
        icmp_type: u8,
        /// ICMPv6 code.
        code: u8,
    },
    /// The ICMPv6 checksum does not match.
    #[error("bad ICMPv6 checksum")]
    Checksum,
    /// A malformed NDP option (zero length or running past the end).
    #[error("malformed NDP option")]
    NdpOption,
    /// The target address of NS/NA is multicast (RFC 4861 § 7.1.1).
    #[error("multicast ND target")]
    MulticastTarget,
}

/// Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    /// Destination MAC.
    pub dst: Mac,
    /// Source MAC.
    pub src: Mac,
    /// EtherType.
    pub ethertype: u16,
}

/// ARP operation; unknown values are kept, not rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOp {
    /// 1
    Request,
    /// 2
    Reply,
    /// Anything else.
    Unknown(u16),
}

impl From<u16> for ArpOp {
    fn from(v: u16) -> Self {
        match v {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            other => ArpOp::Unknown(other),
        }
    }
}

impl From<ArpOp> for u16 {
    fn from(op: ArpOp) -> u16 {
        match op {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
            ArpOp::Unknown(v) => v,
        }
    }
}

/// An Ethernet/IPv4 ARP message (RFC 826).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    /// Operation.
    pub op: ArpOp,
    /// Sender hardware address.
    pub sender_mac: Mac,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: Mac,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Parses an ARP payload (after the Ethernet header); trailing padding is ignored.
    pub fn parse(bytes: &[u8]) -> Result<ArpRepr, WireError> {
        let pkt = ArpPacket::new(bytes).ok_or(WireError::Truncated {
            layer: "arp",
            len: bytes.len(),
        })?;
        let htype = pkt.get_hardware_type();
        let ptype = pkt.get_protocol_type();
        let (hlen, plen) = (pkt.get_hw_addr_len(), pkt.get_proto_addr_len());
        if htype != ArpHardwareTypes::Ethernet || ptype.0 != 0x0800 || hlen != 6 || plen != 4 {
            return Err(WireError::ArpFormat {
                htype: htype.0,
                ptype: ptype.0,
                hlen,
                plen,
            });
        }
        Ok(ArpRepr {
            op: ArpOp::from(pkt.get_operation().0),
            sender_mac: Mac(pkt.get_sender_hw_addr().octets()),
            sender_ip: pkt.get_sender_proto_addr(),
            target_mac: Mac(pkt.get_target_hw_addr().octets()),
            target_ip: pkt.get_target_proto_addr(),
        })
    }

    /// Bytes [`ArpRepr::emit`] writes.
    pub const fn buffer_len() -> usize {
        ARP_LEN
    }

    /// Writes the message into `buf` (at least [`ArpRepr::buffer_len`] bytes).
    fn emit(&self, buf: &mut [u8]) {
        if let Some(mut pkt) = MutableArpPacket::new(buf) {
            pkt.set_hardware_type(ArpHardwareTypes::Ethernet);
            pkt.set_protocol_type(EtherType(0x0800));
            pkt.set_hw_addr_len(6);
            pkt.set_proto_addr_len(4);
            pkt.set_operation(ArpOperation(self.op.into()));
            pkt.set_sender_hw_addr(MacAddr::from(self.sender_mac.octets()));
            pkt.set_sender_proto_addr(self.sender_ip);
            pkt.set_target_hw_addr(MacAddr::from(self.target_mac.octets()));
            pkt.set_target_proto_addr(self.target_ip);
        }
    }

    /// True for a gratuitous ARP (sender IP = target IP, RFC 5227 announcement).
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }
}

/// An NDP message with its IPv6 addressing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdpRepr {
    /// Neighbor Solicitation.
    Solicit {
        /// IPv6 source (:: for DAD).
        src_ip: Ipv6Addr,
        /// IPv6 destination (usually the solicited-node group).
        dst_ip: Ipv6Addr,
        /// The address being resolved.
        target: Ipv6Addr,
        /// Source link-layer address option.
        source_mac: Option<Mac>,
    },
    /// Neighbor Advertisement.
    Advert {
        /// IPv6 source.
        src_ip: Ipv6Addr,
        /// IPv6 destination.
        dst_ip: Ipv6Addr,
        /// The address advertised.
        target: Ipv6Addr,
        /// R flag.
        router: bool,
        /// S flag.
        solicited: bool,
        /// O flag.
        override_flag: bool,
        /// Target link-layer address option.
        target_mac: Option<Mac>,
    },
}

impl NdpRepr {
    /// Parses an IPv6 packet (after the Ethernet header) carrying NS or NA;
    /// checks hop limit 255, code 0, checksum and options.
    pub fn parse(bytes: &[u8]) -> Result<NdpRepr, WireError> {
        let ip = Ipv6Packet::new(bytes).ok_or(WireError::Truncated {
            layer: "ipv6",
            len: bytes.len(),
        })?;
        if ip.get_version() != 6 {
            return Err(WireError::Ipv6("version is not 6"));
        }
        if ip.get_next_header() != IpNextHeaderProtocols::Icmpv6 {
            return Err(WireError::Ipv6("next header is not ICMPv6"));
        }
        if ip.get_hop_limit() != 255 {
            return Err(WireError::Ipv6("hop limit is not 255"));
        }
        let payload_len = ip.get_payload_length() as usize;
        let icmp = bytes
            .get(IPV6_LEN..IPV6_LEN + payload_len)
            .ok_or(WireError::Truncated {
                layer: "ipv6 payload",
                len: bytes.len(),
            })?;
        if icmp.len() < ND_LEN {
            return Err(WireError::Truncated {
                layer: "icmpv6 nd",
                len: icmp.len(),
            });
        }
        let (src_ip, dst_ip) = (ip.get_source(), ip.get_destination());
        let icmp_pkt = Icmpv6Packet::new(icmp).ok_or(WireError::Truncated {
            layer: "icmpv6",
            len: icmp.len(),
        })?;
        let (icmp_type, code) = (icmp_pkt.get_icmpv6_type().0, icmp_pkt.get_icmpv6_code().0);
        if code != 0 || (icmp_type != ICMPV6_NS && icmp_type != ICMPV6_NA) {
            return Err(WireError::Icmpv6Type { icmp_type, code });
        }
        if checksum(&icmp_pkt, &src_ip, &dst_ip) != icmp_pkt.get_checksum() {
            return Err(WireError::Checksum);
        }
        let wanted = if icmp_type == ICMPV6_NS {
            OPT_SOURCE_LLADDR
        } else {
            OPT_TARGET_LLADDR
        };
        let lladdr = parse_lladdr_option(&icmp[ND_LEN..], wanted)?;
        if icmp_type == ICMPV6_NS {
            let ns = NeighborSolicitPacket::new(icmp).ok_or(WireError::Truncated {
                layer: "ns",
                len: icmp.len(),
            })?;
            let target = ns.get_target_addr();
            if target.is_multicast() {
                return Err(WireError::MulticastTarget);
            }
            Ok(NdpRepr::Solicit {
                src_ip,
                dst_ip,
                target,
                source_mac: lladdr,
            })
        } else {
            let na = NeighborAdvertPacket::new(icmp).ok_or(WireError::Truncated {
                layer: "na",
                len: icmp.len(),
            })?;
            let target = na.get_target_addr();
            if target.is_multicast() {
                return Err(WireError::MulticastTarget);
            }
            let flags = na.get_flags();
            Ok(NdpRepr::Advert {
                src_ip,
                dst_ip,
                target,
                router: flags & NA_ROUTER != 0,
                solicited: flags & NA_SOLICITED != 0,
                override_flag: flags & NA_OVERRIDE != 0,
                target_mac: lladdr,
            })
        }
    }

    /// Bytes [`NdpRepr::emit`] writes (IPv6 header + NS/NA + one lladdr option).
    pub fn buffer_len(&self) -> usize {
        let has_opt = match self {
            NdpRepr::Solicit { source_mac, .. } => source_mac.is_some(),
            NdpRepr::Advert { target_mac, .. } => target_mac.is_some(),
        };
        IPV6_LEN + ND_LEN + if has_opt { 8 } else { 0 }
    }

    fn emit(&self, buf: &mut [u8]) {
        let len = self.buffer_len();
        let (src_ip, dst_ip) = match *self {
            NdpRepr::Solicit { src_ip, dst_ip, .. } | NdpRepr::Advert { src_ip, dst_ip, .. } => {
                (src_ip, dst_ip)
            }
        };
        if let Some(mut ip) = MutableIpv6Packet::new(&mut buf[..IPV6_LEN]) {
            ip.set_version(6);
            ip.set_traffic_class(0);
            ip.set_flow_label(0);
            ip.set_payload_length((len - IPV6_LEN) as u16);
            ip.set_next_header(IpNextHeaderProtocols::Icmpv6);
            ip.set_hop_limit(255);
            ip.set_source(src_ip);
            ip.set_destination(dst_ip);
        }
        let icmp = &mut buf[IPV6_LEN..len];
        match *self {
            NdpRepr::Solicit {
                target, source_mac, ..
            } => {
                if let Some(mut ns) = MutableNeighborSolicitPacket::new(&mut icmp[..]) {
                    ns.set_icmpv6_type(Icmpv6Type(ICMPV6_NS));
                    ns.set_icmpv6_code(Icmpv6Code(0));
                    ns.set_checksum(0);
                    ns.set_reserved(0);
                    ns.set_target_addr(target);
                }
                if let Some(mac) = source_mac {
                    emit_lladdr_option(&mut icmp[ND_LEN..], OPT_SOURCE_LLADDR, mac);
                }
            }
            NdpRepr::Advert {
                target,
                router,
                solicited,
                override_flag,
                target_mac,
                ..
            } => {
                if let Some(mut na) = MutableNeighborAdvertPacket::new(&mut icmp[..]) {
                    na.set_icmpv6_type(Icmpv6Type(ICMPV6_NA));
                    na.set_icmpv6_code(Icmpv6Code(0));
                    na.set_checksum(0);
                    let mut flags = 0;
                    if router {
                        flags |= NA_ROUTER;
                    }
                    if solicited {
                        flags |= NA_SOLICITED;
                    }
                    if override_flag {
                        flags |= NA_OVERRIDE;
                    }
                    na.set_flags(flags);
                    na.set_reserved(0);
                    na.set_target_addr(target);
                }
                if let Some(mac) = target_mac {
                    emit_lladdr_option(&mut icmp[ND_LEN..], OPT_TARGET_LLADDR, mac);
                }
            }
        }
        let sum = Icmpv6Packet::new(icmp).map(|p| checksum(&p, &src_ip, &dst_ip));
        if let (Some(sum), Some(mut p)) =
            (sum, pnet::packet::icmpv6::MutableIcmpv6Packet::new(icmp))
        {
            p.set_checksum(sum);
        }
    }
}

/// Walks NDP options (each length-checked before pnet reads it) and returns
/// the first link-layer address option of type `wanted`.
fn parse_lladdr_option(mut opts: &[u8], wanted: u8) -> Result<Option<Mac>, WireError> {
    let mut found = None;
    while !opts.is_empty() {
        let opt = NdpOptionPacket::new(opts).ok_or(WireError::NdpOption)?;
        let len = opt.get_length() as usize * 8;
        if len == 0 || len > opts.len() {
            return Err(WireError::NdpOption);
        }
        if opt.get_option_type() == NdpOptionType(wanted) && found.is_none() {
            // An Ethernet lladdr option is exactly 8 bytes (RFC 4861 § 4.6.1).
            if len != 8 {
                return Err(WireError::NdpOption);
            }
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&opts[2..8]);
            found = Some(Mac(mac));
        }
        opts = &opts[len..];
    }
    Ok(found)
}

fn emit_lladdr_option(buf: &mut [u8], kind: u8, mac: Mac) {
    if let Some(mut opt) = MutableNdpOptionPacket::new(&mut buf[..8]) {
        opt.set_option_type(NdpOptionType(kind));
        opt.set_length(1);
        opt.set_data(&mac.octets());
    }
}

/// The payload of a frame this codec understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// ARP.
    Arp(ArpRepr),
    /// NS or NA.
    Ndp(NdpRepr),
}

/// An Ethernet frame carrying ARP or NDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRepr {
    /// Ethernet header (its ethertype matches the payload).
    pub eth: EthernetRepr,
    /// ARP or NDP.
    pub payload: Payload,
}

impl FrameRepr {
    /// Parses a whole Ethernet frame.
    pub fn parse(bytes: &[u8]) -> Result<FrameRepr, WireError> {
        let eth = EthernetPacket::new(bytes).ok_or(WireError::Truncated {
            layer: "ethernet",
            len: bytes.len(),
        })?;
        let repr = EthernetRepr {
            dst: Mac(eth.get_destination().octets()),
            src: Mac(eth.get_source().octets()),
            ethertype: eth.get_ethertype().0,
        };
        let payload = match repr.ethertype {
            ETHERTYPE_ARP => Payload::Arp(ArpRepr::parse(eth.payload())?),
            ETHERTYPE_IPV6 => Payload::Ndp(NdpRepr::parse(eth.payload())?),
            other => return Err(WireError::EtherType(other)),
        };
        Ok(FrameRepr { eth: repr, payload })
    }

    /// Bytes [`FrameRepr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        ETH_LEN
            + match &self.payload {
                Payload::Arp(_) => ArpRepr::buffer_len(),
                Payload::Ndp(n) => n.buffer_len(),
            }
    }

    /// Serialises the frame (the ethertype is taken from the payload kind).
    pub fn emit(&self) -> Vec<u8> {
        let mut buf = vec![0u8; self.buffer_len()];
        let ethertype = match self.payload {
            Payload::Arp(_) => ETHERTYPE_ARP,
            Payload::Ndp(_) => ETHERTYPE_IPV6,
        };
        if let Some(mut eth) = MutableEthernetPacket::new(&mut buf[..ETH_LEN]) {
            eth.set_destination(MacAddr::from(self.eth.dst.octets()));
            eth.set_source(MacAddr::from(self.eth.src.octets()));
            eth.set_ethertype(EtherType(ethertype));
        }
        match &self.payload {
            Payload::Arp(a) => a.emit(&mut buf[ETH_LEN..]),
            Payload::Ndp(n) => n.emit(&mut buf[ETH_LEN..]),
        }
        buf
    }
}

/// The solicited-node multicast address of `ip` (ff02::1:ffXX:XXXX).
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | o[13] as u16,
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The Ethernet multicast MAC for an IPv6 multicast group (33:33 + low 32 bits).
pub fn ipv6_multicast_mac(group: Ipv6Addr) -> Mac {
    let o = group.octets();
    Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// ff02::1, all nodes.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Proptest strategies shared by the codec and decision tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use proptest::prelude::*;

    fn mac() -> impl Strategy<Value = Mac> {
        any::<[u8; 6]>().prop_map(Mac)
    }
    fn v6() -> impl Strategy<Value = Ipv6Addr> {
        any::<u128>().prop_map(Ipv6Addr::from)
    }
    fn unicast_v6() -> impl Strategy<Value = Ipv6Addr> {
        v6().prop_filter("not multicast", |a| !a.is_multicast())
    }

    /// Any frame the codec can represent.
    pub(crate) fn frame() -> impl Strategy<Value = FrameRepr> {
        let arp = (any::<u16>(), mac(), any::<u32>(), mac(), any::<u32>()).prop_map(
            |(op, sm, si, tm, ti)| {
                Payload::Arp(ArpRepr {
                    op: ArpOp::from(op),
                    sender_mac: sm,
                    sender_ip: Ipv4Addr::from(si),
                    target_mac: tm,
                    target_ip: Ipv4Addr::from(ti),
                })
            },
        );
        let ns = (v6(), v6(), unicast_v6(), proptest::option::of(mac())).prop_map(
            |(src_ip, dst_ip, target, source_mac)| {
                Payload::Ndp(NdpRepr::Solicit {
                    src_ip,
                    dst_ip,
                    target,
                    source_mac,
                })
            },
        );
        let na = (
            v6(),
            v6(),
            unicast_v6(),
            any::<[bool; 3]>(),
            proptest::option::of(mac()),
        )
            .prop_map(|(src_ip, dst_ip, target, f, target_mac)| {
                Payload::Ndp(NdpRepr::Advert {
                    src_ip,
                    dst_ip,
                    target,
                    router: f[0],
                    solicited: f[1],
                    override_flag: f[2],
                    target_mac,
                })
            });
        (mac(), mac(), prop_oneof![arp, ns, na]).prop_map(|(dst, src, payload)| {
            let ethertype = match payload {
                Payload::Arp(_) => ETHERTYPE_ARP,
                Payload::Ndp(_) => ETHERTYPE_IPV6,
            };
            FrameRepr {
                eth: EthernetRepr {
                    dst,
                    src,
                    ethertype,
                },
                payload,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::frame;
    use super::*;
    use proptest::prelude::*;

    /// An ARP request captured from the kernel (client 198.18.0.201 asking for .11).
    const ARP_REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x18, 0, 0, 2, 0, 0x08, 0x06, // eth
        0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, // htype ptype hlen plen op
        0x02, 0x18, 0, 0, 2, 0, 198, 18, 0, 201, // sender
        0, 0, 0, 0, 0, 0, 198, 18, 0, 11, // target
    ];

    #[test]
    fn parses_fixed_arp_request() {
        let f = FrameRepr::parse(&ARP_REQUEST).unwrap();
        assert_eq!(f.eth.dst, Mac::BROADCAST);
        let Payload::Arp(a) = f.payload else {
            panic!("not ARP")
        };
        assert_eq!(a.op, ArpOp::Request);
        assert_eq!(a.sender_ip, Ipv4Addr::new(198, 18, 0, 201));
        assert_eq!(a.target_ip, Ipv4Addr::new(198, 18, 0, 11));
        assert_eq!(f.emit(), ARP_REQUEST.to_vec());
    }

    #[test]
    fn padded_arp_is_accepted_and_non_ethernet_arp_rejected() {
        let mut padded = ARP_REQUEST.to_vec();
        padded.resize(60, 0);
        assert!(FrameRepr::parse(&padded).is_ok());
        let mut bad = ARP_REQUEST;
        bad[18] = 8; // hlen
        assert!(matches!(
            FrameRepr::parse(&bad),
            Err(WireError::ArpFormat { hlen: 8, .. })
        ));
        assert!(matches!(
            FrameRepr::parse(&ARP_REQUEST[..30]),
            Err(WireError::Truncated { .. })
        ));
    }

    #[test]
    fn ns_checksum_is_checked() {
        let ns = FrameRepr {
            eth: EthernetRepr {
                dst: Mac([0x33, 0x33, 0xff, 0, 1, 0]),
                src: Mac([2, 0x18, 0, 0, 2, 0]),
                ethertype: ETHERTYPE_IPV6,
            },
            payload: Payload::Ndp(NdpRepr::Solicit {
                src_ip: "fd00:198:18::c9".parse().unwrap(),
                dst_ip: solicited_node("fd00:198:18::100".parse().unwrap()),
                target: "fd00:198:18::100".parse().unwrap(),
                source_mac: Some(Mac([2, 0x18, 0, 0, 2, 0])),
            }),
        };
        let mut bytes = ns.emit();
        assert_eq!(FrameRepr::parse(&bytes).unwrap(), ns);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(FrameRepr::parse(&bytes), Err(WireError::Checksum));
    }

    #[test]
    fn mac_prints_and_parses_like_ip_neigh() {
        let mac = Mac([0x02, 0x18, 0, 0xab, 1, 0xff]);
        assert_eq!(mac.to_string(), "02:18:00:ab:01:ff");
        assert_eq!(format!("{mac:?}"), "Mac(02:18:00:ab:01:ff)");
        assert_eq!("02:18:00:ab:01:ff".parse(), Ok(mac));
        // arping prints upper case.
        assert_eq!("02:18:00:AB:01:FF".parse(), Ok(mac));
        assert_eq!(Mac::BROADCAST.to_string(), "ff:ff:ff:ff:ff:ff");
        for bad in [
            "",
            "02:18:00:ab:01",
            "02:18:00:ab:01:ff:00",
            "02:18:00:ab:01:f",
            "02:18:00:ab:01:+f",
            "02-18-00-ab-01-ff",
            "02:18:00:ab:01:fg",
            "02:18:00:ab:01:ff:",
        ] {
            assert_eq!(
                bad.parse::<Mac>(),
                Err(MacParseError(bad.to_string())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn multicast_is_the_group_bit() {
        assert!(Mac::BROADCAST.is_multicast());
        assert!(ipv6_multicast_mac(ALL_NODES).is_multicast());
        assert!(!Mac([0x02, 0x18, 0, 0, 1, 0]).is_multicast());
        assert!(!Mac::ZERO.is_multicast());
    }

    #[test]
    fn zero_length_option_is_rejected() {
        assert_eq!(
            parse_lladdr_option(&[1, 0, 0, 0, 0, 0, 0, 0], 1),
            Err(WireError::NdpOption)
        );
        assert_eq!(
            parse_lladdr_option(&[1, 2, 0, 0, 0, 0, 0, 0], 1),
            Err(WireError::NdpOption)
        );
        assert_eq!(
            parse_lladdr_option(&[9, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 3, 4, 5, 6], 1),
            Ok(Some(Mac([1, 2, 3, 4, 5, 6])))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn round_trip(f in frame()) {
            let bytes = f.emit();
            prop_assert_eq!(bytes.len(), f.buffer_len());
            prop_assert_eq!(FrameRepr::parse(&bytes), Ok(f));
        }

        #[test]
        fn mac_text_round_trips(bytes in any::<[u8; 6]>()) {
            let mac = Mac(bytes);
            prop_assert_eq!(mac.to_string().parse::<Mac>(), Ok(mac));
            prop_assert_eq!(mac.to_string().to_uppercase().parse::<Mac>(), Ok(mac));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = FrameRepr::parse(&bytes);
        }

        #[test]
        fn arbitrary_arp_and_ipv6_bodies_never_panic(
            ipv6 in any::<bool>(),
            body in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut bytes = vec![0xff; 12];
            bytes.extend_from_slice(if ipv6 { &[0x86, 0xdd] } else { &[0x08, 0x06] });
            bytes.extend_from_slice(&body);
            if ipv6 && bytes.len() > 54 {
                // Mostly-plausible IPv6 NDP header so the deeper checks run.
                bytes[14] = 0x60;
                bytes[20] = 58;
                bytes[21] = 255;
                bytes[54] = 135 + (body[0] & 1);
            }
            let _ = FrameRepr::parse(&bytes);
        }

        #[test]
        fn mutated_valid_frames_never_panic(f in frame(), idx in any::<usize>(), val in any::<u8>(), cut in any::<usize>()) {
            let mut bytes = f.emit();
            let i = idx % bytes.len();
            bytes[i] = val;
            let _ = FrameRepr::parse(&bytes);
            bytes.truncate(cut % (bytes.len() + 1));
            let _ = FrameRepr::parse(&bytes);
        }
    }
}
