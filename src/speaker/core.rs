//! The speaker's decisions: from what the index shows, which VIPs this node
//! announces, on which interfaces, and which status objects it holds.
//!
//! Owns the fence on our own lease ([`Fence`]), the takeover hold-offs and
//! the record of what this node has told the dataplane; the watched state
//! lives in [`super::index`]. [`Core::decide`] turns both into [`Actions`].
//! It is pure: no kube client, no clock, no sockets — `now` is passed in, so
//! every timing rule is testable with plain `Instant`s. The async loop in
//! `tasks` only feeds it and carries its actions out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;

use super::eligibility::{AnnounceOn, NodeRules, ServiceKey, VipPlan, eligibility};
use super::index::Index;
pub use super::index::{Change, Input};
use crate::election::{self, Fence};
use crate::model::ClassFilter;

/// What the speaker must do after a decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    /// VIPs to withdraw (lost, no longer eligible, fenced, or re-announced on other interfaces).
    pub withdraw: Vec<IpAddr>,
    /// VIPs to announce and the interfaces to announce each on.
    pub announce: Vec<(IpAddr, BTreeSet<String>)>,
    /// VIPs we won but cannot announce because no interface could be
    /// resolved, with the Services concerned.
    pub no_interface: Vec<(IpAddr, BTreeSet<ServiceKey>)>,
    /// Services this node now announces (newly, or with other interfaces):
    /// write their `ServiceL2Status`.
    pub status_upsert: Vec<(ServiceKey, BTreeSet<String>)>,
    /// Services this node stopped announcing: delete their `ServiceL2Status`.
    pub status_delete: Vec<ServiceKey>,
    /// Services that just got this node as owner (one `nodeAssigned` Event each).
    pub assigned: Vec<ServiceKey>,
    /// For each Service in `assigned`: the other nodes that own another of
    /// its VIPs (a dual-stack Service's two VIPs are elected apart). Their
    /// `ServiceL2Status` objects are current; any other node's is stale.
    pub co_owners: BTreeMap<ServiceKey, BTreeSet<String>>,
    /// VIPs whose owner (as computed here, any node) changed.
    pub election_changes: u64,
    /// Services newly refused announcement because they carry
    /// `allow-shared-ip` and a matching advertisement has
    /// `serviceSelectors`, with the VIP concerned. Reported by one speaker
    /// per VIP (the one the VIP's election among all members would pick),
    /// not by every node.
    pub refused: Vec<(IpAddr, ServiceKey)>,
}

impl Actions {
    /// Whether nothing needs doing.
    pub fn is_empty(&self) -> bool {
        *self == Actions::default()
    }
}

/// The timing rules of membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a lease protects its holder without a renewal.
    pub lease_duration: Duration,
    /// How much earlier than its peers a node stops announcing.
    pub fence_margin: Duration,
    /// How long a node that just (re)joined waits before taking a VIP that
    /// a live peer would otherwise own: the peer withdraws only once its
    /// watch shows our lease, so announcing at once would answer twice for
    /// the watch delay. A watch slower than this gives a short overlap; a
    /// longer delay gives a short gap instead.
    pub takeover_delay: Duration,
}

/// The speaker's whole decision state.
#[derive(Debug)]
pub struct Core {
    /// This node's name.
    node: String,
    /// What the watches show.
    index: Index,
    /// Which Services are ours: the controller's `--require-class` rule.
    class: ClassFilter,
    /// See [`Timing::takeover_delay`].
    takeover_delay: Duration,
    /// When our fence last opened (we became a member again).
    joined_at: Option<Instant>,
    /// The lease watch's delivery count when our fence last reopened after
    /// having been open before (a rejoin after being fenced or cut off).
    /// Until the watch delivers again, its view of peers may predate the
    /// rejoin, and nothing new is taken on it.
    rejoined_at_delivery: Option<u64>,
    /// Interface used for advertisements that name none.
    default_interface: Option<String>,
    /// Our own lease's protection.
    fence: Fence,
    /// Shutting down: announce nothing more.
    stopping: bool,
    /// What the dataplane was told: VIP -> interfaces.
    announced: BTreeMap<IpAddr, BTreeSet<String>>,
    /// Services we announce (status objects we hold) -> interfaces.
    statuses: BTreeMap<ServiceKey, BTreeSet<String>>,
    /// Last computed owner per VIP, to count election changes and to see
    /// who we take a VIP from.
    owners: BTreeMap<IpAddr, Option<String>>,
    /// VIPs we won from a peer that is still live (eligibility moved them:
    /// an advertisement, a label, an endpoint), with when we first won
    /// them. The peer withdraws when its watch shows the same change, so we
    /// announce only `takeover_delay` later, never alongside it.
    contested: BTreeMap<IpAddr, Instant>,
    /// Last eligibility plan, kept for Event targets (Services of a VIP).
    plan: BTreeMap<IpAddr, VipPlan>,
    /// A synced decision was made; the first one does not count as election changes.
    decided_once: bool,
    /// What the LAN fast path says, `None` while it is off (no key, or its
    /// socket not open yet): then the Lease alone decides.
    lan: Option<super::lan::LanView>,
    /// The newest fast-path incarnation our Lease is known to publish.
    lan_published: Option<u64>,
    /// Our last renewal attempt failed: we do not reach the API now, even
    /// while the fence (counted from the last success) is still open. The
    /// fast path's API evidence must say so at once, or every node cut at
    /// the same moment would see the others' stale "I reach it" and fence
    /// before the outage grace could start.
    last_renewal_failed: bool,
    /// Since when decisions have found us fenced (`None` while not), to
    /// see the fence reopen by any route: a renewal, the fast path
    /// admitting us, the API-outage grace.
    fenced_since: Option<Instant>,
    /// Our fence reopened without a renewal: take nothing new until one.
    rejoin_awaits_renewal: bool,
    /// Services this node reported as refused (see [`Actions::refused`]),
    /// so each is reported once, not at every decision.
    refused: BTreeSet<ServiceKey>,
    /// The operator's rules for cordoned and not-ready nodes.
    node_rules: NodeRules,
    /// Wall-clock time of the next decision (Ready grace is counted from
    /// the Node's `lastTransitionTime`, a wall time, so that every speaker
    /// agrees whenever it started).
    wall: jiff::Timestamp,
    /// VIPs we won while a live peer's Lease listed them: we wait for the
    /// peer to withdraw and publish that, then announce at once.
    awaiting_release: BTreeSet<IpAddr>,
    /// VIPs that moved between us and a peer, with the peer and when: its
    /// frames for the VIP within [`HANDOVER_ECHO`] are echoes of the
    /// hand-over (a reply sent just before it withdrew, an announcement
    /// crossing our withdrawal), not conflicts.
    handovers: BTreeMap<IpAddr, (String, Instant)>,
}

/// How long after a hand-over frames from the other party are its echo:
/// ARP replies in flight, a neighbour's retransmitted request answered
/// twice. Far above a hand-over's few milliseconds, far below the one
/// second within which a real conflict must be reported.
pub const HANDOVER_ECHO: Duration = Duration::from_millis(500);

/// What one decision wants announced and held, before it is compared with
/// what is.
#[derive(Debug, Default)]
struct Wanted {
    /// VIP -> interfaces to announce it on.
    vips: BTreeMap<IpAddr, BTreeSet<String>>,
    /// Service -> interfaces, for its `ServiceL2Status`.
    statuses: BTreeMap<ServiceKey, BTreeSet<String>>,
    /// Service -> other nodes owning another of its VIPs.
    co_owners: BTreeMap<ServiceKey, BTreeSet<String>>,
}

impl Core {
    /// A core for `node`. `own_interfaces` is what this node has (and
    /// publishes); `default_interface` serves advertisements without `interfaces`.
    pub fn new(
        node: impl Into<String>,
        timing: Timing,
        own_interfaces: Option<BTreeSet<String>>,
        default_interface: Option<String>,
    ) -> Self {
        let Timing {
            lease_duration,
            fence_margin,
            takeover_delay,
        } = timing;
        let node = node.into();
        // The fence window: longer than the renewal period (the config
        // guarantees it), shorter than the lease duration.
        let lease_silence_bound = lease_duration.saturating_sub(fence_margin);
        Self {
            index: Index::new(
                node.clone(),
                lease_duration,
                lease_silence_bound,
                own_interfaces,
            ),
            node,
            class: ClassFilter::default(),
            takeover_delay,
            joined_at: None,
            rejoined_at_delivery: None,
            default_interface,
            fence: Fence::new(lease_duration, fence_margin),
            stopping: false,
            announced: BTreeMap::new(),
            statuses: BTreeMap::new(),
            owners: BTreeMap::new(),
            contested: BTreeMap::new(),
            plan: BTreeMap::new(),
            decided_once: false,
            lan: None,
            lan_published: None,
            last_renewal_failed: false,
            fenced_since: None,
            rejoin_awaits_renewal: false,
            refused: BTreeSet::new(),
            node_rules: NodeRules::default(),
            wall: jiff::Timestamp::UNIX_EPOCH,
            awaiting_release: BTreeSet::new(),
            handovers: BTreeMap::new(),
        }
    }

    /// Announces only the Services `class` admits (as the controller
    /// allocates only for them).
    pub fn with_class(mut self, class: ClassFilter) -> Self {
        self.class = class;
        self
    }

    /// Judges cordoned and not-ready nodes by `rules`.
    pub fn with_node_rules(mut self, rules: NodeRules) -> Self {
        self.node_rules = rules;
        self
    }

    /// Sets the wall-clock time the next decisions are made at (read by the
    /// caller with the monotonic `now` it passes to [`Core::decide`]).
    pub fn set_wall_clock(&mut self, at: jiff::Timestamp) {
        self.wall = at;
    }

    /// The peer a frame for `vip` from `mac` comes from when it is the echo
    /// of a hand-over between us and that peer within [`HANDOVER_ECHO`]
    /// before `now`; `None` when it is a conflict to report.
    pub fn handover_echo(&self, vip: IpAddr, mac: crate::l2::Mac, now: Instant) -> Option<&str> {
        let (peer, at) = self.handovers.get(&vip)?;
        let sender = self.index.node_with_mac(mac)?;
        (sender == peer && now.saturating_duration_since(*at) <= HANDOVER_ECHO).then_some(sender)
    }

