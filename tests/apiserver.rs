//! The embedded test API server, driven by unmodified kube-rs clients,
//! kube-runtime and kube-leader-election.

mod fixtures;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{Controller, controller::Action, reflector, watcher};
use l2lb::api::{IPAddressPool, IPAddressPoolSpec, IPAddressPoolStatus};
use l2lb::lab::apiserver::{ApiServer, client_for};
use serde_json::json;

async fn start(server: &ApiServer) -> (kube::Client, tokio_util::sync::DropGuard) {
    let (url, token) = server.start_local().await.unwrap();
    (client_for(&url).unwrap(), token.drop_guard())
}

/// A Service with exactly `labels`, in no namespace (the request path names it).
fn svc(name: &str, labels: &[(&str, &str)]) -> Service {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    fixtures::service(name)
        .merge(json!({ "metadata": { "namespace": null, "labels": null } }))
        .labels(json!(labels))
        .build()
}

fn api_code(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `f` until it is true; panics after a generous bound (not a timing assertion).
async fn eventually(mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition never became true");
}

#[tokio::test]
async fn service_crud_status_and_conflict() {
    let server = ApiServer::new();
    let (client, _g) = start(&server).await;
    let api: Api<Service> = Api::namespaced(client, "default");

    let created = api
        .create(&PostParams::default(), &svc("a", &[]))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, Some(1));
    let (code, reason) = api_code(
        api.create(&PostParams::default(), &svc("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));

    // Status patch changes only status.
    let st = json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.18.0.10"}]}},
                    "spec": {"type": "ClusterIP"}});
    let patched = api
        .patch_status("a", &PatchParams::default(), &Patch::Merge(&st))
        .await
        .unwrap();
    assert_eq!(
        patched.spec.as_ref().unwrap().type_.as_deref(),
        Some("LoadBalancer")
    );
    let ingress = patched
        .status
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .unwrap();
    assert_eq!(ingress[0].ip.as_deref(), Some("198.18.0.10"));
    assert_eq!(patched.metadata.generation, Some(1));

    // A main write ignores status and bumps generation on spec changes.
    let mut cur = api.get("a").await.unwrap();
    cur.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 81;
    cur.status = None;
    let replaced = api
        .replace("a", &PostParams::default(), &cur)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.generation, Some(2));
    assert!(
        replaced
            .status
            .unwrap()
            .load_balancer
            .unwrap()
            .ingress
            .is_some()
    );

    // Replace with the now-stale resourceVersion: 409 Conflict.
    let (code, reason) = api_code(
        api.replace("a", &PostParams::default(), &cur)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));

    // generateName.
    let mut g = svc("", &[]);
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let g = api.create(&PostParams::default(), &g).await.unwrap();
    assert!(g.metadata.name.unwrap().starts_with("gen-"));

    api.delete("a", &DeleteParams::default()).await.unwrap();
    let (code, reason) = api_code(api.get("a").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    let (code, _) = api_code(api.delete("a", &DeleteParams::default()).await.unwrap_err());
    assert_eq!(code, 404);

    // Unknown namespace: 404 like a real server.
    let other: Api<Service> = Api::namespaced(api.into_client(), "nope");
    let (code, _) = api_code(
        other
            .create(&PostParams::default(), &svc("x", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 404);
}

#[tokio::test]
async fn built_in_objects_must_deserialize() {
    let server = ApiServer::new();
    let (client, _g) = start(&server).await;
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Service"), "services");
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad"},
        "spec": {"ports": "not-a-list"}
    }))
    .unwrap();
    let (code, reason) = api_code(api.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
}

