//! Checks on the raw datagram before dhcproto sees it.
//!
//! dhcproto decodes leniently: it stops at the first option it cannot read and keeps
//! what came before, and a few options assert on their length (in debug builds) or
//! subtract from it. We walk the options ourselves first so that a packet with a bad
//! option length is dropped and counted as such, never half-read, never a panic.

/// Why a packet was dropped before or while it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than the fixed BOOTP header plus the magic cookie.
    Truncated,
    /// Larger than any DHCP client sends (over 1500 bytes).
    Oversized,
    /// The magic cookie is not 99.130.83.99.
    BadCookie,
    /// An option runs past the end of the packet or has a length its code does not allow.
    BadOptionLength,
    /// dhcproto could not decode the packet (e.g. a text option that is not UTF-8).
    Malformed,
    /// op is not BOOTREQUEST.
    WrongOpCode,
    /// Not Ethernet (htype 1, hlen 6).
    UnsupportedHardware,
    /// No option 53, or a type a server does not take (OFFER, ACK, ...).
    BadMessageType,
    /// A message missing what its type requires (REQUEST without an address, ...).
    MissingField,
    /// A MAC we have no reservation for, with discovery off.
    UnknownMac,
    /// No configured network matches giaddr, the incoming interface or ciaddr.
    NoNetwork,
    /// The reserved host belongs to another network than the one the packet came from.
    WrongNetwork,
    /// The dynamic ranges of the network are all in use.
    PoolExhausted,
    /// A REQUEST that chose another server.
    OtherServer,
    /// proxyDHCP: not a PXE client, or a message the proxy leaves to the address server.
    NotForProxy,
    /// The lease writer is behind; the client will retry.
    Backlog,
    /// The lease could not be written; no ACK was sent.
    PersistFailed,
}

impl DropReason {
    /// Label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Oversized => "oversized",
            DropReason::BadCookie => "bad_cookie",
            DropReason::BadOptionLength => "bad_option_length",
            DropReason::Malformed => "malformed",
            DropReason::WrongOpCode => "wrong_op_code",
            DropReason::UnsupportedHardware => "unsupported_hardware",
            DropReason::BadMessageType => "bad_message_type",
            DropReason::MissingField => "missing_field",
            DropReason::UnknownMac => "unknown_mac",
            DropReason::NoNetwork => "no_network",
            DropReason::WrongNetwork => "wrong_network",
            DropReason::PoolExhausted => "pool_exhausted",
            DropReason::OtherServer => "other_server",
            DropReason::NotForProxy => "not_for_proxy",
            DropReason::Backlog => "backlog",
            DropReason::PersistFailed => "persist_failed",
        }
    }

    /// Every reason, for counters that start at zero.
    pub const ALL: [DropReason; 17] = [
        DropReason::Truncated,
        DropReason::Oversized,
        DropReason::BadCookie,
        DropReason::BadOptionLength,
        DropReason::Malformed,
        DropReason::WrongOpCode,
        DropReason::UnsupportedHardware,
        DropReason::BadMessageType,
        DropReason::MissingField,
        DropReason::UnknownMac,
        DropReason::NoNetwork,
        DropReason::WrongNetwork,
        DropReason::PoolExhausted,
        DropReason::OtherServer,
        DropReason::NotForProxy,
        DropReason::Backlog,
        DropReason::PersistFailed,
    ];
}

/// Fixed BOOTP header (236) + magic cookie (4).
pub const HEADER_LEN: usize = 240;
/// Ethernet MTU; a DHCP client never sends more in one datagram.
pub const MAX_LEN: usize = 1500;
const COOKIE: [u8; 4] = [99, 130, 83, 99];

/// Exact payload lengths for options whose length is fixed.
fn fixed_len(code: u8) -> Option<usize> {
    match code {
        1
        | 2
        | 16
        | 24
        | 28
        | 32
        | 35
        | 38
        | 50
        | 51
        | 54
        | 58
        | 59
        | 91
        | 106
        | 118
        | 150
        | 152..=155 => Some(4),
        13 | 22 | 26 | 57 => Some(2),
        19 | 20 | 23 | 27 | 29..=31 | 34 | 36 | 37 | 39 | 46 | 52 | 53 | 116 | 156 | 157 => Some(1),
        80 => Some(0),
        94 => Some(3),
        _ => None,
    }
}

/// Minimum payload lengths for variable options dhcproto reads with a subtraction.
fn min_len(code: u8) -> usize {
    match code {
        81 => 3,
        151 => 1,
        93 => 2,
        _ => 0,
    }
}

/// Check the header size, cookie and every option's framing and length.
pub fn check(buf: &[u8]) -> Result<(), DropReason> {
    if buf.len() < HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    if buf.len() > MAX_LEN {
        return Err(DropReason::Oversized);
    }
    if buf[236..240] != COOKIE {
        return Err(DropReason::BadCookie);
    }
    // hlen indexes a 16-byte array in dhcproto.
    if buf[2] > 16 {
        return Err(DropReason::UnsupportedHardware);
    }
    let mut i = HEADER_LEN;
    // Consecutive options with one code are concatenated (RFC 3396) before decoding,
    // so lengths are checked on each run's total.
    let mut run: Option<(u8, usize)> = None;
    let finish = |run: Option<(u8, usize)>| -> Result<(), DropReason> {
        if let Some((code, len)) = run {
            if let Some(want) = fixed_len(code)
                && len != want
            {
                return Err(DropReason::BadOptionLength);
            }
            if len < min_len(code) {
                return Err(DropReason::BadOptionLength);
            }
        }
        Ok(())
    };
    loop {
        let Some(&code) = buf.get(i) else {
            // No END option: tolerated, as most servers do, once the framing held.
            return finish(run);
        };
        match code {
            0 => {
                finish(run.take())?;
                i += 1;
            }
            255 => return finish(run),
            _ => {
                let len = *buf.get(i + 1).ok_or(DropReason::BadOptionLength)? as usize;
                if i + 2 + len > buf.len() {
                    return Err(DropReason::BadOptionLength);
                }
                run = match run {
                    Some((c, l)) if c == code => Some((c, l + len)),
                    other => {
                        finish(other)?;
                        Some((code, len))
                    }
                };
                i += 2 + len;
            }
        }
    }
}
