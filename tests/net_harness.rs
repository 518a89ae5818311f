//! The netns LAN harness builds a working LAN and always tears it down.

use l2lb::lab::net::{Lan, LanOptions, require_netns};
use std::process::Command;

fn netns_names() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lan_pings_arps_and_tears_down() {
    if !require_netns("lan_pings_arps_and_tears_down") {
        return;
    }
    let lan = Lan::new("harness", LanOptions::default()).expect("build LAN");
    assert_eq!(lan.nodes().len(), 3);
    assert_eq!(lan.clients().len(), 1);
    let prefix = lan.name_prefix().to_string();
    assert!(netns_names().contains(&prefix));
    let client = &lan.clients()[0];
    let node = &lan.nodes()[1];
    client
        .run(&["ping", "-c", "1", "-W", "2", &node.ipv4.to_string()])
        .expect("client pings node");
    if let Some(v6) = node.ipv6 {
        client
            .run(&["ping", "-6", "-c", "1", "-W", "2", &v6.to_string()])
            .expect("client pings node over IPv6");
    }
    let out = client
        .run(&[
            "arping",
            "-c",
            "1",
            "-w",
            "2",
            "-i",
            &client.iface,
            &node.ipv4.to_string(),
        ])
        .expect("arping node");
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        text.contains(&node.mac.to_string()),
        "arping output: {text}"
    );
    // The root namespace got nothing of ours.
    let root_links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&root_links.stdout).contains("pn0"));
    drop(lan);
    assert!(
        !netns_names().contains(&prefix),
        "namespaces left: {}",
        netns_names()
    );
}

#[test]
fn two_lans_do_not_interfere() {
    if !require_netns("two_lans_do_not_interfere") {
        return;
    }
    let a = Lan::new(
        "twoa",
        LanOptions {
            nodes: 1,
            clients: 1,
            ipv6: false,
        },
    )
    .expect("LAN a");
    let b = Lan::new(
        "twob",
        LanOptions {
            nodes: 1,
            clients: 1,
            ipv6: false,
        },
    )
    .expect("LAN b");
    // Same addresses and MACs in both: each client sees only its own node.
    // Take node a down: client a loses it, client b still reaches node b.
    a.nodes()[0].link_down().unwrap();
    let ca = &a.clients()[0];
    let cb = &b.clients()[0];
    assert!(
        ca.run(&["ping", "-c", "1", "-W", "1", "198.18.0.11"])
            .is_err()
    );
    cb.run(&["ping", "-c", "1", "-W", "2", "198.18.0.11"])
        .expect("LAN b unaffected");
    a.nodes()[0].link_up().unwrap();
    ca.run(&["ping", "-c", "1", "-W", "2", "198.18.0.11"])
        .expect("LAN a back");
}

#[test]
fn listen_tcp_reachable_from_node() {
    if !require_netns("listen_tcp_reachable_from_node") {
        return;
    }
    let lan = Lan::new(
        "tcp",
        LanOptions {
            nodes: 1,
            clients: 0,
            ipv6: false,
        },
    )
    .expect("LAN");
    let listener = lan.listen_tcp(0).expect("listen");
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::Write;
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"hello").unwrap();
    });
    let node = &lan.nodes()[0];
    let mut cmd = node.command("bash");
    cmd.args([
        "-c",
        &format!("exec 3<>/dev/tcp/{}/{port}; cat <&3", lan.gateway_ipv4()),
    ]);
    let out = cmd.output().unwrap();
    server.join().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello");
}

#[test]
fn spawned_processes_die_and_panics_clean_up() {
    if !require_netns("spawned_processes_die_and_panics_clean_up") {
        return;
    }
    let prefix = std::sync::Mutex::new(String::new());
    let pid = std::sync::Mutex::new(0u32);
    let result = std::panic::catch_unwind(|| {
        let lan = Lan::new(
            "panic",
            LanOptions {
                nodes: 1,
                clients: 1,
                ipv6: true,
            },
        )
        .unwrap();
        *prefix.lock().unwrap() = lan.name_prefix().to_string();
        let node = &lan.nodes()[0];
        let mut cmd = node.command("sleep");
        cmd.arg("600");
        let child = node.spawn(&lan, cmd).unwrap();
        assert!(child.is_running());
        *pid.lock().unwrap() = child.pid();
        panic!("deliberate panic inside a LAN test");
    });
    assert!(result.is_err());
    let prefix = prefix.into_inner().unwrap();
    assert!(!prefix.is_empty());
    assert!(
        !netns_names().contains(&prefix),
        "namespaces left after panic"
    );
    let pid = pid.into_inner().unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "spawned process survived"
    );
}

#[test]
fn cleanup_stale_removes_namespaces_of_dead_runs_only() {
    if !require_netns("cleanup_stale_removes_namespaces_of_dead_runs_only") {
        return;
    }
    // Pids above the kernel's pid_max (4194304) can never be alive.
    let dead = format!("l2lb-stale-99999999-{}-x", std::process::id());
    Command::new("ip")
        .args(["netns", "add", &dead])
        .status()
        .unwrap();
    let live = Lan::new(
        "live",
        LanOptions {
            nodes: 1,
            clients: 0,
            ipv6: false,
        },
    )
    .unwrap();
    assert!(l2lb::lab::net::cleanup_stale() >= 1);
    let names = netns_names();
    assert!(!names.contains(&dead), "stale namespace kept");
    assert!(names.contains(live.name_prefix()), "live namespace deleted");
}
