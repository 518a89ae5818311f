//! A raw-frame prober for tests and benchmarks: sends arbitrary Ethernet
//! frames out of one interface and receives ARP / NDP frames from it.
//!
//! A test fixture, not used by the responder. Must never be pointed at an
//! interface outside a namespace the caller created.

use std::io;
use std::time::{Duration, Instant};

use super::engine::filter;
use super::sys::{self, PacketSocket};
use super::wire::Mac;

/// An AF_PACKET socket on one interface (created in the calling thread's
/// namespace; it stays there when moved to another thread).
#[derive(Debug)]
pub struct Prober {
    sock: PacketSocket,
}

impl Prober {
    /// Opens the prober on `iface` with a large receive buffer.
    pub fn open(iface: &str) -> io::Result<Prober> {
        Ok(Prober {
            sock: PacketSocket::open(iface, &filter(), 16 << 20)?,
        })
    }

    /// MAC of the interface.
    pub fn mac(&self) -> Mac {
        self.sock.mac
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
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            sys::poll(&[self.sock.fd()], ms)?;
        }
    }
}