    /// Applies one input observed at local time `now`.
    pub fn apply(&mut self, input: Input, now: Instant) {
        match input {
            Input::Renewed { sent_at } => {
                if self.fence.is_fenced(now) || self.rejoin_awaits_renewal {
                    self.joined_at = Some(now);
                    // Fenced after having been a member: our view of the
                    // peers may be as old as the cut that fenced us.
                    if self.fence.deadline().is_some() {
                        self.rejoined_at_delivery = Some(self.index.lease_deliveries());
                    }
                    self.rejoin_awaits_renewal = false;
                }
                self.fence.renewed(sent_at);
                self.last_renewal_failed = false;
            }
            Input::RenewFailed => self.last_renewal_failed = true,
            Input::Lan(view) => {
                let was = self.lan_admits_self();
                self.lan = Some(view);
                self.note_lan_rejoin(was, now);
            }
            Input::LanPublished(incarnation) => {
                let was = self.lan_admits_self();
                self.lan_published = self.lan_published.max(Some(incarnation));
                self.note_lan_rejoin(was, now);
            }
            watched => self.index.apply(watched, now),
        }
    }

    /// When the fast path admits us again (heard on the LAN, and our Lease
    /// shows the incarnation peers need to clear their dead mark), start the
    /// same hold-off as after a lease rejoin: peers that took our VIPs
    /// withdraw only once their watch shows our Lease.
    fn note_lan_rejoin(&mut self, was_admitted: bool, now: Instant) {
        if was_admitted || !self.lan_admits_self() {
            return;
        }
        self.joined_at = Some(now);
        if self
            .lan
            .as_ref()
            .is_some_and(|v| v.incarnation != v.first_incarnation)
        {
            // After a LAN fence our view of the peers may be from before it.
            self.rejoined_at_delivery = Some(self.index.lease_deliveries());
        }
    }

    /// Our fence, closed since `since`, reopened (seen by a decision at
    /// `now`). A renewal and the fast path note their own rejoin when they
    /// happen; this catches a reopening neither noted (the API-outage grace
    /// starting after our lease fence closed). Peers may have taken our
    /// VIPs meanwhile and withdraw only once they see our Lease renewed, so
    /// nothing new is taken before a renewal, which starts the usual rejoin.
    fn note_fence_reopened(&mut self, since: Instant, now: Instant) {
        if self.joined_at.is_none_or(|j| j < since) {
            self.joined_at = Some(now);
            self.rejoined_at_delivery = Some(self.index.lease_deliveries());
            self.rejoin_awaits_renewal = true;
        }
    }

    /// Whether the fast path lets us answer: it is off, or it hears us and,
    /// if we were fenced on the LAN before, our Lease publishes the new
    /// incarnation (until then peers hold us dead and may own our VIPs).
    fn lan_admits_self(&self) -> bool {
        self.lan.as_ref().is_none_or(|v| {
            !v.must_fence
                && (v.incarnation == v.first_incarnation
                    || self.lan_published.is_some_and(|p| p >= v.incarnation))
        })
    }

    /// Whether our Lease protects us at `now`: renewed recently enough, or
    /// cut from the API while the fast path shows that no peer can reach
    /// it either (so none can be expiring our Lease; issue 13's outage rule).
    fn lease_protects(&self, now: Instant) -> bool {
        !self.fence.is_fenced(now) || self.lan.as_ref().is_some_and(|v| v.api_grace)
    }

    /// Whether our own Lease renewals succeed at `now` (for the fast path's
    /// API evidence).
    pub fn lease_renewing(&self, now: Instant) -> bool {
        !self.fence.is_fenced(now) && !self.last_renewal_failed
    }

    /// Lease-live peers with the fast-path incarnation their Leases publish
    /// (the fast path's membership).
    pub fn lan_members(&self, now: Instant) -> Vec<(String, Option<u64>)> {
        self.index.live_peer_incarnations(now)
    }

    /// Whether the fast path holds `peer` dead: it declared an incarnation
    /// dead that the peer's Lease has not moved past.
    fn lan_holds_dead(&self, peer: &str) -> bool {
        self.lan.as_ref().is_some_and(|v| {
            v.dead.get(peer).is_some_and(|inc| {
                self.index
                    .published_incarnation(peer)
                    .is_none_or(|p| p <= *inc)
            })
        })
    }

    /// Our interfaces whose links can carry announcements changed: VIPs on
    /// an interface that left are released at the next decision, and our
    /// Lease publishes the new set so peers take them.
    pub fn set_own_interfaces(&mut self, interfaces: BTreeSet<String>) {
        self.index.set_own_interfaces(interfaces);
    }

    /// The interface for advertisements that name none, as resolved now.
    pub fn default_interface(&self) -> Option<&str> {
        self.default_interface.as_deref()
    }

    /// This node's `InternalIP` addresses as its Node object gives them.
    pub fn own_internal_ips(&self) -> &[IpAddr] {
        self.index.own_internal_ips()
    }

    /// Sets the interface for advertisements that name none (it follows the
    /// Node's `InternalIP`, which may arrive or change after start).
    pub fn set_default_interface(&mut self, interface: Option<String>) {
        self.default_interface = interface;
    }

    /// Stop announcing anything (graceful shutdown); the next decision withdraws all.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// Records that announcing `vip` failed, so the next decision retries it.
    pub fn announce_failed(&mut self, vip: IpAddr) {
        self.announced.remove(&vip);
    }

    /// Whether every watcher has listed once and the lease view is fresh
    /// at `now` (the lease watch neither failed nor went silent).
    pub fn synced(&self, now: Instant) -> bool {
        self.index.synced(now)
    }

    /// Whether renewing our lease is useful at `now`. A fenced speaker whose
    /// watches have not all listed, or whose lease view is stale, could not
    /// announce anything, yet its renewal would make peers see it live and
    /// withdraw its VIPs: clients would get no answer until it synced. So
    /// it rejoins only once synced; a speaker still protected by its lease
    /// always renews.
    pub fn may_renew(&self, now: Instant) -> bool {
        self.synced(now) || !self.fence.is_fenced(now)
    }

    /// Whether we must answer nothing at `now`: our Lease no longer
    /// protects us, or the LAN fast path fences us.
    pub fn is_fenced(&self, now: Instant) -> bool {
        !self.lease_protects(now) || !self.lan_admits_self()
    }

    /// VIPs currently announced by this node.
    pub fn announced(&self) -> &BTreeMap<IpAddr, BTreeSet<String>> {
        &self.announced
    }

    /// Services using `vip` in the last plan (targets for conflict Events).
    pub fn services_of(&self, vip: IpAddr) -> BTreeSet<ServiceKey> {
        self.plan
            .get(&vip)
            .map(|p| p.services.clone())
            .unwrap_or_default()
    }

