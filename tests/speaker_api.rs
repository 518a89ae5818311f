//! Three in-process speakers against the embedded API server, with fake
//! announcers that record who announces what. Every announce is checked at
//! the instant it happens against every other speaker's announcements (one
//! shared lock), so "two nodes announce one VIP" is caught exactly, not by
//! sampling. Waits are "until converged" with a generous bound; no test
//! asserts how fast anything happens.

mod fixtures;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use l2lb::api::{
    IPAddressPool, L2Advertisement, STATUS_NODE_LABEL, STATUS_SERVICE_NAME_LABEL, ServiceL2Status,
};
use l2lb::election;
use l2lb::l2::L2Error;
use l2lb::lab::apiserver::{ApiServer, client_for};
use l2lb::speaker::{Announcer, SpeakerConfig, run};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const NS: &str = "l2lb-system";
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const VIPS: u8 = 30;
/// Bound on waiting for convergence; a liveness guard, not a speed assertion.
const CONVERGE: Duration = Duration::from_secs(60);

/// Who announces what, across all fake announcers, plus every violation seen.
#[derive(Default)]
struct World {
    holders: BTreeMap<IpAddr, BTreeSet<String>>,
    violations: Vec<String>,
}

#[derive(Clone)]
struct FakeAnnouncer {
    node: String,
    world: Arc<Mutex<World>>,
}

impl Announcer for FakeAnnouncer {
    fn announce(&self, vip: IpAddr, interface: &str) -> Result<(), L2Error> {
        // eth1 only where a test gives a node one.
        assert!(interface == "eth0" || interface == "eth1", "{interface}");
        let mut w = self.world.lock().unwrap();
        let holders = w.holders.entry(vip).or_default();
        let others: Vec<String> = holders
            .iter()
            .filter(|n| **n != self.node)
            .cloned()
            .collect();
        holders.insert(self.node.clone());
        if !others.is_empty() {
            let msg = format!(
                "{vip} announced by {} while {others:?} announce it",
                self.node
            );
            w.violations.push(msg);
        }
        Ok(())
    }
    fn withdraw(&self, vip: IpAddr) {
        let mut w = self.world.lock().unwrap();
        if let Some(h) = w.holders.get_mut(&vip) {
            h.remove(&self.node);
        }
    }
    fn withdraw_all(&self) {
        let mut w = self.world.lock().unwrap();
        for h in w.holders.values_mut() {
            h.remove(&self.node);
        }
    }
}

/// A TCP proxy in front of the API server that can cut one speaker off
/// (existing connections closed, new ones dropped) while others stay
/// connected: in-process, every client shares 127.0.0.1, so the API
/// server's per-address blocking cannot single one out.
struct CutProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    generation: Arc<Mutex<CancellationToken>>,
}

impl CutProxy {
    async fn start(upstream: SocketAddr, stop: CancellationToken) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(Mutex::new(CancellationToken::new()));
        let (c, g) = (cut.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                };
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: connection closed at once
                }
                let token = g.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Self {
            addr,
            cut,
            generation,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let mut g = self.generation.lock().unwrap();
        g.cancel();
        *g = CancellationToken::new();
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    fn client(&self) -> Client {
        client_for(&url::Url::parse(&format!("http://{}/", self.addr)).unwrap()).unwrap()
    }
}

struct Lab {
    server: ApiServer,
    client: Client,
    world: Arc<Mutex<World>>,
    url: url::Url,
    _stop: CancellationToken,
}

fn vip(i: u8) -> IpAddr {
    IpAddr::from([198, 18, 0, i])
}

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

