//! The speaker: membership lease, per-VIP owner election, fencing, graceful
//! hand-over, status and Events (DESIGN.md "How data flows", steps 3–7).
//!
//! Owns the speaker's configuration ([`SpeakerArgs`] → [`SpeakerConfig`]),
//! the [`Announcer`] seam to the dataplane, its metrics and [`run`]. The
//! decisions live in the pure [`core`] and [`eligibility`] modules and in
//! `crate::election`; [`tasks`] only moves data between the API server, the
//! core and the announcer. The speaker must never write Services, and must
//! never announce a VIP unless its own lease protects it (see `core::Fence`).

pub mod core;
pub mod dataplane;
pub mod eligibility;
mod index;
pub mod lan;
pub mod netinfo;
pub mod published;
mod status;
mod tasks;
mod vip_metrics;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

pub use self::core::Timing;

/// The dataplane handle the speaker drives: the only way it makes a node
/// answer for a VIP. Implemented by the L2 dataplane (and, later, by a
/// kernel proxy-neighbour mode); tests use a recording fake.
pub trait Announcer: Send + Sync {
    /// Start answering for `vip` on `interface` (and send the gratuitous burst).
    /// The error's text goes into the `announceFailed` Event as is; it
    /// already names the VIP or the interface.
    fn announce(&self, vip: IpAddr, interface: &str) -> Result<(), crate::l2::L2Error>;
    /// Stop answering for `vip` on every interface, at once.
    fn withdraw(&self, vip: IpAddr);
    /// Stop answering for everything, at once.
    fn withdraw_all(&self);
    /// Answer only within `window` from now on, checked per frame (the
    /// fast path's fence). The default ignores it: for dataplanes that
    /// answer nothing on their own between announce and withdraw.
    fn set_answer_window(&self, _window: crate::l2::AnswerWindow) {}
    /// Of `interfaces`, those whose link can carry announcements now. The
    /// default takes them all: for dataplanes that know no link state.
    fn usable_links(&self, interfaces: &BTreeSet<String>) -> BTreeSet<String> {
        interfaces.clone()
    }
    /// Conflicts the dataplane detects (another MAC claiming an owned VIP),
    /// reported as `ipConflict` Events. `None` when the dataplane has no
    /// detection. Called once, at start.
    fn subscribe_conflicts(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<IpConflict>> {
        None
    }
}

/// Another host claims a VIP this node announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConflict {
    /// The contested VIP.
    pub vip: IpAddr,
    /// Interface the claim was seen on.
    pub interface: String,
    /// The other claimant's MAC (prints as `aa:bb:cc:dd:ee:ff`).
    pub mac: crate::l2::Mac,
}

