//! Which nodes may announce each VIP, and on which interfaces.
//!
//! Owns the eligibility rules of DESIGN.md step 4: pool advertised by an
//! `L2Advertisement` whose pool, Service and node selectors match; node Ready,
//! not `NetworkUnavailable`, not excluded by label; node has the
//! advertisement's interface; for `externalTrafficPolicy: Local` the node has
//! a ready (or serving) endpoint; a Service with no usable endpoint anywhere
//! is not announced.
//!
//! Pure: takes a snapshot of cluster objects ([`ClusterView`]) and returns a
//! plan. It must never call the API server, read the clock or touch sockets;
//! every speaker evaluates it on the same snapshot and must agree.
//!
//! Interfaces of peers: each speaker publishes its interface names in its
//! membership Lease (annotation [`INTERFACES_ANNOTATION`]), so every speaker
//! can evaluate the `interfaces` rule for every node identically. A node whose
//! list is unknown (annotation missing, e.g. an older speaker) is assumed to
//! have every interface: it then announces on the advertisement's interfaces
//! that exist and the VIP is not left unannounced because of missing data.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::api::annotations::has_sharing_annotation;
use crate::api::{EXCLUDE_LB_LABEL, IPAddressPool, L2Advertisement};
use crate::labels::Labels;
use crate::model::{ClassFilter, CompiledAd, PoolIndex, ingress_ips};

/// Lease annotation where a speaker publishes its interface names (comma-separated).
pub const INTERFACES_ANNOTATION: &str = "l2lb.io/interfaces";
/// The taint `kubectl cordon` implies (the node lifecycle controller adds
/// it for `spec.unschedulable`; operators also set it by hand).
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";
/// EndpointSlice label naming the Service the slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

pub use crate::model::ServiceKey;

/// What eligibility needs to know about a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// The Node's labels (for `nodeSelectors` and the exclusion label).
    pub labels: Labels,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// The `NetworkUnavailable` condition is `True`.
    pub network_unavailable: bool,
    /// When the `Ready` condition last left `True` (its `lastTransitionTime`)
    /// while it is not `True`; `None` when ready or when the Node gives no
    /// time (then the node counts as not ready for long).
    pub not_ready_since: Option<jiff::Timestamp>,
    /// Cordoned: `spec.unschedulable` or the [`UNSCHEDULABLE_TAINT`] taint.
    pub cordoned: bool,
    /// Interface names the node's speaker published; `None` = unknown, assume any.
    pub interfaces: Option<BTreeSet<String>>,
    /// The Node's `InternalIP` addresses (its speaker's default interface
    /// is the one holding them).
    pub internal_ips: Vec<std::net::IpAddr>,
}

impl NodeFacts {
    /// Facts from a Node object; interfaces are unknown until set from the lease.
    pub fn from_node(node: &Node) -> Self {
        let conditions = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default();
        let is_true = |t: &str| {
            conditions
                .iter()
                .any(|c| c.type_ == t && c.status == "True")
        };
        let ready = is_true("Ready");
        let spec = node.spec.as_ref();
        Self {
            labels: node.metadata.labels.clone().unwrap_or_default(),
            ready,
            network_unavailable: is_true("NetworkUnavailable"),
            not_ready_since: conditions
                .iter()
                .filter(|_| !ready)
                .find(|c| c.type_ == "Ready")
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0),
            cordoned: spec.and_then(|s| s.unschedulable) == Some(true)
                || spec
                    .and_then(|s| s.taints.as_deref())
                    .unwrap_or_default()
                    .iter()
                    .any(|t| t.key == UNSCHEDULABLE_TAINT),
            interfaces: None,
            internal_ips: node
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_deref())
                .unwrap_or_default()
                .iter()
                .filter(|a| a.type_ == "InternalIP")
                .filter_map(|a| a.address.parse().ok())
                .collect(),
        }
    }

    /// Parses the [`INTERFACES_ANNOTATION`] value (comma-separated names).
    pub fn parse_interfaces(value: &str) -> BTreeSet<String> {
        value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// The operator's rules for nodes in maintenance or trouble (speaker flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeRules {
    /// Cordoned nodes are not eligible (unless an advertisement sets
    /// `announceFromCordonedNodes`), so `kubectl drain` moves VIPs before
    /// it evicts anything.
    pub drain_cordoned: bool,
    /// How long a node may be not `Ready` and stay eligible. Counted from
    /// the condition's `lastTransitionTime`, so every speaker agrees
    /// (to within clock skew) whatever its own start time.
    pub not_ready_grace: std::time::Duration,
}

