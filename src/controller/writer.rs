//! The status writer: carries the leader's [`Action`]s to the API server.
//!
//! It owns everything about writing and nothing about deciding: at most one
//! status write per Service in flight, at most `--max-concurrent-writes` in
//! all, each a merge patch conditional on the resourceVersion the decision
//! was made from (a deposed leader's late write fails with 409 instead of
//! clobbering); failed writes are decided again after a delay; Events wait
//! until no status write is in flight. It never looks at pools or the
//! allocator, and it lives only as long as one term of leadership: dropping
//! it aborts every write still pending.

use super::caches::Marks;
use super::core::Action;
use super::metrics::ControllerMetrics;
use crate::api::events::Reason;
use crate::model::{self, ServiceKey};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinSet;
use tracing::{Instrument, Span, info_span};

/// Event requests in flight at once. Events are best effort and come after
/// the addresses users wait for, so a few at a time is enough.
const CONCURRENT_EVENTS: usize = 8;

/// Delay before deciding again after a 409: the watch is about to deliver
/// the newer object, which usually makes the retry unnecessary.
const CONFLICT_RETRY: Duration = Duration::from_millis(20);

/// Delay before deciding again after any other failed write, so a
/// struggling API server is not hammered.
const ERROR_RETRY: Duration = Duration::from_millis(500);

/// Outcome of one status write, fed back into the lead loop.
pub(super) struct WriteDone {
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

/// An Event decided by the core, held back while status writes are in flight.
struct QueuedEvent {
    /// The Service it is recorded on.
    service: Arc<Service>,
    /// Why (also decides Warning or Normal).
    reason: Reason,
    /// The human-readable detail.
    note: String,
}

/// Writes Service status and Events for one term of leadership.
pub(super) struct StatusWriter {
    /// Patches Service status.
    client: Client,
    /// Publishes Events as this replica, one recorder per distinct note.
    recorders: Recorders,
    /// Bounds status writes in flight (`--max-concurrent-writes`).
    writes: Arc<Semaphore>,
    /// Bounds Event requests in flight ([`CONCURRENT_EVENTS`]).
    events: Arc<Semaphore>,
    /// Counts Events by reason as they are decided.
    metrics: ControllerMetrics,
    /// Marks a Service dirty again after a failed or deferred write.
    marks: Marks,
    /// Write tasks report here.
    done_tx: UnboundedSender<WriteDone>,
    /// The lead loop waits on this through [`StatusWriter::next_done`].
    done_rx: UnboundedReceiver<WriteDone>,
    /// Services with a write in flight: one write per Service at a time, so
    /// two writes of one Service never race each other.
    in_flight: HashSet<ServiceKey>,
    /// Services that changed while their write was in flight; decided again
    /// once it lands and the watch shows its result.
    deferred: HashSet<ServiceKey>,
    /// Services whose cached object predates our own landed write (by the
    /// resourceVersion the write was conditional on). Deciding on such an
    /// object would write again and fail with 409; the watch delivers the
    /// newer object and marks the Service dirty anyway.
    written_from: HashMap<ServiceKey, String>,
    /// Events waiting until no status write is in flight: the address is
    /// what users wait for, and on a busy API server Events would slow it
    /// down.
    queued_events: Vec<QueuedEvent>,
    /// Write, Event and retry tasks; dropping the writer aborts them.
    tasks: JoinSet<()>,
    /// The `status_writer` span every task above runs in.
    span: Span,
}

impl StatusWriter {
    /// A writer publishing Events as `identity`, with at most
    /// `max_concurrent_writes` status writes in flight.
    pub(super) fn new(
        client: &Client,
        identity: &str,
        max_concurrent_writes: usize,
        metrics: ControllerMetrics,
        marks: Marks,
    ) -> Self {
        let reporter = Reporter {
            controller: "l2lb-controller".into(),
            instance: Some(identity.to_string()),
        };
        let (done_tx, done_rx) = unbounded_channel();
        Self {
            client: client.clone(),
            recorders: Recorders::new(client, reporter),
            writes: Arc::new(Semaphore::new(max_concurrent_writes)),
            events: Arc::new(Semaphore::new(CONCURRENT_EVENTS)),
            metrics,
            marks,
            done_tx,
            done_rx,
            in_flight: HashSet::new(),
            deferred: HashSet::new(),
            written_from: HashMap::new(),
            queued_events: Vec::new(),
            tasks: JoinSet::new(),
            span: info_span!("status_writer"),
        }
    }

