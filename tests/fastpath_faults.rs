//! The LAN fast path under faults, end to end (issue 13): the owner of a
//! VIP crashes, freezes (SIGSTOP, then SIGCONT), loses its link, or loses
//! only its fast-path frames (both ways, only outbound, only inbound),
//! and the fault heals.
//!
//! What must hold, whatever the timing: no ARP request of the client is
//! ever answered by two nodes (counted on the wire, from a capture at the
//! client), from before the fault until well after the heal; and the VIP
//! is answered again afterwards. How fast the VIP moves is the bench's
//! business (`l2lb bench failover`), never asserted here.

use k8s_openapi::api::core::v1::Service;
use l2lb::lab::net::require_netns;
use l2lb::lab::world::{Lab, LabOptions};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The labs run one at a time: each has five l2lb processes, and two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(30);

async fn lab(tag: &str) -> Lab {
    let mut opts = LabOptions::new(tag).unwrap();
    opts.binary = PathBuf::from(env!("CARGO_BIN_EXE_l2lb"));
    // One controller is enough here and leaves CPU to the speakers.
    opts.controllers = 1;
    let lab = Lab::start(opts).await.expect("lab starts");
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
    lab.apply_file(&config.join("ipaddresspool.yaml"))
        .await
        .unwrap();
    lab.apply_file(&config.join("l2advertisement.yaml"))
        .await
        .unwrap();
    lab
}

/// A LoadBalancer Service `default/demo` with an endpoint on every node;
/// returns its VIP.
async fn demo(lab: &Lab) -> Ipv4Addr {
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "demo", "namespace": "default" },
        "spec": {
            "type": "LoadBalancer", "selector": { "app": "demo" },
            "ports": [{ "name": "http", "port": 80, "protocol": "TCP" }],
        },
    }))
    .unwrap();
    lab.create_service(svc, &[0, 1, 2]).await.unwrap();
    match lab.wait_vips("default", "demo", 1, WAIT).await.unwrap()[0] {
        IpAddr::V4(v) => v,
        other => panic!("expected an IPv4 VIP, got {other}"),
    }
}