#[tokio::test]
async fn list_with_label_and_field_selectors() {
    let server = ApiServer::new();
    let (client, _g) = start(&server).await;
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    for (n, tier) in [("c", "web"), ("a", "db"), ("b", "cache")] {
        api.create(
            &PostParams::default(),
            &svc(n, &[("tier", tier), ("app", "x")]),
        )
        .await
        .unwrap();
    }
    let names = |l: kube::core::ObjectList<Service>| -> Vec<String> {
        l.items
            .into_iter()
            .map(|s| s.metadata.name.unwrap())
            .collect()
    };
    let all = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        all.metadata.resource_version.as_deref(),
        Some(server.resource_version().to_string().as_str())
    );
    assert_eq!(names(all), ["a", "b", "c"]);
    let eq = api
        .list(&ListParams::default().labels("tier=web"))
        .await
        .unwrap();
    assert_eq!(names(eq), ["c"]);
    let set = api
        .list(&ListParams::default().labels("tier in (web, db),app"))
        .await
        .unwrap();
    assert_eq!(names(set), ["a", "c"]);
    let notin = api
        .list(&ListParams::default().labels("tier notin (web),!missing"))
        .await
        .unwrap();
    assert_eq!(names(notin), ["a", "b"]);
    let field = api
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .unwrap();
    assert_eq!(names(field), ["b"]);
    let all_ns: Api<Service> = Api::all(client);
    let by_ns = all_ns
        .list(&ListParams::default().fields("metadata.namespace=default"))
        .await
        .unwrap();
    assert_eq!(by_ns.items.len(), 3);
}

#[tokio::test]
async fn watch_resumes_from_resource_version_and_410_when_compacted() {
    let server = ApiServer::new();
    let (client, _g) = start(&server).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &svc("a", &[]))
        .await
        .unwrap();
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&PostParams::default(), &svc("b", &[]))
        .await
        .unwrap();
    api.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();

    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    let mut last_rv = 0u64;
    while seen.len() < 3 {
        let (kind, s) = match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(s) => ("ADDED", s),
            WatchEvent::Modified(s) => ("MODIFIED", s),
            WatchEvent::Deleted(s) => ("DELETED", s),
            other => panic!("unexpected {other:?}"),
        };
        let this_rv: u64 = s.metadata.resource_version.unwrap().parse().unwrap();
        assert!(this_rv > last_rv, "resourceVersions must increase");
        last_rv = this_rv;
        seen.push((kind, s.metadata.name.unwrap()));
    }
    assert_eq!(
        seen,
        [
            ("ADDED", "b".to_string()),
            ("MODIFIED", "b".into()),
            ("DELETED", "a".into())
        ]
    );

    // Live events follow the replay.
    api.create(&PostParams::default(), &svc("c", &[]))
        .await
        .unwrap();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Added(s) => assert_eq!(s.metadata.name.as_deref(), Some("c")),
        other => panic!("unexpected {other:?}"),
    }

    // "0": synthetic ADDED for the current state.
    let mut zero = api
        .watch(&WatchParams::default().timeout(5), "0")
        .await
        .unwrap()
        .boxed();
    let mut names = Vec::new();
    for _ in 0..2 {
        match zero.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(s) => names.push(s.metadata.name.unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(names, ["b", "c"]);

    server.compact();
    let mut old = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    match old.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_bookmarks_and_timeout() {
    let server = ApiServer::new();
    server.set_bookmark_interval(Duration::from_millis(50));
    let (client, _g) = start(&server).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let mut stream = api
        .watch(
            &WatchParams {
                bookmarks: true,
                ..Default::default()
            }
            .timeout(1),
            "0",
        )
        .await
        .unwrap()
        .boxed();
    let mut bookmarks = 0;
    while let Some(ev) = stream.try_next().await.unwrap() {
        if let WatchEvent::Bookmark(b) = ev {
            assert_eq!(
                b.metadata.resource_version,
                server.resource_version().to_string()
            );
            bookmarks += 1;
        }
    }
    // The stream ended by itself: timeoutSeconds is honoured.
    assert!(bookmarks >= 1);
}

#[tokio::test]
async fn controller_reconciles_create_update_delete() {
    let server = ApiServer::new();
    let (client, _g) = start(&server).await;
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let seen: Arc<std::sync::Mutex<Vec<(String, bool)>>> = Arc::default();

    let s2 = seen.clone();
    let ctl = Controller::new(api.clone(), watcher::Config::default());
    let cache = ctl.store();
    let ctl = ctl.run(
        move |obj: Arc<Service>, _ctx: Arc<()>| {
            let seen = s2.clone();
            async move {
                let port = obj
                    .spec
                    .as_ref()
                    .and_then(|s| s.ports.as_ref())
                    .map(|p| p[0].port);
                seen.lock().unwrap().push((
                    obj.metadata.name.clone().unwrap_or_default(),
                    port == Some(8080),
                ));
                Ok::<_, kube::Error>(Action::await_change())
            }
        },
        |_obj, _err: &kube::Error, _ctx| Action::requeue(Duration::from_secs(1)),
        Arc::new(()),
    );
    let handle = tokio::spawn(ctl.for_each(|_| async {}));

    api.create(&PostParams::default(), &svc("r", &[]))
        .await
        .unwrap();
    eventually(|| seen.lock().unwrap().iter().any(|(n, _)| n == "r")).await;
    api.patch(
        "r",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"ports": [{"port": 8080, "protocol": "TCP"}]}})),
    )
    .await
    .unwrap();
    eventually(|| seen.lock().unwrap().iter().any(|(n, p)| n == "r" && *p)).await;
    // Deletion is seen through the watch: the controller's cache drops it.
    assert!(
        cache
            .get(&reflector::ObjectRef::new("r").within("default"))
            .is_some()
    );
    api.delete("r", &DeleteParams::default()).await.unwrap();
    eventually(|| {
        cache
            .get(&reflector::ObjectRef::new("r").within("default"))
            .is_none()
    })
    .await;
    assert!(server.requests().get("watch", "services") >= 1);
    handle.abort();
}

