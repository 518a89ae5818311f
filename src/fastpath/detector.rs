//! The fast-path failure detector: which peers the LAN says are dead (and
//! since when), and whether this node must stop answering.
//!
//! # Protocol
//!
//! Every `heartbeat_interval`, a node X sends a heartbeat to each of its
//! `k` *witnesses*: its successors on a ring of the lease-live members
//! ordered by [`ring_key`](super::ring_key). Each heartbeat names the whole
//! witness set, with the incarnation X last heard from each. A witness acks
//! every heartbeat addressed to it. So each node sends and receives about
//! `2k` small packets per interval, whatever the cluster size.
//!
//! A witness that has not heard X for `detect_after` (or longer if X asks)
//! *suspects* X: finally, for that incarnation of X. It never acks that
//! incarnation again, and broadcasts a report naming the last heartbeat it
//! heard and the witness set that heartbeat declared. Any node declares X
//! dead (a *verdict*) once it holds reports from **every** witness of the
//! set declared by the newest heartbeat any report names, provided X marked
//! that set binding. So one crashed witness cannot make X look dead, and
//! the crash of X needs only its `k` witnesses to agree.
//!
//! # The fence
//!
//! X counts, from the **send** time of each heartbeat, and stops answering
//! `fence_after` after the newest heartbeat that a witness of the declared
//! set acknowledged (for each set that could still be a verdict's basis; see
//! [`Detector::status`]). A reporting witness heard that heartbeat no
//! earlier than it was sent, and reports only `detect_after` later; with
//! `fence_after + margin < detect_after` X has stopped before any verdict on
//! it can exist. A fenced node stays silent for `rejoin_quiet` (so its
//! witnesses do reach a verdict), then starts a new incarnation.
//!
//! The rule covers one-way loss both ways: if X's packets are lost, no acks
//! come back; if its inbound is lost, acks do not arrive either. Either way
//! X fences first. A frozen X finds its deadline passed the moment it runs
//! again, before it can send or answer anything ([`Detector::handle`] and
//! [`Detector::tick`] check the fence first).
//!
//! # API outage
//!
//! Heartbeats and acks carry the age of the sender's freshest evidence that
//! *some* node reaches the API server (0 when it does itself), relayed
//! along the ring in both directions. A node cut from the API need not
//! fence at its lease deadline when that evidence is older than the time it
//! takes to cross the ring ([`Config::api_quiet`]): then no peer can be
//! expiring its Lease and taking its VIPs. See [`Detector::api_grace`].
//!
//! Pure: every input carries `now`; outputs are values. This module must
//! never read a clock, do I/O, or decide elections itself: the speaker
//! combines [`Detector::dead`] with lease liveness.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::ring_key;
use super::wire::{AckRepr, Body, HeartbeatRepr, MAX_WITNESSES, MessageRepr, SuspectRepr, Witness};

/// How long a dead mark is kept for a node that left the membership, in
/// case its Lease reappears unchanged (a watch hiccup): the mark must still
/// hold the fenced incarnation out.
const DEAD_RETENTION: Duration = Duration::from_secs(600);

/// Timers and sizes of the fast path. One value for the whole cluster is
/// the intent, but safety does not depend on it: a node tells its witnesses
/// how long they must wait before suspecting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How often a node heartbeats each witness. Sets traffic (`2k` sent and
    /// `2k` received per interval) and the granularity of everything else.
    pub heartbeat_interval: Duration,
    /// `T_fence`: a node stops answering this long after the send time of its
    /// newest acknowledged heartbeat.
    pub fence_after: Duration,
    /// `T_detect`: a witness suspects a node after this much silence. Must
    /// exceed `fence_after` by at least one interval (the margin for clock
    /// rates and for the speaker acting on the fence).
    pub detect_after: Duration,
    /// `k`: witnesses per node.
    pub witnesses: usize,
    /// Fewest witnesses for a binding set. Below it a node is never declared
    /// dead on the fast path and never fences for it: with one witness, a
    /// peer's crash and one's own isolation look the same, so a two-node
    /// cluster relies on the Lease alone.
    pub min_witnesses: usize,
    /// How many times a suspicion report is broadcast, one interval apart
    /// (reports are not acknowledged; repeats ride out a lost frame).
    pub report_repeats: u32,
    /// Silence after a fence before a new incarnation starts. Must cover
    /// `detect_after` plus the repeats, so the witnesses reach their verdict
    /// instead of hearing the new incarnation first.
    pub rejoin_quiet: Duration,
}

impl Default for Config {
    /// 50 ms heartbeats to 3 witnesses; fence at 150 ms (three lost rounds),
    /// detect at 250 ms: a crash is seen in 200–250 ms, plus one LAN hop.
    fn default() -> Config {
        Config {
            heartbeat_interval: Duration::from_millis(50),
            fence_after: Duration::from_millis(150),
            detect_after: Duration::from_millis(250),
            witnesses: 3,
            min_witnesses: 2,
            report_repeats: 3,
            rejoin_quiet: Duration::from_millis(500),
        }
    }
}

/// A [`Config`] that would break the fence's inequality or the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A zero interval would spin.
    #[error("fast-path heartbeat interval must be positive")]
    Interval,
    /// `fence_after` below two intervals: one lost round would fence.
    #[error("fence_after ({0:?}) must be at least two heartbeat intervals")]
    FenceTooShort(Duration),
    /// `detect_after` not at least one interval above `fence_after`.
    #[error(
        "detect_after ({detect:?}) must exceed fence_after ({fence:?}) by at least one interval"
    )]
    NoMargin {
        /// `fence_after`.
        fence: Duration,
        /// `detect_after`.
        detect: Duration,
    },
    /// `detect_after` must fit the wire's u32 milliseconds.
    #[error("detect_after too long")]
    DetectTooLong,
    /// `min_witnesses` below 2, or `witnesses` below it or above the wire limit.
    #[error("need 2 <= min_witnesses <= witnesses <= {MAX_WITNESSES}")]
    Witnesses,
    /// No report would be sent.
    #[error("report_repeats must be at least 1")]
    Repeats,
    /// The quiet period would let witnesses hear the next incarnation before
    /// reaching their verdict on the fenced one.
    #[error("rejoin_quiet must cover detect_after plus the report repeats")]
    QuietTooShort,
}

impl Config {
    /// Checks the relations the safety argument relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let i = self.heartbeat_interval;
        if i.is_zero() {
            return Err(ConfigError::Interval);
        }
        if self.fence_after < i * 2 {
            return Err(ConfigError::FenceTooShort(self.fence_after));
        }
        if self.detect_after < self.fence_after + i {
            return Err(ConfigError::NoMargin {
                fence: self.fence_after,
                detect: self.detect_after,
            });
        }
        if u32::try_from(self.detect_after.as_millis()).is_err() {
            return Err(ConfigError::DetectTooLong);
        }
        if self.min_witnesses < 2
            || self.witnesses < self.min_witnesses
            || self.witnesses > MAX_WITNESSES
        {
            return Err(ConfigError::Witnesses);
        }
        if self.report_repeats == 0 {
            return Err(ConfigError::Repeats);
        }
        if self.rejoin_quiet < self.detect_after + i * self.report_repeats {
            return Err(ConfigError::QuietTooShort);
        }
        Ok(())
    }

    /// How old API evidence may be, in a cluster of `members` nodes, and
    /// still mean that some node may reach the API now.
    ///
    /// Evidence moves along the ring up to `k` positions per hop (forward on
    /// heartbeats, backward on acks) and each hop waits at most one interval,
    /// so it reaches every node within `⌈(n−1)/2k⌉` intervals; `detect_after`
    /// is slack for lost packets. It grows with the cluster, which is why
    /// the outage grace only applies where this is shorter than the lease
    /// fence window (up to about 320 nodes with the defaults).
    pub fn api_quiet(&self, members: usize) -> Duration {
        let span = 2 * self.witnesses.max(1);
        let hops = members.saturating_sub(1).div_ceil(span);
        self.heartbeat_interval * u32::try_from(hops).unwrap_or(u32::MAX) + self.detect_after
    }
}

