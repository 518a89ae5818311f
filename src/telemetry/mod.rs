//! Logs, metrics and health endpoints shared by the controller and speaker.
//!
//! Owns tracing setup and the small HTTP server that serves `/metrics`
//! (Prometheus text), `/healthz` and `/readyz`. It must never make decisions:
//! components only publish their state into [`Health`] and the registry.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio_util::sync::CancellationToken;

/// Installs the global tracing subscriber: `RUST_LOG`-style filtering
/// (default `info`), compact lines on stderr. Safe to call twice.
pub fn init_tracing() {
    let spec = filter_spec(std::env::var("RUST_LOG").ok().as_deref());
    let filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter_spec(None)));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// The log filter for `RUST_LOG` (`None`: unset). kube-leader-election
/// logs at info on every attempt, "lease is held by … and has not yet
/// expired" every two seconds on a standby; the components log leadership
/// and acquisitions themselves, so its info lines are dropped unless
/// `RUST_LOG` names the crate.
fn filter_spec(rust_log: Option<&str>) -> String {
    let spec = rust_log
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("info");
    if spec.contains("kube_leader_election") {
        spec.to_string()
    } else {
        format!("{spec},kube_leader_election=warn")
    }
}

/// Liveness and readiness as the component sees itself.
#[derive(Debug, Default)]
pub struct Health {
    /// Set once the component has synced its caches and can do its job.
    ready: AtomicBool,
}

impl Health {
    /// Marks the component ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct Shared {
    registry: Arc<Registry>,
    health: Arc<Health>,
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn readyz(State(s): State<Shared>) -> StatusCode {
    if s.health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(Shared { registry, health });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// A gauge family published as a whole: each [`GaugeSet::publish`] names
/// every label set that exists now, and those it no longer names are
/// removed rather than left at their last value.
///
/// For series keyed by objects that come and go (a VIP, a pool): a stale
/// `1` for a VIP a node stopped announcing would hide exactly the outage
/// the alerts look for, and removed series end in Prometheus (marked
/// stale) instead of lingering. prometheus-client cannot list a family's
/// label sets, so the set is kept here.
#[derive(Debug)]
pub struct GaugeSet<L> {
    /// The series as scraped.
    family: Family<L, Gauge>,
    /// Label sets of the last publish: what the next one may have to remove.
    shown: Arc<Mutex<HashSet<L>>>,
}

impl<L> Default for GaugeSet<L>
where
    L: Clone + Eq + Hash,
{
    fn default() -> Self {
        Self {
            family: Family::default(),
            shown: Arc::default(),
        }
    }
}

impl<L> Clone for GaugeSet<L>
where
    L: Clone + Eq + Hash,
{
    fn clone(&self) -> Self {
        Self {
            family: self.family.clone(),
            shown: self.shown.clone(),
        }
    }
}

impl<L> GaugeSet<L>
where
    L: Clone + Eq + Hash,
{
    /// The family to register (a shared handle).
    pub fn family(&self) -> Family<L, Gauge> {
        self.family.clone()
    }

    /// Makes the family hold exactly `now`: every label set in it at its
    /// value, every other one removed.
    pub fn publish(&self, now: impl IntoIterator<Item = (L, i64)>) {
        let now: HashMap<L, i64> = now.into_iter().collect();
        // A panic elsewhere while holding the lock leaves a set that is at
        // worst a superset of the series: removing too much is harmless.
        let mut shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        for gone in shown.iter().filter(|l| !now.contains_key(*l)) {
            self.family.remove(gone);
        }
        for (labels, value) in &now {
            self.family.get_or_create(labels).set(*value);
        }
        *shown = now.into_keys().collect();
    }

    /// Removes every series.
    pub fn clear(&self) {
        self.publish(std::iter::empty());
    }
}

/// Resolves when the process receives SIGTERM or SIGINT, then cancels `token`.
/// Every component handles SIGTERM explicitly so it can hand over gracefully.
pub async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; SIGTERM will kill without handover");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
        _ = token.cancelled() => {}
    }
    token.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_set_removes_label_sets_no_longer_published() {
        let set: GaugeSet<Vec<(String, String)>> = GaugeSet::default();
        let mut registry = Registry::default();
        registry.register("vip", "test", set.family());
        let labels = |ip: &str| vec![("ip".to_string(), ip.to_string())];
        let text = |r: &Registry| {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, r).unwrap();
            out
        };
        set.publish([(labels("198.18.0.1"), 1), (labels("198.18.0.2"), 1)]);
        let out = text(&registry);
        assert!(out.contains("vip{ip=\"198.18.0.1\"} 1"), "{out}");
        assert!(out.contains("vip{ip=\"198.18.0.2\"} 1"), "{out}");
        set.publish([(labels("198.18.0.2"), 1)]);
        let out = text(&registry);
        assert!(!out.contains("198.18.0.1"), "{out}");
        assert!(out.contains("vip{ip=\"198.18.0.2\"} 1"), "{out}");
        set.clear();
        assert!(!text(&registry).contains("198.18.0.2"));
    }

    #[test]
    fn lease_lock_chatter_is_filtered_unless_asked_for() {
        assert_eq!(filter_spec(None), "info,kube_leader_election=warn");
        assert_eq!(filter_spec(Some(" ")), "info,kube_leader_election=warn");
        assert_eq!(
            filter_spec(Some("debug")),
            "debug,kube_leader_election=warn"
        );
        assert_eq!(
            filter_spec(Some("info,kube_leader_election=debug")),
            "info,kube_leader_election=debug"
        );
        for spec in [None, Some("l2lb=debug")] {
            assert!(tracing_subscriber::EnvFilter::try_new(filter_spec(spec)).is_ok());
        }
    }
}
