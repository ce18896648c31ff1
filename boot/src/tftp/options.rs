//! Mode and option negotiation for a read request (RFC 2347 option extension, RFC 2348
//! blksize, RFC 2349 timeout and tsize, RFC 7440 windowsize).
//!
//! Contract of [`negotiate`]: it is pure (no I/O), never panics, and either returns what
//! the transfer will use and what the OACK will say, or a [`RequestError`] that maps to
//! the TFTP error code the client must get. Options it does not know are ignored, as
//! RFC 2347 requires; a known option with a value outside its RFC's range is refused with
//! error 8 rather than silently clamped, so a broken client learns what is wrong.

use std::time::Duration;

use super::packet::{DEFAULT_BLKSIZE, ErrorCode, Lossy, MAX_BLKSIZE, MIN_BLKSIZE, Request};

/// How file bytes are put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes as they are.
    Octet,
    /// Text: LF becomes CR LF and a bare CR becomes CR NUL (RFC 764's NVT rules).
    Netascii,
}

/// Server-side limits applied while negotiating.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest block size granted; a larger request is answered with this.
    pub max_blksize: u16,
    /// Largest window granted; a larger request is answered with this.
    pub max_windowsize: u16,
}

/// The outcome of a successful negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Transfer mode.
    pub mode: Mode,
    /// Bytes per DATA block.
    pub blksize: u16,
    /// Blocks sent before waiting for an ACK (1 = RFC 1350 lock-step).
    pub windowsize: u16,
    /// Retransmit timeout the client asked for, if any.
    pub timeout: Option<Duration>,
    /// The client asked for the transfer size (the server fills it in once the file is open).
    pub tsize: bool,
    /// Whether an OACK must be sent (the client sent at least one option we accept).
    pub oack: bool,
    /// The client asked for a block size (so the OACK names it).
    pub blksize_acked: bool,
    /// The client asked for a window size (so the OACK names it).
    pub windowsize_acked: bool,
}

impl Negotiated {
    /// The OACK's name/value pairs, with `size` as the tsize value. In netascii mode the
    /// size on the wire differs from the file's, so tsize is left out of the OACK
    /// (RFC 2347 lets a server leave out any option it does not accept).
    pub fn oack_options(&self, size: u64) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(4);
        if self.blksize_acked {
            out.push(("blksize", self.blksize.to_string()));
        }
        if self.tsize && self.mode == Mode::Octet {
            out.push(("tsize", size.to_string()));
        }
        if let Some(t) = self.timeout {
            out.push(("timeout", t.as_secs().to_string()));
        }
        if self.windowsize_acked {
            out.push(("windowsize", self.windowsize.to_string()));
        }
        out
    }
}

/// Why a request is refused before any file is looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A mode other than octet or netascii (e.g. the obsolete "mail").
    #[error("unsupported transfer mode {0:?} (octet and netascii are served)")]
    UnsupportedMode(String),
    /// A known option with a value outside its range, or not a decimal number.
    #[error("bad value {value:?} for option {name}: {why}")]
    BadOption {
        /// The option's name, lower case.
        name: &'static str,
        /// The value as sent.
        value: String,
        /// What the RFC allows.
        why: &'static str,
    },
    /// The same option twice in one request.
    #[error("option {0} given more than once")]
    DuplicateOption(&'static str),
}

impl RequestError {
    /// The TFTP error code the client gets.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnsupportedMode(_) => ErrorCode::IllegalOperation,
            Self::BadOption { .. } | Self::DuplicateOption(_) => ErrorCode::BadOption,
        }
    }

    /// A short stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnsupportedMode(_) => "bad_mode",
            Self::BadOption { .. } => "bad_option",
            Self::DuplicateOption(_) => "duplicate_option",
        }
    }
}