/// Waits until the node the election picks among all three owns the VIP
/// alone (status) and answers ARP for it; returns its index.
async fn settled_owner(lab: &Lab, vip: Ipv4Addr) -> usize {
    let names: Vec<String> = (0..3).map(|i| lab.node(i).name.clone()).collect();
    let owner = l2lb::election::owner(IpAddr::V4(vip), names.iter().map(String::as_str))
        .unwrap()
        .to_string();
    let o = lab.node_index(&owner).unwrap();
    let mac = lab.mac_of(o);
    let want = BTreeSet::from([owner.clone()]);
    let deadline = Instant::now() + WAIT;
    loop {
        let answers = lab.arping(IpAddr::V4(vip)).is_some_and(|a| a.mac == mac);
        if answers && lab.owners("default", "demo").await == want {
            return o;
        }
        assert!(Instant::now() < deadline, "{owner} never settled as owner");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fault on the owner, and how it heals.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGKILL the speaker and take the link down; heal: link up, restart.
    Crash,
    /// SIGSTOP the speaker for 3 s; heal: SIGCONT.
    Freeze,
    /// Link down for 2 s, the process alive; heal: link up.
    LinkDown,
    /// Drop the owner's fast-path frames for 2 s; heal: remove the filter.
    Cut { out: bool, inbound: bool },
}

/// Runs `fault` on the settled owner of a fresh lab's VIP and checks that
/// no request was answered twice and that the VIP is answered afterwards.
async fn no_double_answers_through(fault: Fault, tag: &str) {
    let _serial = SERIAL.lock().await;
    let mut lab = lab(tag).await;
    let vip = demo(&lab).await;
    let o = settled_owner(&lab, vip).await;
    let host = lab.node(o).clone();
    let owner_mac = lab.mac_of(o);
    let (capture, probe) = lab
        .watch_from_client(IpAddr::V4(vip), &format!("{tag}-client"))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    match fault {
        Fault::Crash => {
            lab.stop_speaker(o, false);
            host.link_down().unwrap();
        }
        Fault::Freeze => assert!(lab.signal_speaker(o, libc::SIGSTOP)),
        Fault::LinkDown => host.link_down().unwrap(),
        Fault::Cut { out, inbound } => lab.lan.cut_fastpath(&host, out, inbound).unwrap(),
    }
    let hold = match fault {
        Fault::Freeze => Duration::from_secs(3),
        _ => Duration::from_secs(2),
    };
    tokio::time::sleep(hold).await;
    match fault {
        Fault::Crash => {
            host.link_up().unwrap();
            lab.start_speaker(o).unwrap();
        }
        Fault::Freeze => assert!(lab.signal_speaker(o, libc::SIGCONT)),
        Fault::LinkDown => host.link_up().unwrap(),
        Fault::Cut { .. } => lab.lan.heal_fastpath(&host).unwrap(),
    }
    let healed = Instant::now();
    // Through the heal: the returning node takes its VIP back by hand-over,
    // which is where two answers would show.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let samples = probe.stop();
    let pcap = capture.stop().unwrap();
    let wire = lab.wire_answers(&pcap, vip).unwrap();
    assert!(wire.requests > 0, "no request in {}", pcap.display());
    assert!(
        wire.doubles.is_empty(),
        "{fault:?}: requests answered by two nodes (capture {}): {:?}",
        pcap.display(),
        wire.doubles
    );
    assert!(
        samples.iter().any(|s| s.what != owner_mac),
        "{fault:?}: no other node ever answered, so the fault was not exercised"
    );
    assert!(
        samples.iter().any(|s| s.at > healed),
        "{fault:?}: the VIP was not answered after the heal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_owner_is_replaced_without_double_answers() {
    if !require_netns("a_crashed_owner_is_replaced_without_double_answers") {
        return;
    }
    no_double_answers_through(Fault::Crash, "fpcrash").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_owner_does_not_answer_when_it_wakes() {
    if !require_netns("a_frozen_owner_does_not_answer_when_it_wakes") {
        return;
    }
    no_double_answers_through(Fault::Freeze, "fpfreeze").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_whose_link_goes_down_and_up_never_answers_twice() {
    if !require_netns("an_owner_whose_link_goes_down_and_up_never_answers_twice") {
        return;
    }
    no_double_answers_through(Fault::LinkDown, "fplink").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_cut_from_the_fast_path_both_ways_fences_first() {
    if !require_netns("an_owner_cut_from_the_fast_path_both_ways_fences_first") {
        return;
    }
    let cut = Fault::Cut {
        out: true,
        inbound: true,
    };
    no_double_answers_through(cut, "fpcutboth").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_whose_fast_path_frames_are_lost_fences_first() {
    if !require_netns("an_owner_whose_fast_path_frames_are_lost_fences_first") {
        return;
    }
    let cut = Fault::Cut {
        out: true,
        inbound: false,
    };
    no_double_answers_through(cut, "fpcutout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_that_hears_no_fast_path_frames_fences_first() {
    if !require_netns("an_owner_that_hears_no_fast_path_frames_fences_first") {
        return;
    }
    let cut = Fault::Cut {
        out: false,
        inbound: true,
    };
    no_double_answers_through(cut, "fpcutin").await;
}

/// Every node loses the API server (an upgrade, an etcd failure): the
/// owner keeps answering past its lease fence, since no peer can take its
/// VIP; it then crashes in the middle of the outage, and a survivor takes
/// the VIP through the fast path alone; the API returns and all settles.
/// No request is ever answered twice. (How long each gap is belongs to
/// the bench's `api_outage_all`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_outage_for_every_node_keeps_answering_and_replaces_a_crashed_owner() {
    if !require_netns("an_api_outage_for_every_node_keeps_answering_and_replaces_a_crashed_owner") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut lab = lab("fpapiall").await;
    let vip = demo(&lab).await;
    let o = settled_owner(&lab, vip).await;
    let host = lab.node(o).clone();
    let owner_mac = lab.mac_of(o);
    let nodes: Vec<IpAddr> = (0..3).map(|i| IpAddr::V4(lab.node(i).ipv4)).collect();
    let (capture, probe) = lab
        .watch_from_client(IpAddr::V4(vip), "fpapiall-client")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let cut = Instant::now();
    for ip in &nodes {
        lab.api.faults().block(*ip);
    }
    // Twice the lease duration: without the outage rule the owner would
    // have fenced and withdrawn by now.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let crash = Instant::now();
    lab.stop_speaker(o, false);
    host.link_down().unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let back = Instant::now();
    for ip in &nodes {
        lab.api.faults().unblock(*ip);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let samples = probe.stop();
    let wire = lab.wire_answers(&capture.stop().unwrap(), vip).unwrap();

    assert!(
        wire.doubles.is_empty(),
        "requests answered by two nodes: {:?}",
        wire.doubles
    );
    let late_in_the_outage = cut + Duration::from_secs(6);
    assert!(
        samples
            .iter()
            .any(|s| s.at > late_in_the_outage && s.at < crash && s.what == owner_mac),
        "the owner stopped answering during the outage although no peer could take over"
    );
    assert!(
        samples
            .iter()
            .any(|s| s.at > crash && s.at < back && s.what != owner_mac),
        "no survivor took the crashed owner's VIP while the API was down"
    );
    assert!(
        samples.iter().any(|s| s.at > back),
        "the VIP was not answered after the API returned"
    );
    host.link_up().unwrap();
}

/// A fresh install: no Secret, so the speakers start on their Leases alone;
/// a controller generates the Secret, "kubelet" (the lab) mounts it, and
/// every speaker picks the key up without a restart and joins the fast
/// path: then a crashed owner is replaced with no double answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speakers_pick_up_the_key_the_controller_generates_without_a_restart() {
    if !require_netns("speakers_pick_up_the_key_the_controller_generates_without_a_restart") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut opts = LabOptions::new("fpkeygen").unwrap();
    opts.binary = PathBuf::from(env!("CARGO_BIN_EXE_l2lb"));
    opts.controllers = 1;
    opts.fastpath_key_from_controller = true;
    let mut lab = Lab::start(opts).await.expect("lab starts");
    let speakers: Vec<String> = (0..3)
        .map(|i| format!("{}-speaker", lab.node(i).name))
        .collect();
    let accepted = |lab: &Lab, i: usize| -> f64 {
        let out = lab
            .node(i)
            .run(&["curl", "-s", "http://127.0.0.1:7473/metrics"])
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("l2lb_speaker_fastpath_accepted_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let deadline = Instant::now() + WAIT;
    while (0..3).any(|i| accepted(&lab, i) == 0.0) {
        assert!(
            Instant::now() < deadline,
            "the fast path never came on everywhere"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for log in &speakers {
        let text = std::fs::read_to_string(lab.log_path(log)).unwrap();
        assert!(
            text.contains("fast-path key file missing"),
            "{log} started with a key"
        );
        assert!(text.contains("fast-path keys loaded"), "{log}");
    }
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
    lab.apply_file(&config.join("ipaddresspool.yaml"))
        .await
        .unwrap();
    lab.apply_file(&config.join("l2advertisement.yaml"))
        .await
        .unwrap();
    let vip = demo(&lab).await;
    let o = settled_owner(&lab, vip).await;
    let owner_mac = lab.mac_of(o);
    let (capture, probe) = lab
        .watch_from_client(IpAddr::V4(vip), "fpkeygen-client")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    lab.stop_speaker(o, false);
    lab.node(o).link_down().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let samples = probe.stop();
    let wire = lab.wire_answers(&capture.stop().unwrap(), vip).unwrap();
    lab.node(o).link_up().unwrap();
    assert!(wire.doubles.is_empty(), "{:?}", wire.doubles);
    assert!(
        samples.iter().any(|s| s.what != owner_mac),
        "no survivor took over"
    );
}