/// `l2lb speaker` flags. Durations accept `ms` or `s` suffixes (`500ms`, `4s`).
#[derive(clap::Args, Debug, Clone)]
pub struct SpeakerArgs {
    /// Name of the node this speaker runs on (the Node object's name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Namespace holding pools, advertisements, speaker leases and statuses.
    #[arg(long, env = "L2LB_NAMESPACE", default_value = crate::api::INSTALL_NAMESPACE)]
    pub namespace: String,
    /// How long the speaker's lease protects it without renewal; peers take
    /// over its VIPs this long after its last renewal. Whole seconds.
    #[arg(long, env = "L2LB_LEASE_DURATION", default_value = "4s", value_parser = crate::flags::parse_duration)]
    pub lease_duration: Duration,
    /// How often the speaker renews its lease. Each renewal is one API
    /// request (a PATCH conditional on the lease's resourceVersion).
    #[arg(long, env = "L2LB_LEASE_RENEW", default_value = "1s", value_parser = crate::flags::parse_duration)]
    pub lease_renew: Duration,
    /// How much earlier than its peers' expiry a speaker that cannot renew
    /// stops announcing (covers clock-rate differences and withdraw time).
    #[arg(long, env = "L2LB_FENCE_MARGIN", default_value = "1s", value_parser = crate::flags::parse_duration)]
    pub fence_margin: Duration,
    /// How long a (re)joining speaker waits before taking VIPs from live
    /// peers, so they have withdrawn first (should exceed watch delivery delay).
    #[arg(long, env = "L2LB_TAKEOVER_DELAY", default_value = "250ms", value_parser = crate::flags::parse_duration)]
    pub takeover_delay: Duration,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "L2LB_METRICS_ADDR", default_value = "0.0.0.0:7473")]
    pub metrics_addr: SocketAddr,
    /// Interface for advertisements that name none (default: the interface
    /// holding the Node's InternalIP, else that of the IPv4 default route,
    /// else of the IPv6 default route).
    #[arg(long, env = "L2LB_DEFAULT_INTERFACE")]
    pub default_interface: Option<String>,
    /// Interfaces this node offers to advertisements' `interfaces`, comma
    /// separated (default: every interface except `lo`).
    #[arg(long, env = "L2LB_INTERFACES", value_delimiter = ',')]
    pub interfaces: Option<Vec<String>>,
    /// Announce only Services with `spec.loadBalancerClass: l2lb.io/l2`
    /// (by default Services with no class too). Set it as on the controller.
    #[arg(long, env = "L2LB_REQUIRE_CLASS")]
    pub require_class: bool,
    /// File with the LAN fast path's shared secret(s), one `ID:SECRET` per
    /// line, the first one signing (the `l2lb-fastpath` Secret, mounted).
    /// Without it the fast path is off and crash failover takes a lease
    /// duration.
    #[arg(long, env = "L2LB_FASTPATH_KEY_FILE")]
    pub fastpath_key_file: Option<std::path::PathBuf>,
    /// LAN fast-path heartbeat interval. The other fast-path timers follow
    /// it: a node fences after 3 intervals without an acknowledgement,
    /// peers declare it dead after 5 (crash failover ≈ 5 intervals), a
    /// fenced node rejoins after 10. Traffic per node is 6 frames per
    /// interval. Shorter: faster failover, more frames and less slack for
    /// a loaded node (a speaker starved of CPU for 3 intervals fences).
    #[arg(long, env = "L2LB_FASTPATH_INTERVAL", default_value = "50ms", value_parser = crate::flags::parse_duration)]
    pub fastpath_interval: Duration,
    /// Hand the VIPs of cordoned nodes (`kubectl cordon`/`drain`,
    /// `spec.unschedulable` or the `node.kubernetes.io/unschedulable` taint)
    /// to other nodes before the drain evicts anything. An L2Advertisement
    /// can also keep them with `announceFromCordonedNodes: true`.
    #[arg(long, env = "L2LB_DRAIN_CORDONED", default_value_t = true, action = clap::ArgAction::Set)]
    pub drain_cordoned: bool,
    /// How long a Node may be not `Ready` (kubelet stopped reporting, or
    /// reports a problem) before its VIPs move, counted from the
    /// condition's `lastTransitionTime`. The default moves them at once
    /// (a hand-over costs a few ms); raise it to ride out kubelet blips.
    /// A node that dies is replaced by the speakers' own detection anyway.
    #[arg(long, env = "L2LB_NOT_READY_GRACE", default_value = "0s", value_parser = crate::flags::parse_duration)]
    pub not_ready_grace: Duration,
}

/// The speaker's validated configuration.
#[derive(Clone, Debug)]
pub struct SpeakerConfig {
    /// This node's name; also the lease holder identity.
    pub node_name: String,
    /// Install namespace (pools, advertisements, leases, statuses).
    pub namespace: String,
    /// Lease duration (whole seconds: the Lease API counts seconds).
    pub lease_duration: Duration,
    /// Renewal period, below `lease_duration - fence_margin`.
    pub lease_renew: Duration,
    /// Fence margin, below `lease_duration`.
    pub fence_margin: Duration,
    /// See [`Timing::takeover_delay`].
    pub takeover_delay: Duration,
    /// Where the caller serves metrics and health.
    pub metrics_addr: SocketAddr,
    /// Interface for advertisements without `interfaces`; `None` = the one
    /// holding the Node's InternalIP, else the default-route interface.
    pub default_interface: Option<String>,
    /// Interfaces this node offers; `None` = detect.
    pub interfaces: Option<BTreeSet<String>>,
    /// Which Services are ours (see [`SpeakerArgs::require_class`]).
    pub class: crate::model::ClassFilter,
    /// Metrics handles; register them in the caller's registry with
    /// [`SpeakerMetrics::register`] before [`run`].
    pub metrics: SpeakerMetrics,
    /// Readiness for `/readyz`: every watch has listed and the speaker's own
    /// lease protects it (not fenced). Serve it with `telemetry::serve`.
    pub health: Arc<crate::telemetry::Health>,
    /// Keys of the LAN fast path at start. With neither keys nor a key
    /// file the fast path is off (Lease only).
    pub fastpath_keys: Option<crate::fastpath::Keyring>,
    /// The key file, re-read while running (see [`SpeakerArgs::fastpath_key_file`]).
    pub fastpath_key_file: Option<std::path::PathBuf>,
    /// The fast path's timers.
    pub fastpath: crate::fastpath::Config,
    /// Rules for cordoned and not-ready nodes.
    pub node_rules: eligibility::NodeRules,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The node name is empty.
    #[error("--node-name (NODE_NAME) must not be empty")]
    NoNodeName,
    /// The lease duration is not a whole number of seconds >= 1.
    #[error("--lease-duration must be a whole number of seconds, at least 1s (got {0:?})")]
    LeaseDuration(Duration),
    /// The fast-path timers break the fence's inequality.
    #[error("--fastpath-interval: {0}")]
    FastPath(String),
    /// The fast-path key file cannot be read or parsed.
    #[error("--fastpath-key-file {path}: {why}")]
    KeyFile {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The timing flags contradict each other.
    #[error(
        "need 0 < --lease-renew ({renew:?}) < --lease-duration ({duration:?}) - --fence-margin ({margin:?})"
    )]
    Timing {
        /// Renewal period.
        renew: Duration,
        /// Lease duration.
        duration: Duration,
        /// Fence margin.
        margin: Duration,
    },
}

