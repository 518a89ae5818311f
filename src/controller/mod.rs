//! `l2lb controller`: hands out Service addresses from pools and publishes
//! them in `status.loadBalancer.ingress`.
//!
//! Layout:
//!
//! ```text
//!  watchers (Services, pools, L2Advertisements, Namespaces) ──► stores + Dirty set ──┐
//!                                                                  ▼
//!  leader election ──is_leader──► lead loop: Core (pure) ──Actions──► writes (bounded, RV-checked)
//!                                                          └──────► Events, pool status (debounced)
//! ```
//!
//! Replicas keep their caches warm while standing by; only the leader holds
//! an allocator and writes. Every status write is conditional on the
//! resourceVersion the decision was made from, so a deposed leader's late
//! write fails with 409 instead of clobbering. It never talks to nodes or
//! sockets; the speaker announces what this publishes.

pub mod core;
mod leader;
mod metrics;

use crate::api::events::Reason;
use crate::api::{CONTROLLER_LEASE, INSTALL_NAMESPACE, IPAddressPool, L2Advertisement};
use crate::labels::Labels;
use crate::model as convert;
use crate::telemetry::{self, Health};
use core::{Action, Core};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use metrics::Metrics;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use crate::model::ServiceKey;

/// Command-line flags of `l2lb controller`.
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Namespace holding pools, advertisements and the leader Lease.
    #[arg(long, env = "L2LB_NAMESPACE", default_value = INSTALL_NAMESPACE)]
    pub namespace: String,
    /// Handle only Services with `spec.loadBalancerClass: l2lb.io/l2`
    /// (by default Services with no class are handled too).
    #[arg(long, env = "L2LB_REQUIRE_CLASS")]
    pub require_class: bool,
    /// This replica's identity in the leader Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long a leader's Lease lasts without renewal; a standby takes over
    /// after this when the leader dies without stepping down.
    #[arg(long, default_value = "8s", value_parser = crate::flags::parse_duration)]
    pub lease_duration: Duration,
    /// Address for `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "L2LB_METRICS_ADDR", default_value = "0.0.0.0:7472")]
    pub metrics_addr: SocketAddr,
    /// At most this many status writes in flight at once.
    #[arg(long, default_value_t = 32)]
    pub max_concurrent_writes: usize,
}

/// Validated controller configuration.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// See [`ControllerArgs::namespace`].
    pub namespace: String,
    /// See [`ControllerArgs::require_class`].
    pub require_class: bool,
    /// See [`ControllerArgs::identity`]; defaulted to host name and pid.
    pub identity: String,
    /// See [`ControllerArgs::lease_duration`].
    pub lease_duration: Duration,
    /// Where to serve metrics; `None` disables the endpoint (tests).
    pub metrics_addr: Option<SocketAddr>,
    /// See [`ControllerArgs::max_concurrent_writes`].
    pub max_concurrent_writes: usize,
}

impl ControllerArgs {
    /// Checks the flags and fills defaults.
    pub fn into_config(self) -> Result<ControllerConfig, ControllerError> {
        if self.lease_duration < Duration::from_secs(2) {
            return Err(ControllerError::Config(
                "--lease-duration must be at least 2s".into(),
            ));
        }
        if self.max_concurrent_writes == 0 {
            return Err(ControllerError::Config(
                "--max-concurrent-writes must be at least 1".into(),
            ));
        }
        let identity = self.identity.unwrap_or_else(default_identity);
        Ok(ControllerConfig {
            namespace: self.namespace,
            require_class: self.require_class,
            identity,
            lease_duration: self.lease_duration,
            metrics_addr: Some(self.metrics_addr),
            max_concurrent_writes: self.max_concurrent_writes,
        })
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "controller".into());
    format!("{host}-{}", std::process::id())
}

/// Errors that end the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// Flags do not make sense.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The metrics endpoint could not be opened.
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
}

/// What changed since the lead loop last looked.
#[derive(Default)]
struct Dirty {
    /// Services whose object changed or disappeared.
    services: HashSet<ServiceKey>,
    /// Pools or namespace labels changed: every Service may be affected.
    pools: bool,
    /// L2Advertisements changed: only pools' `Advertised` condition is.
    advertisements: bool,
}