/// Where an outgoing message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// One peer, by node name (the transport knows its address).
    Peer(String),
    /// Every speaker on the segment.
    Broadcast,
}

/// A message the transport must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Where to.
    pub to: Destination,
    /// What; emit it with the cluster's [`Keyring`](super::Keyring).
    pub message: MessageRepr,
}

/// Why an authenticated message was dropped. Counted by
/// [`Rejected::metric_label`], never logged per packet above `trace!`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Our own broadcast, looped back.
    #[error("own message")]
    FromSelf,
    /// Addressed to another node (or a unicast type sent as broadcast).
    #[error("not addressed to us")]
    NotForUs,
    /// Not newer than the last message accepted from its sender.
    #[error("replayed or reordered")]
    Replay,
    /// From an incarnation older than the sender's Lease shows.
    #[error("stale incarnation")]
    StaleIncarnation,
    /// An ack for a heartbeat we did not send (to that peer, in this incarnation).
    #[error("unexpected ack")]
    UnexpectedAck,
    /// We are fenced: we neither ack nor take acks until we rejoin.
    #[error("fenced")]
    Fenced,
    /// From an incarnation we hold dead: it must be fenced, so we do not
    /// help it believe otherwise.
    #[error("sender declared dead")]
    DeclaredDead,
    /// A message type this version does not know.
    #[error("unknown message type {0}")]
    UnknownType(u8),
}

impl Rejected {
    /// A bounded metric label.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Rejected::FromSelf => "own",
            Rejected::NotForUs => "not_for_us",
            Rejected::Replay => "replay",
            Rejected::StaleIncarnation => "stale_incarnation",
            Rejected::UnexpectedAck => "unexpected_ack",
            Rejected::Fenced => "fenced",
            Rejected::DeclaredDead => "declared_dead",
            Rejected::UnknownType(_) => "unknown_type",
        }
    }
}

/// A peer the fast path declared dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadPeer {
    /// The incarnation declared dead; a Lease showing a newer one clears it.
    pub incarnation: u64,
    /// Local time of the verdict.
    pub since: Instant,
}

/// What the fast path says about this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelfStatus {
    /// Stop answering every VIP now.
    pub must_fence: bool,
    /// The instant from which we must not answer, as far as known now (it
    /// moves later as acks arrive). Hand it to the dataplane, which checks
    /// it per packet, so a frozen process that wakes up cannot answer even
    /// once before the decision loop runs.
    pub fence_deadline: Option<Instant>,
    /// Our current incarnation.
    pub incarnation: u64,
    /// The newest incarnation that has been heard on the LAN (acked). The
    /// speaker publishes it in its Lease; peers clear dead marks older than
    /// it. `None` until the first ack.
    pub confirmed_incarnation: Option<u64>,
    /// When the last LAN fence took effect (for logs and the bench).
    pub fenced_since: Option<Instant>,
}

/// The witness set declared over a run of heartbeats (an *instance*: the
/// same set declared again later is a new instance).
#[derive(Debug, Clone)]
struct Instance {
    /// The set, in ring order, with the incarnations we know.
    witnesses: Vec<Witness>,
    /// Whether this set may become a verdict's basis (and so constrains our fence).
    binding: bool,
    /// First heartbeat seq that declared it; `None` until one was sent.
    first_seq: Option<u64>,
    /// Last heartbeat seq that declared it.
    last_seq: u64,
}

/// A heartbeat we sent, kept while an ack to it could still matter.
#[derive(Debug, Clone)]
struct Sent {
    /// Send time: the fence counts from here, never from the ack's arrival.
    at: Instant,
    /// Addressee: only it can ack this heartbeat.
    to: String,
}

/// A node we witness (its heartbeats name us with our incarnation).
#[derive(Debug, Clone)]
struct Watch {
    /// Its incarnation we watch.
    incarnation: u64,
    /// Local time we last heard it.
    last_heard: Instant,
    /// Seq of that heartbeat.
    last_seq: u64,
    /// That heartbeat's binding flag.
    binding: bool,
    /// That heartbeat's witness set.
    witnesses: Vec<Witness>,
    /// Silence we wait for: the longer of ours and what it asked for.
    detect_after: Duration,
    /// Final: once set we never ack this incarnation again.
    suspected: bool,
}

/// A suspicion report as received.
#[derive(Debug, Clone)]
struct Report {
    last_seq: u64,
    binding: bool,
    witnesses: Vec<Witness>,
}

/// Reports about one subject's newest incarnation, by (reporter, its incarnation).
#[derive(Debug, Clone)]
struct Reports {
    incarnation: u64,
    by: BTreeMap<(String, u64), Report>,
}

/// A report still to be broadcast.
#[derive(Debug, Clone)]
struct Pending {
    body: SuspectRepr,
    remaining: u32,
    next_at: Instant,
}

/// Where this node is in its life on the LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Heartbeating.
    Active,
    /// Fenced and silent until `until`, then a new incarnation.
    Quiet { until: Instant },
    /// Left the cluster gracefully; sends nothing more.
    Left,
}

/// The fast-path failure detector of one node. See the module docs.
#[derive(Debug, Clone)]
pub struct Detector {
    /// Timers and sizes.
    config: Config,
    /// Our node name.
    name: String,
    /// Grows on every rejoin; the replay key's high part.
    incarnation: u64,
    /// Last sequence number used in this incarnation.
    seq: u64,
    /// Active, quiet after a fence, or left.
    phase: Phase,
    /// Whether this incarnation was ever acked.
    confirmed: bool,
    /// Newest incarnation ever acked (what the Lease should show).
    confirmed_incarnation: Option<u64>,
    /// When the last fence took effect.
    fenced_since: Option<Instant>,
    /// Lease-live peers (not us) with the incarnation their Lease publishes.
    members: BTreeMap<String, Option<u64>>,
    /// Those peers sorted by ring key, cached (hashing per tick is waste).
    ring: Vec<(u64, String)>,
    /// Witness-set instances that may still be a verdict's basis; last = current.
    instances: Vec<Instance>,
    /// Heartbeats by seq, while relevant to the fence.
    sent: BTreeMap<u64, Sent>,
    /// Highest heartbeat seq acked per witness incarnation.
    acked: BTreeMap<(String, u64), u64>,
    /// When the next heartbeat round is due.
    next_heartbeat: Instant,
    /// Newest (incarnation, seq) accepted per sender: the replay window.
    senders: BTreeMap<String, (u64, u64)>,
    /// Nodes we witness, and finished suspicions (kept for finality).
    watches: BTreeMap<String, Watch>,
    /// Suspicion reports by subject.
    reports: BTreeMap<String, Reports>,
    /// Reports still to broadcast.
    pending: Vec<Pending>,
    /// Fast-path verdicts by node.
    dead: BTreeMap<String, DeadPeer>,
    /// Whether our own Lease renewals succeed.
    api_ok: bool,
    /// Freshest local instant at which some peer was known to reach the API.
    api_evidence_at: Option<Instant>,
}

