//! The speaker's tasks and the messages between them.
//!
//! ```text
//!  watchers (pools, ads, nodes,         renewer (conditional PATCH every
//!  services, slices, leases)            lease_renew; LeaseLock to acquire)
//!        │ Input::{Pool,..,Lease}             │ Input::Renewed{sent_at}  ▲ may_renew
//!        └───────────────┬────────────────────┘                          │ (watch)
//!                        ▼  mpsc<Input>                                  │
//!               decision loop (owns core::Core) ── announce/withdraw ──► Announcer
//!                 │   wakes on input, peer expiry, fence deadline,       ▲
//!                 │   takeover delay, retry                    IpConflict│
//!                 ▼  mpsc<StatusMsg>                                      │
//!               status writer (ServiceL2Status, Events) ◄─────────────────┘
//! ```
//!
//! The lease watcher is restarted (a fresh list over a new connection)
//! when it has delivered nothing for the fence window: our own lease
//! changes every `lease_renew`, so such silence means a watch stalled on a
//! connection the network cut, and the core already treats its view as
//! stale. The renewer waits for that list before a fenced speaker rejoins.
//!
//! The loop never awaits the API server: announce and withdraw happen the
//! moment the core decides, status and Events follow asynchronously. On
//! shutdown the loop withdraws everything first, then stops the renewer,
//! releases the lease, and lets the status writer flush. This module owns
//! only wiring; every decision is in `core`.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Client, Resource, ResourceExt};
use kube_leader_election::{LeaseLock, LeaseLockParams, LeaseLockResult};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::core::{Actions, Change, Core, Input};
use super::eligibility::{INTERFACES_ANNOTATION, ServiceKey};
use super::lan::{INCARNATION_ANNOTATION, Lan, LanConfig};
use super::published::{ANNOUNCED_ANNOTATION, MACS_ANNOTATION, Published, join};
use super::status::{self, StatusMsg};
use super::{Announcer, IpConflict, SpeakerConfig, SpeakerError, netinfo};
use crate::api::events::Reason;
use crate::api::{IPAddressPool, L2Advertisement, SPEAKER_LEASE_PREFIX};

/// How often one conflict (a VIP and a MAC) is logged and reported as an Event.
const CONFLICT_REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// How long after a failed announce the loop tries again.
const ANNOUNCE_RETRY: Duration = Duration::from_secs(5);

pub async fn run(
    config: SpeakerConfig,
    client: Client,
    announcer: Arc<dyn Announcer>,
    shutdown: CancellationToken,
) -> Result<(), SpeakerError> {
    let span = info_span!("speaker", node = %config.node_name);
    run_inner(config, client, announcer, shutdown)
        .instrument(span)
        .await
}

async fn run_inner(
    config: SpeakerConfig,
    client: Client,
    announcer: Arc<dyn Announcer>,
    shutdown: CancellationToken,
) -> Result<(), SpeakerError> {
    let node = config.node_name.clone();
    let own_interfaces = config
        .interfaces
        .clone()
        .unwrap_or_else(netinfo::interfaces);
    let usable = announcer.usable_links(&own_interfaces);
    info!(node = %node, interfaces = ?own_interfaces, links_up = ?usable, default_interface = ?config.default_interface, "speaker starting");
    let (links_tx, links_rx) = tokio::sync::watch::channel(usable.clone());
    // A restarted speaker must not keep answering from a previous life.
    announcer.withdraw_all();
    config.metrics.fenced.set(1);

    let (tx, rx) = mpsc::channel::<Input>(1024);
    let mut tasks = JoinSet::new();
    spawn_watchers(&client, &config, &tx, &mut tasks);
    let (published_tx, published_rx) = tokio::sync::watch::channel(None);
    let lan = start_lan(&config, &tx, &announcer, published_tx);
    let (announced_tx, announced_rx) = tokio::sync::watch::channel(BTreeSet::new());
    let renewer = Renewer::spawn(
        &client,
        &config,
        tx,
        PublishSources {
            incarnation: published_rx,
            links: links_rx,
            announced: announced_rx,
        },
    );
    let (status_tx, status_rx) = mpsc::unbounded_channel();
    let status_stop = CancellationToken::new();
    let status_task = tokio::spawn(
        status::run(
            client.clone(),
            config.namespace.clone(),
            node.clone(),
            status_rx,
            status_stop.clone(),
        )
        .instrument(info_span!("status_writer")),
    );

    let core = Core::new(
        node.clone(),
        config.timing(),
        Some(usable.clone()),
        config.default_interface.clone(),
    )
    .with_class(config.class)
    .with_node_rules(config.node_rules);
    let mut decisions = DecisionLoop {
        announced_tx,
        conflicts_reported: Default::default(),
        conflicts: announcer.subscribe_conflicts(),
        core,
        config: &config,
        announcer: announcer.as_ref(),
        status_tx: &status_tx,
        may_renew: &renewer.may_renew,
        lan: lan.as_ref(),
        resolved_for: None,
        first_decision_sent: false,
        retry_at: None,
        links: Links {
            configured: own_interfaces,
            usable,
            tx: links_tx,
        },
    };
    let result = decisions.run(rx, &shutdown).await;

    // Graceful hand-over: stop answering first, then tell peers.
    decisions.withdraw_everything();
    if let Some(lan) = &lan {
        // Tells our witnesses to stop watching us (without it they would
        // reach a verdict: harmless, only noisier), alongside the release,
        // which is what hands the VIPs over.
        lan.leave();
    }
    renewer.stop_and_release(&client, &config).await;
    if let Some(lan) = lan {
        lan.join();
    }
    status_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), status_task).await;
    tasks.shutdown().await;
    result
}