/// Watch caches shared by standby and leading phases.
#[derive(Clone)]
struct Caches {
    services: Store<Service>,
    pools: Store<IPAddressPool>,
    advertisements: Store<L2Advertisement>,
    namespaces: Store<Namespace>,
    dirty: Arc<Mutex<Dirty>>,
    changed: Arc<Notify>,
}

impl Caches {
    fn ns_labels(&self, ns: &str) -> Labels {
        self.namespaces
            .get(&reflector::ObjectRef::new(ns))
            .map(|n| n.labels().clone())
            .unwrap_or_default()
    }

    fn take_dirty(&self) -> Dirty {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()))
    }

    async fn wait_ready(&self) {
        let _ = tokio::join!(
            self.services.wait_until_ready(),
            self.pools.wait_until_ready(),
            self.advertisements.wait_until_ready(),
            self.namespaces.wait_until_ready()
        );
    }
}

fn spawn_watchers(client: &Client, namespace: &str, tasks: &mut JoinSet<()>) -> Caches {
    let dirty = Arc::new(Mutex::new(Dirty::default()));
    let changed = Arc::new(Notify::new());
    let mark = {
        let (dirty, changed) = (dirty.clone(), changed.clone());
        move |f: &dyn Fn(&mut Dirty)| {
            f(&mut dirty.lock().unwrap_or_else(|p| p.into_inner()));
            changed.notify_one();
        }
    };

    let m = mark.clone();
    let services = cached(
        Api::<Service>::all(client.clone()),
        "Service",
        tasks,
        move |ev| match ev {
            watcher::Event::Apply(s) | watcher::Event::Delete(s) | watcher::Event::InitApply(s) => {
                let key = convert::service_key(&s);
                m(&|d: &mut Dirty| {
                    d.services.insert(key.clone());
                });
            }
            watcher::Event::InitDone => m(&|d: &mut Dirty| d.pools = true),
            watcher::Event::Init => {}
        },
    );

    let m = mark.clone();
    // Spec generation and labels per pool: our own status writes come back
    // through this watch, and must not re-decide every Service.
    let mut seen: HashMap<String, (Option<i64>, Labels)> = HashMap::new();
    let pools = cached(
        Api::<IPAddressPool>::namespaced(client.clone(), namespace),
        "IPAddressPool",
        tasks,
        move |ev| match ev {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                let now = (p.metadata.generation, p.labels().clone());
                if seen.insert(p.name_any(), now.clone()) != Some(now) {
                    m(&|d: &mut Dirty| d.pools = true);
                }
            }
            watcher::Event::Delete(p) => {
                seen.remove(&p.name_any());
                m(&|d: &mut Dirty| d.pools = true);
            }
            watcher::Event::Init => {}
            watcher::Event::InitDone => m(&|d: &mut Dirty| d.pools = true),
        },
    );

    let m = mark.clone();
    let advertisements = cached(
        Api::<L2Advertisement>::namespaced(client.clone(), namespace),
        "L2Advertisement",
        tasks,
        move |ev| {
            if !matches!(ev, watcher::Event::Init) {
                m(&|d: &mut Dirty| d.advertisements = true);
            }
        },
    );

    let m = mark;
    let namespaces = cached(
        Api::<Namespace>::all(client.clone()),
        "Namespace",
        tasks,
        move |ev| {
            // Only labels matter to allocation (namespaceSelectors).
            if matches!(
                ev,
                watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone
            ) {
                m(&|d: &mut Dirty| d.pools = true);
            }
        },
    );

    Caches {
        services,
        pools,
        advertisements,
        namespaces,
        dirty,
        changed,
    }
}

/// A reflector cache of `api`, kept by a task in `tasks` that hands every
/// watch event to `on_event` and logs watch failures (the watcher retries
/// with backoff).
fn cached<K>(
    api: Api<K>,
    kind: &'static str,
    tasks: &mut JoinSet<()>,
    mut on_event: impl FnMut(watcher::Event<K>) + Send + 'static,
) -> Store<K>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tasks.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => on_event(ev),
                Err(e) => tracing::warn!(kind, error = %e, "watch failed; retrying"),
            }
        }
    });
    store
}

