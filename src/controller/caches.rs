//! The controller's watch caches: Services, pools, L2Advertisements and
//! Namespaces as the API server last showed them, plus the [`Dirty`] set
//! that tells the lead loop what changed since it last looked.
//!
//! Every replica keeps these warm while standing by, so a new leader decides
//! from a full picture at once. This module only records changes; it never
//! decides anything and never writes to the API server.

use crate::api::{IPAddressPool, L2Advertisement};
use crate::labels::Labels;
use crate::model::{self, ServiceKey};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::Instrument;

/// What changed since the lead loop last looked.
#[derive(Default)]
pub(super) struct Dirty {
    /// Services whose object changed or disappeared.
    pub(super) services: HashSet<ServiceKey>,
    /// Pools or namespace labels changed: every Service may be affected.
    pub(super) pools: bool,
    /// L2Advertisements changed: only pools' `Advertised` condition is.
    pub(super) advertisements: bool,
}

impl Dirty {
    /// Whether any allocation may have to change (advertisements alone
    /// only touch pool status).
    pub(super) fn needs_decision(&self) -> bool {
        self.pools || !self.services.is_empty()
    }
}

/// The shared [`Dirty`] set and the wake-up of the lead loop. Watch tasks
/// and the status writer's retries mark through it.
#[derive(Clone, Default)]
pub(super) struct Marks {
    /// Accumulates changes until the lead loop takes them.
    dirty: Arc<Mutex<Dirty>>,
    /// Wakes the lead loop; `notify_one` keeps a permit when nobody waits,
    /// so a change made while the loop is busy is not lost.
    changed: Arc<Notify>,
}

impl Marks {
    fn mark(&self, f: impl FnOnce(&mut Dirty)) {
        // A panicking holder cannot leave `Dirty` half-updated in a way
        // that matters: at worst a Service is decided once more.
        f(&mut self.dirty.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_one();
    }

    /// Asks the lead loop to decide `key` again.
    pub(super) fn mark_service(&self, key: ServiceKey) {
        self.mark(|d| {
            d.services.insert(key);
        });
    }

    fn mark_pools(&self) {
        self.mark(|d| d.pools = true);
    }
}

/// Watch caches shared by standby and leading phases.
#[derive(Clone)]
pub(super) struct Caches {
    /// Every Service in the cluster (class filtering is the core's job).
    pub(super) services: Store<Service>,
    /// Pools in the install namespace.
    pub(super) pools: Store<IPAddressPool>,
    /// Advertisements in the install namespace, for pools' `Advertised`.
    pub(super) advertisements: Store<L2Advertisement>,
    /// Namespaces, for their labels (pools' `namespaceSelectors`).
    namespaces: Store<Namespace>,
    /// What changed, and the lead loop's wake-up.
    marks: Marks,
}

impl Caches {
    /// The labels of namespace `ns` (none if it is not cached).
    pub(super) fn ns_labels(&self, ns: &str) -> Labels {
        self.namespaces
            .get(&ObjectRef::new(ns))
            .map(|n| n.labels().clone())
            .unwrap_or_default()
    }

    /// The cached Service `key`, `None` once it is deleted.
    pub(super) fn service(&self, key: &ServiceKey) -> Option<Arc<Service>> {
        self.services
            .get(&ObjectRef::new(&key.name).within(&key.namespace))
    }

    /// Everything marked since the last call.
    pub(super) fn take_dirty(&self) -> Dirty {
        std::mem::take(&mut *self.marks.dirty.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Resolves when something was marked since the last wake-up.
    pub(super) async fn changed(&self) {
        self.marks.changed.notified().await
    }

    /// A handle to mark Services dirty from elsewhere (write retries).
    pub(super) fn marks(&self) -> Marks {
        self.marks.clone()
    }

    /// Resolves once every watch has listed.
    pub(super) async fn wait_ready(&self) {
        let _ = tokio::join!(
            self.services.wait_until_ready(),
            self.pools.wait_until_ready(),
            self.advertisements.wait_until_ready(),
            self.namespaces.wait_until_ready()
        );
    }
}

/// Starts one watch per kind in `tasks` and returns their caches.
pub(super) fn spawn_watchers(client: &Client, namespace: &str, tasks: &mut JoinSet<()>) -> Caches {
    let marks = Marks::default();
    let services = cached(
        Api::<Service>::all(client.clone()),
        "Service",
        tasks,
        on_service(marks.clone()),
    );
    let pools = cached(
        Api::<IPAddressPool>::namespaced(client.clone(), namespace),
        "IPAddressPool",
        tasks,
        on_pool(marks.clone()),
    );
    let advertisements = cached(
        Api::<L2Advertisement>::namespaced(client.clone(), namespace),
        "L2Advertisement",
        tasks,
        on_advertisement(marks.clone()),
    );
    let namespaces = cached(
        Api::<Namespace>::all(client.clone()),
        "Namespace",
        tasks,
        on_namespace(marks.clone()),
    );
    Caches {
        services,
        pools,
        advertisements,
        namespaces,
        marks,
    }
}

/// A Service event marks that Service; the end of a (re-)list marks the
/// pools, so a full pass finds Services deleted while the watch was down.
fn on_service(marks: Marks) -> impl FnMut(watcher::Event<Service>) + Send + 'static {
    move |ev| match ev {
        watcher::Event::Apply(s) | watcher::Event::Delete(s) | watcher::Event::InitApply(s) => {
            marks.mark_service(model::service_key(&s));
        }
        watcher::Event::InitDone => marks.mark_pools(),
        watcher::Event::Init => {}
    }
}

/// A pool event marks the pools only when its spec generation or labels
/// changed: our own status writes come back through this watch, and must
/// not re-decide every Service.
fn on_pool(marks: Marks) -> impl FnMut(watcher::Event<IPAddressPool>) + Send + 'static {
    let mut seen: HashMap<String, (Option<i64>, Labels)> = HashMap::new();
    move |ev| match ev {
        watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
            let now = (p.metadata.generation, p.labels().clone());
            if seen.insert(p.name_any(), now.clone()) != Some(now) {
                marks.mark_pools();
            }
        }
        watcher::Event::Delete(p) => {
            seen.remove(&p.name_any());
            marks.mark_pools();
        }
        watcher::Event::Init => {}
        watcher::Event::InitDone => marks.mark_pools(),
    }
}

/// Advertisements only feed pools' `Advertised` condition.
fn on_advertisement(marks: Marks) -> impl FnMut(watcher::Event<L2Advertisement>) + Send + 'static {
    move |ev| {
        if !matches!(ev, watcher::Event::Init) {
            marks.mark(|d| d.advertisements = true);
        }
    }
}

/// Only namespace labels matter to allocation (`namespaceSelectors`), and
/// they may change which pools admit every Service in the namespace.
fn on_namespace(marks: Marks) -> impl FnMut(watcher::Event<Namespace>) + Send + 'static {
    move |ev| {
        if matches!(
            ev,
            watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone
        ) {
            marks.mark_pools();
        }
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
    let watch = async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => on_event(ev),
                Err(e) => tracing::warn!(kind, error = %e, "watch failed; retrying"),
            }
        }
    };
    tasks.spawn(watch.instrument(tracing::info_span!("watch", kind)));
    store
}
