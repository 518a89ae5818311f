//! The official Python `kubernetes` client (Debian's python3-kubernetes,
//! installed by scripts/install-deps.sh), a second client nobody here
//! wrote, lists, watches and patches our custom resources on the embedded
//! API server, reads a field error, and sees a defaulted Service.

use std::process::Command;

use l2lb::lab::apiserver::ApiServer;

/// Debian installs the client for the system interpreter only.
const PYTHON: &str = "/usr/bin/python3";

const SCRIPT: &str = r#"
import json, sys, threading, time
from kubernetes import client, watch

cfg = client.Configuration()
cfg.host = sys.argv[1]
api = client.ApiClient(cfg)
co = client.CustomObjectsApi(api)
G, V, NS, P = "l2lb.io", "v1beta1", "l2lb-system", "ipaddresspools"

def pool(name, addresses):
    return {"apiVersion": "l2lb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": name}, "spec": {"addresses": addresses}}

co.create_namespaced_custom_object(G, V, NS, P, pool("py", ["198.18.0.100-198.18.0.110"]))
items = co.list_namespaced_custom_object(G, V, NS, P)["items"]
print("LIST", json.dumps([[i["metadata"]["name"], i["spec"].get("autoAssign")] for i in items]))

events = []
w = watch.Watch()
def follow():
    for ev in w.stream(co.list_namespaced_custom_object, G, V, NS, P, timeout_seconds=20):
        events.append([ev["type"], ev["object"]["metadata"]["name"], ev["object"]["spec"].get("autoAssign")])
        if ev["type"] == "MODIFIED":
            w.stop()
t = threading.Thread(target=follow)
t.start()
time.sleep(1)
co.patch_namespaced_custom_object(G, V, NS, P, "py", {"spec": {"autoAssign": False}})
t.join(20)
print("WATCH", json.dumps(events))
got = co.get_namespaced_custom_object(G, V, NS, P, "py")
print("PATCHED", json.dumps(got["spec"]["autoAssign"]))
co.patch_namespaced_custom_object_status(G, V, NS, P, "py", {"status": {"assignedIPv4": 3}})
got = co.get_namespaced_custom_object(G, V, NS, P, "py")
print("STATUS", json.dumps(got["status"]["assignedIPv4"]))

try:
    co.create_namespaced_custom_object(G, V, NS, P, pool("bad", ["not-an-address"]))
    print("INVALID accepted")
except client.exceptions.ApiException as e:
    body = json.loads(e.body)
    print("INVALID", e.status, json.dumps([c["field"] for c in body["details"]["causes"]]))

v1 = client.CoreV1Api(api)
svc = v1.create_namespaced_service("default", {"apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "py"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})
print("SERVICE", svc.spec.cluster_ip, svc.spec.ports[0].protocol, svc.spec.ports[0].node_port,
      svc.spec.external_traffic_policy, svc.spec.ip_family_policy)
"#;

fn python_client_available() -> bool {
    Command::new(PYTHON)
        .args(["-c", "import kubernetes"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_lists_watches_and_patches_custom_resources() {
    if !python_client_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3-kubernetes is missing in CI (scripts/install-deps.sh installs it)"
        );
        println!("SKIPPED: the Python kubernetes client is not installed");
        return;
    }
    let server = ApiServer::with_l2lb_crds();
    let (url, token) = server.start_local().await.unwrap();
    let _guard = token.drop_guard();
    let host = url.as_str().trim_end_matches('/').to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(PYTHON)
            .args(["-c", SCRIPT, &host])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "python failed: {stdout}\n{stderr}");
    let line = |tag: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{tag} ")))
            .unwrap_or_else(|| panic!("no {tag} line in {stdout}"))
            .to_string()
    };
    // The schema default of autoAssign is applied by the server.
    assert_eq!(line("LIST"), r#"[["py", true]]"#);
    assert_eq!(
        line("WATCH"),
        r#"[["ADDED", "py", true], ["MODIFIED", "py", false]]"#
    );
    assert_eq!(line("PATCHED"), "false");
    assert_eq!(line("STATUS"), "3");
    assert_eq!(line("INVALID"), r#"422 ["spec.addresses"]"#);
    assert_eq!(
        line("SERVICE"),
        "198.19.128.10 TCP 30000 Cluster SingleStack"
    );
}
