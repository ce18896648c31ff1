//! One read transfer: OACK (if any), then DATA windows until the last block is ACKed.
//!
//! The transfer owns a UDP socket connected to the client (the server's transfer ID), so
//! the kernel drops datagrams from any other address. It ends at once when the client
//! sends ERROR (the PXE tsize probe relies on that), after `retries` retransmissions
//! without progress, or when the server cancels it ([`Cancel`]).
//!
//! Each transfer runs on its own OS thread with blocking socket calls, as tftpd-hpa and
//! atftpd do: a lock-step transfer is one send and one receive per block, and on a
//! loaded 2-core machine the readiness polling, timer and task wake-up of an async task
//! per block cost enough to lose to them (see `bench/tftp.sh`). Transfers are bounded by
//! the server's `max_transfers`, so the thread count is too.

use std::fs::File;
use std::io::{self, Read};
use std::net::{Shutdown, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::metrics as m;
use super::options::Mode;
use super::packet::{Packet, write_data_header};

/// Read-ahead from the file per refill; large so file reads stay rare next to sends.
const READ_CHUNK: usize = 256 * 1024;

/// How a transfer ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Every block was acknowledged.
    Completed { bytes: u64 },
    /// The client sent ERROR.
    ClientError { code: u16 },
    /// No progress after the allowed retransmissions.
    TimedOut,
    /// Reading the file or using the socket failed.
    Io(io::Error),
    /// The server cancelled it (a new request from the client's address, or shutdown).
    Cancelled,
}

impl Outcome {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Completed { .. } => "completed",
            Self::ClientError { .. } => "client_error",
            Self::TimedOut => "timed_out",
            Self::Io(_) => "io_error",
            Self::Cancelled => "replaced",
        }
    }
}

/// What a transfer sends and how.
pub(crate) struct Plan {
    pub file: File,
    pub mode: Mode,
    pub blksize: usize,
    pub windowsize: u64,
    pub timeout: Duration,
    pub retries: u32,
    /// The encoded OACK, when options were negotiated.
    pub oack: Option<Vec<u8>>,
}

/// Blocks of the file (netascii-encoded if asked), kept from the oldest unacknowledged
/// block onward so a window can be sent again.
struct Blocks {
    file: File,
    mode: Mode,
    blksize: usize,
    /// Encoded bytes; `buf[head..]` starts at block `first`.
    buf: Vec<u8>,
    head: usize,
    first: u64,
    eof: bool,
    raw: Vec<u8>,
}

impl Blocks {
    fn new(file: File, mode: Mode, blksize: usize) -> Self {
        Self {
            file,
            mode,
            blksize,
            buf: Vec::with_capacity(READ_CHUNK + blksize),
            head: 0,
            first: 1,
            eof: false,
            raw: Vec::new(),
        }
    }

    /// Forgets blocks before `block`; they are acknowledged and never sent again.
    fn release_before(&mut self, block: u64) {
        if block > self.first {
            let drop = ((block - self.first) as usize).saturating_mul(self.blksize);
            self.head = (self.head + drop).min(self.buf.len());
            self.first = block;
        }
    }

    /// The bytes of `block` (1-based, at or after the oldest kept one) and whether it is
    /// the last block (shorter than blksize, possibly empty).
    fn get(&mut self, block: u64) -> io::Result<(&[u8], bool)> {
        let start = self.head + ((block - self.first) as usize) * self.blksize;
        let end = start + self.blksize;
        while self.buf.len() < end && !self.eof {
            self.refill()?;
        }
        let start = self.head + ((block - self.first) as usize) * self.blksize;
        let end = (start + self.blksize).min(self.buf.len());
        let start = start.min(end);
        let data = &self.buf[start..end];
        Ok((data, self.eof && data.len() < self.blksize))
    }