    /// A Service from the index (for Event object references).
    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.index.service(key)
    }

    /// The next instant at which the decision may change with no new input:
    /// a peer expiring, our fence closing, a takeover delay ending, or the
    /// lease view turning stale.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let fence = self.fence.deadline().filter(|d| *d > now);
        let stale = self.index.lease_silence_ends().filter(|t| *t > now);
        let takeover = self.rejoin_hold_off_end().filter(|t| *t > now);
        let contested = self
            .contested
            .values()
            .filter_map(|t| t.checked_add(self.takeover_delay))
            .filter(|t| *t > now)
            .min();
        let grace = self
            .node_rules
            .next_grace_end(self.index.node_facts(), self.wall)
            .and_then(|end| std::time::Duration::try_from(end.duration_since(self.wall)).ok())
            .and_then(|left| now.checked_add(left));
        [
            self.index.next_expiry(now),
            fence,
            takeover,
            contested,
            stale,
            grace,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The nodes that may own VIPs at `now`: live peers (their Lease is
    /// live and the fast path does not hold them dead), plus ourselves
    /// while neither fence holds (our own lease as seen by the watch is
    /// ignored; the fence is the stricter judge).
    pub fn members(&self, now: Instant) -> BTreeSet<String> {
        let mut m = self.index.live_peers(now);
        m.retain(|p| !self.lan_holds_dead(p));
        if !self.is_fenced(now) && !self.stopping {
            m.insert(self.node.clone());
        }
        m
    }

    /// Recomputes owners at `now` and returns what must change. Updates the
    /// record of what is announced on the assumption that the actions are
    /// carried out (report failures with [`Core::announce_failed`]).
    pub fn decide(&mut self, now: Instant) -> Actions {
        match (self.fenced_since, self.is_fenced(now)) {
            (None, true) => self.fenced_since = Some(now),
            (Some(since), false) => {
                self.fenced_since = None;
                self.note_fence_reopened(since, now);
            }
            _ => {}
        }
        let mut actions = Actions::default();
        let mut wanted = if self.synced(now) {
            let members = self.members(now);
            self.elect(members, now, &mut actions)
        } else if self.decided_once && self.in_api_outage() {
            self.elect_in_api_outage(now, &mut actions)
        } else if self.decided_once {
            // A watch is down or silent: keep what we announce (our lease
            // still protects it) but take nothing new on a stale view.
            Wanted {
                vips: self.announced.clone(),
                statuses: self.statuses.clone(),
                co_owners: BTreeMap::new(),
            }
        } else {
            Wanted::default()
        };
        if self.is_fenced(now) || self.stopping {
            wanted = Wanted::default();
        }
        self.reconcile(wanted, &mut actions);
        actions
    }

    /// Runs the election on a synced view: what we should announce now, and
    /// the election changes seen.
    fn elect(&mut self, members: BTreeSet<String>, now: Instant, actions: &mut Actions) -> Wanted {
        let mut wanted = Wanted::default();
        let wall = self.wall;
        self.plan = eligibility(self.index.view(), self.class, &self.node_rules, wall);
        let mut owners = BTreeMap::new();
        let mut contested = BTreeMap::new();
        let mut awaiting = BTreeSet::new();
        let mut moved = Vec::new();
        for (vip, plan) in &self.plan {
            let owner = self.owner_of(*vip, plan, &members);
            if self.decided_once && self.owners.get(vip).is_none_or(|o| *o != owner) {
                actions.election_changes += 1;
                moved.push((*vip, owner.clone()));
            }
            let mine = owner.as_deref() == Some(self.node.as_str());
            if mine && self.may_announce(*vip, &members, now, &mut contested, &mut awaiting) {
                // The owner was elected among `plan.nodes`, so ours is there.
                if let Some(on) = plan.nodes.get(&self.node) {
                    self.place(*vip, plan, on, &mut wanted, actions);
                }
            }
            owners.insert(*vip, owner);
        }
        for svc in wanted.statuses.keys() {
            let others: BTreeSet<String> = self
                .plan
                .iter()
                .filter(|(_, p)| p.services.contains(svc))
                .filter_map(|(vip, _)| owners.get(vip).cloned().flatten())
                .filter(|n| *n != self.node)
                .collect();
            wanted.co_owners.insert(svc.clone(), others);
        }
        let mut refused = BTreeSet::new();
        for (vip, plan) in self.plan.iter().filter(|(_, p)| !p.refused.is_empty()) {
            if election::owner(*vip, members.iter().map(String::as_str)) != Some(&self.node) {
                continue;
            }
            for svc in &plan.refused {
                if !self.refused.contains(svc) {
                    actions.refused.push((*vip, svc.clone()));
                }
                refused.insert(svc.clone());
            }
        }
        self.refused = refused;
        // VIPs that left the plan had an owner and now have none.
        actions.election_changes += self
            .owners
            .iter()
            .filter(|(v, o)| o.is_some() && !owners.contains_key(*v))
            .count() as u64;
        for (vip, owner) in moved {
            self.note_handover(vip, owner.as_deref(), now);
        }
        self.owners = owners;
        self.contested = contested;
        self.awaiting_release = awaiting;
        self.handovers
            .retain(|_, (_, at)| now.saturating_duration_since(*at) <= HANDOVER_ECHO);
        self.decided_once = true;
        wanted
    }

    /// The owner of `vip` among `members`: the election's pick, or, for a
    /// non-revertive VIP, the node that answers for it now if it is still an
    /// eligible member (the election's pick among such nodes if, in a
    /// hand-over, two do). Every speaker reads the same Leases, so all agree;
    /// the state lives in the Leases, so it survives speaker restarts.
    fn owner_of(&self, vip: IpAddr, plan: &VipPlan, members: &BTreeSet<String>) -> Option<String> {
        let eligible = || eligible_members(plan, members, None);
        if plan.non_revertive {
            let current = eligible().filter(|n| self.answers_for(n, vip));
            if let Some(owner) = election::owner(vip, current) {
                return Some(owner.to_string());
            }
        }
        election::owner(vip, eligible()).map(str::to_string)
    }

    /// Whether `node` answers for `vip`: for us, what the dataplane was
    /// told; for a peer, what its Lease publishes.
    fn answers_for(&self, node: &str, vip: IpAddr) -> bool {
        if node == self.node {
            return self.announced.contains_key(&vip);
        }
        self.index
            .published_announced(node)
            .is_some_and(|a| a.contains(&vip))
    }

    /// Records a move of `vip` between us and a peer (see `handovers`).
    fn note_handover(&mut self, vip: IpAddr, new_owner: Option<&str>, now: Instant) {
        let old_owner = self.owners.get(&vip).cloned().flatten();
        let peer = match (old_owner.as_deref(), new_owner) {
            (Some(old), Some(new)) if old == self.node && new != self.node => new,
            (Some(old), Some(new)) if new == self.node && old != self.node => old,
            _ => return,
        };
        self.handovers.insert(vip, (peer.to_string(), now));
    }

    /// Whether a live member other than us lists `vip` in its Lease.
    fn a_peer_answers(&self, vip: IpAddr, members: &BTreeSet<String>) -> bool {
        members
            .iter()
            .any(|m| *m != self.node && self.answers_for(m, vip))
    }

    /// Whether every node is cut from the API as far as the fast path can
    /// tell (our API-outage grace holds): the lease view is stale for
    /// everyone and only the LAN can still show a death.
    fn in_api_outage(&self) -> bool {
        self.lan.as_ref().is_some_and(|v| v.api_grace)
    }

    /// The election during an API outage (issue 13): the lease view is
    /// stale, so membership is frozen at the peers that were live when it
    /// turned stale, minus those the LAN declares dead. We keep what we
    /// announce and take only VIPs whose owner the LAN declared dead (it
    /// has fenced: the fast path's inequality); nothing else moves on a
    /// stale view.
    fn elect_in_api_outage(&mut self, now: Instant, actions: &mut Actions) -> Wanted {
        let from_dead: BTreeSet<IpAddr> = self
            .owners
            .iter()
            .filter(|(_, o)| {
                o.as_deref()
                    .is_some_and(|o| o != self.node && self.lan_holds_dead(o))
            })
            .map(|(v, _)| *v)
            .collect();
        let mut members = self.index.live_peers_when_view_went_stale();
        members.retain(|p| !self.lan_holds_dead(p));
        if !self.is_fenced(now) && !self.stopping {
            members.insert(self.node.clone());
        }
        let mut wanted = self.elect(members, now, actions);
        wanted
            .vips
            .retain(|v, _| self.announced.contains_key(v) || from_dead.contains(v));
        let plan = &self.plan;
        let kept: BTreeSet<&ServiceKey> = wanted
            .vips
            .keys()
            .filter_map(|v| plan.get(v))
            .flat_map(|p| p.services.iter())
            .collect();
        wanted.statuses.retain(|svc, _| kept.contains(svc));
        wanted.co_owners.retain(|svc, _| kept.contains(svc));
        wanted
    }

    /// Whether we, the elected owner of `vip`, may announce it at `now`, or
    /// must first give the peer that had it time to withdraw. Records VIPs
    /// still waiting in `contested`.
    ///
    /// A VIP we announce already stays. A new one waits while a live peer's
    /// Lease lists it (the coordinated hand-over: the peer withdraws, then
    /// publishes), and is announced at once when such a listing goes away,
    /// unless our view of the peers may predate a rejoin. Otherwise it waits
    /// while any of these holds:
    /// - eligibility moved it to us from a peer that is still live, less
    ///   than the takeover delay ago, and we have not seen the peer's Lease
    ///   list it (the peer withdraws when its own watch shows the change);
    /// - we rejoined after being fenced and the lease watch has not
    ///   delivered since (our view of the peers may predate the cut);
    /// - we (re)joined less than the takeover delay ago: a live peer may
    ///   own it and withdraws only once its watch shows our lease, and
    ///   peers that joined with us may not be in our view yet.
    fn may_announce(
        &self,
        vip: IpAddr,
        members: &BTreeSet<String>,
        now: Instant,
        contested: &mut BTreeMap<IpAddr, Instant>,
        awaiting: &mut BTreeSet<IpAddr>,
    ) -> bool {
        if self.announced.contains_key(&vip) {
            return true;
        }
        if self.a_peer_answers(vip, members) {
            awaiting.insert(vip);
            return false;
        }
        if self.rejoin_awaits_renewal || self.lease_view_predates_rejoin() {
            return false;
        }
        if self.awaiting_release.contains(&vip) {
            // The peer we waited for withdrew and said so (or died, which
            // the fast path and the Lease only declare once it is fenced).
            return true;
        }
        // A peer that does not list the VIP may still answer for it: its
        // list follows its dataplane by one write. Only a listing seen to
        // go away (above) proves a withdrawal.
        if let Some(since) = self.moved_from_a_live_peer(vip, members, now)
            && since
                .checked_add(self.takeover_delay)
                .is_some_and(|t| now < t)
        {
            contested.insert(vip, since);
            return false;
        }
        // Even with no live peer in view: peers that joined in the last
        // few milliseconds (every speaker of a cluster starting at once)
        // may not be in it yet, and each would think itself alone.
        self.rejoin_hold_off_end().is_none_or(|t| now >= t)
    }

    /// Since when `vip` has been moving to us from a peer that is still live
    /// (`now` if it starts moving now), or `None` when it is not.
    fn moved_from_a_live_peer(
        &self,
        vip: IpAddr,
        members: &BTreeSet<String>,
        now: Instant,
    ) -> Option<Instant> {
        if let Some(since) = self.contested.get(&vip) {
            return Some(*since);
        }
        self.owners
            .get(&vip)
            .cloned()
            .flatten()
            .is_some_and(|p| p != self.node && members.contains(&p))
            .then_some(now)
    }

    /// Whether we rejoined after being fenced and the lease watch has not
    /// delivered anything since: its view may still be the one from before
    /// the cut, in which peers that took our VIPs meanwhile look dead.
    fn lease_view_predates_rejoin(&self) -> bool {
        self.rejoined_at_delivery
            .is_some_and(|n| self.index.lease_deliveries() <= n)
    }

    /// When the hold-off after our last (re)join ends.
    fn rejoin_hold_off_end(&self) -> Option<Instant> {
        self.joined_at
            .and_then(|j| j.checked_add(self.takeover_delay))
    }

    /// Adds `vip` to what we announce, on the interfaces `on` resolves to.
    fn place(
        &self,
        vip: IpAddr,
        plan: &VipPlan,
        on: &AnnounceOn,
        wanted: &mut Wanted,
        actions: &mut Actions,
    ) {
        let mut ifaces = on.interfaces.clone();
        if on.default_interface {
            ifaces.extend(self.default_interface.clone());
        }
        if ifaces.is_empty() {
            actions.no_interface.push((vip, plan.services.clone()));
            return;
        }
        for svc in &plan.services {
            wanted
                .statuses
                .entry(svc.clone())
                .or_default()
                .extend(ifaces.iter().cloned());
        }
        wanted.vips.insert(vip, ifaces);
    }

    /// Turns the difference between what is and what is wanted into actions,
    /// and records the wanted state as the new truth.
    fn reconcile(&mut self, wanted: Wanted, actions: &mut Actions) {
        let Wanted {
            vips,
            statuses,
            mut co_owners,
        } = wanted;
        for (vip, ifaces) in &self.announced {
            if vips.get(vip) != Some(ifaces) {
                actions.withdraw.push(*vip);
            }
        }
        for (vip, ifaces) in &vips {
            if self.announced.get(vip) != Some(ifaces) {
                actions.announce.push((*vip, ifaces.clone()));
            }
        }
        for svc in self.statuses.keys() {
            if !statuses.contains_key(svc) {
                actions.status_delete.push(svc.clone());
            }
        }
        for (svc, ifaces) in &statuses {
            match self.statuses.get(svc) {
                Some(had) if had == ifaces => {}
                Some(_) => actions.status_upsert.push((svc.clone(), ifaces.clone())),
                None => {
                    actions.status_upsert.push((svc.clone(), ifaces.clone()));
                    actions.assigned.push(svc.clone());
                    actions
                        .co_owners
                        .insert(svc.clone(), co_owners.remove(svc).unwrap_or_default());
                }
            }
        }
        self.announced = vips;
        self.statuses = statuses;
    }
}

/// The nodes of `plan` that are members, leaving out `except`.
fn eligible_members<'a>(
    plan: &'a VipPlan,
    members: &'a BTreeSet<String>,
    except: Option<&'a str>,
) -> impl Iterator<Item = &'a str> + 'a {
    plan.nodes
        .keys()
        .map(String::as_str)
        .filter(move |n| members.contains(*n) && Some(*n) != except)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EXCLUDE_LB_LABEL;
    use crate::fixtures;
    use crate::speaker::eligibility::INTERFACES_ANNOTATION;
    use crate::speaker::published::{ANNOUNCED_ANNOTATION, MACS_ANNOTATION, join};
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use proptest::prelude::*;
    use serde_json::json;

    const D: Duration = Duration::from_secs(4);
    const MARGIN: Duration = Duration::from_secs(1);
    const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
    const TIMING: Timing = Timing {
        lease_duration: D,
        fence_margin: MARGIN,
        takeover_delay: Duration::ZERO,
    };

    fn lease(node: &str, holder: &str, renew: &str) -> Lease {
        fixtures::lease(node, holder, renew).build()
    }

    fn service(name: &str, ip: &str) -> Service {
        fixtures::service(name).ingress(&[ip]).build()
    }

    fn slice(svc: &str) -> EndpointSlice {
        fixtures::slice(svc, &format!("{svc}-1"), &["node-a"]).build()
    }

    fn vips() -> Vec<IpAddr> {
        (1..=30)
            .map(|i| format!("198.18.0.{i}").parse().unwrap())
            .collect()
    }

    /// A synced core for `me`: 3 ready nodes, one pool and advertisement,
    /// 30 Services with one VIP each, all leases live as of `t0`.
    fn core(me: &str, t0: Instant) -> Core {
        core_with(me, t0, TIMING)
    }

    /// [`core`] with a takeover delay.
    fn core_delayed(me: &str, t0: Instant, takeover_delay: Duration) -> Core {
        core_with(
            me,
            t0,
            Timing {
                takeover_delay,
                ..TIMING
            },
        )
    }

    fn core_with(me: &str, t0: Instant, timing: Timing) -> Core {
        let mut c = Core::new(me, timing, None, Some("eth0".into()));
        c.apply(
            Input::Pool(Change::Resync(vec![
                fixtures::pool("p", &["198.18.0.0/24"]).build(),
            ])),
            t0,
        );
        c.apply(
            Input::Advertisement(Change::Resync(vec![fixtures::advertisement("all").build()])),
            t0,
        );
        let nodes = NODES.iter().map(|n| fixtures::node(n).build()).collect();
        c.apply(Input::Node(Change::Resync(nodes)), t0);
        let (svcs, slices) = vips()
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                (
                    service(&format!("s{i}"), &ip.to_string()),
                    slice(&format!("s{i}")),
                )
            })
            .unzip();
        c.apply(Input::Service(Change::Resync(svcs)), t0);
        c.apply(Input::Slice(Change::Resync(slices)), t0);
        let leases = NODES
            .iter()
            .map(|n| lease(n, n, "2026-01-01T00:00:00.000000Z"))
            .collect();
        c.apply(Input::Lease(Change::Resync(leases)), t0);
        c
    }

    /// Every node's lease, renewed at `hms` past midnight.
    fn all_leases(hms: &str) -> Vec<Lease> {
        NODES
            .iter()
            .map(|n| lease(n, n, &format!("2026-01-01T{hms}Z")))
            .collect()
    }

    fn owner_of(vip: IpAddr, among: &[&str]) -> String {
        election::owner(vip, among.iter().copied())
            .unwrap()
            .to_string()
    }

    #[test]
    fn nothing_before_sync_or_first_renewal() {
        let t0 = Instant::now();
        let mut c = Core::new("node-a", TIMING, None, Some("eth0".into()));
        c.apply(Input::Renewed { sent_at: t0 }, t0);
        assert!(c.decide(t0).is_empty(), "not synced");
        let mut c = core("node-a", t0);
        assert!(c.synced(t0));
        assert!(c.is_fenced(t0));
        let a = c.decide(t0);
        assert!(a.announce.is_empty() && a.status_upsert.is_empty());
    }

    #[test]
    fn three_speakers_partition_the_vips_by_rendezvous() {
        let t0 = Instant::now();
        let mut seen: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
        for me in NODES {
            let mut c = core(me, t0);
            c.apply(Input::Renewed { sent_at: t0 }, t0);
            let a = c.decide(t0);
            assert!(a.withdraw.is_empty());
            for (vip, ifaces) in a.announce {
                assert_eq!(ifaces, BTreeSet::from(["eth0".to_string()]));
                seen.entry(vip).or_default().push(me.to_string());
            }
            assert_eq!(a.assigned.len(), a.status_upsert.len());
            // Idempotent: the same inputs again change nothing.
            assert!(c.decide(t0).is_empty());
        }
        assert_eq!(seen.len(), 30);
        for (vip, who) in seen {
            assert_eq!(who, [owner_of(vip, &NODES)], "{vip}");
        }
    }

    #[test]
    fn a_fenced_speaker_rejoins_only_once_synced() {
        let t0 = Instant::now();
        let c = Core::new("node-a", TIMING, None, Some("eth0".into()));
        assert!(!c.may_renew(t0), "fenced and nothing listed");
        let mut c = core("node-a", t0);
        assert!(c.may_renew(t0), "synced");
        c.apply(Input::Renewed { sent_at: t0 }, t0);
        c.apply(Input::Lease(Change::Broken), t0);
        assert!(!c.synced(t0));
        assert!(
            c.may_renew(t0),
            "protected: keeps renewing through a watch failure"
        );
        assert!(!c.may_renew(t0 + D), "fenced and the lease watch is down");
    }

    #[test]
    fn owners_of_a_services_other_vips_are_named_as_co_owners() {
        // Two VIPs of one Service (as for dual-stack) elected to two nodes:
        // each owner's takeover must keep the other's status object.
        let t0 = Instant::now();
        let (a, b) = vips()
            .iter()
            .flat_map(|a| vips().into_iter().map(move |b| (*a, b)))
            .find(|(a, b)| owner_of(*a, &NODES) != owner_of(*b, &NODES))
            .unwrap();
        let two: Service = fixtures::service("two")
            .ingress(&[&a.to_string(), &b.to_string()])
            .build();
        let key = ServiceKey {
            namespace: "default".into(),
            name: "two".into(),
        };
        for me in [owner_of(a, &NODES), owner_of(b, &NODES)] {
            let mut c = core(&me, t0);
            c.apply(Input::Service(Change::Apply(two.clone())), t0);
            c.apply(Input::Slice(Change::Apply(slice("two"))), t0);
            c.apply(Input::Renewed { sent_at: t0 }, t0);
            let acts = c.decide(t0);
            assert!(acts.assigned.contains(&key), "{me}");
            let other: BTreeSet<String> = [owner_of(a, &NODES), owner_of(b, &NODES)]
                .into_iter()
                .filter(|n| *n != me)
                .collect();
            assert_eq!(acts.co_owners[&key], other, "{me}");
        }
    }

    #[test]
    fn fence_withdraws_at_deadline_and_resumes_on_renewal() {
        let t0 = Instant::now();
        let mut c = core("node-a", t0);
        c.apply(Input::Renewed { sent_at: t0 }, t0);
        let mine = c.decide(t0).announce.len();
        assert!(mine > 0);
        let deadline = t0 + D - MARGIN;
        assert_eq!(c.next_wakeup(t0), Some(deadline));
        let before = c.decide(deadline - Duration::from_nanos(1));
        assert!(before.withdraw.is_empty());
        let at = c.decide(deadline);
        assert_eq!(at.withdraw.len(), mine);
        assert_eq!(at.status_delete.len(), mine);
        assert!(c.announced().is_empty());
        // Peers still count us live (their expiry is later), so nobody else
        // takes our VIPs; we resume when a renewal succeeds and the lease
        // watch shows the cluster again.
        let t1 = deadline + Duration::from_millis(500);
        c.apply(Input::Renewed { sent_at: t1 }, t1);
        assert!(
            c.decide(t1).announce.is_empty(),
            "no delivery since the rejoin"
        );
        c.apply(
            Input::Lease(Change::Resync(all_leases("00:00:03.500000"))),
            t1,
        );
        assert_eq!(c.decide(t1).announce.len(), mine);
    }

    fn lan(must_fence: bool, incarnation: u64, dead: &[(&str, u64)]) -> Input {
        Input::Lan(super::super::lan::LanView {
            must_fence,
            incarnation,
            first_incarnation: 1,
            dead: dead.iter().map(|(n, i)| (n.to_string(), *i)).collect(),
            api_grace: false,
        })
    }

    #[test]
    fn a_peer_the_lan_declares_dead_loses_its_vips_at_once_and_back_on_a_newer_incarnation() {
        let t0 = Instant::now();
        let mut b = core("node-b", t0);
        b.apply(Input::Renewed { sent_at: t0 }, t0);
        b.apply(lan(false, 1, &[]), t0);
        b.decide(t0);
        let of_a: BTreeSet<IpAddr> = vips()
            .into_iter()
            .filter(|v| {
                owner_of(*v, &NODES) == "node-a" && owner_of(*v, &["node-b", "node-c"]) == "node-b"
            })
            .collect();
        assert!(!of_a.is_empty());
        // node-a's Lease is still live: only the verdict moves its VIPs.
        let t1 = t0 + Duration::from_millis(300);
        b.apply(lan(false, 1, &[("node-a", 7)]), t1);
        let taken: BTreeSet<IpAddr> = b.decide(t1).announce.into_iter().map(|(v, _)| v).collect();
        assert_eq!(
            taken, of_a,
            "taken at the verdict, no takeover delay needed"
        );
        // A Lease still showing the dead incarnation changes nothing...
        let a7 = fixtures::lease("node-a", "node-a", "2026-01-01T00:00:00.500000Z")
            .annotate(super::super::lan::INCARNATION_ANNOTATION, "7")
            .build();
        b.apply(Input::Lease(Change::Apply(a7)), t1);
        assert!(b.decide(t1).withdraw.is_empty());
        // ...a newer one makes node-a a member again.
        let a8 = fixtures::lease("node-a", "node-a", "2026-01-01T00:00:00.600000Z")
            .annotate(super::super::lan::INCARNATION_ANNOTATION, "8")
            .build();
        b.apply(Input::Lease(Change::Apply(a8)), t1);
        let back: BTreeSet<IpAddr> = b.decide(t1).withdraw.into_iter().collect();
        assert_eq!(back, of_a);
    }

    #[test]
    fn a_lan_fence_withdraws_everything_and_rejoining_waits_for_the_published_incarnation() {
        let t0 = Instant::now();
        let mut c = core("node-a", t0);
        c.apply(Input::Renewed { sent_at: t0 }, t0);
        c.apply(lan(true, 1, &[]), t0);
        assert!(c.decide(t0).announce.is_empty(), "not heard on the LAN yet");
        c.apply(lan(false, 1, &[]), t0);
        let mine = c.decide(t0).announce.len();
        assert!(mine > 0);
        let t1 = t0 + Duration::from_millis(200);
        c.apply(lan(true, 1, &[]), t1);
        assert_eq!(c.decide(t1).withdraw.len(), mine, "fenced on the LAN");
        assert!(c.is_fenced(t1));
        // A new incarnation, heard, but peers hold the old one dead until
        // our Lease shows the new one.
        let t2 = t1 + Duration::from_millis(600);
        c.apply(Input::Renewed { sent_at: t2 }, t2);
        c.apply(lan(false, 2, &[]), t2);
        assert!(c.decide(t2).announce.is_empty(), "not published yet");
        c.apply(Input::LanPublished(2), t2);
        assert!(
            c.decide(t2).announce.is_empty(),
            "no lease delivery since the rejoin"
        );
        c.apply(
            Input::Lease(Change::Resync(all_leases("00:00:01.000000"))),
            t2,
        );
        assert_eq!(c.decide(t2).announce.len(), mine);
    }

    #[test]
    fn during_an_api_outage_only_the_vips_of_a_peer_the_lan_declares_dead_move() {
        let t0 = Instant::now();
        let mut b = core("node-b", t0);
        b.apply(Input::Renewed { sent_at: t0 }, t0);
        b.apply(lan(false, 1, &[]), t0);
        let mine: BTreeSet<IpAddr> = b.decide(t0).announce.into_iter().map(|(v, _)| v).collect();
        let of_a: BTreeSet<IpAddr> = vips()
            .into_iter()
            .filter(|v| {
                owner_of(*v, &NODES) == "node-a" && owner_of(*v, &["node-b", "node-c"]) == "node-b"
            })
            .collect();
        // Every node loses the API: the lease watch fails, renewals fail.
        let t1 = t0 + Duration::from_millis(500);
        b.apply(Input::Lease(Change::Broken), t1);
        b.apply(Input::RenewFailed, t1);
        assert!(!b.synced(t1));
        let outage = |dead: &[(&str, u64)]| {
            let mut v = match lan(false, 1, dead) {
                Input::Lan(v) => v,
                _ => unreachable!(),
            };
            v.api_grace = true;
            Input::Lan(v)
        };
        b.apply(outage(&[]), t1);
        assert!(b.decide(t1).is_empty(), "nothing moves on a stale view");
        // Past our lease fence, still answering: nobody can take over.
        let t2 = t0 + D;
        assert!(b.decide(t2).withdraw.is_empty());
        // node-a crashes: the LAN says so, and only its VIPs move, to the
        // node the election picks without it.
        b.apply(outage(&[("node-a", 7)]), t2);
        let taken: BTreeSet<IpAddr> = b.decide(t2).announce.into_iter().map(|(v, _)| v).collect();
        assert_eq!(taken, of_a);
        assert!(taken.is_disjoint(&mine));
        // Without the grace (a peer reaches the API) a stale view takes nothing.
        let mut c = core("node-b", t0);
        c.apply(Input::Renewed { sent_at: t0 }, t0);
        c.apply(lan(false, 1, &[]), t0);
        c.decide(t0);
        c.apply(Input::Lease(Change::Broken), t1);
        c.apply(lan(false, 1, &[("node-a", 7)]), t1);
        assert!(c.decide(t1).announce.is_empty());
    }

    #[test]
    fn the_api_outage_grace_keeps_answering_past_the_lease_fence() {
        let t0 = Instant::now();
        let mut c = core("node-a", t0);
        c.apply(Input::Renewed { sent_at: t0 }, t0);
        c.apply(lan(false, 1, &[]), t0);
        let mine = c.decide(t0).announce.len();
        let deadline = t0 + D - MARGIN;
        let mut grace = super::super::lan::LanView {
            must_fence: false,
            incarnation: 1,
            first_incarnation: 1,
            dead: BTreeMap::new(),
            api_grace: true,
        };
        c.apply(Input::Lan(grace.clone()), deadline);
        assert!(
            c.decide(deadline).withdraw.is_empty(),
            "nobody reaches the API"
        );
        grace.api_grace = false;
        c.apply(Input::Lan(grace), deadline);
        assert_eq!(c.decide(deadline).withdraw.len(), mine, "a peer reaches it");
    }

    /// `lan` with the API-outage grace set as given.
    fn lan_grace(api_grace: bool) -> Input {
        match lan(false, 1, &[]) {
            Input::Lan(mut v) => {
                v.api_grace = api_grace;
                Input::Lan(v)
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_node_cut_from_the_api_keeps_its_peers_on_the_fast_path() {
        let t0 = Instant::now();
        let mut a = core("node-a", t0);
        a.apply(Input::Renewed { sent_at: t0 }, t0);
        let peers = |a: &Core, at| -> Vec<String> {
            a.lan_members(at).into_iter().map(|(n, _)| n).collect()
        };
        assert_eq!(peers(&a, t0), ["node-b", "node-c"]);
        // Our lease watch fails: long past a lease duration the peers still
        // renew, we just cannot see it. Dropping them from the ring would
        // leave us hearing nobody's evidence that the API is reachable.
        let t1 = t0 + Duration::from_millis(500);
        a.apply(Input::Lease(Change::Broken), t1);
        assert_eq!(peers(&a, t1 + 5 * D), ["node-b", "node-c"]);
        // A fresh list is the membership again.
        let t2 = t1 + 6 * D;
        a.apply(
            Input::Lease(Change::Resync(vec![lease(
                "node-b",
                "node-b",
                "2026-01-01T00:00:25.000000Z",
            )])),
            t2,
        );
        assert_eq!(peers(&a, t2), ["node-b"]);
    }

    #[test]
    fn an_outage_grace_that_reopens_a_closed_fence_takes_nothing_before_a_renewal() {
        let delay = Duration::from_millis(250);
        let t0 = Instant::now();
        let mut a = core_delayed("node-a", t0, delay);
        a.apply(Input::Renewed { sent_at: t0 }, t0);
        a.apply(lan_grace(false), t0);
        let mine: BTreeSet<IpAddr> = a
            .decide(t0 + delay)
            .announce
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        assert!(!mine.is_empty());
        // Cut from the API while peers are not: the lease fence closes and
        // the peers take our VIPs.
        let t1 = t0 + Duration::from_secs(1);
        a.apply(Input::Renewed { sent_at: t1 }, t1);
        a.apply(Input::Lease(Change::Broken), t1);
        let fenced = t1 + D - MARGIN;
        assert_eq!(a.decide(fenced).withdraw.len(), mine.len());
        // Then the fast path grants the outage grace (wrongly: say it lost
        // sight of the peers' evidence). The fence reopens, but that is no
        // renewal: peers still hold our VIPs and see our Lease expired.
        let graced = fenced + Duration::from_secs(1);
        a.apply(lan_grace(true), graced);
        assert!(!a.is_fenced(graced));
        assert!(a.decide(graced).is_empty());
        // The lease watch lists again before any renewal: still nothing.
        let listed = t0 + Duration::from_secs(20);
        a.apply(
            Input::Lease(Change::Resync(all_leases("00:00:20.000000"))),
            listed,
        );
        assert!(
            a.decide(listed + delay).announce.is_empty(),
            "no renewal since the fence reopened"
        );
        // A renewal starts the usual rejoin: a delivery, then the hold-off.
        let renewed = listed + delay + Duration::from_millis(10);
        a.apply(Input::Renewed { sent_at: renewed }, renewed);
        a.apply(lan_grace(false), renewed);
        a.apply(
            Input::Lease(Change::Resync(all_leases("00:00:20.300000"))),
            renewed,
        );
        assert!(a.decide(renewed).announce.is_empty(), "holding off");
        let back: BTreeSet<IpAddr> = a
            .decide(renewed + delay)
            .announce
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        assert_eq!(back, mine);
    }

    #[test]
    fn peer_expiry_moves_only_its_vips_after_full_duration() {
        let t0 = Instant::now();
        let mut b = core("node-b", t0);
        b.apply(Input::Renewed { sent_at: t0 }, t0);
        let first: BTreeSet<IpAddr> = b.decide(t0).announce.into_iter().map(|(v, _)| v).collect();
        // node-c keeps renewing, node-a goes silent; b renews too.
        let step = Duration::from_secs(1);
        let mut t = t0;
        for i in 1..=4 {
            t = t0 + step * i;
            b.apply(Input::Renewed { sent_at: t }, t);
            b.apply(
                Input::Lease(Change::Apply(lease(
                    "node-c",
                    "node-c",
                    &format!("2026-01-01T00:00:0{i}.000000Z"),
                ))),
                t,
            );
            let a = b.decide(t - Duration::from_nanos(1));
            assert!(a.announce.is_empty(), "took over before a's lease expired");
        }
        assert_eq!(t, t0 + D);
        let a = b.decide(t);
        let gained: BTreeSet<IpAddr> = a.announce.iter().map(|(v, _)| *v).collect();
        assert!(a.withdraw.is_empty());
        for vip in vips() {
            let before = owner_of(vip, &NODES);
            let after = owner_of(vip, &["node-b", "node-c"]);
            assert_eq!(first.contains(&vip), before == "node-b");
            assert_eq!(
                gained.contains(&vip),
                before == "node-a" && after == "node-b"
            );
        }
        assert!(a.election_changes > 0);
    }

    #[test]
    fn released_lease_hands_over_at_once() {
        let t0 = Instant::now();
        let mut b = core("node-b", t0);
        b.apply(Input::Renewed { sent_at: t0 }, t0);
        b.decide(t0);
        let t1 = t0 + Duration::from_millis(10);
        b.apply(
            Input::Lease(Change::Apply(lease(
                "node-a",
                "",
                "2026-01-01T00:00:00.010000Z",
            ))),
            t1,
        );
        let gained: BTreeSet<IpAddr> = b.decide(t1).announce.into_iter().map(|(v, _)| v).collect();
        let expected: BTreeSet<IpAddr> = vips()
            .into_iter()
            .filter(|v| {
                owner_of(*v, &NODES) == "node-a" && owner_of(*v, &["node-b", "node-c"]) == "node-b"
            })
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(gained, expected);
        // Deleting a lease is just as immediate.
        let mut c = core("node-c", t0);
        c.apply(Input::Renewed { sent_at: t0 }, t0);
        c.decide(t0);
        c.apply(
            Input::Lease(Change::Delete(lease("node-a", "node-a", ""))),
            t1,
        );
        assert!(!c.decide(t1).announce.is_empty());
    }

    #[test]
    fn resync_without_a_lease_removes_the_peer() {
        let t0 = Instant::now();
        let mut c = core("node-c", t0);
        c.apply(Input::Renewed { sent_at: t0 }, t0);
        c.decide(t0);
        let leases = ["node-b", "node-c"]
            .iter()
            .map(|n| lease(n, n, "2026-01-01T00:00:00.000000Z"))
            .collect();
        c.apply(Input::Lease(Change::Resync(leases)), t0);
        assert!(!c.members(t0).contains("node-a"));
        assert!(c.members(t0).contains("node-b"));
    }

    #[test]
    fn broken_lease_watch_freezes_instead_of_expiring_peers() {
        let t0 = Instant::now();
        let mut a = core("node-a", t0);
        a.apply(Input::Renewed { sent_at: t0 }, t0);
        let mine = a.decide(t0).announce.len();
        // Our watch breaks; our renewals go on. Peers look silent, but only
        // because we cannot see them.
        a.apply(Input::Lease(Change::Broken), t0);
        let t1 = t0 + Duration::from_secs(10);
        a.apply(Input::Renewed { sent_at: t1 }, t1);
        let frozen = a.decide(t1);
        assert!(
            frozen.announce.is_empty() && frozen.withdraw.is_empty(),
            "{frozen:?}"
        );
        assert_eq!(a.announced().len(), mine);
        // The resumed watch replays the peers' renewals: nothing moves.
        for n in ["node-b", "node-c"] {
            a.apply(
                Input::Lease(Change::Apply(lease(n, n, "2026-01-01T00:00:10.000000Z"))),
                t1,
            );
        }
        assert!(a.decide(t1).is_empty());
        // Other kinds' failures do not freeze the decision.
        a.apply(Input::Service(Change::Broken), t1);
        assert!(a.synced(t1));
        // A fenced speaker with a broken watch still withdraws.
        a.apply(Input::Lease(Change::Broken), t1);
        assert_eq!(a.decide(t1 + D).withdraw.len(), mine);
    }

    #[test]
    fn stop_withdraws_everything() {
        let t0 = Instant::now();
        let mut c = core("node-a", t0);
        c.apply(Input::Renewed { sent_at: t0 }, t0);
        let n = c.decide(t0).announce.len();
        c.stop();
        let a = c.decide(t0);
        assert_eq!(a.withdraw.len(), n);
        assert_eq!(a.status_delete.len(), n);
        assert!(c.announced().is_empty());
    }

    #[test]
    fn failed_announce_is_retried() {
        let t0 = Instant::now();
        let mut c = core("node-a", t0);
        c.apply(Input::Renewed { sent_at: t0 }, t0);
        let (vip, _) = c.decide(t0).announce[0].clone();
        c.announce_failed(vip);
        let again = c.decide(t0);
        assert_eq!(again.announce.len(), 1);
        assert_eq!(again.announce[0].0, vip);
    }

    #[test]
    fn unresolved_default_interface_is_reported() {
        let t0 = Instant::now();
        let mut c = core("node-a", t0);
        c.default_interface = None;
        c.apply(Input::Renewed { sent_at: t0 }, t0);
        let a = c.decide(t0);
        assert!(a.announce.is_empty());
        assert!(!a.no_interface.is_empty());
    }

    #[test]
    fn losing_eligibility_withdraws_and_deletes_status() {
        let t0 = Instant::now();
        let mut c = core("node-a", t0);
        c.apply(Input::Renewed { sent_at: t0 }, t0);
        let a = c.decide(t0);
        let (vip, _) = a.announce[0].clone();
        let svc = c.services_of(vip).into_iter().next().unwrap();
        c.apply(
            Input::Service(Change::Delete(service(&svc.name, &vip.to_string()))),
            t0,
        );
        let b = c.decide(t0);
        assert_eq!(b.withdraw, [vip]);
        assert_eq!(b.status_delete, [svc]);
        assert_eq!(b.election_changes, 1);
    }

    #[test]
    fn interfaces_published_in_leases_restrict_peers() {
        let t0 = Instant::now();
        let mut c = core("node-a", t0);
        c.apply(
            Input::Advertisement(Change::Resync(vec![
                fixtures::advertisement("all")
                    .spec(json!({"interfaces": ["eth9"]}))
                    .build(),
            ])),
            t0,
        );
        for n in ["node-b", "node-c"] {
            let mut l = lease(n, n, "2026-01-01T00:00:00.000000Z");
            l.metadata.annotations =
                Some([(INTERFACES_ANNOTATION.to_string(), "eth0".to_string())].into());
            c.apply(Input::Lease(Change::Apply(l)), t0);
        }
        c.apply(Input::Renewed { sent_at: t0 }, t0);
        // Only node-a has eth9, so it owns every VIP.
        let a = c.decide(t0);
        assert_eq!(a.announce.len(), 30);
        assert!(
            a.announce
                .iter()
                .all(|(_, i)| i == &BTreeSet::from(["eth9".to_string()]))
        );
    }

    #[test]
    fn a_link_going_down_releases_its_vips_at_once_and_peers_see_it_in_the_lease() {
        let t0 = Instant::now();
        let eth9 = || {
            Input::Advertisement(Change::Resync(vec![
                fixtures::advertisement("all")
                    .spec(json!({"interfaces": ["eth9"]}))
                    .build(),
            ]))
        };
        let with_eth9 = |n: &str, ifaces: &str| {
            let mut l = lease(n, n, "2026-01-01T00:00:00.000000Z");
            l.metadata.annotations =
                Some([(INTERFACES_ANNOTATION.to_string(), ifaces.to_string())].into());
            Input::Lease(Change::Apply(l))
        };
        let mut a = core("node-a", t0);
        a.apply(eth9(), t0);
        a.set_own_interfaces(BTreeSet::from(["eth0".into(), "eth9".into()]));
        for n in ["node-b", "node-c"] {
            a.apply(with_eth9(n, "eth0,eth9"), t0);
        }
        a.apply(Input::Renewed { sent_at: t0 }, t0);
        let mine: BTreeSet<IpAddr> = a.decide(t0).announce.into_iter().map(|(v, _)| v).collect();
        assert!(!mine.is_empty());
        // eth9's link goes down on node-a: nothing waits for a peer.
        a.set_own_interfaces(BTreeSet::from(["eth0".into()]));
        let gone: BTreeSet<IpAddr> = a.decide(t0).withdraw.into_iter().collect();
        assert_eq!(gone, mine);
        // node-b sees node-a's Lease publish only eth0 and takes node-a's
        // VIPs that the election now gives it.
        let mut b = core("node-b", t0);
        b.apply(eth9(), t0);
        b.set_own_interfaces(BTreeSet::from(["eth0".into(), "eth9".into()]));
        for n in ["node-a", "node-c"] {
            b.apply(with_eth9(n, "eth0,eth9"), t0);
        }
        b.apply(Input::Renewed { sent_at: t0 }, t0);
        b.decide(t0);
        let t1 = t0 + Duration::from_millis(100);
        b.apply(with_eth9("node-a", "eth0"), t1);
        let taken: BTreeSet<IpAddr> = b.decide(t1).announce.into_iter().map(|(v, _)| v).collect();
        let want: BTreeSet<IpAddr> = mine
            .iter()
            .copied()
            .filter(|v| owner_of(*v, &["node-b", "node-c"]) == "node-b")
            .collect();
        assert!(!want.is_empty());
        assert_eq!(taken, want);
    }

    /// A Lease for `node` renewed at `hms`, publishing that it answers
    /// for `vips` with MAC 02:00:00:00:00:0N (N from its name).
    fn publishing(node: &str, hms: &str, vips: &[IpAddr]) -> Lease {
        let n = node.bytes().last().unwrap() - b'a' + 1;
        fixtures::lease(node, node, &format!("2026-01-01T{hms}Z"))
            .annotate(ANNOUNCED_ANNOTATION, &join(vips))
            .annotate(MACS_ANNOTATION, &format!("02:00:00:00:00:0{n}"))
            .build()
    }

    /// The VIPs `node` owns when the members are `among`.
    fn owned_by(node: &str, among: &[&str]) -> Vec<IpAddr> {
        vips()
            .into_iter()
            .filter(|v| owner_of(*v, among) == node)
            .collect()
    }

    #[test]
    fn a_returning_node_takes_its_vips_when_their_holders_publish_the_withdrawal() {
        // node-a was away; node-b and node-c hold its VIPs and say so. It
        // waits for them, however long the takeover delay, and announces
        // each VIP the moment its holder's Lease stops listing it.
        let t0 = Instant::now();
        let delay = Duration::from_secs(10);
        let mut a = core_delayed("node-a", t0, delay);
        let held_by = |n: &str| owned_by(n, &["node-b", "node-c"]);
        let ours = owned_by("node-a", &NODES);
        for n in ["node-b", "node-c"] {
            a.apply(
                Input::Lease(Change::Apply(publishing(n, "00:00:01", &held_by(n)))),
                t0,
            );
        }
        a.apply(Input::Renewed { sent_at: t0 }, t0);
        assert!(a.decide(t0).announce.is_empty(), "peers still answer");
        let t1 = t0 + Duration::from_millis(15);
        let b_keeps: Vec<IpAddr> = held_by("node-b")
            .into_iter()
            .filter(|v| !ours.contains(v))
            .collect();
        a.apply(
            Input::Lease(Change::Apply(publishing("node-b", "00:00:02", &b_keeps))),
            t1,
        );
        let from_b: BTreeSet<IpAddr> = a.decide(t1).announce.into_iter().map(|(v, _)| v).collect();
        let expected: BTreeSet<IpAddr> = held_by("node-b")
            .into_iter()
            .filter(|v| ours.contains(v))
            .collect();
        assert!(
            !expected.is_empty(),
            "the fixture moves VIPs back from node-b"
        );
        assert_eq!(from_b, expected, "at once, long before the delay");
        let c_keeps: Vec<IpAddr> = held_by("node-c")
            .into_iter()
            .filter(|v| !ours.contains(v))
            .collect();
        a.apply(
            Input::Lease(Change::Apply(publishing("node-c", "00:00:02", &c_keeps))),
            t1,
        );
        a.decide(t1);
        assert_eq!(a.announced().len(), ours.len());
    }

    #[test]
    fn a_claim_by_a_dead_peer_is_ignored_and_an_unpublished_one_waits_the_delay() {
        let t0 = Instant::now();
        let delay = Duration::from_millis(300);
        let ours = owned_by("node-a", &NODES);
        // node-b lists everything but its Lease is gone: it is not a member.
        let mut a = core_delayed("node-a", t0, delay);
        a.apply(
            Input::Lease(Change::Apply(publishing("node-c", "00:00:01", &[]))),
            t0,
        );
        a.apply(
            Input::Lease(Change::Delete(lease("node-b", "node-b", ""))),
            t0,
        );
        a.apply(Input::Renewed { sent_at: t0 }, t0);
        // Unowned VIPs still wait the rejoin delay: a peer's listing may lag
        // its dataplane by a write.
        assert!(a.decide(t0).announce.is_empty());
        a.decide(t0 + delay);
        assert_eq!(
            a.announced().len(),
            owned_by("node-a", &["node-a", "node-c"]).len()
        );
        assert!(a.announced().len() >= ours.len());
    }

    #[test]
    fn a_cordoned_owner_hands_over_when_its_list_drops_the_vips_else_after_the_delay() {
        let t0 = Instant::now();
        let timing = Timing {
            takeover_delay: Duration::from_secs(2),
            ..TIMING
        };
        let from_a = owned_by("node-a", &NODES);
        let to_b: BTreeSet<IpAddr> = from_a
            .iter()
            .copied()
            .filter(|v| owner_of(*v, &["node-b", "node-c"]) == "node-b")
            .collect();
        let cordoned: Node = fixtures::node("node-a")
            .spec(json!({"unschedulable": true}))
            .build();
        let start = |t: Instant| {
            let mut b = core_with("node-b", t0, timing);
            b.apply(
                Input::Lease(Change::Apply(publishing("node-a", "00:00:01", &from_a))),
                t0,
            );
            b.apply(Input::Renewed { sent_at: t0 }, t0);
            b.decide(t0 + Duration::from_secs(2));
            let had = b.announced().len();
            (b, had, t)
        };
        let announced = |b: &mut Core, t: Instant| -> BTreeSet<IpAddr> {
            b.decide(t).announce.into_iter().map(|(v, _)| v).collect()
        };
        // The Node change first: node-a still answers, so node-b waits.
        let (mut b, had, t1) = start(t0 + Duration::from_millis(2100));
        b.apply(Input::Node(Change::Apply(cordoned.clone())), t1);
        assert!(announced(&mut b, t1).is_empty(), "node-a still answers");
        let t2 = t1 + Duration::from_millis(12);
        b.apply(
            Input::Lease(Change::Apply(publishing("node-a", "00:00:02", &[]))),
            t2,
        );
        assert_eq!(announced(&mut b, t2), to_b);
        assert_eq!(b.announced().len(), had + to_b.len());
        // node-a's list without them first: node-b never saw a listing go
        // away, and a list may lag its dataplane by a write, so it falls
        // back to the takeover delay.
        let (mut b, _, t1) = start(t0 + Duration::from_millis(2100));
        b.apply(
            Input::Lease(Change::Apply(publishing("node-a", "00:00:02", &[]))),
            t1,
        );
        assert!(
            announced(&mut b, t1).is_empty(),
            "node-a still the owner here"
        );
        // Keep everyone live across the delay.
        b.apply(Input::Renewed { sent_at: t1 }, t1);
        b.apply(
            Input::Lease(Change::Apply(publishing("node-c", "00:00:02", &[]))),
            t1,
        );
        b.apply(Input::Node(Change::Apply(cordoned)), t1);
        assert!(announced(&mut b, t1).is_empty());
        assert_eq!(announced(&mut b, t1 + timing.takeover_delay), to_b);
    }

    #[test]
    fn non_revertive_vips_stay_on_their_holder_for_every_speaker_and_after_restarts() {
        let t0 = Instant::now();
        let sticky: crate::api::L2Advertisement = fixtures::advertisement("all")
            .spec(json!({"nonRevertive": true}))
            .build();
        let held_by = |n: &str| owned_by(n, &["node-b", "node-c"]);
        let ours = owned_by("node-a", &NODES);
        // Any speaker, fresh (a restart) or not, reads the same Leases.
        for me in NODES {
            let mut c = core(me, t0);
            c.apply(
                Input::Advertisement(Change::Resync(vec![sticky.clone()])),
                t0,
            );
            for n in ["node-b", "node-c"].into_iter().filter(|n| *n != me) {
                c.apply(
                    Input::Lease(Change::Apply(publishing(n, "00:00:01", &held_by(n)))),
                    t0,
                );
            }
            if me != "node-a" {
                // As the holder it had announced them before node-a returned.
                let mut lone = core(me, t0);
                lone.apply(
                    Input::Advertisement(Change::Resync(vec![sticky.clone()])),
                    t0,
                );
                c = lone;
                c.apply(
                    Input::Lease(Change::Delete(lease("node-a", "node-a", ""))),
                    t0,
                );
                let other = if me == "node-b" { "node-c" } else { "node-b" };
                c.apply(
                    Input::Lease(Change::Apply(publishing(
                        other,
                        "00:00:01",
                        &held_by(other),
                    ))),
                    t0,
                );
                c.apply(Input::Renewed { sent_at: t0 }, t0);
                c.decide(t0);
                assert_eq!(
                    c.announced().len(),
                    held_by(me).len(),
                    "{me} holds its share"
                );
                c.apply(
                    Input::Lease(Change::Apply(lease(
                        "node-a",
                        "node-a",
                        "2026-01-01T00:00:05Z",
                    ))),
                    t0,
                );
            }
            c.apply(Input::Renewed { sent_at: t0 }, t0);
            let t1 = t0 + Duration::from_secs(1);
            let a = c.decide(t1);
            assert!(a.withdraw.is_empty(), "{me}: nothing moves back to node-a");
            if me == "node-a" {
                assert!(c.announced().is_empty(), "node-a takes nothing back");
            } else {
                assert_eq!(
                    c.announced().len(),
                    held_by(me).len(),
                    "{me} keeps its share"
                );
            }
        }
        assert!(!ours.is_empty());
        // Revertive (the default): node-a's VIPs go back to it.
        let mut b = core("node-b", t0);
        b.apply(
            Input::Lease(Change::Delete(lease("node-a", "node-a", ""))),
            t0,
        );
        b.apply(Input::Renewed { sent_at: t0 }, t0);
        b.decide(t0);
        b.apply(
            Input::Lease(Change::Apply(lease(
                "node-a",
                "node-a",
                "2026-01-01T00:00:05Z",
            ))),
            t0,
        );
        let back = b.decide(t0 + Duration::from_secs(1)).withdraw.len();
        assert!(
            back > 0
                && back
                    == held_by("node-b")
                        .iter()
                        .filter(|v| ours.contains(v))
                        .count()
        );
    }

    #[test]
    fn a_refused_shared_service_is_reported_once_by_one_speaker() {
        let t0 = Instant::now();
        let selective: crate::api::L2Advertisement = fixtures::advertisement("all")
            .spec(json!({"serviceSelectors": [{"matchLabels": {"app": "web"}}]}))
            .build();
        let shared: Service = fixtures::service("s0")
            .ingress(&["198.18.0.1"])
            .labels(json!({"app": "web"}))
            .annotate("metallb.io/allow-shared-ip", "k")
            .build();
        let mut reporters = Vec::new();
        for me in NODES {
            let mut c = core(me, t0);
            c.apply(
                Input::Advertisement(Change::Resync(vec![selective.clone()])),
                t0,
            );
            c.apply(Input::Service(Change::Apply(shared.clone())), t0);
            c.apply(Input::Renewed { sent_at: t0 }, t0);
            let first = c.decide(t0);
            assert!(
                first
                    .announce
                    .iter()
                    .all(|(v, _)| v.to_string() != "198.18.0.1")
            );
            if !first.refused.is_empty() {
                assert_eq!(first.refused.len(), 1);
                reporters.push(me);
            }
            assert!(c.decide(t0).refused.is_empty(), "reported once");
        }
        assert_eq!(reporters.len(), 1, "one speaker reports: {reporters:?}");
    }

    #[test]
    fn frames_from_the_peer_of_a_hand_over_are_echoes_only_within_the_window() {
        let t0 = Instant::now();
        let from_a = owned_by("node-a", &NODES);
        let vip = *from_a
            .iter()
            .find(|v| owner_of(**v, &["node-b", "node-c"]) == "node-b")
            .unwrap();
        let mut b = core("node-b", t0);
        b.apply(
            Input::Lease(Change::Apply(publishing("node-a", "00:00:01", &from_a))),
            t0,
        );
        b.apply(
            Input::Lease(Change::Apply(publishing("node-c", "00:00:01", &[]))),
            t0,
        );
        b.apply(Input::Renewed { sent_at: t0 }, t0);
        b.decide(t0);
        let mac_a: crate::l2::Mac = "02:00:00:00:00:01".parse().unwrap();
        let mac_c: crate::l2::Mac = "02:00:00:00:00:03".parse().unwrap();
        let stranger: crate::l2::Mac = "02:99:00:00:00:01".parse().unwrap();
        assert_eq!(b.handover_echo(vip, mac_a, t0), None, "no hand-over yet");
        // node-a leaves (excluded): the VIP moves from it to us.
        let t1 = t0 + Duration::from_secs(1);
        let excluded: Node = fixtures::node("node-a")
            .labels(json!({EXCLUDE_LB_LABEL: ""}))
            .build();
        b.apply(Input::Node(Change::Apply(excluded)), t1);
        b.apply(
            Input::Lease(Change::Apply(publishing("node-a", "00:00:02", &[]))),
            t1,
        );
        assert!(b.decide(t1).announce.iter().any(|(v, _)| *v == vip));
        let t2 = t1 + Duration::from_millis(40);
        assert_eq!(b.handover_echo(vip, mac_a, t2), Some("node-a"));
        assert_eq!(b.handover_echo(vip, mac_c, t2), None, "another speaker");
        assert_eq!(b.handover_echo(vip, stranger, t2), None, "not a speaker");
        assert_eq!(b.handover_echo(vip, mac_a, t1 + HANDOVER_ECHO * 2), None);
    }

    #[test]
    fn rejoining_node_waits_before_taking_from_live_peers() {
        let t0 = Instant::now();
        let delay = Duration::from_millis(300);
        let mut a = core_delayed("node-a", t0, delay);
        // node-b and node-c are live; node-a's own lease is stale, so it joins now.
        a.apply(Input::Renewed { sent_at: t0 }, t0);
        assert!(a.decide(t0).announce.is_empty());
        assert_eq!(a.next_wakeup(t0), Some(t0 + delay));
        let mine = vips()
            .into_iter()
            .filter(|v| owner_of(*v, &NODES) == "node-a")
            .count();
        assert_eq!(a.decide(t0 + delay).announce.len(), mine);
        // With no live peer in view it still waits: peers starting at the
        // same moment may not be in the view yet, and would think the same.
        let mut lone = core_delayed("node-a", t0, delay);
        for n in ["node-b", "node-c"] {
            lone.apply(Input::Lease(Change::Delete(lease(n, n, ""))), t0);
        }
        lone.apply(Input::Renewed { sent_at: t0 }, t0);
        assert!(lone.decide(t0).announce.is_empty());
        assert_eq!(lone.decide(t0 + delay).announce.len(), 30);
    }

    #[test]
    fn a_silent_lease_watch_turns_stale_before_any_peer_expires_in_it() {
        let t0 = Instant::now();
        let mut c = core("node-a", t0);
        c.apply(Input::Renewed { sent_at: t0 }, t0);
        let mine = c.decide(t0).announce.len();
        // Nothing arrives any more: the watch's connection was cut, and a
        // cut watch does not fail, it only goes quiet.
        let stale = t0 + D - MARGIN;
        assert!(c.synced(stale - Duration::from_nanos(1)));
        assert!(!c.synced(stale), "silent for the fence window");
        assert_eq!(c.next_wakeup(t0), Some(stale));
        assert!(
            c.members(stale)
                .is_superset(&BTreeSet::from(["node-b".into(), "node-c".into()])),
            "stale before any peer could expire in our view"
        );
        // Renewals still succeed, so we keep what we have, but the expired
        // peers' VIPs are not taken on a view that shows nothing.
        let t1 = t0 + Duration::from_secs(10);
        c.apply(Input::Renewed { sent_at: t1 }, t1);
        assert!(c.decide(t1).is_empty());
        assert_eq!(c.announced().len(), mine);
        // The watch delivers again, one peer at a time: every peer counts
        // as just seen, so none expires on the strength of the gap.
        c.apply(
            Input::Lease(Change::Apply(lease(
                "node-b",
                "node-b",
                "2026-01-01T00:00:10.000000Z",
            ))),
            t1,
        );
        assert!(c.synced(t1));
        assert!(c.members(t1).contains("node-c"));
        assert!(c.decide(t1).is_empty());
    }

    /// The exact partition-heal sequence: node-a is cut from the API server
    /// (its renewals fail, its lease watch goes quiet), node-b takes its
    /// VIPs, and the cut heals.
    fn cut_and_heal(delay: Duration) -> (Core, Instant, Instant, BTreeSet<IpAddr>) {
        let t0 = Instant::now();
        let mut a = core_delayed("node-a", t0, delay);
        a.apply(Input::Renewed { sent_at: t0 }, t0);
        let mine: BTreeSet<IpAddr> = a
            .decide(t0 + delay)
            .announce
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        assert!(!mine.is_empty() && mine.len() < 30);
        // The cut: the last renewal and lease delivery are at t1.
        let t1 = t0 + Duration::from_secs(1);
        a.apply(Input::Renewed { sent_at: t1 }, t1);
        a.apply(
            Input::Lease(Change::Resync(all_leases("00:00:01.000000"))),
            t1,
        );
        let fenced = t1 + D - MARGIN;
        assert_eq!(a.decide(fenced).withdraw.len(), mine.len());
        assert!(!a.synced(fenced), "the silent watch is stale");
        assert!(
            !a.may_renew(fenced),
            "fenced on a stale view: rejoin once it is fresh"
        );
        // Long after the cut, node-b and node-c look expired in the quiet
        // watch's view, although they renew on: node-b now answers for
        // node-a's VIPs.
        let healed = t0 + Duration::from_secs(20);
        assert!(a.decide(healed).is_empty());
        (a, t0, healed, mine)
    }

    #[test]
    fn a_healed_owner_renewing_before_its_watch_recovers_takes_nothing() {
        let delay = Duration::from_millis(250);
        let (mut a, _, healed, mine) = cut_and_heal(delay);
        // Its first renewal after the heal gets through before its lease
        // watch has shown anything new.
        a.apply(Input::Renewed { sent_at: healed }, healed);
        assert!(a.decide(healed).announce.is_empty(), "peers only look dead");
        assert!(a.decide(healed + delay).announce.is_empty());
        // The watch delivers a fresh list: node-b and node-c are live, so
        // node-a takes back its own VIPs only, and no earlier than the
        // takeover delay after its renewal (which has passed here).
        let fresh = healed + Duration::from_secs(1);
        a.apply(
            Input::Lease(Change::Resync(all_leases("00:00:21.000000"))),
            fresh,
        );
        let back: BTreeSet<IpAddr> = a
            .decide(fresh)
            .announce
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        assert_eq!(back, mine);
    }

    #[test]
    fn a_healed_owner_waits_the_takeover_delay_after_a_fresh_list() {
        let delay = Duration::from_millis(250);
        let (mut a, _, healed, mine) = cut_and_heal(delay);
        // The restarted lease watch lists first; then the renewal succeeds.
        a.apply(
            Input::Lease(Change::Resync(all_leases("00:00:20.000000"))),
            healed,
        );
        assert!(a.may_renew(healed));
        let rejoin = healed + Duration::from_millis(10);
        a.apply(Input::Renewed { sent_at: rejoin }, rejoin);
        assert!(a.decide(rejoin).announce.is_empty());
        // Our own renewal shows in the watch: fresh, but node-b may not
        // have seen it yet.
        let seen = rejoin + Duration::from_millis(5);
        a.apply(
            Input::Lease(Change::Apply(lease(
                "node-a",
                "node-a",
                "2026-01-01T00:00:20.010000Z",
            ))),
            seen,
        );
        assert!(a.decide(seen).announce.is_empty());
        assert_eq!(a.next_wakeup(seen), Some(rejoin + delay));
        assert!(
            a.decide(rejoin + delay - Duration::from_nanos(1))
                .announce
                .is_empty()
        );
        let back: BTreeSet<IpAddr> = a
            .decide(rejoin + delay)
            .announce
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        assert_eq!(back, mine);
    }

    #[test]
    fn a_vip_moved_from_a_live_peer_waits_for_its_withdrawal() {
        // Excluding node-a (a live member) moves its VIPs: their new owners
        // announce only after the takeover delay, when node-a has seen the
        // same change and withdrawn. A dead owner's VIPs move at once.
        let t0 = Instant::now();
        let delay = Duration::from_millis(300);
        let timing = Timing {
            takeover_delay: delay,
            ..TIMING
        };
        let ready = |n: &str, excluded: bool| -> Node {
            let labels = if excluded {
                json!({EXCLUDE_LB_LABEL: ""})
            } else {
                json!({})
            };
            fixtures::node(n).labels(labels).build()
        };
        let from_a: Vec<IpAddr> = vips()
            .into_iter()
            .filter(|v| owner_of(*v, &NODES) == "node-a")
            .collect();
        let to_b = from_a
            .iter()
            .filter(|v| owner_of(**v, &["node-b", "node-c"]) == "node-b")
            .count();
        assert!(to_b > 0, "the fixture moves some VIPs to node-b");
        let mut b = core_with("node-b", t0, timing);
        b.apply(Input::Renewed { sent_at: t0 }, t0);
        // Past the delay of joining itself.
        let before = b.decide(t0 + delay).announce.len();
        assert!(before > 0);
        let t1 = t0 + delay + Duration::from_millis(10);
        b.apply(Input::Node(Change::Apply(ready("node-a", true))), t1);
        assert!(b.decide(t1).announce.is_empty(), "node-a may still answer");
        assert_eq!(b.next_wakeup(t1), Some(t1 + delay));
        assert!(b.decide(t1 + delay / 2).announce.is_empty());
        assert_eq!(b.decide(t1 + delay).announce.len(), to_b);
        // Back to node-a: node-b withdraws at once, node-a would wait.
        let t2 = t1 + delay * 2;
        b.apply(Input::Node(Change::Apply(ready("node-a", false))), t2);
        assert_eq!(b.decide(t2).withdraw.len(), to_b);
        assert_eq!(b.announced().len(), before);

        // node-a dead (lease gone): nothing to wait for.
        let mut b = core_with("node-b", t0, timing);
        b.apply(Input::Renewed { sent_at: t0 }, t0);
        b.decide(t0 + delay);
        b.apply(
            Input::Lease(Change::Delete(lease("node-a", "node-a", ""))),
            t1,
        );
        assert_eq!(b.decide(t1).announce.len(), to_b);
    }

    proptest! {
        // Each case replays up to 30 s of a 3-node cluster; 500 keep the run short.
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Whatever the renewal outcomes and watch delays, node-a has stopped
        /// announcing before node-b considers it dead: the two never announce
        /// the same VIP at the same instant, as long as watch delays stay
        /// below the takeover delay.
        #[test]
        fn fenced_before_peer_takes_over(
            outcomes in prop::collection::vec((any::<bool>(), 0u64..900), 1..20),
            probe_ms in prop::collection::vec(0u64..30_000, 20),
        ) {
            let t0 = Instant::now();
            let mut a = core_with("node-a", t0, Timing { takeover_delay: Duration::from_secs(1), ..TIMING });
            let mut b = core("node-b", t0);
            // node-c is gone; node-b always renews.
            let mut events: Vec<(Instant, u8, Option<String>)> = Vec::new();
            for (i, (ok, delay)) in outcomes.iter().enumerate() {
                let sent = t0 + Duration::from_secs(i as u64);
                if *ok {
                    // a's renewal succeeds: a learns at sent + delay/2, b observes at sent + delay.
                    events.push((sent + Duration::from_millis(delay / 2), 0, None));
                    events.push((sent + Duration::from_millis(*delay), 1, Some(format!("2026-01-01T00:00:{i:02}.000000Z"))));
                }
            }
            for ms in &probe_ms {
                events.push((t0 + Duration::from_millis(*ms), 2, None));
            }
            events.sort_by_key(|e| (e.0, e.1));
            let renewals: Vec<Instant> = outcomes.iter().enumerate()
                .filter(|(_, (ok, _))| *ok)
                .map(|(i, _)| t0 + Duration::from_secs(i as u64))
                .collect();
            let mut learned = 0usize;
            let check = |a: &Core, b: &Core, at: Instant| -> Result<(), TestCaseError> {
                for vip in a.announced().keys() {
                    prop_assert!(!b.announced().contains_key(vip), "{vip} announced twice at {:?}", at - t0);
                }
                Ok(())
            };
            let mut now = t0;
            for (at, kind, token) in events {
                // Like the speaker loop: decide at every wakeup either core asks for.
                while let Some(w) = [a.next_wakeup(now), b.next_wakeup(now)].into_iter().flatten().min().filter(|w| *w < at) {
                    now = w;
                    a.decide(now);
                    b.decide(now);
                    check(&a, &b, now)?;
                }
                now = at;
                match kind {
                    0 => {
                        a.apply(Input::Renewed { sent_at: renewals[learned] }, at);
                        learned += 1;
                    }
                    1 => b.apply(Input::Lease(Change::Apply(lease("node-a", "node-a", token.as_deref().unwrap_or_default()))), at),
                    _ => {}
                }
                b.apply(Input::Renewed { sent_at: at }, at);
                let since = at - t0;
                let stamp = format!("2026-01-01T00:{:02}:{:02}.{:06}Z", since.as_secs() / 60, since.as_secs() % 60, since.subsec_micros());
                // node-b's renewal shows in both watches (b sees its own lease too).
                b.apply(Input::Lease(Change::Apply(lease("node-b", "node-b", &stamp))), at);
                a.apply(Input::Lease(Change::Apply(lease("node-b", "node-b", &stamp))), at);
                a.decide(at);
                b.decide(at);
                check(&a, &b, at)?;
            }
        }
    }
}