async fn lab() -> Lab {
    l2lb::telemetry::init_tracing();
    let server = ApiServer::with_l2lb_crds();
    let (url, stop) = server.start_local().await.unwrap();
    let client = client_for(&url).unwrap();
    let pp = PostParams::default();
    let nodes: Api<Node> = Api::all(client.clone());
    for n in NODES {
        let node: Node = fixtures::node(n).build();
        nodes.create(&pp, &node).await.unwrap();
        let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        nodes
            .patch_status(n, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }
    let pools: Api<IPAddressPool> = Api::namespaced(client.clone(), NS);
    pools
        .create(&pp, &fixtures::pool("lab", &["198.18.0.0/24"]).build())
        .await
        .unwrap();
    let ads: Api<L2Advertisement> = Api::namespaced(client.clone(), NS);
    ads.create(&pp, &fixtures::advertisement("all").build())
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    for i in 1..=VIPS {
        let name = format!("svc-{i}");
        services
            .create(&pp, &fixtures::service(&name).build())
            .await
            .unwrap();
        let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": vip(i).to_string()}]}}});
        services
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
        slices
            .create(
                &pp,
                &fixtures::slice(&name, &format!("{name}-1"), &["node-a"]).build(),
            )
            .await
            .unwrap();
    }
    Lab {
        server,
        client,
        world: Arc::default(),
        url,
        _stop: stop,
    }
}

fn config(node: &str) -> SpeakerConfig {
    let mut c = SpeakerConfig::new(node);
    c.lease_duration = Duration::from_secs(2);
    c.lease_renew = Duration::from_millis(200);
    c.fence_margin = Duration::from_millis(500);
    c.takeover_delay = Duration::from_millis(200);
    c.default_interface = Some("eth0".into());
    c.interfaces = Some(BTreeSet::from(["eth0".to_string()]));
    c
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<Result<(), l2lb::speaker::SpeakerError>>,
}

fn start(lab: &Lab, node: &str, client: Client) -> Running {
    start_with(lab, config(node), client)
}

fn start_with(lab: &Lab, config: SpeakerConfig, client: Client) -> Running {
    let stop = CancellationToken::new();
    let announcer = Arc::new(FakeAnnouncer {
        node: config.node_name.clone(),
        world: lab.world.clone(),
    });
    let task = tokio::spawn(run(config, client, announcer, stop.clone()));
    Running { stop, task }
}

/// The expected owner of every VIP among `members`.
fn expected(members: &[&str]) -> BTreeMap<IpAddr, BTreeSet<String>> {
    (1..=VIPS)
        .map(|i| {
            let o = election::owner(vip(i), members.iter().copied()).unwrap();
            (vip(i), BTreeSet::from([o.to_string()]))
        })
        .collect()
}

fn holders(lab: &Lab) -> BTreeMap<IpAddr, BTreeSet<String>> {
    let w = lab.world.lock().unwrap();
    w.holders
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(v, h)| (*v, h.clone()))
        .collect()
}

