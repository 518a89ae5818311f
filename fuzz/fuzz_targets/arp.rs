//! ARP payloads: parse never panics on any bytes.
#![no_main]

use l2lb::l2::wire::ArpRepr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ArpRepr::parse(data);
});
