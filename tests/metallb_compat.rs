//! MetalLB's own allocation tests, replayed against `l2lb controller` and
//! the embedded test API server: MetalLB's controller unit cases
//! (`controller/controller_test.go`) and its layer-2 e2e assignment tests
//! (`e2etest/l2tests/assignment.go`). Each case names the MetalLB file and
//! test it comes from; only the facts carry over. Where our pools may not
//! overlap (the older pool owns shared addresses), MetalLB's overlapping
//! dual-stack pool gets addresses of its own; where we deliberately differ,
//! the case says so and README "Differences from MetalLB" explains why.
//! The allocator-level cases of `internal/allocator/allocator_test.go` are
//! unit tests in `src/ipam/metallb_cases.rs`.

mod fixtures;

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use l2lb::api::IPAddressPool;
use l2lb::controller::{ControllerConfig, run};
use l2lb::lab::apiserver::services::Stack;
use l2lb::lab::apiserver::{ApiServer, client_for};
use serde_json::{Value, json};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NS: &str = "l2lb-system";
const WAIT: Duration = Duration::from_secs(10);

/// An API server with our CRDs and a running controller.
struct World {
    client: Client,
    /// Stops the API server when dropped.
    _server: (ApiServer, CancellationToken),
    controller: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl World {
    async fn new() -> Self {
        let server = ApiServer::with_l2lb_crds();
        let (url, stop) = server.start_local().await.expect("start API server");
        let client = client_for(&url).expect("client");
        let (controller, task) = start_controller(&client);
        Self {
            client,
            _server: (server, stop),
            controller,
            task,
        }
    }

    /// Stops the controller and starts a new one (a restart).
    async fn restart_controller(&mut self) {
        self.controller.cancel();
        (&mut self.task).await.expect("controller stops");
        let (controller, task) = start_controller(&self.client);
        self.controller = controller;
        self.task = task;
    }

    fn pools(&self) -> Api<IPAddressPool> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn services(&self, ns: &str) -> Api<Service> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Creates or replaces pool `name` with `spec` (merged over `addresses`).
    async fn pool(&self, name: &str, addresses: &[&str], spec: Value) {
        let pool: IPAddressPool = fixtures::pool(name, addresses).spec(spec).build();
        let api = self.pools();
        match api.get_opt(name).await.expect("get pool") {
            None => {
                api.create(&PostParams::default(), &pool)
                    .await
                    .expect("create pool");
            }
            Some(old) => {
                let mut new = pool;
                new.metadata.resource_version = old.metadata.resource_version;
                api.replace(name, &PostParams::default(), &new)
                    .await
                    .expect("replace pool");
            }
        }
    }

    async fn delete_pool(&self, name: &str) {
        self.pools()
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete pool");
    }

    async fn namespace(&self, name: &str, labels: Value) {
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        }))
        .unwrap();
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
    }

    /// Creates `svc`; with `status`, first as a NodePort Service whose
    /// status already holds `status` (as another controller or an older
    /// version left it), then turned into a LoadBalancer.
    async fn create(&self, svc: &Service, status: Option<Value>) {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let api = self.services(&ns);
        let Some(ingress) = status else {
            api.create(&PostParams::default(), svc)
                .await
                .expect("create service");
            return;
        };
        let mut first = svc.clone();
        let lb_type = first
            .spec
            .as_mut()
            .and_then(|s| s.type_.replace("NodePort".into()));
        api.create(&PostParams::default(), &first)
            .await
            .expect("create service");
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": ingress}}})),
        )
        .await
        .expect("write status");
        self.patch(&ns, &name, json!({"spec": {"type": lb_type}}))
            .await;
    }

    async fn patch(&self, ns: &str, name: &str, patch: Value) {
        self.services(ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("patch service");
    }

    async fn delete(&self, ns: &str, name: &str) {
        self.services(ns)
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete service");
    }

    /// The IPs in the Service's status.
    async fn ips(&self, ns: &str, name: &str) -> Vec<String> {
        let Some(svc) = self.services(ns).get_opt(name).await.expect("get") else {
            return Vec::new();
        };
        svc.status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.ip)
            .collect()
    }

    /// Notes of the Events with `reason` on Service `ns/name`.
    async fn notes(&self, ns: &str, name: &str, reason: &str) -> Vec<String> {
        let list = Api::<Event>::namespaced(self.client.clone(), ns)
            .list(&Default::default())
            .await
            .expect("list events");
        list.items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| e.note.unwrap_or_default())
            .collect()
    }

    async fn wait_ips(&self, ns: &str, name: &str, want: &[&str], what: &str) {
        eventually(what, || async { self.ips(ns, name).await == want }).await;
    }

    async fn wait_event(&self, ns: &str, name: &str, reason: &str, what: &str) -> Vec<String> {
        eventually(what, || async {
            !self.notes(ns, name, reason).await.is_empty()
        })
        .await;
        self.notes(ns, name, reason).await
    }

    /// Waits until the Service holds one IP inside `range` (a prefix of
    /// the addresses, as MetalLB's `ValidateIPInRange` checks the pool).
    async fn wait_ip_in(&self, ns: &str, name: &str, prefix: &str, what: &str) -> String {
        eventually(what, || async {
            let ips = self.ips(ns, name).await;
            ips.len() == 1 && ips[0].starts_with(prefix)
        })
        .await;
        self.ips(ns, name).await.remove(0)
    }
}