impl Default for NodeRules {
    fn default() -> Self {
        Self {
            drain_cordoned: true,
            not_ready_grace: std::time::Duration::ZERO,
        }
    }
}

impl NodeRules {
    /// Whether a node with `facts` may announce anything at wall time `at`.
    fn usable(&self, facts: &NodeFacts, at: jiff::Timestamp) -> bool {
        let ready_enough = facts.ready
            || facts
                .not_ready_since
                .is_some_and(|since| self.grace_end(since).is_some_and(|end| at < end));
        ready_enough && !facts.network_unavailable && !facts.labels.contains_key(EXCLUDE_LB_LABEL)
    }

    /// When a node not ready since `since` stops being eligible.
    fn grace_end(&self, since: jiff::Timestamp) -> Option<jiff::Timestamp> {
        let grace = jiff::SignedDuration::try_from(self.not_ready_grace).ok()?;
        since.checked_add(grace).ok()
    }

    /// The next wall time after `at` at which a node's grace ends (the
    /// plan changes with no watch event), if any.
    pub fn next_grace_end(
        &self,
        nodes: &BTreeMap<String, NodeFacts>,
        at: jiff::Timestamp,
    ) -> Option<jiff::Timestamp> {
        nodes
            .values()
            .filter(|f| !f.ready)
            .filter_map(|f| self.grace_end(f.not_ready_since?))
            .filter(|end| *end > at)
            .min()
    }
}

/// A snapshot of everything eligibility depends on, kept current by the
/// speaker's watchers.
#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    /// IPAddressPools by name (install namespace only).
    pub pools: BTreeMap<String, IPAddressPool>,
    /// L2Advertisements by name (install namespace only).
    pub advertisements: BTreeMap<String, L2Advertisement>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, NodeFacts>,
    /// Services by key.
    pub services: BTreeMap<ServiceKey, Service>,
    /// EndpointSlices by (namespace, slice name).
    pub endpoint_slices: BTreeMap<(String, String), EndpointSlice>,
}

/// Where a node would announce a VIP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnnounceOn {
    /// An advertisement without `interfaces` applies: announce on the node's
    /// default interface (the speaker resolves which one that is).
    pub default_interface: bool,
    /// Interfaces named by advertisements that the node has.
    pub interfaces: BTreeSet<String>,
}

impl AnnounceOn {
    fn merge(&mut self, other: &AnnounceOn) {
        self.default_interface |= other.default_interface;
        self.interfaces.extend(other.interfaces.iter().cloned());
    }

    fn is_empty(&self) -> bool {
        !self.default_interface && self.interfaces.is_empty()
    }
}

/// The eligibility of one VIP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VipPlan {
    /// Services that use this VIP and are announceable (several when shared).
    pub services: BTreeSet<ServiceKey>,
    /// Eligible nodes and where each would announce.
    pub nodes: BTreeMap<String, AnnounceOn>,
    /// Services on this VIP that are not announced because they carry
    /// `allow-shared-ip` and an advertisement matching them has
    /// `serviceSelectors` (MetalLB refuses the combination: which Services
    /// share the IP would decide which advertisements apply to it).
    pub refused: BTreeSet<ServiceKey>,
    /// An advertisement announcing it is `nonRevertive`: the VIP stays on
    /// its current owner while that one remains eligible and live.
    pub non_revertive: bool,
}