#[tokio::test]
async fn reflector_recovers_after_watches_are_closed() {
    let server = ApiServer::new();
    let (client, _g) = start(&server).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let (reader, writer) = reflector::store::<Service>();
    let events = Arc::new(AtomicUsize::new(0));
    let ev2 = events.clone();
    let rf =
        reflector(writer, watcher(api.clone(), watcher::Config::default())).for_each(move |_| {
            ev2.fetch_add(1, Ordering::SeqCst);
            async {}
        });
    let handle = tokio::spawn(rf);

    api.create(&PostParams::default(), &svc("one", &[]))
        .await
        .unwrap();
    eventually(|| {
        reader
            .get(&reflector::ObjectRef::new("one").within("default"))
            .is_some()
    })
    .await;
    let watches_before = server.requests().get("watch", "services");
    server.faults().close_watches();
    api.create(&PostParams::default(), &svc("two", &[]))
        .await
        .unwrap();
    api.delete("one", &DeleteParams::default()).await.unwrap();
    eventually(|| {
        reader
            .get(&reflector::ObjectRef::new("two").within("default"))
            .is_some()
            && reader
                .get(&reflector::ObjectRef::new("one").within("default"))
                .is_none()
    })
    .await;
    assert!(
        server.requests().get("watch", "services") > watches_before,
        "watcher re-watched"
    );
    handle.abort();
}

