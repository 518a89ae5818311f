//! Test builders for the controller's unit tests: one way to write a
//! Service or a pool, so a test reads as the situation it sets up.

use crate::api::IPAddressPool;
use crate::labels::Labels;
use k8s_openapi::api::core::v1::Service;
use serde_json::json;
use std::sync::Arc;

/// Chainable Service builder: `svc("a", 1).published(&[ip]).build()`.
pub(super) struct Svc(serde_json::Value);

/// A LoadBalancer Service `default/<name>` on TCP port 80, created
/// `created` seconds after the fixtures' epoch.
pub(super) fn svc(name: &str, created: i64) -> Svc {
    let ts = jiff::Timestamp::from_second(1_700_000_000 + created)
        .unwrap()
        .to_string();
    Svc(json!({
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "1",
                     "creationTimestamp": ts, "annotations": {}},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]},
    }))
}

impl Svc {
    /// Publishes `ips` in `status.loadBalancer.ingress`.
    pub(super) fn published(mut self, ips: &[&str]) -> Self {
        let ingress: Vec<_> = ips
            .iter()
            .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
            .collect();
        self.0["status"] = json!({"loadBalancer": {"ingress": ingress}});
        self
    }
    /// Sets annotation `k` to `v`.
    pub(super) fn annotate(mut self, k: &str, v: &str) -> Self {
        self.0["metadata"]["annotations"][k] = json!(v);
        self
    }
    /// Replaces the ports by one TCP `port`.
    pub(super) fn port(mut self, port: u16) -> Self {
        self.0["spec"]["ports"] = json!([{"port": port, "protocol": "TCP"}]);
        self
    }
    /// Sets `spec.<k>` to `v`.
    pub(super) fn spec(mut self, k: &str, v: serde_json::Value) -> Self {
        self.0["spec"][k] = v;
        self
    }
    /// The Service, shared as the caches hold it.
    pub(super) fn build(self) -> Arc<Service> {
        Arc::new(serde_json::from_value(self.0).unwrap())
    }
}

/// A pool in the install namespace, created `created` seconds after the
/// fixtures' epoch.
pub(super) fn pool(name: &str, created: i64, addresses: &[&str]) -> Arc<IPAddressPool> {
    let ts = jiff::Timestamp::from_second(1_700_000_000 + created)
        .unwrap()
        .to_string();
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "l2lb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": name, "namespace": "l2lb-system", "creationTimestamp": ts, "generation": 1},
            "spec": {"addresses": addresses},
        }))
        .unwrap(),
    )
}

/// Namespace labels for tests that do not select on them.
pub(super) fn no_labels(_: &str) -> Labels {
    Labels::new()
}
