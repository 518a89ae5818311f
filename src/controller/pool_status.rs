//! `IPAddressPool.status`: address counts per family and the conditions
//! `Ready`, `Invalid`, `Overlapping` and `Advertised`.
//!
//! [`desired`] is pure (allocator state, pools and advertisements in, one
//! status per pool out) and is what the tests check; [`write_changed`] is
//! the only I/O, and patches a pool only when what its status says changed.
//! Pool status is for operators: nothing here feeds back into allocation.

use crate::api::{IPAddressPool, IPAddressPoolStatus, L2Advertisement};
use crate::ipam::{Allocator, PoolIssueKind, PoolStats};
use crate::model::{self, ConvertError};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The `Advertised=False` message: the pool works for allocation, which
/// makes a missing advertisement easy to overlook.
const NOT_ADVERTISED: &str = "no L2Advertisement selects this pool: its addresses are assigned, but no node answers ARP/NDP for them";

/// The status each pool should show. `malformed` names pools whose
/// `serviceAllocation` could not be parsed (they keep serving, but assign
/// nothing automatically). Transition times are left at the epoch;
/// [`stamp_conditions`] sets them against the old status.
pub fn desired(
    alloc: &Allocator,
    malformed: &BTreeMap<String, ConvertError>,
    pools: &[Arc<IPAddressPool>],
    ads: &[Arc<L2Advertisement>],
) -> BTreeMap<String, IPAddressPoolStatus> {
    let stats: BTreeMap<String, PoolStats> = alloc
        .stats()
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let mut issues: BTreeMap<String, Vec<PoolIssueKind>> = BTreeMap::new();
    for issue in alloc.pool_issues() {
        issues.entry(issue.pool).or_default().push(issue.kind);
    }
    let mut out = BTreeMap::new();
    for pool in pools {
        let name = pool.name_any();
        let mut findings = Findings::of(issues.get(&name).into_iter().flatten());
        if let Some(e) = malformed.get(&name) {
            findings
                .invalid
                .push(format!("{e}; automatic assignment disabled"));
        }
        // A pool the allocator does not know is one it could not load.
        let loaded = stats.get(&name);
        let mut status = counts(loaded);
        let advertised_by = model::advertisements_of(pool, ads.iter().map(|a| &**a));
        status.conditions =
            findings.conditions(loaded.is_some(), &advertised_by, pool.metadata.generation);
        out.insert(name, status);
    }
    out
}

/// Addresses assigned and available per family; all zero for a pool the
/// allocator does not hold.
fn counts(stats: Option<&PoolStats>) -> IPAddressPoolStatus {
    let mut status = IPAddressPoolStatus::default();
    if let Some(s) = stats {
        let sat = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
        status.assigned_ipv4 = sat(s.v4_in_use);
        status.available_ipv4 = sat(s.v4_total.saturating_sub(s.v4_in_use));
        status.assigned_ipv6 = sat(s.v6_in_use);
        status.available_ipv6 = sat(s.v6_total.saturating_sub(s.v6_in_use));
    }
    status
}

/// What is wrong with one pool, as condition messages.
#[derive(Default)]
struct Findings {
    /// Why the pool (or part of it) cannot be used.
    invalid: Vec<String>,
    /// Older pools that own some of this pool's addresses.
    overlapping: Vec<String>,
}

