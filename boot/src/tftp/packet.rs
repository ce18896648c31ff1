//! TFTP packets on the wire (RFC 1350, with the option extension of RFC 2347).
//!
//! [`Packet::parse`] takes any byte slice a socket hands us and either returns a packet or
//! a [`ParseError`] naming what is wrong; it never panics and never allocates more than the
//! input's size. The encoders write into a caller's buffer so the send path can reuse one.

use std::fmt;

/// The largest block size RFC 2348 allows: 65,535 bytes of UDP payload minus the
/// 4-byte TFTP header, minus IP and UDP headers.
pub const MAX_BLKSIZE: u16 = 65464;
/// The smallest block size RFC 2348 allows.
pub const MIN_BLKSIZE: u16 = 8;
/// The block size of plain RFC 1350 TFTP, used when the client asks for none.
pub const DEFAULT_BLKSIZE: u16 = 512;

/// A TFTP opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// Read request.
    Rrq = 1,
    /// Write request.
    Wrq = 2,
    /// A block of file data.
    Data = 3,
    /// Acknowledgement of a block (or of an OACK, as block 0).
    Ack = 4,
    /// Error; ends the transfer.
    Error = 5,
    /// Option acknowledgement (RFC 2347).
    Oack = 6,
}

impl Opcode {
    fn from_u16(code: u16) -> Option<Self> {
        Some(match code {
            1 => Self::Rrq,
            2 => Self::Wrq,
            3 => Self::Data,
            4 => Self::Ack,
            5 => Self::Error,
            6 => Self::Oack,
            _ => return None,
        })
    }
}

/// TFTP error codes (RFC 1350 section 5, and 8 from RFC 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not defined; the message says what happened.
    NotDefined = 0,
    /// File not found.
    FileNotFound = 1,
    /// Access violation.
    AccessViolation = 2,
    /// Disk full or allocation exceeded.
    DiskFull = 3,
    /// Illegal TFTP operation.
    IllegalOperation = 4,
    /// Unknown transfer ID.
    UnknownTransferId = 5,
    /// File already exists.
    FileExists = 6,
    /// No such user.
    NoSuchUser = 7,
    /// Option negotiation refused or aborted (RFC 2347).
    BadOption = 8,
}

impl ErrorCode {
    /// The code as sent on the wire.
    pub fn as_u16(self) -> u16 {
        self as u16
    }
}

/// Option name/value pairs as sent, in order.
pub type OptionList<'a> = Vec<(&'a [u8], &'a [u8])>;

/// A request (RRQ or WRQ) as the client sent it: mode and option names are kept as sent;
/// interpreting them is [`super::options`]'s job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The file name, raw bytes as sent (not necessarily UTF-8).
    pub filename: &'a [u8],
    /// The transfer mode as sent (`octet`, `netascii`, ... in any case).
    pub mode: &'a [u8],
    /// Option name/value pairs in the order sent.
    pub options: OptionList<'a>,
}

/// One parsed TFTP packet, borrowing from the received bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Read request.
    Rrq(Request<'a>),
    /// Write request.
    Wrq(Request<'a>),
    /// Data block.
    Data {
        /// Block number on the wire (rolls over past 65,535).
        block: u16,
        /// The block's bytes.
        data: &'a [u8],
    },
    /// Acknowledgement.
    Ack {
        /// Block number on the wire.
        block: u16,
    },
    /// Error.
    Error {
        /// Error code as sent (may be outside the known range).
        code: u16,
        /// Message as sent, without its NUL.
        message: &'a [u8],
    },
    /// Option acknowledgement.
    Oack {
        /// Option name/value pairs.
        options: OptionList<'a>,
    },
}

/// Why bytes are not a TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer than the two bytes of an opcode.
    #[error("packet of {0} bytes is too short for an opcode")]
    TooShort(usize),
    /// An opcode outside 1..=6.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// A DATA, ACK or ERROR packet shorter than its fixed header.
    #[error("{opcode:?} packet of {len} bytes is truncated")]
    Truncated {
        /// The packet's opcode.
        opcode: Opcode,
        /// Its length in bytes.
        len: usize,
    },
    /// A string field that does not end with a NUL byte.
    #[error("{field} is not NUL-terminated")]
    MissingNul {
        /// Which field: "filename", "mode", "option name", "option value", "error message".
        field: &'static str,
    },
    /// A request with an empty file name.
    #[error("empty filename")]
    EmptyFilename,
    /// An option name with no value after it.
    #[error("option {0:?} has no value")]
    OptionWithoutValue(String),
}

