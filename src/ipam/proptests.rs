//! Property tests of the allocator's invariants over generated operation
//! sequences on small pools (so 1000 cases run in well under a second).

use std::net::IpAddr;

use proptest::prelude::*;

use super::allocator::share_check;
use super::*;
use crate::labels::Labels;

/// Fixed small pools covering every pool feature: avoidBuggyIPs across a
/// /24 boundary, dual-stack, autoAssign off, a namespace-scoped pool.
fn pools() -> Vec<PoolSpec> {
    let mut buggy = PoolSpec::new("a", ["10.0.0.250-10.0.1.3"]);
    buggy.avoid_buggy_ips = true;
    let dual = PoolSpec::new("b", ["10.0.2.0/29", "fd00::/125"]);
    let mut manual = PoolSpec::new("c", ["10.0.3.0/30"]);
    manual.auto_assign = false;
    let mut prod = PoolSpec::new("d", ["10.0.4.0/30", "fd00:1::/126"]);
    prod.allocation = Some(AllocationScope {
        priority: Some(1),
        namespaces: vec!["prod".into()],
        ..Default::default()
    });
    vec![buggy, dual, manual, prod]
}

/// IPs a request or claim may name: inside, on the edges of and outside pools.
const CANDIDATE_IPS: &[&str] = &[
    "10.0.0.250",
    "10.0.0.255",
    "10.0.1.0",
    "10.0.1.1",
    "10.0.2.0",
    "10.0.2.1",
    "10.0.3.1",
    "10.0.4.2",
    "192.0.2.1",
    "fd00::1",
    "fd00::2",
    "fd00:1::1",
    "2001:db8::1",
];

const PORTS: &[(Protocol, u16)] = &[
    (Protocol::Tcp, 80),
    (Protocol::Tcp, 443),
    (Protocol::Udp, 80),
];

fn key_of(svc: u8) -> ServiceKey {
    let ns = if svc.is_multiple_of(3) {
        "prod"
    } else {
        "default"
    };
    ServiceKey::new(ns, format!("s{svc}"))
}

fn arb_request() -> impl Strategy<Value = ServiceRequest> {
    (
        0u8..8,
        prop_oneof![Just(None), Just(Some("k1")), Just(Some("k2"))],
        proptest::sample::subsequence(PORTS, 0..=2),
        prop_oneof![Just(None), Just(Some("x")), Just(Some("y"))],
        0usize..3,
        0usize..5,
        prop_oneof![4 => Just(None), 1 => proptest::sample::select(vec!["a", "b", "c", "d", "nope"]).prop_map(Some)],
        prop_oneof![4 => Just(vec![]), 1 => proptest::sample::subsequence(CANDIDATE_IPS, 1..=2)],
    )
        .prop_map(|(svc, share, ports, local, policy, fams, pool, ips)| {
            let key = key_of(svc);
            let mut r = ServiceRequest::new(key.namespace, key.name);
            r.created = i64::from(svc % 4);
            r.sharing_key = share.map(String::from);
            r.ports = ports;
            r.local_selector = local.map(|v| Labels::from([("app".to_string(), v.to_string())]));
            r.family_policy = [
                FamilyPolicy::SingleStack,
                FamilyPolicy::PreferDualStack,
                FamilyPolicy::RequireDualStack,
            ][policy];
            r.families = [
                vec![],
                vec![Family::V4],
                vec![Family::V6],
                vec![Family::V4, Family::V6],
                vec![Family::V6, Family::V4],
            ][fams]
                .clone();
            r.pool = pool.map(String::from);
            r.ips = ips.iter().map(|s| s.parse().unwrap()).collect();
            r
        })
}

#[derive(Clone, Debug)]
enum Op {
    Allocate(Box<ServiceRequest>),
    Release(u8),
}

fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![4 => arb_request().prop_map(|r| Op::Allocate(Box::new(r))), 1 => (0u8..8).prop_map(Op::Release)],
        1..=30,
    )
}

fn fresh() -> Allocator {
    let mut a = Allocator::new();
    a.set_pools(pools());
    a
}

