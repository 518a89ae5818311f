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

mod caches;
mod config;
pub mod core;
#[cfg(test)]
mod fixtures;
mod lead;
mod leader;
mod metrics;
mod pool_status;
mod writer;

use crate::api::CONTROLLER_LEASE;
use crate::telemetry::{self, Health};
use caches::spawn_watchers;
use kube::Client;
use metrics::Metrics;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use crate::model::ServiceKey;
pub use config::{ConfigError, ControllerArgs, ControllerConfig, ControllerError};

/// Runs the controller until `shutdown` fires. On shutdown a leader steps
/// down at once so a standby takes over without waiting for the Lease.
pub async fn run(
    config: ControllerConfig,
    client: Client,
    shutdown: CancellationToken,
) -> Result<(), ControllerError> {
    config.validate()?;
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
            _ = lead::lead(&config, &client, &caches, &metrics, lead_token) => {}
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
