//! One thread per interface: receives filtered ARP/NDP frames, answers them
//! with [`decide::reply`], sends the announcement bursts, detects conflicts,
//! and re-binds when the interface is deleted and re-created.
//!
//! ```text
//!  Dataplane::announce/withdraw ──(owned set + pending bursts, wake byte)──▶ thread
//!  thread ──poll(socket, wake, timeout)──▶ recv ─ parse ─ reply ─ send
//!                                          └──▶ conflict ─▶ subscribers
//! ```
//!
//! Must never block anywhere but `poll`, never spin (an error condition on the
//! socket is cleared by reading SO_ERROR, a vanished interface is waited for
//! with the housekeeping timeout), and never let a bad frame end the loop.

use std::collections::HashSet;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, info, trace, warn};

use super::decide::{self, OwnedVips};
use super::sys::{self, PacketSocket};
use super::wire::{FrameRepr, Mac, ipv6_multicast_mac, solicited_node};
use super::{
    Conflict, DataplaneConfig, Gate, HOUSEKEEPING, IfaceCounters, IfaceStats, L2Error, StopFlag,
    Subscribers, lock,
};

/// Classic BPF: accept ARP (any op: replies reveal conflicts) and ICMPv6
/// NS/NA in an IPv6 header without extension headers; drop everything else
/// in the kernel so unrelated traffic never wakes the thread.
fn filter() -> Vec<libc::sock_filter> {
    const LDH_ABS: u16 = 0x28;
    const LDB_ABS: u16 = 0x30;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let s = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    vec![
        s(LDH_ABS, 0, 0, 12),        // 0: A = ethertype
        s(JEQ_K, 6, 0, 0x0806),      // 1: ARP → accept (8)
        s(JEQ_K, 0, 6, 0x86dd),      // 2: not IPv6 → drop (9)
        s(LDB_ABS, 0, 0, 20),        // 3: A = next header
        s(JEQ_K, 0, 4, 58),          // 4: not ICMPv6 → drop
        s(LDB_ABS, 0, 0, 54),        // 5: A = ICMPv6 type
        s(JEQ_K, 1, 0, 135),         // 6: NS → accept
        s(JEQ_K, 0, 1, 136),         // 7: NA → accept, else drop
        s(RET_K, 0, 0, 0x0004_0000), // 8: accept (whole frame)
        s(RET_K, 0, 0, 0),           // 9: drop
    ]
}

impl PacketSocket {
    /// Opens a socket on `interface` (in the calling thread's namespace) that
    /// receives exactly what the responder receives: ARP and ICMPv6 NS/NA,
    /// through the same kernel filter, with a `rcvbuf_bytes` receive buffer.
    pub fn open_arp_ndp(interface: &str, rcvbuf_bytes: usize) -> io::Result<PacketSocket> {
        PacketSocket::open(interface, &filter(), rcvbuf_bytes)
    }
}

/// VIPs owned on one interface, shared between the handle and the thread.
#[derive(Debug, Default)]
struct Owned(RwLock<HashSet<IpAddr>>);

