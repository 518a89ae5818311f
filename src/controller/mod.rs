//! `l2lb controller`: hands out Service addresses from pools and publishes
//! them in `status.loadBalancer.ingress`.
//!
//! Tasks and the data between them (span names in brackets):
//!
//! ```text
//!  caches.rs [watch]: Services, pools, L2Advertisements, Namespaces
//!        │ stores + Dirty set (Marks wakes the loop)
//!        ▼
//!  leader.rs [leader_election] ──is_leader──► lead.rs [controller]: lead loop
//!                                               │ decide: core.rs (pure) ──► Vec<Action>
//!                                               │                               ▼
//!                                               │         writer.rs [status_writer]: StatusWriter
//!                                               │           status patches (bounded, one per
//!                                               │           Service, RV-checked), then Events
//!                                               │           retries / deferrals ──► Marks
//!                                               ▼
//!                                  pool_status.rs: pool status (≤ 1/s, only when changed)
//! ```
//!
//! Files, one job each: `config` (flags → validated config), `caches`
//! (watches), `leader` (the Lease), `lead` (one term of leadership),
//! `core` (allocation decisions, no I/O), `writer` (Service status and
//! Events), `pool_status` (pool status), `metrics`.
//!
//! Replicas keep their caches warm while standing by; only the leader holds
//! an allocator and writes. Every status write is conditional on the
//! resourceVersion the decision was made from, so a deposed leader's late
//! write fails with 409 instead of clobbering. The caller serves telemetry
//! (see [`run`]). The controller never talks to nodes or sockets; the
//! speaker announces what this publishes.

mod caches;
mod config;
pub mod core;
mod fastpath_secret;
#[cfg(test)]
mod fixtures;
mod lead;
mod leader;
mod metrics;
mod pool_status;
mod writer;

use crate::api::CONTROLLER_LEASE;
use caches::{Caches, spawn_watchers};
use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};

pub use crate::model::ServiceKey;
pub use config::{ConfigError, ControllerArgs, ControllerConfig, ControllerError};
pub use metrics::ControllerMetrics;

/// Runs the controller until `shutdown` fires. On shutdown a leader steps
/// down at once so a standby takes over without waiting for the Lease.
///
/// The caller owns telemetry, as for the speaker: it registers
/// `config.metrics` in its registry and serves it with `config.health` on
/// `config.metrics_addr` (or not at all, in tests and benches).
pub async fn run(
    config: ControllerConfig,
    client: Client,
    shutdown: CancellationToken,
) -> Result<(), ControllerError> {
    config.validate()?;
    let span = info_span!("controller", identity = %config.identity);
    run_replica(config, client, shutdown).instrument(span).await
}

/// One replica: watch caches, the elector, and leading while elected.
async fn run_replica(
    config: ControllerConfig,
    client: Client,
    shutdown: CancellationToken,
) -> Result<(), ControllerError> {
    let mut watchers = JoinSet::new();
    let caches = spawn_watchers(&client, &config.namespace, &mut watchers);
    if let Some(name) = &config.fastpath_secret {
        watchers.spawn(
            fastpath_secret::ensure(client.clone(), config.namespace.clone(), name.clone())
                .instrument(info_span!("fastpath_secret")),
        );
    }
    let (leader_tx, is_leader) = watch::channel(false);
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
    elect_task.spawn(
        elector
            .run(leader_tx, config.metrics.clone(), elect_stop.clone())
            .instrument(info_span!("leader_election", lease = CONTROLLER_LEASE)),
    );

    tokio::select! {
        _ = caches.wait_ready() => {}
        _ = shutdown.cancelled() => {}
    }
    config.health.set_ready(true);
    tracing::info!(identity = %config.identity, "caches synced; standing by for leadership");
    let outcome = follow_leadership(&config, &client, &caches, is_leader, &shutdown).await;

    // Step down (releases the Lease) before exiting.
    elect_stop.cancel();
    while elect_task.join_next().await.is_some() {}
    watchers.abort_all();
    outcome
}

/// Leads whenever the elector says this replica holds the Lease, and stands
/// by otherwise, until `shutdown`. A term ends by dropping the lead loop,
/// which aborts the writes it still had pending.
async fn follow_leadership(
    config: &ControllerConfig,
    client: &Client,
    caches: &Caches,
    mut is_leader: watch::Receiver<bool>,
    shutdown: &CancellationToken,
) -> Result<(), ControllerError> {
    // `biased`: shutdown and deposition are checked before (re)starting the
    // lead loop, so a replica told to stop never begins a term.
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            elected = is_leader.wait_for(|leading| *leading) => {
                // The elector only stops when told to; if it is gone,
                // leadership can no longer be known, so never act on it.
                if elected.is_err() {
                    return Err(ControllerError::TaskStopped { task: "leader election" });
                }
            }
        }
        tracing::info!(identity = %config.identity, "leading: rebuilding allocation state from Service status");
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {}
            _ = is_leader.wait_for(|leading| !*leading) => {}
            _ = lead::lead(config, client, caches) => {}
        }
        tracing::info!("no longer leading");
        if shutdown.is_cancelled() {
            return Ok(());
        }
    }
}

/// Deadline of each API request the controller makes (never its watches).
/// One that takes longer is stuck on a connection the network cut; it is
/// logged and retried like any failed request. Generous: a burst of status
/// writes may queue in the API server's fairness queues for seconds.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