fn start_controller(client: &Client) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let token = CancellationToken::new();
    let cfg = ControllerConfig {
        namespace: NS.into(),
        lease_duration: Duration::from_secs(2),
        ..ControllerConfig::new("compat")
    };
    let task = tokio::spawn({
        let (client, token) = (client.clone(), token.clone());
        async move { run(cfg, client, token).await.expect("controller runs") }
    });
    (token, task)
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A LoadBalancer Service `ns/name` with `annotations` and `spec` merged
/// over the shared fixture.
fn service(ns: &str, name: &str, annotations: Value, spec: Value) -> Service {
    fixtures::service(name)
        .namespace(ns)
        .merge(json!({"metadata": {"annotations": annotations}}))
        .spec(spec)
        .build()
}

/// What a case expects.
#[derive(Debug)]
enum Want {
    /// These IPs in status, in this order.
    Ips(&'static [&'static str]),
    /// An `AllocationFailed` Event and no address.
    Fails,
    /// These IPs, and a warning Event (`ClearAssignment`) whose note
    /// contains the text.
    IpsWarned(&'static [&'static str], &'static str),
    /// Not ours: no address and no Event.
    Ignored,
}

/// One case of MetalLB's `TestControllerMutation`.
struct Case {
    /// MetalLB's description.
    metallb: &'static str,
    ns: &'static str,
    labels: Value,
    annotations: Value,
    spec: Value,
    /// Ingress already in status (MetalLB's `in.Status`).
    status: Option<Value>,
    /// MetalLB's case runs in a single-stack cluster (one ClusterIP).
    single_stack: bool,
    want: Want,
}

fn case(metallb: &'static str, annotations: Value, spec: Value, want: Want) -> Case {
    Case {
        metallb,
        ns: "default",
        labels: Value::Null,
        annotations,
        spec,
        status: None,
        single_stack: false,
        want,
    }
}

fn ingress(ips: &[&str]) -> Value {
    Value::Array(ips.iter().map(|ip| json!({"ip": ip})).collect())
}

const V4: &[&str] = &["IPv4"];
const V6: &[&str] = &["IPv6"];
const DUAL: &[&str] = &["IPv4", "IPv6"];

