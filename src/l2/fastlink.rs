//! The fast path's transport: raw Ethernet frames with the local
//! experimental EtherType [`FASTPATH_ETHERTYPE`] (IEEE 802 "local
//! experimental 1", 0x88B5) on an AF_PACKET socket, so speakers reach each
//! other on the segment with no IP port, no firewall rule and no
//! NetworkPolicy.
//!
//! Owns the frame layout (destination, source, EtherType, a 16-bit payload
//! length, the signed fast-path message) and one socket per interface that
//! receives only that EtherType (a kernel filter drops everything else).
//! It must never interpret a message: authentication and every decision
//! belong to `crate::fastpath`; this module only moves bytes.
//!
//! The length prefix exists because Ethernet pads frames shorter than 60
//! bytes and some paths keep the padding: the message's MAC sits at its
//! end, so the receiver must know where the message ends.

use std::io;
use std::time::Duration;

use pnet::packet::ethernet::{EtherType, EthernetPacket, MutableEthernetPacket};
use pnet::util::MacAddr;

use super::sys::PacketSocket;
use super::wire::Mac;

/// EtherType of fast-path frames: IEEE Std 802 "local experimental
/// EtherType 1", reserved for exactly this kind of site-local protocol.
pub const FASTPATH_ETHERTYPE: u16 = 0x88B5;

/// Largest message carried (a heartbeat naming 16 witnesses with 253-byte
/// names stays below it); longer messages are refused on send.
pub const MAX_MESSAGE: usize = 1500 - 2;

const HEADER: usize = 14;

/// Why a received frame is not a fast-path frame we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkFrameError {
    /// Shorter than the Ethernet header plus the length field.
    #[error("frame too short ({0} bytes)")]
    Short(usize),
    /// Another EtherType (only if the kernel filter let it through).
    #[error("EtherType {0:#06x}")]
    EtherType(u16),
    /// The length field points past the frame.
    #[error("length field {declared} exceeds the {available} bytes present")]
    Length {
        /// The length the frame declares.
        declared: usize,
        /// What the frame holds after the length field.
        available: usize,
    },
}

/// A fast-path frame as received: who sent it (link layer) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFrame<'a> {
    /// Destination MAC (ours, or broadcast).
    pub dst: Mac,
    /// Source MAC: where a unicast reply to the sender goes.
    pub src: Mac,
    /// The signed message, padding removed.
    pub message: &'a [u8],
}

impl<'a> LinkFrame<'a> {
    /// Checks and splits one received frame; never panics.
    pub fn parse(frame: &'a [u8]) -> Result<LinkFrame<'a>, LinkFrameError> {
        if frame.len() < HEADER + 2 {
            return Err(LinkFrameError::Short(frame.len()));
        }
        let eth = EthernetPacket::new(frame).ok_or(LinkFrameError::Short(frame.len()))?;
        let ethertype = eth.get_ethertype().0;
        if ethertype != FASTPATH_ETHERTYPE {
            return Err(LinkFrameError::EtherType(ethertype));
        }
        let body = &frame[HEADER..];
        let declared = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let available = body.len() - 2;
        if declared > available {
            return Err(LinkFrameError::Length {
                declared,
                available,
            });
        }
        Ok(LinkFrame {
            dst: Mac(eth.get_destination().octets()),
            src: Mac(eth.get_source().octets()),
            message: &body[2..2 + declared],
        })
    }
}

/// Builds the frame carrying `message` from `src` to `dst`; `None` when the
/// message is longer than [`MAX_MESSAGE`].
pub fn emit_frame(dst: Mac, src: Mac, message: &[u8]) -> Option<Vec<u8>> {
    if message.len() > MAX_MESSAGE {
        return None;
    }
    let mut buf = vec![0u8; HEADER + 2 + message.len()];
    let len = u16::try_from(message.len()).ok()?;
    {
        let mut eth = MutableEthernetPacket::new(&mut buf)?;
        eth.set_destination(MacAddr::from(dst.octets()));
        eth.set_source(MacAddr::from(src.octets()));
        eth.set_ethertype(EtherType(FASTPATH_ETHERTYPE));
    }
    buf[HEADER..HEADER + 2].copy_from_slice(&len.to_be_bytes());
    buf[HEADER + 2..].copy_from_slice(message);
    Some(buf)
}

/// Classic BPF: accept only frames of [`FASTPATH_ETHERTYPE`].
fn filter() -> Vec<libc::sock_filter> {
    const LDH_ABS: u16 = 0x28;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let s = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    vec![
        s(LDH_ABS, 0, 0, 12),                          // A = ethertype
        s(JEQ_K, 0, 1, u32::from(FASTPATH_ETHERTYPE)), // ours → accept, else drop
        s(RET_K, 0, 0, 0x0000_ffff),                   // accept (whole frame)
        s(RET_K, 0, 0, 0),                             // drop
    ]
}

/// One interface's fast-path socket. Non-blocking; our own transmits are
/// not looped back (PACKET_IGNORE_OUTGOING).
#[derive(Debug)]
pub struct FastLink {
    /// The filtered packet socket.
    sock: PacketSocket,
    /// Interface name, for re-binding when the interface is re-created.
    name: String,
}

impl FastLink {
    /// Opens the socket on `interface` in the calling thread's namespace.
    pub fn open(interface: &str) -> io::Result<FastLink> {
        let sock = PacketSocket::open(interface, &filter(), 1 << 20)?;
        Ok(FastLink {
            sock,
            name: interface.to_string(),
        })
    }