    fn refill(&mut self) -> io::Result<()> {
        if self.head > 0 {
            // Moves only what is still unacknowledged: at most one window.
            self.buf.drain(..self.head);
            self.head = 0;
        }
        match self.mode {
            Mode::Octet => {
                let old = self.buf.len();
                self.buf.resize(old + READ_CHUNK, 0);
                let n = read_full(&mut self.file, &mut self.buf[old..])?;
                self.buf.truncate(old + n);
                self.eof = n < READ_CHUNK;
            }
            Mode::Netascii => {
                self.raw.resize(READ_CHUNK / 2, 0);
                let n = read_full(&mut self.file, &mut self.raw)?;
                self.eof = n < self.raw.len();
                encode_netascii(&self.raw[..n], &mut self.buf);
            }
        }
        Ok(())
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Netascii per RFC 764: LF -> CR LF, CR -> CR NUL. Each input byte maps on its own, so
/// chunks can be encoded independently.
pub(crate) fn encode_netascii(raw: &[u8], out: &mut Vec<u8>) {
    out.reserve(raw.len() + raw.len() / 8);
    for &b in raw {
        match b {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            _ => out.push(b),
        }
    }
}

/// Lets the server stop a transfer from outside its thread.
#[derive(Debug)]
pub(crate) struct Cancel {
    stopped: AtomicBool,
    /// A handle on the transfer's socket; shutting it down wakes a blocked receive.
    socket: UdpSocket,
}

impl Cancel {
    pub(crate) fn new(socket: &UdpSocket) -> io::Result<Self> {
        Ok(Self {
            stopped: AtomicBool::new(false),
            socket: socket.try_clone()?,
        })
    }

    /// Stops the transfer: it sends nothing more once its current call returns.
    pub(crate) fn cancel(&self) {
        self.stopped.store(true, Ordering::Release);
        let _ = socket2::SockRef::from(&self.socket).shutdown(Shutdown::Read);
    }

    fn is_cancelled(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// What arrived while waiting for an ACK.
enum Reply {
    Ack(u16),
    Error(u16),
    Timeout,
    Cancelled,
}

/// The transfer socket and the receive timeout currently set on it, so the common case
/// (every wait the full timeout) costs no extra system call per block.
struct Receiver<'a> {
    socket: &'a UdpSocket,
    timeout_set: Option<Duration>,
}

impl Receiver<'_> {
    fn recv(&mut self, buf: &mut [u8], wait: Duration) -> io::Result<usize> {
        let wait = wait.max(Duration::from_micros(1));
        if self.timeout_set != Some(wait) {
            self.socket.set_read_timeout(Some(wait))?;
            self.timeout_set = Some(wait);
        }
        self.socket.recv(buf)
    }
}

/// Waits for an ACK or ERROR until `deadline`; `wait` is the time left to it (passed in
/// so the common case needs no clock read and no change of the socket's timeout).
fn wait_reply(
    rx: &mut Receiver<'_>,
    cancel: &Cancel,
    buf: &mut [u8],
    deadline: Instant,
    wait: Duration,
) -> io::Result<Reply> {
    let mut wait = wait;
    if wait.is_zero() {
        return Ok(Reply::Timeout);
    }
    loop {
        if cancel.is_cancelled() {
            return Ok(Reply::Cancelled);
        }
        let received = rx.recv(buf, wait);
        if cancel.is_cancelled() {
            return Ok(Reply::Cancelled);
        }
        let n = match received {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Reply::Timeout);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            // ICMP port unreachable from an earlier send: the client is gone.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(Reply::Error(0)),
            Err(e) => return Err(e),
        };
        match Packet::parse(&buf[..n]) {
            Ok(Packet::Ack { block }) => return Ok(Reply::Ack(block)),
            Ok(Packet::Error { code, .. }) => return Ok(Reply::Error(code)),
            Ok(other) => m::dropped(match other.opcode() {
                super::packet::Opcode::Rrq | super::packet::Opcode::Wrq => {
                    "request_on_transfer_port"
                }
                _ => "unexpected_opcode",
            }),
            Err(e) => m::dropped(e.reason()),
        }
        match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => wait = left,
            _ => return Ok(Reply::Timeout),
        }
    }
}

/// Runs the transfer to its end on the calling thread.
pub(crate) fn run(socket: &UdpSocket, cancel: &Cancel, plan: Plan) -> Outcome {
    match run_inner(socket, cancel, plan) {
        Ok(outcome) => outcome,
        Err(_) if cancel.is_cancelled() => Outcome::Cancelled,
        // A send after the client's port closed: it is gone, as if it had sent ERROR.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Outcome::ClientError { code: 0 },
        Err(e) => Outcome::Io(e),
    }
}

