//! Partition heal, end to end: a VIP's owner loses the API server (an
//! iptables rule in its namespace drops its traffic to it) while its LAN
//! stays up, a peer takes the VIP over, and the rule goes away again.
//!
//! What must hold at the heal: the returning owner never answers while the
//! peer still does (even when the peer learns of the return late, through a
//! delaying proxy), and `ServiceL2Status` follows the node that answers
//! within seconds, also after a cut long enough for TCP to back off.
//! Checked from the client with a real `arping` every 10 ms.

use k8s_openapi::api::core::v1::Service;
use l2lb::lab::net::{Host, require_netns};
use l2lb::lab::probe::{WireAnswers, switch_after};
use l2lb::lab::proxy::DelayProxy;
use l2lb::lab::world::{API_PORT, Lab, LabOptions};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The labs run one at a time: each has five l2lb processes, and two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(30);

async fn lab(tag: &str) -> Lab {
    let mut opts = LabOptions::new(tag).unwrap();
    opts.binary = PathBuf::from(env!("CARGO_BIN_EXE_l2lb"));
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
async fn demo(lab: &Lab) -> IpAddr {
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "demo", "namespace": "default" },
        "spec": {
            "type": "LoadBalancer", "selector": { "app": "demo" },
            "ports": [{ "name": "http", "port": 80, "protocol": "TCP" }],
        },
    }))
    .unwrap();
    lab.create_service(svc, &[0, 1, 2]).await.unwrap();
    lab.wait_vips("default", "demo", 1, WAIT).await.unwrap()[0]
}

/// Polls `f` until it returns Some, up to `WAIT`.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How `host` loses the API server.
#[derive(Clone, Copy)]
enum Cut {
    /// Every packet to the API server is dropped: new connections time out,
    /// open ones stall.
    Everything,
    /// Packets to the API server are dropped once a connection is set up:
    /// every request stalls the way one does on a connection opened before
    /// a cut (the status write hung on such a pooled connection),
    /// instead of failing fast on a connect timeout.
    AfterHandshake,
}

/// Starts (`-I`) or ends (`-D`) the cut of `host` from the API server.
fn api_rule(lab: &Lab, host: &Host, op: &str, cut: Cut) {
    let api = lab.lan.gateway_ipv4().to_string();
    let port = API_PORT.to_string();
    let mut rule = vec![op, "OUTPUT", "-p", "tcp", "-d", &api, "--dport", &port];
    if let Cut::AfterHandshake = cut {
        // Only connection requests pass; the handshake's last ACK and all
        // data do not. (Stateless: conntrack lets some flows through.)
        rule.extend(["!", "--syn"]);
    }
    rule.extend(["-j", "DROP"]);
    host.iptables(&rule).unwrap();
}