/// Runs the controller until `shutdown` fires. On shutdown a leader steps
/// down at once so a standby takes over without waiting for the Lease.
pub async fn run(
    config: ControllerConfig,
    client: Client,
    shutdown: CancellationToken,
) -> Result<(), ControllerError> {
    let mut tasks = JoinSet::new();
    let health = Arc::new(Health::default());
    let mut registry = prometheus_client::registry::Registry::with_prefix("l2lb");
    let metrics = Arc::new(Metrics::register(&mut registry));
    if let Some(addr) = config.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ControllerError::Metrics { addr, source })?;
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving metrics and health");
        tasks.spawn({
            let (registry, health, shutdown) =
                (Arc::new(registry), health.clone(), shutdown.clone());
            async move {
                if let Err(e) = telemetry::serve(listener, registry, health, shutdown).await {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            }
        });
    }

    let caches = spawn_watchers(&client, &config.namespace, &mut tasks);
    let (leader_tx, mut is_leader) = watch::channel(false);
    let elector = leader::Elector::new(
        client.clone(),
        &config.namespace,
        CONTROLLER_LEASE,
        &config.identity,
        config.lease_duration,
    );
    let elect_stop = CancellationToken::new();
    // Held in a JoinSet so that dropping `run` (a crash in tests) aborts
    // the elector too, instead of leaving it renewing a dead leader's Lease.
    let mut elect_task = JoinSet::new();
    elect_task.spawn({
        let stop = elect_stop.clone();
        let metrics = metrics.clone();
        async move { elector.run(leader_tx, metrics, stop).await }
    });

    tokio::select! {
        _ = caches.wait_ready() => {}
        _ = shutdown.cancelled() => {}
    }
    health.set_ready(true);
    tracing::info!(identity = %config.identity, "caches synced; standing by for leadership");

    while !shutdown.is_cancelled() {
        if !*is_leader.borrow_and_update() {
            tokio::select! {
                _ = is_leader.changed() => continue,
                _ = shutdown.cancelled() => break,
            }
        }
        let stop_leading = CancellationToken::new();
        let watch_stop = stop_leading.clone();
        let mut rx = is_leader.clone();
        let mut watcher_task = JoinSet::new();
        watcher_task.spawn(async move {
            while rx.changed().await.is_ok() {
                if !*rx.borrow() {
                    break;
                }
            }
            watch_stop.cancel();
        });
        tracing::info!(identity = %config.identity, "leading: rebuilding allocation state from Service status");
        let lead_token = stop_leading.clone();
        tokio::select! {
            _ = lead(&config, &client, &caches, &metrics, lead_token) => {}
            _ = shutdown.cancelled() => stop_leading.cancel(),
        }
        watcher_task.abort_all();
        tracing::info!("no longer leading");
    }
    // Step down (releases the Lease) before exiting.
    elect_stop.cancel();
    while elect_task.join_next().await.is_some() {}
    tasks.abort_all();
    Ok(())
}

/// Outcome of one status write, fed back into the lead loop.
struct WriteDone {
    /// The Service written.
    key: ServiceKey,
    /// When to decide again, if the write did not land: shortly after a 409
    /// (the watch is about to deliver the newer object), later and with
    /// jitter after other errors so a struggling API server is not hammered
    /// in lockstep.
    retry_after: Option<Duration>,
    /// After a successful write: the resourceVersion it was conditional on.
    /// Until the watch shows a newer object, the cached one is stale.
    written_from: Option<String>,
}

/// Deadline of each API request the controller makes (never its watches).
/// One that takes longer is stuck on a connection the network cut; it is
/// logged and retried like any failed request. Generous: a burst of status
/// writes may queue in the API server's fairness queues for seconds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn jittered(base: Duration) -> Duration {
    use rand::Rng;
    base + base.mul_f64(rand::rng().random_range(0.0..1.0))
}

