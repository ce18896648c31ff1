//! Garbage never panics: random datagrams and mutations of valid requests through the
//! listening port's decision function, the same entry point the fuzz target drives.

use super::packet::{Opcode, encode_request};
use super::*;

/// xorshift64*: deterministic, so a failure names a seed that reproduces it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const LIMITS: Limits = Limits {
    max_blksize: MAX_BLKSIZE,
    max_windowsize: 64,
};

fn check(datagram: &[u8]) {
    match screen(datagram, LIMITS) {
        Decision::Transfer {
            filename,
            negotiated,
        } => {
            assert!(!filename.is_empty());
            assert!((8..=MAX_BLKSIZE).contains(&negotiated.blksize));
            assert!((1..=64).contains(&negotiated.windowsize));
            // The OACK we would send must itself parse.
            let oack = encode_oack(negotiated.oack_options(u64::MAX));
            assert!(Packet::parse(&oack).is_ok());
        }
        Decision::Refuse { message, .. } => {
            assert!(!message.is_empty());
            assert!(Packet::parse(&encode_error(ErrorCode::NotDefined, &message)).is_ok());
        }
        Decision::Drop { reason } => assert!(!reason.is_empty()),
    }
}

#[test]
fn random_datagrams_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut buf = Vec::new();
    for _ in 0..50_000 {
        buf.clear();
        let len = rng.below(80);
        // Mostly small opcodes so the parser gets past the first check.
        buf.extend_from_slice(&[0, rng.below(8) as u8]);
        for _ in 0..len {
            // Bias towards NULs and digits, which is where the structure is.
            let b = match rng.below(4) {
                0 => 0,
                1 => b'0' + rng.below(10) as u8,
                _ => rng.next() as u8,
            };
            buf.push(b);
        }
        let cut = rng.below(buf.len() + 1);
        check(&buf[..cut]);
        check(&buf);
    }
}

#[test]
fn mutated_requests_never_panic() {
    let names: [&[u8]; 6] = [
        b"blksize",
        b"tsize",
        b"windowsize",
        b"timeout",
        b"BLKSIZE",
        b"x",
    ];
    let values: [&[u8]; 9] = [
        b"0",
        b"7",
        b"8",
        b"512",
        b"65464",
        b"65465",
        b"99999999999999999999999",
        b"-1",
        b"",
    ];
    let mut rng = Rng(42);
    for _ in 0..20_000 {
        let mut options = Vec::new();
        for _ in 0..rng.below(5) {
            options.push((
                names[rng.below(names.len())],
                values[rng.below(values.len())],
            ));
        }
        let mode: &[u8] = [&b"octet"[..], b"netascii", b"mail", b"", b"OcTeT"][rng.below(5)];
        let opcode = [Opcode::Rrq, Opcode::Wrq][rng.below(2)];
        let mut raw = encode_request(opcode, b"ipxe.efi", mode, &options);
        check(&raw);
        for _ in 0..3 {
            let i = rng.below(raw.len());
            raw[i] = rng.next() as u8;
            check(&raw);
            check(&raw[..rng.below(raw.len() + 1)]);
        }
    }
}

#[test]
fn screen_answers_each_kind_of_bad_input() {
    let refused = |d: &[u8]| match screen(d, LIMITS) {
        Decision::Refuse { code, .. } => Some(code),
        _ => None,
    };
    assert_eq!(
        refused(b"\x00\x63whatever"),
        Some(ErrorCode::IllegalOperation)
    );
    assert_eq!(
        refused(b"\x00\x01file\0mail\0"),
        Some(ErrorCode::IllegalOperation)
    );
    assert_eq!(refused(b"\x00\x01file"), Some(ErrorCode::IllegalOperation));
    assert_eq!(
        refused(b"\x00\x02file\0octet\0"),
        Some(ErrorCode::AccessViolation)
    );
    assert_eq!(
        refused(b"\x00\x01f\0octet\0blksize\x004\0"),
        Some(ErrorCode::BadOption)
    );
    assert_eq!(
        refused(b"\x00\x01f\0octet\0windowsize\x000\0"),
        Some(ErrorCode::BadOption)
    );
    for stray in [
        &b"\x00"[..],
        b"\x00\x04\x00",
        b"\x00\x04\x00\x01",
        b"\x00\x05\x00\x00x\0",
        b"\x00\x03\x00\x01data",
    ] {
        assert!(
            matches!(screen(stray, LIMITS), Decision::Drop { .. }),
            "{stray:?}"
        );
    }
}