impl Findings {
    fn of<'a>(kinds: impl IntoIterator<Item = &'a PoolIssueKind>) -> Self {
        let mut f = Self::default();
        for kind in kinds {
            match kind {
                PoolIssueKind::Invalid { reason } => f.invalid.push(reason.clone()),
                PoolIssueKind::Overlapping { other } => f.overlapping.push(other.clone()),
            }
        }
        f
    }

    /// `Ready`, `Invalid`, `Overlapping` and `Advertised`, in that order.
    fn conditions(
        &self,
        loaded: bool,
        advertised_by: &[String],
        generation: Option<i64>,
    ) -> Vec<Condition> {
        [
            self.ready(loaded),
            self.invalid(),
            self.overlapping(),
            advertised(advertised_by),
        ]
        .into_iter()
        .map(|(type_, holds, reason, message)| Condition {
            type_: type_.to_string(),
            status: if holds { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        })
        .collect()
    }

    /// Ready when nothing is invalid and the allocator holds the pool.
    fn ready(&self, loaded: bool) -> Verdict {
        if self.invalid.is_empty() && loaded {
            (
                "Ready",
                true,
                "Allocatable",
                "addresses can be assigned".into(),
            )
        } else {
            ("Ready", false, "Invalid", self.invalid.join("; "))
        }
    }

    fn invalid(&self) -> Verdict {
        if self.invalid.is_empty() {
            ("Invalid", false, "Valid", String::new())
        } else {
            ("Invalid", true, "InvalidSpec", self.invalid.join("; "))
        }
    }

    fn overlapping(&self) -> Verdict {
        if self.overlapping.is_empty() {
            return ("Overlapping", false, "NoOverlap", String::new());
        }
        let message = format!(
            "addresses also in older pool(s) {}; they are assigned from the older pool only",
            self.overlapping.join(", ")
        );
        ("Overlapping", true, "OverlapsOlderPool", message)
    }
}

/// One condition before it gets a generation and a time:
/// (type, whether it holds, reason, message).
type Verdict = (&'static str, bool, &'static str, String);

/// Advertised when at least one L2Advertisement selects the pool.
fn advertised(by: &[String]) -> Verdict {
    if by.is_empty() {
        (
            "Advertised",
            false,
            "NoAdvertisement",
            NOT_ADVERTISED.into(),
        )
    } else {
        let message = format!("announced by L2Advertisement {}", by.join(", "));
        ("Advertised", true, "Advertised", message)
    }
}

/// Whether two pool statuses say the same thing, ignoring transition times.
pub fn same_pool_status(a: &IPAddressPoolStatus, b: &IPAddressPoolStatus) -> bool {
    let strip = |s: &IPAddressPoolStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}

/// Keeps transition times of conditions whose status did not change, and
/// stamps `now` on those that did, as Kubernetes conventions ask.
pub fn stamp_conditions(
    new: &mut IPAddressPoolStatus,
    old: Option<&IPAddressPoolStatus>,
    now: jiff::Timestamp,
) {
    for c in &mut new.conditions {
        let prev = old.and_then(|o| o.conditions.iter().find(|p| p.type_ == c.type_));
        c.last_transition_time = match prev {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => Time(now),
        };
    }
}

