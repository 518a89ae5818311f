//! A raw-frame prober for netns tests and `bench arp`: sends arbitrary
//! Ethernet frames out of one interface and receives the ARP / NDP frames
//! arriving on it.
//!
//! A test fixture, not used by the responder. It sends and receives through
//! the responder's own filtered socket ([`PacketSocket`]), so it sees what the
//! responder sees. Must never be pointed at an interface outside a namespace
//! the caller created.

use std::io;
use std::time::{Duration, Instant};

use crate::l2::{Mac, PacketSocket};

/// Receive buffer of the prober: large enough that a rate test's replies
/// are counted, not dropped by the kernel before we read them.
const RCVBUF_BYTES: usize = 16 << 20;

/// An AF_PACKET socket on one interface (created in the calling thread's
/// namespace; it stays there when moved to another thread).
#[derive(Debug)]
pub struct FrameProber {
    sock: PacketSocket,
}

impl FrameProber {
    /// Opens the prober on `iface` with a large receive buffer.
    pub fn open(iface: &str) -> io::Result<FrameProber> {
        Ok(FrameProber {
            sock: PacketSocket::open_arp_ndp(iface, RCVBUF_BYTES)?,
        })
    }

    /// MAC of the interface.
    pub fn mac(&self) -> Mac {
        self.sock.mac()
    }

    /// Sends one frame as is.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        self.sock.send(frame)
    }

    /// Receives one ARP/NDP frame into `buf`, waiting at most `timeout`.
    pub fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.sock.recv(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // At least 1 ms: a sub-millisecond remainder would poll with 0 and spin.
            self.sock
                .wait_readable(left.max(Duration::from_millis(1)))?;
        }
    }
}
