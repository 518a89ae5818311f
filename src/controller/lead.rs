//! One term of leadership: rebuild the allocator from the caches, then on
//! every change decide with the [`Core`] and hand its actions to the
//! [`StatusWriter`], until leadership ends.
//!
//! This loop only moves data between the caches, the core and the writer;
//! the decisions are the core's and the writes are the writer's. Pool
//! status is written from here, at most once a second and only when
//! something that feeds it changed.

use super::caches::{Caches, Dirty};
use super::config::ControllerConfig;
use super::core::{Action, Core};
use super::pool_status;
use super::writer::StatusWriter;
use crate::model::{ClassFilter, ServiceKey};
use kube::{Client, ResourceExt};
use std::time::{Duration, Instant};
use tokio::time::{Interval, MissedTickBehavior};

/// How often pool status may be written: counts change with every
/// allocation, and one write per pool per burst is plenty.
const POOL_STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Leads until dropped (the caller drops it when leadership ends or on
/// shutdown). Every write made here is conditional on the object it was
/// decided from, so a term that ends late cannot clobber the next one.
pub(super) async fn lead(config: &ControllerConfig, client: &Client, caches: &Caches) {
    let metrics = &config.metrics;
    let _term_metrics = metrics.term();
    let mut core = Core::new(ClassFilter::new(config.require_class));
    let mut writer = StatusWriter::new(
        client,
        &config.identity,
        config.max_concurrent_writes,
        metrics.clone(),
        caches.marks(),
    );
    // Start decides every Service: whatever was marked before is covered.
    caches.take_dirty();
    let ns_labels = |ns: &str| caches.ns_labels(ns);
    let actions = core.start(&caches.services.state(), &caches.pools.state(), &ns_labels);
    metrics.record_state(core.allocator());
    writer.dispatch(actions);

    let mut pool_tick = pool_status_ticker();
    let mut pool_status_dirty = true;
    loop {
        tokio::select! {
            _ = caches.changed() => {}
            Some(done) = writer.next_done() => writer.on_done(done),
            _ = pool_tick.tick() => {
                if std::mem::take(&mut pool_status_dirty) {
                    write_pool_status(client, config, &core, caches).await;
                }
                writer.reap();
                continue;
            }
        }
        let dirty = caches.take_dirty();
        pool_status_dirty |= dirty.advertisements;
        if !dirty.needs_decision() {
            continue;
        }
        let started = Instant::now();
        let actions = decide(&mut core, caches, &mut writer, dirty);
        metrics.observe_reconcile(started.elapsed());
        metrics.record_state(core.allocator());
        pool_status_dirty = true;
        writer.dispatch(actions);
    }
}

/// Writes the status of every pool whose status would say something new,
/// and publishes the pools' conditions and the assigned addresses as
/// metrics (both cost O(pools + Services): once a second is enough for
/// alerts scraped every few seconds).
async fn write_pool_status(
    client: &Client,
    config: &ControllerConfig,
    core: &Core,
    caches: &Caches,
) {
    let (pools, ads) = (caches.pools.state(), caches.advertisements.state());
    let desired = pool_status::desired(core.allocator(), core.malformed_pools(), &pools, &ads);
    config.metrics.record_pool_status(&desired);
    config.metrics.record_assignments(core.allocator());
    pool_status::write_changed(client, &config.namespace, &pools, desired).await;
}

fn pool_status_ticker() -> Interval {
    let mut tick = tokio::time::interval(POOL_STATUS_INTERVAL);
    // After a slow pool status write, wait a full interval again rather than
    // writing twice in a row.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

/// Decides everything `dirty` names: the whole pool set if pools changed,
/// then each changed Service (key order, so IPAM stays deterministic), then
/// the Services waiting for an address if any address was freed or a
/// holder's request changed.
fn decide(
    core: &mut Core,
    caches: &Caches,
    writer: &mut StatusWriter,
    dirty: Dirty,
) -> Vec<Action> {
    let ns_labels = |ns: &str| caches.ns_labels(ns);
    let mut actions = Vec::new();
    if dirty.pools {
        let (services, pools) = (caches.services.state(), caches.pools.state());
        actions.extend(core.sync_pools(&services, &pools, &ns_labels));
    }
    let mut keys: Vec<ServiceKey> = dirty.services.into_iter().collect();
    keys.sort();
    let mut released = false;
    let mut retry = false;
    for key in &keys {
        let obj = caches.service(key);
        // A deleted Service is released even while its last status write is
        // in flight: that write can only fail now, and deferring the release
        // would let a Service created in the same batch take a different
        // address than the one just freed.
        if obj.is_some() && writer.defer_if_busy(key) {
            continue;
        }
        let cached_rv = obj.as_ref().and_then(|o| o.resource_version());
        if writer.is_stale(key, cached_rv.as_deref()) {
            continue;
        }
        let held_before = core.allocator().assignment(key).is_some();
        let request_before = core.allocator().request(key).cloned();
        actions.extend(core.reconcile(key, obj.as_ref(), &ns_labels));
        released |= held_before && core.allocator().assignment(key).is_none();
        // A holder whose ports, key or traffic policy changed may now be
        // able to share with a Service that was refused.
        retry |=
            request_before.is_some() && core.allocator().request(key) != request_before.as_ref();
    }
    if released || retry {
        // Freed addresses, or changed sharers, may satisfy Services that
        // were waiting.
        for key in core.pending() {
            actions.extend(core.reconcile(&key, caches.service(&key).as_ref(), &ns_labels));
        }
    }
    actions
}