async fn lead(
    config: &ControllerConfig,
    client: &Client,
    caches: &Caches,
    metrics: &Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut core = Core::new(crate::model::ClassFilter::new(config.require_class));
    let ns_labels = |ns: &str| caches.ns_labels(ns);
    let services = caches.services.state();
    let pools = caches.pools.state();
    caches.take_dirty();
    let actions = core.start(&services, &pools, &ns_labels);
    metrics.record_state(core.allocator());

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "l2lb-controller".into(),
            instance: Some(config.identity.clone()),
        },
    );
    let writes = Arc::new(Semaphore::new(config.max_concurrent_writes));
    let events = Arc::new(Semaphore::new(8));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<WriteDone>();
    let mut in_flight: HashSet<ServiceKey> = HashSet::new();
    let mut deferred: HashSet<ServiceKey> = HashSet::new();
    // Services whose cached object predates our own landed write (by the
    // resourceVersion the write was conditional on). Deciding on such an
    // object would write again and fail with 409; the watch delivers the
    // newer object and marks the Service dirty anyway.
    let mut written_from: HashMap<ServiceKey, String> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut pool_status_dirty = true;
    let mut pool_tick = tokio::time::interval(Duration::from_secs(1));
    pool_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // Events wait until no status write is in flight: the address is what
    // users wait for, and on a busy API server Events would slow it down.
    let mut queued_events: Vec<(Arc<Service>, Reason, String)> = Vec::new();
    let flush_events = |queued: &mut Vec<(Arc<Service>, Reason, String)>,
                        tasks: &mut JoinSet<()>| {
        for (service, reason, note) in queued.drain(..) {
            let recorder = recorder.clone();
            let events = events.clone();
            tasks.spawn(async move {
                let Ok(_permit) = events.acquire_owned().await else { return };
                let ev = KubeEvent {
                    type_: if reason.is_warning() { EventType::Warning } else { EventType::Normal },
                    reason: reason.to_string(),
                    note: Some(note),
                    action: "Allocate".into(),
                    secondary: None,
                };
                let regarding = service.object_ref(&());
                if let Err(e) = crate::cluster::with_timeout(REQUEST_TIMEOUT, recorder.publish(&ev, &regarding)).await {
                    tracing::debug!(service = %convert::service_key(&service), error = %e, "cannot record event");
                }
            });
        }
    };
    let dispatch = |actions: Vec<Action>,
                    in_flight: &mut HashSet<ServiceKey>,
                    deferred: &mut HashSet<ServiceKey>,
                    queued_events: &mut Vec<(Arc<Service>, Reason, String)>,
                    tasks: &mut JoinSet<()>| {
        // Collapse to the last status write per Service: it reflects the
        // final decision of this round.
        let mut last_write: BTreeMap<ServiceKey, (Arc<Service>, Vec<std::net::IpAddr>)> =
            BTreeMap::new();
        for action in actions {
            match action {
                Action::WriteStatus { service, ips } => {
                    last_write.insert(convert::service_key(&service), (service, ips));
                }
                Action::Event {
                    service,
                    reason,
                    note,
                } => {
                    metrics.record_event(reason);
                    queued_events.push((service, reason, note));
                }
            }
        }
        for (key, (service, ips)) in last_write {
            if in_flight.contains(&key) {
                // One write per Service at a time; decide again once the
                // current one lands and the watch shows its result.
                deferred.insert(key);
                continue;
            }
            in_flight.insert(key.clone());
            let (client, writes, done) = (client.clone(), writes.clone(), done_tx.clone());
            tasks.spawn(async move {
                let Ok(_permit) = writes.acquire_owned().await else { return };
                let retry_after = match write_status(&client, &service, &ips).await {
                    Ok(()) => None,
                    Err(kube::Error::Api(s)) if s.code == 409 => Some(jittered(Duration::from_millis(20))),
                    Err(e) => {
                        tracing::warn!(service = %key, error = %e, "status write failed; will retry");
                        Some(jittered(Duration::from_millis(500)))
                    }
                };
                let written_from = retry_after.is_none().then(|| service.resource_version()).flatten();
                let _ = done.send(WriteDone { key, retry_after, written_from });
            });
        }
    };
    dispatch(
        actions,
        &mut in_flight,
        &mut deferred,
        &mut queued_events,
        &mut tasks,
    );
    if in_flight.is_empty() {
        flush_events(&mut queued_events, &mut tasks);
    }

    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = caches.changed.notified() => {}
            Some(done) = done_rx.recv() => {
                in_flight.remove(&done.key);
                match done.written_from {
                    Some(rv) => { written_from.insert(done.key.clone(), rv); }
                    None => { written_from.remove(&done.key); }
                }
                let was_deferred = deferred.remove(&done.key);
                if in_flight.is_empty() {
                    flush_events(&mut queued_events, &mut tasks);
                }
                if let Some(delay) = done.retry_after.or(was_deferred.then_some(Duration::ZERO)) {
                    let caches = caches.clone();
                    tasks.spawn(async move {
                        tokio::time::sleep(delay).await;
                        caches.dirty.lock().unwrap_or_else(|p| p.into_inner()).services.insert(done.key);
                        caches.changed.notify_one();
                    });
                }
            }
            _ = pool_tick.tick() => {
                if pool_status_dirty {
                    pool_status_dirty = false;
                    let (pools, ads) = (caches.pools.state(), caches.advertisements.state());
                    write_pool_statuses(client, &config.namespace, &core, &pools, &ads).await;
                }
                while tasks.try_join_next().is_some() {}
                continue;
            }
        }
        let dirty = caches.take_dirty();
        pool_status_dirty |= dirty.advertisements;
        if !dirty.pools && dirty.services.is_empty() {
            continue;
        }
        let started = Instant::now();
        let mut actions = Vec::new();
        let mut released = false;
        if dirty.pools {
            actions.extend(core.sync_pools(
                &caches.services.state(),
                &caches.pools.state(),
                &ns_labels,
            ));
        }
        let mut keys: Vec<ServiceKey> = dirty.services.into_iter().collect();
        keys.sort();
        for key in &keys {
            if in_flight.contains(key) {
                deferred.insert(key.clone());
                continue;
            }
            let obj = caches
                .services
                .get(&reflector::ObjectRef::new(&key.name).within(&key.namespace));
            let cached_rv = obj.as_ref().and_then(|o| o.resource_version());
            match written_from.get(key) {
                Some(from) if cached_rv.as_ref() == Some(from) => continue,
                Some(_) => {
                    written_from.remove(key);
                }
                None => {}
            }
            let held_before = core.allocator().assignment(key).is_some();
            actions.extend(core.reconcile(key, obj.as_ref(), &ns_labels));
            released |= held_before && core.allocator().assignment(key).is_none();
        }
        if released {
            // Freed addresses may satisfy Services that were waiting.
            for key in core.pending() {
                let obj = caches
                    .services
                    .get(&reflector::ObjectRef::new(&key.name).within(&key.namespace));
                actions.extend(core.reconcile(&key, obj.as_ref(), &ns_labels));
            }
        }
        metrics.observe_reconcile(started.elapsed());
        metrics.record_state(core.allocator());
        pool_status_dirty = true;
        dispatch(
            actions,
            &mut in_flight,
            &mut deferred,
            &mut queued_events,
            &mut tasks,
        );
        if in_flight.is_empty() {
            flush_events(&mut queued_events, &mut tasks);
        }
    }
    tasks.abort_all();
}

