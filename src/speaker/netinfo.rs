//! The node's own interfaces, the one holding the node's address, and the
//! default-route interface, read from procfs/sysfs and getifaddrs.
//!
//! Owns only discovery of names; the parsers are pure and tested on fixed
//! text. It must never change any network configuration.

use std::collections::BTreeSet;
use std::net::IpAddr;

/// The first interface in `interfaces` (name, addresses) holding one of
/// `wanted`, trying `wanted` in order (the Node's first InternalIP wins).
pub fn interface_holding<'a>(
    interfaces: &'a [(String, Vec<IpAddr>)],
    wanted: &[IpAddr],
) -> Option<&'a str> {
    wanted.iter().find_map(|ip| {
        interfaces
            .iter()
            .find(|(name, addrs)| name != "lo" && addrs.contains(ip))
            .map(|(name, _)| name.as_str())
    })
}

/// The interface of this network namespace that holds one of `ips`.
pub fn interface_with_address(ips: &[IpAddr]) -> Option<String> {
    let all: Vec<(String, Vec<IpAddr>)> = pnet::datalink::interfaces()
        .into_iter()
        .map(|i| (i.name, i.ips.iter().map(|n| n.ip()).collect()))
        .collect();
    interface_holding(&all, ips).map(str::to_string)
}

/// Interface of the first IPv4 default route in `/proc/net/route` text.
pub fn default_route_v4(proc_net_route: &str) -> Option<String> {
    proc_net_route.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        (f.len() >= 8 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_string())
    })
}

/// Interface of the first IPv6 default route in `/proc/net/ipv6_route` text.
pub fn default_route_v6(proc_net_ipv6_route: &str) -> Option<String> {
    proc_net_ipv6_route.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // dest dest_len src src_len next_hop metric refcnt use flags iface
        let default = f.len() >= 10 && f[0].chars().all(|c| c == '0') && f[1] == "00";
        (default && f[9] != "lo").then(|| f[9].to_string())
    })
}

/// The default-route interface of this network namespace (IPv4 first).
pub fn default_interface() -> Option<String> {
    std::fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|t| default_route_v4(&t))
        .or_else(|| {
            std::fs::read_to_string("/proc/net/ipv6_route")
                .ok()
                .and_then(|t| default_route_v6(&t))
        })
}

/// Names of this network namespace's interfaces that are up and hold an
/// address, except loopback: where a LAN, and so an announcement, can be.
pub fn addressed_interfaces() -> BTreeSet<String> {
    pnet::datalink::interfaces()
        .into_iter()
        .filter(|i| i.is_up() && !i.is_loopback() && !i.ips.is_empty())
        .map(|i| i.name)
        .collect()
}

/// Of `interfaces`, those whose link can carry announcements now: present,
/// administratively up and operational (`IFF_RUNNING`: carrier, RFC 2863
/// "up"). A NIC unplugged or a link set down drops out at once, so its
/// VIPs are released and peers see it in our Lease.
pub fn usable_links(interfaces: &BTreeSet<String>) -> BTreeSet<String> {
    let links: Vec<(String, bool)> = pnet::datalink::interfaces()
        .into_iter()
        .map(|i| {
            let usable = i.is_up() && i.is_running();
            (i.name, usable)
        })
        .collect();
    links_usable(interfaces, &links)
}

/// The pure part of [`usable_links`]: `links` is every present interface
/// with whether its link is usable.
pub fn links_usable(interfaces: &BTreeSet<String>, links: &[(String, bool)]) -> BTreeSet<String> {
    interfaces
        .iter()
        .filter(|name| links.iter().any(|(n, usable)| n == *name && *usable))
        .cloned()
        .collect()
}

/// The MACs of those of `interfaces` that are present (published on our
/// Lease so peers can tell our frames from a stranger's).
pub fn macs(interfaces: &BTreeSet<String>) -> BTreeSet<crate::l2::Mac> {
    pnet::datalink::interfaces()
        .into_iter()
        .filter(|i| interfaces.contains(&i.name))
        .filter_map(|i| i.mac)
        .map(|m| crate::l2::Mac([m.0, m.1, m.2, m.3, m.4, m.5]))
        .collect()
}

/// Names of this network namespace's interfaces, except `lo`.
pub fn interfaces() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n != "lo")
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_interface_holding_the_first_node_address() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let ifaces = vec![
            ("lo".to_string(), vec![ip("198.18.0.11")]),
            ("eth0".to_string(), vec![ip("198.19.0.5")]),
            ("eth1".to_string(), vec![ip("198.18.0.11"), ip("fd00::11")]),
        ];
        assert_eq!(
            interface_holding(&ifaces, &[ip("198.18.0.11")]),
            Some("eth1")
        );
        assert_eq!(
            interface_holding(&ifaces, &[ip("198.18.9.9"), ip("198.19.0.5")]),
            Some("eth0")
        );
        assert_eq!(interface_holding(&ifaces, &[ip("198.18.9.9")]), None);
    }

    #[test]
    fn only_present_running_links_are_usable() {
        let want: BTreeSet<String> = ["eth0", "eth1", "eth2"].map(String::from).into();
        let links = [
            ("eth0".to_string(), true),
            ("eth1".to_string(), false),
            ("lo".to_string(), true),
        ];
        assert_eq!(
            links_usable(&want, &links),
            BTreeSet::from(["eth0".to_string()])
        );
    }

    #[test]
    fn parses_ipv4_default_route() {
        let t = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth1\t0012C6C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                 eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_v4(t), Some("eth0".into()));
        assert_eq!(default_route_v4("Iface\tDestination\n"), None);
    }

    #[test]
    fn parses_ipv6_default_route() {
        let t = "fd000198001800000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth1\n\
                 00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n";
        assert_eq!(default_route_v6(t), Some("eth0".into()));
    }
}