/// `controller/controller_test.go` `TestControllerMutation`: every input
/// Service against one fixed pool set, in MetalLB's order. MetalLB's
/// `ClusterIPs` family becomes `spec.ipFamilies` (what the API server
/// derives it from). pool5 overlaps pool1 and pool3 in MetalLB; here it has
/// its own addresses (1.2.3.8/31, 1000::8/127).
fn mutation_cases() -> Vec<Case> {
    use Want::*;
    let none = Value::Null;
    let fam = |f: &[&str]| json!({"ipFamilies": f});
    let with = |mut spec: Value, extra: Value| {
        json_patch::merge(&mut spec, &extra);
        spec
    };
    let lbip = |ip: &str, f: &[&str]| json!({"loadBalancerIP": ip, "ipFamilies": f});
    let ips_ann = |v: &str| json!({"metallb.io/loadBalancerIPs": v});
    let pool_ann = |v: &str| json!({"metallb.io/address-pool": v});
    let require = |f: &[&str]| json!({"ipFamilies": f, "ipFamilyPolicy": "RequireDualStack"});
    let prefer = |f: &[&str]| json!({"ipFamilies": f, "ipFamilyPolicy": "PreferDualStack"});
    vec![
        case(
            "simple non-LoadBalancer",
            none.clone(),
            json!({"type": "ClusterIP"}),
            Ignored,
        ),
        case(
            "simple LoadBalancer",
            none.clone(),
            fam(V4),
            Ips(&["1.2.3.0"]),
        ),
        case(
            "request specific IP",
            none.clone(),
            lbip("1.2.3.1", V4),
            Ips(&["1.2.3.1"]),
        ),
        case(
            "request specific IP via custom annotation",
            ips_ann("1.2.3.1"),
            fam(V4),
            Ips(&["1.2.3.1"]),
        ),
        case(
            "request IP from both svc.spec.LoadBalancerIP and custom annotation",
            ips_ann("1.2.3.1"),
            lbip("1.2.3.2", V4),
            Fails,
        ),
        case(
            "request invalid IP",
            none.clone(),
            lbip("please sir may I have an IP address thank you", V4),
            Fails,
        ),
        case(
            "incompatible ip and address pool annotations",
            json!({"metallb.io/loadBalancerIPs": "1.2.3.1", "metallb.io/address-pool": "pool2"}),
            fam(V4),
            Fails,
        ),
        case(
            "request invalid IP via custom annotation",
            ips_ann("please sir may I have an IP address thank you"),
            fam(V4),
            Fails,
        ),
        case(
            "request two IPs from same ip family via custom annotation",
            ips_ann("1.2.3.1,1.2.3.2"),
            fam(V4),
            Fails,
        ),
        Case {
            status: Some(ingress(&["1.2.3.1"])),
            ..case(
                "request infeasible IP",
                none.clone(),
                lbip("1.2.3.4", V4),
                Fails,
            )
        },
        case(
            "request IP from specific pool",
            pool_ann("pool1"),
            fam(V4),
            Ips(&["1.2.3.0"]),
        ),
        Case {
            status: Some(ingress(&["1.2.3.0"])),
            ..case(
                "switch to a different specific pool",
                pool_ann("pool2"),
                fam(V4),
                Ips(&["3.4.5.6"]),
            )
        },
        case(
            "unknown pool requested",
            pool_ann("does-not-exist"),
            fam(V4),
            Fails,
        ),
        Case {
            status: Some(ingress(&["2.3.4.5"])),
            ..case(
                "invalid IP assigned",
                none.clone(),
                fam(V4),
                IpsWarned(&["1.2.3.0"], "2.3.4.5 is outside every IPAddressPool"),
            )
        },
        Case {
            status: Some(json!([{"hostname": "foo.bar.local"}, {"ip": "10.10.10.10"}])),
            ..case(
                "invalid ingress state",
                none.clone(),
                fam(V4),
                IpsWarned(&["1.2.3.0"], "10.10.10.10 is outside every IPAddressPool"),
            )
        },
        case(
            "request layer2 service",
            none.clone(),
            lbip("3.4.5.6", V4),
            Ips(&["3.4.5.6"]),
        ),
        case(
            "Layer2 service with local traffic policy",
            none.clone(),
            with(
                lbip("3.4.5.6", V4),
                json!({"externalTrafficPolicy": "Local"}),
            ),
            Ips(&["3.4.5.6"]),
        ),
        case(
            "No ClusterIP",
            none.clone(),
            json!({"clusterIPs": null}),
            Ips(&["1.2.3.0"]),
        ),
        case(
            "request IP from wrong ip-family (ipv4)",
            none.clone(),
            lbip("1.2.3.1", V6),
            Fails,
        ),
        case(
            "request IP from wrong ip-family (ipv4) via custom annotation",
            ips_ann("1.2.3.1"),
            fam(V6),
            Fails,
        ),
        case(
            "request IP from wrong ip-family (ipv6)",
            none.clone(),
            lbip("1000::", V4),
            Fails,
        ),
        case(
            "request IP from wrong ip-family (ipv6) via custom annotation",
            ips_ann("1000::"),
            fam(V4),
            Fails,
        ),
        Case {
            status: Some(ingress(&["1000::"])),
            ..case(
                "IP from wrong ip-family (ipv6) assigned",
                none.clone(),
                fam(V4),
                Ips(&["1.2.3.0"]),
            )
        },
        Case {
            status: Some(ingress(&["1.2.3.0"])),
            ..case(
                "IP from wrong ip-family (ipv4) assigned",
                none.clone(),
                fam(V6),
                Ips(&["1000::"]),
            )
        },
        case(
            "simple dual-stack LoadBalancer",
            none.clone(),
            require(DUAL),
            Ips(&["1.2.3.8", "1000::8"]),
        ),
        case(
            "request IPs from specific pool",
            pool_ann("pool5"),
            require(DUAL),
            Ips(&["1.2.3.8", "1000::8"]),
        ),
        case(
            "simple dual-stack LoadBalancer with PreferDualStack policy",
            none.clone(),
            prefer(DUAL),
            Ips(&["1.2.3.8", "1000::8"]),
        ),
        Case {
            ns: "test-ns1",
            single_stack: true,
            ..case(
                "single-stack LoadBalancer with PreferDualStack policy",
                none.clone(),
                prefer(V4),
                Ips(&["7.8.9.0"]),
            )
        },
        case(
            "request IPs from dualstack pool with PreferDualStack policy",
            pool_ann("pool5"),
            prefer(DUAL),
            Ips(&["1.2.3.8", "1000::8"]),
        ),
        case(
            "request IP from single-stack ipv4 pool with PreferDualStack policy",
            pool_ann("pool1"),
            prefer(DUAL),
            Ips(&["1.2.3.0"]),
        ),
        case(
            "request IP from single-stack ipv6 pool with PreferDualStack policy",
            pool_ann("pool3"),
            prefer(V6),
            Ips(&["1000::"]),
        ),
        Case {
            single_stack: true,
            ..case(
                "request IPs from dualstack pool with PreferDualStack policy but single stack clusterip",
                pool_ann("pool5"),
                prefer(V4),
                Ips(&["1.2.3.8"]),
            )
        },
        // Deliberate difference: MetalLB refuses RequireDualStack with one
        // ClusterIP family; the API server never produces that Service, and
        // l2lb gives RequireDualStack both families (README, Differences).
        case(
            "request IPs from dualstack pool with RequireDualStack policy but single stack clusterip",
            pool_ann("pool5"),
            require(V4),
            Ips(&["1.2.3.8", "1000::8"]),
        ),
        // Deliberate difference: a dual-stack Service (PreferDualStack,
        // what the API server requires for two ClusterIPs) that requests one
        // IPv4 address gets it; MetalLB refuses (README, Differences).
        case(
            "request specific loadbalancer IP with dual-stack",
            none.clone(),
            with(prefer(DUAL), json!({"loadBalancerIP": "1.2.3.1"})),
            Ips(&["1.2.3.1"]),
        ),
        case(
            "request specific loadbalancer IPv4 address via custom annotation for dual-stack config",
            ips_ann("1.2.3.1"),
            prefer(DUAL),
            Ips(&["1.2.3.1"]),
        ),
        case(
            "request dual-stack loadbalancer IPs via custom annotation",
            ips_ann("1.2.3.8,1000::8"),
            require(DUAL),
            Ips(&["1.2.3.8", "1000::8"]),
        ),
        Case {
            status: Some(ingress(&["1000::"])),
            ..case(
                "request dual-stack loadbalancer with invalid ingress",
                none.clone(),
                require(&["IPv6", "IPv4"]),
                Ips(&["1000::8", "1.2.3.8"]),
            )
        },
        case(
            "request dual-stack loadbalancer IPs via custom annotation in a single stack cluster",
            ips_ann("1.2.3.0,1000::"),
            fam(V4),
            Fails,
        ),
        Case {
            ns: "test-ns1",
            ..case(
                "request IP for service from namespace specific ip pool",
                none.clone(),
                fam(V4),
                Ips(&["7.8.9.0"]),
            )
        },
        Case {
            ns: "test-ns2",
            ..case(
                "request IP for service from no priority namespace specific ip pool",
                none.clone(),
                fam(V4),
                Ips(&["16.17.18.0"]),
            )
        },
        Case {
            labels: json!({"team": "metallb"}),
            ..case(
                "request IP for service from service label specific ip pool",
                none.clone(),
                fam(V4),
                Ips(&["19.20.21.0"]),
            )
        },
        Case {
            ns: "test-ns1",
            labels: json!({"team": "metallb"}),
            ..case(
                "request IP for service from ip pool having both namespace and service label",
                none.clone(),
                fam(V4),
                Ips(&["25.26.27.0"]),
            )
        },
        Case {
            status: Some(ingress(&["1.2.3.0", "1.2.3.1", "1.2.3.2"])),
            ..case(
                "simple LoadBalancer, ips already assigned but can't determine family",
                none,
                fam(V4),
                IpsWarned(&["1.2.3.0"], "3 IPv4 addresses in status"),
            )
        },
    ]
}

