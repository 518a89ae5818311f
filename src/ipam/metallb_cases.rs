//! MetalLB's allocator test cases, replayed against our allocator as a
//! peer's test suite: each row is one case of MetalLB's
//! `internal/allocator/allocator_test.go`, named by its test function and
//! description. Only the facts (pools, requests, expected outcome) carry
//! over. MetalLB's allocator derives a request's family from the IPs it
//! is asked for; a Kubernetes Service states it in `spec.ipFamilies`, so
//! each row sets the families its IPs imply. MetalLB's "backend key" is
//! the pod selector of an `externalTrafficPolicy: Local` Service (empty
//! for `Cluster`); rows map it to `local_selector`.

use std::net::IpAddr;

use super::*;
use crate::labels::{Labels, Selector};

/// One `Assign` (or `Unassign`, when `ips` is empty) of MetalLB's test.
struct Step {
    /// MetalLB's test function and case description.
    metallb: &'static str,
    /// Namespace and name of the Service.
    ns: &'static str,
    name: &'static str,
    /// The Service's labels.
    labels: &'static [(&'static str, &'static str)],
    /// Requested IPs; empty releases the Service.
    ips: &'static [&'static str],
    /// `proto/port` entries.
    ports: &'static [&'static str],
    sharing_key: &'static str,
    backend_key: &'static str,
    want_err: bool,
}

const S: Step = Step {
    metallb: "",
    ns: "",
    name: "",
    labels: &[],
    ips: &[],
    ports: &[],
    sharing_key: "",
    backend_key: "",
    want_err: false,
};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn selector(k: &str, v: &str) -> Selector {
    Selector::from_match_labels(&labels(&[(k, v)]))
}

fn port(s: &str) -> (Protocol, u16) {
    let (proto, port) = s.split_once('/').expect("proto/port");
    let proto = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => Protocol::Sctp,
    };
    (proto, port.parse().expect("port number"))
}

fn request(step: &Step) -> ServiceRequest {
    let mut r = ServiceRequest::new(step.ns, step.name);
    r.labels = labels(step.labels);
    r.ips = step.ips.iter().map(|s| s.parse().expect("ip")).collect();
    r.families = r.ips.iter().map(|ip| Family::of(*ip)).collect();
    if r.families.len() == 2 {
        r.family_policy = FamilyPolicy::RequireDualStack;
    }
    r.ports = step.ports.iter().map(|p| port(p)).collect();
    r.sharing_key = (!step.sharing_key.is_empty()).then(|| step.sharing_key.to_string());
    r.local_selector = (!step.backend_key.is_empty()).then(|| labels(&[("app", step.backend_key)]));
    r
}

fn pool(name: &str, addrs: &[&str], avoid: bool, scope: Option<AllocationScope>) -> PoolSpec {
    let mut p = PoolSpec::new(name, addrs.iter().copied());
    p.avoid_buggy_ips = avoid;
    p.allocation = scope;
    p
}

/// The pools of MetalLB's `TestAssignment`.
fn assignment_pools() -> Vec<PoolSpec> {
    vec![
        pool("test", &["1.2.3.4/31", "1000::4/127"], false, None),
        pool("test2", &["1.2.4.0/24", "1000::4:0/120"], true, None),
        pool(
            "test3",
            &["1.2.5.0/24", "1000::5:0/120"],
            true,
            Some(AllocationScope {
                namespaces: vec!["test-ns1".into()],
                ..Default::default()
            }),
        ),
        pool(
            "test4",
            &["1.2.6.0/24", "1000::6:0/120"],
            true,
            Some(AllocationScope {
                service_selectors: vec![selector("team", "metallb")],
                ..Default::default()
            }),
        ),
        pool(
            "test5",
            &["1.2.7.0/24", "1000::7:0/120"],
            true,
            Some(AllocationScope {
                priority: Some(20),
                namespaces: vec!["test-ns1".into()],
                service_selectors: vec![selector("team", "metallb")],
                ..Default::default()
            }),
        ),
        pool(
            "test6",
            &["1.2.8.0/24", "1000::9:0/120"],
            true,
            Some(AllocationScope {
                priority: Some(20),
                namespaces: vec!["test-ns2".into()],
                service_selectors: vec![selector("foo", "bar")],
                ..Default::default()
            }),
        ),
    ]
}

macro_rules! step {
    ($desc:literal, $name:literal, [$($ip:literal),*] $(, $field:ident: $value:expr)* $(,)?) => {
        Step {
            metallb: concat!("TestAssignment: ", $desc),
            name: $name,
            ips: &[$($ip),*],
            $($field: $value,)*
            ..S
        }
    };
}

