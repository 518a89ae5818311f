//! The local lab: network-namespace LAN harness, the embedded test API
//! server, and the fixtures netns tests and benches drive the L2 responder
//! with (a raw-frame prober and the `l2-responder` control protocol). Test
//! fixtures compiled into the binary for `l2lb lab`; never a production
//! component, and production code never imports it.

pub mod apiserver;
pub mod demo;
pub mod frame_prober;
pub mod kubectl;
pub mod net;
pub mod probe;
pub mod proxy;
pub mod responder_control;
pub mod world;