    /// Starts the status writes of one round of decisions and queues its
    /// Events. Only the last write per Service counts: it reflects the
    /// round's final decision.
    pub(super) fn dispatch(&mut self, actions: Vec<Action>) {
        for (key, (service, ips)) in self.last_write_per_service(actions) {
            if !self.defer_if_busy(&key) {
                self.spawn_write(key, service, ips);
            }
        }
        self.flush_events();
    }

    /// Whether `key` has a write in flight; if so, it is decided again once
    /// that write lands (one write per Service at a time).
    pub(super) fn defer_if_busy(&mut self, key: &ServiceKey) -> bool {
        let busy = self.in_flight.contains(key);
        if busy {
            self.deferred.insert(key.clone());
        }
        busy
    }

    /// Whether the cached object of `key` (at `cached_rv`) is the one our
    /// last landed write was based on, so deciding on it would only earn a
    /// 409. Once the cache shows a newer object the landed write is
    /// forgotten.
    pub(super) fn is_stale(&mut self, key: &ServiceKey, cached_rv: Option<&str>) -> bool {
        match self.written_from.get(key) {
            Some(from) if cached_rv == Some(from.as_str()) => true,
            Some(_) => {
                self.written_from.remove(key);
                false
            }
            None => false,
        }
    }

    /// The next write outcome; never `None` while the writer lives (it
    /// holds a sender itself).
    pub(super) async fn next_done(&mut self) -> Option<WriteDone> {
        self.done_rx.recv().await
    }

    /// Records a write outcome and schedules the Service to be decided
    /// again if the write failed or the Service changed meanwhile.
    pub(super) fn on_done(&mut self, done: WriteDone) {
        let WriteDone {
            key,
            retry_after,
            written_from,
        } = done;
        self.in_flight.remove(&key);
        match written_from {
            Some(rv) => self.written_from.insert(key.clone(), rv),
            None => self.written_from.remove(&key),
        };
        let was_deferred = self.deferred.remove(&key);
        self.flush_events();
        if let Some(delay) = retry_after.or(was_deferred.then_some(Duration::ZERO)) {
            let marks = self.marks.clone();
            let retry = async move {
                tokio::time::sleep(delay).await;
                marks.mark_service(key);
            };
            self.tasks.spawn(retry.instrument(self.span.clone()));
        }
    }

    /// Collects finished tasks so the set does not grow for the whole term.
    pub(super) fn reap(&mut self) {
        while self.tasks.try_join_next().is_some() {}
    }

    /// Counts and queues the Events of `actions`; returns the last status
    /// write per Service, in key order.
    fn last_write_per_service(
        &mut self,
        actions: Vec<Action>,
    ) -> BTreeMap<ServiceKey, (Arc<Service>, Vec<IpAddr>)> {
        let mut last_write = BTreeMap::new();
        for action in actions {
            match action {
                Action::WriteStatus { service, ips } => {
                    last_write.insert(model::service_key(&service), (service, ips));
                }
                Action::Event {
                    service,
                    reason,
                    note,
                } => {
                    self.metrics.record_event(reason);
                    self.queued_events.push(QueuedEvent {
                        service,
                        reason,
                        note,
                    });
                }
            }
        }
        last_write
    }

    fn spawn_write(&mut self, key: ServiceKey, service: Arc<Service>, ips: Vec<IpAddr>) {
        self.in_flight.insert(key.clone());
        let (client, writes, done) = (
            self.client.clone(),
            self.writes.clone(),
            self.done_tx.clone(),
        );
        let write = async move {
            let Ok(_permit) = writes.acquire_owned().await else {
                return;
            };
            let _ = done.send(write_once(&client, key, &service, &ips).await);
        };
        self.tasks.spawn(write.instrument(self.span.clone()));
    }

