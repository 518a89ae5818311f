//! Whole Ethernet frames: parse never panics, and what parses re-emits to a
//! frame that parses to the same value.
#![no_main]

use l2lb::l2::wire::FrameRepr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = FrameRepr::parse(data) {
        assert_eq!(FrameRepr::parse(&frame.emit()), Ok(frame));
    }
});