impl SpeakerConfig {
    /// A configuration with the defaults for `node_name`.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            namespace: crate::api::INSTALL_NAMESPACE.to_string(),
            lease_duration: Duration::from_secs(4),
            lease_renew: Duration::from_secs(1),
            fence_margin: Duration::from_secs(1),
            takeover_delay: Duration::from_millis(250),
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 7473)),
            default_interface: None,
            interfaces: None,
            class: crate::model::ClassFilter::default(),
            metrics: SpeakerMetrics::default(),
            health: Arc::default(),
            fastpath_keys: None,
            fastpath_key_file: None,
            fastpath: crate::fastpath::Config::default(),
            node_rules: eligibility::NodeRules::default(),
        }
    }

    /// Checks the invariants the fence relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_name.trim().is_empty() {
            return Err(ConfigError::NoNodeName);
        }
        let d = self.lease_duration;
        if d < Duration::from_secs(1) || d.subsec_nanos() != 0 {
            return Err(ConfigError::LeaseDuration(d));
        }
        if self.lease_renew.is_zero()
            || self.fence_margin >= d
            || self.lease_renew >= d - self.fence_margin
        {
            return Err(ConfigError::Timing {
                renew: self.lease_renew,
                duration: d,
                margin: self.fence_margin,
            });
        }
        Ok(())
    }

    /// The membership timing rules for the core.
    pub fn timing(&self) -> Timing {
        Timing {
            lease_duration: self.lease_duration,
            fence_margin: self.fence_margin,
            takeover_delay: self.takeover_delay,
        }
    }
}

impl TryFrom<SpeakerArgs> for SpeakerConfig {
    type Error = ConfigError;