/// `TestAssignment`, IPv4 part, in MetalLB's order (each row depends on
/// the rows before it, as in MetalLB).
fn ipv4_steps() -> Vec<Step> {
    vec![
        step!("assign s1", "s1", ["1.2.3.4"]),
        step!("s1 idempotent reassign", "s1", ["1.2.3.4"]),
        step!("s2 can't grab s1's IP", "s2", ["1.2.3.4"], want_err: true),
        step!("s2 can get the other IP", "s2", ["1.2.3.5"]),
        step!("s1 now can't grab s2's IP", "s1", ["1.2.3.5"], want_err: true),
        step!("s1 frees its IP", "s1", []),
        step!("s2 can grab s1's former IP", "s2", ["1.2.3.4"]),
        step!("s1 can now grab s2's former IP", "s1", ["1.2.3.5"]),
        step!("s3 cannot grab a 0 buggy IP", "s3", ["1.2.4.0"], want_err: true),
        step!("s3 cannot grab a 255 buggy IP", "s3", ["1.2.4.255"], want_err: true),
        step!("s3 can grab another IP in that pool", "s3", ["1.2.4.254"]),
        step!("s4 takes an IP, with sharing", "s4", ["1.2.4.3"],
            ports: &["tcp/80"], sharing_key: "sharing", backend_key: "backend"),
        step!("s4 changes its sharing key in place", "s4", ["1.2.4.3"],
            ports: &["tcp/80"], sharing_key: "share", backend_key: "backend"),
        step!("s3 can't share with s4 (port conflict)", "s3", ["1.2.4.3"],
            ports: &["tcp/80"], sharing_key: "share", backend_key: "backend", want_err: true),
        step!("s3 can't share with s4 (wrong sharing key)", "s3", ["1.2.4.3"],
            ports: &["tcp/443"], sharing_key: "othershare", backend_key: "backend", want_err: true),
        step!("s3 can't share with s4 (wrong backend key)", "s3", ["1.2.4.3"],
            ports: &["tcp/443"], sharing_key: "share", backend_key: "otherbackend", want_err: true),
        step!("s3 takes the same IP as s4", "s3", ["1.2.4.3"],
            ports: &["tcp/443"], sharing_key: "share", backend_key: "backend"),
        step!("s3 can change its ports while keeping the same IP", "s3", ["1.2.4.3"],
            ports: &["udp/53"], sharing_key: "share", backend_key: "backend"),
        step!("s3 can't change its sharing key while keeping the same IP", "s3", ["1.2.4.3"],
            ports: &["tcp/443"], sharing_key: "othershare", backend_key: "backend", want_err: true),
        step!("s3 can't change its backend key while keeping the same IP", "s3", ["1.2.4.3"],
            ports: &["tcp/443"], sharing_key: "share", backend_key: "otherbackend", want_err: true),
        step!("s4 takes s3's former IP", "s4", ["1.2.4.254"]),
    ]
}