/// Waits until the node the election picks among all three owns the VIP:
/// its status names it alone and it answers ARP. (At start a speaker that
/// sees no peer yet may answer briefly; this waits for the settled owner.)
async fn settled_owner(lab: &Lab, vip: IpAddr) -> (String, usize) {
    let names: Vec<String> = (0..3).map(|i| lab.node(i).name.clone()).collect();
    let owner = l2lb::election::owner(vip, names.iter().map(String::as_str))
        .unwrap()
        .to_string();
    let o = lab.node_index(&owner).unwrap();
    let mac = lab.mac_of(o);
    let want = BTreeSet::from([owner.clone()]);
    let deadline = Instant::now() + WAIT;
    while lab.owners("default", "demo").await != want {
        assert!(
            Instant::now() < deadline,
            "{owner} never held the status alone"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("the owner answers ARP", || {
        lab.arping(vip).filter(|a| a.mac == mac)
    })
    .await;
    (owner, o)
}

/// Whether node `host`'s speaker reports ready (synced and not fenced).
fn speaker_ready(host: &Host) -> bool {
    host.command("curl")
        .args(["-s", "-f", "-m", "1", "http://127.0.0.1:7473/readyz"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The node that takes the VIP over when `owner` is gone.
fn successor(lab: &Lab, vip: IpAddr, owner: &str) -> usize {
    let others: Vec<String> = (0..3)
        .map(|i| lab.node(i).name.clone())
        .filter(|n| n != owner)
        .collect();
    let next = l2lb::election::owner(vip, others.iter().map(String::as_str)).unwrap();
    lab.node_index(next).unwrap()
}

/// Log lines of `name` after byte `from`.
fn log_since(lab: &Lab, name: &str, from: u64) -> String {
    let text = std::fs::read(lab.log_path(name)).unwrap_or_default();
    String::from_utf8_lossy(&text[(from as usize).min(text.len())..]).into_owned()
}

fn log_len(lab: &Lab, name: &str) -> u64 {
    std::fs::metadata(lab.log_path(name)).map_or(0, |m| m.len())
}

/// The owner is cut from the API server for 15 s and comes back; its
/// successor sees every change 150 ms late (a delaying proxy between it and
/// the API server, still under the 250 ms takeover delay). The returning
/// owner must wait until the successor has withdrawn: no ARP request is
/// answered by both, and neither sees the other claim the VIP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heal_with_a_slow_successor_never_answers_twice() {
    if !require_netns("heal_with_a_slow_successor_never_answers_twice") {
        return;
    }
    let _g = SERIAL.lock().await;
    let mut lab = lab("heal-slow").await;
    let vip = demo(&lab).await;
    let (owner, o) = settled_owner(&lab, vip).await;
    let s = successor(&lab, vip, &owner);
    let (o_host, s_host) = (lab.node(o).clone(), lab.node(s).clone());
    let (o_mac, s_mac) = (lab.mac_of(o), lab.mac_of(s));

    // The successor's speaker now reaches the API server only through the proxy.
    let upstream = SocketAddr::from((lab.lan.gateway_ipv4(), API_PORT));
    let proxy = DelayProxy::start(&s_host.ns, upstream, Duration::from_millis(150))
        .await
        .unwrap();
    lab.stop_speaker(s, true);
    lab.start_speaker_via(s, &proxy.url()).unwrap();
    eventually("the slowed successor to be ready", || {
        speaker_ready(&s_host).then_some(())
    })
    .await;
    eventually("the owner answers ARP", || {
        lab.arping(vip).filter(|a| a.mac == o_mac)
    })
    .await;

    let logs = [
        format!("{}-speaker", o_host.name),
        format!("{}-speaker", s_host.name),
    ];
    let log_from: Vec<u64> = logs.iter().map(|l| log_len(&lab, l)).collect();
    let (cap, probe) = lab.watch_from_client(vip, "heal").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    api_rule(&lab, &o_host, "-I", Cut::Everything);
    let cut = Instant::now();
    eventually("the successor to answer", || {
        probe
            .samples()
            .into_iter()
            .find(|x| x.at > cut && x.what == s_mac)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(cut.elapsed())).await;
    api_rule(&lab, &o_host, "-D", Cut::Everything);
    let healed = Instant::now();
    eventually("the owner to answer again", || {
        probe
            .samples()
            .into_iter()
            .find(|x| x.at > healed && x.what == o_mac)
    })
    .await;
    // Long enough to see any flapping.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let samples = probe.stop();
    let pcap = cap.stop().unwrap();

    let back = switch_after(&samples, healed).expect("the answer moved back");
    let wire = answers(&lab, &pcap, vip);
    println!(
        "heal: {} first answered {:?} after the heal, after a gap of {:?}; {} requests, {} answered, {} answered twice",
        o_host.name,
        back.first_new,
        back.outage,
        wire.requests,
        wire.answered,
        wire.doubles.len()
    );
    assert!(
        wire.doubles.is_empty(),
        "{} ARP requests answered by both {owner} and {} around the heal (capture seconds, MACs): {:?}",
        wire.doubles.len(),
        s_host.name,
        wire.doubles
    );
    for (log, from) in logs.iter().zip(log_from) {
        let claims: Vec<String> = log_since(&lab, log, from)
            .lines()
            .filter(|l| l.contains("another host claims"))
            .map(str::to_string)
            .collect();
        assert!(claims.is_empty(), "{log} saw a conflict: {claims:#?}");
    }
    drop(proxy);
}

/// The client's ARP requests for `vip` in `pcap` and who answered each.
fn answers(lab: &Lab, pcap: &std::path::Path, vip: IpAddr) -> WireAnswers {
    let IpAddr::V4(vip) = vip else {
        panic!("expected an IPv4 VIP, got {vip}")
    };
    lab.wire_answers(pcap, vip).unwrap()
}

/// The owner is cut from the API server for 62 s, long enough for TCP's
/// retransmission back-off to reach tens of seconds, then comes back. Its
/// requests stall rather than fail (see [`Cut::AfterHandshake`]). From the
/// heal on, `ServiceL2Status` must name the node that answers ARP, give or
/// take 5 s while the answer moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_the_answering_node_within_seconds_of_a_long_cut() {
    if !require_netns("status_follows_the_answering_node_within_seconds_of_a_long_cut") {
        return;
    }
    const CUT: Duration = Duration::from_secs(62);
    const WITHIN: Duration = Duration::from_secs(5);
    let _g = SERIAL.lock().await;
    let lab = lab("heal-status").await;
    let vip = demo(&lab).await;
    let (owner, o) = settled_owner(&lab, vip).await;
    let o_host = lab.node(o).clone();
    let o_mac = lab.mac_of(o);
    let (cap, probe) = lab.watch_from_client(vip, "long-cut").unwrap();

    api_rule(&lab, &o_host, "-I", Cut::AfterHandshake);
    let cut = Instant::now();
    let taken = eventually("a peer to answer", || {
        probe
            .samples()
            .into_iter()
            .find(|x| x.at > cut && x.what != o_mac)
    })
    .await;
    let peer = lab.node_of_mac(&taken.what).expect("a node's MAC");
    tokio::time::sleep(CUT.saturating_sub(cut.elapsed())).await;
    api_rule(&lab, &o_host, "-D", Cut::AfterHandshake);
    let healed = Instant::now();

    // From the heal on: who answers, and whom the status names.
    let mut seen: Vec<(Duration, Option<String>, BTreeSet<String>)> = Vec::new();
    let mut back_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let samples = probe.samples();
        let answering = samples
            .iter()
            .rev()
            .take_while(|x| now.duration_since(x.at) < Duration::from_millis(100))
            .next()
            .and_then(|x| lab.node_of_mac(&x.what));
        let named = lab.owners("default", "demo").await;
        if back_at.is_none() && answering.as_deref() == Some(owner.as_str()) {
            back_at = Some(now);
        }
        seen.push((now.duration_since(healed), answering, named));
        let settled = back_at.is_some_and(|t| t.elapsed() > WITHIN + Duration::from_secs(3));
        if settled || healed.elapsed() > WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    probe.stop();
    let wire = answers(&lab, &cap.stop().unwrap(), vip);
    assert!(
        wire.doubles.is_empty(),
        "requests answered twice: {:?}",
        wire.doubles
    );
    let back_at = back_at.unwrap_or_else(|| panic!("{owner} did not answer again after the heal"));

    // The longest stretch in which the status named someone other than
    // the node answering.
    let mut worst = Duration::ZERO;
    let mut worst_at = None;
    let mut wrong_since: Option<Duration> = None;
    for (at, answering, named) in &seen {
        let Some(answering) = answering else { continue };
        if named.len() == 1 && named.contains(answering) {
            wrong_since = None;
            continue;
        }
        let since = *wrong_since.get_or_insert(*at);
        if *at - since >= worst {
            worst = *at - since;
            worst_at = Some((*at, answering.clone(), named.clone()));
        }
    }
    println!(
        "long cut: {peer} took over, {owner} answered again {:?} after the heal; status lagged the answer by at most {worst:?}",
        back_at.duration_since(healed)
    );
    assert!(
        worst < WITHIN,
        "ServiceL2Status did not follow the answering node for {worst:?}: {worst_at:?}"
    );
}