fn run_inner(socket: &UdpSocket, cancel: &Cancel, plan: Plan) -> io::Result<Outcome> {
    let mut rbuf = vec![0u8; 1024];
    let mut rx = Receiver {
        socket,
        timeout_set: None,
    };
    if let Some(oack) = &plan.oack {
        let mut attempt = 0;
        'oack: loop {
            if cancel.is_cancelled() {
                return Ok(Outcome::Cancelled);
            }
            socket.send(oack)?;
            let deadline = Instant::now() + plan.timeout;
            let mut wait = plan.timeout;
            loop {
                let reply = wait_reply(&mut rx, cancel, &mut rbuf, deadline, wait)?;
                // Anything ignored below must not stretch the deadline.
                wait = deadline.saturating_duration_since(Instant::now());
                match reply {
                    Reply::Ack(0) => break 'oack,
                    // An ACK for anything else answers no OACK; keep waiting.
                    Reply::Ack(_) => {}
                    Reply::Error(code) => return Ok(Outcome::ClientError { code }),
                    Reply::Cancelled => return Ok(Outcome::Cancelled),
                    Reply::Timeout => {
                        attempt += 1;
                        if attempt > plan.retries {
                            return Ok(Outcome::TimedOut);
                        }
                        m::retransmit();
                        continue 'oack;
                    }
                }
            }
        }
    }

    let blksize = plan.blksize;
    let window = plan.windowsize.max(1);
    let mut blocks = Blocks::new(plan.file, plan.mode, blksize);
    let mut packet = vec![0u8; 4 + blksize];
    // `base` is the oldest unacknowledged block; `last` is known once it has been read.
    let mut base: u64 = 1;
    let mut last: Option<u64> = None;
    let mut attempt = 0;
    let mut bytes: u64 = 0;
    // The `base` for which a duplicate ACK already made us resend (0: none yet).
    let mut resent_for: u64 = 0;
    loop {
        // Send one window starting at `base`.
        let mut sent_end = base;
        while sent_end < base + window && last.is_none_or(|l| sent_end <= l) {
            let (data, is_last) = blocks.get(sent_end)?;
            let header: &mut [u8; 4] = (&mut packet[..4]).try_into().map_err(io::Error::other)?;
            write_data_header(header, sent_end as u16);
            packet[4..4 + data.len()].copy_from_slice(data);
            let len = 4 + data.len();
            if is_last {
                last = Some(sent_end);
            }
            if cancel.is_cancelled() {
                return Ok(Outcome::Cancelled);
            }
            socket.send(&packet[..len])?;
            sent_end += 1;
        }

        // Wait for an ACK that moves `base`.
        let deadline = Instant::now() + plan.timeout;
        let mut wait = plan.timeout;
        loop {
            let reply = wait_reply(&mut rx, cancel, &mut rbuf, deadline, wait)?;
            // Anything ignored below must not stretch the deadline.
            wait = deadline.saturating_duration_since(Instant::now());
            match reply {
                Reply::Error(code) => return Ok(Outcome::ClientError { code }),
                Reply::Cancelled => return Ok(Outcome::Cancelled),
                Reply::Timeout => {
                    attempt += 1;
                    if attempt > plan.retries {
                        return Ok(Outcome::TimedOut);
                    }
                    m::retransmit();
                    break;
                }
                Reply::Ack(wire) => {
                    // The ACK names a block in [base - 1, sent_end - 1] by its low 16 bits.
                    let offset = u64::from(wire.wrapping_sub((base - 1) as u16));
                    if offset > sent_end - base {
                        continue; // An old duplicate: sending again on it would double traffic.
                    }
                    if offset == 0 {
                        // The client is missing the window's first block. In lock-step the
                        // timeout resends it; with a window, resend once per window base
                        // rather than wait out the timeout (RFC 7440 section 4).
                        if window > 1 && resent_for != base {
                            resent_for = base;
                            m::retransmit();
                            break;
                        }
                        continue;
                    }
                    let acked = base - 1 + offset;
                    bytes += (acked - (base - 1)) * blksize as u64;
                    attempt = 0;
                    if last == Some(acked) {
                        let (data, _) = blocks.get(acked)?;
                        let short = (blksize - data.len()) as u64;
                        return Ok(Outcome::Completed {
                            bytes: bytes.saturating_sub(short),
                        });
                    }
                    base = acked + 1;
                    blocks.release_before(base);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netascii_encoding() {
        let mut out = Vec::new();
        encode_netascii(b"a\nb\rc\r\n", &mut out);
        assert_eq!(out, b"a\r\nb\r\0c\r\0\r\n");
    }
}
