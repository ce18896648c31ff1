//! Read-only TFTP server for the boot path: serves the site's TFTP root and the iPXE
//! binaries (Debian's `ipxe` package puts them in `/usr/lib/ipxe`).
//!
//! Protocol: RFC 1350 read requests in octet or netascii mode, with the option extension
//! (RFC 2347), blksize (RFC 2348), tsize and timeout (RFC 2349) and windowsize (RFC 7440).
//! Block numbers roll over from 65,535 to 0, so files of any size are served. Write
//! requests get error 2; names that are absolute, contain `..` or lead through a symlink
//! out of the served directory get error 2; unknown modes get error 4; bad option values
//! get error 8 naming the option. Garbage is dropped or answered, counted (see
//! [`metrics`]), and never panics.
//!
//! # Why our own server and not async-tftp
//!
//! The design named async-tftp 0.4.2. Its issue 18: it ignores a client's ERROR packet
//! and keeps the client's address busy, so a PXE ROM (EDK2/OVMF) that probes `tsize`,
//! sends ERROR and asks again from the same port gets no answer until the old transfer
//! gives up. Measured here on loopback (2026-11-22, async-tftp 0.4.2 release build with
//! `timeout(1 s)` and `max_send_retries(3)`, the setting the crate notes suggest, and a
//! raw client doing exactly that sequence): the second RRQ was dropped, the old transfer
//! went on sending its OACK every second to the client that had aborted it, and a new
//! transfer started only 4.0 s (ERROR code 8) and 5.0 s (code 0) after the second RRQ,
//! once the client had sent it again; with the crate's default retries it is longer.
//! The same sequence against this server: 0.2-0.3 ms (`tests/tftp_protocol.rs` prints
//! it). Throughput was no reason to keep it either: on loopback, 50 MiB, both release
//! builds interleaved in one run (best of 2, MiB/s, async-tftp vs this server): curl
//! blksize 512: 8.6 vs 21.1, 1468: 18.3 vs 56.8, 8192: 113 vs 236; atftp windowsize 16
//! at blksize 512: 35.7 vs 54.0, at 1468: 97.8 vs 153. `bench/tftp.sh` compares this
//! server with tftpd-hpa and atftpd. Its public API (builder options, the `Handler`
//! trait) has no hook into the transfer loop that drops ERROR, so there is nothing to
//! work around from outside.
//!
//! So this module is a small read-only server: the listening socket on tokio, and each
//! transfer on its own socket (its transfer ID) and its own thread (see `transfer` for
//! why a thread). Transfers are keyed by client address and port; a new request from
//! the same address and port cancels the transfer it had, and ERROR ends a transfer at
//! once.
//!
//! # Contract
//!
//! [`serve`] binds the listening socket before it returns (so a bind error is returned,
//! not logged), then runs until the `shutdown` future completes; at that point the
//! listener stops and every transfer in flight is cancelled (each sends nothing more
//! once its current system call returns). [`TftpServer::stopped`] waits for the
//! listener. Call it inside a tokio runtime with I/O enabled. Files are looked up in
//! [`TftpConfig::root`], then [`TftpConfig::ipxe_dir`].
//!
//! Known limit: on a wildcard bind address (0.0.0.0) a transfer's replies leave from the
//! address the kernel's route picks, which on a multi-homed host may not be the one the
//! client wrote to; bind to the site interface's address there.

pub mod files;
pub mod metrics;
pub mod options;
pub mod packet;
mod transfer;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

pub use options::{Limits, Mode, Negotiated, RequestError};
pub use packet::{ErrorCode, MAX_BLKSIZE, ParseError};

use self::files::{Dirs, Symlinks};
use self::metrics as m;
use self::packet::{Lossy, Packet, encode_error, encode_oack};
use self::transfer::{Cancel, Outcome, Plan};

/// Where Debian's `ipxe` package installs `undionly.kpxe`, `ipxe.efi` and `snponly.efi`.
pub const DEBIAN_IPXE_DIR: &str = "/usr/lib/ipxe";