/// The pools of `TestControllerMutation`.
async fn mutation_pools(w: &World) {
    let scoped = |ns: Option<&str>, team: bool, prio: Option<i32>| {
        let mut sa = json!({});
        if let Some(ns) = ns {
            sa["namespaces"] = json!([ns]);
        }
        if team {
            sa["serviceSelectors"] = json!([{"matchLabels": {"team": "metallb"}}]);
        }
        if let Some(p) = prio {
            sa["priority"] = json!(p);
        }
        json!({"serviceAllocation": sa})
    };
    let manual = json!({"autoAssign": false});
    w.pool("pool1", &["1.2.3.0/31"], json!({})).await;
    w.pool("pool2", &["3.4.5.6/32"], manual.clone()).await;
    w.pool("pool3", &["1000::/127"], json!({})).await;
    w.pool("pool4", &["2000::1/128"], manual).await;
    w.pool("pool5", &["1.2.3.8/31", "1000::8/127"], json!({}))
        .await;
    w.pool(
        "pool6",
        &["7.8.9.0/31"],
        scoped(Some("test-ns1"), false, Some(10)),
    )
    .await;
    w.pool(
        "pool7",
        &["10.11.12.0/31"],
        scoped(Some("test-ns1"), false, Some(11)),
    )
    .await;
    w.pool("pool8", &["13.14.15.0/31"], scoped(None, true, Some(9)))
        .await;
    w.pool(
        "pool9",
        &["16.17.18.0/31"],
        scoped(Some("test-ns2"), false, None),
    )
    .await;
    w.pool("pool10", &["19.20.21.0/31"], scoped(None, true, Some(8)))
        .await;
    w.pool(
        "pool11",
        &["22.23.24.0/31"],
        scoped(Some("test-ns1"), true, Some(8)),
    )
    .await;
    w.pool(
        "pool12",
        &["25.26.27.0/31"],
        scoped(Some("test-ns1"), true, Some(5)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metallb_controller_mutation_cases() {
    let w = World::new().await;
    w.namespace("test-ns1", json!({})).await;
    w.namespace("test-ns2", json!({})).await;
    mutation_pools(&w).await;
    let cases = mutation_cases();
    for (i, c) in cases.iter().enumerate() {
        // A fresh Service per case, deleted after it: MetalLB reuses one
        // Service key and replaces it between cases.
        let name = format!("case-{i}");
        w._server.0.set_stack(if c.single_stack {
            Stack::Single
        } else {
            Stack::Dual
        });
        let mut svc = service(c.ns, &name, c.annotations.clone(), c.spec.clone());
        if !c.labels.is_null() {
            svc.metadata.labels = serde_json::from_value(c.labels.clone()).ok();
        }
        w.create(&svc, c.status.clone()).await;
        let what = format!(
            "controller_test.go TestControllerMutation {:?}: {:?}",
            c.metallb, c.want
        );
        match &c.want {
            Want::Ips(want) => w.wait_ips(c.ns, &name, want, &what).await,
            Want::IpsWarned(want, text) => {
                w.wait_ips(c.ns, &name, want, &what).await;
                let notes = w.wait_event(c.ns, &name, "ClearAssignment", &what).await;
                assert!(notes.iter().any(|n| n.contains(text)), "{what}: {notes:?}");
            }
            Want::Fails => {
                w.wait_event(c.ns, &name, "AllocationFailed", &what).await;
                w.wait_ips(c.ns, &name, &[], &what).await;
            }
            Want::Ignored => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                assert!(w.ips(c.ns, &name).await.is_empty(), "{what}");
                for reason in ["IPAllocated", "AllocationFailed", "ClearAssignment"] {
                    assert!(
                        w.notes(c.ns, &name, reason).await.is_empty(),
                        "{what}: {reason}"
                    );
                }
            }
        }
        w.delete(c.ns, &name).await;
    }
    assert_eq!(cases.len(), 43);
}

/// `controller/controller_test.go` TestControllerMutation "former
/// LoadBalancer, now NodePort": the address is released and cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metallb_former_load_balancer_now_node_port() {
    let w = World::new().await;
    w.pool("pool1", &["1.2.3.0/31"], json!({})).await;
    w.create(&service("default", "s", Value::Null, json!({})), None)
        .await;
    w.wait_ips("default", "s", &["1.2.3.0"], "allocated").await;
    w.patch("default", "s", json!({"spec": {"type": "NodePort"}}))
        .await;
    w.wait_ips("default", "s", &[], "cleared once NodePort")
        .await;
}

/// `e2etest/l2tests/assignment.go` "should remove the ip from a service
/// assign it to a free one when" (entries "changing the service type to
/// clusterIP" and "deleting the service").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metallb_e2e_freed_ip_goes_to_the_waiting_service() {
    for by_delete in [false, true] {
        let w = World::new().await;
        w.pool("single", &["192.168.10.0/32"], json!({})).await;
        w.create(&service("default", "first", Value::Null, json!({})), None)
            .await;
        w.wait_ips(
            "default",
            "first",
            &["192.168.10.0"],
            "first gets the only IP",
        )
        .await;
        w.create(&service("default", "second", Value::Null, json!({})), None)
            .await;
        w.wait_event("default", "second", "AllocationFailed", "second waits")
            .await;
        if by_delete {
            w.delete("default", "first").await;
        } else {
            w.patch("default", "first", json!({"spec": {"type": "ClusterIP"}}))
                .await;
        }
        w.wait_ips(
            "default",
            "second",
            &["192.168.10.0"],
            "second takes the freed IP",
        )
        .await;
    }
}

