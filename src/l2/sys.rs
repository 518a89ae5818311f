//! The unsafe edge of the dataplane: an AF_PACKET socket bound to one
//! interface, its socket options, `poll(2)` and interface-index lookup.
//!
//! Owns the packet socket's file descriptor (through `socket2::Socket`, closed
//! on drop). Must never contain protocol logic; every unsafe block states why
//! it is sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io::{self, Read};
use std::mem;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use super::wire::Mac;

/// An AF_PACKET (SOCK_RAW) socket bound to one interface, non-blocking,
/// not promiscuous, with a kernel filter attached before it is bound.
///
/// Public (as `l2::PacketSocket`, opened with
/// [`PacketSocket::open_arp_ndp`]) only for the lab's frame prober, so netns
/// tests and `bench arp` put frames on the wire through the responder's own
/// socket code instead of a copy of it; production code reaches sockets only
/// through [`Dataplane`](super::Dataplane).
#[derive(Debug)]
pub struct PacketSocket {
    /// The socket (owns the fd).
    sock: Socket,
    /// Index of the interface it is bound to; a different index under the
    /// same name means the interface was re-created and we must re-bind.
    ifindex: u32,
    /// MAC of the interface when the socket was bound.
    mac: Mac,
}

/// Interface index of `name` in the calling thread's namespace, if it exists.
pub(super) fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string alive for the call.
    let ix = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (ix != 0).then_some(ix)
}

fn setsockopt<T>(fd: RawFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live, initialised T and we pass its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl PacketSocket {
    /// Opens a socket on interface `name`, attaches `filter` before binding
    /// (so no unfiltered frame is ever queued), sets the receive buffer and
    /// PACKET_IGNORE_OUTGOING, and binds it for all protocols.
    pub(super) fn open(
        name: &str,
        filter: &[libc::sock_filter],
        rcvbuf: usize,
    ) -> io::Result<Self> {
        let ifindex = ifindex(name).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no interface {name}"))
        })?;
        // Protocol 0: the socket receives nothing until bound below.
        let sock = Socket::new(Domain::PACKET, Type::RAW, None)?;
        sock.attach_filter(filter)?;
        let fd = sock.as_raw_fd();
        let size = rcvbuf.min(i32::MAX as usize) as libc::c_int;
        // As root FORCE passes net.core.rmem_max; otherwise fall back to the capped size.
        if setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size).is_err() {
            sock.set_recv_buffer_size(rcvbuf)?;
        }
        let one: libc::c_int = 1;
        // Linux >= 4.20. Without it our own transmits come back, and the
        // source-MAC check in the decisions drops them; only costlier.
        let _ = setsockopt(fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one);
        sock.set_nonblocking(true)?;
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: we pass a pointer to a live sockaddr_ll and its exact size.
        let rc = unsafe {
            libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let mac = local_mac(&sock)?;
        Ok(PacketSocket { sock, ifindex, mac })
    }

    /// Raw fd, for poll.
    pub(super) fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Index of the interface the socket is bound to.
    pub(super) fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// MAC of the interface when the socket was bound.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// Receives one frame into `buf`; `WouldBlock` when none is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.sock).read(buf)
    }

    /// Sends one whole Ethernet frame out of the bound interface, as is.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        self.sock.send(frame)
    }

    /// Waits until a frame is queued (or the socket has an error to report)
    /// or `timeout` passes; true when [`PacketSocket::recv`] has something.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        Ok(poll(&[self.fd()], ms)?[0] != 0)
    }

    /// Reads and clears SO_ERROR (an unread error keeps poll returning POLLERR).
    pub(super) fn take_error(&self) -> Option<io::Error> {
        self.sock.take_error().ok().flatten()
    }

    /// Joins (or leaves) the link-layer multicast group `mac` on the interface.
    pub(super) fn membership(&self, mac: Mac, join: bool) -> io::Result<()> {
        // SAFETY: packet_mreq is plain data; all-zero is valid.
        let mut mreq: libc::packet_mreq = unsafe { mem::zeroed() };
        mreq.mr_ifindex = self.ifindex as i32;
        mreq.mr_type = libc::PACKET_MR_MULTICAST as u16;
        mreq.mr_alen = 6;
        mreq.mr_address[..6].copy_from_slice(&mac.octets());
        let opt = if join {
            libc::PACKET_ADD_MEMBERSHIP
        } else {
            libc::PACKET_DROP_MEMBERSHIP
        };
        setsockopt(self.fd(), libc::SOL_PACKET, opt, &mreq)
    }
}

/// The interface MAC, read from the bound socket's own address.
fn local_mac(sock: &Socket) -> io::Result<Mac> {
    let addr: SockAddr = sock.local_addr()?;
    if (addr.len() as usize) < mem::size_of::<libc::sockaddr_ll>() - 8 + 6 {
        return Err(io::Error::other("short sockaddr_ll"));
    }
    let storage = addr.as_storage();
    // SAFETY: the kernel filled a sockaddr_ll (family AF_PACKET, length checked
    // above) into this sockaddr_storage, which is larger and suitably aligned.
    let sll: libc::sockaddr_ll =
        unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
    if sll.sll_halen != 6 {
        return Err(io::Error::other(format!(
            "hardware address length {}",
            sll.sll_halen
        )));
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&sll.sll_addr[..6]);
    Ok(Mac(mac))
}

/// Waits until one of `fds` is readable or has an error, or `timeout_ms`
/// passes; returns the revents of each fd in order.
pub(super) fn poll(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<i16>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `pfds` is a live, initialised array of exactly `len` pollfds.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![0; fds.len()]);
        }
        return Err(e);
    }
    Ok(pfds.iter().map(|p| p.revents).collect())
}

/// Puts the calling thread in SCHED_FIFO at `priority` (needs CAP_SYS_NICE).
pub(super) fn set_realtime(priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 means the calling thread; `param` is a live sched_param.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
