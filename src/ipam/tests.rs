//! One unit test per IPAM rule; each fails if its rule breaks.

use std::net::IpAddr;

use super::*;
use crate::labels::{Labels, Selector};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pool(name: &str, addrs: &[&str]) -> PoolSpec {
    PoolSpec::new(name, addrs.iter().copied())
}

fn svc(name: &str) -> ServiceRequest {
    ServiceRequest::new("default", name)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn alloc_with(pools: Vec<PoolSpec>) -> Allocator {
    let mut a = Allocator::new();
    let change = a.set_pools(pools);
    assert!(change.orphaned.is_empty());
    a
}

fn ips(a: &Assignment) -> Vec<String> {
    a.ips.iter().map(ToString::to_string).collect()
}

fn shared(name: &str, key: &str, ports: &[(Protocol, u16)]) -> ServiceRequest {
    let mut r = svc(name);
    r.sharing_key = Some(key.to_string());
    r.ports = ports.to_vec();
    r
}

fn total_v4(a: &Allocator, name: &str) -> u128 {
    a.stats()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap()
        .v4_total
}

// ---- address parsing ----

#[test]
fn parses_ipv4_cidr() {
    let a = alloc_with(vec![pool("p", &["10.0.0.0/30"])]);
    assert_eq!(total_v4(&a, "p"), 4);
}

#[test]
fn parses_ipv4_cidr_masking_host_bits() {
    let mut a = alloc_with(vec![pool("p", &["10.0.0.7/30"])]);
    assert_eq!(ips(&a.allocate(&svc("s")).unwrap()), ["10.0.0.4"]);
}

#[test]
fn parses_ipv6_cidr() {
    let a = alloc_with(vec![pool("p", &["2001:db8::/126"])]);
    assert_eq!(a.stats()[0].v6_total, 4);
}

#[test]
fn parses_range_with_spaces_around_dash() {
    let mut a = alloc_with(vec![pool(
        "p",
        &["10.0.0.5 - 10.0.0.9", "2001:db8::1-2001:db8::3"],
    )]);
    assert!(a.pool_issues().is_empty());
    assert_eq!(total_v4(&a, "p"), 5);
    assert_eq!(a.stats()[0].v6_total, 3);
    assert_eq!(ips(&a.allocate(&svc("s")).unwrap()), ["10.0.0.5"]);
}

#[test]
fn parses_single_ips_of_both_families() {
    let a = alloc_with(vec![pool("p", &["10.0.0.1", "2001:db8::1", "10.0.0.1"])]);
    let s = &a.stats()[0];
    assert_eq!((s.v4_total, s.v6_total), (1, 1));
}

#[test]
fn huge_ipv6_pool_is_counted_not_materialized() {
    let mut a = alloc_with(vec![pool("p", &["2001:db8::/64"])]);
    assert_eq!(a.stats()[0].v6_total, 1u128 << 64);
    let mut r = svc("s");
    r.families = vec![Family::V6];
    assert_eq!(ips(&a.allocate(&r).unwrap()), ["2001:db8::"]);
    assert_eq!(a.stats()[0].v6_in_use, 1);
}

#[test]
fn invalid_entry_makes_pool_invalid_and_unused() {
    for bad in [
        "10.0.0.300",
        "10.0.0.0/33",
        "10.0.0.9-10.0.0.1",
        "10.0.0.1-2001:db8::1",
        "",
        "x/24",
    ] {
        let mut a = alloc_with(vec![pool("bad", &["10.0.0.0/30", bad])]);
        let issues = a.pool_issues();
        assert_eq!(issues.len(), 1, "{bad:?}");
        match &issues[0].kind {
            PoolIssueKind::Invalid { reason } => {
                assert!(
                    reason.contains(&format!("{bad:?}")),
                    "reason {reason:?} must name {bad:?}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(a.stats().is_empty(), "invalid pool must not be used");
        assert_eq!(
            a.allocate(&svc("s")).unwrap_err().reason(),
            "NoPoolAdmitsService"
        );
        let mut r = svc("t");
        r.pool = Some("bad".into());
        let err = a.allocate(&r).unwrap_err();
        assert_eq!(err.reason(), "PoolInvalid");
        assert!(err.to_string().contains(&format!("{bad:?}")));
    }
}

#[test]
fn empty_address_list_makes_pool_invalid() {
    let a = alloc_with(vec![pool("empty", &[])]);
    assert!(matches!(
        a.pool_issues()[0].kind,
        PoolIssueKind::Invalid { .. }
    ));
}

// ---- overlapping pools ----

#[test]
fn overlapping_later_pool_gets_overlapping_issue() {
    let mut early = pool("zz-early", &["10.0.0.0/29"]);
    early.created = 1;
    let mut late = pool("aa-late", &["10.0.0.4-10.0.0.11"]);
    late.created = 2;
    let a = alloc_with(vec![late, early]);
    assert_eq!(
        a.pool_issues(),
        vec![PoolIssue {
            pool: "aa-late".into(),
            kind: PoolIssueKind::Overlapping {
                other: "zz-early".into()
            }
        }]
    );
    // Ties on creation time are broken by name.
    let b = alloc_with(vec![
        pool("b", &["10.0.0.0/29"]),
        pool("a", &["10.0.0.0/30"]),
    ]);
    assert_eq!(b.pool_issues()[0].pool, "b");
}

#[test]
fn overlapping_addresses_are_handed_out_only_by_earlier_pool() {
    let mut early = pool("z", &["10.0.0.0/30"]);
    early.created = 1;
    early.auto_assign = false;
    let mut late = pool("a", &["10.0.0.0/29"]);
    late.created = 2;
    let mut a = alloc_with(vec![early, late]);
    assert_eq!(total_v4(&a, "a"), 4);
    // The later pool skips the earlier pool's addresses, and the earlier pool owns them.
    assert_eq!(ips(&a.allocate(&svc("s")).unwrap()), ["10.0.0.4"]);
    let mut r = svc("t");
    r.ips = vec![ip("10.0.0.1")];
    assert_eq!(a.allocate(&r).unwrap().pool, "z");
    r.pool = Some("a".into());
    let err = a.allocate(&r).unwrap_err();
    assert_eq!(err.reason(), "IPOutsideRequestedPool");
    assert!(err.to_string().contains("\"z\""), "{err}");
}

// ---- selection order ----

#[test]
fn selection_requested_pool_first() {
    let mut a = alloc_with(vec![
        pool("a", &["10.0.0.0/30"]),
        pool("b", &["10.0.1.0/30"]),
    ]);
    let mut r = svc("s");
    r.pool = Some("b".into());
    assert_eq!(ips(&a.allocate(&r).unwrap()), ["10.0.1.0"]);
}

#[test]
fn selection_requested_ip_first() {
    let mut a = alloc_with(vec![
        pool("a", &["10.0.0.0/30"]),
        pool("b", &["10.0.1.0/30"]),
    ]);
    let mut r = svc("s");
    r.ips = vec![ip("10.0.1.2")];
    let got = a.allocate(&r).unwrap();
    assert_eq!(
        (got.pool.as_str(), ips(&got)),
        ("b", vec!["10.0.1.2".to_string()])
    );
}

fn scoped(name: &str, addr: &str, priority: Option<i32>, scope: AllocationScope) -> PoolSpec {
    let mut p = pool(name, &[addr]);
    p.allocation = Some(AllocationScope { priority, ..scope });
    p
}

fn ns_scope(ns: &str) -> AllocationScope {
    AllocationScope {
        namespaces: vec![ns.to_string()],
        ..Default::default()
    }
}

#[test]
fn selection_scoped_pools_by_ascending_priority_then_unrestricted() {
    let mut a = alloc_with(vec![
        pool("a-free", &["10.0.9.1"]),
        scoped("p-none", "10.0.3.1", None, ns_scope("default")),
        scoped("p-high", "10.0.1.1", Some(1), ns_scope("default")),
        scoped("p-low", "10.0.2.1", Some(5), ns_scope("default")),
    ]);
    let order: Vec<String> = (0..4)
        .map(|i| a.allocate(&svc(&format!("s{i}"))).unwrap().pool)
        .collect();
    assert_eq!(order, ["p-high", "p-low", "p-none", "a-free"]);
}

#[test]
fn selection_ties_broken_by_name() {
    let mut a = alloc_with(vec![pool("b", &["10.0.0.1"]), pool("a", &["10.0.1.1"])]);
    assert_eq!(a.allocate(&svc("s")).unwrap().pool, "a");
    let mut a = alloc_with(vec![
        scoped("y", "10.0.0.1", Some(1), ns_scope("default")),
        scoped("x", "10.0.1.1", Some(1), ns_scope("default")),
    ]);
    assert_eq!(a.allocate(&svc("s")).unwrap().pool, "x");
}

#[test]
fn scope_namespaces_admit_only_listed_namespaces() {
    let mut a = alloc_with(vec![scoped(
        "only-prod",
        "10.0.0.1",
        Some(1),
        ns_scope("prod"),
    )]);
    assert_eq!(
        a.allocate(&svc("s")).unwrap_err().reason(),
        "NoPoolAdmitsService"
    );
    let r = ServiceRequest::new("prod", "s");
    assert_eq!(a.allocate(&r).unwrap().pool, "only-prod");
}

#[test]
fn scope_namespace_selectors_match_namespace_labels() {
    let scope = AllocationScope {
        namespace_selectors: vec![
            Selector::from_match_labels(&labels(&[("team", "x")])),
            Selector::from_match_labels(&labels(&[("team", "y")])),
        ],
        ..Default::default()
    };
    let mut a = alloc_with(vec![scoped("p", "10.0.0.0/30", None, scope)]);
    let mut r = svc("s");
    r.labels = labels(&[("team", "y")]);
    assert!(
        a.allocate(&r).is_err(),
        "service labels must not satisfy namespace selectors"
    );
    r.namespace_labels = labels(&[("team", "y")]);
    assert_eq!(
        a.allocate(&r).unwrap().pool,
        "p",
        "any selector of the list may match"
    );
}

#[test]
fn scope_service_selectors_match_service_labels() {
    let scope = AllocationScope {
        service_selectors: vec![Selector::from_match_labels(&labels(&[("app", "web")]))],
        ..Default::default()
    };
    let mut a = alloc_with(vec![scoped("p", "10.0.0.0/30", None, scope)]);
    let mut r = svc("s");
    r.namespace_labels = labels(&[("app", "web")]);
    assert!(a.allocate(&r).is_err());
    r.labels = labels(&[("app", "web")]);
    assert_eq!(a.allocate(&r).unwrap().pool, "p");
}

#[test]
fn scope_every_nonempty_list_must_match() {
    let scope = AllocationScope {
        namespaces: vec!["default".into()],
        service_selectors: vec![Selector::from_match_labels(&labels(&[("app", "web")]))],
        ..Default::default()
    };
    let mut a = alloc_with(vec![scoped("p", "10.0.0.0/30", Some(0), scope)]);
    assert!(
        a.allocate(&svc("s")).is_err(),
        "namespace alone is not enough"
    );
    let mut r = svc("t");
    r.labels = labels(&[("app", "web")]);
    assert_eq!(a.allocate(&r).unwrap().pool, "p");
}

#[test]
fn scope_not_admitting_falls_back_to_unrestricted_pool() {
    let mut a = alloc_with(vec![
        scoped("a-prod", "10.0.0.1", Some(0), ns_scope("prod")),
        pool("z-any", &["10.0.1.1"]),
    ]);
    assert_eq!(a.allocate(&svc("s")).unwrap().pool, "z-any");
}

#[test]
fn auto_assign_false_pool_used_only_on_request() {
    let mut manual = pool("manual", &["10.0.0.0/30"]);
    manual.auto_assign = false;
    let mut a = alloc_with(vec![manual]);
    assert_eq!(
        a.allocate(&svc("s")).unwrap_err().reason(),
        "NoPoolAdmitsService"
    );
    let mut by_pool = svc("by-pool");
    by_pool.pool = Some("manual".into());
    assert_eq!(ips(&a.allocate(&by_pool).unwrap()), ["10.0.0.0"]);
    let mut by_ip = svc("by-ip");
    by_ip.ips = vec![ip("10.0.0.3")];
    assert_eq!(ips(&a.allocate(&by_ip).unwrap()), ["10.0.0.3"]);
}

#[test]
fn requested_pool_unknown_or_disallowing_is_an_error() {
    let mut a = alloc_with(vec![scoped("prod", "10.0.0.1", None, ns_scope("prod"))]);
    let mut r = svc("s");
    r.pool = Some("nope".into());
    let err = a.allocate(&r).unwrap_err();
    assert_eq!(err.reason(), "UnknownPool");
    assert!(err.to_string().contains("default/s") && err.to_string().contains("\"nope\""));
    r.pool = Some("prod".into());
    assert_eq!(a.allocate(&r).unwrap_err().reason(), "PoolDisallowsService");
    let mut by_ip = svc("t");
    by_ip.ips = vec![ip("10.0.0.1")];
    assert_eq!(
        a.allocate(&by_ip).unwrap_err().reason(),
        "PoolDisallowsService"
    );
}

#[test]
fn requested_ip_outside_every_pool_is_an_error() {
    let mut a = alloc_with(vec![pool("p", &["10.0.0.0/30"])]);
    let mut r = svc("s");
    r.ips = vec![ip("192.0.2.1")];
    let err = a.allocate(&r).unwrap_err();
    assert_eq!(err.reason(), "IPOutsidePools");
    assert!(err.to_string().contains("192.0.2.1"));
}

// ---- avoidBuggyIPs, lowest free ----

#[test]
fn avoid_buggy_ips_skips_dot0_and_dot255_also_inside_cidrs_and_ranges() {
    let mut p = pool("p", &["10.0.0.254-10.0.1.1", "10.0.2.0/23"]);
    p.avoid_buggy_ips = true;
    let mut a = alloc_with(vec![p]);
    // 254, 1.1 from the range; 2.1..2.254 and 3.1..3.254 from the /23.
    assert_eq!(total_v4(&a, "p"), 2 + 254 * 2);
    let got: Vec<String> = (0..4)
        .map(|i| ips(&a.allocate(&svc(&format!("s{i}"))).unwrap())[0].clone())
        .collect();
    assert_eq!(got, ["10.0.0.254", "10.0.1.1", "10.0.2.1", "10.0.2.2"]);
    for i in 4..(2 + 254 * 2) {
        let got = a.allocate(&svc(&format!("s{i}"))).unwrap();
        let last = got.ips[0].to_string();
        assert!(!last.ends_with(".0") && !last.ends_with(".255"), "{last}");
    }
    assert_eq!(
        a.allocate(&svc("full")).unwrap_err().reason(),
        "PoolExhausted"
    );
    let mut r = svc("buggy");
    r.ips = vec![ip("10.0.2.255")];
    assert_eq!(a.allocate(&r).unwrap_err().reason(), "IPAvoidedByPool");
}

#[test]
fn without_avoid_buggy_ips_dot0_is_handed_out() {
    let mut a = alloc_with(vec![pool("p", &["10.0.0.0/24"])]);
    assert_eq!(ips(&a.allocate(&svc("s")).unwrap()), ["10.0.0.0"]);
}

#[test]
fn lowest_free_address_first() {
    let mut a = alloc_with(vec![pool("p", &["10.0.0.0/29"])]);
    for i in 0..4 {
        a.allocate(&svc(&format!("s{i}"))).unwrap();
    }
    a.release(&ServiceKey::new("default", "s1"));
    assert_eq!(ips(&a.allocate(&svc("new")).unwrap()), ["10.0.0.1"]);
    assert_eq!(ips(&a.allocate(&svc("next")).unwrap()), ["10.0.0.4"]);
}

// ---- families ----

fn dual_pool(name: &str) -> PoolSpec {
    pool(name, &["10.0.0.0/30", "2001:db8::/126"])
}

#[test]
fn single_stack_gets_primary_family_only() {
    let mut a = alloc_with(vec![dual_pool("p")]);
    let mut r = svc("s");
    r.families = vec![Family::V6, Family::V4];
    assert_eq!(ips(&a.allocate(&r).unwrap()), ["2001:db8::"]);
    assert_eq!(
        ips(&a.allocate(&svc("empty-families")).unwrap()),
        ["10.0.0.0"]
    );
}

#[test]
fn prefer_dual_stack_gets_both_from_one_pool() {
    let mut a = alloc_with(vec![pool("a-v4", &["10.0.9.0/30"]), dual_pool("b-dual")]);
    let mut r = svc("s");
    r.families = vec![Family::V6, Family::V4];
    r.family_policy = FamilyPolicy::PreferDualStack;
    let got = a.allocate(&r).unwrap();
    assert_eq!(
        got.pool, "b-dual",
        "a pool that gives both beats an earlier one-family pool"
    );
    assert_eq!(ips(&got), ["2001:db8::", "10.0.0.0"]);
}

#[test]
fn prefer_dual_stack_falls_back_to_primary() {
    let mut a = alloc_with(vec![
        pool("v4", &["10.0.0.0/30"]),
        pool("v6", &["2001:db8::/126"]),
    ]);
    let mut r = svc("s");
    r.families = vec![Family::V4, Family::V6];
    r.family_policy = FamilyPolicy::PreferDualStack;
    let got = a.allocate(&r).unwrap();
    assert_eq!(
        (got.pool.as_str(), ips(&got)),
        ("v4", vec!["10.0.0.0".to_string()])
    );
}

#[test]
fn require_dual_stack_gets_both_or_error_and_never_mixes_pools() {
    let mut a = alloc_with(vec![
        pool("v4", &["10.0.0.0/30"]),
        pool("v6", &["2001:db8::/126"]),
    ]);
    let mut r = svc("s");
    r.families = vec![Family::V4, Family::V6];
    r.family_policy = FamilyPolicy::RequireDualStack;
    let err = a.allocate(&r).unwrap_err();
    assert_eq!(err.reason(), "RequiredFamilyUnavailable");
    assert!(err.to_string().contains("IPv6"), "{err}");
    a.set_pools(vec![
        pool("v4", &["10.0.0.0/30"]),
        pool("w-dual", &["10.0.5.0/30", "2001:db8:1::/126"]),
    ]);
    let got = a.allocate(&r).unwrap();
    assert_eq!(
        (got.pool.as_str(), ips(&got)),
        (
            "w-dual",
            vec!["10.0.5.0".to_string(), "2001:db8:1::".to_string()]
        )
    );
}

#[test]
fn requested_ips_must_fit_families() {
    let mut a = alloc_with(vec![dual_pool("p")]);
    let mut r = svc("s");
    r.ips = vec![ip("2001:db8::1")];
    assert_eq!(a.allocate(&r).unwrap_err().reason(), "IPFamilyMismatch");
    r.ips = vec![ip("10.0.0.1"), ip("10.0.0.2")];
    assert_eq!(a.allocate(&r).unwrap_err().reason(), "IPFamilyMismatch");
    r.ips = vec![ip("2001:db8::1"), ip("10.0.0.1")];
    r.family_policy = FamilyPolicy::RequireDualStack;
    assert_eq!(ips(&a.allocate(&r).unwrap()), ["10.0.0.1", "2001:db8::1"]);
}

// ---- sharing ----

const TCP80: (Protocol, u16) = (Protocol::Tcp, 80);
const TCP443: (Protocol, u16) = (Protocol::Tcp, 443);

#[test]
fn sharing_same_key_disjoint_ports_share_lowest_ip() {
    let mut a = alloc_with(vec![pool("p", &["10.0.0.0/29"])]);
    a.allocate(&svc("plain")).unwrap();
    let x = a.allocate(&shared("x", "k", &[TCP80])).unwrap();
    let y = a.allocate(&shared("y", "k", &[TCP443])).unwrap();
    assert_eq!(ips(&x), ["10.0.0.1"]);
    assert_eq!(ips(&y), ["10.0.0.1"], "joins the lowest IP it may share");
    assert_eq!(
        a.holders(ip("10.0.0.1")),
        vec![
            ServiceKey::new("default", "x"),
            ServiceKey::new("default", "y")
        ]
    );
}

#[test]
fn sharing_port_overlap_is_refused_naming_port_and_holder() {
    let mut a = alloc_with(vec![pool("p", &["10.0.0.0/29"])]);
    a.allocate(&shared("x", "k", &[TCP80])).unwrap();
    assert_eq!(
        ips(&a.allocate(&shared("y", "k", &[TCP80, TCP443])).unwrap()),
        ["10.0.0.1"]
    );
    let mut r = shared("z", "k", &[TCP80]);
    r.ips = vec![ip("10.0.0.0")];
    let err = a.allocate(&r).unwrap_err();
    assert_eq!(err.reason(), "SharingPortConflict");
    let msg = err.to_string();
    assert!(
        msg.contains("TCP/80") && msg.contains("default/x") && msg.contains("default/z"),
        "{msg}"
    );
    // UDP/80 does not overlap TCP/80.
    r.ports = vec![(Protocol::Udp, 80)];
    assert!(a.allocate(&r).is_ok());
}

#[test]
fn sharing_different_key_is_refused() {
    let mut a = alloc_with(vec![pool("p", &["10.0.0.0/29"])]);
    a.allocate(&shared("x", "k", &[TCP80])).unwrap();
    let mut r = shared("y", "other", &[TCP443]);
    assert_eq!(ips(&a.allocate(&r).unwrap()), ["10.0.0.1"]);
    r.ips = vec![ip("10.0.0.0")];
    assert_eq!(a.allocate(&r).unwrap_err().reason(), "SharingKeyMismatch");
}

#[test]
fn sharing_requires_key_on_both_sides() {
    let mut a = alloc_with(vec![pool("p", &["10.0.0.0/29"])]);
    a.allocate(&svc("plain")).unwrap();
    let mut r = shared("x", "k", &[TCP80]);
    r.ips = vec![ip("10.0.0.0")];
    let err = a.allocate(&r).unwrap_err();
    assert_eq!(err.reason(), "IPInUse");
    assert!(err.to_string().contains("default/plain"));
    let mut plain = svc("plain2");
    plain.ips = vec![ip("10.0.0.0")];
    assert_eq!(a.allocate(&plain).unwrap_err().reason(), "IPInUse");
    // A plain service never lands on a shared IP.
    a.allocate(&shared("s", "k", &[TCP80])).unwrap();
    assert_eq!(ips(&a.allocate(&svc("plain3")).unwrap()), ["10.0.0.2"]);
}

#[test]
fn sharing_etp_local_requires_equal_selectors() {
    let mut a = alloc_with(vec![pool("p", &["10.0.0.0/29"])]);
    let mut x = shared("x", "k", &[TCP80]);
    x.local_selector = Some(labels(&[("app", "a")]));
    a.allocate(&x).unwrap();
    let mut cluster = shared("cluster", "k", &[TCP443]);
    cluster.ips = vec![ip("10.0.0.0")];
    assert_eq!(
        a.allocate(&cluster).unwrap_err().reason(),
        "SharingTrafficPolicyConflict"
    );
    let mut other = cluster.clone();
    other.key.name = "other".into();
    other.local_selector = Some(labels(&[("app", "b")]));
    assert_eq!(
        a.allocate(&other).unwrap_err().reason(),
        "SharingTrafficPolicyConflict"
    );
    other.local_selector = Some(labels(&[("app", "a")]));
    assert!(a.allocate(&other).is_ok());
}

// ---- release, idempotence, changes ----

#[test]
fn release_on_delete_frees_ip() {
    let mut a = alloc_with(vec![pool("p", &["10.0.0.1"])]);
    a.allocate(&svc("s")).unwrap();
    assert_eq!(a.allocate(&svc("t")).unwrap_err().reason(), "PoolExhausted");
    assert_eq!(
        ips(&a.release(&ServiceKey::new("default", "s")).unwrap()),
        ["10.0.0.1"]
    );
    assert!(a.holders(ip("10.0.0.1")).is_empty());
    assert_eq!(ips(&a.allocate(&svc("t")).unwrap()), ["10.0.0.1"]);
}

#[test]
fn allocate_is_idempotent() {
    let mut a = alloc_with(vec![pool("p", &["10.0.0.0/29"])]);
    let first = a.allocate(&svc("s")).unwrap();
    a.release(&ServiceKey::new("default", "nothing"));
    a.allocate(&svc("t")).unwrap();
    assert_eq!(a.allocate(&svc("s")).unwrap(), first);
    assert_eq!(a.stats()[0].v4_in_use, 2);
}

#[test]
fn changed_request_that_fails_keeps_old_assignment() {
    let mut a = alloc_with(vec![pool("p", &["10.0.0.0/30"])]);
    let old = a.allocate(&svc("s")).unwrap();
    let mut r = svc("s");
    r.pool = Some("missing".into());
    assert!(a.allocate(&r).is_err());
    assert_eq!(a.assignment(&ServiceKey::new("default", "s")), Some(&old));
    assert_eq!(a.holders(old.ips[0]), vec![ServiceKey::new("default", "s")]);
}

#[test]
fn changed_request_switches_on_success_and_counts_own_ips_free() {
    let mut a = alloc_with(vec![
        pool("p", &["10.0.0.0/30"]),
        pool("q", &["10.0.1.0/30"]),
    ]);
    a.allocate(&svc("s")).unwrap();
    let mut r = svc("s");
    r.pool = Some("q".into());
    assert_eq!(ips(&a.allocate(&r).unwrap()), ["10.0.1.0"]);
    assert!(a.holders(ip("10.0.0.0")).is_empty());
    // Requesting its own IP explicitly works (own IPs count as free).
    r.ips = vec![ip("10.0.1.0")];
    assert_eq!(ips(&a.allocate(&r).unwrap()), ["10.0.1.0"]);
}

#[test]
fn changed_request_keeps_ip_when_still_legal() {
    let mut a = alloc_with(vec![dual_pool("p")]);
    a.allocate(&svc("first")).unwrap();
    let mut r = svc("s");
    assert_eq!(ips(&a.allocate(&r).unwrap()), ["10.0.0.1"]);
    a.release(&ServiceKey::new("default", "first"));
    r.family_policy = FamilyPolicy::RequireDualStack;
    assert_eq!(
        ips(&a.allocate(&r).unwrap()),
        ["10.0.0.1", "2001:db8::"],
        "keeps its IPv4 address"
    );
}

// ---- pool changes and rebuild ----

#[test]
fn set_pools_keeps_assignments_inside_pools_and_orphans_others() {
    let mut a = alloc_with(vec![
        pool("p", &["10.0.0.0/30"]),
        pool("q", &["10.0.1.0/30"]),
    ]);
    let s = a.allocate(&svc("s")).unwrap();
    let mut r = svc("t");
    r.pool = Some("q".into());
    a.allocate(&r).unwrap();
    let change = a.set_pools(vec![pool("renamed", &["10.0.0.0/29"])]);
    assert_eq!(change.orphaned, vec![ServiceKey::new("default", "t")]);
    let kept = a.assignment(&ServiceKey::new("default", "s")).unwrap();
    assert_eq!((kept.pool.as_str(), &kept.ips), ("renamed", &s.ips));
    assert!(a.assignment(&ServiceKey::new("default", "t")).is_none());
    assert_eq!(a.stats()[0].v4_in_use, 1);
    assert_eq!(a.allocate(&svc("u")).unwrap().ips, vec![ip("10.0.0.1")]);
}

#[test]
fn rebuild_keeps_legal_claims_and_older_wins_conflict() {
    let mut a = alloc_with(vec![pool("p", &["10.0.0.0/29"])]);
    let mut old = svc("young-name");
    old.created = 1;
    let mut young = svc("a-old-name");
    young.created = 2;
    let mut sharer1 = shared("sh1", "k", &[TCP80]);
    sharer1.created = 3;
    let mut sharer2 = shared("sh2", "k", &[TCP443]);
    sharer2.created = 4;
    let outside = svc("outside");
    let conflicts = a.rebuild(vec![
        (young.clone(), vec![ip("10.0.0.1")]),
        (old.clone(), vec![ip("10.0.0.1")]),
        (sharer2, vec![ip("10.0.0.2")]),
        (sharer1, vec![ip("10.0.0.2")]),
        (outside, vec![ip("192.0.2.1")]),
    ]);
    let mut reasons: Vec<(String, &str)> = conflicts
        .iter()
        .map(|c| (c.key.name.clone(), c.error.reason()))
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            ("a-old-name".to_string(), "IPInUse"),
            ("outside".to_string(), "IPOutsidePools")
        ]
    );
    assert_eq!(a.holders(ip("10.0.0.1")), vec![old.key.clone()]);
    assert_eq!(a.holders(ip("10.0.0.2")).len(), 2);
    assert!(a.assignment(&young.key).is_none());
    // The loser gets a fresh IP through allocate, never the contested one.
    assert_eq!(ips(&a.allocate(&young).unwrap()), ["10.0.0.0"]);
}

#[test]
fn rebuild_is_idempotent() {
    let mut a = alloc_with(vec![pool("p", &["10.0.0.0/29"])]);
    let claims = vec![
        (svc("x"), vec![ip("10.0.0.3")]),
        (svc("y"), vec![ip("10.0.0.3")]),
        (svc("z"), vec![ip("10.0.0.5")]),
    ];
    let first = a.rebuild(claims.clone());
    let state1 = a.export();
    let second = a.rebuild(claims);
    assert_eq!(first, second);
    assert_eq!(state1, a.export());
    assert_eq!(first.len(), 1);
    a.check_invariants().unwrap();
}

#[test]
fn error_reasons_are_camel_case_and_messages_name_service() {
    let mut a = alloc_with(vec![pool("p", &["10.0.0.1"])]);
    a.allocate(&svc("s")).unwrap();
    let err = a.allocate(&svc("t")).unwrap_err();
    assert_eq!(err.reason(), "PoolExhausted");
    assert!(err.reason().chars().all(|c| c.is_ascii_alphanumeric()));
    let msg = err.to_string();
    assert!(
        msg.contains("default/t") && msg.contains("\"p\"") || msg.contains(" p"),
        "{msg}"
    );
    assert_eq!(err.service(), &ServiceKey::new("default", "t"));
}

#[test]
fn alloc_error_stays_small_enough_to_return_by_value() {
    // Clippy's result_large_err limit; callers wrap AllocError in their own enums.
    assert!(
        std::mem::size_of::<AllocError>() <= 128,
        "{}",
        std::mem::size_of::<AllocError>()
    );
}

// ---- issue 14: MetalLB parity ----

#[test]
fn priority_zero_means_unset_and_sorts_after_set_priorities() {
    // MetalLB treats serviceAllocation.priority 0 as "no priority" (lowest).
    let mut a = alloc_with(vec![
        scoped("a-zero", "10.0.0.1", Some(0), ns_scope("default")),
        scoped("b-five", "10.0.1.1", Some(5), ns_scope("default")),
        scoped("c-none", "10.0.2.1", None, ns_scope("default")),
    ]);
    let order: Vec<String> = (0..3)
        .map(|i| a.allocate(&svc(&format!("s{i}"))).unwrap().pool)
        .collect();
    assert_eq!(order, ["b-five", "a-zero", "c-none"]);
}

#[test]
fn scope_namespaces_and_namespace_selectors_each_admit() {
    let scope = AllocationScope {
        namespaces: vec!["prod".into()],
        namespace_selectors: vec![Selector::from_match_labels(&labels(&[("team", "x")]))],
        ..Default::default()
    };
    let mut listed = ServiceRequest::new("prod", "s");
    assert!(scope.admits(&listed), "a listed namespace is enough");
    let mut labelled = ServiceRequest::new("dev", "s");
    labelled.namespace_labels = labels(&[("team", "x")]);
    assert!(
        scope.admits(&labelled),
        "a matching namespace label is enough"
    );
    assert!(!scope.admits(&ServiceRequest::new("dev", "s")));
    // Service selectors still narrow what the namespace rules admit.
    let narrow = AllocationScope {
        service_selectors: vec![Selector::from_match_labels(&labels(&[("app", "web")]))],
        ..scope
    };
    assert!(!narrow.admits(&listed));
    listed.labels = labels(&[("app", "web")]);
    assert!(narrow.admits(&listed));
}

/// Two sharers of the single address 10.0.0.1, on TCP 80 and 81.
fn two_sharers(addresses: &[&str]) -> (Allocator, ServiceRequest, ServiceRequest) {
    let mut a = alloc_with(vec![pool("p", addresses)]);
    let x = shared("x", "k", &[TCP80]);
    let y = shared("y", "k", &[(Protocol::Tcp, 81)]);
    assert_eq!(ips(&a.allocate(&x).unwrap()), ["10.0.0.1"]);
    assert_eq!(ips(&a.allocate(&y).unwrap()), ["10.0.0.1"]);
    (a, x, y)
}

/// A named change to a sharer's request that breaks sharing.
type Breaker = (&'static str, Box<dyn Fn(&mut ServiceRequest)>);

#[test]
fn a_change_that_breaks_sharing_loses_the_address_when_nothing_else_is_free() {
    let x_key = ServiceKey::new("default", "x");
    let y_key = ServiceKey::new("default", "y");
    let breakers: Vec<Breaker> = vec![
        ("same port", Box::new(|r| r.ports = vec![TCP80])),
        (
            "other key",
            Box::new(|r| r.sharing_key = Some("other".into())),
        ),
        ("no key", Box::new(|r| r.sharing_key = None)),
        (
            "Local policy",
            Box::new(|r| r.local_selector = Some(labels(&[("app", "y")]))),
        ),
    ];
    for (what, change) in breakers {
        let (mut a, _, mut y) = two_sharers(&["10.0.0.1"]);
        change(&mut y);
        assert!(a.allocate(&y).is_err(), "{what}: must fail");
        assert_eq!(a.assignment(&y_key), None, "{what}: y must lose 10.0.0.1");
        assert_eq!(a.holders(ip("10.0.0.1")), vec![x_key.clone()], "{what}");
        a.check_invariants().unwrap();
    }
}

#[test]
fn a_change_that_breaks_sharing_moves_the_changed_service_when_it_can() {
    let (mut a, _, mut y) = two_sharers(&["10.0.0.1-10.0.0.2"]);
    y.ports = vec![TCP80];
    assert_eq!(ips(&a.allocate(&y).unwrap()), ["10.0.0.2"]);
    assert_eq!(
        a.holders(ip("10.0.0.1")),
        vec![ServiceKey::new("default", "x")]
    );
    a.check_invariants().unwrap();
}

#[test]
fn sharing_refused_in_a_full_pool_names_the_sharing_conflict() {
    let (mut a, _, mut y) = two_sharers(&["10.0.0.1"]);
    y.ports = vec![TCP80];
    let err = a.allocate(&y).unwrap_err();
    assert_eq!(err.reason(), "SharingPortConflict", "{err}");
    assert!(err.to_string().contains("default/x"), "{err}");
    let mut z = shared("z", "other", &[TCP443]);
    z.ips = Vec::new();
    let err = a.allocate(&z).unwrap_err();
    assert_eq!(err.reason(), "SharingKeyMismatch", "{err}");
}

#[test]
fn prefer_dual_stack_gains_the_second_family_when_its_pool_does() {
    let mut a = alloc_with(vec![pool("p", &["10.0.0.1"])]);
    let mut r = svc("s");
    r.families = vec![Family::V4, Family::V6];
    r.family_policy = FamilyPolicy::PreferDualStack;
    assert_eq!(ips(&a.allocate(&r).unwrap()), ["10.0.0.1"]);
    a.set_pools(vec![pool("p", &["10.0.0.0/24", "2001:db8::/126"])]);
    let got = a.allocate(&r).unwrap();
    assert_eq!(ips(&got), ["10.0.0.1", "2001:db8::"], "first IP unchanged");
    a.check_invariants().unwrap();
}

#[test]
fn prefer_dual_stack_does_not_jump_to_a_new_dual_stack_pool() {
    let mut a = alloc_with(vec![pool("b-v4", &["10.0.0.1"])]);
    let mut r = svc("s");
    r.families = vec![Family::V4, Family::V6];
    r.family_policy = FamilyPolicy::PreferDualStack;
    a.allocate(&r).unwrap();
    a.set_pools(vec![
        pool("b-v4", &["10.0.0.1"]),
        pool("a-dual", &["10.0.1.1", "2001:db8::1"]),
    ]);
    let got = a.allocate(&r).unwrap();
    assert_eq!(
        (got.pool.as_str(), ips(&got)),
        ("b-v4", vec!["10.0.0.1".to_string()])
    );
}