/// The eligibility of every announceable VIP of the Services `class`
/// admits, judging nodes by `rules` at wall time `at`. VIPs with no
/// eligible node are present with an empty `nodes` map, so callers can
/// report them.
pub fn eligibility(
    view: &ClusterView,
    class: ClassFilter,
    rules: &NodeRules,
    at: jiff::Timestamp,
) -> BTreeMap<IpAddr, VipPlan> {
    let ads = CompiledAd::compile_all(view.advertisements.values());
    let endpoints = usable_endpoints(view);
    let pools = PoolIndex::new(view.pools.values());
    let mut out: BTreeMap<IpAddr, VipPlan> = BTreeMap::new();
    for (key, svc) in &view.services {
        if !class.is_ours(svc) {
            continue;
        }
        // A Service with no usable endpoint anywhere is not announced.
        let Some(endpoint_nodes) = endpoints.get(key) else {
            continue;
        };
        let local = svc
            .spec
            .as_ref()
            .and_then(|s| s.external_traffic_policy.as_deref())
            == Some("Local");
        let svc_labels = svc.metadata.labels.clone().unwrap_or_default();
        let shares_ip = svc
            .metadata
            .annotations
            .as_ref()
            .is_some_and(has_sharing_annotation);
        for vip in ingress_ips(svc) {
            let Some(pool) = pool_of(view, &pools, vip) else {
                continue;
            };
            let pool_labels = pool.metadata.labels.clone().unwrap_or_default();
            let pool_name = pool.metadata.name.as_deref().unwrap_or_default();
            let matching: Vec<&CompiledAd> = ads
                .iter()
                .filter(|a| {
                    a.selects_pool(pool_name, &pool_labels) && a.selects_service(&svc_labels)
                })
                .collect();
            if matching.is_empty() {
                continue;
            }
            if shares_ip && matching.iter().any(|a| a.has_service_selectors()) {
                out.entry(vip).or_default().refused.insert(key.clone());
                continue;
            }
            let mut nodes: BTreeMap<String, AnnounceOn> = BTreeMap::new();
            let mut sticky = false;
            for ad in matching {
                sticky |= ad.non_revertive();
                for (node, facts) in &view.nodes {
                    if !rules.usable(facts, at) || (local && !endpoint_nodes.contains(node)) {
                        continue;
                    }
                    if facts.cordoned && rules.drain_cordoned && !ad.announces_from_cordoned() {
                        continue;
                    }
                    if let Some(on) = announce_on(ad, facts) {
                        nodes.entry(node.clone()).or_default().merge(&on);
                    }
                }
            }
            let plan = out.entry(vip).or_default();
            plan.non_revertive |= sticky;
            if plan.services.is_empty() {
                plan.nodes = nodes;
            } else {
                // A shared IP has one owner, which must be able to serve every
                // Service on it: keep the nodes eligible for all of them.
                plan.nodes.retain(|n, on| match nodes.get(n) {
                    Some(more) => {
                        on.merge(more);
                        true
                    }
                    None => false,
                });
            }
            plan.services.insert(key.clone());
        }
    }
    out
}

/// The pool a VIP belongs to, by the rule the controller allocates by
/// ([`PoolIndex`]), so nothing a user writes on the Service can make a node
/// announce under another pool's advertisements.
fn pool_of<'a>(view: &'a ClusterView, pools: &PoolIndex, vip: IpAddr) -> Option<&'a IPAddressPool> {
    view.pools.get(pools.pool_of(vip)?)
}

/// Nodes with a ready (or serving) endpoint, per Service that has any.
fn usable_endpoints(view: &ClusterView) -> BTreeMap<ServiceKey, BTreeSet<String>> {
    let mut out: BTreeMap<ServiceKey, BTreeSet<String>> = BTreeMap::new();
    for ((namespace, _), slice) in &view.endpoint_slices {
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let cond = ep.conditions.as_ref();
            // Kubernetes: a nil `ready` means ready; `serving` covers
            // terminating endpoints that still take traffic.
            let ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let serving = cond.and_then(|c| c.serving) == Some(true);
            if !(ready || serving) {
                continue;
            }
            let nodes = out
                .entry(ServiceKey {
                    namespace: namespace.clone(),
                    name: svc.clone(),
                })
                .or_default();
            // An endpoint without a node still makes the Service announceable
            // (Cluster policy); it just makes no node eligible under Local.
            if let Some(n) = &ep.node_name {
                nodes.insert(n.clone());
            }
        }
    }
    out
}