impl ParseError {
    /// A short stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooShort(_) => "too_short",
            Self::UnknownOpcode(_) => "bad_opcode",
            Self::Truncated { .. } => "truncated",
            Self::MissingNul { .. } => "missing_nul",
            Self::EmptyFilename => "empty_filename",
            Self::OptionWithoutValue(_) => "option_without_value",
        }
    }
}

/// Splits off one NUL-terminated string.
fn take_cstr<'a>(bytes: &'a [u8], field: &'static str) -> Result<(&'a [u8], &'a [u8]), ParseError> {
    match bytes.iter().position(|&b| b == 0) {
        Some(nul) => Ok((&bytes[..nul], &bytes[nul + 1..])),
        None => Err(ParseError::MissingNul { field }),
    }
}

/// Reads NUL-terminated name/value pairs until the bytes run out.
fn parse_options(mut rest: &[u8]) -> Result<OptionList<'_>, ParseError> {
    let mut options = Vec::new();
    while !rest.is_empty() {
        let (name, after) = take_cstr(rest, "option name")?;
        if after.is_empty() {
            return Err(ParseError::OptionWithoutValue(
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
        let (value, after) = take_cstr(after, "option value")?;
        options.push((name, value));
        rest = after;
    }
    Ok(options)
}

fn parse_request(body: &[u8]) -> Result<Request<'_>, ParseError> {
    let (filename, rest) = take_cstr(body, "filename")?;
    let (mode, rest) = take_cstr(rest, "mode")?;
    if filename.is_empty() {
        return Err(ParseError::EmptyFilename);
    }
    Ok(Request {
        filename,
        mode,
        options: parse_options(rest)?,
    })
}

impl<'a> Packet<'a> {
    /// Parses one datagram.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let [hi, lo, body @ ..] = bytes else {
            return Err(ParseError::TooShort(bytes.len()));
        };
        let code = u16::from_be_bytes([*hi, *lo]);
        let opcode = Opcode::from_u16(code).ok_or(ParseError::UnknownOpcode(code))?;
        let truncated = ParseError::Truncated {
            opcode,
            len: bytes.len(),
        };
        match opcode {
            Opcode::Rrq => parse_request(body).map(Packet::Rrq),
            Opcode::Wrq => parse_request(body).map(Packet::Wrq),
            Opcode::Data => match body {
                [b0, b1, data @ ..] => Ok(Packet::Data {
                    block: u16::from_be_bytes([*b0, *b1]),
                    data,
                }),
                _ => Err(truncated),
            },
            Opcode::Ack => match body {
                // Trailing bytes after the block number are tolerated, as most servers do.
                [b0, b1, ..] => Ok(Packet::Ack {
                    block: u16::from_be_bytes([*b0, *b1]),
                }),
                _ => Err(truncated),
            },
            Opcode::Error => match body {
                [c0, c1, rest @ ..] => {
                    // Some clients omit the final NUL of the message; the code alone is
                    // what matters, so accept the message without it.
                    let message = match rest.iter().position(|&b| b == 0) {
                        Some(nul) => &rest[..nul],
                        None => rest,
                    };
                    Ok(Packet::Error {
                        code: u16::from_be_bytes([*c0, *c1]),
                        message,
                    })
                }
                _ => Err(truncated),
            },
            Opcode::Oack => parse_options(body).map(|options| Packet::Oack { options }),
        }
    }

    /// The packet's opcode.
    pub fn opcode(&self) -> Opcode {
        match self {
            Packet::Rrq(_) => Opcode::Rrq,
            Packet::Wrq(_) => Opcode::Wrq,
            Packet::Data { .. } => Opcode::Data,
            Packet::Ack { .. } => Opcode::Ack,
            Packet::Error { .. } => Opcode::Error,
            Packet::Oack { .. } => Opcode::Oack,
        }
    }
}

/// Writes a DATA header for `block` into the first four bytes of `out`; the caller puts
/// the block's bytes after it.
pub fn write_data_header(out: &mut [u8; 4], block: u16) {
    out[..2].copy_from_slice(&(Opcode::Data as u16).to_be_bytes());
    out[2..].copy_from_slice(&block.to_be_bytes());
}

/// Encodes an ACK.
pub fn encode_ack(block: u16) -> [u8; 4] {
    let mut out = [0; 4];
    out[..2].copy_from_slice(&(Opcode::Ack as u16).to_be_bytes());
    out[2..].copy_from_slice(&block.to_be_bytes());
    out
}

