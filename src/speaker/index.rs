//! The speaker's index: what its watches have shown of the cluster.
//!
//! Turns watch events ([`Change`]) into the [`ClusterView`] eligibility reads
//! and into peer liveness ([`Liveness`]), and remembers which kinds have
//! listed at least once. It decides nothing: [`super::core`] asks it
//! questions. Pure: `now` is passed in, no client, no clock.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use super::eligibility::{ClusterView, INTERFACES_ANNOTATION, NodeFacts, ServiceKey};
use super::published::{ANNOUNCED_ANNOTATION, MACS_ANNOTATION, parse_list};
use crate::api::{IPAddressPool, L2Advertisement, SPEAKER_LEASE_PREFIX};
use crate::election::{LeaseFingerprint, Liveness};

/// A change to one kind of watched object, as the watcher reports it.
#[derive(Clone, Debug)]
pub enum Change<K> {
    /// Added or modified.
    Apply(K),
    /// Deleted.
    Delete(K),
    /// A complete re-list: replaces everything known of this kind.
    Resync(Vec<K>),
    /// The watch failed: what is known of this kind may be stale until the
    /// watch delivers again. In particular peers' leases cannot be seen to
    /// change, so their expiry would be an artefact of our own outage.
    Broken,
}

/// Everything that can change the speaker's decision.
// Inputs are moved once through a channel and consumed; boxing the large
// variants would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Input {
    /// An IPAddressPool changed.
    Pool(Change<IPAddressPool>),
    /// An L2Advertisement changed.
    Advertisement(Change<L2Advertisement>),
    /// A Node changed.
    Node(Change<Node>),
    /// A Service changed.
    Service(Change<Service>),
    /// An EndpointSlice changed.
    Slice(Change<EndpointSlice>),
    /// A Lease in the install namespace changed (non-speaker leases are ignored).
    Lease(Change<Lease>),
    /// Our own lease was renewed by a request *sent* at this local time.
    Renewed {
        /// When the successful renewal request was sent; the fence counts from here.
        sent_at: Instant,
    },
    /// A renewal attempt of our own lease failed (the API server refused
    /// or could not be reached). The fence does not move; this only tells
    /// the fast path that we are not (now) reaching the API.
    RenewFailed,
    /// Our lease now publishes this fast-path incarnation (sent right
    /// after the `Renewed` whose write carried it).
    LanPublished(u64),
    /// The fast path's view changed (see `super::lan`).
    Lan(super::lan::LanView),
}

/// Which kinds have delivered their first complete list. Until all have,
/// the speaker announces nothing: a partial view (say, no peer leases yet)
/// would make it believe it owns VIPs that live peers announce.
#[derive(Clone, Copy, Debug, Default)]
struct Synced {
    pools: bool,
    advertisements: bool,
    nodes: bool,
    services: bool,
    slices: bool,
    leases: bool,
}

impl Synced {
    fn all(&self) -> bool {
        self.pools
            && self.advertisements
            && self.nodes
            && self.services
            && self.slices
            && self.leases
    }
}

/// The watched state of the cluster as one speaker sees it.
#[derive(Debug)]
pub struct Index {
    /// This node's name: its own lease is judged by the fence, not here.
    node: String,
    /// Interfaces this node has (eligibility of our own node).
    own_interfaces: Option<BTreeSet<String>>,
    /// Pools, advertisements, Services and slices as watched; `nodes` is
    /// rebuilt from `node_facts` and `lease_interfaces` by [`Index::view`].
    view: ClusterView,
    /// Raw Nodes' facts before interfaces from leases are merged in.
    node_facts: BTreeMap<String, NodeFacts>,
    /// Interfaces peers published in their leases.
    lease_interfaces: BTreeMap<String, BTreeSet<String>>,
    /// Fast-path incarnations peers published in their leases.
    lease_incarnations: BTreeMap<String, u64>,
    /// VIPs peers' leases say they answer for (absent: the peer does not
    /// publish them).
    lease_announced: BTreeMap<String, BTreeSet<IpAddr>>,
    /// MACs peers' leases say they answer with.
    lease_macs: BTreeMap<String, BTreeSet<crate::l2::Mac>>,
    /// Peer liveness from lease changes.
    liveness: Liveness,
    /// Which watchers have listed once.
    synced: Synced,
    /// The lease watch has delivered a complete view before: a later gap
    /// is a gap in observation, not a silence of the peers.
    leases_listed_once: bool,
    /// How long the lease watch may deliver nothing before its view counts
    /// as stale (see [`Index::lease_view_stale`]).
    lease_silence_bound: Duration,
    /// Local time of the lease watch's last delivery.
    last_lease_delivery: Option<Instant>,
    /// Lease watch deliveries so far: orders them against other inputs
    /// (see [`Index::lease_deliveries`]).
    lease_deliveries: u64,
    /// When the lease watch last failed while its view was fresh: with
    /// the silence bound, when the view turned stale.
    lease_broken_at: Option<Instant>,
}