impl Detector {
    /// A detector for node `name`, starting at `incarnation` (0 is taken as
    /// 1: 0 means "unknown" on the wire). The incarnation must exceed every
    /// earlier one of this node, across restarts: the speaker uses the wall
    /// clock in milliseconds at start. `config` must be valid.
    pub fn new(
        config: Config,
        name: impl Into<String>,
        incarnation: u64,
        now: Instant,
    ) -> Detector {
        Detector {
            config,
            name: name.into(),
            incarnation: incarnation.max(1),
            seq: 0,
            phase: Phase::Active,
            confirmed: false,
            confirmed_incarnation: None,
            fenced_since: None,
            members: BTreeMap::new(),
            ring: Vec::new(),
            instances: Vec::new(),
            sent: BTreeMap::new(),
            acked: BTreeMap::new(),
            next_heartbeat: now,
            senders: BTreeMap::new(),
            watches: BTreeMap::new(),
            reports: BTreeMap::new(),
            pending: Vec::new(),
            dead: BTreeMap::new(),
            api_ok: false,
            api_evidence_at: None,
        }
    }

    /// Our node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Replaces the membership with the lease-live nodes (our own name is
    /// ignored), each with the fast-path incarnation its Lease publishes.
    ///
    /// A published incarnation newer than a dead mark clears the mark: the
    /// node was heard again on the LAN and said so through the API. Older
    /// incarnations' messages and reports are ignored from then on.
    pub fn set_members<I, S>(&mut self, members: I, now: Instant)
    where
        I: IntoIterator<Item = (S, Option<u64>)>,
        S: Into<String>,
    {
        self.members = members
            .into_iter()
            .map(|(n, inc)| (n.into(), inc))
            .filter(|(n, _)| *n != self.name)
            .collect();
        let mut ring: Vec<(u64, String)> = self
            .members
            .keys()
            .map(|n| (ring_key(n), n.clone()))
            .collect();
        ring.sort();
        self.ring = ring;
        let members = &self.members;
        let floor = |n: &str| members.get(n).copied().flatten();
        self.dead.retain(|n, d| match members.get(n) {
            Some(published) => published.is_none_or(|p| p <= d.incarnation),
            None => now.saturating_duration_since(d.since) < DEAD_RETENTION,
        });
        self.reports
            .retain(|n, r| floor(n).is_none_or(|f| f <= r.incarnation));
        self.watches
            .retain(|n, w| floor(n).is_none_or(|f| f <= w.incarnation));
    }

    /// Reports whether our own Lease renewals currently succeed.
    pub fn set_api_ok(&mut self, ok: bool) {
        self.api_ok = ok;
    }

    /// Handles one authenticated message. Returns what to send in reply
    /// (an ack to a heartbeat), or why it was dropped.
    pub fn handle(&mut self, msg: MessageRepr, now: Instant) -> Result<Vec<Outgoing>, Rejected> {
        self.advance(now);
        if msg.sender == self.name {
            return Err(Rejected::FromSelf);
        }
        let broadcast_type = matches!(msg.body, Body::Suspect(_) | Body::Unknown(_));
        match &msg.recipient {
            Some(r) if *r != self.name => return Err(Rejected::NotForUs),
            None if !broadcast_type => return Err(Rejected::NotForUs),
            _ => {}
        }
        if self
            .lease_incarnation(&msg.sender)
            .is_some_and(|f| msg.incarnation < f)
        {
            return Err(Rejected::StaleIncarnation);
        }
        let key = (msg.incarnation, msg.seq);
        match self.senders.get_mut(&msg.sender) {
            Some(last) if key <= *last => return Err(Rejected::Replay),
            Some(last) => *last = key,
            None => {
                self.senders.insert(msg.sender.clone(), key);
            }
        }
        match msg.body {
            Body::Heartbeat(h) => self.on_heartbeat(msg.sender, msg.incarnation, msg.seq, h, now),
            Body::Ack(a) => self
                .on_ack(msg.sender, msg.incarnation, a, now)
                .map(|()| Vec::new()),
            Body::Suspect(s) => {
                self.record_report(msg.sender, msg.incarnation, s, now);
                Ok(Vec::new())
            }
            Body::Unknown(t) => Err(Rejected::UnknownType(t)),
        }
    }

    /// Runs the timers: fence, rejoin, suspicions, the heartbeat round and
    /// report repeats. Call it at [`Detector::next_wakeup`] (earlier is
    /// harmless).
    pub fn tick(&mut self, now: Instant) -> Vec<Outgoing> {
        self.advance(now);
        let mut out = Vec::new();
        if self.phase != Phase::Active {
            return out;
        }
        self.check_suspicions(now);
        if self.phase != Phase::Active {
            return out;
        }
        if now >= self.next_heartbeat {
            self.heartbeat_round(now, &mut out);
            self.next_heartbeat = now + self.config.heartbeat_interval;
        }
        self.flush_reports(now, &mut out);
        out
    }

    /// Leaves gracefully (SIGTERM, after withdrawing): tells the witnesses to
    /// stop watching us, so no report follows. Sends nothing afterwards.
    pub fn leave(&mut self, now: Instant) -> Vec<Outgoing> {
        self.advance(now);
        let mut out = Vec::new();
        if self.phase == Phase::Active {
            let recipients = self.recipients(&[]);
            for to in recipients {
                let body = Body::Heartbeat(HeartbeatRepr {
                    binding: false,
                    detect_after_ms: self.detect_after_ms(),
                    api_age_ms: self.api_age_ms(now),
                    witnesses: Vec::new(),
                });
                let message = self.message(Some(to.clone()), body);
                out.push(Outgoing {
                    to: Destination::Peer(to),
                    message,
                });
            }
        }
        self.phase = Phase::Left;
        out
    }

    /// When [`Detector::tick`] must run next; `None` after [`Detector::leave`].
    pub fn next_wakeup(&self) -> Option<Instant> {
        match self.phase {
            Phase::Left => None,
            Phase::Quiet { until } => Some(until),
            Phase::Active => {
                let suspicions = self
                    .watches
                    .values()
                    .filter(|w| !w.suspected)
                    .map(|w| w.last_heard + w.detect_after);
                let reports = self.pending.iter().map(|p| p.next_at);
                std::iter::once(self.next_heartbeat)
                    .chain(self.fence_deadline())
                    .chain(suspicions)
                    .chain(reports)
                    .min()
            }
        }
    }

