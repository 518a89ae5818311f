//! Which peers are alive, judged only by when their leases were *seen to
//! change* on the local monotonic clock.
//!
//! Owns the liveness rule that, together with the speaker's fencing, keeps
//! two nodes from announcing one VIP: a peer stays live for `lease_duration`
//! after the last change we observed, and a peer that cannot renew fences
//! itself before that (its deadline counts from when it *sent* its last
//! successful renewal, which is never later than when we observed it).
//!
//! Remote timestamps (`renewTime`) are never compared with the local clock:
//! they are only part of an opaque [`LeaseFingerprint`] compared for equality,
//! so clock skew between nodes can neither kill a live node nor revive a dead
//! one. This module must never read a clock itself or do I/O; callers pass
//! `now`. The speaker reads membership only through [`Liveness::live`], so a
//! second source (LAN heartbeats) can later be merged behind it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What identifies one renewal of a lease. Two observations with equal
/// fingerprints mean "no renewal happened in between".
///
/// The speaker builds it from `holderIdentity`, `renewTime` and
/// `leaseDurationSeconds`; the values are opaque here and only compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseFingerprint {
    /// Opaque renewal token (e.g. `holder|renewTime`), compared for equality only.
    pub token: String,
    /// The duration the holder declares in its lease. The peer is kept live
    /// for the longer of this and the locally configured duration, so a peer
    /// configured with a longer lease (mid-rollout) is never expired early.
    pub declared_duration: Option<Duration>,
}

impl LeaseFingerprint {
    /// A fingerprint from an opaque token with no declared duration.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            declared_duration: None,
        }
    }
}

/// What we remember about one peer's lease.
#[derive(Clone, Debug)]
struct Peer {
    /// Last fingerprint seen, to tell a renewal from a re-list of the same state.
    fingerprint: LeaseFingerprint,
    /// Local time at which the fingerprint last changed (or was first seen).
    changed_at: Instant,
    /// Local time since which the peer has been continuously live.
    live_since: Instant,
    /// The lease was released (empty holder): gone until it changes again.
    released: bool,
}

/// Tracks peers' leases and answers which peers are live.
///
/// A lease first seen not released counts as live from that observation for
/// one lease duration, then dead unless it changes. We cannot know how long a
/// lease was unchanged before we started watching, and the safe direction is
/// to assume it is alive: a dead peer's VIPs then wait at most one extra lease
/// duration after *our* start, whereas assuming it dead could make us announce
/// a VIP that a live peer still announces.
#[derive(Clone, Debug)]
pub struct Liveness {
    /// Locally configured lease duration; the minimum expiry for every peer.
    lease_duration: Duration,
    /// Peers by node name.
    peers: BTreeMap<String, Peer>,
}

impl Liveness {
    /// An empty tracker expiring peers `lease_duration` after their last observed change.
    pub fn new(lease_duration: Duration) -> Self {
        Self {
            lease_duration,
            peers: BTreeMap::new(),
        }
    }

    /// Records that `node`'s lease was seen with `fingerprint` at local time
    /// `now`. `released` marks an empty `holderIdentity`: the peer is gone at
    /// once. Returns whether the live set may have changed.
    pub fn observe(
        &mut self,
        node: &str,
        fingerprint: LeaseFingerprint,
        released: bool,
        now: Instant,
    ) -> bool {
        let was_live = self.is_live(node, now);
        match self.peers.get_mut(node) {
            Some(p) if p.fingerprint == fingerprint && p.released == released => {}
            Some(p) => {
                if !was_live {
                    p.live_since = now;
                }
                p.fingerprint = fingerprint;
                p.changed_at = now;
                p.released = released;
            }
            None => {
                self.peers.insert(
                    node.to_string(),
                    Peer {
                        fingerprint,
                        changed_at: now,
                        live_since: now,
                        released,
                    },
                );
            }
        }
        was_live != self.is_live(node, now)
    }

    /// Forgets `node` (its lease was deleted): gone at once. Returns whether
    /// it was live.
    pub fn remove(&mut self, node: &str, now: Instant) -> bool {
        let was_live = self.is_live(node, now);
        self.peers.remove(node);
        was_live
    }

    /// Forgets how long peers have been unchanged, after a gap in which
    /// changes could not be observed (a failed watch): every known,
    /// unreleased peer counts as first seen at `now`, the same safe
    /// assumption as at start. Peers live before stay live with their
    /// `since`; a peer that really died expires one lease duration later.
    pub fn restart_observation(&mut self, now: Instant) {
        let live: Vec<String> = self.live(now).into_keys().collect();
        for (name, p) in self.peers.iter_mut() {
            if !p.released {
                if !live.contains(name) {
                    p.live_since = now;
                }
                p.changed_at = now;
            }
        }
    }

