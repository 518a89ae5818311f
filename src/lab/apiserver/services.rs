//! Service defaulting, allocation and validation, as kube-apiserver's
//! Service REST strategy does them, so that l2lb's controller and speakers
//! see the objects a real cluster would hand them.
//!
//! Owns: `type`, `sessionAffinity`, `internalTrafficPolicy`,
//! `externalTrafficPolicy` and port `protocol`/`targetPort` defaults;
//! `ipFamilyPolicy`/`ipFamilies`; cluster IPs from [`SERVICE_CIDR_V4`] /
//! [`SERVICE_CIDR_V6`]; node ports from 30000-32767 (and a health-check node
//! port for `LoadBalancer` + `Local`); keeping allocated values across
//! updates; field errors for invalid Services. Pure: what is already
//! allocated comes in as [`Allocated`].

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value, json};

use super::error::Cause;

/// The IPv4 service CIDR: inside 198.18.0.0/15, away from the lab's LAN (198.18.0.0/24);
/// 32768 addresses, so the controller bench's 5000 Services fit.
pub const SERVICE_CIDR_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 19, 128, 0), 17);
/// The IPv6 service CIDR: a ULA prefix beside the lab's fd00:198:18::/64.
pub const SERVICE_CIDR_V6: (Ipv6Addr, u8) =
    (Ipv6Addr::new(0xfd00, 0x198, 0x19, 0, 0, 0, 0, 0), 112);
/// Node ports, kube-apiserver's default `--service-node-port-range`.
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<i64> = 30000..=32767;

/// Addresses below this offset are not handed out automatically (the first
/// is the `kubernetes` Service's in a real cluster), keeping numbers short.
const FIRST_OFFSET: u128 = 10;

/// Which service IP families the cluster is configured for, as
/// kube-apiserver's `--service-cluster-ip-range` with one or two ranges.
/// A single-stack cluster gives a `PreferDualStack` Service one family and
/// rejects `RequireDualStack`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stack {
    /// Both [`SERVICE_CIDR_V4`] and [`SERVICE_CIDR_V6`] (the default).
    #[default]
    Dual,
    /// Only the first family a Service asks for.
    Single,
}

/// Cluster IPs and node ports held by the other Services.
#[derive(Clone, Debug, Default)]
pub struct Allocated {
    /// Every cluster IP in use.
    pub ips: BTreeSet<IpAddr>,
    /// Every node port (and health-check node port) in use.
    pub node_ports: BTreeSet<i64>,
}

impl Allocated {
    /// Records what `svc` holds.
    pub fn add(&mut self, svc: &Value) {
        for ip in svc
            .pointer("/spec/clusterIPs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(ip) = ip.as_str().and_then(|s| s.parse().ok()) {
                self.ips.insert(ip);
            }
        }
        for p in svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
                self.node_ports.insert(np);
            }
        }
        if let Some(hc) = svc
            .pointer("/spec/healthCheckNodePort")
            .and_then(Value::as_i64)
        {
            self.node_ports.insert(hc);
        }
    }
}

fn in_cidr(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let (net, len) = SERVICE_CIDR_V4;
            u32::from(a) >> (32 - len) == u32::from(net) >> (32 - len)
        }
        IpAddr::V6(a) => {
            let (net, len) = SERVICE_CIDR_V6;
            u128::from(a) >> (128 - len) == u128::from(net) >> (128 - len)
        }
    }
}

fn cidr_text(family: &str) -> String {
    if family == "IPv6" {
        format!("{}/{}", SERVICE_CIDR_V6.0, SERVICE_CIDR_V6.1)
    } else {
        format!("{}/{}", SERVICE_CIDR_V4.0, SERVICE_CIDR_V4.1)
    }
}

