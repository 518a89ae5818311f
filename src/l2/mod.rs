//! Layer-2 dataplane: ARP/NDP codecs ([`wire`]), pure reply/announce/conflict
//! decisions ([`decide`]) and the raw-socket responder + announcer behind the
//! [`Dataplane`] handle the speaker drives.
//!
//! Owns one AF_PACKET socket and one thread per announced interface. It must
//! never answer for an address that is not currently announced on that
//! interface, never put the interface into promiscuous mode, and never spin:
//! the thread sleeps in `poll(2)` and wakes for matching frames (a kernel BPF
//! filter drops everything else), for control messages, or every
//! [`HOUSEKEEPING`] to notice a deleted/re-created interface.
//!
//! Nodes must run with `arp_ignore=1` / `arp_announce=2` (kube-proxy
//! strictARP) when a VIP is also assigned to a local interface such as
//! `kube-ipvs0`, or the kernel answers for it too; frames from our own MAC are
//! invisible to us (PACKET_IGNORE_OUTGOING), so that case is not detected here.

pub mod decide;
mod engine;
pub mod fastlink;
mod sys;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use decide::{OwnedVips, announcements, conflict, reply};
pub use fastlink::{FASTPATH_ETHERTYPE, FastLink, LinkFrame};

pub use sys::PacketSocket;
pub use wire::{FrameRepr, Mac, WireError};

/// How often an idle interface thread wakes to check that its interface
/// still exists under the same index.
pub const HOUSEKEEPING: Duration = Duration::from_millis(250);

/// SCHED_FIFO priority of interface threads unless changed with
/// [`Dataplane::with_rx_priority`]: low, below kernel threads (50).
pub const DEFAULT_RX_PRIORITY: i32 = 10;

/// Errors of the dataplane handle.
#[derive(Debug, thiserror::Error)]
pub enum L2Error {
    /// The VIP cannot be announced (multicast, unspecified, broadcast...).
    #[error("{vip} cannot be announced: {why}")]
    InvalidVip {
        /// The address.
        vip: IpAddr,
        /// Why not.
        why: &'static str,
    },
    /// Opening or binding the packet socket on the interface failed.
    #[error("interface {interface}: {source}")]
    Socket {
        /// The interface.
        interface: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The interface thread could not be started.
    #[error("interface {interface}: cannot start thread: {source}")]
    Thread {
        /// The interface.
        interface: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Tuning of the dataplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// Offsets from `announce` at which the GARP / unsolicited NA burst is sent.
    pub garp_schedule: Vec<Duration>,
    /// When set, every owned VIP is re-announced this often (stale switch and
    /// router caches, MetalLB #2910 / #584). Off by default.
    pub refresh_interval: Option<Duration>,
    /// Receive buffer of each packet socket; sized for request bursts.
    pub rcvbuf_bytes: usize,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            garp_schedule: [0, 100, 500, 1000, 2000]
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
            refresh_interval: None,
            rcvbuf_bytes: 4 << 20,
        }
    }
}

/// Another host answered or announced one of our VIPs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Our VIP.
    pub vip: IpAddr,
    /// Interface the frame arrived on.
    pub interface: String,
    /// Our MAC on that interface.
    pub our_mac: Mac,
    /// The other host's MAC.
    pub their_mac: Mac,
}

/// Counters of one interface (snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IfaceCounters {
    /// ARP requests and NS received (after the kernel filter), any target.
    pub requests_received: u64,
    /// ARP replies and solicited NAs sent.
    pub responses_sent: u64,
    /// Gratuitous ARPs and unsolicited NAs sent.
    pub gratuitous_sent: u64,
    /// Frames showing another MAC claiming one of our VIPs.
    pub conflicts: u64,
    /// Frames the codec rejected.
    pub malformed: u64,
    /// Times the socket was (re)opened after the interface vanished or was re-created.
    pub rebinds: u64,
}

/// Counters per interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct L2Stats {
    /// Interface name → counters.
    pub interfaces: BTreeMap<String, IfaceCounters>,
}

impl L2Stats {
    /// Sum over all interfaces.
    pub fn total(&self) -> IfaceCounters {
        let mut t = IfaceCounters::default();
        for c in self.interfaces.values() {
            t.requests_received += c.requests_received;
            t.responses_sent += c.responses_sent;
            t.gratuitous_sent += c.gratuitous_sent;
            t.conflicts += c.conflicts;
            t.malformed += c.malformed;
            t.rebinds += c.rebinds;
        }
        t
    }
}

/// Live counters of one interface, shared with its thread.
#[derive(Debug, Default)]
struct IfaceStats {
    requests_received: AtomicU64,
    responses_sent: AtomicU64,
    gratuitous_sent: AtomicU64,
    conflicts: AtomicU64,
    malformed: AtomicU64,
    rebinds: AtomicU64,
}