    /// Whether we must fence, and the deadline to hand to the dataplane.
    pub fn status(&self, now: Instant) -> SelfStatus {
        let deadline = match self.phase {
            Phase::Active => self.fence_deadline(),
            Phase::Quiet { .. } | Phase::Left => None,
        };
        // Until the LAN has answered this incarnation, we cannot know we are
        // heard; that matters once we have enough witnesses to be judged.
        let unconfirmed = !self.confirmed
            && self
                .instances
                .last()
                .is_some_and(|i| i.witnesses.len() >= self.config.min_witnesses);
        SelfStatus {
            must_fence: self.phase != Phase::Active
                || unconfirmed
                || deadline.is_some_and(|d| now >= d),
            fence_deadline: deadline,
            incarnation: self.incarnation,
            confirmed_incarnation: self.confirmed_incarnation,
            fenced_since: self.fenced_since,
        }
    }

    /// Lease-live peers the fast path holds dead, with the local time of
    /// the verdict: the election treats them as gone, as of `since`.
    pub fn dead(&self) -> BTreeMap<String, Instant> {
        self.dead
            .iter()
            .filter(|(n, _)| self.members.contains_key(*n))
            .map(|(n, d)| (n.clone(), d.since))
            .collect()
    }

    /// The dead mark on `node`, member or not.
    pub fn dead_peer(&self, node: &str) -> Option<DeadPeer> {
        self.dead.get(node).copied()
    }

    /// How old our freshest evidence is that some *peer* reaches the API
    /// (`None`: never had any).
    pub fn api_evidence_age(&self, now: Instant) -> Option<Duration> {
        self.api_evidence_at
            .map(|at| now.saturating_duration_since(at))
    }

    /// Whether this node, cut from the API, may keep answering past its
    /// lease fence deadline (the outage rule): only when no peer can
    /// be expiring its Lease, i.e. no evidence of a peer reaching the API
    /// has crossed the ring for [`Config::api_quiet`], and only when that
    /// bound is below `lease_fence_window` (`lease_duration − fence_margin`);
    /// otherwise a peer whose API came back could take over before the
    /// evidence arrives. False while our own API works (the lease decides)
    /// or the LAN fence holds.
    pub fn api_grace(&self, now: Instant, lease_fence_window: Duration) -> bool {
        let quiet = self.config.api_quiet(self.members.len() + 1);
        !self.api_ok
            && quiet < lease_fence_window
            && !self.status(now).must_fence
            && self.api_evidence_age(now).is_none_or(|age| age > quiet)
    }

    // ----- internals -----

    /// Applies the clock: latches the fence, ends the quiet period. Every
    /// entry point calls it first, so nothing stale is sent after a freeze.
    fn advance(&mut self, now: Instant) {
        match self.phase {
            Phase::Active => {
                if let Some(deadline) = self.fence_deadline().filter(|d| now >= *d) {
                    self.fence(deadline, now);
                }
            }
            Phase::Quiet { until } if now >= until => self.rejoin(now),
            Phase::Quiet { .. } | Phase::Left => {}
        }
    }

    fn fence(&mut self, since: Instant, now: Instant) {
        self.fenced_since = Some(since);
        self.phase = Phase::Quiet {
            until: now + self.config.rejoin_quiet,
        };
        self.pending.clear();
    }

    /// A new incarnation: a fresh identity on the LAN, so nothing said about
    /// (or by) the fenced one carries over.
    fn rejoin(&mut self, now: Instant) {
        self.incarnation += 1;
        self.seq = 0;
        self.phase = Phase::Active;
        self.confirmed = false;
        self.instances.clear();
        self.sent.clear();
        self.acked.clear();
        self.watches.clear();
        self.pending.clear();
        self.next_heartbeat = now;
    }

    /// Every dead mark, members or not (the simulation watches verdicts).
    #[cfg(test)]
    pub(crate) fn dead_marks(&self) -> &BTreeMap<String, DeadPeer> {
        &self.dead
    }

    fn lease_incarnation(&self, node: &str) -> Option<u64> {
        self.members.get(node).copied().flatten()
    }

    /// The incarnation of `node` we know best: its Lease or its messages.
    fn known_incarnation(&self, node: &str) -> u64 {
        let heard = self.senders.get(node).map_or(0, |(inc, _)| *inc);
        self.lease_incarnation(node).unwrap_or(0).max(heard)
    }

    /// Our next `k` successors on the ring among members not held dead.
    fn choose_witnesses(&self) -> Vec<Witness> {
        let live: Vec<&(u64, String)> = self
            .ring
            .iter()
            .filter(|(_, n)| !self.dead.contains_key(n))
            .collect();
        let me = (ring_key(&self.name), self.name.clone());
        let start = live.partition_point(|e| **e < me);
        (0..live.len().min(self.config.witnesses))
            .map(|i| {
                let name = &live[(start + i) % live.len()].1;
                Witness {
                    name: name.clone(),
                    incarnation: self.known_incarnation(name),
                }
            })
            .collect()
    }

    /// Heartbeat recipients: the current set plus the members of older sets
    /// still open, so they learn they were released.
    fn recipients(&self, current: &[Witness]) -> BTreeSet<String> {
        current
            .iter()
            .chain(self.instances.iter().flat_map(|i| i.witnesses.iter()))
            .map(|w| w.name.clone())
            .collect()
    }

    fn heartbeat_round(&mut self, now: Instant, out: &mut Vec<Outgoing>) {
        let witnesses = self.choose_witnesses();
        // Binding only once every witness has acked this incarnation of us
        // under the incarnation we declare for it. Before that a declared
        // incarnation may be stale (the witness rejoined meanwhile) and its
        // old self could never ack again to close the set, so we would fence
        // for nothing; a set that is not binding cannot become a verdict's
        // basis, so waiting one round is always safe.
        let binding = witnesses.len() >= self.config.min_witnesses
            && witnesses
                .iter()
                .all(|w| self.acked.contains_key(&(w.name.clone(), w.incarnation)));
        if self
            .instances
            .last()
            .is_none_or(|i| i.witnesses != witnesses || i.binding != binding)
        {
            self.instances.push(Instance {
                witnesses: witnesses.clone(),
                binding,
                first_seq: None,
                last_seq: 0,
            });
        }
        let api_age_ms = self.api_age_ms(now);
        for to in self.recipients(&witnesses) {
            let body = Body::Heartbeat(HeartbeatRepr {
                binding,
                detect_after_ms: self.detect_after_ms(),
                api_age_ms,
                witnesses: witnesses.clone(),
            });
            let message = self.message(Some(to.clone()), body);
            let seq = message.seq;
            self.sent.insert(
                seq,
                Sent {
                    at: now,
                    to: to.clone(),
                },
            );
            if let Some(current) = self.instances.last_mut() {
                current.first_seq.get_or_insert(seq);
                current.last_seq = seq;
            }
            out.push(Outgoing {
                to: Destination::Peer(to),
                message,
            });
        }
        self.retire_instances();
        self.prune_sent(now);
    }

    /// The highest heartbeat seq acked by any witness of `instance`.
    fn max_ack(&self, instance: &Instance) -> Option<u64> {
        instance
            .witnesses
            .iter()
            .filter_map(|w| self.acked.get(&(w.name.clone(), w.incarnation)).copied())
            .max()
    }

