//! The local lab: network-namespace LAN harness and the embedded test API
//! server. Test fixtures compiled into the binary for `l2lb lab`; never a
//! production component.

pub mod apiserver;
pub mod demo;
pub mod net;
pub mod probe;
pub mod proxy;
pub mod world;