impl Owned {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashSet<IpAddr>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<IpAddr>> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The handle side of one interface.
#[derive(Debug)]
pub(super) struct Iface {
    /// Interface name (stable; the index may change on re-creation).
    name: String,
    /// VIPs answered on this interface.
    owned: Arc<Owned>,
    /// VIPs whose announcement burst must start now.
    pending: Arc<Mutex<Vec<IpAddr>>>,
    /// Counters.
    stats: Arc<IfaceStats>,
    /// Set on drop of the dataplane.
    stop: Arc<StopFlag>,
    /// Writing a byte wakes the thread out of poll.
    wake_tx: UnixDatagram,
    /// MAC of the interface as last bound.
    mac: Arc<Mutex<Option<Mac>>>,
    /// The thread, joined on stop.
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Iface {
    /// Opens the socket on the caller's thread (so errors surface to the
    /// caller, and the namespace is the caller's) and starts the thread.
    pub(super) fn start(
        name: &str,
        config: DataplaneConfig,
        subscribers: Subscribers,
        rx_priority: i32,
        gate: Arc<Gate>,
    ) -> Result<Arc<Iface>, L2Error> {
        let socket_err = |source| L2Error::Socket {
            interface: name.to_string(),
            source,
        };
        let sock = PacketSocket::open_arp_ndp(name, config.rcvbuf_bytes).map_err(socket_err)?;
        let (wake_tx, wake_rx) = UnixDatagram::pair().map_err(socket_err)?;
        wake_rx.set_nonblocking(true).map_err(socket_err)?;
        wake_tx.set_nonblocking(true).map_err(socket_err)?;
        let iface = Arc::new(Iface {
            name: name.to_string(),
            owned: Arc::new(Owned::default()),
            pending: Arc::new(Mutex::new(Vec::new())),
            stats: Arc::new(IfaceStats::default()),
            stop: Arc::new(StopFlag::new(false)),
            wake_tx,
            mac: Arc::new(Mutex::new(Some(sock.mac()))),
            thread: Mutex::new(None),
        });
        let mut worker = Worker {
            name: name.to_string(),
            config,
            rx_priority,
            owned: iface.owned.clone(),
            pending: iface.pending.clone(),
            stats: iface.stats.clone(),
            stop: iface.stop.clone(),
            wake_rx,
            mac_out: iface.mac.clone(),
            subscribers,
            sock: Some(sock),
            joined: HashSet::new(),
            schedule: Vec::new(),
            next_refresh: None,
            last_check: Instant::now(),
            link_down: false,
            gate,
        };
        let handle = std::thread::Builder::new()
            .name(format!("l2-{name}"))
            .spawn(move || {
                let span = tracing::info_span!("l2_rx", iface = %worker.name);
                let _guard = span.enter();
                worker.run();
            })
            .map_err(|source| L2Error::Thread {
                interface: name.to_string(),
                source,
            })?;
        *lock(&iface.thread) = Some(handle);
        Ok(iface)
    }

    fn wake(&self) {
        // A full wake queue already guarantees a wake-up; ignore errors.
        let _ = self.wake_tx.send(&[1]);
    }

    pub(super) fn add(&self, vip: IpAddr) {
        if self.owned.write().insert(vip) {
            info!(%vip, iface = %self.name, "announcing");
            lock(&self.pending).push(vip);
            self.wake();
        }
    }

    pub(super) fn remove(&self, vip: IpAddr) {
        if self.owned.write().remove(&vip) {
            info!(%vip, iface = %self.name, "withdrawn");
            self.wake();
        }
    }

    pub(super) fn clear(&self) {
        self.owned.write().clear();
        self.wake();
    }

    pub(super) fn owned(&self) -> Vec<IpAddr> {
        self.owned.read().iter().copied().collect()
    }

    pub(super) fn stats(&self) -> IfaceCounters {
        self.stats.snapshot()
    }

    pub(super) fn mac(&self) -> Option<Mac> {
        *lock(&self.mac)
    }

    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
        if let Some(h) = lock(&self.thread).take() {
            let _ = h.join();
        }
    }
}

/// The thread side of one interface.
struct Worker {
    name: String,
    config: DataplaneConfig,
    /// SCHED_FIFO priority of this thread; 0 keeps the normal scheduler.
    rx_priority: i32,
    owned: Arc<Owned>,
    pending: Arc<Mutex<Vec<IpAddr>>>,
    stats: Arc<IfaceStats>,
    stop: Arc<StopFlag>,
    wake_rx: UnixDatagram,
    mac_out: Arc<Mutex<Option<Mac>>>,
    subscribers: Subscribers,
    /// None while the interface is missing.
    sock: Option<PacketSocket>,
    /// Multicast MACs joined on the current socket.
    joined: HashSet<Mac>,
    /// (due, vip) announcement sends still to do.
    schedule: Vec<(Instant, IpAddr)>,
    /// When the periodic refresh is next due.
    next_refresh: Option<Instant>,
    /// Last time the interface index was checked.
    last_check: Instant,
    /// The socket reported ENETDOWN: re-announce everything once the link
    /// is back, since neighbours may have moved while we could not answer.
    link_down: bool,
    /// The answer window, checked against the clock before every send, so
    /// a thread that ran late (a frozen process) answers nothing stale.
    gate: Arc<Gate>,
}

const MAX_FRAME: usize = 2048;
/// Frames handled per wake-up before looking at timers again.
const BATCH: usize = 256;

impl Worker {
    fn run(&mut self) {
        let mut buf = vec![0u8; MAX_FRAME];
        if self.rx_priority > 0 {
            match sys::set_realtime(self.rx_priority) {
                Ok(()) => debug!(priority = self.rx_priority, "rx thread runs SCHED_FIFO"),
                // Without CAP_SYS_NICE (or an RT budget in the cgroup) we still
                // work, just with scheduler wake-up latency under CPU load.
                Err(e) => info!(error = %e, "rx thread stays at normal priority"),
            }
        }
        self.next_refresh = self.config.refresh_interval.map(|i| Instant::now() + i);
        while !self.stop.load(Ordering::SeqCst) {
            self.take_pending();
            self.sync_memberships();
            let now = Instant::now();
            self.send_due(now);
            let timeout = self.timeout(now);
            let wake_fd = self.wake_rx.as_raw_fd();
            let fds: Vec<i32> = match &self.sock {
                Some(s) => vec![wake_fd, s.fd()],
                None => vec![wake_fd],
            };
            let revents = match sys::poll(&fds, timeout.as_millis().min(i32::MAX as u128) as i32) {
                Ok(r) => r,
                Err(e) => {
                    // poll only fails on EINVAL/ENOMEM; back off instead of spinning.
                    warn!(error = %e, "poll failed");
                    std::thread::sleep(HOUSEKEEPING);
                    continue;
                }
            };
            if revents[0] != 0 {
                let mut b = [0u8; 64];
                while self.wake_rx.recv(&mut b).is_ok() {}
            }
            if revents.len() > 1 && revents[1] != 0 {
                if revents[1] & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                    self.socket_error();
                }
                if revents[1] & libc::POLLIN != 0 {
                    self.receive(&mut buf);
                }
            }
            if self.last_check.elapsed() >= HOUSEKEEPING {
                self.check_interface();
            }
        }
    }