/// Everything the TFTP server needs; plain data so the agent can build it from the design.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TftpConfig {
    /// The site's TFTP root, looked up first. `None` serves only the iPXE directory.
    pub root: Option<PathBuf>,
    /// The iPXE binaries, looked up after `root`. `None` serves only `root`. Symlinks in
    /// it are followed even out of it (Debian's `ipxe.efi` links to `/boot/ipxe.efi`);
    /// in `root` they must stay inside `root`.
    pub ipxe_dir: Option<PathBuf>,
    /// Listening address; port 0 picks a free port (see [`TftpServer::local_addr`]).
    pub bind: SocketAddr,
    /// Transfers in flight at once; a request beyond it gets error 0 "server busy".
    pub max_transfers: usize,
    /// Retransmissions of one window (or OACK) without progress before giving up.
    pub retries: u32,
    /// Retransmit timeout when the client sends no `timeout` option.
    pub timeout: Duration,
    /// Largest block size granted (8..=65464).
    pub max_blksize: u16,
    /// Largest window granted (RFC 7440), in blocks.
    pub max_windowsize: u16,
}

impl Default for TftpConfig {
    fn default() -> Self {
        Self {
            root: None,
            ipxe_dir: Some(PathBuf::from(DEBIAN_IPXE_DIR)),
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 69),
            max_transfers: 256,
            retries: 5,
            timeout: Duration::from_secs(1),
            max_blksize: MAX_BLKSIZE,
            max_windowsize: 64,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    /// Neither a root nor an iPXE directory is configured.
    #[error("no directory to serve: set the TFTP root or the iPXE directory")]
    NothingToServe,
    /// A configured directory is missing or not a directory.
    #[error("cannot serve {path}: {source}")]
    Dir {
        /// The directory as configured.
        path: PathBuf,
        /// What is wrong with it.
        source: io::Error,
    },
    /// A limit is out of range.
    #[error("invalid TFTP config: {0}")]
    Config(&'static str),
    /// The listening socket could not be bound.
    #[error("cannot bind TFTP socket {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
}

/// A running server.
#[derive(Debug)]
pub struct TftpServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl TftpServer {
    /// The address the listening socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The number of transfers in flight.
    pub fn active_transfers(&self) -> usize {
        self.shared.transfers.lock().map(|t| t.len()).unwrap_or(0)
    }

    /// Waits until the server has stopped (after the shutdown future completed).
    pub async fn stopped(self) {
        // The listener task never panics by design; a JoinError here can only be a
        // runtime shutdown, which leaves nothing to wait for.
        let _ = self.task.await;
    }
}

/// What to do with one datagram that arrived on the listening port.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Start a transfer of `filename` with the negotiated settings.
    Transfer {
        /// The requested name, raw.
        filename: &'a [u8],
        /// Mode and options.
        negotiated: Negotiated,
    },
    /// Answer with this error and do nothing else.
    Refuse {
        /// Error code.
        code: ErrorCode,
        /// Message naming what is wrong.
        message: String,
        /// Metrics label.
        reason: &'static str,
    },
    /// Say nothing.
    Drop {
        /// Metrics label.
        reason: &'static str,
    },
}

/// Decides what the listening port does with a datagram. Pure, total and panic-free on
/// any input: this is the entry point of the fuzz target.
pub fn screen(datagram: &[u8], limits: Limits) -> Decision<'_> {
    match Packet::parse(datagram) {
        Ok(Packet::Rrq(request)) => match options::negotiate(&request, limits) {
            Ok(negotiated) => Decision::Transfer {
                filename: request.filename,
                negotiated,
            },
            Err(e) => Decision::Refuse {
                code: e.code(),
                message: e.to_string(),
                reason: e.reason(),
            },
        },
        Ok(Packet::Wrq(request)) => Decision::Refuse {
            code: ErrorCode::AccessViolation,
            message: format!(
                "write request for {} refused: this server is read-only",
                Lossy(request.filename)
            ),
            reason: "write_request",
        },
        // ERROR is never answered (RFC 1350); DATA, ACK and OACK belong to a transfer
        // port, so on this one they are strays from a transfer that no longer exists.
        Ok(Packet::Error { .. }) => Decision::Drop {
            reason: "stray_error",
        },
        Ok(_) => Decision::Drop {
            reason: "stray_packet",
        },
        Err(e @ ParseError::TooShort(_)) => Decision::Drop { reason: e.reason() },
        Err(e @ ParseError::Truncated { .. }) => Decision::Drop { reason: e.reason() },
        Err(e) => Decision::Refuse {
            code: ErrorCode::IllegalOperation,
            message: format!("malformed packet: {e}"),
            reason: e.reason(),
        },
    }
}

