//! The controller against the embedded test API server: allocation at
//! scale, restarts, leadership hand-over, sharing, requests and pool edits.

mod fixtures;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use l2lb::api::IPAddressPool;
use l2lb::controller::{ControllerConfig, run};
use l2lb::lab::apiserver::{ApiServer, client_for};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NS: &str = "l2lb-system";

async fn setup() -> (ApiServer, Client, CancellationToken) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = ApiServer::with_l2lb_crds();
    let (url, stop) = server.start_local().await.expect("start API server");
    let client = client_for(&url).expect("client");
    (server, client, stop)
}

fn config(identity: &str) -> ControllerConfig {
    // Telemetry is the caller's to serve; these tests do not.
    ControllerConfig {
        namespace: NS.into(),
        lease_duration: Duration::from_secs(2),
        ..ControllerConfig::new(identity)
    }
}

fn start_controller(
    client: &Client,
    identity: &str,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let token = CancellationToken::new();
    let handle = tokio::spawn({
        let (client, token, cfg) = (client.clone(), token.clone(), config(identity));
        async move {
            run(cfg, client, token).await.expect("controller runs");
        }
    });
    (token, handle)
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn add_pool(client: &Client, name: &str, addresses: &[&str], extra: serde_json::Value) {
    let pool: IPAddressPool = fixtures::pool(name, addresses)
        .namespace(NS)
        .spec(extra)
        .build();
    Api::<IPAddressPool>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &pool)
        .await
        .expect("create pool");
}

fn service(name: &str, annotations: serde_json::Value, spec: serde_json::Value) -> Service {
    fixtures::service(name)
        .merge(json!({ "metadata": { "annotations": annotations } }))
        .spec(spec)
        .build()
}

async fn create(client: &Client, svc: &Service) {
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), svc)
        .await
        .expect("create service");
}

async fn ips(client: &Client) -> BTreeMap<String, Vec<String>> {
    let list = Api::<Service>::namespaced(client.clone(), "default")
        .list(&Default::default())
        .await
        .unwrap();
    list.items
        .into_iter()
        .map(|s| {
            let ips = s
                .status
                .and_then(|st| st.load_balancer)
                .and_then(|lb| lb.ingress)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| i.ip)
                .collect();
            (s.metadata.name.unwrap_or_default(), ips)
        })
        .collect()
}

async fn ip_of(client: &Client, name: &str) -> Vec<String> {
    ips(client).await.remove(name).unwrap_or_default()
}

async fn event_notes(client: &Client, service: &str, reason: &str) -> Vec<String> {
    let list = Api::<Event>::namespaced(client.clone(), "default")
        .list(&Default::default())
        .await
        .unwrap();
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(service))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.note.unwrap_or_default())
        .collect()
}