/// Patches the status of each pool in `pools` whose `desired` status says
/// something new. Failures are logged and left for the next change: pool
/// status is informational and rewritten whenever allocation moves.
pub(super) async fn write_changed(
    client: &Client,
    namespace: &str,
    pools: &[Arc<IPAddressPool>],
    desired: BTreeMap<String, IPAddressPoolStatus>,
) {
    let api: Api<IPAddressPool> = Api::namespaced(client.clone(), namespace);
    let now = jiff::Timestamp::now();
    for (name, mut status) in desired {
        let Some(pool) = pools.iter().find(|p| p.name_any() == name) else {
            continue;
        };
        let old = pool.status.as_ref();
        if old.is_some_and(|o| same_pool_status(o, &status)) {
            continue;
        }
        stamp_conditions(&mut status, old, now);
        let patch = serde_json::json!({ "status": status });
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        let write = api.patch_status(&name, &params, &patch);
        if let Err(e) = crate::cluster::with_timeout(super::REQUEST_TIMEOUT, write).await {
            tracing::warn!(pool = %name, error = %e, "cannot update pool status");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::core::Core;
    use super::super::fixtures::{no_labels, pool, svc};
    use super::*;
    use crate::model::ClassFilter;

    #[test]
    fn pool_status_counts_and_names_the_overlapping_pool() {
        let mut core = Core::new(ClassFilter::default());
        let older = pool("first", 0, &["198.18.0.0/30"]);
        let newer = pool("second", 5, &["198.18.0.2/31", "198.18.0.8/30"]);
        let pools = [older, newer];
        core.start(&[svc("a", 1).build_arc()], &pools, &no_labels);
        let only_first: Arc<L2Advertisement> = Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "ad", "namespace": "l2lb-system"},
                "spec": {"ipAddressPools": ["first"]}
            }))
            .unwrap(),
        );
        let st = desired(
            core.allocator(),
            core.malformed_pools(),
            &pools,
            &[only_first],
        );
        let advertised = |pool: &str| {
            st[pool]
                .conditions
                .iter()
                .find(|c| c.type_ == "Advertised")
                .map(|c| (c.status.clone(), c.message.clone()))
                .unwrap()
        };
        assert_eq!(advertised("first").0, "True");
        assert!(advertised("first").1.contains("ad"));
        assert_eq!(advertised("second").0, "False");
        assert!(
            desired(core.allocator(), core.malformed_pools(), &pools, &[])["first"]
                .conditions
                .iter()
                .any(|c| c.type_ == "Advertised" && c.status == "False")
        );
        assert_eq!(st["first"].assigned_ipv4, 1);
        assert_eq!(st["first"].available_ipv4, 3);
        let overlap = st["second"]
            .conditions
            .iter()
            .find(|c| c.type_ == "Overlapping")
            .unwrap();
        assert_eq!(overlap.status, "True");
        assert!(overlap.message.contains("first"));
        let ready = st["first"]
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
    }

    #[test]
    fn transition_times_move_only_when_a_condition_flips() {
        let mut core = Core::new(ClassFilter::default());
        let pools = [pool("p", 0, &["198.18.0.0/30"])];
        core.start(&[], &pools, &no_labels);
        let then = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let later = jiff::Timestamp::from_second(1_700_000_100).unwrap();
        let mut old = desired(core.allocator(), core.malformed_pools(), &pools, &[])["p"].clone();
        stamp_conditions(&mut old, None, then);

        let mut same = desired(core.allocator(), core.malformed_pools(), &pools, &[])["p"].clone();
        assert!(same_pool_status(&old, &same), "only times differ");
        stamp_conditions(&mut same, Some(&old), later);
        assert!(
            same.conditions
                .iter()
                .all(|c| c.last_transition_time.0 == then)
        );

        let ad: Arc<L2Advertisement> = Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "ad", "namespace": "l2lb-system"}, "spec": {}
            }))
            .unwrap(),
        );
        let mut flipped =
            desired(core.allocator(), core.malformed_pools(), &pools, &[ad])["p"].clone();
        assert!(!same_pool_status(&old, &flipped));
        stamp_conditions(&mut flipped, Some(&old), later);
        for c in &flipped.conditions {
            let want = if c.type_ == "Advertised" { later } else { then };
            assert_eq!(c.last_transition_time.0, want, "{}", c.type_);
        }
    }

    #[test]
    fn a_malformed_pool_is_invalid_and_not_ready_with_the_reason() {
        let mut core = Core::new(ClassFilter::default());
        let bad: Arc<IPAddressPool> = Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "l2lb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": {"name": "typo", "namespace": "l2lb-system", "generation": 3},
                "spec": {"addresses": ["198.18.0.0/30"],
                         "serviceAllocation": {"serviceSelectors": [{"matchExpressions": [
                             {"key": "app", "operator": "Bogus", "values": ["x"]}]}]}}
            }))
            .unwrap(),
        );
        let pools = [bad];
        core.start(&[], &pools, &no_labels);
        let st = &desired(core.allocator(), core.malformed_pools(), &pools, &[])["typo"];
        let cond = |t: &str| st.conditions.iter().find(|c| c.type_ == t).unwrap();
        let (ready, invalid) = (cond("Ready"), cond("Invalid"));
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Invalid")
        );
        assert_eq!(
            (invalid.status.as_str(), invalid.reason.as_str()),
            ("True", "InvalidSpec")
        );
        assert!(
            invalid.message.starts_with("pool typo: "),
            "{}",
            invalid.message
        );
        assert!(invalid.message.ends_with("; automatic assignment disabled"));
        assert_eq!(ready.message, invalid.message);
        assert_eq!(invalid.observed_generation, Some(3));
        assert_eq!(
            st.available_ipv4, 4,
            "a malformed pool still counts its addresses"
        );
    }
}