/// Where advertisement `ad` makes a node with `facts` announce, or `None`
/// if it does not apply to that node.
fn announce_on(ad: &CompiledAd<'_>, node: &NodeFacts) -> Option<AnnounceOn> {
    if !ad.selects_node(&node.labels) {
        return None;
    }
    let wanted = ad.interfaces();
    if wanted.is_empty() {
        return Some(AnnounceOn {
            default_interface: true,
            interfaces: BTreeSet::new(),
        });
    }
    let on = AnnounceOn {
        default_interface: false,
        interfaces: wanted
            .iter()
            .filter(|i| {
                node.interfaces
                    .as_ref()
                    .is_none_or(|have| have.contains(*i))
            })
            .cloned()
            .collect(),
    };
    (!on.is_empty()).then_some(on)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::LOAD_BALANCER_CLASS;
    use crate::fixtures;
    use serde_json::json;
    use std::time::Duration;

    fn key(ns: &str, name: &str) -> ServiceKey {
        ServiceKey {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    /// Wall time the tests judge Ready grace at.
    fn t0() -> jiff::Timestamp {
        "2026-12-04T12:00:00Z".parse().unwrap()
    }

    fn plan(v: &ClusterView, class: ClassFilter) -> BTreeMap<IpAddr, VipPlan> {
        eligibility(v, class, &NodeRules::default(), t0())
    }

    fn ready_node(labels: &[(&str, &str)]) -> NodeFacts {
        NodeFacts {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ready: true,
            network_unavailable: false,
            not_ready_since: None,
            cordoned: false,
            interfaces: None,
            internal_ips: Vec::new(),
        }
    }

    fn pool(name: &str, addresses: &[&str], labels: serde_json::Value) -> IPAddressPool {
        fixtures::pool(name, addresses).labels(labels).build()
    }

    fn ad(name: &str, spec: serde_json::Value) -> L2Advertisement {
        fixtures::advertisement(name).spec(spec).build()
    }

    fn service(name: &str, ips: &[&str], extra: serde_json::Value) -> Service {
        fixtures::service(name).ingress(ips).merge(extra).build()
    }

    fn slice(svc: &str, name: &str, eps: serde_json::Value) -> EndpointSlice {
        fixtures::slice(svc, name, &[])
            .merge(json!({ "endpoints": eps }))
            .build()
    }

    /// Three ready nodes, one pool, one all-pools advertisement, one Cluster
    /// Service `web` on 198.18.0.10 with a ready endpoint on node-a.
    fn base() -> ClusterView {
        let mut v = ClusterView::default();
        v.pools.insert(
            "p".into(),
            pool(
                "p",
                &["198.18.0.0/24", "fd00:198:18::/64"],
                json!({"tier": "gold"}),
            ),
        );
        v.advertisements.insert("all".into(), ad("all", json!({})));
        for n in ["node-a", "node-b", "node-c"] {
            v.nodes.insert(n.into(), ready_node(&[("zone", n)]));
        }
        v.services.insert(
            key("default", "web"),
            service("web", &["198.18.0.10"], json!({})),
        );
        v.endpoint_slices.insert(
            ("default".into(), "web-1".into()),
            slice(
                "web",
                "web-1",
                json!([{"addresses": ["10.0.0.1"], "nodeName": "node-a"}]),
            ),
        );
        v
    }

    fn vip() -> IpAddr {
        "198.18.0.10".parse().unwrap()
    }

    fn eligible(v: &ClusterView) -> Vec<String> {
        plan(v, ClassFilter::default())
            .get(&vip())
            .map(|p| p.nodes.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn all_ready_nodes_eligible_on_default_interface() {
        let plan = plan(&base(), ClassFilter::default());
        let p = &plan[&vip()];
        assert_eq!(p.services, BTreeSet::from([key("default", "web")]));
        assert_eq!(p.nodes.len(), 3);
        assert!(
            p.nodes
                .values()
                .all(|on| on.default_interface && on.interfaces.is_empty())
        );
    }

    #[test]
    fn not_ready_network_unavailable_and_excluded_nodes_are_not_eligible() {
        let mut v = base();
        v.nodes.get_mut("node-a").unwrap().ready = false;
        v.nodes.get_mut("node-b").unwrap().network_unavailable = true;
        assert_eq!(eligible(&v), ["node-c"]);
        v.nodes
            .get_mut("node-c")
            .unwrap()
            .labels
            .insert(EXCLUDE_LB_LABEL.into(), "".into());
        assert!(eligible(&v).is_empty());
    }

    fn eligible_with(v: &ClusterView, rules: NodeRules, at: jiff::Timestamp) -> Vec<String> {
        eligibility(v, ClassFilter::default(), &rules, at)
            .get(&vip())
            .map(|p| p.nodes.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn cordoned_nodes_hand_over_unless_the_flag_or_the_advertisement_keeps_them() {
        let mut v = base();
        v.nodes.get_mut("node-a").unwrap().cordoned = true;
        assert_eq!(eligible(&v), ["node-b", "node-c"]);
        let keep = NodeRules {
            drain_cordoned: false,
            ..NodeRules::default()
        };
        assert_eq!(eligible_with(&v, keep, t0()).len(), 3, "speaker flag off");
        v.advertisements.insert(
            "all".into(),
            ad("all", json!({"announceFromCordonedNodes": true})),
        );
        assert_eq!(eligible(&v).len(), 3, "advertisement keeps cordoned nodes");
        // Another advertisement of the same pool without the field does
        // not make node-a ineligible through the first one.
        v.advertisements
            .insert("strict".into(), ad("strict", json!({})));
        assert_eq!(eligible(&v).len(), 3);
    }

    #[test]
    fn a_not_ready_node_stays_eligible_for_the_grace_counted_from_the_transition() {
        let mut v = base();
        let since = t0() - jiff::SignedDuration::from_secs(5);
        {
            let a = v.nodes.get_mut("node-a").unwrap();
            a.ready = false;
            a.not_ready_since = Some(since);
        }
        let rules = NodeRules {
            not_ready_grace: Duration::from_secs(10),
            ..NodeRules::default()
        };
        assert_eq!(
            eligible_with(&v, rules, t0()).len(),
            3,
            "5 s into a 10 s grace"
        );
        let later = t0() + jiff::SignedDuration::from_secs(5);
        assert_eq!(eligible_with(&v, rules, later), ["node-b", "node-c"]);
        assert_eq!(
            rules.next_grace_end(&v.nodes, t0()),
            Some(since + jiff::SignedDuration::from_secs(10))
        );
        assert_eq!(rules.next_grace_end(&v.nodes, later), None);
        assert_eq!(eligible(&v), ["node-b", "node-c"], "no grace by default");
        v.nodes.get_mut("node-a").unwrap().not_ready_since = None;
        assert_eq!(
            eligible_with(&v, rules, t0()),
            ["node-b", "node-c"],
            "no transition time: not ready for long"
        );
    }

    #[test]
    fn node_facts_see_cordon_and_the_not_ready_transition() {
        let node = |v: serde_json::Value| NodeFacts::from_node(&serde_json::from_value(v).unwrap());
        let cordoned = node(json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}}));
        assert!(cordoned.cordoned);
        let tainted = node(json!({"metadata": {"name": "n"}, "spec": {"taints": [
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}}));
        assert!(tainted.cordoned);
        let other = node(
            json!({"metadata": {"name": "n"}, "spec": {"unschedulable": false,
            "taints": [{"key": "dedicated", "effect": "NoSchedule"}]}}),
        );
        assert!(!other.cordoned);
        let t = "2026-12-04T11:59:00Z";
        let not_ready = node(json!({"metadata": {"name": "n"}, "status": {"conditions": [
            {"type": "Ready", "status": "Unknown", "lastTransitionTime": t}]}}));
        assert_eq!(not_ready.not_ready_since, Some(t.parse().unwrap()));
        let ready = node(json!({"metadata": {"name": "n"}, "status": {"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": t}]}}));
        assert_eq!(ready.not_ready_since, None);
    }

    #[test]
    fn node_facts_from_node_conditions() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n", "labels": {"a": "b"}},
            "status": {"conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "NetworkUnavailable", "status": "True"}
            ], "addresses": [
                {"type": "Hostname", "address": "n"},
                {"type": "InternalIP", "address": "198.18.0.11"},
                {"type": "ExternalIP", "address": "198.19.0.11"},
                {"type": "InternalIP", "address": "fd00::11"},
                {"type": "InternalIP", "address": "garbage"}
            ]}
        }))
        .unwrap();
        let f = NodeFacts::from_node(&node);
        assert!(f.ready && f.network_unavailable);
        assert_eq!(f.labels["a"], "b");
        let ips: Vec<std::net::IpAddr> =
            vec!["198.18.0.11".parse().unwrap(), "fd00::11".parse().unwrap()];
        assert_eq!(f.internal_ips, ips);
        let unknown: Node = serde_json::from_value(json!({"metadata": {"name": "n"},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}))
        .unwrap();
        assert!(!NodeFacts::from_node(&unknown).ready);
    }

    #[test]
    fn node_selectors_restrict() {
        let mut v = base();
        v.advertisements.insert(
            "all".into(),
            ad(
                "all",
                json!({"nodeSelectors": [
                    {"matchLabels": {"zone": "node-b"}},
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["node-c"]}]}
                ]}),
            ),
        );
        assert_eq!(eligible(&v), ["node-b", "node-c"]);
    }

    #[test]
    fn pool_must_be_advertised_by_name_or_selector() {
        let mut v = base();
        v.advertisements.insert(
            "all".into(),
            ad("all", json!({"ipAddressPools": ["other"]})),
        );
        assert!(
            plan(&v, ClassFilter::default()).is_empty(),
            "pool not advertised"
        );
        v.advertisements
            .insert("all".into(), ad("all", json!({"ipAddressPools": ["p"]})));
        assert_eq!(eligible(&v).len(), 3);
        v.advertisements.insert(
            "all".into(),
            ad(
                "all",
                json!({"ipAddressPoolSelectors": [{"matchLabels": {"tier": "silver"}}]}),
            ),
        );
        assert!(plan(&v, ClassFilter::default()).is_empty());
        v.advertisements.insert(
            "all".into(),
            ad(
                "all",
                json!({"ipAddressPoolSelectors": [{"matchLabels": {"tier": "gold"}}]}),
            ),
        );
        assert_eq!(eligible(&v).len(), 3);
        v.advertisements.clear();
        assert!(
            plan(&v, ClassFilter::default()).is_empty(),
            "no advertisement, nothing announced"
        );
    }

    #[test]
    fn service_selectors_restrict() {
        let mut v = base();
        v.advertisements.insert(
            "all".into(),
            ad(
                "all",
                json!({"serviceSelectors": [{"matchLabels": {"app": "db"}}]}),
            ),
        );
        assert!(plan(&v, ClassFilter::default()).is_empty());
        v.advertisements.insert(
            "all".into(),
            ad(
                "all",
                json!({"serviceSelectors": [{"matchLabels": {"app": "web"}}]}),
            ),
        );
        assert_eq!(eligible(&v).len(), 3);
    }

    #[test]
    fn advertisements_union_per_node() {
        let mut v = base();
        v.advertisements.insert(
            "all".into(),
            ad(
                "all",
                json!({"nodeSelectors": [{"matchLabels": {"zone": "node-a"}}]}),
            ),
        );
        v.advertisements.insert(
            "b".into(),
            ad("b", json!({"nodeSelectors": [{"matchLabels": {"zone": "node-b"}}], "interfaces": ["eth1"]})),
        );
        let plan = plan(&v, ClassFilter::default());
        let p = &plan[&vip()];
        assert!(p.nodes["node-a"].default_interface);
        assert_eq!(
            p.nodes["node-b"].interfaces,
            BTreeSet::from(["eth1".to_string()])
        );
        assert!(!p.nodes["node-b"].default_interface);
        assert!(!p.nodes.contains_key("node-c"));
    }

    #[test]
    fn interfaces_require_the_node_to_have_one() {
        let mut v = base();
        v.advertisements.insert(
            "all".into(),
            ad("all", json!({"interfaces": ["eth1", "eth2"]})),
        );
        v.nodes.get_mut("node-a").unwrap().interfaces = Some(BTreeSet::from(["eth0".into()]));
        v.nodes.get_mut("node-b").unwrap().interfaces =
            Some(BTreeSet::from(["eth0".into(), "eth2".into()]));
        // node-c: unknown list, assumed to have them.
        let plan = plan(&v, ClassFilter::default());
        let p = &plan[&vip()];
        assert!(!p.nodes.contains_key("node-a"));
        assert_eq!(
            p.nodes["node-b"].interfaces,
            BTreeSet::from(["eth2".to_string()])
        );
        assert_eq!(p.nodes["node-c"].interfaces.len(), 2);
    }

    #[test]
    fn no_usable_endpoint_means_not_announced() {
        let mut v = base();
        v.endpoint_slices.insert(
            ("default".into(), "web-1".into()),
            slice("web", "web-1", json!([{"addresses": ["10.0.0.1"], "nodeName": "node-a", "conditions": {"ready": false}}])),
        );
        assert!(plan(&v, ClassFilter::default()).is_empty());
        v.endpoint_slices.clear();
        assert!(plan(&v, ClassFilter::default()).is_empty());
        // Terminating but still serving counts.
        v.endpoint_slices.insert(
            ("default".into(), "web-1".into()),
            slice(
                "web",
                "web-1",
                json!([{"addresses": ["10.0.0.1"], "nodeName": "node-a",
                "conditions": {"ready": false, "serving": true, "terminating": true}}]),
            ),
        );
        assert_eq!(eligible(&v).len(), 3);
    }

    #[test]
    fn endpoint_slices_match_by_namespace_and_label() {
        let mut v = base();
        v.endpoint_slices.clear();
        let mut other_ns = slice(
            "web",
            "web-x",
            json!([{"addresses": ["10.0.0.1"], "nodeName": "node-a"}]),
        );
        other_ns.metadata.namespace = Some("other".into());
        v.endpoint_slices
            .insert(("other".into(), "web-x".into()), other_ns);
        v.endpoint_slices.insert(
            ("default".into(), "db-1".into()),
            slice(
                "db",
                "db-1",
                json!([{"addresses": ["10.0.0.1"], "nodeName": "node-a"}]),
            ),
        );
        assert!(plan(&v, ClassFilter::default()).is_empty());
    }

    #[test]
    fn local_policy_needs_endpoint_on_node() {
        let mut v = base();
        v.services.insert(
            key("default", "web"),
            service(
                "web",
                &["198.18.0.10"],
                json!({"spec": {"externalTrafficPolicy": "Local"}}),
            ),
        );
        assert_eq!(eligible(&v), ["node-a"]);
        v.endpoint_slices.insert(
            ("default".into(), "web-2".into()),
            slice("web", "web-2", json!([
                {"addresses": ["10.0.0.2"], "nodeName": "node-c"},
                {"addresses": ["10.0.0.3"], "nodeName": "node-b", "conditions": {"ready": false}}
            ])),
        );
        assert_eq!(eligible(&v), ["node-a", "node-c"]);
    }

    /// Replaces Service `web` by one whose spec is merged with `spec`.
    fn set_web(v: &mut ClusterView, spec: serde_json::Value) {
        let web = service("web", &["198.18.0.10"], json!({ "spec": spec }));
        v.services.insert(key("default", "web"), web);
    }

    #[test]
    fn other_classes_and_types_are_ignored() {
        let mut v = base();
        set_web(&mut v, json!({"loadBalancerClass": "other.io/lb"}));
        assert!(plan(&v, ClassFilter::default()).is_empty());
        set_web(&mut v, json!({"loadBalancerClass": LOAD_BALANCER_CLASS}));
        assert_eq!(eligible(&v).len(), 3);
        set_web(&mut v, json!({"type": "ClusterIP"}));
        assert!(plan(&v, ClassFilter::default()).is_empty());
    }

    #[test]
    fn with_the_class_required_classless_services_are_not_announced() {
        // The controller given --require-class allocates nothing for a
        // classless Service; its address (written by someone else) must
        // not be announced either.
        let required = ClassFilter::new(true);
        let mut v = base();
        assert_eq!(eligible(&v).len(), 3, "classless: announced by default");
        assert!(plan(&v, required).is_empty());
        set_web(&mut v, json!({"loadBalancerClass": LOAD_BALANCER_CLASS}));
        assert_eq!(plan(&v, required).len(), 1);
    }

    #[test]
    fn a_pool_with_a_malformed_service_allocation_is_still_announced() {
        // The controller keeps such a pool (automatic assignment off) and
        // its Services keep their addresses; they must stay answered.
        let mut v = base();
        let p: IPAddressPool = fixtures::pool("p", &["198.18.0.0/24"])
            .spec(
                json!({"serviceAllocation": {"serviceSelectors": [{"matchExpressions":
                [{"key": "app", "operator": "Bogus", "values": ["x"]}]}]}}),
            )
            .build();
        assert!(
            crate::model::pool_spec(&p).is_err(),
            "selector must be malformed"
        );
        v.pools.insert("p".into(), p);
        assert_eq!(eligible(&v).len(), 3);
    }

    #[test]
    fn pool_from_addresses_only() {
        let mut v = base();
        v.pools
            .insert("q".into(), pool("q", &["203.0.113.0/24"], json!({})));
        v.advertisements
            .insert("all".into(), ad("all", json!({"ipAddressPools": ["q"]})));
        // By address the VIP belongs to p, which is not advertised; a
        // MetalLB-style pool annotation naming q changes nothing.
        assert!(plan(&v, ClassFilter::default()).is_empty());
        v.services.insert(
            key("default", "web"),
            service(
                "web",
                &["198.18.0.10"],
                json!({"metadata": {"annotations": {"metallb.io/ip-allocated-from-pool": "q"}}}),
            ),
        );
        assert!(plan(&v, ClassFilter::default()).is_empty());
        // A VIP in no pool is not announced.
        v.services.insert(
            key("default", "web"),
            service("web", &["192.0.2.1"], json!({})),
        );
        v.advertisements.insert("all".into(), ad("all", json!({})));
        assert!(plan(&v, ClassFilter::default()).is_empty());
    }

    #[test]
    fn dual_stack_vips_both_planned() {
        let mut v = base();
        v.services.insert(
            key("default", "web"),
            service("web", &["198.18.0.10", "fd00:198:18::10"], json!({})),
        );
        let plan = plan(&v, ClassFilter::default());
        assert_eq!(plan.len(), 2);
        assert!(plan.values().all(|p| p.nodes.len() == 3));
    }

    #[test]
    fn shared_ip_needs_nodes_eligible_for_every_service() {
        let mut v = base();
        v.services.insert(
            key("default", "api"),
            service(
                "api",
                &["198.18.0.10"],
                json!({"spec": {"externalTrafficPolicy": "Local"}}),
            ),
        );
        v.endpoint_slices.insert(
            ("default".into(), "api-1".into()),
            slice(
                "api",
                "api-1",
                json!([{"addresses": ["10.0.0.5"], "nodeName": "node-b"}]),
            ),
        );
        let plan = plan(&v, ClassFilter::default());
        let p = &plan[&vip()];
        assert_eq!(p.services.len(), 2);
        assert_eq!(p.nodes.keys().collect::<Vec<_>>(), ["node-b"]);
    }

    /// MetalLB v0.16 (`ShouldAnnounce`): a Service with `allow-shared-ip`
    /// under any prefix is not announced when any advertisement that
    /// matches it has `serviceSelectors`; advertisements whose selectors do
    /// not match it are not considered.
    #[test]
    fn allow_shared_ip_with_service_selectors_is_refused() {
        let labelled = json!({"metadata": {"labels": {"app": "web"}}});
        for prefix in crate::api::annotations::PREFIXES {
            let mut v = base();
            let shared = json!({"metadata": {
                "labels": {"app": "web"},
                "annotations": {format!("{prefix}allow-shared-ip"): "k"}
            }});
            let web = key("default", "web");
            v.services
                .insert(web.clone(), service("web", &["198.18.0.10"], shared));
            assert_eq!(eligible(&v).len(), 3, "{prefix}: no selectors, announced");
            v.advertisements.insert(
                "other".into(),
                ad(
                    "other",
                    json!({"serviceSelectors": [{"matchLabels": {"app": "db"}}]}),
                ),
            );
            assert_eq!(eligible(&v).len(), 3, "{prefix}: a non-matching selector");
            v.advertisements.insert(
                "web".into(),
                ad(
                    "web",
                    json!({"serviceSelectors": [{"matchLabels": {"app": "web"}}]}),
                ),
            );
            let plan = plan(&v, ClassFilter::default());
            let p = &plan[&vip()];
            assert!(p.nodes.is_empty() && p.services.is_empty(), "{prefix}");
            assert_eq!(p.refused, BTreeSet::from([web.clone()]));
            v.services
                .insert(web, service("web", &["198.18.0.10"], labelled.clone()));
            assert_eq!(eligible(&v).len(), 3, "{prefix}: not shared, announced");
        }
    }

    #[test]
    fn invalid_selector_advertises_nothing() {
        let mut v = base();
        v.advertisements.insert(
            "all".into(),
            ad("all", json!({"nodeSelectors": [{"matchExpressions": [{"key": "k", "operator": "Bogus"}]}]})),
        );
        assert!(plan(&v, ClassFilter::default()).is_empty());
    }

    #[test]
    fn interfaces_annotation_parses() {
        assert_eq!(
            NodeFacts::parse_interfaces(" eth0, ,eth1,"),
            BTreeSet::from(["eth0".to_string(), "eth1".to_string()])
        );
    }
}
