//! Fault injection for outage and fencing tests: added latency, dropped
//! connections, forced error responses, blocked client addresses and
//! closing every open watch.
//!
//! Owns only the fault settings; the router and the watch streams consult
//! them. Faults are off by default and never change stored objects.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// What open watches must check when it changes.
#[derive(Clone, Debug, Default)]
pub struct WatchKill {
    /// Bumped by [`Faults::close_watches`]; a watch opened under an older generation ends.
    pub generation: u64,
    /// Client addresses whose watches end and whose requests get no answer.
    pub blocked: BTreeSet<IpAddr>,
}

/// The fault settings of one [`super::ApiServer`].
#[derive(Debug)]
pub struct Faults {
    /// Delay added before every request is handled.
    latency: Mutex<Duration>,
    /// How many of the next requests get `fail_code`.
    fail_remaining: AtomicU32,
    /// HTTP code for forced failures.
    fail_code: AtomicU16,
    /// How many of the next requests have their connection closed without an answer.
    drop_remaining: AtomicU32,
    /// Watch generation and blocked addresses, observed by every watch stream.
    kill: watch::Sender<WatchKill>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency: Mutex::new(Duration::ZERO),
            fail_remaining: AtomicU32::new(0),
            fail_code: AtomicU16::new(500),
            drop_remaining: AtomicU32::new(0),
            kill: watch::Sender::new(WatchKill::default()),
        }
    }
}

/// Decrements `n` if positive; true when it was.
fn take(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

impl Faults {
    /// Adds `latency` before every request (zero turns it off).
    pub fn set_latency(&self, latency: Duration) {
        *self.latency.lock().unwrap_or_else(|e| e.into_inner()) = latency;
    }

    /// The next `n` requests are answered with a `Status` of HTTP `code` (e.g. 500).
    pub fn fail_next(&self, n: u32, code: u16) {
        self.fail_code.store(code, Ordering::SeqCst);
        self.fail_remaining.store(n, Ordering::SeqCst);
    }

    /// The next `n` requests have their connection closed without an answer.
    pub fn drop_next(&self, n: u32) {
        self.drop_remaining.store(n, Ordering::SeqCst);
    }

    /// Connections from `ip` are closed on accept, its requests on open
    /// connections are dropped unanswered and its watches end: to it, the
    /// API server is unreachable.
    pub fn block(&self, ip: IpAddr) {
        self.kill.send_modify(|k| {
            k.blocked.insert(ip);
        });
    }

    /// Undoes [`Faults::block`].
    pub fn unblock(&self, ip: IpAddr) {
        self.kill.send_modify(|k| {
            k.blocked.remove(&ip);
        });
    }

    /// Ends every open watch now (clients see the stream end and re-watch).
    pub fn close_watches(&self) {
        self.kill.send_modify(|k| k.generation += 1);
    }

    /// Turns every fault off (latency, pending failures and drops, blocks).
    pub fn clear(&self) {
        self.set_latency(Duration::ZERO);
        self.fail_remaining.store(0, Ordering::SeqCst);
        self.drop_remaining.store(0, Ordering::SeqCst);
        self.kill.send_modify(|k| k.blocked.clear());
    }

    /// Whether `ip` is blocked.
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        self.kill.borrow().blocked.contains(&ip)
    }

    pub(super) fn latency(&self) -> Duration {
        *self.latency.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn take_drop(&self) -> bool {
        take(&self.drop_remaining)
    }

    pub(super) fn take_failure(&self) -> Option<u16> {
        take(&self.fail_remaining).then(|| self.fail_code.load(Ordering::SeqCst))
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<WatchKill> {
        self.kill.subscribe()
    }
}
