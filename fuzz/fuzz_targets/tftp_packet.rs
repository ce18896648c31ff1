//! Feeds arbitrary datagrams to the TFTP listening port's decision function (parse, mode
//! and option negotiation) and re-encodes what it would send back.
#![no_main]

use lariat_boot::tftp::packet::{Packet, encode_error, encode_oack};
use lariat_boot::tftp::{Decision, Limits, screen};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The transfer port parses ACK/ERROR with the same function.
    let _ = Packet::parse(data);
    let limits = Limits {
        max_blksize: 65464,
        max_windowsize: 64,
    };
    match screen(data, limits) {
        Decision::Transfer { negotiated, .. } => {
            let oack = encode_oack(negotiated.oack_options(u64::MAX));
            assert!(Packet::parse(&oack).is_ok(), "our OACK must parse");
        }
        Decision::Refuse { code, message, .. } => {
            assert!(
                Packet::parse(&encode_error(code, &message)).is_ok(),
                "our ERROR must parse"
            );
        }
        Decision::Drop { .. } => {}
    }
});