impl IfaceStats {
    fn snapshot(&self) -> IfaceCounters {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IfaceCounters {
            requests_received: r(&self.requests_received),
            responses_sent: r(&self.responses_sent),
            gratuitous_sent: r(&self.gratuitous_sent),
            conflicts: r(&self.conflicts),
            malformed: r(&self.malformed),
            rebinds: r(&self.rebinds),
        }
    }
}

type Subscribers = Arc<Mutex<Vec<Sender<Conflict>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data stays consistent even if a holder panicked (plain
    // sets/vecs updated in one step), so keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State of the dataplane shared by every clone of the handle.
#[derive(Debug)]
struct Shared {
    /// Tuning, fixed at construction.
    config: DataplaneConfig,
    /// One entry per interface ever announced on; threads live until drop.
    ifaces: Mutex<HashMap<String, Arc<engine::Iface>>>,
    /// Conflict subscribers; closed receivers are pruned on send.
    subscribers: Subscribers,
    /// SCHED_FIFO priority for interface threads started from now on (0 = off).
    rx_priority: std::sync::atomic::AtomicI32,
    /// The answer window every interface thread checks per frame.
    gate: Arc<Gate>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let ifaces: Vec<_> = lock(&self.ifaces).drain().map(|(_, i)| i).collect();
        for iface in ifaces {
            iface.stop();
        }
    }
}

/// Handle to the layer-2 dataplane. Cheap to clone; all clones share the
/// same sockets and threads, which stop when the last clone drops.
#[derive(Debug, Clone)]
pub struct Dataplane {
    shared: Arc<Shared>,
}

fn validate(vip: IpAddr) -> Result<(), L2Error> {
    let why = match vip {
        IpAddr::V4(v) if v.is_unspecified() => Some("unspecified"),
        IpAddr::V4(v) if v.is_multicast() || v.is_broadcast() => Some("multicast/broadcast"),
        IpAddr::V6(v) if v.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v) if v.is_multicast() => Some("multicast"),
        _ => None,
    };
    match why {
        Some(why) => Err(L2Error::InvalidVip { vip, why }),
        None => Ok(()),
    }
}

impl Dataplane {
    /// A dataplane with no interfaces yet; sockets open on first `announce`.
    pub fn new(config: DataplaneConfig) -> Self {
        Dataplane {
            shared: Arc::new(Shared {
                config,
                ifaces: Mutex::new(HashMap::new()),
                subscribers: Arc::new(Mutex::new(Vec::new())),
                rx_priority: std::sync::atomic::AtomicI32::new(DEFAULT_RX_PRIORITY),
                gate: Arc::new(Gate::new()),
            }),
        }
    }

    /// Sets the real-time (SCHED_FIFO) priority of interface threads started
    /// after this call; `None` keeps them on the normal scheduler. The default
    /// is [`DEFAULT_RX_PRIORITY`]: under CPU load a normal-priority thread
    /// waits for the scheduler (measured p99 ~1.4 ms vs ~50 µs on a loaded
    /// 2-core machine). The thread only runs for filtered ARP/NDP frames, and
    /// the kernel's RT throttling bounds it under a flood. Falls back to the
    /// normal scheduler when CAP_SYS_NICE is missing.
    pub fn with_rx_priority(self, priority: Option<u8>) -> Self {
        let p = priority.map_or(0, |p| i32::from(p.clamp(1, 99)));
        self.shared.rx_priority.store(p, Ordering::Relaxed);
        self
    }

    /// Starts answering for `vip` on `interface` at once and sends the
    /// GARP / unsolicited-NA burst. Idempotent: announcing an owned VIP again
    /// changes nothing. The first call for an interface opens its socket in
    /// the calling thread's network namespace.
    pub fn announce(&self, vip: IpAddr, interface: &str) -> Result<(), L2Error> {
        validate(vip)?;
        let iface = {
            let mut ifaces = lock(&self.shared.ifaces);
            match ifaces.get(interface) {
                Some(i) => i.clone(),
                None => {
                    let i = engine::Iface::start(
                        interface,
                        self.shared.config.clone(),
                        self.shared.subscribers.clone(),
                        self.shared.rx_priority.load(Ordering::Relaxed),
                        self.shared.gate.clone(),
                    )?;
                    ifaces.insert(interface.to_string(), i.clone());
                    i
                }
            }
        };
        iface.add(vip);
        Ok(())
    }

    /// Stops answering for `vip` on every interface at once.
    pub fn withdraw(&self, vip: IpAddr) {
        for iface in lock(&self.shared.ifaces).values() {
            iface.remove(vip);
        }
    }

