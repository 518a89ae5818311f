//! The fast-path task: runs the pure [`Detector`] against the LAN through
//! [`FastLink`] frames, and carries its verdicts to the decision loop and
//! its fence to the dataplane.
//!
//! ```text
//!  decision loop ──(interface, lease-live peers + incarnations, api_ok)──▶ LanShared
//!  lan thread: poll(link, ≤ TICK) ─ parse+authenticate ─ Detector::handle/tick ─ send
//!     │ Input::Lan(LanView) on change            │ set_answer_window per pass
//!     ▼                                          ▼
//!  decision loop                              Announcer (dataplane gate)
//!     renewer ◀── watch<confirmed incarnation> (published in our Lease)
//! ```
//!
//! A plain thread, not a tokio task: it must keep its 50 ms rhythm while
//! the runtime is busy with API traffic, and its socket is a blocking
//! AF_PACKET fd. It decides nothing itself; every rule is in
//! `crate::fastpath` and `super::core`. It must never send a message the
//! detector did not produce, and never learn a peer's MAC from a message
//! the detector did not accept (authenticated, fresh).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tracing::{debug, info, trace, warn};

use super::Announcer;
use super::core::Input;
use crate::fastpath::keyfile::parse_keys;
use crate::fastpath::{Config, Destination, Detector, Keyring, MessageRepr, Outgoing};
use crate::l2::{AnswerWindow, FastLink, LinkFrame, Mac};

/// Longest wait in `poll`: bounds how late the thread sees new inputs
/// from the decision loop (members, interface, shutdown).
const TICK: Duration = Duration::from_millis(20);
/// How often the key file is read again.
const KEY_CHECK: Duration = Duration::from_secs(2);

/// Lease annotation in which a speaker publishes the newest fast-path
/// incarnation the LAN has acknowledged. Peers clear a dead mark on it
/// only when this shows a newer incarnation (see `fastpath::detector`).
pub const INCARNATION_ANNOTATION: &str = "l2lb.io/fastpath-incarnation";

/// What the fast path tells the decision loop. Sent on every change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LanView {
    /// Stop answering every VIP now (LAN isolation, or not yet heard).
    pub must_fence: bool,
    /// Our current incarnation.
    pub incarnation: u64,
    /// The incarnation we started with: a later one means we were fenced
    /// and peers may hold us dead until our Lease shows it.
    pub first_incarnation: u64,
    /// Peers the LAN declared dead, with the incarnation declared.
    pub dead: BTreeMap<String, u64>,
    /// Cut from the API, but no peer can be expiring our Lease
    /// ([`Detector::api_grace`]): keep answering past the lease fence.
    pub api_grace: bool,
}

/// Why a fast-path frame was dropped, as a bounded label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `WireError::metric_label` or `Rejected::metric_label`, or `link`.
    pub reason: &'static str,
}

/// The fast path's metrics (`l2lb_speaker_fastpath_*`).
#[derive(Clone, Debug, Default)]
pub struct LanMetrics {
    /// Frames dropped, by reason (forged, replayed, malformed, ...).
    pub dropped: Family<DropLabels, Counter>,
    /// Messages accepted.
    pub accepted: Counter,
    /// Messages sent.
    pub sent: Counter,
    /// Lease-live peers the LAN holds dead.
    pub dead_peers: Gauge,
    /// 1 while the fast path fences this node.
    pub fenced: Gauge,
    /// Times the fast path fenced this node.
    pub fences: Counter,
}

/// The fast path's settings.
#[derive(Clone, Debug)]
pub struct LanConfig {
    /// Detector timers.
    pub detector: Config,
    /// Shared secret(s) at start; `None` until the key file appears.
    pub keys: Option<Keyring>,
    /// Where the keys come from, re-read every [`KEY_CHECK`]: a Secret
    /// created after the speaker started, or rotated, takes effect without
    /// a restart (kubelet updates the mounted file in place).
    pub key_file: Option<std::path::PathBuf>,
    /// Lease fence window (`lease_duration − fence_margin`), for the API
    /// outage grace.
    pub lease_fence_window: Duration,
}