async fn converge(lab: &Lab, members: &[&str]) {
    let want = expected(members);
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        if holders(lab) == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "did not converge to {members:?}: have {:?}",
            holders(lab)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_no_violations(lab: &Lab) {
    let w = lab.world.lock().unwrap();
    assert!(
        w.violations.is_empty(),
        "double announcements: {:#?}",
        w.violations
    );
}

/// Waits until the ServiceL2Status objects name exactly the expected owners.
async fn statuses_converge(lab: &Lab, members: &[&str]) {
    let api: Api<ServiceL2Status> = Api::namespaced(lab.client.clone(), NS);
    let want: BTreeSet<(String, String)> = (1..=VIPS)
        .map(|i| {
            let o = election::owner(vip(i), members.iter().copied()).unwrap();
            (format!("svc-{i}"), o.to_string())
        })
        .collect();
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let have: BTreeSet<(String, String)> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|s| {
                let l = s.metadata.labels.unwrap_or_default();
                (
                    l[STATUS_SERVICE_NAME_LABEL].clone(),
                    l[STATUS_NODE_LABEL].clone(),
                )
            })
            .collect();
        if have == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "statuses: have {have:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vip_announced_by_exactly_its_rendezvous_owner() {
    let lab = lab().await;
    let speakers: Vec<Running> = NODES
        .iter()
        .map(|n| start(&lab, n, client_for(&lab.url).unwrap()))
        .collect();
    converge(&lab, &NODES).await;
    statuses_converge(&lab, &NODES).await;
    // Each Service got a nodeAssigned Event naming its owner.
    let events: Api<Event> = Api::namespaced(lab.client.clone(), "default");
    let assigned = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("nodeAssigned"))
        .count();
    assert!(
        assigned >= usize::from(VIPS),
        "only {assigned} nodeAssigned events"
    );
    // The speaker never writes Services.
    let counts = lab.server.requests();
    for verb in ["create", "update", "patch", "delete"] {
        for res in ["services", "services/status"] {
            let n = counts.get(verb, res);
            // The lab setup itself created and patched each Service once.
            let setup = match (verb, res) {
                ("create", "services") | ("patch", "services/status") => u64::from(VIPS),
                _ => 0,
            };
            assert_eq!(n, setup, "{verb} {res}");
        }
    }
    for s in speakers {
        s.stop.cancel();
        s.task.await.unwrap().unwrap();
    }
    assert!(holders(&lab).is_empty(), "shutdown withdraws everything");
    assert_no_violations(&lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_hands_vips_to_the_next_owner() {
    let lab = lab().await;
    let mut speakers: BTreeMap<&str, Running> = NODES
        .iter()
        .map(|n| (*n, start(&lab, n, client_for(&lab.url).unwrap())))
        .collect();
    converge(&lab, &NODES).await;
    let a = speakers.remove("node-a").unwrap();
    a.stop.cancel();
    a.task.await.unwrap().unwrap();
    // The lease is released, not left to expire.
    let leases: Api<Lease> = Api::namespaced(lab.client.clone(), NS);
    let lease = leases.get("l2lb-speaker-node-a").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some(""));
    converge(&lab, &["node-b", "node-c"]).await;
    statuses_converge(&lab, &["node-b", "node-c"]).await;
    for (_, s) in speakers {
        s.stop.cancel();
        s.task.await.unwrap().unwrap();
    }
    assert_no_violations(&lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaker_cut_from_api_fences_before_peers_take_over() {
    let lab = lab().await;
    let stop = CancellationToken::new();
    let upstream: SocketAddr = format!(
        "{}:{}",
        lab.url.host_str().unwrap(),
        lab.url.port().unwrap()
    )
    .parse()
    .unwrap();
    let proxy = CutProxy::start(upstream, stop.clone()).await;
    let mut speakers = vec![start(&lab, "node-a", proxy.client())];
    for n in ["node-b", "node-c"] {
        speakers.push(start(&lab, n, client_for(&lab.url).unwrap()));
    }
    converge(&lab, &NODES).await;
    proxy.cut();
    // node-a keeps running but cannot reach the API: it must withdraw on its
    // own, and its peers take its VIPs only afterwards (checked at each announce).
    converge(&lab, &["node-b", "node-c"]).await;
    assert_no_violations(&lab);
    proxy.restore();
    converge(&lab, &NODES).await;
    assert_no_violations(&lab);
    statuses_converge(&lab, &NODES).await;
    for s in speakers {
        s.stop.cancel();
        s.task.await.unwrap().unwrap();
    }
    stop.cancel();
    assert_no_violations(&lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selectors_exclusion_label_and_interfaces_restrict_the_owner() {
    let lab = lab().await;
    let mut with_eth1 = config("node-c");
    with_eth1.interfaces = Some(BTreeSet::from(["eth0".to_string(), "eth1".to_string()]));
    let speakers = vec![
        start(&lab, "node-a", client_for(&lab.url).unwrap()),
        start(&lab, "node-b", client_for(&lab.url).unwrap()),
        start_with(&lab, with_eth1, client_for(&lab.url).unwrap()),
    ];
    converge(&lab, &NODES).await;
    let ads: Api<L2Advertisement> = Api::namespaced(lab.client.clone(), NS);
    let set_spec = |spec: serde_json::Value| {
        let ads = ads.clone();
        async move {
            // A merge patch cannot drop list fields reliably: replace the spec.
            let mut ad = ads.get("all").await.unwrap();
            ad.spec = obj(spec);
            ads.replace("all", &PostParams::default(), &ad)
                .await
                .unwrap();
        }
    };
    let hostname_in = |names: &[&str]| {
        json!({"nodeSelectors": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": names}
        ]}]})
    };

    set_spec(hostname_in(&["node-b"])).await;
    converge(&lab, &["node-b"]).await;
    statuses_converge(&lab, &["node-b"]).await;

    set_spec(hostname_in(&["node-b", "node-c"])).await;
    converge(&lab, &["node-b", "node-c"]).await;

    let nodes: Api<Node> = Api::all(lab.client.clone());
    let label = |value: serde_json::Value| json!({"metadata": {"labels": {"node.kubernetes.io/exclude-from-external-load-balancers": value}}});
    nodes
        .patch(
            "node-b",
            &PatchParams::default(),
            &Patch::Merge(&label(json!(""))),
        )
        .await
        .unwrap();
    converge(&lab, &["node-c"]).await;
    nodes
        .patch(
            "node-b",
            &PatchParams::default(),
            &Patch::Merge(&label(json!(null))),
        )
        .await
        .unwrap();
    converge(&lab, &["node-b", "node-c"]).await;

    // Only node-c has eth1 (published on its Lease): it alone may answer.
    set_spec(json!({"interfaces": ["eth1"]})).await;
    converge(&lab, &["node-c"]).await;
    set_spec(json!({})).await;
    converge(&lab, &NODES).await;
    statuses_converge(&lab, &NODES).await;

    for s in speakers {
        s.stop.cancel();
        s.task.await.unwrap().unwrap();
    }
    // Moves between live nodes wait out the takeover delay: the old owner
    // has withdrawn before the new one announces.
    assert_no_violations(&lab);
}

/// The VIPs a speaker's `l2lb_speaker_announced` series name, with the
/// node label each carries.
fn announced_series(
    registry: &prometheus_client::registry::Registry,
) -> BTreeSet<(IpAddr, String)> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    let label = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        line[start..].split('"').next().unwrap().to_string()
    };
    text.lines()
        .filter(|l| l.starts_with("l2lb_speaker_announced{"))
        .map(|l| (label(l, "ip").parse().unwrap(), label(l, "node")))
        .collect()
}