fn assert_no_duplicates(all: &BTreeMap<String, Vec<String>>) {
    let mut seen = BTreeMap::new();
    for (svc, list) in all {
        for ip in list {
            if let Some(other) = seen.insert(ip.clone(), svc.clone()) {
                panic!("{ip} held by both {other} and {svc}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_services_get_distinct_ips_and_the_next_waits_for_a_free_one() {
    let (server, client, _stop) = setup().await;
    // 198.18.0.0 .. 198.18.3.231 is exactly 1000 addresses.
    add_pool(&client, "big", &["198.18.0.0-198.18.3.231"], json!({})).await;
    let (_ctl, _h) = start_controller(&client, "c1");
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let client = client.clone();
        creates.spawn(async move {
            create(&client, &service(&format!("s{i:04}"), json!({}), json!({}))).await
        });
    }
    while let Some(r) = creates.join_next().await {
        r.unwrap();
    }
    eventually(
        "1000 services have an IP",
        Duration::from_secs(120),
        || async {
            ips(&client)
                .await
                .values()
                .filter(|v| !v.is_empty())
                .count()
                == 1000
        },
    )
    .await;
    let all = ips(&client).await;
    assert_no_duplicates(&all);
    // Nothing else changes these Services, so one write each: deciding
    // again on a cached copy older than our own write would write twice.
    assert_eq!(server.requests().get("patch", "services/status"), 1000);

    create(&client, &service("late", json!({}), json!({}))).await;
    eventually(
        "AllocationFailed on the 1001st",
        Duration::from_secs(20),
        || async {
            event_notes(&client, "late", "AllocationFailed")
                .await
                .iter()
                .any(|n| n.contains("exhausted") || n.contains("no free"))
        },
    )
    .await;
    assert!(ip_of(&client, "late").await.is_empty());
    let freed = ip_of(&client, "s0500").await;
    Api::<Service>::namespaced(client.clone(), "default")
        .delete("s0500", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the waiting service gets the freed IP",
        Duration::from_secs(20),
        || async { ip_of(&client, "late").await == freed },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_keeps_every_ip_and_writes_nothing() {
    let (server, client, _stop) = setup().await;
    add_pool(
        &client,
        "default",
        &["198.18.0.100-198.18.0.140"],
        json!({}),
    )
    .await;
    let (ctl, h) = start_controller(&client, "first");
    for i in 0..20 {
        create(&client, &service(&format!("s{i}"), json!({}), json!({}))).await;
    }
    eventually(
        "20 services have an IP",
        Duration::from_secs(20),
        || async {
            ips(&client)
                .await
                .values()
                .filter(|v| !v.is_empty())
                .count()
                == 20
        },
    )
    .await;
    let before = ips(&client).await;
    ctl.cancel();
    h.await.unwrap();

    server.reset_requests();
    let (_ctl2, _h2) = start_controller(&client, "second");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), NS);
    eventually("the new replica leads", Duration::from_secs(20), || async {
        leases
            .get("l2lb-controller")
            .await
            .ok()
            .and_then(|l| l.spec?.holder_identity)
            .as_deref()
            == Some("second")
    })
    .await;
    // A fresh Service proves the new leader has finished its start.
    create(&client, &service("probe", json!({}), json!({}))).await;
    eventually("probe gets an IP", Duration::from_secs(20), || async {
        !ip_of(&client, "probe").await.is_empty()
    })
    .await;
    let mut after = ips(&client).await;
    after.remove("probe");
    assert_eq!(before, after, "a restart must not move any IP");
    let status_writes: u64 = server
        .requests()
        .by_key
        .iter()
        .filter(|((verb, res), _)| {
            res == "services/status" && verb != "get" && verb != "list" && verb != "watch"
        })
        .map(|(_, n)| *n)
        .sum();
    assert_eq!(
        status_writes, 1,
        "only the probe's status may be written after a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_one_leads_and_the_other_takes_over_when_it_dies() {
    let (_server, client, _stop) = setup().await;
    add_pool(
        &client,
        "default",
        &["198.18.0.100-198.18.0.140"],
        json!({}),
    )
    .await;
    let (_a, ha) = start_controller(&client, "a");
    let (b, hb) = start_controller(&client, "b");
    for i in 0..5 {
        create(&client, &service(&format!("s{i}"), json!({}), json!({}))).await;
    }
    eventually("5 IPs", Duration::from_secs(20), || async {
        ips(&client)
            .await
            .values()
            .filter(|v| !v.is_empty())
            .count()
            == 5
    })
    .await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), NS);
    let leader = leases
        .get("l2lb-controller")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    // Kill the leader without a step-down: the standby must wait out the lease.
    if leader == "a" {
        ha.abort();
    } else {
        hb.abort();
        b.cancel();
    }
    for i in 5..10 {
        create(&client, &service(&format!("s{i}"), json!({}), json!({}))).await;
    }
    eventually(
        "the standby allocates new services",
        Duration::from_secs(30),
        || async {
            let all = ips(&client).await;
            assert_no_duplicates(&all);
            all.values().filter(|v| !v.is_empty()).count() == 10
        },
    )
    .await;
    let now = leases
        .get("l2lb-controller")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    assert_ne!(now, leader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_requests_aliases_and_bad_requests() {
    let (_server, client, _stop) = setup().await;
    add_pool(
        &client,
        "default",
        &[
            "198.18.0.100-198.18.0.120",
            "fd00:198:18::100-fd00:198:18::120",
        ],
        json!({}),
    )
    .await;
    add_pool(
        &client,
        "manual",
        &["198.18.1.0/28"],
        json!({ "autoAssign": false }),
    )
    .await;
    let (_ctl, _h) = start_controller(&client, "c");
    let shared = |name: &str, port: u16| {
        let mut s = service(
            name,
            json!({ "l2lb.io/allow-shared-ip": "web", "l2lb.io/loadBalancerIPs": "198.18.0.110" }),
            json!({}),
        );
        s.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = port.into();
        s
    };
    create(&client, &shared("http", 80)).await;
    eventually(
        "http gets the shared IP",
        Duration::from_secs(10),
        || async { ip_of(&client, "http").await == ["198.18.0.110"] },
    )
    .await;
    create(&client, &shared("https", 443)).await;
    create(&client, &shared("clash", 80)).await;
    create(
        &client,
        &service(
            "alias",
            json!({ "metallb.io/loadBalancerIPs": "198.18.1.5" }),
            json!({}),
        ),
    )
    .await;
    create(
        &client,
        &service(
            "outside",
            json!({ "l2lb.io/loadBalancerIPs": "198.18.9.9" }),
            json!({}),
        ),
    )
    .await;
    create(
        &client,
        &service(
            "pool-by-name",
            json!({ "metallb.universe.tf/address-pool": "manual" }),
            json!({}),
        ),
    )
    .await;
    create(
        &client,
        &service(
            "dual",
            json!({}),
            json!({ "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack" }),
        ),
    )
    .await;
    create(
        &client,
        &service(
            "other-class",
            json!({}),
            json!({ "loadBalancerClass": "other.io/lb" }),
        ),
    )
    .await;
    eventually(
        "https shares, alias and pool requests honoured, dual-stack gets both",
        Duration::from_secs(10),
        || async {
            let all = ips(&client).await;
            all["https"] == ["198.18.0.110"]
                && all["alias"] == ["198.18.1.5"]
                && all["pool-by-name"] == ["198.18.1.0"]
                && all["dual"].len() == 2
        },
    )
    .await;
    eventually(
        "clash fails naming http",
        Duration::from_secs(10),
        || async {
            event_notes(&client, "clash", "AllocationFailed")
                .await
                .iter()
                .any(|n| n.contains("default/http"))
        },
    )
    .await;
    eventually(
        "an out-of-pool request fails with an event",
        Duration::from_secs(10),
        || async {
            event_notes(&client, "outside", "AllocationFailed")
                .await
                .iter()
                .any(|n| n.contains("198.18.9.9"))
        },
    )
    .await;
    let all = ips(&client).await;
    assert!(all["clash"].is_empty() && all["outside"].is_empty() && all["other-class"].is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_edits_move_or_clear_services_and_report_overlaps() {
    let (_server, client, _stop) = setup().await;
    add_pool(&client, "a", &["198.18.0.100-198.18.0.101"], json!({})).await;
    let (_ctl, _h) = start_controller(&client, "c");
    create(&client, &service("s0", json!({}), json!({}))).await;
    create(&client, &service("s1", json!({}), json!({}))).await;
    eventually("both allocated", Duration::from_secs(10), || async {
        ips(&client).await.values().all(|v| v.len() == 1) && ips(&client).await.len() == 2
    })
    .await;
    let pools: Api<IPAddressPool> = Api::namespaced(client.clone(), NS);
    // Shrink: .101 leaves the pool, so its holder moves to the new range.
    pools
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({ "spec": { "addresses": ["198.18.0.100/32", "198.18.0.110/32"] } }),
            ),
        )
        .await
        .unwrap();
    eventually("the orphan moves", Duration::from_secs(10), || async {
        let vals: BTreeSet<Vec<String>> = ips(&client).await.into_values().collect();
        vals == BTreeSet::from([
            vec!["198.18.0.100".to_string()],
            vec!["198.18.0.110".to_string()],
        ])
    })
    .await;
    add_pool(&client, "b", &["198.18.0.100-198.18.0.103"], json!({})).await;
    eventually(
        "b is reported as overlapping a",
        Duration::from_secs(10),
        || async {
            pools
                .get("b")
                .await
                .ok()
                .and_then(|p| p.status)
                .is_some_and(|s| {
                    s.conditions.iter().any(|c| {
                        c.type_ == "Overlapping" && c.status == "True" && c.message.contains('a')
                    })
                })
        },
    )
    .await;
    pools.delete("a", &DeleteParams::default()).await.unwrap();
    eventually(
        "services move to b or are cleared",
        Duration::from_secs(10),
        || async {
            let all = ips(&client).await;
            assert_no_duplicates(&all);
            all.values().flatten().all(|ip| {
                [
                    "198.18.0.100",
                    "198.18.0.101",
                    "198.18.0.102",
                    "198.18.0.103",
                ]
                .contains(&ip.as_str())
            })
        },
    )
    .await;
    let status = pools.get("b").await.unwrap().status.unwrap_or_default();
    let _ = status.assigned_ipv4;
    let svc_names: Vec<String> = Api::<Service>::namespaced(client.clone(), "default")
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| s.name_any())
        .collect();
    assert_eq!(svc_names.len(), 2);
}

/// A fresh install has no fast-path Secret: both replicas race to create
/// it, one wins, and it holds a key file the speakers accept. An existing
/// Secret (an operator's own key) is never touched.
#[tokio::test]
async fn controllers_generate_the_fastpath_secret_once_and_keep_an_existing_one() {
    use k8s_openapi::api::core::v1::Secret;
    use l2lb::fastpath::keyfile::{SECRET_KEY, parse_keys};
    let (_server, client, _stop) = setup().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let keys_of = |s: Secret| -> String {
        let data = s
            .data
            .expect("data")
            .remove(SECRET_KEY)
            .expect("keys entry");
        String::from_utf8(data.0).expect("text")
    };
    let (a, ha) = start_controller(&client, "a");
    let (b, hb) = start_controller(&client, "b");
    eventually("the Secret", Duration::from_secs(10), || async {
        secrets.get_opt("l2lb-fastpath").await.unwrap().is_some()
    })
    .await;
    let first = secrets.get("l2lb-fastpath").await.unwrap();
    let version = first.resource_version();
    let text = keys_of(first);
    let ring = parse_keys(&text).expect("a key file the speakers accept");
    assert_eq!(ring.key_ids(), [1]);
    a.cancel();
    b.cancel();
    let _ = (ha.await, hb.await);
    // A restart finds it and leaves it as it is.
    let (c, hc) = start_controller(&client, "c");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = secrets.get("l2lb-fastpath").await.unwrap();
    assert_eq!(again.resource_version(), version);
    assert_eq!(keys_of(again), text);
    c.cancel();
    let _ = hc.await;

    // An operator's own Secret, created before the install, stays.
    secrets
        .delete("l2lb-fastpath", &DeleteParams::default())
        .await
        .unwrap();
    let own = "2:an operator's own secret, long enough\n";
    let mut mine: Secret = serde_json::from_value(json!({
        "metadata": { "name": "l2lb-fastpath", "namespace": NS },
    }))
    .unwrap();
    mine.data = Some(BTreeMap::from([(
        SECRET_KEY.to_string(),
        k8s_openapi::ByteString(own.as_bytes().to_vec()),
    )]));
    secrets.create(&PostParams::default(), &mine).await.unwrap();
    let (d, hd) = start_controller(&client, "d");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(keys_of(secrets.get("l2lb-fastpath").await.unwrap()), own);
    d.cancel();
    let _ = hd.await;
}