/// Inputs from the decision loop, read by the thread every pass.
#[derive(Debug, Default)]
struct Inputs {
    /// Interface to run on (the speaker's default interface).
    interface: Option<String>,
    /// Lease-live peers with their published incarnations.
    members: Vec<(String, Option<u64>)>,
    /// Whether `members` changed since the thread last read it.
    members_changed: bool,
    /// Our own lease renewals succeed.
    api_ok: bool,
    /// Shutting down: say goodbye and stop.
    leave: bool,
}

/// Handle of the fast-path thread.
pub struct Lan {
    /// Inputs the thread reads.
    inputs: Arc<Mutex<Inputs>>,
    /// The thread; joined on [`Lan::leave`].
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock(m: &Mutex<Inputs>) -> std::sync::MutexGuard<'_, Inputs> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Lan {
    /// Starts the thread for node `node`. Verdicts go to `tx`, the fence to
    /// `announcer`, the confirmed incarnation to `published`.
    pub fn spawn(
        node: String,
        config: LanConfig,
        tx: tokio::sync::mpsc::Sender<Input>,
        announcer: Arc<dyn Announcer>,
        published: tokio::sync::watch::Sender<Option<u64>>,
        metrics: LanMetrics,
    ) -> std::io::Result<Lan> {
        let inputs = Arc::new(Mutex::new(Inputs::default()));
        let worker = Worker {
            node,
            config,
            inputs: inputs.clone(),
            tx,
            announcer,
            published,
            metrics,
            link: None,
            detector: None,
            macs: BTreeMap::new(),
            last_view: None,
            last_interface_try: None,
            keys: None,
            key_text: None,
            last_key_check: None,
        };
        let thread = std::thread::Builder::new()
            .name("l2lb-fastpath".into())
            .spawn(move || {
                let span = tracing::info_span!("fastpath");
                let _g = span.enter();
                worker.run();
            })?;
        Ok(Lan {
            inputs,
            thread: Some(thread),
        })
    }

    /// Sets the interface the fast path runs on.
    pub fn set_interface(&self, interface: Option<String>) {
        let mut i = lock(&self.inputs);
        if i.interface != interface {
            i.interface = interface;
        }
    }

    /// Hands over the lease-live peers with their published incarnations,
    /// and whether our own renewals succeed.
    pub fn set_members(&self, members: Vec<(String, Option<u64>)>, api_ok: bool) {
        let mut i = lock(&self.inputs);
        if i.members != members {
            i.members = members;
            i.members_changed = true;
        }
        i.api_ok = api_ok;
    }

    /// Starts leaving the LAN gracefully (after the VIPs were withdrawn):
    /// the thread tells our witnesses to stop watching, so no verdict
    /// follows, and ends. Does not wait: the lease release runs meanwhile
    /// (see [`Lan::join`]).
    pub fn leave(&self) {
        lock(&self.inputs).leave = true;
    }

    /// Waits for the thread to end (after [`Lan::leave`]).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The thread's state.
struct Worker {
    node: String,
    config: LanConfig,
    inputs: Arc<Mutex<Inputs>>,
    tx: tokio::sync::mpsc::Sender<Input>,
    announcer: Arc<dyn Announcer>,
    published: tokio::sync::watch::Sender<Option<u64>>,
    metrics: LanMetrics,
    /// The socket; `None` until the interface is known and opens.
    link: Option<FastLink>,
    /// Created when the link first opens; runs on even if the link goes
    /// away, so that the fence still closes on time.
    detector: Option<Detector>,
    /// Peers' MACs, learned from accepted messages only.
    macs: BTreeMap<String, Mac>,
    /// Last view sent to the decision loop.
    last_view: Option<LanView>,
    /// When opening the link last failed (retry after a housekeeping pause).
    last_interface_try: Option<Instant>,
    /// The keys in use; nothing is sent or accepted without them.
    keys: Option<Keyring>,
    /// The key file's text last read, to notice a change.
    key_text: Option<String>,
    /// When the key file was last read.
    last_key_check: Option<Instant>,
}

impl Worker {
    fn run(mut self) {
        let mut buf = vec![0u8; 2048];
        self.keys = self.config.keys.take();
        loop {
            let interface = lock(&self.inputs).interface.clone();
            let now = Instant::now();
            self.reload_keys(now);
            self.ensure_link(interface.as_deref(), now);
            // Membership is taken only once a detector exists to hold it:
            // taken before (no key yet, no link yet) it would be lost, and
            // the detector would start with no peers until the next change.
            let (members, api_ok, leave) = {
                let mut i = lock(&self.inputs);
                let changed = i.members_changed && self.detector.is_some();
                let members = changed.then(|| i.members.clone());
                if changed {
                    i.members_changed = false;
                }
                (members, i.api_ok, i.leave)
            };
            let Some(det) = self.detector.as_mut() else {
                if leave {
                    return;
                }
                std::thread::sleep(TICK);
                continue;
            };
            if let Some(m) = members {
                det.set_members(m, now);
            }
            det.set_api_ok(api_ok);
            if leave {
                let out = det.leave(now);
                self.send_all(out);
                self.announcer.set_answer_window(AnswerWindow::Closed);
                return;
            }
            self.receive(&mut buf);
            let now = Instant::now();
            let out = self
                .detector
                .as_mut()
                .map(|d| d.tick(now))
                .unwrap_or_default();
            self.send_all(out);
            self.publish(now);
            let wait = self
                .detector
                .as_ref()
                .and_then(Detector::next_wakeup)
                .map_or(TICK, |w| {
                    w.saturating_duration_since(Instant::now()).min(TICK)
                });
            match &self.link {
                Some(l) => {
                    if let Err(e) = l.wait_readable(wait) {
                        debug!(error = %e, "poll failed");
                        std::thread::sleep(wait);
                    }
                }
                None => std::thread::sleep(wait),
            }
        }
    }

