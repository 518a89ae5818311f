//! The LAN fast path: sub-second detection of a dead speaker, beside the
//! per-node Lease (issue 13; design and safety argument in
//! `docs/architecture.md`, "Fast path: LAN failure detection").
//!
//! Owns the message codec ([`wire`]) and the failure detector
//! ([`detector`]): ring heartbeats to `k` witnesses, acknowledgements,
//! broadcast suspicion reports, verdicts ("peer X is dead since t") and
//! the self-fence ("stop answering, peers may declare us dead"). Membership
//! is the lease-live set handed in: the Lease stays the membership record
//! and the backstop; the fast path only ever *shortens* how long a dead
//! node's VIPs stay dark.
//!
//! Pure, like `election`: time is an argument, messages come in and go out
//! as values. This module must never read a clock, open a socket, or import
//! kube, tokio or a component.

pub mod detector;
pub mod keyfile;
#[cfg(test)]
mod sim;
pub mod wire;

pub use detector::{
    Config, ConfigError, DeadPeer, Destination, Detector, Outgoing, Rejected, SelfStatus,
};
pub use wire::{Keyring, MessageRepr, WireError};

use ring::digest;

/// A node's position on the monitoring ring.
///
/// Part of the wire contract only loosely: each node picks its own
/// witnesses and names them in its heartbeats, so nodes that disagree here
/// (mid-upgrade) stay safe; they only spread the heartbeat load less evenly.
/// A hash, not the name order, so that nodes named alike (often racked
/// alike) do not witness each other and fail together. Defined as the first
/// 8 bytes (big-endian) of SHA-256(`"l2lb-fastpath-ring\0"` ‖ name).
pub fn ring_key(node: &str) -> u64 {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"l2lb-fastpath-ring\0");
    ctx.update(node.as_bytes());
    let d = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_key_is_pinned() {
        // Independently: python3 -c 'import hashlib;
        //   print(hashlib.sha256(b"l2lb-fastpath-ring\0node-a").hexdigest()[:16])'
        assert_eq!(ring_key("node-a"), 0xc0af_1e09_51df_b4f3);
        assert_ne!(ring_key("node-a"), ring_key("node-b"));
    }
}