    /// Sends the queued Events, but only once no status write is in flight.
    fn flush_events(&mut self) {
        if !self.in_flight.is_empty() {
            return;
        }
        for event in self.queued_events.drain(..) {
            let recorder = self.recorders.for_event(&event);
            let events = self.events.clone();
            let send = async move {
                let Ok(_permit) = events.acquire_owned().await else {
                    return;
                };
                publish(&recorder, event).await;
            };
            self.tasks.spawn(send.instrument(self.span.clone()));
        }
    }
}

/// kube's `Recorder` folds every Event with the same reason and object
/// into one series and keeps the *first* note: a Service that moves twice
/// within its cache TTL would show `IPAllocated` naming the old address.
/// So each (Service, reason) gets a fresh recorder whenever its note
/// changes; repeats of the same note still fold into a series.
struct Recorders {
    /// Clone source of every recorder.
    client: Client,
    /// Who reports (this replica).
    reporter: Reporter,
    /// The last note per (Service, reason) and the recorder that sent it.
    /// At most one entry per Service and reason; it lasts one term.
    by_note: HashMap<(ServiceKey, Reason), (String, Recorder)>,
}

impl Recorders {
    fn new(client: &Client, reporter: Reporter) -> Self {
        Self {
            client: client.clone(),
            reporter,
            by_note: HashMap::new(),
        }
    }

    /// The recorder to publish `event` with.
    fn for_event(&mut self, event: &QueuedEvent) -> Recorder {
        let key = (model::service_key(&event.service), event.reason);
        match self.by_note.get(&key) {
            Some((note, recorder)) if *note == event.note => recorder.clone(),
            _ => {
                let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
                self.by_note
                    .insert(key, (event.note.clone(), recorder.clone()));
                recorder
            }
        }
    }
}

/// Writes `ips` into `service`'s status and says what the lead loop should
/// do next.
async fn write_once(
    client: &Client,
    key: ServiceKey,
    service: &Service,
    ips: &[IpAddr],
) -> WriteDone {
    let retry_after = match write_status(client, service, ips).await {
        Ok(()) => None,
        Err(kube::Error::Api(s)) if s.code == 409 => Some(jittered(CONFLICT_RETRY)),
        Err(e) => {
            tracing::warn!(service = %key, error = %e, "status write failed; will retry");
            Some(jittered(ERROR_RETRY))
        }
    };
    let written_from = retry_after
        .is_none()
        .then(|| service.resource_version())
        .flatten();
    WriteDone {
        key,
        retry_after,
        written_from,
    }
}

/// `base` plus up to `base` again at random, so retries of many Services
/// spread out.
fn jittered(base: Duration) -> Duration {
    use rand::Rng;
    base + base.mul_f64(rand::rng().random_range(0.0..1.0))
}

/// Publishes `ips` (empty clears) in `svc`'s `status.loadBalancer`,
/// conditional on the resourceVersion of `svc` as it was decided on.
async fn write_status(client: &Client, svc: &Service, ips: &[IpAddr]) -> Result<(), kube::Error> {
    let api: Api<Service> = Api::namespaced(client.clone(), &svc.namespace().unwrap_or_default());
    // A merge patch cannot remove list items one by one: clearing sets the
    // whole list to null.
    let load_balancer = if ips.is_empty() {
        serde_json::json!({ "ingress": null })
    } else {
        serde_json::json!(model::load_balancer_status(ips))
    };
    // resourceVersion in a merge patch is a precondition: the write fails
    // with 409 if the Service changed since the decision was made.
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": svc.resource_version() },
        "status": { "loadBalancer": load_balancer },
    });
    let (name, params, patch) = (svc.name_any(), PatchParams::default(), Patch::Merge(&patch));
    let write = api.patch_status(&name, &params, &patch);
    crate::cluster::with_timeout(super::REQUEST_TIMEOUT, write).await?;
    Ok(())
}

/// Records `event` on its Service; a failure is logged at debug only, since
/// Events are best effort and the status already says what happened.
async fn publish(recorder: &Recorder, event: QueuedEvent) {
    let QueuedEvent {
        service,
        reason,
        note,
    } = event;
    let ev = reason.event(note, "Allocate");
    let regarding = service.object_ref(&());
    let request = recorder.publish(&ev, &regarding);
    if let Err(e) = crate::cluster::with_timeout(super::REQUEST_TIMEOUT, request).await {
        tracing::debug!(service = %model::service_key(&service), error = %e, "cannot record event");
    }
}