    /// Opens (or re-opens, when re-created) the socket on `interface`; the
    /// detector starts with the first successful open.
    fn ensure_link(&mut self, interface: Option<&str>, now: Instant) {
        let Some(name) = interface else { return };
        if self.keys.is_none() {
            return;
        }
        let fine = self
            .link
            .as_ref()
            .is_some_and(|l| l.interface() == name && l.still_bound());
        if fine {
            return;
        }
        if self
            .last_interface_try
            .is_some_and(|t| now.saturating_duration_since(t) < crate::l2::HOUSEKEEPING)
        {
            return;
        }
        self.last_interface_try = Some(now);
        self.link = None;
        match FastLink::open(name) {
            Ok(l) => {
                info!(interface = %name, mac = %l.mac(), "fast path on");
                self.link = Some(l);
                self.macs.clear();
                if self.detector.is_none() {
                    // Above every earlier incarnation of this node across
                    // restarts (the wall clock moves forward between runs).
                    let incarnation = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(1, |d| d.as_millis() as u64);
                    self.detector = Some(Detector::new(
                        self.config.detector.clone(),
                        self.node.clone(),
                        incarnation,
                        now,
                    ));
                }
            }
            Err(e) => warn!(interface = %name, error = %e, "cannot open the fast-path socket"),
        }
    }