fn family_of(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

fn allocate_ip(family: &str, used: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    if family == "IPv6" {
        let (net, len) = SERVICE_CIDR_V6;
        let size = 1u128 << (128 - len);
        (FIRST_OFFSET..size - 1)
            .map(|o| IpAddr::V6(Ipv6Addr::from(u128::from(net) + o)))
            .find(|ip| !used.contains(ip))
    } else {
        let (net, len) = SERVICE_CIDR_V4;
        let size = 1u32 << (32 - len);
        (FIRST_OFFSET as u32..size - 1)
            .map(|o| IpAddr::V4(Ipv4Addr::from(u32::from(net) + o)))
            .find(|ip| !used.contains(ip))
    }
}

fn allocate_node_port(used: &BTreeSet<i64>) -> Option<i64> {
    NODE_PORT_RANGE.clone().find(|p| !used.contains(p))
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

const TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];
const POLICIES: [&str; 2] = ["Cluster", "Local"];
const FAMILY_POLICIES: [&str; 3] = ["PreferDualStack", "RequireDualStack", "SingleStack"];

/// Defaults, allocates and validates a Service on create (`old` = None) or
/// update. `used` holds what the *other* Services hold. Returns the object
/// to store, or every field error found.
pub fn prepare(
    mut svc: Value,
    old: Option<&Value>,
    used: &Allocated,
    stack: Stack,
) -> Result<Value, Vec<Cause>> {
    let mut causes = Vec::new();
    if !svc.get("spec").is_some_and(Value::is_object) {
        svc["spec"] = json!({});
    }
    let old_spec = old
        .and_then(|o| o.get("spec"))
        .cloned()
        .unwrap_or(json!({}));
    let spec: &mut Map<String, Value> = match svc.get_mut("spec").and_then(Value::as_object_mut) {
        Some(m) => m,
        None => unreachable!("spec was made an object above"),
    };

    let ty = str_at(&Value::Object(spec.clone()), "type")
        .unwrap_or("ClusterIP")
        .to_string();
    spec.insert("type".into(), json!(ty));
    if !TYPES.contains(&ty.as_str()) {
        causes.push(Cause::not_supported("spec.type", &ty, &TYPES));
    }
    let external_name = ty == "ExternalName";
    let needs_node_ports = ty == "NodePort"
        || (ty == "LoadBalancer"
            && spec
                .get("allocateLoadBalancerNodePorts")
                .and_then(Value::as_bool)
                != Some(false));
    if ty == "LoadBalancer" && spec.get("allocateLoadBalancerNodePorts").is_none() {
        spec.insert("allocateLoadBalancerNodePorts".into(), json!(true));
    }
    if !spec.contains_key("sessionAffinity") {
        spec.insert("sessionAffinity".into(), json!("None"));
    }

    // Allocated values the update left out are kept, as kube-apiserver's
    // patchAllocatedValues does (a client's PUT of its manifest must not
    // move a cluster IP).
    let old_cluster_ips = strings(old_spec.get("clusterIPs"));
    if !external_name && !old_cluster_ips.is_empty() {
        let new_ip = spec.get("clusterIP").and_then(Value::as_str).unwrap_or("");
        if new_ip.is_empty() {
            spec.insert("clusterIP".into(), json!(old_cluster_ips[0]));
            if spec
                .get("clusterIPs")
                .is_none_or(|v| v.as_array().is_none_or(Vec::is_empty))
            {
                spec.insert("clusterIPs".into(), json!(old_cluster_ips));
            }
        }
        for key in ["ipFamilies", "ipFamilyPolicy"] {
            if spec.get(key).is_none_or(Value::is_null)
                && let Some(v) = old_spec.get(key)
            {
                spec.insert(key.into(), v.clone());
            }
        }
    }

    // Ports: protocol, targetPort, node ports.
    let mut node_ports = used.node_ports.clone();
    let old_ports: Vec<Value> = old_spec
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut seen = BTreeSet::new();
    let mut ports: Vec<Value> = spec
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if ports.is_empty() && !external_name && !headless {
        causes.push(Cause::required("spec.ports", ""));
    }
    let multi = ports.len() > 1;
    for (i, p) in ports.iter_mut().enumerate() {
        let f = |k: &str| format!("spec.ports[{i}].{k}");
        let Some(pm) = p.as_object_mut() else {
            causes.push(Cause::invalid(
                format!("spec.ports[{i}]"),
                "null",
                "must be an object",
            ));
            continue;
        };
        let proto = pm
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP")
            .to_string();
        pm.insert("protocol".into(), json!(proto));
        if !PROTOCOLS.contains(&proto.as_str()) {
            causes.push(Cause::not_supported(f("protocol"), &proto, &PROTOCOLS));
        }
        let port = pm.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            causes.push(Cause::invalid(
                f("port"),
                port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if !pm.contains_key("targetPort") {
            pm.insert("targetPort".into(), json!(port));
        }
        if multi
            && pm
                .get("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            causes.push(Cause::required(f("name"), ""));
        }
        if !seen.insert((port, proto.clone())) {
            causes.push(Cause::duplicate(
                format!("spec.ports[{i}]"),
                format!("{port}/{proto}"),
            ));
        }
        let given = pm
            .get("nodePort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0);
        // The node port this port had before (same port and protocol).
        let previous = old_ports
            .iter()
            .find(|o| {
                o.get("port").and_then(Value::as_i64) == Some(port)
                    && o.get("protocol").and_then(Value::as_str).unwrap_or("TCP") == proto
            })
            .and_then(|o| o.get("nodePort").and_then(Value::as_i64));
        if !needs_node_ports {
            match given {
                // Left over from before a type change: dropped, as the real server does.
                Some(n) if Some(n) == previous => {
                    pm.remove("nodePort");
                }
                Some(_) if ty == "LoadBalancer" => {}
                Some(_) => causes.push(Cause::forbidden(
                    f("nodePort"),
                    &format!("may not be used when `type` is '{ty}'"),
                )),
                None => {
                    pm.remove("nodePort");
                }
            }
            continue;
        }
        match given.or(previous) {
            Some(n) if !NODE_PORT_RANGE.contains(&n) => causes.push(Cause::invalid(
                f("nodePort"),
                n,
                "provided port is not in the valid range. The range of valid ports is 30000-32767",
            )),
            Some(n) if Some(n) != previous && node_ports.contains(&n) => causes.push(
                Cause::invalid(f("nodePort"), n, "provided port is already allocated"),
            ),
            Some(n) => {
                node_ports.insert(n);
                pm.insert("nodePort".into(), json!(n));
            }
            None => match allocate_node_port(&node_ports) {
                Some(n) => {
                    node_ports.insert(n);
                    pm.insert("nodePort".into(), json!(n));
                }
                None => causes.push(Cause::invalid(f("nodePort"), 0, "range is full")),
            },
        }
    }
    if !ports.is_empty() || spec.contains_key("ports") {
        spec.insert("ports".into(), Value::Array(ports));
    }

    // Traffic policies.
    let external = ty == "NodePort" || ty == "LoadBalancer";
    if !external_name && !spec.contains_key("internalTrafficPolicy") {
        spec.insert("internalTrafficPolicy".into(), json!("Cluster"));
    }
    if let Some(p) = spec.get("internalTrafficPolicy").and_then(Value::as_str)
        && !POLICIES.contains(&p)
    {
        causes.push(Cause::not_supported(
            "spec.internalTrafficPolicy",
            p,
            &POLICIES,
        ));
    }
    if external {
        let etp = spec
            .get("externalTrafficPolicy")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("Cluster")
            .to_string();
        if !POLICIES.contains(&etp.as_str()) {
            causes.push(Cause::not_supported(
                "spec.externalTrafficPolicy",
                &etp,
                &POLICIES,
            ));
        }
        spec.insert("externalTrafficPolicy".into(), json!(etp));
        let hc = spec
            .get("healthCheckNodePort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0);
        if ty == "LoadBalancer" && etp == "Local" {
            let hc = hc.or_else(|| old_spec.get("healthCheckNodePort").and_then(Value::as_i64));
            match hc.or_else(|| allocate_node_port(&node_ports)) {
                Some(n) => {
                    node_ports.insert(n);
                    spec.insert("healthCheckNodePort".into(), json!(n));
                }
                None => causes.push(Cause::invalid(
                    "spec.healthCheckNodePort",
                    0,
                    "range is full",
                )),
            }
        } else {
            spec.remove("healthCheckNodePort");
        }
    } else {
        spec.remove("externalTrafficPolicy");
        spec.remove("healthCheckNodePort");
    }

    // Cluster IPs and families.
    if external_name {
        for k in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            spec.remove(k);
        }
        if spec
            .get("externalName")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            causes.push(Cause::required("spec.externalName", ""));
        }
    } else {
        cluster_ips(spec, &old_cluster_ips, used, stack, &mut causes);
    }

    if causes.is_empty() {
        Ok(svc)
    } else {
        Err(causes)
    }
}

/// Fills `clusterIP`, `clusterIPs`, `ipFamilies` and `ipFamilyPolicy`.
fn cluster_ips(
    spec: &mut Map<String, Value>,
    old_cluster_ips: &[String],
    used: &Allocated,
    stack: Stack,
    causes: &mut Vec<Cause>,
) {
    let mut ips = strings(spec.get("clusterIPs"));
    let primary = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if ips.is_empty() && !primary.is_empty() {
        ips.push(primary.clone());
    }
    if !primary.is_empty() && ips.first() != Some(&primary) {
        causes.push(Cause::invalid(
            "spec.clusterIPs",
            format!("{ips:?}"),
            "element [0] must match clusterIP",
        ));
        return;
    }
    if !old_cluster_ips.is_empty() && ips.first() != old_cluster_ips.first() {
        causes.push(Cause::invalid(
            "spec.clusterIPs[0]",
            format!("{:?}", ips.first().cloned().unwrap_or_default()),
            "may not change once set",
        ));
        return;
    }
    let headless = ips.first().map(String::as_str) == Some("None");
    let policy = spec
        .get("ipFamilyPolicy")
        .and_then(Value::as_str)
        .unwrap_or("SingleStack")
        .to_string();
    if !FAMILY_POLICIES.contains(&policy.as_str()) {
        causes.push(Cause::not_supported(
            "spec.ipFamilyPolicy",
            &policy,
            &FAMILY_POLICIES,
        ));
        return;
    }
    let mut families = strings(spec.get("ipFamilies"));
    for (i, f) in families.iter().enumerate() {
        if f != "IPv4" && f != "IPv6" {
            causes.push(Cause::not_supported(
                format!("spec.ipFamilies[{i}]"),
                f,
                &["IPv4", "IPv6"],
            ));
        }
    }
    if families.len() > 2 || (families.len() == 2 && families[0] == families[1]) {
        causes.push(Cause::invalid(
            "spec.ipFamilies",
            format!("{families:?}"),
            "must be one or two distinct IP families",
        ));
    }
    if families.len() == 2 && policy == "SingleStack" {
        causes.push(Cause::invalid(
            "spec.ipFamilyPolicy",
            format!("{policy:?}"),
            "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
        ));
    }
    if !causes.is_empty() {
        return;
    }
    // Families follow given IPs first, then the policy.
    let mut parsed = Vec::new();
    if !headless {
        for (i, ip) in ips.iter().enumerate() {
            match ip.parse::<IpAddr>() {
                Ok(a) => parsed.push(a),
                Err(_) => causes.push(Cause::invalid(
                    format!("spec.clusterIPs[{i}]"),
                    format!("{ip:?}"),
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                )),
            }
        }
        if !causes.is_empty() {
            return;
        }
    }
    for (i, a) in parsed.iter().enumerate() {
        let fam = family_of(*a).to_string();
        match families.get(i) {
            Some(f) if *f != fam => causes.push(Cause::invalid(
                format!("spec.clusterIPs[{i}]"),
                format!("{:?}", a.to_string()),
                &format!("expected an IP of family {f}"),
            )),
            Some(_) => {}
            None => families.push(fam),
        }
    }
    if families.is_empty() {
        families.push("IPv4".into());
    }
    if stack == Stack::Single && policy == "RequireDualStack" {
        causes.push(Cause::invalid(
            "spec.ipFamilyPolicy",
            format!("{policy:?}"),
            "this cluster is not configured for dual-stack services",
        ));
        return;
    }
    if stack == Stack::Single {
        families.truncate(1);
    } else if policy != "SingleStack" && families.len() == 1 {
        families.push(if families[0] == "IPv4" {
            "IPv6".into()
        } else {
            "IPv4".into()
        });
    }
    if policy == "SingleStack" {
        families.truncate(1);
    }
    if !causes.is_empty() {
        return;
    }
    let mut taken = used.ips.clone();
    if headless {
        spec.insert("clusterIP".into(), json!("None"));
        spec.insert("clusterIPs".into(), json!(["None"]));
    } else {
        let mut out = Vec::new();
        for (i, fam) in families.iter().enumerate() {
            let ip = match parsed.get(i) {
                Some(a) => {
                    let kept = old_cluster_ips.get(i).map(String::as_str) == Some(&a.to_string());
                    if !kept && !in_cidr(*a) {
                        causes.push(Cause::invalid(
                            format!("spec.clusterIPs[{i}]"),
                            format!("{:?}", a.to_string()),
                            &format!(
                                "failed to allocate IP {a}: provided IP is not in the valid range. The range of valid IPs is {}",
                                cidr_text(fam)
                            ),
                        ));
                        continue;
                    }
                    if !kept && taken.contains(a) {
                        causes.push(Cause::invalid(
                            format!("spec.clusterIPs[{i}]"),
                            format!("{:?}", a.to_string()),
                            &format!("failed to allocate IP {a}: provided IP is already allocated"),
                        ));
                        continue;
                    }
                    *a
                }
                None => match allocate_ip(fam, &taken) {
                    Some(a) => a,
                    None => {
                        causes.push(Cause::invalid(
                            format!("spec.clusterIPs[{i}]"),
                            "\"\"",
                            &format!(
                                "failed to allocate a serviceIP: range {} is full",
                                cidr_text(fam)
                            ),
                        ));
                        continue;
                    }
                },
            };
            taken.insert(ip);
            out.push(ip.to_string());
        }
        if !causes.is_empty() {
            return;
        }
        spec.insert("clusterIP".into(), json!(out[0]));
        spec.insert("clusterIPs".into(), json!(out));
    }
    spec.insert("ipFamilies".into(), json!(families));
    spec.insert("ipFamilyPolicy".into(), json!(policy));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb() -> Value {
        json!({"metadata": {"name": "demo"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})
    }

    #[test]
    fn a_single_stack_cluster_gives_prefer_dual_stack_one_family_and_refuses_require() {
        let with = |policy: &str| {
            let mut svc = lb();
            svc["spec"]["ipFamilyPolicy"] = json!(policy);
            svc["spec"]["ipFamilies"] = json!(["IPv4"]);
            svc
        };
        let prefer = prepare(
            with("PreferDualStack"),
            None,
            &Allocated::default(),
            Stack::Single,
        )
        .unwrap();
        assert_eq!(prefer["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(prefer["spec"]["clusterIPs"], json!(["198.19.128.10"]));
        let dual = prepare(
            with("PreferDualStack"),
            None,
            &Allocated::default(),
            Stack::Dual,
        )
        .unwrap();
        assert_eq!(dual["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
        let causes = prepare(
            with("RequireDualStack"),
            None,
            &Allocated::default(),
            Stack::Single,
        )
        .unwrap_err();
        assert_eq!(causes[0].field, "spec.ipFamilyPolicy");
    }

    #[test]
    fn load_balancer_gets_every_default_a_real_server_sets() {
        let svc = prepare(lb(), None, &Allocated::default(), Stack::Dual).unwrap();
        let spec = &svc["spec"];
        assert_eq!(spec["clusterIP"], "198.19.128.10");
        assert_eq!(spec["clusterIPs"], json!(["198.19.128.10"]));
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert_eq!(spec["externalTrafficPolicy"], "Cluster");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["allocateLoadBalancerNodePorts"], true);
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], 80);
        assert_eq!(spec["ports"][0]["nodePort"], 30000);
    }

    #[test]
    fn allocations_skip_what_others_hold_and_survive_updates() {
        let mut used = Allocated::default();
        let first = prepare(lb(), None, &used, Stack::Dual).unwrap();
        used.add(&first);
        let second = prepare(lb(), None, &used, Stack::Dual).unwrap();
        assert_eq!(second["spec"]["clusterIP"], "198.19.128.11");
        assert_eq!(second["spec"]["ports"][0]["nodePort"], 30001);
        // An update that omits the allocated values keeps them.
        let mut update = lb();
        update["spec"]["ports"] = json!([{"port": 80, "protocol": "TCP"}]);
        let kept = prepare(update, Some(&second), &used, Stack::Dual).unwrap();
        assert_eq!(kept["spec"]["clusterIP"], "198.19.128.11");
        assert_eq!(kept["spec"]["ports"][0]["nodePort"], 30001);
    }

    #[test]
    fn dual_stack_and_local_policy() {
        let mut svc = lb();
        svc["spec"]["ipFamilyPolicy"] = json!("RequireDualStack");
        svc["spec"]["externalTrafficPolicy"] = json!("Local");
        let svc = prepare(svc, None, &Allocated::default(), Stack::Dual).unwrap();
        assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
        assert_eq!(
            svc["spec"]["clusterIPs"],
            json!(["198.19.128.10", "fd00:198:19::a"])
        );
        assert_eq!(svc["spec"]["healthCheckNodePort"], 30001);
    }

    #[test]
    fn invalid_services_list_field_causes() {
        let svc = json!({"spec": {"type": "Bogus", "clusterIP": "10.0.0.1",
            "ports": [{"port": 0, "protocol": "HTTP"}]}});
        let causes = prepare(svc, None, &Allocated::default(), Stack::Dual).unwrap_err();
        let text: Vec<String> = causes.iter().map(ToString::to_string).collect();
        assert!(text.contains(&r#"spec.type: Unsupported value: "Bogus": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort""#.to_string()), "{text:?}");
        assert!(
            text.contains(
                &"spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
                    .to_string()
            ),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("spec.ports[0].protocol: Unsupported value: \"HTTP\"")),
            "{text:?}"
        );
        let svc = json!({"spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}});
        let causes = prepare(svc, None, &Allocated::default(), Stack::Dual).unwrap_err();
        assert_eq!(
            causes[0].to_string(),
            "spec.clusterIPs[0]: Invalid value: \"10.0.0.1\": failed to allocate IP 10.0.0.1: provided IP is not in the valid range. The range of valid IPs is 198.19.128.0/17"
        );
    }

    #[test]
    fn cluster_ip_is_immutable() {
        let svc = prepare(lb(), None, &Allocated::default(), Stack::Dual).unwrap();
        let mut changed = svc.clone();
        changed["spec"]["clusterIP"] = json!("198.19.128.99");
        changed["spec"]["clusterIPs"] = json!(["198.19.128.99"]);
        let causes = prepare(changed, Some(&svc), &Allocated::default(), Stack::Dual).unwrap_err();
        assert_eq!(causes[0].field, "spec.clusterIPs[0]");
    }
}