/// `e2etest/l2tests/assignment.go` "should preseve the same external ip
/// after controller restart".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metallb_e2e_restart_keeps_the_external_ip() {
    let mut w = World::new().await;
    w.pool("pool", &["192.168.10.0/30"], json!({})).await;
    w.create(&service("default", "a", Value::Null, json!({})), None)
        .await;
    w.create(&service("default", "b", Value::Null, json!({})), None)
        .await;
    w.wait_ips("default", "b", &["192.168.10.1"], "b allocated")
        .await;
    w.delete("default", "a").await;
    w.restart_controller().await;
    w.create(&service("default", "c", Value::Null, json!({})), None)
        .await;
    w.wait_ips("default", "c", &["192.168.10.0"], "c gets the free IP")
        .await;
    assert_eq!(
        w.ips("default", "b").await,
        ["192.168.10.1"],
        "b keeps its IP"
    );
}

/// `e2etest/l2tests/assignment.go` "should reconsider services when
/// sharing the ip and conditions change" (issue 14, behaviour 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metallb_e2e_sharing_is_reconsidered_when_conditions_change() {
    let w = World::new().await;
    w.pool("singleip-pool", &["192.168.10.0/32"], json!({}))
        .await;
    let share = json!({"metallb.io/allow-shared-ip": "share"});
    let sharer = |name: &str, port: u16| {
        service(
            "default",
            name,
            share.clone(),
            json!({
            "selector": {"app": "shared"}, "ports": [{"port": port, "protocol": "TCP"}],
            "externalTrafficPolicy": "Cluster"}),
        )
    };
    w.create(&sharer("changesharing", 80), None).await;
    w.create(&sharer("changesharing1", 81), None).await;
    let ip = ["192.168.10.0"];
    w.wait_ips("default", "changesharing", &ip, "first shares")
        .await;
    w.wait_ips("default", "changesharing1", &ip, "second shares")
        .await;
    w.patch(
        "default",
        "changesharing1",
        json!({"spec": {"externalTrafficPolicy": "Local"}}),
    )
    .await;
    w.wait_ips("default", "changesharing1", &[], "second loses its IP")
        .await;
    let notes = w
        .wait_event(
            "default",
            "changesharing1",
            "AllocationFailed",
            "second told why",
        )
        .await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("externalTrafficPolicy") && n.contains("default/changesharing")),
        "the note names the sharing conflict: {notes:?}"
    );
    assert_eq!(
        w.ips("default", "changesharing").await,
        ip,
        "first keeps its IP"
    );
    w.patch(
        "default",
        "changesharing",
        json!({"spec": {"externalTrafficPolicy": "Local"}}),
    )
    .await;
    w.wait_ips(
        "default",
        "changesharing1",
        &ip,
        "both Local again: second shares",
    )
    .await;
    assert_eq!(w.ips("default", "changesharing").await, ip);
    w.patch(
        "default",
        "changesharing",
        json!({"spec": {"selector": {"foo": "bar"}}}),
    )
    .await;
    w.wait_ips("default", "changesharing", &[], "first loses its IP")
        .await;
    w.patch(
        "default",
        "changesharing1",
        json!({"spec": {"selector": {"foo": "bar"}}}),
    )
    .await;
    w.wait_ips(
        "default",
        "changesharing",
        &ip,
        "selectors aligned: first shares",
    )
    .await;
    assert_eq!(w.ips("default", "changesharing1").await, ip);
}