/// Encodes an ERROR packet. The message is cut at its first NUL so the packet stays valid.
pub fn encode_error(code: ErrorCode, message: &str) -> Vec<u8> {
    let message = message.split('\0').next().unwrap_or_default();
    let mut out = Vec::with_capacity(5 + message.len());
    out.extend_from_slice(&(Opcode::Error as u16).to_be_bytes());
    out.extend_from_slice(&code.as_u16().to_be_bytes());
    out.extend_from_slice(message.as_bytes());
    out.push(0);
    out
}

/// Encodes an OACK with the given name/value pairs.
pub fn encode_oack<'a>(options: impl IntoIterator<Item = (&'a str, String)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&(Opcode::Oack as u16).to_be_bytes());
    for (name, value) in options {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

/// Encodes a request; used by tests and the fuzz target to build valid input.
pub fn encode_request(
    opcode: Opcode,
    filename: &[u8],
    mode: &[u8],
    options: &[(&[u8], &[u8])],
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(opcode as u16).to_be_bytes());
    for field in [filename, mode] {
        out.extend_from_slice(field);
        out.push(0);
    }
    for (name, value) in options {
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

/// Shows bytes from the wire in log lines and error messages without trusting them.
pub struct Lossy<'a>(pub &'a [u8]);

impl fmt::Display for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_control() {
                    write!(f, "{}", c.escape_default())?;
                } else {
                    write!(f, "{c}")?;
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_pxe_rrq_with_options() {
        let raw = encode_request(
            Opcode::Rrq,
            b"ipxe.efi",
            b"octet",
            &[(b"tsize", b"0"), (b"blksize", b"1468")],
        );
        let Packet::Rrq(req) = Packet::parse(&raw).expect("valid rrq") else {
            panic!("not an RRQ");
        };
        assert_eq!(req.filename, b"ipxe.efi");
        assert_eq!(req.mode, b"octet");
        assert_eq!(
            req.options,
            vec![(&b"tsize"[..], &b"0"[..]), (&b"blksize"[..], &b"1468"[..])]
        );
    }

    #[test]
    fn names_what_is_wrong() {
        assert_eq!(Packet::parse(b""), Err(ParseError::TooShort(0)));
        assert_eq!(Packet::parse(b"\x00"), Err(ParseError::TooShort(1)));
        assert_eq!(
            Packet::parse(b"\x00\x09"),
            Err(ParseError::UnknownOpcode(9))
        );
        assert_eq!(
            Packet::parse(b"\x00\x01file"),
            Err(ParseError::MissingNul { field: "filename" })
        );
        assert_eq!(
            Packet::parse(b"\x00\x01file\0octet"),
            Err(ParseError::MissingNul { field: "mode" })
        );
        assert_eq!(
            Packet::parse(b"\x00\x01\0octet\0"),
            Err(ParseError::EmptyFilename)
        );
        assert_eq!(
            Packet::parse(b"\x00\x01f\0octet\0blksize\0"),
            Err(ParseError::OptionWithoutValue("blksize".into()))
        );
        assert_eq!(
            Packet::parse(b"\x00\x01f\0octet\0blksize\x00512"),
            Err(ParseError::MissingNul {
                field: "option value"
            })
        );
        assert!(matches!(
            Packet::parse(b"\x00\x04\x01"),
            Err(ParseError::Truncated { .. })
        ));
        assert!(matches!(
            Packet::parse(b"\x00\x03\x01"),
            Err(ParseError::Truncated { .. })
        ));
    }

    #[test]
    fn error_without_nul_still_carries_its_code() {
        assert_eq!(
            Packet::parse(b"\x00\x05\x00\x08abort"),
            Ok(Packet::Error {
                code: 8,
                message: b"abort"
            })
        );
    }

    #[test]
    fn encoders_round_trip() {
        assert_eq!(
            Packet::parse(&encode_ack(65535)),
            Ok(Packet::Ack { block: 65535 })
        );
        let err = encode_error(ErrorCode::FileNotFound, "nope\0hidden");
        assert_eq!(
            Packet::parse(&err),
            Ok(Packet::Error {
                code: 1,
                message: b"nope"
            })
        );
        let oack = encode_oack([("blksize", "1468".to_string())]);
        assert_eq!(
            Packet::parse(&oack),
            Ok(Packet::Oack {
                options: vec![(&b"blksize"[..], &b"1468"[..])]
            })
        );
    }

    #[test]
    fn lossy_escapes_control_and_invalid_bytes() {
        assert_eq!(Lossy(b"a\nb\xffc").to_string(), "a\\nb\\xffc");
    }
}