impl Index {
    /// An empty index for `node`, judging peers by `lease_duration`. Its
    /// lease view is stale after `lease_silence_bound` without a delivery;
    /// it must lie between the renewal period and `lease_duration` (see
    /// [`Index::lease_view_stale`]).
    pub fn new(
        node: impl Into<String>,
        lease_duration: Duration,
        lease_silence_bound: Duration,
        own_interfaces: Option<BTreeSet<String>>,
    ) -> Self {
        Self {
            node: node.into(),
            own_interfaces,
            view: ClusterView::default(),
            node_facts: BTreeMap::new(),
            lease_interfaces: BTreeMap::new(),
            lease_incarnations: BTreeMap::new(),
            lease_announced: BTreeMap::new(),
            lease_macs: BTreeMap::new(),
            liveness: Liveness::new(lease_duration),
            synced: Synced::default(),
            leases_listed_once: false,
            lease_silence_bound,
            last_lease_delivery: None,
            lease_deliveries: 0,
            lease_broken_at: None,
        }
    }

    /// Applies one watch input observed at local time `now`. `Renewed` is
    /// not a watch input (the fence takes it) and is ignored here.
    pub fn apply(&mut self, input: Input, now: Instant) {
        match input {
            Input::Pool(c) => {
                self.synced.pools |= !matches!(c, Change::Broken);
                apply_named(&mut self.view.pools, c, |p| p.name_any());
            }
            Input::Advertisement(c) => {
                self.synced.advertisements |= !matches!(c, Change::Broken);
                apply_named(&mut self.view.advertisements, c, |a| a.name_any());
            }
            Input::Node(c) => {
                self.synced.nodes |= !matches!(c, Change::Broken);
                apply_mapped(&mut self.node_facts, c, |n| {
                    (n.name_any(), NodeFacts::from_node(&n))
                });
            }
            Input::Service(c) => {
                self.synced.services |= !matches!(c, Change::Broken);
                apply_named(&mut self.view.services, c, crate::model::service_key);
            }
            Input::Slice(c) => {
                self.synced.slices |= !matches!(c, Change::Broken);
                apply_named(&mut self.view.endpoint_slices, c, |s| {
                    (s.namespace().unwrap_or_default(), s.name_any())
                });
            }
            Input::Lease(c) => {
                let delivers = !matches!(c, Change::Broken);
                let was_stale = self.lease_view_stale(now);
                if was_stale && delivers && self.leases_listed_once {
                    // Back after a gap (a failed or a silent watch):
                    // whatever changed meanwhile may be replayed over
                    // several events, so no peer may expire on the
                    // strength of the gap.
                    self.liveness.restart_observation(now);
                }
                if delivers {
                    self.last_lease_delivery = Some(now);
                    self.lease_deliveries += 1;
                    self.lease_broken_at = None;
                } else if !was_stale {
                    self.lease_broken_at = Some(now);
                }
                // A failed lease watch unsyncs the view: peers would seem to
                // stop renewing only because we cannot see them. Any later
                // event re-syncs it (the watcher delivers single changes only
                // after a complete list, or while a resumed watch replays
                // what happened meanwhile; live peers renew every period, so
                // events do come). Other kinds stay synced through a watch
                // failure: a stale view there only delays a change, as a slow
                // watch would.
                self.synced.leases = delivers;
                self.leases_listed_once |= delivers;
                self.apply_lease(c, now);
            }
            Input::Renewed { .. } | Input::RenewFailed | Input::LanPublished(_) | Input::Lan(_) => {
            }
        }
    }