    fn timeout(&self, now: Instant) -> Duration {
        let mut t = HOUSEKEEPING;
        if let Some(due) = self.schedule.iter().map(|(d, _)| *d).min() {
            t = t.min(due.saturating_duration_since(now));
        }
        if let Some(r) = self.next_refresh {
            t = t.min(r.saturating_duration_since(now));
        }
        t
    }

    fn take_pending(&mut self) {
        let vips: Vec<IpAddr> = lock(&self.pending).drain(..).collect();
        let now = Instant::now();
        for vip in vips {
            self.schedule_burst(vip, now);
        }
    }

    fn schedule_burst(&mut self, vip: IpAddr, now: Instant) {
        self.schedule.retain(|(_, v)| *v != vip);
        for offset in &self.config.garp_schedule {
            self.schedule.push((now + *offset, vip));
        }
    }

    fn send_due(&mut self, now: Instant) {
        let mut due = Vec::new();
        self.schedule.retain(|(t, vip)| {
            if *t <= now {
                due.push(*vip);
                false
            } else {
                true
            }
        });
        if let (Some(interval), Some(at)) = (self.config.refresh_interval, self.next_refresh)
            && at <= now
        {
            due.extend(self.owned.read().iter().copied());
            self.next_refresh = Some(now + interval);
        }
        due.sort();
        due.dedup();
        let Some(sock) = &self.sock else { return };
        if !self.gate.allows(Instant::now()) {
            return;
        }
        for vip in due {
            // A withdrawn VIP is never announced again, even mid-burst.
            if !self.owned.read().owns(vip) {
                continue;
            }
            for frame in decide::announcements(vip, sock.mac()) {
                match sock.send(&frame.emit()) {
                    Ok(_) => {
                        self.stats.gratuitous_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => debug!(%vip, error = %e, "announcement not sent"),
                }
            }
        }
    }

    fn receive(&mut self, buf: &mut [u8]) {
        for _ in 0..BATCH {
            let Some(sock) = &self.sock else { return };
            let n = match sock.recv(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!(error = %e, "recv failed");
                    self.socket_error();
                    return;
                }
            };
            let our_mac = sock.mac();
            let frame = match FrameRepr::parse(&buf[..n]) {
                Ok(f) => f,
                Err(e) => {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    trace!(error = %e, len = n, "malformed frame dropped");
                    continue;
                }
            };
            let is_request = matches!(
                frame.payload,
                super::wire::Payload::Arp(super::wire::ArpRepr {
                    op: super::wire::ArpOp::Request,
                    ..
                }) | super::wire::Payload::Ndp(super::wire::NdpRepr::Solicit { .. })
            );
            if is_request {
                self.stats.requests_received.fetch_add(1, Ordering::Relaxed);
            }
            let (answer, claim) = {
                let owned = self.owned.read();
                (
                    decide::reply(&frame, &*owned, our_mac),
                    decide::conflict(&frame, &*owned, our_mac),
                )
            };
            // The clock is read per frame, after the frame was taken off
            // the queue: a frame queued while we were frozen is judged
            // by when we would answer it, not when it arrived.
            if let Some(r) = answer.filter(|_| self.gate.allows(Instant::now())) {
                match sock.send(&r.emit()) {
                    Ok(_) => {
                        self.stats.responses_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => debug!(error = %e, "reply not sent"),
                }
            }
            if let Some(c) = claim {
                self.report_conflict(c, our_mac);
            }
        }
    }

    fn report_conflict(&mut self, claim: decide::Claim, our_mac: Mac) {
        self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
        // The speaker judges whether it is a conflict (a peer's hand-over
        // echo is not) and logs it; here it is only a frame seen.
        debug!(
            vip = %claim.vip,
            our_mac = %our_mac,
            their_mac = %claim.their_mac,
            "another MAC claims an owned VIP"
        );
        let conflict = Conflict {
            vip: claim.vip,
            interface: self.name.clone(),
            our_mac,
            their_mac: claim.their_mac,
        };
        lock(&self.subscribers).retain(|tx| tx.send(conflict.clone()).is_ok());
    }

    /// Clears SO_ERROR (so poll stops reporting it) and re-checks the interface.
    fn socket_error(&mut self) {
        if let Some(sock) = &self.sock
            && let Some(e) = sock.take_error()
        {
            debug!(error = %e, "socket error cleared");
            if e.raw_os_error() == Some(libc::ENETDOWN) {
                self.link_down = true;
            }
        }
        self.check_interface();
        // ENETDOWN stays readable as POLLERR only until read; if the link is
        // down, nothing else is pending, so waiting in poll is safe.
    }

    /// Re-binds when the interface vanished or was re-created (new index).
    fn check_interface(&mut self) {
        self.last_check = Instant::now();
        let current = sys::ifindex(&self.name);
        let bound = self.sock.as_ref().map(|s| s.ifindex());
        if current == bound {
            self.check_link_up();
            return;
        }
        if self.sock.take().is_some() {
            info!("interface gone or re-created; re-binding");
            self.joined.clear();
        }
        if current.is_none() {
            return;
        }
        match PacketSocket::open_arp_ndp(&self.name, self.config.rcvbuf_bytes) {
            Ok(sock) => {
                *lock(&self.mac_out) = Some(sock.mac());
                self.sock = Some(sock);
                self.stats.rebinds.fetch_add(1, Ordering::Relaxed);
                // Caches may have moved while we were gone: announce everything again.
                let now = Instant::now();
                let vips: Vec<IpAddr> = self.owned.read().iter().copied().collect();
                for vip in vips {
                    self.schedule_burst(vip, now);
                }
                self.sync_memberships();
            }
            Err(e) => debug!(error = %e, "re-bind failed; retrying"),
        }
    }

    /// After ENETDOWN: probes with one announcement (sending fails with
    /// ENETDOWN while the link is down) and, once it goes out, schedules a
    /// full burst for every owned VIP.
    fn check_link_up(&mut self) {
        if !self.link_down {
            return;
        }
        let Some(sock) = &self.sock else { return };
        let vips: Vec<IpAddr> = self.owned.read().iter().copied().collect();
        let Some(first) = vips.first() else {
            self.link_down = false;
            return;
        };
        let probe = decide::announcements(*first, sock.mac());
        let Some(frame) = probe.first() else { return };
        if sock.send(&frame.emit()).is_ok() {
            self.stats.gratuitous_sent.fetch_add(1, Ordering::Relaxed);
            info!("link is up again; re-announcing");
            self.link_down = false;
            let now = Instant::now();
            for vip in vips {
                self.schedule_burst(vip, now);
            }
        }
    }

    /// Joins the solicited-node multicast group of every owned IPv6 VIP so NS
    /// reach the socket on NICs that filter multicast; leaves stale ones.
    fn sync_memberships(&mut self) {
        let Some(sock) = &self.sock else { return };
        let wanted: HashSet<Mac> = self
            .owned
            .read()
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V6(v6) => Some(ipv6_multicast_mac(solicited_node(*v6))),
                IpAddr::V4(_) => None,
            })
            .collect();
        for mac in wanted.difference(&self.joined) {
            if let Err(e) = sock.membership(*mac, true) {
                debug!(error = %e, "multicast join failed");
            }
        }
        for mac in self.joined.difference(&wanted) {
            let _ = sock.membership(*mac, false);
        }
        self.joined = wanted;
    }
}