/// What the alerts join on: each speaker's per-VIP series name exactly the
/// VIPs its announcer answers for, follow a hand-over, and vanish when the
/// speaker stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_series_follow_what_each_speaker_announces() {
    let lab = lab().await;
    let mut registries = BTreeMap::new();
    let mut speakers = BTreeMap::new();
    for n in NODES {
        let c = config(n);
        let mut registry = prometheus_client::registry::Registry::default();
        c.metrics.register(&mut registry);
        registries.insert(n, registry);
        speakers.insert(n, start_with(&lab, c, client_for(&lab.url).unwrap()));
    }
    let series_match = |members: &[&str]| {
        let want = expected(members);
        registries.iter().all(|(node, registry)| {
            let mine: BTreeSet<(IpAddr, String)> = want
                .iter()
                .filter(|(_, owners)| owners.contains(*node))
                .map(|(vip, _)| (*vip, node.to_string()))
                .collect();
            announced_series(registry) == mine
        })
    };
    converge(&lab, &NODES).await;
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while !series_match(&NODES) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "series never matched the announcers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = speakers.remove("node-a").unwrap();
    a.stop.cancel();
    a.task.await.unwrap().unwrap();
    assert!(
        announced_series(&registries["node-a"]).is_empty(),
        "a stopped speaker still reports announcements"
    );
    converge(&lab, &["node-b", "node-c"]).await;
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while !series_match(&["node-b", "node-c"]) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "series did not follow the hand-over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (_, s) in speakers {
        s.stop.cancel();
        s.task.await.unwrap().unwrap();
    }
    assert_no_violations(&lab);
}