    fn apply_lease(&mut self, change: Change<Lease>, now: Instant) {
        let node_of = |l: &Lease| {
            l.metadata
                .name
                .as_deref()
                .and_then(|n| n.strip_prefix(SPEAKER_LEASE_PREFIX))
                .filter(|n| !n.is_empty())
                .map(str::to_string)
        };
        match change {
            Change::Apply(l) => {
                if let Some(node) = node_of(&l) {
                    self.observe_lease(&node, &l, now);
                }
            }
            Change::Delete(l) => {
                if let Some(node) = node_of(&l) {
                    self.liveness.remove(&node, now);
                    self.forget_published(&node);
                }
            }
            Change::Resync(all) => {
                let listed: BTreeMap<String, Lease> = all
                    .into_iter()
                    .filter_map(|l| Some((node_of(&l)?, l)))
                    .collect();
                let known: Vec<String> = self.liveness.known().map(str::to_string).collect();
                for gone in known.iter().filter(|n| !listed.contains_key(*n)) {
                    self.liveness.remove(gone, now);
                    self.forget_published(gone);
                }
                for (node, l) in &listed {
                    self.observe_lease(node, l, now);
                }
            }
            Change::Broken => {}
        }
    }

    fn observe_lease(&mut self, node: &str, lease: &Lease, now: Instant) {
        let (fingerprint, released) = fingerprint(lease);
        self.liveness.observe(node, fingerprint, released, now);
        match lease
            .annotations()
            .get(super::lan::INCARNATION_ANNOTATION)
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(inc) => {
                self.lease_incarnations.insert(node.to_string(), inc);
            }
            None => {
                self.lease_incarnations.remove(node);
            }
        }
        match lease.annotations().get(ANNOUNCED_ANNOTATION) {
            Some(v) => {
                self.lease_announced.insert(node.to_string(), parse_list(v));
            }
            None => {
                self.lease_announced.remove(node);
            }
        }
        match lease.annotations().get(MACS_ANNOTATION) {
            Some(v) => {
                self.lease_macs.insert(node.to_string(), parse_list(v));
            }
            None => {
                self.lease_macs.remove(node);
            }
        }
        match lease.annotations().get(INTERFACES_ANNOTATION) {
            Some(v) => {
                self.lease_interfaces
                    .insert(node.to_string(), NodeFacts::parse_interfaces(v));
            }
            None => {
                self.lease_interfaces.remove(node);
            }
        }
    }

    fn forget_published(&mut self, node: &str) {
        self.lease_interfaces.remove(node);
        self.lease_incarnations.remove(node);
        self.lease_announced.remove(node);
        self.lease_macs.remove(node);
    }

    /// Every Node's facts as watched (interfaces from Leases not merged in).
    pub fn node_facts(&self) -> &BTreeMap<String, NodeFacts> {
        &self.node_facts
    }

    /// The VIPs `node`'s Lease says it answers for; `None` when its Lease
    /// does not publish them (an older speaker, or no Lease).
    pub fn published_announced(&self, node: &str) -> Option<&BTreeSet<IpAddr>> {
        self.lease_announced.get(node)
    }

    /// The node whose Lease publishes `mac`, if any.
    pub fn node_with_mac(&self, mac: crate::l2::Mac) -> Option<&str> {
        self.lease_macs
            .iter()
            .find(|(_, macs)| macs.contains(&mac))
            .map(|(n, _)| n.as_str())
    }

    /// Whether every watcher has listed once and the lease view is not
    /// stale at `now`.
    pub fn synced(&self, now: Instant) -> bool {
        self.synced.all() && !self.lease_view_stale(now)
    }

    /// Whether the lease view cannot be trusted at `now`: the lease watch
    /// failed, or has delivered nothing for the silence bound.
    ///
    /// Silence means a stalled watch, not quiet peers: our own lease is in
    /// the watched namespace and changes every renewal period, and so does
    /// every live peer's. A watch on a connection the network has cut does
    /// not fail, it only stops delivering, and then every peer would seem
    /// to stop renewing. Because the bound is below the lease duration,
    /// the view turns stale before any peer can expire in it because of
    /// the stall; when it delivers again every peer counts as just seen.
    pub fn lease_view_stale(&self, now: Instant) -> bool {
        !self.synced.leases || self.lease_silence_ends().is_none_or(|t| now >= t)
    }

    /// When the lease view turns stale unless the watch delivers before.
    pub fn lease_silence_ends(&self) -> Option<Instant> {
        self.last_lease_delivery
            .and_then(|t| t.checked_add(self.lease_silence_bound))
    }

    /// How many times the lease watch has delivered. Inputs are applied in
    /// the order they arrive, so a count that grew since some other input
    /// proves a delivery after it.
    pub fn lease_deliveries(&self) -> u64 {
        self.lease_deliveries
    }

    /// The cluster view for eligibility, with each node's interfaces: ours
    /// from our own detection, peers' from their leases.
    pub fn view(&mut self) -> &ClusterView {
        self.view.nodes = self
            .node_facts
            .iter()
            .map(|(name, facts)| {
                let mut f = facts.clone();
                f.interfaces = if *name == self.node {
                    self.own_interfaces.clone()
                } else {
                    self.lease_interfaces.get(name).cloned()
                };
                (name.clone(), f)
            })
            .collect();
        &self.view
    }

    /// Replaces the interfaces this node has (their links changed).
    pub fn set_own_interfaces(&mut self, interfaces: BTreeSet<String>) {
        self.own_interfaces = Some(interfaces);
    }

    /// Peers whose leases were seen to change within the lease duration
    /// before `now`, excluding ourselves (the fence judges us).
    pub fn live_peers(&self, now: Instant) -> BTreeSet<String> {
        self.liveness
            .live(now)
            .into_keys()
            .filter(|n| *n != self.node)
            .collect()
    }

    /// The peers that were live when the lease view turned stale (it
    /// failed, or went silent for the silence bound): the membership an
    /// API outage freezes. Empty while the view is fresh or never was.
    pub fn live_peers_when_view_went_stale(&self) -> BTreeSet<String> {
        let silent = self.lease_silence_ends();
        let since = match (self.lease_broken_at, silent) {
            (Some(b), Some(s)) => b.min(s),
            (Some(b), None) => b,
            (None, Some(s)) => s,
            (None, None) => return BTreeSet::new(),
        };
        self.live_peers(since)
    }

    /// Live peers with the fast-path incarnation each Lease publishes: the
    /// fast path's membership. While the lease view is stale these are the
    /// peers live when it turned stale, as in an API outage's election:
    /// otherwise they would expire only because we cannot see them, and a
    /// ring emptied that way hears no peer's evidence of a reachable API,
    /// so it would grant us the outage grace while peers take our VIPs,
    /// and it would stop watching a peer that dies during the outage.
    pub fn live_peer_incarnations(&self, now: Instant) -> Vec<(String, Option<u64>)> {
        let peers = if self.lease_view_stale(now) {
            self.live_peers_when_view_went_stale()
        } else {
            self.live_peers(now)
        };
        peers
            .into_iter()
            .map(|n| {
                let inc = self.lease_incarnations.get(&n).copied();
                (n, inc)
            })
            .collect()
    }

    /// The fast-path incarnation `node`'s Lease publishes.
    pub fn published_incarnation(&self, node: &str) -> Option<u64> {
        self.lease_incarnations.get(node).copied()
    }

    /// The next instant a peer's lease expires, if any.
    pub fn next_expiry(&self, now: Instant) -> Option<Instant> {
        self.liveness.next_expiry(now)
    }

    /// This node's `InternalIP` addresses as its Node object gives them.
    pub fn own_internal_ips(&self) -> &[IpAddr] {
        self.node_facts
            .get(&self.node)
            .map(|f| f.internal_ips.as_slice())
            .unwrap_or_default()
    }

    /// A Service from the index (for Event object references).
    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.view.services.get(key)
    }
}