    /// Stops answering for every VIP.
    pub fn withdraw_all(&self) {
        for iface in lock(&self.shared.ifaces).values() {
            iface.clear();
        }
    }

    /// Sets when answering is allowed (see [`AnswerWindow`]). Takes effect
    /// for the next frame every interface thread handles.
    pub fn set_answer_window(&self, window: AnswerWindow) {
        self.shared.gate.set(window);
    }

    /// Every (VIP, interface) currently answered for, sorted.
    pub fn owned(&self) -> Vec<(IpAddr, String)> {
        let mut v: Vec<(IpAddr, String)> = lock(&self.shared.ifaces)
            .iter()
            .flat_map(|(name, i)| i.owned().into_iter().map(move |ip| (ip, name.clone())))
            .collect();
        v.sort();
        v
    }

    /// Counters per interface.
    pub fn stats(&self) -> L2Stats {
        L2Stats {
            interfaces: lock(&self.shared.ifaces)
                .iter()
                .map(|(n, i)| (n.clone(), i.stats()))
                .collect(),
        }
    }

    /// A receiver of every conflict detected from now on.
    pub fn subscribe_conflicts(&self) -> Receiver<Conflict> {
        let (tx, rx) = channel();
        lock(&self.shared.subscribers).push(tx);
        rx
    }

    /// MAC of `interface` as bound, when announced on.
    pub fn mac(&self, interface: &str) -> Option<Mac> {
        lock(&self.shared.ifaces)
            .get(interface)
            .and_then(|i| i.mac())
    }
}

/// When the dataplane may answer at all, checked against the clock for
/// every frame it would send (replies and announcements alike).
///
/// It exists for the fast path's fence: a speaker frozen (SIGSTOP) past
/// its deadline must not answer even once when it wakes, before its
/// decision loop has run and withdrawn. The decision loop's withdraw is
/// the normal way to stop; this is the bound that holds when the loop is
/// late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerWindow {
    /// No deadline (the fast path is off, or judges nobody yet).
    Open,
    /// Answer only before this instant.
    Until(std::time::Instant),
    /// Answer nothing.
    Closed,
}

/// [`AnswerWindow`] in one atomic, shared with every interface thread.
#[derive(Debug)]
struct Gate {
    /// 0 = closed, `u64::MAX` = open, else nanoseconds after `base`.
    at: AtomicU64,
    /// The origin of the encoded instants.
    base: std::time::Instant,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            at: AtomicU64::new(u64::MAX),
            base: std::time::Instant::now(),
        }
    }

    fn set(&self, w: AnswerWindow) {
        let v = match w {
            AnswerWindow::Open => u64::MAX,
            AnswerWindow::Closed => 0,
            AnswerWindow::Until(t) => {
                let ns = t.saturating_duration_since(self.base).as_nanos();
                // An instant before our base is already past: closed.
                u64::try_from(ns)
                    .unwrap_or(u64::MAX - 1)
                    .clamp(0, u64::MAX - 1)
            }
        };
        self.at.store(v, Ordering::SeqCst);
    }

    /// Whether answering at `now` is allowed.
    fn allows(&self, now: std::time::Instant) -> bool {
        match self.at.load(Ordering::SeqCst) {
            u64::MAX => true,
            0 => false,
            ns => {
                let now_ns = now.saturating_duration_since(self.base).as_nanos();
                now_ns < u128::from(ns)
            }
        }
    }
}

/// Whether a stop has been requested (shared by engine threads).
type StopFlag = AtomicBool;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Dataplane>();
    }

    #[test]
    fn the_gate_closes_at_its_deadline() {
        let g = Gate::new();
        let now = std::time::Instant::now();
        assert!(g.allows(now), "open by default");
        g.set(AnswerWindow::Until(now + Duration::from_millis(5)));
        assert!(g.allows(now));
        assert!(!g.allows(now + Duration::from_millis(5)));
        g.set(AnswerWindow::Until(g.base));
        assert!(!g.allows(g.base), "a deadline at the base is past");
        g.set(AnswerWindow::Closed);
        assert!(!g.allows(now));
        g.set(AnswerWindow::Open);
        assert!(g.allows(now + Duration::from_secs(3600)));
    }

    #[test]
    fn invalid_vips_are_rejected_before_any_socket() {
        let dp = Dataplane::new(DataplaneConfig::default());
        for vip in ["0.0.0.0", "224.0.0.1", "255.255.255.255", "::", "ff02::1"] {
            let vip: IpAddr = vip.parse().unwrap();
            assert!(matches!(
                dp.announce(vip, "eth0"),
                Err(L2Error::InvalidVip { .. })
            ));
        }
        assert!(dp.owned().is_empty());
    }
}
