//! IPv6 packets carrying NS/NA: parse never panics on any bytes.
#![no_main]

use l2lb::l2::wire::NdpRepr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = NdpRepr::parse(data);
});