/// Applies `ops`, returning each operation's visible result.
fn run(a: &mut Allocator, ops: &[Op]) -> Vec<Result<Option<Assignment>, AllocError>> {
    ops.iter()
        .map(|op| match op {
            Op::Allocate(r) => a.allocate(r).map(Some),
            Op::Release(s) => Ok(a.release(&key_of(*s))),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// No IP is held by two Services unless they legally share it; checked
    /// after every operation, together with the free-set bookkeeping.
    #[test]
    fn prop_no_ip_held_by_two_unless_legally_shared(ops in arb_ops()) {
        let mut a = fresh();
        for op in &ops {
            run(&mut a, std::slice::from_ref(op));
            prop_assert!(a.check_invariants().is_ok(), "{:?}", a.check_invariants());
            for (_, asg) in a.assignments() {
                for ip in &asg.ips {
                    let hs = a.holders(*ip);
                    for (i, x) in hs.iter().enumerate() {
                        for y in &hs[i + 1..] {
                            let (rx, ry) = (a.request(x).unwrap(), a.request(y).unwrap());
                            prop_assert!(share_check(*ip, rx, y, ry).is_ok(), "{x} and {y} share {ip} illegally");
                        }
                    }
                }
            }
        }
    }

    /// Release then allocate never hands out an IP another Service still
    /// holds, unless the two may share it; a released Service holds nothing.
    #[test]
    fn prop_release_and_allocate_never_return_held_ip(ops in arb_ops()) {
        let mut a = fresh();
        for op in &ops {
            match op {
                Op::Release(s) => {
                    let key = key_of(*s);
                    let had = a.release(&key);
                    prop_assert!(a.assignment(&key).is_none());
                    for ip in had.map(|h| h.ips).unwrap_or_default() {
                        prop_assert!(!a.holders(ip).contains(&key));
                    }
                }
                Op::Allocate(r) => {
                    let before: Vec<(IpAddr, Vec<ServiceKey>)> = CANDIDATE_IPS
                        .iter()
                        .map(|s| s.parse().unwrap())
                        .chain(a.assignments().flat_map(|(_, x)| x.ips.clone()))
                        .map(|ip| (ip, a.holders(ip)))
                        .collect();
                    let requests: std::collections::BTreeMap<ServiceKey, ServiceRequest> =
                        a.export().into_iter().map(|(q, _)| (q.key.clone(), q)).collect();
                    if let Ok(got) = a.allocate(r) {
                        for ip in &got.ips {
                            let held: Vec<&ServiceKey> = before
                                .iter()
                                .filter(|(b, _)| b == ip)
                                .flat_map(|(_, hs)| hs)
                                .filter(|h| **h != r.key)
                                .collect();
                            for h in held {
                                prop_assert!(
                                    share_check(*ip, r, h, &requests[h]).is_ok(),
                                    "{} got {ip} still held by {h}", r.key
                                );
                            }
                        }
                    }
                }
            }
            prop_assert!(a.check_invariants().is_ok(), "{:?}", a.check_invariants());
        }
    }

    /// Two allocators fed the same operations give the same results and state.
    #[test]
    fn prop_allocation_is_deterministic(ops in arb_ops()) {
        let (mut a, mut b) = (fresh(), fresh());
        prop_assert_eq!(run(&mut a, &ops), run(&mut b, &ops));
        prop_assert_eq!(a.export(), b.export());
        prop_assert_eq!(a.stats(), b.stats());
    }

    /// Rebuilding from a legal state (in any order) restores it exactly with
    /// no conflicts, and rebuilding again changes nothing.
    #[test]
    fn prop_rebuild_keeps_every_legal_assignment_and_is_idempotent(ops in arb_ops(), rotate in 0usize..30) {
        let mut a = fresh();
        run(&mut a, &ops);
        let mut state = a.export();
        if !state.is_empty() {
            let n = rotate % state.len();
            state.rotate_left(n);
        }
        let mut b = fresh();
        let conflicts = b.rebuild(state.clone());
        prop_assert!(conflicts.is_empty(), "{:?}", conflicts);
        prop_assert_eq!(a.export(), b.export());
        prop_assert_eq!(a.stats(), b.stats());
        prop_assert!(b.rebuild(state).is_empty());
        prop_assert_eq!(a.export(), b.export());
        prop_assert!(b.check_invariants().is_ok(), "{:?}", b.check_invariants());
    }

    /// Rebuilding from arbitrary (possibly conflicting) claims: same result
    /// twice; each claim is kept exactly or refused with a reason that holds
    /// (IP outside every pool, or an older kept holder it may not share with).
    #[test]
    fn prop_rebuild_arbitrary_claims_keeps_legal_ones(
        claims in proptest::collection::vec(
            (arb_request(), proptest::sample::subsequence(CANDIDATE_IPS, 0..=2)),
            0..=12,
        )
    ) {
        let claims: Vec<(ServiceRequest, Vec<IpAddr>)> = claims
            .into_iter()
            .map(|(r, ips)| (r, ips.iter().map(|s| s.parse().unwrap()).collect()))
            .collect();
        let mut a = fresh();
        let first = a.rebuild(claims.clone());
        let state = a.export();
        prop_assert!(a.check_invariants().is_ok(), "{:?}", a.check_invariants());
        prop_assert_eq!(&a.rebuild(claims.clone()), &first);
        prop_assert_eq!(a.export(), state);
        // The last claim per key is the one that counts.
        let mut last = std::collections::BTreeMap::new();
        for (r, ips) in claims {
            last.insert(r.key.clone(), (r, ips));
        }
        for (key, (r, ips)) in last {
            let refused = first.iter().find(|c| c.key == key);
            match (a.assignment(&key), refused) {
                (Some(asg), None) => prop_assert_eq!(&asg.ips, &ips),
                (None, Some(c)) => {
                    let older_holder = c.ips.iter().any(|ip| {
                        a.holders(*ip).iter().any(|h| {
                            let hr = a.request(h).unwrap();
                            (hr.created, &hr.key) < (r.created, &r.key) && share_check(*ip, &r, h, hr).is_err()
                        })
                    });
                    let outside = matches!(c.error.reason(), "IPOutsidePools" | "IPAvoidedByPool");
                    prop_assert!(older_holder || outside, "unjustified conflict {:?}", c);
                }
                (None, None) => prop_assert!(ips.is_empty()),
                (Some(_), Some(c)) => prop_assert!(false, "kept and refused: {:?}", c),
            }
        }
    }
}
