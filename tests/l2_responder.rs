//! The L2 responder in a real LAN of network namespaces: arping/ndisc6 from a
//! client, kernel neighbour tables, GARP takeover, link flaps, garbage floods.

mod l2_common;

use std::time::Duration;

use l2_common::{Responder, arping, eventually, mac, neigh_mac};
use l2lb::lab::net::{Lan, LanOptions, require_netns};

const VIP: &str = "198.18.0.100";
const VIP6: &str = "fd00:198:18::100";

fn lan(tag: &str) -> Lan {
    Lan::new(
        tag,
        LanOptions {
            nodes: 2,
            clients: 1,
            ipv6: true,
        },
    )
    .expect("build LAN")
}

#[test]
fn arping_resolves_vip_without_duplicates_and_ignores_others() {
    if !require_netns("arping_resolves_vip_without_duplicates_and_ignores_others") {
        return;
    }
    let lan = lan("l2arp");
    let (node, client) = (&lan.nodes()[0], &lan.clients()[0]);
    let mut r = Responder::start(&lan, node, &[VIP]);
    let (ok, out) = arping(client, VIP, &["-c", "3"]);
    assert!(ok, "arping failed: {out}");
    assert!(out.contains(&mac(node)), "{out}");
    let (ok, out) = arping(client, VIP, &["-d", "-c", "3"]);
    assert!(ok, "arping -d reports a duplicate or no answer: {out}");
    // An address nobody announced gets no answer.
    let (ok, out) = arping(client, "198.18.0.101", &["-c", "2"]);
    assert!(!ok, "unannounced address answered: {out}");
    let stats = r.stats();
    assert!(stats["responses_sent"].as_u64().unwrap() >= 6, "{stats}");
    // Withdraw stops answering at once.
    assert_eq!(r.cmd(&format!("withdraw {VIP}")), "ok");
    let (ok, out) = arping(client, VIP, &["-c", "2"]);
    assert!(!ok, "withdrawn VIP still answered: {out}");
    assert_eq!(r.cmd(&format!("announce {VIP}")), "ok");
    let (ok, _) = arping(client, VIP, &["-c", "1"]);
    assert!(ok);
}

#[test]
fn ipv6_vip_resolved_by_ndisc6_and_kernel() {
    if !require_netns("ipv6_vip_resolved_by_ndisc6_and_kernel") {
        return;
    }
    let lan = lan("l2ndp");
    let (node, client) = (&lan.nodes()[0], &lan.clients()[0]);
    let _r = Responder::start(&lan, node, &[VIP6]);
    let out = client
        .run(&["ndisc6", "-1", "-r", "3", "-w", "500", VIP6, &client.iface])
        .expect("ndisc6");
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(text.contains(&mac(node)), "ndisc6: {text}");
    // The client's kernel resolves it too (the ping itself has no one to answer it).
    let _ = client.run(&["ping", "-6", "-c", "1", "-W", "1", VIP6]);
    assert!(
        eventually(Duration::from_secs(5), || neigh_mac(client, VIP6)
            .as_deref()
            == Some(&mac(node))),
        "client neighbour entry: {:?}",
        neigh_mac(client, VIP6)
    );
    // An unannounced IPv6 address gets no answer.
    assert!(
        client
            .run(&[
                "ndisc6",
                "-1",
                "-r",
                "2",
                "-w",
                "300",
                "fd00:198:18::101",
                &client.iface
            ])
            .is_err()
    );
}

#[test]
fn garp_moves_client_cache_to_new_owner() {
    if !require_netns("garp_moves_client_cache_to_new_owner") {
        return;
    }
    let lan = lan("l2garp");
    let (a, b, client) = (&lan.nodes()[0], &lan.nodes()[1], &lan.clients()[0]);
    let mut ra = Responder::start(&lan, a, &[VIP, VIP6]);
    let _ = client.run(&["ping", "-c", "1", "-W", "1", VIP]);
    let _ = client.run(&["ping", "-6", "-c", "1", "-W", "1", VIP6]);
    assert_eq!(neigh_mac(client, VIP).as_deref(), Some(mac(a).as_str()));
    assert!(eventually(Duration::from_secs(5), || neigh_mac(
        client, VIP6
    )
    .as_deref()
        == Some(&mac(a))));
    assert_eq!(ra.cmd("withdraw-all"), "ok");
    let mut rb = Responder::start(&lan, b, &[VIP, VIP6]);
    assert!(
        eventually(Duration::from_secs(5), || neigh_mac(client, VIP).as_deref()
            == Some(&mac(b))),
        "client still on {:?}",
        neigh_mac(client, VIP)
    );
    assert!(
        eventually(Duration::from_secs(5), || neigh_mac(client, VIP6)
            .as_deref()
            == Some(&mac(b))),
        "client (v6) still on {:?}",
        neigh_mac(client, VIP6)
    );
    // Node A hears B's announcements; it no longer owns the VIP, so no conflict.
    assert!(rb.stats()["gratuitous_sent"].as_u64().unwrap() >= 3);
    assert_eq!(ra.stats()["conflicts"].as_u64().unwrap(), 0);
}

#[test]
fn conflicting_announcer_is_detected() {
    if !require_netns("conflicting_announcer_is_detected") {
        return;
    }
    let lan = lan("l2conf");
    let (a, b) = (&lan.nodes()[0], &lan.nodes()[1]);
    let mut ra = Responder::start(&lan, a, &[VIP]);
    let _rb = Responder::start(&lan, b, &[VIP]);
    assert!(eventually(Duration::from_secs(5), || {
        ra.stats()["conflicts"].as_u64().unwrap() > 0
    }));
    // The counter moves before the conflict's line is printed (another
    // thread): read replies until the line is in too.
    let named = |ra: &Responder| {
        ra.conflicts
            .iter()
            .any(|c| c.contains(&mac(b)) && c.contains(&mac(a)))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !named(&ra) && std::time::Instant::now() < deadline {
        let _ = ra.cmd("stats");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(named(&ra), "{:?}", ra.conflicts);
}

#[test]
fn survives_link_flap_and_interface_recreation_without_spinning() {
    if !require_netns("survives_link_flap_and_interface_recreation_without_spinning") {
        return;
    }
    let lan = lan("l2flap");
    let (node, client) = (&lan.nodes()[0], &lan.clients()[0]);
    let mut r = Responder::start(&lan, node, &[VIP]);
    assert!(arping(client, VIP, &["-c", "1"]).0);
    let second = Duration::from_secs(1);
    let c0 = r.cpu();
    std::thread::sleep(second);
    let idle = r.cpu() - c0;
    node.link_down().unwrap();
    let c1 = r.cpu();
    std::thread::sleep(second);
    let down = r.cpu() - c1;
    // A spinning thread burns ~1 s of CPU per second; an idle one ~nothing.
    assert!(
        down < idle + Duration::from_millis(300),
        "link down: {down:?} CPU vs idle {idle:?}"
    );
    node.link_up().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || arping(
            client,
            VIP,
            &["-c", "1"]
        )
        .0),
        "no answer after link up"
    );

    lan.recreate_link(node).unwrap();
    let c2 = r.cpu();
    std::thread::sleep(second);
    let after = r.cpu() - c2;
    assert!(
        after < idle + Duration::from_millis(300),
        "after re-creation: {after:?} CPU vs idle {idle:?}"
    );
    assert!(
        eventually(Duration::from_secs(10), || arping(
            client,
            VIP,
            &["-c", "1"]
        )
        .0),
        "no answer after interface re-creation"
    );
    assert!(r.stats()["rebinds"].as_u64().unwrap() >= 1);
    assert!(r.handle.is_running());
}