#[derive(Debug)]
struct Entry {
    id: u64,
    cancel: Arc<Cancel>,
}

#[derive(Debug)]
struct Shared {
    dirs: Dirs,
    config: TftpConfig,
    limits: Limits,
    transfers: Mutex<HashMap<SocketAddr, Entry>>,
    next_id: AtomicU64,
}

/// Binds the listening socket and serves until `shutdown` completes.
pub async fn serve(
    config: TftpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<TftpServer, TftpError> {
    if config.max_transfers == 0 {
        return Err(TftpError::Config("max_transfers must be at least 1"));
    }
    if config.timeout.is_zero() {
        return Err(TftpError::Config("timeout must be more than zero"));
    }
    if !(packet::MIN_BLKSIZE..=MAX_BLKSIZE).contains(&config.max_blksize) {
        return Err(TftpError::Config("max_blksize must be from 8 to 65464"));
    }
    if config.max_windowsize == 0 {
        return Err(TftpError::Config("max_windowsize must be at least 1"));
    }
    let wanted: Vec<(PathBuf, Symlinks)> = config
        .root
        .iter()
        .map(|d| (d.clone(), Symlinks::Confined))
        .chain(
            config
                .ipxe_dir
                .iter()
                .map(|d| (d.clone(), Symlinks::Trusted)),
        )
        .collect();
    if wanted.is_empty() {
        return Err(TftpError::NothingToServe);
    }
    let dirs = Dirs::new(wanted).map_err(|(path, source)| TftpError::Dir { path, source })?;
    let socket = UdpSocket::bind(config.bind)
        .await
        .map_err(|source| TftpError::Bind {
            addr: config.bind,
            source,
        })?;
    let local_addr = socket.local_addr().map_err(|source| TftpError::Bind {
        addr: config.bind,
        source,
    })?;
    let shared = Arc::new(Shared {
        dirs,
        limits: Limits {
            max_blksize: config.max_blksize,
            max_windowsize: config.max_windowsize,
        },
        config,
        transfers: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
    });
    tracing::info!(
        addr = %local_addr, dirs = ?shared.dirs.dirs().collect::<Vec<_>>(), "TFTP server listening"
    );
    let task = tokio::spawn(listen(socket, local_addr, shared.clone(), shutdown));
    Ok(TftpServer {
        local_addr,
        task,
        shared,
    })
}

async fn listen(
    socket: UdpSocket,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) {
    let mut buf = vec![0u8; 4096];
    tokio::pin!(shutdown);
    loop {
        let (n, client) = tokio::select! {
            () = &mut shutdown => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on Linux; they concern
                    // one client, not the socket.
                    tracing::debug!(error = %e, "TFTP listener receive error");
                    continue;
                }
            },
        };
        match screen(&buf[..n], shared.limits) {
            Decision::Drop { reason } => {
                tracing::debug!(%client, reason, "TFTP datagram dropped");
                m::dropped(reason);
            }
            Decision::Refuse {
                code,
                message,
                reason,
            } => {
                tracing::info!(%client, %message, "TFTP request refused");
                m::request("refused", reason);
                send_error(&socket, client, code, &message).await;
            }
            Decision::Transfer {
                filename,
                negotiated,
            } => {
                start(
                    &socket,
                    local_addr,
                    &shared,
                    client,
                    filename.to_vec(),
                    negotiated,
                )
                .await
            }
        }
    }
    let transfers = match shared.transfers.lock() {
        Ok(mut t) => std::mem::take(&mut *t),
        Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
    };
    for entry in transfers.values() {
        entry.cancel.cancel();
    }
    m::active(0);
    tracing::info!(addr = %local_addr, "TFTP server stopped");
}

async fn send_error(socket: &UdpSocket, to: SocketAddr, code: ErrorCode, message: &str) {
    m::error_sent(code);
    if let Err(e) = socket.send_to(&encode_error(code, message), to).await {
        tracing::debug!(%to, error = %e, "cannot send TFTP error");
    }
}