    /// Every node with a lease on record, live or not (to reconcile a re-list).
    pub fn known(&self) -> impl Iterator<Item = &str> {
        self.peers.keys().map(String::as_str)
    }

    /// Whether `node` is live at `now`.
    pub fn is_live(&self, node: &str, now: Instant) -> bool {
        self.peers.get(node).is_some_and(|p| self.peer_live(p, now))
    }

    /// Live peers at `now`, each with the local time since which it has been live.
    pub fn live(&self, now: Instant) -> BTreeMap<String, Instant> {
        self.peers
            .iter()
            .filter(|(_, p)| self.peer_live(p, now))
            .map(|(n, p)| (n.clone(), p.live_since))
            .collect()
    }

    /// The earliest instant after `now` at which a currently live peer
    /// expires, so a caller can sleep exactly until the live set next changes
    /// on its own. `None` when no live peer can expire.
    pub fn next_expiry(&self, now: Instant) -> Option<Instant> {
        self.peers
            .values()
            .filter(|p| self.peer_live(p, now))
            .filter_map(|p| self.expiry(p))
            .min()
    }

    fn expiry(&self, p: &Peer) -> Option<Instant> {
        let d = p
            .fingerprint
            .declared_duration
            .map_or(self.lease_duration, |d| d.max(self.lease_duration));
        p.changed_at.checked_add(d)
    }

    fn peer_live(&self, p: &Peer, now: Instant) -> bool {
        // An expiry beyond the representable range never comes.
        !p.released && self.expiry(p).is_none_or(|e| now < e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: Duration = Duration::from_secs(4);

    fn fp(s: &str) -> LeaseFingerprint {
        LeaseFingerprint::new(s)
    }

    #[test]
    fn first_sight_is_live_for_one_duration() {
        let t0 = Instant::now();
        let mut l = Liveness::new(D);
        assert!(l.observe("a", fp("1"), false, t0));
        assert!(l.is_live("a", t0 + D - Duration::from_nanos(1)));
        assert!(!l.is_live("a", t0 + D));
        assert_eq!(l.next_expiry(t0), Some(t0 + D));
        assert_eq!(l.next_expiry(t0 + D), None);
    }

    #[test]
    fn unchanged_relist_does_not_extend() {
        let t0 = Instant::now();
        let mut l = Liveness::new(D);
        l.observe("a", fp("1"), false, t0);
        assert!(!l.observe("a", fp("1"), false, t0 + Duration::from_secs(3)));
        assert!(!l.is_live("a", t0 + D));
    }

    #[test]
    fn change_extends_and_keeps_since() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(3);
        let mut l = Liveness::new(D);
        l.observe("a", fp("1"), false, t0);
        l.observe("a", fp("2"), false, t1);
        assert!(l.is_live("a", t0 + D));
        assert!(!l.is_live("a", t1 + D));
        assert_eq!(l.live(t1)["a"], t0);
    }

    #[test]
    fn revival_resets_since() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(10);
        let mut l = Liveness::new(D);
        l.observe("a", fp("1"), false, t0);
        assert!(l.observe("a", fp("2"), false, t1));
        assert_eq!(l.live(t1)["a"], t1);
    }

    #[test]
    fn release_and_delete_are_immediate() {
        let t0 = Instant::now();
        let mut l = Liveness::new(D);
        l.observe("a", fp("1"), false, t0);
        l.observe("b", fp("1"), false, t0);
        assert!(l.observe("a", fp("2"), true, t0));
        assert!(!l.is_live("a", t0));
        assert!(l.remove("b", t0));
        assert!(l.live(t0).is_empty());
        assert_eq!(l.next_expiry(t0), None);
    }

    #[test]
    fn released_at_first_sight_is_dead_and_can_come_back() {
        let t0 = Instant::now();
        let mut l = Liveness::new(D);
        assert!(!l.observe("a", fp("1"), true, t0));
        assert!(!l.is_live("a", t0));
        let t1 = t0 + Duration::from_millis(10);
        assert!(l.observe("a", fp("2"), false, t1));
        assert_eq!(l.live(t1)["a"], t1);
    }

    #[test]
    fn restart_observation_assumes_alive_once_more() {
        let t0 = Instant::now();
        let mut l = Liveness::new(D);
        l.observe("a", fp("1"), false, t0);
        l.observe("b", fp("1"), true, t0);
        let t1 = t0 + Duration::from_secs(10);
        assert!(l.live(t1).is_empty());
        l.restart_observation(t1);
        assert_eq!(
            l.live(t1).into_iter().collect::<Vec<_>>(),
            [("a".to_string(), t1)]
        );
        assert!(!l.is_live("a", t1 + D));
    }