    /// The earliest heartbeat of `instance` that could still be a verdict's
    /// basis, or `None` when none can.
    ///
    /// A verdict on basis `q` needs a report from every witness of the set
    /// declared at `q`, each about a heartbeat no newer than `q` (the basis
    /// is the newest heartbeat any report names). A witness that acked a
    /// later heartbeat can only report that or newer (its suspicion is
    /// final, so it suspected after acking), so its ack rules out every
    /// earlier basis declaring it. An old set is closed for good once one of
    /// its witnesses acked a heartbeat of a later set.
    fn earliest_open_basis(&self, instance: &Instance) -> Option<u64> {
        if !instance.binding {
            return None;
        }
        let first = instance.first_seq?;
        match self.max_ack(instance) {
            Some(m) if m > instance.last_seq => None,
            Some(m) if m >= first => Some(m),
            _ => Some(first),
        }
    }

    /// When we must stop: `fence_after` past the send time of the earliest
    /// heartbeat that could still be a verdict's basis.
    fn fence_deadline(&self) -> Option<Instant> {
        self.instances
            .iter()
            .filter_map(|i| self.earliest_open_basis(i))
            .filter_map(|seq| {
                // `prune_sent` keeps every open basis, so the lookup always
                // succeeds; were it to fail, the oldest send time we hold is
                // the conservative stand-in (it can only fence earlier).
                let at = match self.sent.get(&seq) {
                    Some(s) => s.at,
                    None => self.sent.values().map(|s| s.at).min()?,
                };
                Some(at.checked_add(self.config.fence_after).unwrap_or(at))
            })
            .min()
    }

    fn retire_instances(&mut self) {
        let Some(current) = self.instances.len().checked_sub(1) else {
            return;
        };
        let keep: Vec<bool> = self
            .instances
            .iter()
            .enumerate()
            .map(|(idx, i)| idx == current || self.earliest_open_basis(i).is_some())
            .collect();
        let mut keep = keep.into_iter();
        self.instances.retain(|_| keep.next().unwrap_or(true));
    }

    /// Forgets heartbeats older than every open basis, once an ack to them
    /// could no longer arrive in time to matter.
    fn prune_sent(&mut self, now: Instant) {
        let floor = self
            .instances
            .iter()
            .filter_map(|i| self.earliest_open_basis(i))
            .min()
            .unwrap_or(u64::MAX);
        let horizon = self.config.detect_after;
        self.sent
            .retain(|seq, s| *seq >= floor || now.saturating_duration_since(s.at) < horizon);
    }

    fn on_heartbeat(
        &mut self,
        sender: String,
        incarnation: u64,
        seq: u64,
        h: HeartbeatRepr,
        now: Instant,
    ) -> Result<Vec<Outgoing>, Rejected> {
        if self.phase != Phase::Active {
            return Err(Rejected::Fenced);
        }
        if self
            .dead
            .get(&sender)
            .is_some_and(|d| d.incarnation >= incarnation)
        {
            return Err(Rejected::DeclaredDead);
        }
        self.note_api_evidence(h.api_age_ms, now);
        if self
            .watches
            .get(&sender)
            .is_some_and(|w| w.incarnation == incarnation && w.suspected)
        {
            // Final: acking now could let it count on us after we reported.
            return Ok(Vec::new());
        }
        let me = Witness {
            name: self.name.clone(),
            incarnation: self.incarnation,
        };
        if h.binding && h.witnesses.contains(&me) {
            let asked = Duration::from_millis(u64::from(h.detect_after_ms));
            self.watches.insert(
                sender.clone(),
                Watch {
                    incarnation,
                    last_heard: now,
                    last_seq: seq,
                    binding: h.binding,
                    witnesses: h.witnesses,
                    detect_after: self.config.detect_after.max(asked),
                    suspected: false,
                },
            );
        } else {
            // Released (or never ours): it no longer counts on us.
            self.watches.remove(&sender);
        }
        let body = Body::Ack(AckRepr {
            acked_incarnation: incarnation,
            acked_seq: seq,
            api_age_ms: self.api_age_ms(now),
        });
        let message = self.message(Some(sender.clone()), body);
        Ok(vec![Outgoing {
            to: Destination::Peer(sender),
            message,
        }])
    }

    fn on_ack(
        &mut self,
        sender: String,
        incarnation: u64,
        a: AckRepr,
        now: Instant,
    ) -> Result<(), Rejected> {
        if self.phase != Phase::Active {
            return Err(Rejected::Fenced);
        }
        if a.acked_incarnation != self.incarnation
            || self.sent.get(&a.acked_seq).is_none_or(|s| s.to != sender)
        {
            return Err(Rejected::UnexpectedAck);
        }
        self.note_api_evidence(a.api_age_ms, now);
        let best = self.acked.entry((sender, incarnation)).or_insert(0);
        *best = (*best).max(a.acked_seq);
        self.confirmed = true;
        self.confirmed_incarnation = Some(self.incarnation);
        Ok(())
    }

    /// Turns long silences into final suspicions and reports.
    fn check_suspicions(&mut self, now: Instant) {
        let due: Vec<String> = self
            .watches
            .iter()
            .filter(|(_, w)| !w.suspected && now >= w.last_heard + w.detect_after)
            .map(|(n, _)| n.clone())
            .collect();
        for subject in due {
            let Some(w) = self.watches.get_mut(&subject) else {
                continue;
            };
            w.suspected = true;
            let body = SuspectRepr {
                subject: subject.clone(),
                subject_incarnation: w.incarnation,
                last_seq: w.last_seq,
                binding: w.binding,
                witnesses: w.witnesses.clone(),
            };
            // A node that left the membership (released Lease, lost its
            // leave message) needs no verdict: keep the suspicion for
            // finality, broadcast nothing.
            if self.members.contains_key(&subject) {
                self.pending.push(Pending {
                    body: body.clone(),
                    remaining: self.config.report_repeats,
                    next_at: now,
                });
            }
            let (me, inc) = (self.name.clone(), self.incarnation);
            self.record_report(me, inc, body, now);
        }
    }

    fn flush_reports(&mut self, now: Instant, out: &mut Vec<Outgoing>) {
        let mut pending = std::mem::take(&mut self.pending);
        for p in pending.iter_mut().filter(|p| p.next_at <= now) {
            let message = self.message(None, Body::Suspect(p.body.clone()));
            out.push(Outgoing {
                to: Destination::Broadcast,
                message,
            });
            p.remaining = p.remaining.saturating_sub(1);
            p.next_at = now + self.config.heartbeat_interval;
        }
        pending.retain(|p| p.remaining > 0);
        self.pending = pending;
    }

