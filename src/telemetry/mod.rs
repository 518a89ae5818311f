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
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