    /// Reads the key file again every [`KEY_CHECK`] and takes its keys when
    /// its text changed and parses. A file that vanished or turned invalid
    /// keeps the keys in use (peers still use them), loudly.
    fn reload_keys(&mut self, now: Instant) {
        let Some(path) = &self.config.key_file else {
            return;
        };
        if self
            .last_key_check
            .is_some_and(|t| now.saturating_duration_since(t) < KEY_CHECK)
        {
            return;
        }
        self.last_key_check = Some(now);
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                if self.key_text.take().is_some() {
                    warn!(path = %path.display(), error = %e, "fast-path key file unreadable; keeping the keys in use");
                }
                return;
            }
        };
        if self.key_text.as_deref() == Some(text.as_str()) {
            return;
        }
        match parse_keys(&text) {
            Ok(keys) => {
                info!(path = %path.display(), signing_key = keys.signing_key_id(), key_ids = ?keys.key_ids(), "fast-path keys loaded");
                self.keys = Some(keys);
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, "fast-path key file invalid; keeping the keys in use")
            }
        }
        self.key_text = Some(text);
    }

    fn receive(&mut self, buf: &mut [u8]) {
        for _ in 0..256 {
            let Some(link) = &self.link else { return };
            let n = match link.recv(buf) {
                Ok(Some(n)) => n,
                Ok(None) => return,
                Err(e) => {
                    debug!(error = %e, "fast-path receive failed");
                    return;
                }
            };
            let our_mac = link.mac();
            let frame = match LinkFrame::parse(&buf[..n]) {
                Ok(f) => f,
                Err(e) => {
                    self.drop_frame("link");
                    trace!(error = %e, "fast-path frame dropped");
                    continue;
                }
            };
            if frame.dst != our_mac && frame.dst != Mac::BROADCAST {
                continue;
            }
            let src = frame.src;
            let Some(keys) = &self.keys else { return };
            let msg = match MessageRepr::parse(frame.message, keys) {
                Ok(m) => m,
                Err(e) => {
                    self.drop_frame(e.metric_label());
                    trace!(error = %e, "fast-path message dropped");
                    continue;
                }
            };
            let sender = msg.sender.clone();
            let Some(det) = self.detector.as_mut() else {
                return;
            };
            match det.handle(msg, Instant::now()) {
                Ok(out) => {
                    self.metrics.accepted.inc();
                    self.macs.insert(sender, src);
                    self.send_all(out);
                }
                Err(r) => {
                    self.drop_frame(r.metric_label());
                    trace!(reason = %r, %sender, "fast-path message rejected");
                }
            }
        }
    }

    fn drop_frame(&self, reason: &'static str) {
        self.metrics
            .dropped
            .get_or_create(&DropLabels { reason })
            .inc();
    }

    fn send_all(&mut self, out: Vec<Outgoing>) {
        let (Some(link), Some(keys)) = (&self.link, &self.keys) else {
            return;
        };
        for o in out {
            let bytes = match o.message.emit(keys) {
                Ok(b) => b,
                Err(e) => {
                    debug!(error = %e, "fast-path message not encodable");
                    continue;
                }
            };
            // Unicast once the peer's MAC is known, so each node receives
            // only what is meant for it (constant load per node);
            // broadcast until then and for reports.
            let dst = match &o.to {
                Destination::Peer(p) => self.macs.get(p).copied().unwrap_or(Mac::BROADCAST),
                Destination::Broadcast => Mac::BROADCAST,
            };
            match link.send(dst, &bytes) {
                Ok(()) => {
                    self.metrics.sent.inc();
                }
                Err(e) => trace!(error = %e, "fast-path send failed"),
            }
        }
    }

    /// Publishes the detector's state: the answer window to the dataplane
    /// (every pass: it moves with every ack), the view to the decision
    /// loop and the confirmed incarnation to the renewer (on change).
    fn publish(&mut self, now: Instant) {
        let Some(det) = &self.detector else { return };
        let status = det.status(now);
        let window = if status.must_fence {
            AnswerWindow::Closed
        } else {
            status
                .fence_deadline
                .map_or(AnswerWindow::Open, AnswerWindow::Until)
        };
        self.announcer.set_answer_window(window);
        let dead: BTreeMap<String, u64> = det
            .dead()
            .into_keys()
            .filter_map(|n| det.dead_peer(&n).map(|d| (n, d.incarnation)))
            .collect();
        let view = LanView {
            must_fence: status.must_fence,
            incarnation: status.incarnation,
            first_incarnation: self
                .last_view
                .as_ref()
                .map_or(status.incarnation, |v| v.first_incarnation),
            dead,
            api_grace: det.api_grace(now, self.config.lease_fence_window),
        };
        self.metrics.dead_peers.set(view.dead.len() as i64);
        self.metrics.fenced.set(i64::from(view.must_fence));
        self.published
            .send_if_modified(|p| std::mem::replace(p, status.confirmed_incarnation) != *p);
        if self.last_view.as_ref() != Some(&view) {
            if let Some(last) = &self.last_view {
                if view.must_fence && !last.must_fence {
                    self.metrics.fences.inc();
                    warn!(
                        incarnation = view.incarnation,
                        "fast path: fenced (LAN does not hear us)"
                    );
                }
                if !view.must_fence && last.must_fence {
                    info!(
                        incarnation = view.incarnation,
                        "fast path: heard on the LAN"
                    );
                }
                let newly: BTreeSet<&String> = view
                    .dead
                    .keys()
                    .filter(|n| !last.dead.contains_key(*n))
                    .collect();
                for n in newly {
                    info!(peer = %n, "fast path: peer declared dead");
                }
            }
            self.last_view = Some(view.clone());
            // The loop may be gone (shutdown); then nobody needs the view.
            let _ = self.tx.blocking_send(Input::Lan(view));
        }
    }
}
