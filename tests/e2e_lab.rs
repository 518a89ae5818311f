//! End-to-end: the lab's world (namespaces, embedded API server, controller
//! and speaker processes of the real binary) driven the way a user would,
//! checked from the client with real `arping`, `ndisc6`, `curl` and the
//! client's kernel neighbour table.
//!
//! No timing thresholds here: waits are generous and failures mean the
//! behaviour is wrong. Figures come from `l2lb bench failover`.

mod fixtures;

use k8s_openapi::api::core::v1::Service;
use l2lb::lab::net::{Capture, require_netns};
use l2lb::lab::world::{Lab, LabOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Instant;

use std::time::Duration;

/// The labs run one at a time: each has five l2lb processes, and two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(30);

fn config(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(file)
}

async fn lab(tag: &str) -> Lab {
    lab_with(tag, |_| {}).await
}

/// [`lab`] with options changed by `tune`.
async fn lab_with(tag: &str, tune: impl FnOnce(&mut LabOptions)) -> Lab {
    let mut opts = LabOptions::new(tag).unwrap();
    opts.binary = PathBuf::from(env!("CARGO_BIN_EXE_l2lb"));
    tune(&mut opts);
    let lab = Lab::start(opts).await.expect("lab starts");
    lab.apply_file(&config("ipaddresspool.yaml")).await.unwrap();
    lab.apply_file(&config("l2advertisement.yaml"))
        .await
        .unwrap();
    lab
}

fn service(name: &str, spec: serde_json::Value) -> Service {
    fixtures::service(name).spec(spec).build()
}

async fn demo(
    lab: &Lab,
    spec: serde_json::Value,
    families: usize,
    endpoints: &[usize],
) -> Vec<IpAddr> {
    lab.create_service(service("demo", spec), endpoints)
        .await
        .unwrap();
    let vips = lab
        .wait_vips("default", "demo", families, WAIT)
        .await
        .unwrap();
    for vip in &vips {
        lab.route_vip(*vip, 80).unwrap();
    }
    vips
}

/// Polls `f` until it returns Some, up to `WAIT`.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn owner_index(lab: &Lab, owner: &str) -> usize {
    lab.node_index(owner)
        .unwrap_or_else(|| panic!("unknown node {owner}"))
}