#[tokio::test]
async fn reflector_relists_after_410() {
    let server = ApiServer::new();
    let (client, _g) = start(&server).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let (reader, writer) = reflector::store::<Service>();
    let handle = tokio::spawn(
        reflector(writer, watcher(api.clone(), watcher::Config::default())).for_each(|_| async {}),
    );
    api.create(&PostParams::default(), &svc("one", &[]))
        .await
        .unwrap();
    eventually(|| reader.state().len() == 1).await;
    let lists_before = server.requests().get("list", "services");
    // The watcher is cut off while changes happen and the history is
    // compacted: its resume point answers 410 and it must re-list. The
    // writer reaches the server from the IPv6 loopback address.
    let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let url2 = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let s2 = server.clone();
    let t2 = token.clone();
    tokio::spawn(async move { s2.serve(listener, t2).await });
    let _g2 = token.drop_guard();
    let other: Api<Service> = Api::namespaced(client_for(&url2).unwrap(), "default");
    let localhost = "127.0.0.1".parse().unwrap();
    server.faults().block(localhost);
    other
        .create(&PostParams::default(), &svc("two", &[]))
        .await
        .unwrap();
    other
        .create(&PostParams::default(), &svc("three", &[]))
        .await
        .unwrap();
    server.compact();
    server.faults().unblock(localhost);
    eventually(|| reader.state().len() == 3).await;
    eventually(|| server.requests().get("list", "services") > lists_before).await;
    handle.abort();
}

#[tokio::test]
async fn lease_lock_acquire_renew_contend_step_down() {
    use kube_leader_election::{LeaseLock, LeaseLockParams, LeaseLockResult};
    let server = ApiServer::new();
    let (client, _g) = start(&server).await;
    let lock = |holder: &str| {
        LeaseLock::new(
            client.clone(),
            "kube-node-lease",
            LeaseLockParams {
                lease_name: "ctl".into(),
                holder_id: holder.into(),
                lease_ttl: Duration::from_secs(30),
            },
        )
    };
    let a = lock("a");
    let b = lock("b");
    assert!(matches!(
        a.try_acquire_or_renew().await.unwrap(),
        LeaseLockResult::Acquired(_)
    ));
    assert!(matches!(
        a.try_acquire_or_renew().await.unwrap(),
        LeaseLockResult::Acquired(_)
    ));
    assert!(matches!(
        b.try_acquire_or_renew().await.unwrap(),
        LeaseLockResult::NotAcquired(_)
    ));
    a.step_down().await.unwrap();
    // Step-down leaves a lease that expires one second later; b polls as a contender does.
    let mut acquired = false;
    for _ in 0..100 {
        if matches!(
            b.try_acquire_or_renew().await.unwrap(),
            LeaseLockResult::Acquired(_)
        ) {
            acquired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        acquired,
        "the second contender never acquired the released lease"
    );
    assert!(matches!(
        a.try_acquire_or_renew().await.unwrap(),
        LeaseLockResult::NotAcquired(_)
    ));
    assert!(server.requests().get("patch", "leases") >= 2);
}

fn pool_ar() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("l2lb.io", "v1beta1", "IPAddressPool"),
        "ipaddresspools",
    )
}

#[tokio::test]
async fn l2lb_crds_round_trip_with_status_and_defaults() {
    let server = ApiServer::with_l2lb_crds();
    let (client, _g) = start(&server).await;
    let api: Api<IPAddressPool> = Api::namespaced(client.clone(), "l2lb-system");
    let pool = IPAddressPool::new(
        "p",
        IPAddressPoolSpec {
            addresses: vec!["198.18.0.100-198.18.0.120".into()],
            auto_assign: false,
            avoid_buggy_ips: true,
            service_allocation: None,
        },
    );
    let created = api.create(&PostParams::default(), &pool).await.unwrap();
    assert_eq!(created.spec, pool.spec);
    let status = IPAddressPoolStatus {
        assigned_ipv4: 1,
        available_ipv4: 20,
        ..Default::default()
    };
    api.patch_status(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .unwrap();
    let got = api.get("p").await.unwrap();
    assert_eq!(got.status, Some(status));
    assert_eq!(got.metadata.generation, Some(1));

    // Schema defaults are applied by the server: autoAssign omitted means true.
    let dyn_api: Api<DynamicObject> = Api::namespaced_with(client, "l2lb-system", &pool_ar());
    let raw: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "l2lb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "d"}, "spec": {"addresses": ["198.18.1.0/24"]}
    }))
    .unwrap();
    let d = dyn_api.create(&PostParams::default(), &raw).await.unwrap();
    assert_eq!(d.data["spec"]["autoAssign"], json!(true));

    // Served generically, found through discovery.
    let discovery = kube::Discovery::new(api.into_client()).run().await.unwrap();
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk(
            "l2lb.io",
            "v1beta1",
            "IPAddressPool",
        ))
        .unwrap();
    assert_eq!(ar.plural, "ipaddresspools");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(caps.subresources.iter().any(|(s, _)| s.plural == "status"));
}

