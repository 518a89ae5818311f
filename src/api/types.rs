//! The custom resources, field for field in MetalLB's spelling so that a
//! MetalLB user changes `apiVersion` and nothing else.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One `spec.addresses` entry must be a CIDR, a single IP, or `first-last` of
/// one family. For IPv4 ranges the rule also checks `first <= last` by
/// arithmetic; Kubernetes CEL has no IP ordering, so an IPv6 range written
/// backwards passes the schema and is reported by the controller as an
/// `Invalid` pool condition instead.
const ADDRESS_RULE: &str = "self.all(a, isCIDR(a) || isIP(a) || (a.split('-').size() == 2 \
&& isIP(a.split('-')[0].trim()) && isIP(a.split('-')[1].trim()) \
&& ip(a.split('-')[0].trim()).family() == ip(a.split('-')[1].trim()).family() \
&& (ip(a.split('-')[0].trim()).family() == 6 || \
(int(a.split('-')[0].trim().split('.')[0]) * 16777216 + int(a.split('-')[0].trim().split('.')[1]) * 65536 \
+ int(a.split('-')[0].trim().split('.')[2]) * 256 + int(a.split('-')[0].trim().split('.')[3]) \
<= int(a.split('-')[1].trim().split('.')[0]) * 16777216 + int(a.split('-')[1].trim().split('.')[1]) * 65536 \
+ int(a.split('-')[1].trim().split('.')[2]) * 256 + int(a.split('-')[1].trim().split('.')[3])))))";

fn default_true() -> bool {
    true
}

/// A pool of addresses the controller may hand to LoadBalancer Services.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "l2lb.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    namespaced,
    status = "IPAddressPoolStatus",
    shortname = "ippool",
    category = "l2lb",
    printcolumn = r#"{"name": "Auto Assign", "type": "boolean", "jsonPath": ".spec.autoAssign"}"#,
    printcolumn = r#"{"name": "Avoid Buggy IPs", "type": "boolean", "jsonPath": ".spec.avoidBuggyIPs"}"#,
    printcolumn = r#"{"name": "Addresses", "type": "string", "jsonPath": ".spec.addresses"}"#,
    printcolumn = r#"{"name": "IPv4 Assigned", "type": "integer", "jsonPath": ".status.assignedIPv4"}"#,
    printcolumn = r#"{"name": "IPv4 Available", "type": "integer", "jsonPath": ".status.availableIPv4"}"#,
    printcolumn = r#"{"name": "IPv6 Assigned", "type": "integer", "jsonPath": ".status.assignedIPv6", "priority": 1}"#,
    printcolumn = r#"{"name": "IPv6 Available", "type": "integer", "jsonPath": ".status.availableIPv6", "priority": 1}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Advertised", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Advertised\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// Addresses the pool hands out: CIDRs (`198.18.0.0/24`), ranges
    /// (`198.18.0.100-198.18.0.120`) or single IPs, IPv4 or IPv6.
    #[schemars(length(min = 1, max = 256), inner(length(min = 1, max = 100)))]
    #[x_kube(validation = kube::core::cel::Rule::new(ADDRESS_RULE).message(
        "each address must be a CIDR, a single IP, or a range 'first-last' of one family with first <= last"
    ))]
    pub addresses: Vec<String>,
    /// Whether Services that name no pool may get addresses from this one.
    #[serde(default = "default_true")]
    pub auto_assign: bool,
    /// Skip addresses ending in `.0` and `.255`, which some client stacks treat as broadcast.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    /// Restricts which Services may use the pool and orders pools for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

/// Which Services a pool serves, and its priority among pools that admit them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Lower numbers are tried first; pools without a priority come after those with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub priority: Option<i32>,
    /// Namespaces whose Services may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespace label selectors; a Service in a matching namespace may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Service label selectors; a matching Service may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// What the controller reports about a pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct IPAddressPoolStatus {
    /// IPv4 addresses currently assigned to Services.
    #[serde(rename = "assignedIPv4", default)]
    pub assigned_ipv4: u64,
    /// IPv4 addresses still free.
    #[serde(rename = "availableIPv4", default)]
    pub available_ipv4: u64,
    /// IPv6 addresses currently assigned to Services.
    #[serde(rename = "assignedIPv6", default)]
    pub assigned_ipv6: u64,
    /// IPv6 addresses still free (saturates at 2^64-1 for huge prefixes).
    #[serde(rename = "availableIPv6", default)]
    pub available_ipv6: u64,
    /// `Ready`, `Overlapping` (naming the other pool) and `Invalid` (with the reason).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Announces the addresses of some pools over ARP/NDP from some nodes.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "l2lb.io",
    version = "v1beta1",
    kind = "L2Advertisement",
    namespaced,
    shortname = "l2adv",
    category = "l2lb",
    printcolumn = r#"{"name": "IP Address Pools", "type": "string", "jsonPath": ".spec.ipAddressPools"}"#,
    printcolumn = r#"{"name": "Pool Selectors", "type": "string", "jsonPath": ".spec.ipAddressPoolSelectors", "priority": 1}"#,
    printcolumn = r#"{"name": "Interfaces", "type": "string", "jsonPath": ".spec.interfaces"}"#,
    printcolumn = r#"{"name": "Node Selectors", "type": "string", "jsonPath": ".spec.nodeSelectors", "priority": 1}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pools announced by name. With no names and no selectors, every pool is announced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,
    /// Pools announced by label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes allowed to announce. Empty means every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Interfaces to announce on. Empty means the node's primary interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(length(min = 1, max = 15)))]
    pub interfaces: Vec<String>,
    /// Services announced. Empty means every Service with an address from the pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
    /// Keep announcing from cordoned nodes (`spec.unschedulable` or the
    /// `node.kubernetes.io/unschedulable` taint). By default a cordoned
    /// node hands its VIPs to another node before it is drained.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub announce_from_cordoned_nodes: bool,
    /// Keep a VIP on its current node when a node the election prefers
    /// becomes eligible again (a node returning from a crash or from
    /// maintenance), instead of moving it back. Off by default, as in
    /// MetalLB: every move is a short hand-over, but a move is a move.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub non_revertive: bool,
}

/// Written by the speaker that announces a Service: which node answers for it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "l2lb.io",
    version = "v1beta1",
    kind = "ServiceL2Status",
    namespaced,
    status = "L2StatusInfo",
    category = "l2lb",
    printcolumn = r#"{"name": "Allocated Node", "type": "string", "jsonPath": ".status.node"}"#,
    printcolumn = r#"{"name": "Service Name", "type": "string", "jsonPath": ".status.serviceName"}"#,
    printcolumn = r#"{"name": "Service Namespace", "type": "string", "jsonPath": ".status.serviceNamespace"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
pub struct ServiceL2StatusSpec {}

/// Which node announces a Service, and on which interfaces.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct L2StatusInfo {
    /// The announcing node.
    #[serde(default)]
    pub node: String,
    /// The announced Service's name.
    #[serde(default)]
    pub service_name: String,
    /// The announced Service's namespace.
    #[serde(default)]
    pub service_namespace: String,
    /// Interfaces the VIP is announced on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceInfo>,
}

/// One interface a VIP is announced on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct InterfaceInfo {
    /// Interface name, e.g. `eth0`.
    pub name: String,
}
