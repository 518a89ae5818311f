//! What the responder puts on the wire: tshark decodes every frame cleanly,
//! and a flood of malformed frames gets no reply and no crash.

mod l2_common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use l2_common::{Responder, arping, mac};
use l2lb::l2::wire::{
    ArpOp, ArpRepr, ETHERTYPE_ARP, ETHERTYPE_IPV6, EthernetRepr, FrameRepr, Mac, NdpRepr, Payload,
    ipv6_multicast_mac, solicited_node,
};
use l2lb::lab::frame_prober::FrameProber;
use l2lb::lab::net::{Capture, Lan, LanOptions, in_namespace, require_netns};
use rand::Rng;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 0x100);

#[test]
fn tshark_decodes_replies_garps_and_nas_cleanly() {
    if !require_netns("tshark_decodes_replies_garps_and_nas_cleanly") {
        return;
    }
    let lan = Lan::new(
        "l2tshark",
        LanOptions {
            nodes: 1,
            clients: 1,
            ipv6: true,
        },
    )
    .unwrap();
    let (node, client) = (&lan.nodes()[0], &lan.clients()[0]);
    let dir = std::env::temp_dir().join(format!("l2lb-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("client.pcap");
    let cap = client.capture(&lan, &pcap).expect("start tshark");
    let _r = Responder::start(&lan, node, &[&VIP.to_string(), &VIP6.to_string()]);
    assert!(arping(client, &VIP.to_string(), &["-c", "2"]).0);
    client
        .run(&[
            "ndisc6",
            "-1",
            "-r",
            "3",
            "-w",
            "500",
            &VIP6.to_string(),
            &client.iface,
        ])
        .expect("ndisc6");
    // Let the whole announcement burst (0..2 s) pass.
    std::thread::sleep(Duration::from_millis(2300));
    let pcap = cap.stop().unwrap();
    let m = mac(node);
    let count = |filter: &str| {
        Capture::decode(
            &pcap,
            &format!("eth.src == {m} && {filter}"),
            &["frame.number"],
        )
        .unwrap()
        .lines()
        .count()
    };
    assert!(
        count("arp.opcode == 2 && !arp.isgratuitous && arp.src.proto_ipv4 == 198.18.0.100") >= 2,
        "no ARP replies"
    );
    assert!(
        count("arp.isgratuitous && arp.opcode == 1") >= 5,
        "GARP requests missing"
    );
    assert!(
        count("arp.isgratuitous && arp.opcode == 2 && arp.dst.hw_mac == eth.src") >= 5,
        "GARP replies missing"
    );
    assert!(
        count("icmpv6.type == 136 && icmpv6.nd.na.flag.o == 1 && ipv6.dst == ff02::1") >= 5,
        "unsolicited NAs missing"
    );
    assert!(
        count(
            "icmpv6.type == 136 && icmpv6.nd.na.flag.s == 1 && icmpv6.checksum.status == \"Good\""
        ) >= 1,
        "solicited NA missing"
    );
    let problems = Capture::decode(
        &pcap,
        &format!("eth.src == {m} && (_ws.malformed || _ws.expert.severity >= 0x00600000)"),
        &["frame.number", "_ws.expert.message"],
    )
    .unwrap();
    assert!(
        problems.trim().is_empty(),
        "tshark problems in our frames:\n{problems}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn garbage(rng: &mut impl Rng) -> Vec<Vec<u8>> {
    let src = Mac([0x02, 0x18, 0x00, 0x00, 0x02, rng.random::<u8>() | 0x80]);
    let arp = |hlen: u8, ptype: u16| {
        let f = FrameRepr {
            eth: EthernetRepr {
                dst: Mac::BROADCAST,
                src,
                ethertype: ETHERTYPE_ARP,
            },
            payload: Payload::Arp(ArpRepr {
                op: ArpOp::Request,
                sender_mac: src,
                sender_ip: Ipv4Addr::new(198, 18, 0, 201),
                target_mac: Mac::ZERO,
                target_ip: VIP,
            }),
        };
        let mut b = f.emit();
        b[18] = hlen;
        b[16..18].copy_from_slice(&ptype.to_be_bytes());
        b
    };
    let ns = FrameRepr {
        eth: EthernetRepr {
            dst: ipv6_multicast_mac(solicited_node(VIP6)),
            src,
            ethertype: ETHERTYPE_IPV6,
        },
        payload: Payload::Ndp(NdpRepr::Solicit {
            src_ip: "fd00:198:18::c9".parse().unwrap(),
            dst_ip: solicited_node(VIP6),
            target: VIP6,
            source_mac: Some(src),
        }),
    }
    .emit();
    let mut bad_sum = ns.clone();
    bad_sum[14 + 40 + 2] ^= 0xff;
    let mut bad_hop = ns.clone();
    bad_hop[14 + 7] = 64;
    let mut zero_opt = ns.clone();
    zero_opt[14 + 40 + 24 + 1] = 0;
    let mut random: Vec<u8> = (0..rng.random_range(0..100))
        .map(|_| rng.random())
        .collect();
    let mut header = vec![0xff; 6];
    header.extend_from_slice(&src.octets());
    header.extend_from_slice(if rng.random() {
        &[0x08, 0x06]
    } else {
        &[0x86, 0xdd]
    });
    header.append(&mut random);
    vec![
        arp(8, 0x0800),
        arp(6, 0x86dd),
        arp(6, 0x0800)[..34].to_vec(),
        bad_sum,
        bad_hop,
        zero_opt,
        ns[..70].to_vec(),
        header,
    ]
}

#[test]
fn malformed_flood_gets_no_reply_and_no_crash() {
    if !require_netns("malformed_flood_gets_no_reply_and_no_crash") {
        return;
    }
    let lan = Lan::new(
        "l2flood",
        LanOptions {
            nodes: 1,
            clients: 1,
            ipv6: true,
        },
    )
    .unwrap();
    let (node, client) = (&lan.nodes()[0], &lan.clients()[0]);
    let mut r = Responder::start(&lan, node, &[&VIP.to_string(), &VIP6.to_string()]);
    let iface = client.iface.clone();
    let prober = in_namespace(&client.ns, move || FrameProber::open(&iface))
        .unwrap()
        .expect("prober");
    // Let the announcement burst finish so every later frame from the node is a reply.
    std::thread::sleep(Duration::from_millis(2200));
    let mut buf = [0u8; 2048];
    while prober
        .recv_timeout(&mut buf, Duration::from_millis(100))
        .unwrap()
        .is_some()
    {}
    let before = r.stats();
    let mut rng = rand::rng();
    let mut sent = 0u64;
    for _ in 0..1000 {
        for frame in garbage(&mut rng) {
            prober.send(&frame).unwrap();
            sent += 1;
        }
    }
    // Drain what came back: nothing from the node may be an answer.
    let node_mac = node.mac;
    let mut from_node = 0;
    while let Some(n) = prober
        .recv_timeout(&mut buf, Duration::from_millis(500))
        .unwrap()
    {
        if buf[6..12] == node_mac.octets() && n > 0 {
            eprintln!("from node: {:?}", FrameRepr::parse(&buf[..n]));
            from_node += 1;
        }
    }
    let after = r.stats();
    assert!(r.handle.is_running(), "responder died");
    assert_eq!(from_node, 0, "node answered malformed frames");
    assert_eq!(
        after["responses_sent"], before["responses_sent"],
        "replies to malformed frames"
    );
    let malformed = after["malformed"].as_u64().unwrap() - before["malformed"].as_u64().unwrap();
    assert!(
        malformed >= sent * 6 / 8,
        "only {malformed} of {sent} frames counted malformed"
    );
    // Still answering valid requests.
    assert!(arping(client, &VIP.to_string(), &["-c", "1"]).0);
    let _ = IpAddr::V4(VIP);
}