/// `e2etest/l2tests/assignment.go` "IPV4 removing pools": the two pools.
async fn removing_pools_world() -> World {
    let w = World::new().await;
    w.pool(
        "test-ns-pool-1",
        &["192.168.5.0/32"],
        json!({"serviceAllocation": {"priority": 20, "namespaces": ["default"]}}),
    )
    .await;
    w.pool("test-ns-pool-2", &["192.168.10.0/32"], json!({}))
        .await;
    w.create(
        &service("default", "svc-test-ns-pool-1", Value::Null, json!({})),
        None,
    )
    .await;
    w.wait_ips(
        "default",
        "svc-test-ns-pool-1",
        &["192.168.5.0"],
        "from pool 1",
    )
    .await;
    w
}

/// `e2etest/l2tests/assignment.go` "removes all pools" (issue 14,
/// behaviour 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metallb_e2e_removing_all_pools_clears_the_address() {
    let w = removing_pools_world().await;
    w.delete_pool("test-ns-pool-1").await;
    w.delete_pool("test-ns-pool-2").await;
    w.wait_ips("default", "svc-test-ns-pool-1", &[], "address cleared")
        .await;
    let notes = w
        .wait_event(
            "default",
            "svc-test-ns-pool-1",
            "ClearAssignment",
            "told why",
        )
        .await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("outside every IPAddressPool")),
        "{notes:?}"
    );
}

/// `e2etest/l2tests/assignment.go` "reallocates svc after deleting a pool";
/// the `IPAllocated` Event must name the new address and pool (issue 14,
/// behaviour 7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metallb_e2e_deleting_a_pool_reallocates_and_reports_the_new_address() {
    let w = removing_pools_world().await;
    w.delete_pool("test-ns-pool-1").await;
    w.wait_ips(
        "default",
        "svc-test-ns-pool-1",
        &["192.168.10.0"],
        "moved to pool 2",
    )
    .await;
    eventually("IPAllocated names the new address and pool", || async {
        w.notes("default", "svc-test-ns-pool-1", "IPAllocated")
            .await
            .iter()
            .any(|n| n.contains("192.168.10.0") && n.contains("test-ns-pool-2"))
    })
    .await;
}

