//! What `l2lb controller` is told: its flags ([`ControllerArgs`]), the
//! validated configuration [`run`](super::run) takes ([`ControllerConfig`]),
//! and why a configuration is refused ([`ConfigError`]).
//!
//! Validation happens once, at start, so a bad flag ends the process with
//! a message naming the flag instead of a controller that misbehaves later.
//! This module never touches the API server.

use super::metrics::ControllerMetrics;
use crate::api::{FASTPATH_SECRET, INSTALL_NAMESPACE};
use crate::telemetry::Health;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Shortest accepted `--lease-duration`: renewals run every quarter of it,
/// and below 2s one slow request would cost leadership.
const MIN_LEASE_DURATION: Duration = Duration::from_secs(2);

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
    /// Secret (in `--namespace`) holding the speakers' LAN fast-path key;
    /// created with a random key when missing, never changed when present.
    /// Empty: do not create it (the operator manages it, or the fast path
    /// stays off).
    #[arg(long, env = "L2LB_FASTPATH_SECRET", default_value = FASTPATH_SECRET)]
    pub fastpath_secret: String,
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
    /// See [`ControllerArgs::lease_duration`]; at least 2s.
    pub lease_duration: Duration,
    /// Where the caller serves metrics and health (see
    /// [`ControllerArgs::metrics_addr`]); the controller opens no socket.
    pub metrics_addr: SocketAddr,
    /// See [`ControllerArgs::max_concurrent_writes`]; at least 1.
    pub max_concurrent_writes: usize,
    /// See [`ControllerArgs::fastpath_secret`]; `None` = do not create it.
    pub fastpath_secret: Option<String>,
    /// Metrics handles; register them in the caller's registry with
    /// [`ControllerMetrics::register`] before [`run`](super::run).
    pub metrics: ControllerMetrics,
    /// Readiness for `/readyz`: every watch has listed. Serve it with
    /// `telemetry::serve`.
    pub health: Arc<Health>,
}

/// Why a controller configuration is refused. Each variant names the flag
/// to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `--lease-duration` below 2s (the minimum renewals need).
    #[error("--lease-duration must be at least 2s")]
    LeaseDurationTooShort(Duration),
    /// `--max-concurrent-writes 0` would never write anything.
    #[error("--max-concurrent-writes must be at least 1")]
    NoConcurrentWrites,
}

/// Errors that end the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// Flags do not make sense. The message includes the cause, so it is
    /// deliberately not a `source` (anyhow would print it twice).
    #[error("invalid configuration: {0}")]
    Config(ConfigError),
    /// A task the controller cannot work without ended (it panicked).
    #[error("controller task {task} stopped unexpectedly")]
    TaskStopped {
        /// Which task.
        task: &'static str,
    },
}

impl From<ConfigError> for ControllerError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl ControllerArgs {
    /// Checks the flags and fills defaults.
    pub fn into_config(self) -> Result<ControllerConfig, ControllerError> {
        let config = ControllerConfig {
            namespace: self.namespace,
            require_class: self.require_class,
            lease_duration: self.lease_duration,
            metrics_addr: self.metrics_addr,
            max_concurrent_writes: self.max_concurrent_writes,
            fastpath_secret: Some(self.fastpath_secret).filter(|s| !s.is_empty()),
            ..ControllerConfig::new(self.identity.unwrap_or_else(default_identity))
        };
        config.validate()?;
        Ok(config)
    }
}

impl ControllerConfig {
    /// The flags' defaults for replica `identity` (tests and benches set
    /// what they need on top).
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            namespace: INSTALL_NAMESPACE.to_string(),
            require_class: false,
            identity: identity.into(),
            lease_duration: Duration::from_secs(8),
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 7472)),
            max_concurrent_writes: 32,
            fastpath_secret: Some(FASTPATH_SECRET.to_string()),
            metrics: ControllerMetrics::default(),
            health: Arc::default(),
        }
    }

    /// Checks the invariants the controller relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lease_duration < MIN_LEASE_DURATION {
            return Err(ConfigError::LeaseDurationTooShort(self.lease_duration));
        }
        if self.max_concurrent_writes == 0 {
            return Err(ConfigError::NoConcurrentWrites);
        }
        Ok(())
    }
}

/// Host name and pid: unique per replica even when two share a host (the
/// lab), stable for the life of the process.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "controller".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        controller: ControllerArgs,
    }

    fn parse(args: &[&str]) -> Result<ControllerConfig, ControllerError> {
        let mut argv = vec!["x"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().controller.into_config()
    }

    #[test]
    fn flag_defaults_match_the_config_defaults_and_validate() {
        let c = parse(&["--identity", "a"]).unwrap();
        let d = ControllerConfig::new("a");
        assert_eq!(d.validate(), Ok(()));
        assert_eq!(
            (c.namespace, c.identity, c.require_class),
            (d.namespace, d.identity, d.require_class)
        );
        assert_eq!(c.lease_duration, d.lease_duration);
        assert_eq!(c.metrics_addr, d.metrics_addr);
        assert_eq!(c.max_concurrent_writes, d.max_concurrent_writes);
    }

    #[test]
    fn each_bad_flag_is_named_in_the_message() {
        let err = parse(&["--lease-duration", "1s"]).unwrap_err();
        assert!(matches!(
            err,
            ControllerError::Config(ConfigError::LeaseDurationTooShort(_))
        ));
        assert_eq!(
            err.to_string(),
            "invalid configuration: --lease-duration must be at least 2s"
        );
        // The whole message is in Display; a source would repeat it.
        assert!(std::error::Error::source(&err).is_none());
        let err = parse(&["--max-concurrent-writes", "0"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: --max-concurrent-writes must be at least 1"
        );
    }
}