    /// Files a report and declares the subject dead when a binding basis
    /// is complete.
    fn record_report(&mut self, reporter: String, reporter_inc: u64, s: SuspectRepr, now: Instant) {
        let floor = if s.subject == self.name {
            Some(self.incarnation)
        } else {
            self.lease_incarnation(&s.subject)
        };
        if floor.is_some_and(|f| s.subject_incarnation < f)
            || self
                .dead
                .get(&s.subject)
                .is_some_and(|d| d.incarnation >= s.subject_incarnation)
        {
            return;
        }
        let entry = self
            .reports
            .entry(s.subject.clone())
            .or_insert_with(|| Reports {
                incarnation: s.subject_incarnation,
                by: BTreeMap::new(),
            });
        if s.subject_incarnation < entry.incarnation {
            return;
        }
        if s.subject_incarnation > entry.incarnation {
            entry.incarnation = s.subject_incarnation;
            entry.by.clear();
        }
        entry.by.insert(
            (reporter, reporter_inc),
            Report {
                last_seq: s.last_seq,
                binding: s.binding,
                witnesses: s.witnesses,
            },
        );
        let complete = entry
            .by
            .values()
            .max_by_key(|r| r.last_seq)
            .is_some_and(|basis| {
                basis.binding
                    && !basis.witnesses.is_empty()
                    && basis
                        .witnesses
                        .iter()
                        .all(|w| entry.by.contains_key(&(w.name.clone(), w.incarnation)))
            });
        if !complete {
            return;
        }
        let incarnation = entry.incarnation;
        self.reports.remove(&s.subject);
        if s.subject == self.name {
            // Our witnesses agree we are dead; by the fence inequality we
            // should already have stopped. Stop now whatever our clock says.
            if self.phase == Phase::Active {
                self.fence(now, now);
            }
            return;
        }
        self.dead.insert(
            s.subject,
            DeadPeer {
                incarnation,
                since: now,
            },
        );
    }

    fn note_api_evidence(&mut self, age_ms: Option<u32>, now: Instant) {
        let Some(at) = age_ms.and_then(|a| now.checked_sub(Duration::from_millis(u64::from(a))))
        else {
            return;
        };
        if self.api_evidence_at.is_none_or(|old| at > old) {
            self.api_evidence_at = Some(at);
        }
    }

    /// The API evidence age we relay: 0 when our own API works.
    fn api_age_ms(&self, now: Instant) -> Option<u32> {
        if self.api_ok {
            return Some(0);
        }
        self.api_evidence_age(now)
            .map(|age| u32::try_from(age.as_millis()).unwrap_or(u32::MAX - 1))
    }

    fn detect_after_ms(&self) -> u32 {
        u32::try_from(self.config.detect_after.as_millis()).unwrap_or(u32::MAX)
    }