/// `TestAssignment`, IPv6 part (the same story with IPv6 addresses),
/// then dual-stack and pool pinning.
fn ipv6_dual_and_pinning_steps() -> Vec<Step> {
    vec![
        step!("ipv6 assign s1", "s1", ["1000::4"]),
        step!("s1 idempotent reassign (ipv6)", "s1", ["1000::4"]),
        step!("s2 can't grab s1's IP (ipv6)", "s2", ["1000::4"], want_err: true),
        step!("s2 can get the other IP (ipv6)", "s2", ["1000::4:5"]),
        step!("s1 now can't grab s2's IP (ipv6)", "s1", ["1000::4:5"], want_err: true),
        step!("s1 frees its IP (ipv6)", "s1", []),
        step!("s2 can grab s1's former IP (ipv6)", "s2", ["1000::4"]),
        step!("s1 can now grab s2's former IP (ipv6)", "s1", ["1000::4:5"]),
        step!(
            "s3 can grab another IP in that pool (ipv6)",
            "s3",
            ["1000::4:ff"]
        ),
        step!("s4 takes an IP, with sharing (ipv6)", "s4", ["1000::4:3"],
            ports: &["tcp/80"], sharing_key: "sharing", backend_key: "backend"),
        step!("s4 changes its sharing key in place (ipv6)", "s4", ["1000::4:3"],
            ports: &["tcp/80"], sharing_key: "share", backend_key: "backend"),
        step!("s3 can't share with s4 (port conflict) (ipv6)", "s3", ["1000::4:3"],
            ports: &["tcp/80"], sharing_key: "share", backend_key: "backend", want_err: true),
        step!("s3 can't share with s4 (wrong sharing key) (ipv6)", "s3", ["1000::4:3"],
            ports: &["tcp/443"], sharing_key: "othershare", backend_key: "backend", want_err: true),
        step!("s3 can't share with s4 (wrong backend key) (ipv6)", "s3", ["1000::4:3"],
            ports: &["tcp/443"], sharing_key: "share", backend_key: "otherbackend", want_err: true),
        step!("s3 takes the same IP as s4 (ipv6)", "s3", ["1000::4:3"],
            ports: &["tcp/443"], sharing_key: "share", backend_key: "backend"),
        step!("s3 can change its ports while keeping the same IP (ipv6)", "s3", ["1000::4:3"],
            ports: &["udp/53"], sharing_key: "share", backend_key: "backend"),
        step!("s3 can't change its sharing key while keeping the same IP (ipv6)", "s3", ["1000::4:3"],
            ports: &["tcp/443"], sharing_key: "othershare", backend_key: "backend", want_err: true),
        step!("s3 can't change its backend key while keeping the same IP (ipv6)", "s3", ["1000::4:3"],
            ports: &["tcp/443"], sharing_key: "share", backend_key: "otherbackend", want_err: true),
        step!("s4 takes s3's former IP (ipv6)", "s4", ["1000::4:ff"]),
        step!("s2 frees its IP", "s2", []),
        step!("ip dual-stack assign s1", "s1", ["1.2.3.4", "1000::4"]),
        step!("ip dual-stack assign s1 from different pools", "s1", ["1.2.4.5", "1000::4"], want_err: true),
        step!("attempt to assign ip from pool pinned on same namespace", "s1", ["1.2.5.10"],
            ns: "test-ns1", ports: &["tcp/8080"]),
        step!("attempt to assign ip from pool pinned on different namespace", "s1", ["1.2.5.10"],
            ns: "testns-not-exist", ports: &["tcp/8080"], want_err: true),
        step!("attempt to assign ip from pool pinned with same service label", "s1", ["1.2.6.10"],
            ns: "testns-not-exist", labels: &[("team", "metallb")], ports: &["tcp/8080"]),
        step!("attempt to assign ip from pool pinned with different service label", "s1", ["1.2.6.10"],
            ns: "testns-not-exist", labels: &[("team", "red")], ports: &["tcp/8080"], want_err: true),
        step!("attempt to assign ip from pool pinned with namespace and service label", "s1", ["1.2.7.10"],
            ns: "test-ns1", labels: &[("team", "metallb")], ports: &["tcp/8080"]),
        step!("attempt to assign ip from pool pinned with namespace and incompatible service label", "s1", ["1.2.8.10"],
            ns: "test-ns2", labels: &[("team", "metallb")], ports: &["tcp/8080"], want_err: true),
        step!("attempt to assign ip from pool pinned with service label and incompatible namespace", "s1", ["1.2.8.10"],
            ns: "testns-not-exist", labels: &[("foo", "bar")], ports: &["tcp/8080"], want_err: true),
    ]
}

/// Replays `steps` in order on one allocator; returns how many ran.
fn replay(alloc: &mut Allocator, steps: &[Step]) -> usize {
    for step in steps {
        let req = request(step);
        if step.ips.is_empty() {
            alloc.release(&req.key);
            assert!(alloc.assignment(&req.key).is_none(), "{}", step.metallb);
            continue;
        }
        let wanted: Vec<IpAddr> = req.ips.clone();
        let had = alloc.assignment(&req.key).map(|a| a.ips.clone());
        match (alloc.allocate(&req), step.want_err) {
            (Ok(got), false) => assert_eq!(got.ips, wanted, "{}", step.metallb),
            (Err(e), true) => {
                // As MetalLB checks: a refused request is not recorded
                // (unless the Service already held exactly those IPs).
                let now = alloc.assignment(&req.key).map(|a| a.ips.clone());
                assert!(
                    had.as_ref() == Some(&wanted) || now.as_ref() != Some(&wanted),
                    "{}: refused ({e}) but recorded",
                    step.metallb
                );
            }
            (Ok(got), true) => panic!("{}: expected an error, got {:?}", step.metallb, got.ips),
            (Err(e), false) => panic!("{}: {e}", step.metallb),
        }
        alloc
            .check_invariants()
            .unwrap_or_else(|e| panic!("{}: {e}", step.metallb));
    }
    steps.len()
}

#[test]
fn metallb_test_assignment() {
    let mut alloc = Allocator::new();
    alloc.set_pools(assignment_pools());
    let mut ran = replay(&mut alloc, &ipv4_steps());
    ran += replay(&mut alloc, &ipv6_dual_and_pinning_steps());
    assert_eq!(ran, 50);
}