    /// The interface's MAC as bound.
    pub fn mac(&self) -> Mac {
        self.sock.mac()
    }

    /// The interface name.
    pub fn interface(&self) -> &str {
        &self.name
    }

    /// Whether the interface still exists under the index we bound to.
    pub fn still_bound(&self) -> bool {
        super::sys::ifindex(&self.name) == Some(self.sock.ifindex())
    }

    /// Sends `message` to `dst` (a peer's MAC, or [`Mac::BROADCAST`]).
    pub fn send(&self, dst: Mac, message: &[u8]) -> io::Result<()> {
        let frame = emit_frame(dst, self.mac(), message)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "message too long"))?;
        self.sock.send(&frame).map(|_| ())
    }

    /// Receives one frame into `buf`; `Ok(None)` when nothing is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.sock.recv(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => {
                // Clear SO_ERROR (ENETDOWN while the link is down) so poll
                // does not keep reporting it.
                let _ = self.sock.take_error();
                Err(e)
            }
        }
    }

    /// Waits until a frame is queued or `timeout` passes.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        self.sock.wait_readable(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: Mac = Mac([2, 0, 0, 0, 0, 0xa]);
    const B: Mac = Mac([2, 0, 0, 0, 0, 0xb]);

    #[test]
    fn frame_layout_is_fixed() {
        let f = emit_frame(B, A, b"hi").unwrap();
        assert_eq!(
            f,
            [
                2, 0, 0, 0, 0, 0xb, // destination
                2, 0, 0, 0, 0, 0xa, // source
                0x88, 0xb5, // EtherType
                0, 2, // length
                b'h', b'i',
            ]
        );
        let p = LinkFrame::parse(&f).unwrap();
        assert_eq!((p.dst, p.src, p.message), (B, A, &b"hi"[..]));
    }

    #[test]
    fn padding_is_not_part_of_the_message() {
        let mut f = emit_frame(Mac::BROADCAST, A, b"msg").unwrap();
        f.resize(60, 0);
        assert_eq!(LinkFrame::parse(&f).unwrap().message, b"msg");
    }

    #[test]
    fn foreign_and_truncated_frames_are_refused() {
        let mut f = emit_frame(B, A, b"msg").unwrap();
        f[12] = 0x08;
        f[13] = 0x06;
        assert_eq!(LinkFrame::parse(&f), Err(LinkFrameError::EtherType(0x0806)));
        let f = emit_frame(B, A, b"msg").unwrap();
        assert!(matches!(
            LinkFrame::parse(&f[..f.len() - 1]),
            Err(LinkFrameError::Length { .. })
        ));
        assert_eq!(LinkFrame::parse(&f[..10]), Err(LinkFrameError::Short(10)));
        assert!(emit_frame(B, A, &vec![0; MAX_MESSAGE + 1]).is_none());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            msg in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let _ = LinkFrame::parse(&bytes);
            let f = emit_frame(B, A, &msg).unwrap();
            prop_assert_eq!(LinkFrame::parse(&f).unwrap().message, &msg[..]);
        }
    }
}
