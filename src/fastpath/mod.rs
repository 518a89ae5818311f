//! The LAN fast path: sub-second detection of a dead speaker, beside the
//! per-node Lease (issue 13; design and safety argument in
//! `docs/architecture.md`, "Fast path: LAN failure detection").
//!
//! Owns the message codec ([`wire`]); the failure detector follows. Membership
//! is the lease-live set handed in: the Lease stays the membership record
//! and the backstop; the fast path only ever *shortens* how long a dead
//! node's VIPs stay dark.
//!
//! Pure, like `election`: time is an argument, messages come in and go out
//! as values. This module must never read a clock, open a socket, or import
//! kube, tokio or a component.

pub mod wire;

pub use wire::{Keyring, MessageRepr, WireError};