/// `e2etest/l2tests/assignment.go` "with only priority" (and issue 14,
/// behaviour 4: priority 0 counts as unset, after every set priority).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metallb_e2e_pools_by_priority() {
    let w = World::new().await;
    w.pool(
        "test-priority-pool-0",
        &["192.168.0.0/32"],
        json!({"serviceAllocation": {"priority": 0}}),
    )
    .await;
    w.pool(
        "test-priority-pool-1",
        &["192.168.5.0/32"],
        json!({"serviceAllocation": {"priority": 20}}),
    )
    .await;
    w.pool(
        "test-priority-pool-2",
        &["192.168.10.0/32"],
        json!({"serviceAllocation": {"priority": 10}}),
    )
    .await;
    for (name, want) in [
        ("svc1", "192.168.10.0"),
        ("svc2", "192.168.5.0"),
        ("svc3", "192.168.0.0"),
    ] {
        w.create(&service("default", name, Value::Null, json!({})), None)
            .await;
        w.wait_ips("default", name, &[want], name).await;
    }
}

/// `e2etest/l2tests/assignment.go` "with namespace and namespace labels"
/// (issue 14, behaviour 5: a namespace listed by name or matched by a
/// namespace selector is admitted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metallb_e2e_namespace_and_namespace_labels() {
    let w = World::new().await;
    w.namespace("test-ns", json!({"foo1": "bar1", "foo2": "bar2"}))
        .await;
    w.namespace("listed", json!({})).await;
    w.pool(
        "test-ns-label-pool-1",
        &["192.168.5.0/32"],
        json!({"serviceAllocation": {"priority": 20, "namespaces": ["test-ns"]}}),
    )
    .await;
    w.pool(
        "test-ns-label-pool-2",
        &["192.168.10.0/32"],
        json!({"serviceAllocation": {"priority": 10,
        "namespaceSelectors": [{"matchLabels": {"foo1": "bar1", "foo2": "bar2"}}]}}),
    )
    .await;
    w.pool(
        "ns-test-ns-ip-pool",
        &["192.168.20.0/32"],
        json!({"serviceAllocation": {"namespaces": ["test-ns"]}}),
    )
    .await;
    for (name, want) in [
        ("svc1", "192.168.10.0"),
        ("svc2", "192.168.5.0"),
        ("svc3", "192.168.20.0"),
    ] {
        w.create(&service("test-ns", name, Value::Null, json!({})), None)
            .await;
        w.wait_ips("test-ns", name, &[want], name).await;
    }
    // Either rule admits: a pool listing one namespace and selecting others.
    w.pool(
        "either",
        &["192.168.30.0/32"],
        json!({"serviceAllocation": {"priority": 1,
        "namespaces": ["listed"], "namespaceSelectors": [{"matchLabels": {"foo1": "bar1"}}]}}),
    )
    .await;
    w.create(&service("listed", "by-name", Value::Null, json!({})), None)
        .await;
    w.wait_ips(
        "listed",
        "by-name",
        &["192.168.30.0"],
        "listed namespace admitted",
    )
    .await;
}

const V4_POOL: &str = "192.168.10.100/32";
const V6_POOL: &str = "fc00:f853:ccd:e799::/124";

fn prefer_dual(name: &str, families: &[&str]) -> Service {
    service(
        "default",
        name,
        Value::Null,
        json!({"ipFamilyPolicy": "PreferDualStack", "ipFamilies": families}),
    )
}

/// `e2etest/l2tests/assignment.go` PREFER DUALSTACK: "Should select
/// dual-stack pool if available", "Should prefer primary ip ipv4 family
/// among single-stack pools by default", "Should prefer primary ipv6 ip
/// family among single-stack pools".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metallb_e2e_prefer_dual_stack_pool_choice() {
    let w = World::new().await;
    w.pool("test-ns-ipv4-pool", &[V4_POOL], json!({})).await;
    w.pool("test-ns-ipv6-pool", &[V6_POOL], json!({})).await;
    w.create(&prefer_dual("v4-first", &["IPv4", "IPv6"]), None)
        .await;
    w.wait_ip_in(
        "default",
        "v4-first",
        "192.168.10.",
        "primary IPv4 among single-stack pools",
    )
    .await;
    w.create(&prefer_dual("v6-first", &["IPv6", "IPv4"]), None)
        .await;
    w.wait_ip_in(
        "default",
        "v6-first",
        "fc00:",
        "primary IPv6 among single-stack pools",
    )
    .await;
    w.pool(
        "test-ns-dualstack-pool",
        &["192.168.11.100/32", "fc00:f853:ccd:e800::/124"],
        json!({}),
    )
    .await;
    w.create(&prefer_dual("dual", &["IPv4", "IPv6"]), None)
        .await;
    w.wait_ips(
        "default",
        "dual",
        &["192.168.11.100", "fc00:f853:ccd:e800::"],
        "both from the dual pool",
    )
    .await;
}