/// Waits until exactly the nodes `want` hold a ServiceL2Status for
/// `default/name`.
async fn wait_owners(lab: &Lab, name: &str, want: &BTreeSet<String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let have = lab.owners("default", name).await;
        if have == *want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ServiceL2Status of {name} on {have:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `arping -d -c 3`: exits 1 when two MACs answer.
fn no_duplicate_answers(lab: &Lab, vip: IpAddr) -> bool {
    let c = lab.client_host();
    let out = c
        .command("arping")
        .args([
            "-d",
            "-c",
            "3",
            "-W",
            "0.05",
            "-i",
            &c.iface,
            &vip.to_string(),
        ])
        .output()
        .unwrap();
    out.status.success()
}

fn v4(vip: IpAddr) -> Ipv4Addr {
    let IpAddr::V4(v4) = vip else {
        panic!("expected an IPv4 VIP, got {vip}")
    };
    v4
}

/// [`l2lb::lab::demo::failover`] with a capture at the client: the
/// client's requests during the move, each answered by one node at most.
async fn failover_on_the_wire(
    lab: &mut Lab,
    vip: IpAddr,
    idx: usize,
    graceful: bool,
    name: &str,
) -> l2lb::lab::demo::Failover {
    let cap = lab.capture_client(name).unwrap();
    let moved = l2lb::lab::demo::failover(lab, vip, idx, graceful)
        .await
        .unwrap();
    let wire = lab.wire_answers(&cap.stop().unwrap(), v4(vip)).unwrap();
    assert!(
        wire.answered > 0,
        "{name}: the client's requests were answered"
    );
    assert_eq!(wire.doubles, vec![], "{name}: requests two nodes answered");
    moved
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_story_pool_service_arping_curl() {
    if !require_netns("seed_story_pool_service_arping_curl") {
        return;
    }
    let _g = SERIAL.lock().await;
    let lab = lab("e2e-seed").await;
    let vips = demo(&lab, serde_json::json!({}), 1, &[0, 1, 2]).await;
    let vip = vips[0];
    let IpAddr::V4(v4) = vip else {
        panic!("expected an IPv4 VIP, got {vip}")
    };
    assert!(
        (100..=120).contains(&v4.octets()[3]) && v4.octets()[..3] == [198, 18, 0],
        "{vip} not from the pool"
    );
    let owner = lab.wait_owner("default", "demo", None, WAIT).await.unwrap();
    let want_mac = lab.mac_of(owner_index(&lab, &owner));
    let answer = eventually("the VIP to answer ARP", || lab.arping(vip)).await;
    assert_eq!(answer.mac, want_mac, "the owner's MAC answers");
    assert!(no_duplicate_answers(&lab, vip), "exactly one node answers");
    let served = eventually("curl to succeed", || lab.curl(vip, 80)).await;
    assert!(
        served.starts_with("node"),
        "a node served the request: {served:?}"
    );
    // The client's kernel neighbour table holds the owner's MAC.
    let c = lab.client_host();
    let neigh = c.run(&["ip", "neigh", "show", &vip.to_string()]).unwrap();
    assert!(String::from_utf8_lossy(&neigh.stdout).contains(&want_mac));
    // An address of the pool that no Service has is not answered.
    assert!(lab.arping("198.18.0.119".parse().unwrap()).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_and_graceful_failover_move_the_vip_without_double_answers() {
    if !require_netns("crash_and_graceful_failover_move_the_vip_without_double_answers") {
        return;
    }
    let _g = SERIAL.lock().await;
    let mut lab = lab("e2e-fail").await;
    let vip = demo(&lab, serde_json::json!({}), 1, &[0, 1, 2]).await[0];
    let first = lab.wait_owner("default", "demo", None, WAIT).await.unwrap();
    eventually("curl from the first owner", || {
        lab.curl(vip, 80).filter(|n| *n == first)
    })
    .await;

    let idx = owner_index(&lab, &first);
    let crash = failover_on_the_wire(&mut lab, vip, idx, false, "crash").await;
    let http = crash.http.expect("another node serves after the crash");
    assert_ne!(http.to, first);
    let second = lab
        .wait_owner("default", "demo", Some(&first), WAIT)
        .await
        .unwrap();
    assert_eq!(
        lab.arping(vip).map(|a| a.mac),
        Some(lab.mac_of(owner_index(&lab, &second)))
    );
    assert!(no_duplicate_answers(&lab, vip));

    lab.node(idx).link_up().unwrap();
    lab.start_speaker(idx).unwrap();
    // Rendezvous hashing gives the VIP back to the returning node.
    let back = lab
        .wait_owner("default", "demo", Some(&second), WAIT)
        .await
        .unwrap();
    assert_eq!(back, first);
    eventually("the returning owner answers ARP", || {
        lab.arping(vip).filter(|a| a.mac == lab.mac_of(idx))
    })
    .await;
    let idx2 = owner_index(&lab, &back);
    let graceful = failover_on_the_wire(&mut lab, vip, idx2, true, "graceful").await;
    assert!(graceful.http.is_some(), "another node serves after SIGTERM");
    let arp = graceful.arp.expect("ARP answers switch MAC");
    assert_ne!(arp.to, lab.mac_of(idx2));
    assert!(no_duplicate_answers(&lab, vip));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_vip_resolves_with_ndp_and_serves_http() {
    if !require_netns("ipv6_vip_resolves_with_ndp_and_serves_http") {
        return;
    }
    let _g = SERIAL.lock().await;
    let lab = lab("e2e-v6").await;
    let spec =
        serde_json::json!({ "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack" });
    let vips = demo(&lab, spec, 2, &[0, 1, 2]).await;
    let v6 = *vips.iter().find(|v| v.is_ipv6()).expect("an IPv6 VIP");
    let node_macs: Vec<String> = (0..3).map(|i| lab.mac_of(i)).collect();
    // The IPv6 VIP is elected on its own: any node may own it, exactly one answers.
    let want = eventually("ndisc6 to resolve the IPv6 VIP", || {
        let IpAddr::V6(v6) = v6 else { return None };
        lab.ndisc6(v6).filter(|m| node_macs.contains(m))
    })
    .await;
    let c = lab.client_host().clone();
    let served = eventually("curl -6", || lab.curl(v6, 80)).await;
    assert!(served.starts_with("node"));
    let neigh = c
        .run(&["ip", "-6", "neigh", "show", &v6.to_string()])
        .unwrap();
    assert!(String::from_utf8_lossy(&neigh.stdout).contains(&want));

    // Each family's VIP is elected on its own; every node that announces
    // one holds a ServiceL2Status, and none is deleted by the other.
    let v4 = *vips.iter().find(|v| v.is_ipv4()).expect("an IPv4 VIP");
    let owner4 = eventually("arping the IPv4 VIP", || lab.arping(v4))
        .await
        .mac;
    let expect: BTreeSet<String> = [owner4, want]
        .iter()
        .map(|m| lab.node_of_mac(m).expect("a node's MAC"))
        .collect();
    wait_owners(&lab, "demo", &expect).await;
    // And they stay: a second look after the takeover clean-ups ran.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(lab.owners("default", "demo").await, expect);
}

/// ARP replies captured at the client for `filter`, as (time, sender IP, sender MAC).
fn arp_replies(pcap: &std::path::Path, filter: &str) -> Vec<(f64, IpAddr, String)> {
    let text = Capture::decode(
        pcap,
        &format!("arp.opcode == 2 && {filter}"),
        &[
            "frame.time_relative",
            "arp.src.proto_ipv4",
            "arp.src.hw_mac",
        ],
    )
    .unwrap();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
                f.next()?.to_string(),
            ))
        })
        .collect()
}

/// Consecutive duplicates collapsed: the order in which answers changed.
fn runs<T: PartialEq + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for i in items {
        if out.last() != Some(&i) {
            out.push(i);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_vips_are_each_answered_by_exactly_the_elected_node() {
    if !require_netns("thirty_vips_are_each_answered_by_exactly_the_elected_node") {
        return;
    }
    let _g = SERIAL.lock().await;
    let lab = lab("e2e-30").await;
    // The default pool has 21 IPv4 addresses; a second pool makes room.
    lab.apply(serde_json::json!({
        "apiVersion": "l2lb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": { "name": "more", "namespace": "l2lb-system" },
        "spec": { "addresses": ["198.18.0.130-198.18.0.160"] },
    }))
    .await
    .unwrap();
    lab.apply(serde_json::json!({
        "apiVersion": "l2lb.io/v1beta1", "kind": "L2Advertisement",
        "metadata": { "name": "more", "namespace": "l2lb-system" },
        "spec": { "ipAddressPools": ["more"] },
    }))
    .await
    .unwrap();
    let names: Vec<String> = (0..30).map(|i| format!("svc{i:02}")).collect();
    for n in &names {
        lab.create_service(service(n, serde_json::json!({})), &[0, 1, 2])
            .await
            .unwrap();
    }
    let nodes: Vec<String> = (0..3).map(|i| lab.node(i).name.clone()).collect();
    let mut elected: BTreeMap<IpAddr, String> = BTreeMap::new();
    for n in &names {
        let vip = lab.wait_vips("default", n, 1, WAIT).await.unwrap()[0];
        let owner = l2lb::election::owner(vip, nodes.iter().map(String::as_str)).unwrap();
        elected.insert(vip, owner.to_string());
        // The status names the elected node (and only it) once settled.
        let want = BTreeSet::from([owner.to_string()]);
        wait_owners(&lab, n, &want).await;
    }
    assert_eq!(elected.len(), 30, "30 distinct VIPs");

    let c = lab.client_host().clone();
    let cap = c
        .capture(&lab.lan, &lab.opts.log_dir.join("thirty.pcap"))
        .unwrap();
    for vip in elected.keys() {
        // Each VIP is asked three times; answers are counted in the capture.
        c.command("arping")
            .args(["-c", "3", "-W", "0.02", "-i", &c.iface, &vip.to_string()])
            .output()
            .unwrap();
    }
    let pcap = cap.stop().unwrap();
    let mut answers: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
    for (_, ip, mac) in arp_replies(&pcap, "arp.src.proto_ipv4 >= 198.18.0.100") {
        answers.entry(ip).or_default().insert(mac);
    }
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for (vip, owner) in &elected {
        let mac = lab.mac_of(owner_index(&lab, owner));
        assert_eq!(
            answers.get(vip),
            Some(&BTreeSet::from([mac])),
            "{vip}: answered by exactly its elected owner {owner}"
        );
        *per_node.entry(owner).or_default() += 1;
    }
    // Rendezvous spreads 30 VIPs over all three nodes.
    assert_eq!(per_node.len(), 3, "every node owns some VIPs: {per_node:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_from_the_api_server_goes_quiet_before_a_peer_answers() {
    if !require_netns("a_node_cut_from_the_api_server_goes_quiet_before_a_peer_answers") {
        return;
    }
    let _g = SERIAL.lock().await;
    let lab = lab("e2e-fence").await;
    let vip = demo(&lab, serde_json::json!({}), 1, &[0, 1, 2]).await[0];
    let owner = lab.wait_owner("default", "demo", None, WAIT).await.unwrap();
    let idx = owner_index(&lab, &owner);
    let owner_mac = lab.mac_of(idx);
    eventually("the owner answers ARP", || {
        lab.arping(vip).filter(|a| a.mac == owner_mac)
    })
    .await;

    let (cap, probe) = lab.watch_from_client(vip, "fence").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Only the API server becomes unreachable from the owner; its LAN link,
    // speaker process and dataplane stay up.
    let api = lab.lan.gateway_ipv4().to_string();
    let rule = [
        "OUTPUT", "-p", "tcp", "-d", &api, "--dport", "6443", "-j", "DROP",
    ];
    let node = lab.node(idx).clone();
    node.iptables(&[&["-I"][..], &rule[..]].concat()).unwrap();
    let cut = Instant::now();
    let peer_mac = eventually("a peer to answer", || {
        probe
            .samples()
            .into_iter()
            .find(|s| s.at > cut && s.what != owner_mac)
            .map(|s| s.what)
    })
    .await;
    // The cut node must stay quiet while it cannot renew.
    tokio::time::sleep(Duration::from_secs(2)).await;

    node.iptables(&[&["-D"][..], &rule[..]].concat()).unwrap();
    let healed = Instant::now();
    eventually("the owner to answer again after reconnecting", || {
        probe
            .samples()
            .into_iter()
            .find(|s| s.at > healed && s.what == owner_mac)
    })
    .await;
    // Long enough to see any flapping back and forth.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let samples = probe.stop();
    let pcap = cap.stop().unwrap();

    let wire = lab.wire_answers(&pcap, v4(vip)).unwrap();
    assert!(
        wire.requests > 0,
        "the client's requests are in the capture"
    );
    assert_eq!(wire.doubles, vec![], "requests two nodes answered");
    let seen = runs(
        samples
            .iter()
            .filter(|s| s.at >= cut)
            .map(|s| s.what.clone()),
    );
    assert_eq!(
        seen,
        [owner_mac.clone(), peer_mac.clone(), owner_mac.clone()],
        "answers: owner, then one peer, then the owner again, with no flapping"
    );
    // Every reply on the wire (gratuitous ones too) tells the same story:
    // the cut node's last reply comes before the peer's first one.
    let wire = runs(
        arp_replies(&pcap, &format!("arp.src.proto_ipv4 == {vip}"))
            .into_iter()
            .map(|(_, _, mac)| mac),
    );
    assert_eq!(
        wire,
        [owner_mac.clone(), peer_mac, owner_mac],
        "replies on the wire"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_ip_serves_both_services_and_local_policy_follows_the_endpoint() {
    if !require_netns("shared_ip_serves_both_services_and_local_policy_follows_the_endpoint") {
        return;
    }
    let _g = SERIAL.lock().await;
    let lab = lab("e2e-share").await;
    lab.apply_file(&config("service-shared.yaml"))
        .await
        .unwrap();
    lab.set_endpoints("default", "shared-http", &[0, 1, 2])
        .await
        .unwrap();
    lab.set_endpoints("default", "shared-https", &[0, 1, 2])
        .await
        .unwrap();
    let a = lab
        .wait_vips("default", "shared-http", 1, WAIT)
        .await
        .unwrap();
    let b = lab
        .wait_vips("default", "shared-https", 1, WAIT)
        .await
        .unwrap();
    assert_eq!(a, b, "the two Services share one VIP");
    lab.route_vip(a[0], 80).unwrap();
    lab.route_vip(a[0], 443).unwrap();
    eventually("port 80", || lab.curl(a[0], 80)).await;
    eventually("port 443", || lab.curl(a[0], 443)).await;

    // externalTrafficPolicy: Local with the only endpoint on node2.
    let vip = demo(
        &lab,
        serde_json::json!({ "externalTrafficPolicy": "Local" }),
        1,
        &[2],
    )
    .await[0];
    let owner = lab.wait_owner("default", "demo", None, WAIT).await.unwrap();
    assert_eq!(owner, lab.node(2).name);
    eventually("node2 serves", || {
        lab.curl(vip, 80).filter(|n| *n == lab.node(2).name)
    })
    .await;
    lab.set_endpoints("default", "demo", &[0]).await.unwrap();
    let moved = lab
        .wait_owner("default", "demo", Some(&lab.node(2).name), WAIT)
        .await
        .unwrap();
    assert_eq!(moved, lab.node(0).name, "the VIP follows the endpoint");
    eventually("node0 answers ARP", || {
        lab.arping(vip).filter(|a| a.mac == lab.mac_of(0))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_keep_the_vip_and_the_owner() {
    if !require_netns("restarts_keep_the_vip_and_the_owner") {
        return;
    }
    let _g = SERIAL.lock().await;
    let mut lab = lab("e2e-restart").await;
    let vip = demo(&lab, serde_json::json!({}), 1, &[0, 1, 2]).await[0];
    let owner = lab.wait_owner("default", "demo", None, WAIT).await.unwrap();

    // Both controllers go away and come back: the VIP stays.
    lab.stop_controller(0, true);
    lab.stop_controller(1, true);
    lab.start_controller(0).unwrap();
    lab.start_controller(1).unwrap();
    lab.create_service(service("probe", serde_json::json!({})), &[0])
        .await
        .unwrap();
    lab.wait_vips("default", "probe", 1, WAIT).await.unwrap();
    assert_eq!(
        lab.wait_vips("default", "demo", 1, WAIT).await.unwrap(),
        vec![vip]
    );

    // The owner's speaker restarts: the hash brings the VIP back to it.
    let idx = owner_index(&lab, &owner);
    lab.stop_speaker(idx, true);
    lab.wait_owner("default", "demo", Some(&owner), WAIT)
        .await
        .unwrap();
    lab.start_speaker(idx).unwrap();
    let back = lab.wait_owner("default", "demo", None, WAIT).await.unwrap();
    let again = eventually("the owner returns", || {
        let a = lab.arping(vip)?;
        (a.mac == lab.mac_of(idx)).then_some(a)
    })
    .await;
    assert_eq!(again.mac, lab.mac_of(idx));
    let _ = back;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_tears_down_completely() {
    if !require_netns("the_lab_tears_down_completely") {
        return;
    }
    let _g = SERIAL.lock().await;
    let lab = lab("e2e-down").await;
    let namespaces = lab.namespaces();
    let pids: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/environ"))
                .is_ok_and(|e| e.contains("L2LB_SERVER="))
                || std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.contains(&namespaces[0]) || c.contains(lab.lan_url.as_str()))
        })
        .collect();
    assert!(!pids.is_empty(), "the lab's processes are visible");
    drop(lab);
    let listed = String::from_utf8(
        std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for ns in &namespaces {
        assert!(!listed.contains(ns.as_str()), "namespace {ns} left behind");
    }
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "process {pid} left behind"
        );
    }
}

/// Permissions in `src/api/rbac.rs` a whole lab story may not exercise,
/// and why they are granted anyway.
const MAY_GO_UNUSED: &[(&str, &str, &str, &str)] = &[
    // kube's Recorder patches an Event's series when the same Event repeats
    // within minutes; a short story rarely repeats one.
    ("l2lb-controller", "events.k8s.io", "events", "patch"),
    ("l2lb-speaker", "events.k8s.io", "events", "patch"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_tables_grant_what_the_components_use_and_nothing_more() {
    use l2lb::api::rbac::{Component, allows_in};
    if !require_netns("rbac_tables_grant_what_the_components_use_and_nothing_more") {
        return;
    }
    let _g = SERIAL.lock().await;
    // A fresh install: the controller creates the fast-path Secret.
    let mut lab = lab_with("e2e-rbac", |o| o.fastpath_key_from_controller = true).await;
    // A story touching every code path that talks to the API server:
    // allocation, announcement, status, Events, hand-over, crash clean-up,
    // leader step-down, release.
    demo(&lab, serde_json::json!({}), 1, &[0, 1, 2]).await;
    let owner = lab.wait_owner("default", "demo", None, WAIT).await.unwrap();
    let idx = owner_index(&lab, &owner);
    lab.stop_speaker(idx, true);
    let second = lab
        .wait_owner("default", "demo", Some(&owner), WAIT)
        .await
        .unwrap();
    lab.start_speaker(idx).unwrap();
    lab.wait_owner("default", "demo", Some(&second), WAIT)
        .await
        .unwrap();
    // A crash this time: the next owner removes the dead node's status.
    lab.stop_speaker(idx, false);
    lab.wait_owner("default", "demo", Some(&owner), WAIT)
        .await
        .unwrap();
    lab.start_speaker(idx).unwrap();
    lab.stop_controller(0, true);
    lab.stop_controller(1, true);
    lab.start_controller(0).unwrap();
    lab.create_service(service("late", serde_json::json!({})), &[0])
        .await
        .unwrap();
    lab.wait_vips("default", "late", 1, WAIT).await.unwrap();
    kube::Api::<Service>::namespaced(lab.client.clone(), "default")
        .delete("demo", &Default::default())
        .await
        .unwrap();
    wait_owners(&lab, "demo", &BTreeSet::new()).await;
    // The speakers' Events about the release are written after the status.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let seen = lab.api.accesses();
    let install = l2lb::api::INSTALL_NAMESPACE;
    let mut problems = Vec::new();
    for component in [Component::Controller, Component::Speaker] {
        let agent = component.user_agent();
        let name = agent.split('/').next().unwrap_or_default().to_string();
        let used = seen.get(&agent).cloned().unwrap_or_default();
        assert!(!used.is_empty(), "{agent} made no requests");
        let table = component.permissions();
        for a in &used {
            if !allows_in(
                table,
                &a.group,
                &a.resource,
                &a.verb,
                a.namespace.as_deref(),
                install,
            ) {
                problems.push(format!("{name} used but is not granted: {a:?}"));
            }
        }
        for p in table {
            for verb in p.verbs {
                let exercised = used
                    .iter()
                    .any(|a| a.group == p.group && a.resource == p.resource && a.verb == *verb);
                let excused = MAY_GO_UNUSED.contains(&(name.as_str(), p.group, p.resource, verb));
                if !exercised && !excused {
                    problems.push(format!(
                        "{name} is granted but never used: {verb} {}/{}",
                        p.group, p.resource
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "RBAC tables and behaviour differ:\n{}",
        problems.join("\n")
    );
}

/// Captures at the client while `act` runs and the VIP then leaves node
/// `from` (for node `to` when given): every request in the capture
/// answered by one node at most. Returns the node that answers now.
async fn planned_move_on_the_wire(
    lab: &mut Lab,
    vip: IpAddr,
    (from, to): (usize, Option<usize>),
    name: &str,
    act: impl AsyncFnOnce(&mut Lab),
) -> usize {
    let (cap, probe) = lab.watch_from_client(vip, name).unwrap();
    act(lab).await;
    let from_mac = lab.mac_of(from);
    let want = |mac: &str| match to {
        Some(to) => mac == lab.mac_of(to),
        None => mac != from_mac,
    };
    let mac = eventually(&format!("{name}: the VIP moves"), || {
        probe
            .samples()
            .into_iter()
            .map(|s| s.what)
            .find(|m| want(m))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    probe.stop();
    let wire = lab.wire_answers(&cap.stop().unwrap(), v4(vip)).unwrap();
    assert!(wire.answered > 0, "{name}: requests answered");
    assert_eq!(wire.doubles, vec![], "{name}: requests two nodes answered");
    (0..lab.opts.nodes)
        .find(|i| lab.mac_of(*i) == mac)
        .expect("a node's MAC")
}

/// Issue 16: a cordon moves the VIP away, an uncordon and a crashed node's
/// return move it back, each a hand-over with no request answered twice,
/// and none of these counts as a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_uncordon_and_return_hand_over_without_double_answers_or_conflicts() {
    if !require_netns("cordon_uncordon_and_return_hand_over_without_double_answers_or_conflicts") {
        return;
    }
    let _g = SERIAL.lock().await;
    let mut lab = lab("e2e-plan").await;
    let vip = demo(&lab, serde_json::json!({}), 1, &[0, 1, 2]).await[0];
    let first = lab.wait_owner("default", "demo", None, WAIT).await.unwrap();
    let idx = owner_index(&lab, &first);
    let sidx = planned_move_on_the_wire(&mut lab, vip, (idx, None), "cordon", async |lab| {
        lab.set_cordoned(idx, true).await.unwrap();
    })
    .await;
    let second = lab.node(sidx).name.clone();
    wait_owners(&lab, "demo", &BTreeSet::from([second])).await;
    planned_move_on_the_wire(&mut lab, vip, (sidx, Some(idx)), "uncordon", async |lab| {
        lab.set_cordoned(idx, false).await.unwrap();
    })
    .await;

    lab.stop_speaker(idx, false);
    lab.node(idx).link_down().unwrap();
    lab.wait_owner("default", "demo", Some(&first), WAIT)
        .await
        .unwrap();
    let holder = owner_index(&lab, &lab.owner("default", "demo").await.unwrap());
    planned_move_on_the_wire(&mut lab, vip, (holder, Some(idx)), "return", async |lab| {
        lab.node(idx).link_up().unwrap();
        lab.start_speaker(idx).unwrap();
    })
    .await;
    for i in 0..3 {
        assert_eq!(
            lab.speaker_metric(i, "l2lb_speaker_ip_conflicts_total")
                .unwrap(),
            0.0,
            "node {i} counted a conflict"
        );
    }
}

/// Issue 16: with `nonRevertive`, a returning node leaves the VIP where it
/// is; a host that is not a speaker answering the VIP is a conflict,
/// counted and reported as an Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_revertive_vips_stay_and_a_foreign_answer_is_a_conflict() {
    use k8s_openapi::api::events::v1::Event;
    if !require_netns("non_revertive_vips_stay_and_a_foreign_answer_is_a_conflict") {
        return;
    }
    let _g = SERIAL.lock().await;
    let lab = lab("e2e-stick").await;
    lab.apply(serde_json::json!({
        "apiVersion": "l2lb.io/v1beta1", "kind": "L2Advertisement",
        "metadata": { "name": "sticky", "namespace": "l2lb-system" },
        "spec": { "nonRevertive": true },
    }))
    .await
    .unwrap();
    let mut lab = lab;
    let vip = demo(&lab, serde_json::json!({}), 1, &[0, 1, 2]).await[0];
    let first = lab.wait_owner("default", "demo", None, WAIT).await.unwrap();
    let idx = owner_index(&lab, &first);
    lab.stop_speaker(idx, false);
    lab.node(idx).link_down().unwrap();
    let second = lab
        .wait_owner("default", "demo", Some(&first), WAIT)
        .await
        .unwrap();
    let sidx = owner_index(&lab, &second);
    lab.node(idx).link_up().unwrap();
    lab.start_speaker(idx).unwrap();
    // The returning node is live once its Lease shows it; give it ample
    // time to (wrongly) take the VIP back.
    eventually("the returning speaker is ready", || {
        lab.speaker_metric(idx, "l2lb_speaker_fenced")
            .ok()
            .filter(|f| *f == 0.0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        lab.owners("default", "demo").await,
        BTreeSet::from([second.clone()])
    );
    assert_eq!(lab.arping(vip).map(|a| a.mac), Some(lab.mac_of(sidx)));

    // The client claims the VIP (gratuitous ARP with its own MAC): the
    // owner must call it a conflict.
    let c = lab.client_host().clone();
    let iface = c.iface.clone();
    let prober = l2lb::lab::net::in_namespace(&c.ns, move || {
        l2lb::lab::frame_prober::FrameProber::open(&iface)
    })
    .unwrap()
    .expect("prober");
    for frame in l2lb::l2::announcements(vip, prober.mac()) {
        prober.send(&frame.emit()).unwrap();
    }
    eventually("the owner counts the conflict", || {
        lab.speaker_metric(sidx, "l2lb_speaker_ip_conflicts_total")
            .ok()
            .filter(|n| *n > 0.0)
    })
    .await;
    let events = kube::Api::<Event>::namespaced(lab.client.clone(), "default");
    let deadline = Instant::now() + WAIT;
    loop {
        let list = events.list(&Default::default()).await.unwrap();
        if list.items.iter().any(|e| {
            e.reason.as_deref() == Some("ipConflict")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains(&c.mac.to_string()))
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ipConflict Event naming the client's MAC"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
