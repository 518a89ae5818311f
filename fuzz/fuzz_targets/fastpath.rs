//! Fast-path messages: parse never panics on any bytes, authenticated or not.
//!
//! Random bytes almost never carry a valid MAC (nor our magic, version and
//! key id), so alone they would only exercise the framing and the MAC
//! check. The first input byte picks the mode:
//! - 0: the rest as received from the wire;
//! - 1: the rest signed with the fuzzer's key (MAC valid, framing random);
//! - 2: a valid fixed prefix (magic, version, key id) before the rest, then
//!   signed, so the field parser behind the MAC sees arbitrary authentic
//!   content; what parses must emit and re-parse to the same value.
#![no_main]

use l2lb::fastpath::wire::{Keyring, MessageRepr, VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(keys) = Keyring::new(1, b"fuzzing secret, thirty-two bytes") else {
        return;
    };
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let sign = |unsigned: Vec<u8>| {
        let tag = keys.tag(&unsigned);
        let mut signed = unsigned;
        signed.extend_from_slice(&tag);
        signed
    };
    let bytes = match mode % 3 {
        0 => rest.to_vec(),
        1 => sign(rest.to_vec()),
        _ => {
            // magic, version, then the fuzzer's type byte, key id 1, the rest.
            let (msg_type, tail) = rest.split_first().unwrap_or((&1, &[]));
            let mut unsigned = vec![b'L', b'2', VERSION, *msg_type, keys.signing_key_id()];
            unsigned.extend_from_slice(tail);
            sign(unsigned)
        }
    };
    if let Ok(msg) = MessageRepr::parse(&bytes, &keys) {
        if let Ok(again) = msg.emit(&keys) {
            assert_eq!(MessageRepr::parse(&again, &keys), Ok(msg));
        }
    }
});