/// `e2etest/l2tests/assignment.go` "Additional ip should be assigned when
/// the assigned 1-stack pool becomes dual-stack" (issue 14, behaviour 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metallb_e2e_prefer_dual_stack_gains_second_family() {
    let w = World::new().await;
    let scope = json!({"serviceAllocation": {"namespaces": ["default"]}});
    w.pool("test-ns-dualstack-pool", &[V4_POOL], scope.clone())
        .await;
    w.create(&prefer_dual("svc", &["IPv4", "IPv6"]), None).await;
    w.wait_ips("default", "svc", &["192.168.10.100"], "one IP")
        .await;
    w.pool(
        "test-ns-dualstack-pool",
        &["192.168.10.100/24", V6_POOL],
        scope,
    )
    .await;
    w.wait_ips(
        "default",
        "svc",
        &["192.168.10.100", "fc00:f853:ccd:e799::"],
        "second family added",
    )
    .await;
}

/// `e2etest/l2tests/assignment.go` "Single-stack pool should assign based
/// on svc changes between PreferDualStack and RequireDualStack".
/// Deliberate difference: MetalLB removes the address when the Service
/// switches to RequireDualStack; l2lb keeps it (it is still legal) and
/// says with `AllocationFailed` why the new request cannot be met, so a
/// spec edit that cannot be honoured never takes a working address away
/// (README, Differences from MetalLB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metallb_e2e_prefer_and_require_dual_stack_on_a_single_stack_pool() {
    let w = World::new().await;
    w.pool(
        "test-ns-dualstack-pool",
        &[V4_POOL],
        json!({"serviceAllocation": {"namespaces": ["default"]}}),
    )
    .await;
    w.create(&prefer_dual("svc", &["IPv4", "IPv6"]), None).await;
    w.wait_ips("default", "svc", &["192.168.10.100"], "one IP")
        .await;
    w.patch(
        "default",
        "svc",
        json!({"spec": {"ipFamilyPolicy": "RequireDualStack"}}),
    )
    .await;
    let notes = w
        .wait_event(
            "default",
            "svc",
            "AllocationFailed",
            "RequireDualStack cannot be met",
        )
        .await;
    assert!(notes.iter().any(|n| n.contains("IPv6")), "{notes:?}");
    assert_eq!(
        w.ips("default", "svc").await,
        ["192.168.10.100"],
        "address kept"
    );
    w.patch(
        "default",
        "svc",
        json!({"spec": {"ipFamilyPolicy": "PreferDualStack"}}),
    )
    .await;
    w.wait_ips(
        "default",
        "svc",
        &["192.168.10.100"],
        "PreferDualStack again: one IP",
    )
    .await;
}

/// `e2etest/l2tests/assignment.go` "Svc assigned from single-stack pool
/// should not jump to dual-stack pool when it's available" and "When
/// current dualstack pool becomes single-stack, svc should pick another
/// dualstack pool if possible".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metallb_e2e_prefer_dual_stack_pool_changes() {
    let w = World::new().await;
    w.pool("test-ns-ipv4-pool", &[V4_POOL], json!({})).await;
    w.create(&prefer_dual("stays", &["IPv4", "IPv6"]), None)
        .await;
    w.wait_ips("default", "stays", &["192.168.10.100"], "one IP")
        .await;
    w.pool(
        "test-ns-dualstack-pool",
        &["192.168.11.100/32", "fc00:f853:ccd:e800::/124"],
        json!({}),
    )
    .await;
    w.pool(
        "test-ns-dualstack-pool-to-edit",
        &["192.168.12.100/32", V6_POOL],
        json!({}),
    )
    .await;
    w.create(&prefer_dual("moves", &["IPv4", "IPv6"]), None)
        .await;
    w.wait_ips(
        "default",
        "moves",
        &["192.168.11.100", "fc00:f853:ccd:e800::"],
        "dual",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        w.ips("default", "stays").await,
        ["192.168.10.100"],
        "no jump"
    );
    w.delete("default", "moves").await;
    w.delete_pool("test-ns-dualstack-pool").await;
    w.create(&prefer_dual("edited", &["IPv4", "IPv6"]), None)
        .await;
    w.wait_ips(
        "default",
        "edited",
        &["192.168.12.100", "fc00:f853:ccd:e799::"],
        "dual from to-edit",
    )
    .await;
    w.pool(
        "test-ns-dualstack-pool",
        &["192.168.11.100/32", "fc00:f853:ccd:e800::/124"],
        json!({}),
    )
    .await;
    w.pool("test-ns-dualstack-pool-to-edit", &[V6_POOL], json!({}))
        .await;
    w.wait_ips(
        "default",
        "edited",
        &["192.168.11.100", "fc00:f853:ccd:e800::"],
        "moved to the other dual pool",
    )
    .await;
}