/// Starts the LAN fast path when keys or a key file are configured.
fn start_lan(
    config: &SpeakerConfig,
    tx: &mpsc::Sender<Input>,
    announcer: &Arc<dyn Announcer>,
    published: tokio::sync::watch::Sender<Option<u64>>,
) -> Option<Lan> {
    if config.fastpath_keys.is_none() && config.fastpath_key_file.is_none() {
        warn!("no --fastpath-key-file: LAN fast path off, crash failover takes a lease duration");
        return None;
    }
    let lan_config = LanConfig {
        detector: config.fastpath.clone(),
        keys: config.fastpath_keys.clone(),
        key_file: config.fastpath_key_file.clone(),
        lease_fence_window: config.lease_duration.saturating_sub(config.fence_margin),
    };
    match Lan::spawn(
        config.node_name.clone(),
        lan_config,
        tx.clone(),
        announcer.clone(),
        published,
        config.metrics.lan.clone(),
    ) {
        Ok(lan) => Some(lan),
        Err(e) => {
            warn!(error = %e, "cannot start the LAN fast path; running on the Lease alone");
            None
        }
    }
}

/// Starts one watch per kind the core reads, all feeding `tx`.
fn spawn_watchers(
    client: &Client,
    config: &SpeakerConfig,
    tx: &mpsc::Sender<Input>,
    tasks: &mut JoinSet<()>,
) {
    let ns = config.namespace.as_str();
    let c = || client.clone();
    spawn_watch(
        tasks,
        Api::<IPAddressPool>::namespaced(c(), ns),
        tx.clone(),
        Input::Pool,
        "pools",
    );
    spawn_watch(
        tasks,
        Api::<L2Advertisement>::namespaced(c(), ns),
        tx.clone(),
        Input::Advertisement,
        "advertisements",
    );
    spawn_watch(
        tasks,
        Api::<Node>::all(c()),
        tx.clone(),
        Input::Node,
        "nodes",
    );
    spawn_watch(
        tasks,
        Api::<Service>::all(c()),
        tx.clone(),
        Input::Service,
        "services",
    );
    spawn_watch(
        tasks,
        Api::<EndpointSlice>::all(c()),
        tx.clone(),
        Input::Slice,
        "endpointslices",
    );
    spawn_watch_restarting_when_silent(
        tasks,
        Api::<Lease>::namespaced(c(), ns),
        tx.clone(),
        Input::Lease,
        "leases",
        // Our own lease changes every `lease_renew`, so a lease watch this
        // quiet is stalled; the core treats its view as stale after the
        // same bound (see `Index::lease_view_stale`).
        config.lease_duration - config.fence_margin,
    );
}

/// The task renewing our own lease, and what the decision loop tells it.
struct Renewer {
    /// The renewal task.
    task: tokio::task::JoinHandle<()>,
    /// Stops the renewal task (before the lease is released).
    stop: CancellationToken,
    /// Whether renewing is useful now (see `Core::may_renew`).
    may_renew: tokio::sync::watch::Sender<bool>,
    /// Our lease's name.
    lease_name: String,
}