#[tokio::test]
async fn invalid_pool_rejected_by_cel() {
    let server = ApiServer::with_l2lb_crds();
    let (client, _g) = start(&server).await;
    let api: Api<IPAddressPool> = Api::namespaced(client, "l2lb-system");
    let bad = IPAddressPool::new(
        "bad",
        IPAddressPoolSpec {
            addresses: vec!["banana".into()],
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
        },
    );
    let err = api.create(&PostParams::default(), &bad).await.unwrap_err();
    let kube::Error::Api(s) = err else {
        panic!("expected API error")
    };
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(s.message.contains("each address must be"), "{}", s.message);
    assert!(matches!(api.get("bad").await, Err(kube::Error::Api(s)) if s.code == 404));
}

#[tokio::test]
async fn posting_a_crd_registers_its_kind() {
    let server = ApiServer::new();
    let (client, _g) = start(&server).await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    let ns: Api<Namespace> = Api::all(client.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "l2lb-system"}})).unwrap(),
    )
    .await
    .unwrap();
    for crd in l2lb::api::crds::all() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let api: Api<IPAddressPool> = Api::namespaced(client, "l2lb-system");
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    crds.delete("ipaddresspools.l2lb.io", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        matches!(api.list(&ListParams::default()).await, Err(kube::Error::Api(s)) if s.code == 404)
    );
}

#[tokio::test]
async fn json_merge_strategic_and_apply_patches() {
    let server = ApiServer::new();
    let (client, _g) = start(&server).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &svc("p", &[("a", "1")]))
        .await
        .unwrap();

    let jp: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/metadata/labels/b", "value": "2"},
        {"op": "remove", "path": "/metadata/labels/a"}
    ]))
    .unwrap();
    let s = api
        .patch("p", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(
        s.metadata.labels.unwrap(),
        BTreeMap::from([("b".into(), "2".into())])
    );

    let s = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"b": null, "c": "3"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        s.metadata.labels.unwrap(),
        BTreeMap::from([("c".into(), "3".into())])
    );

    let s = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"ports": [{"port": 443, "protocol": "TCP"}]}})),
        )
        .await
        .unwrap();
    assert_eq!(s.spec.unwrap().ports.unwrap()[0].port, 443);

    // Server-side apply: creates when missing, merges when present, records the manager.
    let applied = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "q"},
                         "spec": {"ports": [{"port": 53, "protocol": "UDP"}]}});
    let q = api
        .patch("q", &PatchParams::apply("tester"), &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(
        q.metadata.managed_fields.unwrap()[0].manager.as_deref(),
        Some("tester")
    );
    let q = api
        .patch("q", &PatchParams::apply("tester").force(), &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "q", "labels": {"z": "1"}}})))
        .await
        .unwrap();
    assert_eq!(q.metadata.labels.unwrap()["z"], "1");
    assert_eq!(q.spec.unwrap().ports.unwrap()[0].port, 53);

    // A patch carrying a stale resourceVersion conflicts.
    let err = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(err).0, 409);
}