async fn start(
    listener: &UdpSocket,
    local_addr: SocketAddr,
    shared: &Arc<Shared>,
    client: SocketAddr,
    filename: Vec<u8>,
    negotiated: Negotiated,
) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let busy = {
        let Ok(mut transfers) = shared.transfers.lock() else {
            return;
        };
        // A new request from the same address and port supersedes whatever transfer it
        // had: a PXE ROM's tsize probe is followed by the real request from that port.
        if let Some(old) = transfers.remove(&client) {
            old.cancel.cancel();
        }
        transfers.len() >= shared.config.max_transfers
    };
    if busy {
        m::request("refused", "busy");
        send_error(
            listener,
            client,
            ErrorCode::NotDefined,
            "server busy: too many transfers, try again",
        )
        .await;
        return;
    }
    // The transfer answers from the address the client wrote to when we listen on one;
    // on a wildcard listener the kernel picks the source by route.
    let socket = match transfer_socket(local_addr.ip(), client) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%client, error = %e, "cannot open a TFTP transfer socket");
            m::request("refused", "io_error");
            send_error(
                listener,
                client,
                ErrorCode::NotDefined,
                "server cannot open a transfer socket",
            )
            .await;
            return;
        }
    };
    let cancel = match Cancel::new(&socket) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::warn!(%client, error = %e, "cannot clone a TFTP transfer socket");
            return;
        }
    };
    m::request("accepted", "ok");
    if let Ok(mut transfers) = shared.transfers.lock() {
        transfers.insert(
            client,
            Entry {
                id,
                cancel: cancel.clone(),
            },
        );
        m::active(transfers.len());
    }
    let thread_shared = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("tftp-transfer".into())
        .spawn(move || {
            let outcome = transfer(
                &thread_shared,
                &socket,
                &cancel,
                client,
                &filename,
                negotiated,
            );
            if let Ok(mut transfers) = thread_shared.transfers.lock() {
                if transfers.get(&client).is_some_and(|e| e.id == id) {
                    transfers.remove(&client);
                }
                m::active(transfers.len());
            }
            m::transfer_done(outcome);
        });
    if let Err(e) = spawned {
        tracing::warn!(%client, error = %e, "cannot start a TFTP transfer thread");
        if let Ok(mut transfers) = shared.transfers.lock() {
            transfers.remove(&client);
        }
        send_error(
            listener,
            client,
            ErrorCode::NotDefined,
            "server busy: cannot start a transfer",
        )
        .await;
    }
}

fn transfer_socket(ip: IpAddr, client: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
    socket.connect(client)?;
    Ok(socket)
}

/// Runs one transfer on the calling (dedicated) thread and returns the outcome label.
fn transfer(
    shared: &Shared,
    socket: &std::net::UdpSocket,
    cancel: &Cancel,
    client: SocketAddr,
    filename: &[u8],
    negotiated: Negotiated,
) -> &'static str {
    let opened = match shared.dirs.open(filename) {
        Ok(o) => o,
        Err(e) => {
            tracing::info!(%client, error = %e, "TFTP read refused");
            m::error_sent(e.code());
            let _ = socket.send(&encode_error(e.code(), &e.to_string()));
            return "lookup_error";
        }
    };
    let oack = negotiated
        .oack
        .then(|| encode_oack(negotiated.oack_options(opened.size)));
    let plan = Plan {
        file: opened.file,
        mode: negotiated.mode,
        blksize: usize::from(negotiated.blksize),
        windowsize: u64::from(negotiated.windowsize),
        timeout: negotiated.timeout.unwrap_or(shared.config.timeout),
        retries: shared.config.retries,
        oack,
    };
    tracing::debug!(
        %client, path = %opened.path.display(), size = opened.size,
        blksize = negotiated.blksize, windowsize = negotiated.windowsize, "TFTP transfer started"
    );
    let outcome = transfer::run(socket, cancel, plan);
    match &outcome {
        Outcome::Completed { bytes } => {
            m::bytes_sent(*bytes);
            tracing::debug!(%client, path = %opened.path.display(), bytes, "TFTP transfer completed");
        }
        Outcome::ClientError { code } => {
            tracing::debug!(%client, code, "TFTP transfer ended by the client's ERROR");
        }
        Outcome::TimedOut => tracing::info!(%client, "TFTP transfer timed out"),
        Outcome::Io(e) => tracing::warn!(%client, error = %e, "TFTP transfer failed"),
        Outcome::Cancelled => tracing::debug!(%client, "TFTP transfer replaced or stopped"),
    }
    outcome.label()
}

#[cfg(test)]
mod tests;