impl Renewer {
    /// Starts renewing our lease; successes are reported on `tx`.
    fn spawn(
        client: &Client,
        config: &SpeakerConfig,
        tx: mpsc::Sender<Input>,
        sources: PublishSources,
    ) -> Self {
        let lease_name = format!("{SPEAKER_LEASE_PREFIX}{}", config.node_name);
        let ns = config.namespace.as_str();
        let stop = CancellationToken::new();
        let (may_renew, may_renew_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(
            renew(
                LeaseLock::new(client.clone(), ns, lock_params(config)),
                Api::<Lease>::namespaced(client.clone(), ns),
                lease_name.clone(),
                config.clone(),
                RenewChannels {
                    tx,
                    may_renew: may_renew_rx,
                    sources,
                },
                stop.clone(),
            )
            .instrument(info_span!("lease_renew", lease = %lease_name)),
        );
        Self {
            task,
            stop,
            may_renew,
            lease_name,
        }
    }

    /// Stops renewing, then releases the lease so peers take over at once
    /// instead of after its expiry.
    async fn stop_and_release(self, client: &Client, config: &SpeakerConfig) {
        self.stop.cancel();
        let _ = self.task.await;
        let lease_name = self.lease_name;
        let release = LeaseLock::new(client.clone(), &config.namespace, lock_params(config));
        match tokio::time::timeout(config.lease_duration, release.step_down()).await {
            Ok(Ok(())) => info!(lease = %lease_name, "lease released"),
            Ok(Err(e)) => {
                warn!(lease = %lease_name, error = %e, "releasing lease failed; peers take over after lease expiry")
            }
            Err(_) => {
                warn!(lease = %lease_name, "releasing lease timed out; peers take over after lease expiry")
            }
        }
    }
}

/// `LeaseLock` parameters of our own lease.
fn lock_params(config: &SpeakerConfig) -> LeaseLockParams {
    LeaseLockParams {
        lease_name: format!("{SPEAKER_LEASE_PREFIX}{}", config.node_name),
        holder_id: config.node_name.clone(),
        lease_ttl: config.lease_duration,
    }
}

/// The decision loop: owns the core, decides on every input or deadline
/// and carries the actions out at once; never awaits the API server.
struct DecisionLoop<'a> {
    /// The decisions.
    core: Core,
    /// Tells the renewer what the dataplane answers for, after each change.
    announced_tx: tokio::sync::watch::Sender<BTreeSet<IpAddr>>,
    /// When each (VIP, MAC) conflict was last reported.
    conflicts_reported: std::collections::HashMap<(IpAddr, crate::l2::Mac), Instant>,
    /// Flags, metrics and health.
    config: &'a SpeakerConfig,
    /// The dataplane.
    announcer: &'a dyn Announcer,
    /// Status objects and Events, written asynchronously.
    status_tx: &'a mpsc::UnboundedSender<StatusMsg>,
    /// Tells the renewer whether renewing is useful.
    may_renew: &'a tokio::sync::watch::Sender<bool>,
    /// The LAN fast path, when on: told the interface and the members.
    lan: Option<&'a Lan>,
    /// Conflicts the dataplane detects.
    conflicts: Option<mpsc::UnboundedReceiver<IpConflict>>,
    /// The Node's InternalIPs the default interface was last resolved for.
    resolved_for: Option<Vec<IpAddr>>,
    /// Whether the status writer was told the first synced decision is done.
    first_decision_sent: bool,
    /// When to retry announces that failed.
    retry_at: Option<Instant>,
    /// Our interfaces' link states.
    links: Links,
}

/// Which of our interfaces have a usable link, checked every
/// [`LINK_CHECK`]: a NIC unplugged or set down releases its VIPs at once
/// and our Lease says so (peers take them), instead of leaving them dark
/// while the node stays live. The fast path's own interface needs no such
/// help: with its link down the node hears no acknowledgement and fences.
struct Links {
    /// The interfaces this node offers (flag or detected at start).
    configured: BTreeSet<String>,
    /// Those with a usable link at the last check.
    usable: BTreeSet<String>,
    /// Tells the renewer what to publish.
    tx: tokio::sync::watch::Sender<BTreeSet<String>>,
}

/// How often link states are read (one netlink dump).
const LINK_CHECK: Duration = Duration::from_millis(100);