    #[test]
    fn longer_declared_duration_wins() {
        let t0 = Instant::now();
        let mut l = Liveness::new(D);
        let long = LeaseFingerprint {
            token: "1".into(),
            declared_duration: Some(Duration::from_secs(10)),
        };
        let short = LeaseFingerprint {
            token: "1".into(),
            declared_duration: Some(Duration::from_secs(1)),
        };
        l.observe("long", long, false, t0);
        l.observe("short", short, false, t0);
        assert!(l.is_live("long", t0 + Duration::from_secs(9)));
        assert!(l.is_live("short", t0 + Duration::from_secs(3)));
        assert!(!l.is_live("short", t0 + D));
    }

    /// One observation in a generated history.
    #[derive(Clone, Debug)]
    struct Obs {
        node: usize,
        dt_ms: u64,
        renewed: bool,
        released: bool,
        deleted: bool,
    }

    fn arb_obs() -> impl Strategy<Value = Obs> {
        (
            0usize..4,
            0u64..3000,
            any::<bool>(),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.05),
        )
            .prop_map(|(node, dt_ms, renewed, released, deleted)| Obs {
                node,
                dt_ms,
                renewed,
                released,
                deleted,
            })
    }

    /// Replays a history, building tokens with `stamp` (the "remote
    /// timestamp" scheme); returns the live set after every step and at
    /// probe points between steps.
    fn replay(history: &[Obs], stamp: impl Fn(usize, u64) -> String) -> Vec<Vec<String>> {
        let t0 = Instant::now();
        let mut l = Liveness::new(D);
        let mut counter = [0u64; 4];
        let mut now = t0;
        let mut out = Vec::new();
        for o in history {
            now += Duration::from_millis(o.dt_ms);
            let name = format!("n{}", o.node);
            if o.deleted {
                l.remove(&name, now);
            } else {
                if o.renewed {
                    counter[o.node] += 1;
                }
                let token = stamp(o.node, counter[o.node]);
                l.observe(&name, LeaseFingerprint::new(token), o.released, now);
            }
            for probe in [0, 1999, 3999, 4000, 6000] {
                let at = now + Duration::from_millis(probe);
                out.push(l.live(at).into_keys().collect());
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// The live set depends only on *when* leases changed locally, never
        /// on the remote timestamps inside the fingerprints.
        #[test]
        fn skew_independent(history in prop::collection::vec(arb_obs(), 1..30),
                            skew in prop::collection::vec(any::<i64>(), 4)) {
            let honest = replay(&history, |n, c| format!("2026-01-01T00:00:{c:06}Z/{n}"));
            let skewed = replay(&history, |n, c| format!("{}", skew[n].wrapping_add(c as i64 * 7919)));
            prop_assert_eq!(honest, skewed);
        }

        /// A peer is live exactly for one lease duration after its last
        /// observed change, and never while released.
        #[test]
        fn expiry_is_exact(history in prop::collection::vec(arb_obs(), 1..30)) {
            let t0 = Instant::now();
            let mut l = Liveness::new(D);
            let mut now = t0;
            let mut counter = [0u64; 4];
            // Model: last change time and released flag per node.
            let mut model: [Option<(Instant, bool, u64)>; 4] = [None; 4];
            for o in &history {
                now += Duration::from_millis(o.dt_ms);
                let name = format!("n{}", o.node);
                if o.deleted {
                    l.remove(&name, now);
                    model[o.node] = None;
                    continue;
                }
                if o.renewed {
                    counter[o.node] += 1;
                }
                l.observe(&name, LeaseFingerprint::new(counter[o.node].to_string()), o.released, now);
                let changed = match model[o.node] {
                    Some((_, rel, c)) => rel != o.released || c != counter[o.node],
                    None => true,
                };
                if changed {
                    model[o.node] = Some((now, o.released, counter[o.node]));
                }
                for (i, m) in model.iter().enumerate() {
                    let name = format!("n{i}");
                    match m {
                        Some((at, false, _)) => {
                            let expiry = *at + D;
                            prop_assert_eq!(l.is_live(&name, now), now < expiry);
                            prop_assert!(l.is_live(&name, expiry - Duration::from_nanos(1)));
                            prop_assert!(!l.is_live(&name, expiry));
                        }
                        _ => prop_assert!(!l.is_live(&name, now)),
                    }
                }
                if let Some(e) = l.next_expiry(now) {
                    prop_assert!(e > now);
                    prop_assert!(l.live(now).len() > l.live(e).len());
                }
            }
        }
    }
}