/// Parses a decimal option value: digits only (no sign, no spaces), at most 20 of them.
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 20 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Negotiates the mode and options of a read request.
pub fn negotiate(request: &Request<'_>, limits: Limits) -> Result<Negotiated, RequestError> {
    let mode = if request.mode.eq_ignore_ascii_case(b"octet") {
        Mode::Octet
    } else if request.mode.eq_ignore_ascii_case(b"netascii") {
        Mode::Netascii
    } else {
        return Err(RequestError::UnsupportedMode(
            Lossy(request.mode).to_string(),
        ));
    };
    let mut out = Negotiated {
        mode,
        blksize: DEFAULT_BLKSIZE,
        windowsize: 1,
        timeout: None,
        tsize: false,
        oack: false,
        blksize_acked: false,
        windowsize_acked: false,
    };
    let mut seen = [false; 4];
    for (name, value) in &request.options {
        let (index, name): (usize, &'static str) = if name.eq_ignore_ascii_case(b"blksize") {
            (0, "blksize")
        } else if name.eq_ignore_ascii_case(b"tsize") {
            (1, "tsize")
        } else if name.eq_ignore_ascii_case(b"timeout") {
            (2, "timeout")
        } else if name.eq_ignore_ascii_case(b"windowsize") {
            (3, "windowsize")
        } else {
            continue;
        };
        if std::mem::replace(&mut seen[index], true) {
            return Err(RequestError::DuplicateOption(name));
        }
        let bad = |why| RequestError::BadOption {
            name,
            value: Lossy(value).to_string(),
            why,
        };
        let number = decimal(value);
        match name {
            "blksize" => {
                const WHY: &str = "blksize must be a number from 8 to 65464 (RFC 2348)";
                let v = number
                    .filter(|v| (u64::from(MIN_BLKSIZE)..=u64::from(MAX_BLKSIZE)).contains(v))
                    .ok_or_else(|| bad(WHY))?;
                out.blksize = (v as u16).min(limits.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE));
                out.blksize_acked = true;
            }
            "tsize" => {
                number.ok_or_else(|| bad("tsize must be a decimal number (RFC 2349)"))?;
                out.tsize = true;
            }
            "timeout" => {
                const WHY: &str = "timeout must be a number of seconds from 1 to 255 (RFC 2349)";
                let v = number
                    .filter(|v| (1..=255).contains(v))
                    .ok_or_else(|| bad(WHY))?;
                out.timeout = Some(Duration::from_secs(v));
            }
            _ => {
                const WHY: &str = "windowsize must be a number from 1 to 65535 (RFC 7440)";
                let v = number
                    .filter(|v| (1..=65535).contains(v))
                    .ok_or_else(|| bad(WHY))?;
                out.windowsize = (v as u16).min(limits.max_windowsize.max(1));
                out.windowsize_acked = true;
            }
        }
    }
    // tsize is left out of a netascii OACK, so it alone does not call for one there.
    out.oack = out.blksize_acked
        || out.windowsize_acked
        || out.timeout.is_some()
        || (out.tsize && mode == Mode::Octet);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::packet::{Opcode, Packet, encode_request};

    const LIMITS: Limits = Limits {
        max_blksize: 8192,
        max_windowsize: 64,
    };

    fn run(mode: &[u8], options: &[(&[u8], &[u8])]) -> Result<Negotiated, RequestError> {
        let raw = encode_request(Opcode::Rrq, b"f", mode, options);
        let Ok(Packet::Rrq(req)) = Packet::parse(&raw) else {
            panic!("test built a bad RRQ");
        };
        negotiate(&req, LIMITS)
    }

    #[test]
    fn plain_request_needs_no_oack() {
        let n = run(b"OCTET", &[]).expect("octet is fine");
        assert_eq!(
            (n.mode, n.blksize, n.windowsize, n.oack),
            (Mode::Octet, 512, 1, false)
        );
    }

    #[test]
    fn grants_options_within_limits() {
        let n = run(
            b"octet",
            &[
                (b"BLKSIZE", b"65464"),
                (b"tsize", b"0"),
                (b"windowsize", b"1000"),
                (b"timeout", b"3"),
                (b"x-unknown", b"whatever"),
            ],
        )
        .expect("valid options");
        assert_eq!((n.blksize, n.windowsize), (8192, 64));
        assert_eq!(
            n.oack_options(1234),
            vec![
                ("blksize", "8192".to_string()),
                ("tsize", "1234".to_string()),
                ("timeout", "3".to_string()),
                ("windowsize", "64".to_string()),
            ]
        );
    }

    #[test]
    fn refuses_out_of_range_and_non_numeric_values_with_error_8() {
        for (name, value) in [
            (&b"blksize"[..], &b"7"[..]),
            (b"blksize", b"65465"),
            (b"blksize", b"-512"),
            (b"blksize", b"1e3"),
            (b"blksize", b""),
            (b"windowsize", b"0"),
            (b"windowsize", b"65536"),
            (b"timeout", b"0"),
            (b"timeout", b"256"),
            (b"tsize", b"abc"),
            (b"tsize", b"99999999999999999999999"),
        ] {
            let err = run(b"octet", &[(name, value)]).expect_err("must be refused");
            assert_eq!(err.code(), ErrorCode::BadOption, "{err}");
            assert!(
                err.to_string()
                    .contains(std::str::from_utf8(name).unwrap_or("?"))
            );
        }
        let dup = run(b"octet", &[(b"blksize", b"512"), (b"BlkSize", b"1024")]);
        assert_eq!(dup, Err(RequestError::DuplicateOption("blksize")));
    }

    #[test]
    fn refuses_unknown_modes_with_error_4() {
        let err = run(b"mail", &[]).expect_err("mail is not served");
        assert_eq!(err.code(), ErrorCode::IllegalOperation);
        assert!(err.to_string().contains("mail"));
    }

    #[test]
    fn netascii_leaves_tsize_out() {
        let n = run(b"netascii", &[(b"tsize", b"0")]).expect("valid");
        assert!(!n.oack);
        assert!(n.oack_options(10).is_empty());
    }
}