impl DecisionLoop<'_> {
    /// Decides until `shutdown`, or until the inputs end (a task died).
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Input>,
        shutdown: &CancellationToken,
    ) -> Result<(), SpeakerError> {
        let mut link_check = tokio::time::interval(LINK_CHECK);
        link_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut wake = self.step(Instant::now());
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                // Most ticks change nothing: no decision then.
                _ = link_check.tick() => {
                    if !self.check_links() {
                        continue;
                    }
                }
                input = rx.recv() => {
                    let Some(input) = input else {
                        return Err(SpeakerError::TaskStopped { task: "watchers" });
                    };
                    let now = Instant::now().into_std();
                    self.core.apply(input, now);
                    // Take everything already queued, then decide once.
                    while let Ok(more) = rx.try_recv() {
                        self.core.apply(more, now);
                    }
                }
                Some(conflict) = recv_conflict(&mut self.conflicts) => {
                    self.conflict(&conflict);
                    continue;
                }
                _ = sleep_until(wake) => {}
            }
            wake = self.step(Instant::now());
        }
    }

    /// Reads our links' states; on a change tells the core and the renewer.
    /// Returns whether they changed.
    fn check_links(&mut self) -> bool {
        let usable = self.announcer.usable_links(&self.links.configured);
        if usable == self.links.usable {
            return false;
        }
        for down in self.links.usable.difference(&usable) {
            warn!(interface = %down, "link down: releasing the VIPs announced on it");
        }
        for up in usable.difference(&self.links.usable) {
            info!(interface = %up, "link up: eligible on it again");
        }
        self.links.usable = usable.clone();
        self.core.set_own_interfaces(usable.clone());
        self.links.tx.send_replace(usable);
        true
    }

    /// Decides at `now`, carries the actions out, publishes the speaker's
    /// state; returns when to decide again with no new input.
    fn step(&mut self, now: Instant) -> Option<Instant> {
        let config = self.config;
        if self.retry_at.is_some_and(|r| r <= now) {
            self.retry_at = None;
        }
        if config.default_interface.is_none() {
            resolve_default_interface(&mut self.core, &mut self.resolved_for);
        }
        let std_now = now.into_std();
        self.core.set_wall_clock(jiff::Timestamp::now());
        let actions = self.core.decide(std_now);
        let failed = execute(
            &self.core,
            &actions,
            self.announcer,
            self.status_tx,
            &config.node_name,
        );
        for vip in &failed {
            self.core.announce_failed(*vip);
        }
        self.publish_announced();
        if !failed.is_empty() {
            self.retry_at = Some(now + ANNOUNCE_RETRY);
        }
        let synced = self.core.synced(std_now);
        if synced && !self.first_decision_sent {
            self.first_decision_sent = true;
            let _ = self.status_tx.send(StatusMsg::FirstDecisionDone);
        }
        if let Some(lan) = self.lan {
            lan.set_interface(self.core.default_interface().map(str::to_string));
            lan.set_members(
                self.core.lan_members(std_now),
                self.core.lease_renewing(std_now),
            );
        }
        let fenced = self.core.is_fenced(std_now);
        let may_renew = self.core.may_renew(std_now);
        self.may_renew
            .send_if_modified(|v| std::mem::replace(v, may_renew) != may_renew);
        let metrics = &config.metrics;
        metrics.election_changes.inc_by(actions.election_changes);
        metrics
            .announced_vips
            .set(self.core.announced().len() as i64);
        self.publish_vip_metrics();
        metrics.fenced.set(i64::from(fenced));
        metrics.ready.set(i64::from(synced && !fenced));
        config.health.set_ready(synced && !fenced);
        [
            self.core.next_wakeup(std_now).map(Instant::from_std),
            self.retry_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Tells the renewer what the dataplane now answers for. Called after
    /// the dataplane was told, so a withdrawal peers read is already done.
    fn publish_announced(&self) {
        let now: BTreeSet<IpAddr> = self.core.announced().keys().copied().collect();
        self.announced_tx
            .send_if_modified(|v| std::mem::replace(v, now.clone()) != now);
    }

    /// Reports a frame from another MAC for a VIP we announce, unless it is
    /// the echo of a hand-over with the peer that sent it.
    fn conflict(&mut self, c: &IpConflict) {
        let metrics = &self.config.metrics;
        match self
            .core
            .handover_echo(c.vip, c.mac, Instant::now().into_std())
        {
            Some(peer) => {
                metrics.handover_echoes.inc();
                debug!(vip = %c.vip, mac = %c.mac, %peer, "frame from the peer of a hand-over; not a conflict");
            }
            None => {
                metrics.ip_conflicts.inc();
                // Every frame counts; the log line and Event come once per
                // VIP and MAC per interval (a conflict repeats with every
                // ARP request).
                let key = (c.vip, c.mac);
                let now = Instant::now();
                if self
                    .conflicts_reported
                    .get(&key)
                    .is_some_and(|t| now.duration_since(*t) < CONFLICT_REPORT_INTERVAL)
                {
                    return;
                }
                self.conflicts_reported
                    .retain(|_, t| now.duration_since(*t) < CONFLICT_REPORT_INTERVAL);
                self.conflicts_reported.insert(key, now);
                report_conflict(&self.core, c, self.status_tx, &self.config.node_name);
            }
        }
    }

    /// Stops answering for everything, first of all on shutdown.
    fn withdraw_everything(&mut self) {
        self.config.health.set_ready(false);
        self.core.stop();
        let actions = self.core.decide(Instant::now().into_std());
        execute(
            &self.core,
            &actions,
            self.announcer,
            self.status_tx,
            &self.config.node_name,
        );
        self.announcer.withdraw_all();
        self.config.metrics.announced_vips.set(0);
        self.publish_announced();
        self.config.metrics.ready.set(0);
        self.publish_vip_metrics();
    }

    /// Publishes the per-VIP series from what the core now announces
    /// (after failed announces were taken back, so a VIP shows only while
    /// it is answered for).
    fn publish_vip_metrics(&self) {
        let core = &self.core;
        let announced = core
            .announced()
            .keys()
            .map(|vip| (*vip, core.services_of(*vip)))
            .collect();
        self.config
            .metrics
            .vips
            .publish(&self.config.node_name, &announced, |vip| {
                !core.services_of(vip).is_empty()
            });
    }
}

/// Points the core's default interface at the interface holding the Node's
/// InternalIP (else the default-route interface) whenever those IPs change.
fn resolve_default_interface(core: &mut Core, resolved_for: &mut Option<Vec<IpAddr>>) {
    let ips = core.own_internal_ips();
    if resolved_for.as_deref() == Some(ips) {
        return;
    }
    let ips = ips.to_vec();
    let (iface, why) = match netinfo::interface_with_address(&ips) {
        Some(i) => (Some(i), "holds the node's InternalIP"),
        None => (netinfo::default_interface(), "default route"),
    };
    info!(interface = ?iface, node_ips = ?ips, reason = why, "default interface");
    core.set_default_interface(iface);
    *resolved_for = Some(ips);
}

/// Carries out `actions`; returns the VIPs whose announce failed.
fn execute(
    core: &Core,
    actions: &Actions,
    announcer: &dyn Announcer,
    status_tx: &mpsc::UnboundedSender<StatusMsg>,
    node: &str,
) -> Vec<IpAddr> {
    for vip in &actions.withdraw {
        announcer.withdraw(*vip);
        debug!(%vip, "withdrawn");
    }
    let mut failed = Vec::new();
    for (vip, ifaces) in &actions.announce {
        for iface in ifaces {
            if let Err(e) = announcer.announce(*vip, iface) {
                warn!(%vip, interface = %iface, error = %e, "announce failed");
                announcer.withdraw(*vip);
                failed.push(*vip);
                for svc in core.services_of(*vip) {
                    event(
                        core,
                        status_tx,
                        &svc,
                        Reason::AnnounceFailed,
                        format!("{node} could not announce {vip} on {iface}: {e}"),
                    );
                }
                break;
            }
        }
        if !failed.contains(vip) {
            info!(%vip, interfaces = ?ifaces, "announced");
        }
    }
    for (vip, services) in &actions.no_interface {
        for svc in services {
            event(
                core,
                status_tx,
                svc,
                Reason::AnnounceFailed,
                format!(
                    "{node} owns {vip} but has no interface to announce it on (set --default-interface)"
                ),
            );
        }
    }
    for (vip, svc) in &actions.refused {
        let note = format!(
            "{vip} is not announced: allow-shared-ip is incompatible with serviceSelectors on L2 advertisements"
        );
        warn!(service = %svc, %vip, "{note}");
        event(core, status_tx, svc, Reason::NotAnnounced, note);
    }
    for svc in &actions.status_delete {
        let _ = status_tx.send(StatusMsg::Absent(svc.clone()));
    }
    for (svc, ifaces) in &actions.status_upsert {
        let takeover = actions.assigned.contains(svc);
        let _ = status_tx.send(StatusMsg::Present {
            service: svc.clone(),
            interfaces: ifaces.clone(),
            takeover: takeover.then(|| actions.co_owners.get(svc).cloned().unwrap_or_default()),
        });
        if takeover {
            let on: Vec<&str> = ifaces.iter().map(String::as_str).collect();
            event(
                core,
                status_tx,
                svc,
                Reason::NodeAssigned,
                format!("announcing from node {node} on {}", on.join(",")),
            );
        }
    }
    failed
}

fn event(
    core: &Core,
    status_tx: &mpsc::UnboundedSender<StatusMsg>,
    svc: &ServiceKey,
    reason: Reason,
    note: String,
) {
    if let Some(s) = core.service(svc) {
        let _ = status_tx.send(StatusMsg::Event {
            regarding: s.object_ref(&()),
            reason,
            note,
        });
    }
}

fn report_conflict(
    core: &Core,
    c: &IpConflict,
    status_tx: &mpsc::UnboundedSender<StatusMsg>,
    node: &str,
) {
    warn!(vip = %c.vip, interface = %c.interface, mac = %c.mac, "another host claims an announced VIP");
    for svc in core.services_of(c.vip) {
        event(
            core,
            status_tx,
            &svc,
            Reason::IpConflict,
            format!(
                "{} is also claimed by {} on {} (seen by {node})",
                c.vip, c.mac, c.interface
            ),
        );
    }
}

async fn recv_conflict(rx: &mut Option<mpsc::UnboundedReceiver<IpConflict>>) -> Option<IpConflict> {
    match rx {
        Some(r) => match r.recv().await {
            Some(c) => Some(c),
            None => {
                *rx = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Watches one kind and forwards changes; a re-list becomes one `Resync`.
fn spawn_watch<K>(
    tasks: &mut JoinSet<()>,
    api: Api<K>,
    tx: mpsc::Sender<Input>,
    wrap: fn(Change<K>) -> Input,
    kind: &'static str,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    tasks.spawn(
        async move {
            watch(api, tx, wrap, None).await;
        }
        .instrument(info_span!("watch", kind)),
    );
}

/// Like [`spawn_watch`], but a watch that delivers nothing (no change, no
/// error) for `silence` is dropped and started afresh, which lists again
/// over a new connection.
///
/// A watch whose connection the network cut does not fail: it waits, and
/// after the cut heals TCP may take tens of seconds (its retransmission
/// back-off) to resume it. Only for kinds that change more often than
/// `silence` when all is well.
fn spawn_watch_restarting_when_silent<K>(
    tasks: &mut JoinSet<()>,
    api: Api<K>,
    tx: mpsc::Sender<Input>,
    wrap: fn(Change<K>) -> Input,
    kind: &'static str,
    silence: Duration,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    tasks.spawn(
        async move {
            // Restarts in a row without a delivery: one warning per outage.
            let mut quiet_restarts = 0u32;
            loop {
                match watch(api.clone(), tx.clone(), wrap, Some(silence)).await {
                    WatchEnd::Closed => return,
                    WatchEnd::Silent { delivered: true } => quiet_restarts = 0,
                    WatchEnd::Silent { delivered: false } => {}
                }
                if quiet_restarts == 0 {
                    warn!(?silence, "watch silent; restarting it to list afresh");
                } else {
                    debug!(
                        ?silence,
                        restarts = quiet_restarts,
                        "watch still silent; restarting it"
                    );
                }
                quiet_restarts = quiet_restarts.saturating_add(1);
                if tx.send(wrap(Change::Broken)).await.is_err() {
                    return;
                }
            }
        }
        .instrument(info_span!("watch", kind)),
    );
}

/// Why [`watch`] returned.
enum WatchEnd {
    /// The decision loop is gone (or the watcher ended): stop.
    Closed,
    /// Nothing arrived for the silence bound; `delivered` says whether
    /// anything arrived before.
    Silent {
        /// Whether the watch delivered anything at all.
        delivered: bool,
    },
}

/// Runs one watch, forwarding its changes, until the decision loop is gone
/// or, with `silence`, until it has delivered nothing for that long.
async fn watch<K>(
    api: Api<K>,
    tx: mpsc::Sender<Input>,
    wrap: fn(Change<K>) -> Input,
    silence: Option<Duration>,
) -> WatchEnd
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut buffer: Option<Vec<K>> = None;
    let mut delivered = false;
    loop {
        let ev = match silence {
            Some(bound) => match tokio::time::timeout(bound, stream.next()).await {
                Ok(ev) => ev,
                Err(_) => return WatchEnd::Silent { delivered },
            },
            None => stream.next().await,
        };
        // The watcher retries forever; an end means shutdown.
        let Some(ev) = ev else {
            return WatchEnd::Closed;
        };
        // `Init` comes before any request is answered: it proves nothing.
        delivered |= matches!(&ev, Ok(e) if !matches!(e, WatchEvent::Init));
        let change = match ev {
            Ok(WatchEvent::Apply(o)) => Change::Apply(o),
            Ok(WatchEvent::Delete(o)) => Change::Delete(o),
            Ok(WatchEvent::Init) => {
                buffer = Some(Vec::new());
                continue;
            }
            Ok(WatchEvent::InitApply(o)) => {
                buffer.get_or_insert_with(Vec::new).push(o);
                continue;
            }
            Ok(WatchEvent::InitDone) => {
                debug!("watch listed");
                Change::Resync(buffer.take().unwrap_or_default())
            }
            Err(e) => {
                warn!(error = %e, "watch failed; retrying with backoff");
                Change::Broken
            }
        };
        if tx.send(wrap(change)).await.is_err() {
            return WatchEnd::Closed;
        }
    }
}

/// Where the renewer learns what to publish on our Lease; each change is
/// written at once.
struct PublishSources {
    /// The fast path's confirmed incarnation.
    incarnation: tokio::sync::watch::Receiver<Option<u64>>,
    /// Our interfaces with a usable link.
    links: tokio::sync::watch::Receiver<BTreeSet<String>>,
    /// The VIPs the dataplane answers for.
    announced: tokio::sync::watch::Receiver<BTreeSet<IpAddr>>,
}

/// The renewer's channels: results out; whether renewing is useful and
/// what to publish in.
struct RenewChannels {
    /// Renewals and failures, to the decision loop.
    tx: mpsc::Sender<Input>,
    /// Whether renewing is useful now.
    may_renew: tokio::sync::watch::Receiver<bool>,
    /// What to publish.
    sources: PublishSources,
}

/// Renews our lease every `lease_renew` and reports each success with the
/// time its request was sent.
///
/// A renewal is one PATCH conditional on the resourceVersion our previous
/// write returned: it succeeds only if nobody touched the lease since, which
/// proves we still hold it, and costs one request where `LeaseLock` spends
/// two (GET, then PATCH). `LeaseLock` is used to create or (re)acquire the
/// lease, and whenever the conditional write finds the lease changed. The
/// same PATCH publishes our interfaces for peers.
async fn renew(
    lock: LeaseLock,
    leases: Api<Lease>,
    lease_name: String,
    config: SpeakerConfig,
    RenewChannels {
        tx,
        mut may_renew,
        sources:
            PublishSources {
                incarnation: mut published,
                mut links,
                mut announced,
            },
    }: RenewChannels,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.lease_renew);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Past this a renewal no longer helps: the fence has closed.
    let attempt_timeout = config.lease_duration - config.fence_margin;
    // resourceVersion of our last successful write; None = (re)acquire.
    let mut held: Option<String> = None;
    // Without the fast path (no key) its sender is gone from the start:
    // then only the tick renews.
    let mut lan_on = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            // A new confirmed fast-path incarnation is published at once:
            // after a LAN fence, peers hold us dead until they see it. One
            // extra request per rejoin, so the load stays per node.
            r = published.changed(), if lan_on => if r.is_err() {
                lan_on = false;
                continue;
            },
            // A link went down or up: peers must see it now, not at the
            // next tick (they take the VIPs we released).
            r = links.changed() => if r.is_err() { return },
            // We withdrew or took a VIP: a peer waiting to take it
            // announces as soon as it reads this (the hand-over's one
            // request per ownership change).
            r = announced.changed() => if r.is_err() { return },
        }
        let interfaces = links.borrow_and_update().clone();
        let publish = Published {
            macs: netinfo::macs(&interfaces),
            interfaces,
            incarnation: *published.borrow_and_update(),
            announced: announced.borrow_and_update().clone(),
        };
        if !*may_renew.borrow_and_update() {
            // Fenced and not synced (see `Core::may_renew`): wait for the
            // watches, then renew at once rather than on the next tick.
            tokio::select! {
                _ = stop.cancelled() => return,
                r = may_renew.wait_for(|ok| *ok) => if r.is_err() { return },
            }
        }
        let sent_at = Instant::now();
        let attempt = renew_once(&lock, &leases, &lease_name, &publish, &config, held.clone());
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(attempt_timeout, attempt) => r,
        };
        config
            .metrics
            .lease_renew_seconds
            .observe(sent_at.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(Some(rv))) => {
                if held.is_none() {
                    info!(lease = %lease_name, "own lease acquired");
                }
                held = Some(rv);
                let renewed = Input::Renewed {
                    sent_at: sent_at.into_std(),
                };
                if tx.send(renewed).await.is_err() {
                    return;
                }
                if let Some(inc) = publish.incarnation
                    && tx.send(Input::LanPublished(inc)).await.is_err()
                {
                    return;
                }
            }
            Ok(Ok(None)) => {
                held = None;
                // Only after a recent release by our previous run: the
                // released lease is free once its 1 s duration passes.
                config.metrics.lease_renew_failures.inc();
                debug!("own lease still held by a previous release; retrying");
            }
            Ok(Err(e)) => {
                config.metrics.lease_renew_failures.inc();
                warn!(error = %e, "lease renewal failed");
                if tx.send(Input::RenewFailed).await.is_err() {
                    return;
                }
            }
            Err(_) => {
                config.metrics.lease_renew_failures.inc();
                warn!(timeout = ?attempt_timeout, "lease renewal timed out");
                if tx.send(Input::RenewFailed).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// One renewal: the conditional PATCH when we know our lease's
/// resourceVersion, else (or when it changed) acquisition through
/// `LeaseLock` followed by one conditional PATCH that publishes our
/// interfaces. Returns the new resourceVersion, or None when the lease is
/// held by someone else.
async fn renew_once(
    lock: &LeaseLock,
    leases: &Api<Lease>,
    name: &str,
    published: &Published,
    config: &SpeakerConfig,
    held: Option<String>,
) -> Result<Option<String>, String> {
    // Our Lease from a previous run (or from before a conflict) still
    // publishes what that run answered for. Renewing it through
    // `LeaseLock` would make it live again with those VIPs listed until the
    // next write; peers would take that for a claim (a non-revertive VIP
    // would move back to us). So when the Lease is ours or free, it is
    // renewed and its annotations replaced in one conditional write.
    let rv = match held {
        Some(rv) => Some(rv),
        None => match leases.get_opt(name).await {
            Ok(Some(l)) => {
                let holder = l
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.as_deref())
                    .unwrap_or_default();
                (holder.is_empty() || holder == config.node_name)
                    .then_some(l.metadata.resource_version)
                    .flatten()
            }
            Ok(None) => None,
            Err(e) => return Err(e.to_string()),
        },
    };
    if let Some(rv) = rv {
        match patch_if_unchanged(leases, name, &rv, published, config).await {
            Ok(rv) => return Ok(Some(rv)),
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                info!(code = e.code, "own lease changed or vanished; re-acquiring");
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    match lock.try_acquire_or_renew().await {
        Ok(LeaseLockResult::Acquired(lease)) => {
            let shown = lease_annotations(published)
                .iter()
                .all(|(k, v)| lease.annotations().get(*k) == Some(v));
            let rv = lease.metadata.resource_version.unwrap_or_default();
            if shown {
                return Ok(Some(rv));
            }
            // The lease is ours; a failure here only delays publishing.
            match patch_if_unchanged(leases, name, &rv, published, config).await {
                Ok(rv) => Ok(Some(rv)),
                Err(e) => {
                    debug!(error = %e, "publishing interfaces on the lease failed; will retry");
                    Ok(Some(rv))
                }
            }
        }
        Ok(LeaseLockResult::NotAcquired(_)) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Renews `name` with a merge PATCH that fails with 409 unless the lease is
/// still at `rv`; returns the new resourceVersion.
async fn patch_if_unchanged(
    leases: &Api<Lease>,
    name: &str,
    rv: &str,
    published: &Published,
    config: &SpeakerConfig,
) -> Result<String, kube::Error> {
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(jiff::Timestamp::now());
    let annotations: serde_json::Map<String, serde_json::Value> = lease_annotations(published)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": rv,
            "annotations": annotations,
        },
        "spec": {
            "holderIdentity": config.node_name,
            "renewTime": now,
            "leaseDurationSeconds": config.lease_duration.as_secs(),
        }
    });
    let lease = leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(lease.metadata.resource_version.unwrap_or_default())
}

/// The annotations our Lease carries for peers.
fn lease_annotations(p: &Published) -> Vec<(&'static str, String)> {
    let mut out = vec![
        (INTERFACES_ANNOTATION, join(&p.interfaces)),
        (MACS_ANNOTATION, join(&p.macs)),
        (ANNOUNCED_ANNOTATION, join(&p.announced)),
    ];
    if let Some(inc) = p.incarnation {
        out.push((INCARNATION_ANNOTATION, inc.to_string()));
    }
    out
}