/// The renewal fingerprint of a lease and whether it is released. Remote
/// timestamps are only compared for equality (see `election::liveness`).
pub fn fingerprint(lease: &Lease) -> (LeaseFingerprint, bool) {
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    let stamp = |t: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime>| {
        t.map(|t| t.0.to_string()).unwrap_or_default()
    };
    let token = format!(
        "{holder}|{}|{}|{}",
        stamp(spec.renew_time),
        stamp(spec.acquire_time),
        spec.lease_transitions.unwrap_or_default()
    );
    let declared = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs);
    let released = holder.is_empty();
    (
        LeaseFingerprint {
            token,
            declared_duration: declared,
        },
        released,
    )
}

fn apply_named<K, V>(map: &mut BTreeMap<K, V>, change: Change<V>, key: impl Fn(&V) -> K)
where
    K: Ord,
{
    apply_mapped(map, change, |v| (key(&v), v));
}

fn apply_mapped<K, S, V>(map: &mut BTreeMap<K, V>, change: Change<S>, f: impl Fn(S) -> (K, V))
where
    K: Ord,
{
    match change {
        Change::Apply(o) => {
            let (k, v) = f(o);
            map.insert(k, v);
        }
        Change::Delete(o) => {
            let (k, _) = f(o);
            map.remove(&k);
        }
        Change::Resync(all) => {
            *map = all.into_iter().map(f).collect();
        }
        Change::Broken => {}
    }
}