    fn message(&mut self, recipient: Option<String>, body: Body) -> MessageRepr {
        self.seq += 1;
        MessageRepr {
            sender: self.name.clone(),
            incarnation: self.incarnation,
            seq: self.seq,
            recipient,
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn det(name: &str, members: &[&str], t0: Instant) -> Detector {
        let mut d = Detector::new(Config::default(), name, 1, t0);
        d.set_members(members.iter().map(|m| (*m, None)), t0);
        d
    }

    fn peers(out: &[Outgoing]) -> Vec<String> {
        out.iter()
            .filter_map(|o| match &o.to {
                Destination::Peer(p) => Some(p.clone()),
                Destination::Broadcast => None,
            })
            .collect()
    }

    fn heartbeat(out: &Outgoing) -> &HeartbeatRepr {
        match &out.message.body {
            Body::Heartbeat(h) => h,
            other => panic!("not a heartbeat: {other:?}"),
        }
    }

    /// Delivers `out` to the detectors it addresses and returns their replies.
    fn deliver(nodes: &mut [Detector], out: Vec<Outgoing>, now: Instant) -> Vec<Outgoing> {
        let mut replies = Vec::new();
        for o in out {
            for d in nodes.iter_mut() {
                let addressed = match &o.to {
                    Destination::Peer(p) => p == d.name(),
                    Destination::Broadcast => d.name() != o.message.sender,
                };
                if addressed {
                    replies.extend(d.handle(o.message.clone(), now).unwrap_or_default());
                }
            }
        }
        replies
    }

    fn suspect(
        reporter: &str,
        seq: u64,
        subject: &str,
        last_seq: u64,
        basis: &[&str],
    ) -> MessageRepr {
        MessageRepr {
            sender: reporter.into(),
            incarnation: 1,
            seq,
            recipient: None,
            body: Body::Suspect(SuspectRepr {
                subject: subject.into(),
                subject_incarnation: 1,
                last_seq,
                binding: true,
                witnesses: basis
                    .iter()
                    .map(|n| Witness {
                        name: (*n).into(),
                        incarnation: 1,
                    })
                    .collect(),
            }),
        }
    }

    const ALL: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

    #[test]
    fn default_config_is_valid_and_broken_relations_are_refused() {
        let ok = Config::default();
        assert_eq!(ok.validate(), Ok(()));
        let no_margin = Config {
            detect_after: ok.fence_after + ms(10),
            ..ok.clone()
        };
        assert!(matches!(
            no_margin.validate(),
            Err(ConfigError::NoMargin { .. })
        ));
        let one_witness = Config {
            min_witnesses: 1,
            ..ok.clone()
        };
        assert_eq!(one_witness.validate(), Err(ConfigError::Witnesses));
        let short_quiet = Config {
            rejoin_quiet: ok.detect_after,
            ..ok.clone()
        };
        assert_eq!(short_quiet.validate(), Err(ConfigError::QuietTooShort));
        let hasty = Config {
            fence_after: ok.heartbeat_interval,
            ..ok
        };
        assert!(matches!(
            hasty.validate(),
            Err(ConfigError::FenceTooShort(_))
        ));
    }

    #[test]
    fn heartbeats_go_to_the_k_ring_successors_and_bind_once_each_has_acked() {
        let t0 = Instant::now();
        let mut a = det("a", &ALL, t0);
        let mut ring: Vec<(u64, &str)> = ALL.iter().map(|n| (ring_key(n), *n)).collect();
        ring.sort();
        let at = ring.iter().position(|(_, n)| *n == "a").unwrap_or(0);
        let successors: BTreeSet<String> = (1..=3)
            .map(|i| ring[(at + i) % ring.len()].1.to_string())
            .collect();

        let first = a.tick(t0);
        assert_eq!(
            peers(&first).into_iter().collect::<BTreeSet<_>>(),
            successors
        );
        assert!(!heartbeat(&first[0]).binding, "incarnations not acked yet");
        assert!(a.status(t0).must_fence, "not heard yet");

        let mut others: Vec<Detector> = ALL[1..].iter().map(|n| det(n, &ALL, t0)).collect();
        let acks = deliver(&mut others, first, t0 + ms(1));
        assert_eq!(acks.len(), 3);
        deliver(std::slice::from_mut(&mut a), acks, t0 + ms(2));
        let st = a.status(t0 + ms(2));
        assert!(!st.must_fence);
        assert_eq!(st.confirmed_incarnation, Some(1));

        let second = a.tick(t0 + ms(50));
        assert_eq!(peers(&second).len(), 3);
        assert!(heartbeat(&second[0]).binding);
        assert!(a.tick(t0 + ms(60)).is_empty(), "one round per interval");
    }

    #[test]
    fn the_fence_counts_from_the_send_time_not_from_the_ack() {
        let t0 = Instant::now();
        let mut a = det("a", &ALL, t0);
        let mut others: Vec<Detector> = ALL[1..].iter().map(|n| det(n, &ALL, t0)).collect();
        // Round 1 teaches each side the other's incarnation.
        let acks = deliver(&mut others, a.tick(t0), t0);
        deliver(std::slice::from_mut(&mut a), acks, t0);
        // Round 2 is binding; its acks take 100 ms to come back (a slow
        // path, or a frozen witness).
        let out = a.tick(t0 + ms(50));
        assert!(heartbeat(&out[0]).binding);
        let acks = deliver(&mut others, out, t0 + ms(150));
        deliver(std::slice::from_mut(&mut a), acks, t0 + ms(150));
        // Counted from the send time (t0 + 50 ms), not the arrival.
        assert_eq!(a.status(t0 + ms(150)).fence_deadline, Some(t0 + ms(200)));
        assert!(!a.status(t0 + ms(199)).must_fence);
        assert!(a.status(t0 + ms(200)).must_fence);
        // From then on it is silent: no heartbeats, no acks.
        assert!(a.tick(t0 + ms(200)).is_empty());
        assert_eq!(a.status(t0 + ms(200)).fenced_since, Some(t0 + ms(200)));
        let hb = others[0].tick(t0 + ms(201));
        for o in hb {
            if o.to == Destination::Peer("a".into()) {
                assert_eq!(a.handle(o.message, t0 + ms(202)), Err(Rejected::Fenced));
            }
        }
        // After the quiet period: a new incarnation, heartbeating again.
        let quiet_end = t0 + ms(200) + Config::default().rejoin_quiet;
        assert!(a.tick(quiet_end - ms(1)).is_empty());
        let again = a.tick(quiet_end);
        assert!(!again.is_empty());
        assert!(again.iter().all(|o| o.message.incarnation == 2));
        assert!(a.status(quiet_end).must_fence, "unconfirmed until acked");
    }

    #[test]
    fn a_witness_suspects_after_detect_after_and_never_acks_that_incarnation_again() {
        let t0 = Instant::now();
        let mut a = det("a", &ALL, t0);
        let mut others: Vec<Detector> = ALL[1..].iter().map(|n| det(n, &ALL, t0)).collect();
        let acks = deliver(&mut others, a.tick(t0), t0);
        deliver(std::slice::from_mut(&mut a), acks, t0);
        let binding = a.tick(t0 + ms(50));
        let w = peers(&binding)[0].clone();
        let acks = deliver(&mut others, binding, t0 + ms(50));
        assert_eq!(acks.len(), 3);
        let witness = others.iter_mut().find(|d| d.name() == w).expect("witness");
        // Silence from a: the witness reports exactly detect_after later.
        let before = witness.tick(t0 + ms(299));
        assert!(before.iter().all(|o| o.to != Destination::Broadcast));
        let report = witness.tick(t0 + ms(300));
        let reports: Vec<&Outgoing> = report
            .iter()
            .filter(|o| o.to == Destination::Broadcast)
            .collect();
        assert_eq!(reports.len(), 1);
        match &reports[0].message.body {
            Body::Suspect(s) => {
                assert_eq!((s.subject.as_str(), s.subject_incarnation), ("a", 1));
                assert!(s.binding && s.witnesses.len() == 3);
            }
            other => panic!("{other:?}"),
        }
        // A late heartbeat of the same incarnation gets no ack.
        let late = MessageRepr {
            sender: "a".into(),
            incarnation: 1,
            seq: 1000,
            recipient: Some(w.clone()),
            body: Body::Heartbeat(HeartbeatRepr {
                binding: true,
                detect_after_ms: 250,
                api_age_ms: None,
                witnesses: Vec::new(),
            }),
        };
        assert_eq!(witness.handle(late, t0 + ms(301)), Ok(Vec::new()));
        // The report is repeated, one interval apart, report_repeats times in all.
        let repeats: usize = (1..6)
            .map(|i| {
                witness
                    .tick(t0 + ms(300 + 50 * i))
                    .iter()
                    .filter(|o| o.to == Destination::Broadcast)
                    .count()
            })
            .sum();
        assert_eq!(repeats, 2);
    }

    #[test]
    fn a_witness_waits_as_long_as_the_sender_asks() {
        let t0 = Instant::now();
        let mut w = det("w", &["w", "x"], t0);
        let hb = MessageRepr {
            sender: "x".into(),
            incarnation: 1,
            seq: 1,
            recipient: Some("w".into()),
            body: Body::Heartbeat(HeartbeatRepr {
                binding: true,
                detect_after_ms: 900,
                api_age_ms: None,
                witnesses: vec![
                    Witness {
                        name: "w".into(),
                        incarnation: 1,
                    },
                    Witness {
                        name: "v".into(),
                        incarnation: 1,
                    },
                ],
            }),
        };
        assert_eq!(w.handle(hb, t0).map(|o| o.len()), Ok(1));
        assert_eq!(
            w.next_wakeup().map(|t| t >= t0 + ms(900)),
            Some(false),
            "own heartbeats first"
        );
        assert!(
            w.tick(t0 + ms(899))
                .iter()
                .all(|o| o.to != Destination::Broadcast)
        );
        assert!(
            w.tick(t0 + ms(900))
                .iter()
                .any(|o| o.to == Destination::Broadcast)
        );
    }

    #[test]
    fn a_released_witness_stops_watching() {
        let t0 = Instant::now();
        let mut w = det("w", &["w", "x"], t0);
        let hb = |seq: u64, witnesses: Vec<Witness>| MessageRepr {
            sender: "x".into(),
            incarnation: 1,
            seq,
            recipient: Some("w".into()),
            body: Body::Heartbeat(HeartbeatRepr {
                binding: true,
                detect_after_ms: 250,
                api_age_ms: None,
                witnesses,
            }),
        };
        let me = Witness {
            name: "w".into(),
            incarnation: 1,
        };
        let other = Witness {
            name: "v".into(),
            incarnation: 1,
        };
        w.handle(hb(1, vec![me, other.clone()]), t0).expect("armed");
        // The next heartbeat names a set without us: we were released.
        assert_eq!(
            w.handle(hb(2, vec![other]), t0 + ms(10)).map(|o| o.len()),
            Ok(1)
        );
        assert!(
            (0..20).all(|i| w
                .tick(t0 + ms(50 * i))
                .iter()
                .all(|o| o.to != Destination::Broadcast)),
            "a released witness reported"
        );
    }

    #[test]
    fn a_verdict_needs_every_witness_of_the_newest_basis() {
        let t0 = Instant::now();
        let mut z = det("z", &["z", "x", "w1", "w2", "w3"], t0);
        z.handle(suspect("w1", 1, "x", 10, &["w1", "w2"]), t0)
            .expect("filed");
        assert!(z.dead().is_empty(), "one witness is not a verdict");
        // w3 heard a later heartbeat, declaring {w2, w3}: that is the basis now.
        z.handle(suspect("w3", 1, "x", 12, &["w2", "w3"]), t0)
            .expect("filed");
        assert!(z.dead().is_empty());
        z.handle(suspect("w2", 1, "x", 9, &["w1", "w2"]), t0 + ms(5))
            .expect("filed");
        assert_eq!(z.dead().get("x"), Some(&(t0 + ms(5))));
        assert_eq!(z.dead_peer("x").map(|d| d.incarnation), Some(1));

        // A set the subject did not mark binding never yields a verdict.
        let mut y = det("y", &["y", "x", "w1", "w2"], t0);
        for (r, seq) in [("w1", 1), ("w2", 1)] {
            let mut m = suspect(r, seq, "x", 10, &["w1", "w2"]);
            if let Body::Suspect(s) = &mut m.body {
                s.binding = false;
            }
            y.handle(m, t0).expect("filed");
        }
        assert!(y.dead().is_empty());
    }

    #[test]
    fn a_newer_incarnation_in_the_lease_clears_the_dead_mark() {
        let t0 = Instant::now();
        let members = ["z", "x", "w1", "w2"];
        let mut z = det("z", &members, t0);
        z.handle(suspect("w1", 1, "x", 10, &["w1", "w2"]), t0)
            .expect("filed");
        z.handle(suspect("w2", 1, "x", 10, &["w1", "w2"]), t0)
            .expect("filed");
        assert!(z.dead().contains_key("x"));
        // The Lease still shows the incarnation declared dead: held.
        let lease = |x: u64| members.map(|m| (m, (m == "x").then_some(x)));
        z.set_members(lease(1), t0 + ms(10));
        assert!(z.dead().contains_key("x"));
        z.set_members(lease(2), t0 + ms(20));
        assert!(z.dead().is_empty());
        // Reports about the old incarnation are stale now.
        z.handle(suspect("w1", 2, "x", 11, &["w1", "w2"]), t0 + ms(30))
            .expect("filed");
        z.handle(suspect("w2", 2, "x", 11, &["w1", "w2"]), t0 + ms(30))
            .expect("filed");
        assert!(z.dead().is_empty());
    }

    #[test]
    fn replays_stale_incarnations_and_misaddressed_messages_are_rejected() {
        let t0 = Instant::now();
        let mut z = det("z", &["z", "x", "w1", "w2"], t0);
        let m = suspect("w1", 5, "x", 10, &["w1", "w2"]);
        assert!(z.handle(m.clone(), t0).is_ok());
        assert_eq!(z.handle(m.clone(), t0), Err(Rejected::Replay));
        assert_eq!(
            z.handle(suspect("w1", 4, "x", 10, &["w1"]), t0),
            Err(Rejected::Replay)
        );
        assert_eq!(
            z.handle(suspect("z", 1, "x", 10, &["w1"]), t0),
            Err(Rejected::FromSelf)
        );
        let mut to_other = m.clone();
        to_other.seq = 6;
        to_other.recipient = Some("w2".into());
        assert_eq!(z.handle(to_other, t0), Err(Rejected::NotForUs));
        let mut ack_broadcast = m.clone();
        ack_broadcast.seq = 7;
        ack_broadcast.body = Body::Ack(AckRepr {
            acked_incarnation: 1,
            acked_seq: 1,
            api_age_ms: None,
        });
        assert_eq!(z.handle(ack_broadcast, t0), Err(Rejected::NotForUs));
        let mut bogus_ack = m.clone();
        bogus_ack.seq = 8;
        bogus_ack.recipient = Some("z".into());
        bogus_ack.body = Body::Ack(AckRepr {
            acked_incarnation: 1,
            acked_seq: 1,
            api_age_ms: None,
        });
        assert_eq!(z.handle(bogus_ack, t0), Err(Rejected::UnexpectedAck));
        let mut unknown = m.clone();
        unknown.seq = 9;
        unknown.body = Body::Unknown(77);
        assert_eq!(z.handle(unknown, t0), Err(Rejected::UnknownType(77)));
        // The Lease says w1 is at incarnation 3: anything older is stale.
        z.set_members([("x", None), ("w1", Some(3)), ("w2", None)], t0);
        let mut old = m;
        old.seq = 100;
        assert_eq!(z.handle(old, t0), Err(Rejected::StaleIncarnation));
    }

    #[test]
    fn a_verdict_on_ourselves_fences_us_at_once() {
        let t0 = Instant::now();
        let mut x = det("x", &["x", "w1", "w2"], t0);
        x.handle(suspect("w1", 1, "x", 10, &["w1", "w2"]), t0)
            .expect("filed");
        assert!(!x.status(t0).must_fence || x.status(t0).fenced_since.is_none());
        x.handle(suspect("w2", 1, "x", 10, &["w1", "w2"]), t0)
            .expect("filed");
        let st = x.status(t0);
        assert!(st.must_fence);
        assert_eq!(st.fenced_since, Some(t0));
        assert!(x.dead().is_empty(), "we do not list ourselves");
    }

    #[test]
    fn leaving_releases_the_witnesses_and_silences_us() {
        let t0 = Instant::now();
        let mut a = det("a", &ALL, t0);
        let mut others: Vec<Detector> = ALL[1..].iter().map(|n| det(n, &ALL, t0)).collect();
        let acks = deliver(&mut others, a.tick(t0), t0);
        deliver(std::slice::from_mut(&mut a), acks, t0);
        deliver(&mut others, a.tick(t0 + ms(50)), t0 + ms(50));
        let bye = a.leave(t0 + ms(60));
        assert_eq!(bye.len(), 3);
        assert!(bye.iter().all(|o| !heartbeat(o).binding));
        deliver(&mut others, bye, t0 + ms(60));
        assert_eq!(a.next_wakeup(), None);
        assert!(a.tick(t0 + ms(100)).is_empty());
        for i in 1..20 {
            for d in others.iter_mut() {
                let out = d.tick(t0 + ms(60 + 50 * i));
                assert!(
                    out.iter().all(|o| o.to != Destination::Broadcast),
                    "reported a leaver"
                );
            }
        }
    }

    #[test]
    fn api_grace_only_when_no_evidence_of_a_reachable_api_crossed_the_ring() {
        let t0 = Instant::now();
        let window = ms(3000);
        let mut a = det("a", &["a", "b", "c", "d"], t0);
        a.set_api_ok(true);
        assert!(
            !a.api_grace(t0, window),
            "the lease decides while our API works"
        );
        a.set_api_ok(false);
        assert!(a.api_grace(t0, window), "no peer ever showed API access");
        // b acks with "I reach the API": a must fence at its lease deadline.
        let mut b = det("b", &["a", "b", "c", "d"], t0);
        b.set_api_ok(true);
        let out = a.tick(t0);
        let to_b: Vec<Outgoing> = out
            .into_iter()
            .filter(|o| o.to == Destination::Peer("b".into()))
            .collect();
        let acks = deliver(std::slice::from_mut(&mut b), to_b, t0);
        assert!(!acks.is_empty());
        deliver(std::slice::from_mut(&mut a), acks, t0);
        assert_eq!(a.api_evidence_age(t0), Some(Duration::ZERO));
        assert!(!a.api_grace(t0, window));
        // Relayed: a now tells others the evidence is fresh.
        match a.tick(t0 + ms(50)).first().map(|o| &o.message.body) {
            Some(Body::Heartbeat(h)) => assert_eq!(h.api_age_ms, Some(50)),
            other => panic!("{other:?}"),
        }
        // Once the evidence is older than the ring can carry it, grace.
        let quiet = Config::default().api_quiet(4);
        assert_eq!(quiet, ms(50) + ms(250));
        assert!(!a.api_grace(t0 + quiet, window));
        // (a's own fence would hold by then on a silent LAN; the rule is
        // about the API evidence, so check the evidence alone.)
        assert!(
            a.api_evidence_age(t0 + quiet + ms(1))
                .is_some_and(|age| age > quiet)
        );
        // A cluster too large to carry the evidence within the window never gets grace.
        assert!(Config::default().api_quiet(1000) > window);
    }
}