async fn write_status(
    client: &Client,
    svc: &Service,
    ips: &[std::net::IpAddr],
) -> Result<(), kube::Error> {
    let api: Api<Service> = Api::namespaced(client.clone(), &svc.namespace().unwrap_or_default());
    // resourceVersion in a merge patch is a precondition: the write fails
    // with 409 if the Service changed since the decision was made.
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": svc.resource_version() },
        "status": { "loadBalancer": convert::load_balancer_status(ips) },
    });
    let patch = if ips.is_empty() {
        serde_json::json!({
            "metadata": { "resourceVersion": svc.resource_version() },
            "status": { "loadBalancer": { "ingress": null } },
        })
    } else {
        patch
    };
    crate::cluster::with_timeout(
        REQUEST_TIMEOUT,
        api.patch_status(
            &svc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        ),
    )
    .await?;
    Ok(())
}

async fn write_pool_statuses(
    client: &Client,
    namespace: &str,
    core: &Core,
    pools: &[Arc<IPAddressPool>],
    ads: &[Arc<L2Advertisement>],
) {
    let api: Api<IPAddressPool> = Api::namespaced(client.clone(), namespace);
    let now = jiff::Timestamp::now();
    for (name, mut status) in core.pool_statuses(pools, ads) {
        let Some(pool) = pools.iter().find(|p| p.name_any() == name) else {
            continue;
        };
        let old = pool.status.as_ref();
        if old.is_some_and(|o| core::same_pool_status(o, &status)) {
            continue;
        }
        core::stamp_conditions(&mut status, old, now);
        let patch = serde_json::json!({ "status": status });
        if let Err(e) = crate::cluster::with_timeout(
            REQUEST_TIMEOUT,
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await
        {
            tracing::warn!(pool = %name, error = %e, "cannot update pool status");
        }
    }
}