    fn try_from(a: SpeakerArgs) -> Result<Self, ConfigError> {
        let c = SpeakerConfig {
            node_name: a.node_name,
            namespace: a.namespace,
            lease_duration: a.lease_duration,
            lease_renew: a.lease_renew,
            fence_margin: a.fence_margin,
            takeover_delay: a.takeover_delay,
            metrics_addr: a.metrics_addr,
            default_interface: a.default_interface.filter(|s| !s.is_empty()),
            interfaces: a.interfaces.map(|v| {
                v.into_iter()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            }),
            class: crate::model::ClassFilter::new(a.require_class),
            metrics: SpeakerMetrics::default(),
            health: Arc::default(),
            fastpath_keys: match &a.fastpath_key_file {
                None => None,
                // A missing file is the optional Secret not created yet (the
                // controller creates it; kubelet mounts it within a minute or
                // so): run on the Lease alone until it appears, loudly. A
                // file that is there but wrong is a mistake to fail on.
                Some(path) if !path.exists() => {
                    tracing::warn!(
                        path = %path.display(),
                        "fast-path key file missing (Secret l2lb-fastpath not created yet?): \
                         LAN fast path off until it appears, crash failover takes a lease duration"
                    );
                    None
                }
                Some(path) => {
                    let err = |why: String| ConfigError::KeyFile {
                        path: path.display().to_string(),
                        why,
                    };
                    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
                    Some(
                        crate::fastpath::keyfile::parse_keys(&text)
                            .map_err(|e| err(e.to_string()))?,
                    )
                }
            },
            fastpath_key_file: a.fastpath_key_file.clone(),
            fastpath: fastpath_config(a.fastpath_interval),
            node_rules: eligibility::NodeRules {
                drain_cordoned: a.drain_cordoned,
                not_ready_grace: a.not_ready_grace,
            },
        };
        c.fastpath
            .validate()
            .map_err(|e| ConfigError::FastPath(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }
}

/// The fast path's timers for heartbeat interval `i`: fence at 3·i,
/// detect at 5·i, rejoin after 10·i (the defaults at 50 ms).
fn fastpath_config(i: Duration) -> crate::fastpath::Config {
    crate::fastpath::Config {
        heartbeat_interval: i,
        fence_after: i * 3,
        detect_after: i * 5,
        rejoin_quiet: i * 10,
        ..crate::fastpath::Config::default()
    }
}

/// The speaker's metrics. Labels are bounded; VIPs and Service names are
/// labels only of the per-VIP series in [`vip_metrics`], which the alerts
/// need and which exist only for VIPs in use (see there).
#[derive(Clone, Debug)]
pub struct SpeakerMetrics {
    /// VIPs this node currently announces.
    pub announced_vips: Gauge,
    /// VIPs whose computed owner changed.
    pub election_changes: Counter,
    /// Latency of lease renewal attempts.
    pub lease_renew_seconds: Histogram,
    /// Failed lease renewal attempts.
    pub lease_renew_failures: Counter,
    /// 1 while the speaker is fenced (announcing nothing), else 0.
    pub fenced: Gauge,
    /// Frames from another host for a VIP this node announces, other than
    /// the echo of a hand-over: each is reported as an `ipConflict` Event.
    pub ip_conflicts: Counter,
    /// Frames for a VIP from the peer it was just handed to or taken from,
    /// within the hand-over: expected, not conflicts.
    pub handover_echoes: Counter,
    /// 1 while `/readyz` answers 200, so an alert sees readiness in the
    /// same scrape as the rest (a kubelet probe's view never reaches
    /// Prometheus).
    pub ready: Gauge,
    /// Per-VIP announcements, for the no-owner, two-owner and flapping alerts.
    pub vips: vip_metrics::VipMetrics,
    /// The LAN fast path's metrics.
    pub lan: lan::LanMetrics,
}

impl Default for SpeakerMetrics {
    fn default() -> Self {
        Self {
            announced_vips: Gauge::default(),
            election_changes: Counter::default(),
            lease_renew_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            lease_renew_failures: Counter::default(),
            fenced: Gauge::default(),
            ip_conflicts: Counter::default(),
            handover_echoes: Counter::default(),
            ready: Gauge::default(),
            vips: vip_metrics::VipMetrics::default(),
            lan: lan::LanMetrics::default(),
        }
    }
}

impl SpeakerMetrics {
    /// Registers the metrics under `l2lb_speaker_*` in `registry`
    /// (counters get prometheus-client's `_total` suffix).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("l2lb_speaker");
        r.register(
            "announced_vips",
            "VIPs this node currently announces",
            self.announced_vips.clone(),
        );
        r.register(
            "election_changes",
            "VIPs whose computed owner changed",
            self.election_changes.clone(),
        );
        r.register(
            "lease_renew_seconds",
            "Latency of membership lease renewal attempts",
            self.lease_renew_seconds.clone(),
        );
        r.register(
            "lease_renew_failures",
            "Failed membership lease renewal attempts",
            self.lease_renew_failures.clone(),
        );
        r.register(
            "fenced",
            "1 while the speaker is fenced (lease or LAN) and announces nothing",
            self.fenced.clone(),
        );
        r.register(
            "ip_conflicts",
            "Frames from another host claiming a VIP this node announces (hand-over echoes excluded)",
            self.ip_conflicts.clone(),
        );
        r.register(
            "handover_echoes",
            "Frames for a VIP from the peer it was just handed to or taken from (not conflicts)",
            self.handover_echoes.clone(),
        );
        r.register(
            "ready",
            "1 while the speaker is ready (/readyz answers 200: synced and not fenced)",
            self.ready.clone(),
        );
        self.vips.register(r);
        let f = r.sub_registry_with_prefix("fastpath");
        f.register(
            "dropped",
            "Fast-path frames dropped, by reason (authentication = forged, replay, malformed, ...)",
            self.lan.dropped.clone(),
        );
        f.register(
            "accepted",
            "Fast-path messages accepted",
            self.lan.accepted.clone(),
        );
        f.register("sent", "Fast-path messages sent", self.lan.sent.clone());
        f.register(
            "dead_peers",
            "Lease-live peers the LAN fast path holds dead",
            self.lan.dead_peers.clone(),
        );
        f.register(
            "fenced",
            "1 while the LAN fast path fences this node",
            self.lan.fenced.clone(),
        );
        f.register(
            "fences",
            "Times the LAN fast path fenced this node",
            self.lan.fences.clone(),
        );
    }
}

/// What stops the speaker.
#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    /// The configuration is invalid.
    #[error("invalid speaker configuration: {0}")]
    Config(#[from] ConfigError),
    /// The internal input channel closed unexpectedly (a task panicked).
    #[error("speaker task {task} stopped unexpectedly")]
    TaskStopped {
        /// Which task.
        task: &'static str,
    },
}

/// Runs the speaker until `shutdown` is cancelled, then withdraws every VIP,
/// releases the lease (peers take over at once) and returns.
///
/// `announcer` is withdrawn-all at start (a restarted speaker must not keep
/// stale announcements) and at the end. API errors never end the speaker:
/// watches retry with backoff, and the fence withdraws everything while the
/// lease cannot be renewed.
pub async fn run(
    config: SpeakerConfig,
    client: kube::Client,
    announcer: Arc<dyn Announcer>,
    shutdown: CancellationToken,
) -> Result<(), SpeakerError> {
    config.validate()?;
    tasks::run(config, client, announcer, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        speaker: SpeakerArgs,
    }

    #[test]
    fn args_defaults_validate() {
        let cli =
            Cli::try_parse_from(["x", "--node-name", "n1", "--interfaces", "eth0, eth1"]).unwrap();
        let c = SpeakerConfig::try_from(cli.speaker).unwrap();
        assert_eq!(c.node_name, "n1");
        assert_eq!(c.namespace, "l2lb-system");
        assert_eq!(c.lease_duration, Duration::from_secs(4));
        assert_eq!(c.lease_renew, Duration::from_secs(1));
        assert_eq!(c.fence_margin, Duration::from_secs(1));
        assert_eq!(c.fastpath, crate::fastpath::Config::default());
        assert_eq!(
            c.interfaces,
            Some(BTreeSet::from(["eth0".to_string(), "eth1".to_string()]))
        );
    }

    #[test]
    fn contradictory_timing_is_refused() {
        let mut c = SpeakerConfig::new("n");
        assert_eq!(c.validate(), Ok(()));
        c.lease_duration = Duration::from_millis(1500);
        assert!(matches!(c.validate(), Err(ConfigError::LeaseDuration(_))));
        c.lease_duration = Duration::from_secs(2);
        c.lease_renew = Duration::from_secs(1);
        c.fence_margin = Duration::from_secs(1);
        assert!(matches!(c.validate(), Err(ConfigError::Timing { .. })));
        c.fence_margin = Duration::from_millis(500);
        assert_eq!(c.validate(), Ok(()));
        c.node_name = " ".into();
        assert_eq!(c.validate(), Err(ConfigError::NoNodeName));
    }

    #[test]
    fn metrics_register_with_expected_names() {
        let mut reg = Registry::default();
        let m = SpeakerMetrics::default();
        m.register(&mut reg);
        m.election_changes.inc();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        for name in [
            "l2lb_speaker_announced_vips",
            "l2lb_speaker_election_changes_total 1",
            "l2lb_speaker_lease_renew_seconds_bucket",
            "l2lb_speaker_lease_renew_failures_total",
            "l2lb_speaker_fenced",
            "# TYPE l2lb_speaker_ready gauge",
            "# TYPE l2lb_speaker_announced gauge",
            "# TYPE l2lb_speaker_announce_starts counter",
            "l2lb_speaker_fastpath_dropped",
            "l2lb_speaker_fastpath_dead_peers",
            "l2lb_speaker_fastpath_fences_total",
        ] {
            assert!(out.contains(name), "{name} missing in\n{out}");
        }
    }
}