#[tokio::test]
async fn finalizers_delay_deletion() {
    let server = ApiServer::new();
    let (client, _g) = start(&server).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let mut s = svc("f", &[]);
    s.metadata.finalizers = Some(vec!["l2lb.io/test".into()]);
    api.create(&PostParams::default(), &s).await.unwrap();
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let marked = api.get("f").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_code(api.get("f").await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn request_counts() {
    let server = ApiServer::new();
    let (client, _g) = start(&server).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    server.reset_requests();
    api.create(&PostParams::default(), &svc("n", &[]))
        .await
        .unwrap();
    api.get("n").await.unwrap();
    api.get("n").await.unwrap();
    api.list(&ListParams::default()).await.unwrap();
    api.patch_status(
        "n",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {}})),
    )
    .await
    .unwrap();
    let c = server.requests();
    assert_eq!(c.get("create", "services"), 1);
    assert_eq!(c.get("get", "services"), 2);
    assert_eq!(c.get("list", "services"), 1);
    assert_eq!(c.get("patch", "services/status"), 1);
    assert_eq!(c.total(), 5);
    assert_eq!(c.writes(), 2);
    server.reset_requests();
    assert_eq!(server.requests().total(), 0);
}

#[tokio::test]
async fn fault_injection() {
    let server = ApiServer::new();
    let (client, _g) = start(&server).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    server.faults().fail_next(1, 500);
    let (code, _) = api_code(api.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(code, 500);
    api.list(&ListParams::default()).await.unwrap();

    server.faults().drop_next(1);
    assert!(api.list(&ListParams::default()).await.is_err());
    api.list(&ListParams::default()).await.unwrap();

    server.faults().block("127.0.0.1".parse().unwrap());
    let err = api.list(&ListParams::default()).await.unwrap_err();
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "a blocked client gets no answer: {err:?}"
    );
    server.faults().unblock("127.0.0.1".parse().unwrap());
    api.list(&ListParams::default()).await.unwrap();
}

#[tokio::test]
async fn events_recorder_posts_to_the_server() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let server = ApiServer::new();
    let (client, _g) = start(&server).await;
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let s = api
        .create(&PostParams::default(), &svc("e", &[]))
        .await
        .unwrap();
    let rec = Recorder::new(
        client.clone(),
        Reporter {
            controller: "l2lb".into(),
            instance: None,
        },
    );
    let ev = Event {
        type_: EventType::Normal,
        reason: "IPAllocated".into(),
        note: Some("198.18.0.1".into()),
        action: "Allocate".into(),
        secondary: None,
    };
    let reference = kube::Resource::object_ref(&s, &());
    rec.publish(&ev, &reference).await.unwrap();
    rec.publish(&ev, &reference).await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, "default");
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));
}

#[tokio::test]
async fn streaming_list_watcher_sees_initial_state_and_changes() {
    let server = ApiServer::new();
    let (client, _g) = start(&server).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &svc("before", &[]))
        .await
        .unwrap();
    let (reader, writer) = reflector::store::<Service>();
    let handle = tokio::spawn(
        reflector(
            writer,
            watcher(api.clone(), watcher::Config::default().streaming_lists()),
        )
        .for_each(|_| async {}),
    );
    eventually(|| reader.state().len() == 1).await;
    api.create(&PostParams::default(), &svc("after", &[]))
        .await
        .unwrap();
    eventually(|| reader.state().len() == 2).await;
    // Streaming lists never call LIST.
    assert_eq!(server.requests().get("list", "services"), 0);
    handle.abort();
}

#[tokio::test]
async fn watch_filters_by_namespace_and_labels() {
    let server = ApiServer::new();
    let (client, _g) = start(&server).await;
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let sys: Api<Service> = Api::namespaced(client, "kube-system");
    let mut stream = api
        .watch(&WatchParams::default().labels("pick=yes").timeout(5), "0")
        .await
        .unwrap()
        .boxed();
    sys.create(&PostParams::default(), &svc("other-ns", &[("pick", "yes")]))
        .await
        .unwrap();
    api.create(&PostParams::default(), &svc("unlabelled", &[]))
        .await
        .unwrap();
    api.create(&PostParams::default(), &svc("wanted", &[("pick", "yes")]))
        .await
        .unwrap();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Added(s) => assert_eq!(s.metadata.name.as_deref(), Some("wanted")),
        other => panic!("unexpected {other:?}"),
    }
}
