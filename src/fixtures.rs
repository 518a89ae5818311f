//! Test fixtures: one chainable builder per kind of object l2lb reads, for
//! the unit tests in `src/` and (included by path from `tests/fixtures/`)
//! the integration tests, so every test builds a Service or a pool the same
//! way.
//!
//! The builders hold JSON and deserialize at the end (`build::<T>()`), so
//! this file names no l2lb type and compiles inside the library and inside
//! an integration test alike. Never used by production code.

// Every test crate uses its own subset of the builders.
#![allow(dead_code)]

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// An object under construction.
#[derive(Clone, Debug)]
pub struct Fixture(Value);

/// Time 0 of fixture ages: [`Fixture::created`] counts seconds from here.
pub const EPOCH_SECONDS: i64 = 1_700_000_000;

impl Fixture {
    /// Deserializes the object into its type (panics on a malformed
    /// fixture: a test bug, not a case under test).
    pub fn build<T: DeserializeOwned>(self) -> T {
        serde_json::from_value(self.0).expect("fixture deserializes")
    }

    /// Deserializes and shares the object, as watch caches hold it.
    pub fn build_arc<T: DeserializeOwned>(self) -> std::sync::Arc<T> {
        std::sync::Arc::new(self.build())
    }

    /// JSON-merge-patches `patch` into the object (objects merge, arrays
    /// and scalars replace, `null` deletes).
    pub fn merge(mut self, patch: Value) -> Self {
        json_patch::merge(&mut self.0, &patch);
        self
    }

    /// Merge-patches `patch` into `spec`.
    pub fn spec(self, patch: Value) -> Self {
        self.merge(json!({ "spec": patch }))
    }

    /// Moves the object to namespace `ns`.
    pub fn namespace(self, ns: &str) -> Self {
        self.merge(json!({ "metadata": { "namespace": ns } }))
    }

    /// Sets labels (merged with any already set).
    pub fn labels(self, labels: Value) -> Self {
        self.merge(json!({ "metadata": { "labels": labels } }))
    }

    /// Sets one annotation.
    pub fn annotate(self, key: &str, value: &str) -> Self {
        self.merge(json!({ "metadata": { "annotations": { key: value } } }))
    }

    /// Created `seconds` after [`EPOCH_SECONDS`] (objects are allocated
    /// oldest first, so tests order them with this).
    pub fn created(self, seconds: i64) -> Self {
        let ts = jiff::Timestamp::from_second(EPOCH_SECONDS + seconds)
            .expect("fixture time in range")
            .to_string();
        self.merge(json!({ "metadata": { "creationTimestamp": ts } }))
    }

    /// A Service's published `status.loadBalancer.ingress`.
    pub fn ingress(self, ips: &[&str]) -> Self {
        let ingress: Vec<Value> = ips
            .iter()
            .map(|ip| json!({ "ip": ip, "ipMode": "VIP" }))
            .collect();
        self.merge(json!({ "status": { "loadBalancer": { "ingress": ingress } } }))
    }

    /// A Service's ports, all TCP.
    pub fn tcp_ports(self, ports: &[u16]) -> Self {
        let ports: Vec<Value> = ports
            .iter()
            .map(|p| json!({ "port": p, "protocol": "TCP" }))
            .collect();
        self.spec(json!({ "ports": ports }))
    }
}

/// A `LoadBalancer` Service `name` in `default`, labelled and selecting
/// `app: name`, with TCP port 80.
pub fn service(name: &str) -> Fixture {
    Fixture(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name, "namespace": "default", "labels": { "app": name } },
        "spec": {
            "type": "LoadBalancer",
            "selector": { "app": name },
            "ports": [{ "name": "http", "port": 80, "protocol": "TCP" }],
        },
    }))
}

/// An `IPAddressPool` `name` in `l2lb-system` with `addresses`.
pub fn pool(name: &str, addresses: &[&str]) -> Fixture {
    Fixture(json!({
        "apiVersion": "l2lb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": { "name": name, "namespace": "l2lb-system", "generation": 1 },
        "spec": { "addresses": addresses },
    }))
}

/// An `L2Advertisement` `name` in `l2lb-system` with an empty spec (all
/// pools, all nodes, default interface).
pub fn advertisement(name: &str) -> Fixture {
    Fixture(json!({
        "apiVersion": "l2lb.io/v1beta1", "kind": "L2Advertisement",
        "metadata": { "name": name, "namespace": "l2lb-system" },
        "spec": {},
    }))
}

/// An IPv4 `EndpointSlice` `name` of Service `service` in `default`, with
/// one ready endpoint on each of `nodes`.
pub fn slice(service: &str, name: &str, nodes: &[&str]) -> Fixture {
    let endpoints: Vec<Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| json!({ "addresses": [format!("10.0.0.{}", i + 1)], "nodeName": n }))
        .collect();
    Fixture(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": name, "namespace": "default",
                      "labels": { "kubernetes.io/service-name": service } },
        "addressType": "IPv4",
        "endpoints": endpoints,
    }))
}

/// A `Ready` Node `name` labelled `kubernetes.io/hostname: name`.
pub fn node(name: &str) -> Fixture {
    Fixture(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": name, "labels": { "kubernetes.io/hostname": name } },
        "status": { "conditions": [{ "type": "Ready", "status": "True" }] },
    }))
}

/// Speaker membership Lease of `node`, held by `holder` (empty = released),
/// last renewed at `renew` (RFC 3339 with microseconds; empty = never).
pub fn lease(node: &str, holder: &str, renew: &str) -> Fixture {
    let mut spec = json!({ "holderIdentity": holder, "leaseDurationSeconds": 4 });
    if !renew.is_empty() {
        spec["renewTime"] = json!(renew);
    }
    Fixture(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": format!("l2lb-speaker-{node}"), "namespace": "l2lb-system" },
        "spec": spec,
    }))
}
