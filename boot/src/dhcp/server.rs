//! The server: one task reads and answers packets, one writer task group-commits leases.
//!
//! The reader owns the [`Handler`] and its in-memory lease table, so no lock sits on the
//! packet path. An ACK (or RELEASE, DECLINE) becomes a [`LeaseWrite`] queued to the
//! writer; the writer takes everything queued into one transaction, commits, and only
//! then sends the ACKs it holds. A restart therefore never forgets a lease a client was
//! told about. OFFERs and NAKs go out at once.

use std::io;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::config::{CompiledConfig, ConfigError, DhcpConfig, Mode, ServerOptions};
use super::handler::{Handler, HandlerOptions, LeaseWrite, Outcome, PXE_PORT, Reply};
use super::socket::{self, BoundSocket, DhcpSocket};
use super::stats::Stats;
use super::store::{LeaseReader, LeaseStore, StoreError};
use super::wire::{DropReason, MAX_LEN};

/// Writes queued beyond this are dropped (the client retries) rather than buffered
/// without bound.
const WRITE_QUEUE: usize = 16384;
/// Most lease writes one transaction takes.
const MAX_BATCH: usize = 4096;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("DHCP config: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("DHCP socket: {0}")]
    Io(#[from] io::Error),
    #[error("DHCP: {0}")]
    Sockets(String),
}

/// Entry points to start a server.
pub struct DhcpServer;

impl DhcpServer {
    /// Bind the sockets `opts` needs (port 67, plus 4011 in proxy mode) in the network
    /// namespace of the calling thread.
    pub fn bind(opts: &ServerOptions) -> io::Result<Vec<BoundSocket>> {
        let mut v = vec![socket::bind(&opts.listen, opts.port)?];
        if opts.mode == Mode::Proxy {
            v.push(socket::bind(&opts.listen, PXE_PORT)?);
        }
        Ok(v)
    }

    /// Bind and start. Must be called inside a tokio runtime.
    pub async fn start(opts: ServerOptions, config: DhcpConfig) -> Result<DhcpHandle, DhcpError> {
        let sockets = Self::bind(&opts)?;
        Self::start_with_sockets(opts, config, sockets).await
    }

    /// Start on sockets made by [`DhcpServer::bind`] (possibly on another thread, in
    /// another network namespace).
    pub async fn start_with_sockets(
        opts: ServerOptions,
        config: DhcpConfig,
        sockets: Vec<BoundSocket>,
    ) -> Result<DhcpHandle, DhcpError> {
        if sockets.is_empty() || sockets.len() > 2 {
            return Err(DhcpError::Sockets(format!(
                "expected 1 or 2 sockets, got {}",
                sockets.len()
            )));
        }
        let compiled = Arc::new(config.compile()?);
        let store = LeaseStore::open(&opts.lease_db, opts.durability).await?;
        let reader = store.reader();
        let leases = reader.leases().await?;
        let discovered = reader
            .discovered_hosts()
            .await?
            .into_iter()
            .map(|d| d.mac)
            .collect();
        let stats = Arc::new(Stats::default());
        let handler = Handler::new(
            HandlerOptions {
                server_id: opts.server_id,
                mode: opts.mode,
                port: opts.port,
            },
            compiled.clone(),
            stats.clone(),
            leases,
            discovered,
        );
        let socks: Vec<Arc<DhcpSocket>> = sockets
            .into_iter()
            .map(|b| DhcpSocket::new(b).map(Arc::new))
            .collect::<io::Result<_>>()?;
        let (config_tx, config_rx) = watch::channel(compiled);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (write_tx, write_rx) = mpsc::channel(WRITE_QUEUE);
        let writer = tokio::spawn(writer(store, write_rx, socks.clone(), stats.clone()));
        let reader_task = tokio::spawn(serve(
            handler,
            socks,
            config_rx,
            stop_rx,
            write_tx,
            stats.clone(),
        ));
        Ok(DhcpHandle {
            config_tx,
            stop_tx,
            stats,
            reader,
            tasks: Some((reader_task, writer)),
        })
    }
}

/// A running server. Dropping it aborts the tasks; [`DhcpHandle::shutdown`] stops them
/// after the lease writes already queued are committed.
pub struct DhcpHandle {
    config_tx: watch::Sender<Arc<CompiledConfig>>,
    stop_tx: watch::Sender<bool>,
    stats: Arc<Stats>,
    reader: LeaseReader,
    tasks: Option<(JoinHandle<()>, JoinHandle<()>)>,
}

impl DhcpHandle {
    /// Replace the design part of the config. It is checked here; on error the old one
    /// stays in force. The packet loop picks the new one up before its next packet;
    /// leases already given stay valid (a host whose reservation went away is simply
    /// not answered any more, and its lease runs out).
    pub fn replace_config(&self, config: DhcpConfig) -> Result<(), ConfigError> {
        let compiled = Arc::new(config.compile()?);
        self.config_tx.send_replace(compiled);
        Ok(())
    }

    /// The config in force.
    pub fn config(&self) -> DhcpConfig {
        self.config_tx.borrow().source().clone()
    }

    /// Live counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Read leases and discovered hosts (for the API).
    pub fn leases(&self) -> &LeaseReader {
        &self.reader
    }

    /// Stop reading packets, commit and answer what is queued, close the lease file.
    pub async fn shutdown(mut self) {
        let _ = self.stop_tx.send(true);
        if let Some((r, w)) = self.tasks.take() {
            let _ = r.await;
            let _ = w.await;
        }
    }
}

impl Drop for DhcpHandle {
    fn drop(&mut self) {
        if let Some((r, w)) = self.tasks.take() {
            r.abort();
            w.abort();
        }
    }
}

/// Unix seconds: the clock of lease expiries.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn serve(
    mut handler: Handler,
    socks: Vec<Arc<DhcpSocket>>,
    mut config_rx: watch::Receiver<Arc<CompiledConfig>>,
    mut stop_rx: watch::Receiver<bool>,
    write_tx: mpsc::Sender<(LeaseWrite, usize)>,
    stats: Arc<Stats>,
) {
    // One byte more than any accepted datagram, so an oversized one shows as such.
    let mut buf = vec![0u8; MAX_LEN + 1];
    let mut buf2 = vec![0u8; MAX_LEN + 1];
    let two = socks.len() > 1;
    let second = socks.get(1).cloned().unwrap_or_else(|| socks[0].clone());
    loop {
        let (got, idx) = tokio::select! {
            r = socks[0].recv(&mut buf) => (r, 0),
            r = second.recv(&mut buf2), if two => (r, 1),
            _ = stop_rx.changed() => break,
        };
        let buf = if idx == 0 { &buf } else { &buf2 };
        let (n, info) = match got {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "DHCP receive failed");
                continue;
            }
        };
        if config_rx.has_changed().unwrap_or(false) {
            handler.set_config(config_rx.borrow_and_update().clone());
        }
        let Some(datagram) = buf.get(..n) else {
            stats.dropped(DropReason::Oversized);
            continue;
        };
        match handler.handle(datagram, &info, unix_now()) {
            Outcome::Drop(reason) => {
                tracing::debug!(src = %info.src, reason = reason.as_str(), "DHCP packet dropped");
            }
            Outcome::Send(reply) => send(&socks[idx], &reply, &stats).await,
            Outcome::SendAndRecord(reply, write) => {
                send(&socks[idx], &reply, &stats).await;
                // Recording a discovered host is best effort: the next packet from the
                // host records it if this one is lost.
                let _ = write_tx.try_send((write, idx));
            }
            Outcome::Commit(write) => {
                if write_tx.try_send((write, idx)).is_err() {
                    stats.dropped(DropReason::Backlog);
                }
            }
        }
    }
}

async fn send(sock: &DhcpSocket, reply: &Reply, stats: &Stats) {
    match sock.send(&reply.bytes, reply.dest, reply.ifindex).await {
        Ok(_) => stats.replied(reply.kind),
        Err(e) => tracing::warn!(dest = %reply.dest, error = %e, "DHCP send failed"),
    }
}

async fn writer(
    mut store: LeaseStore,
    mut rx: mpsc::Receiver<(LeaseWrite, usize)>,
    socks: Vec<Arc<DhcpSocket>>,
    stats: Arc<Stats>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let leases: Vec<_> = batch.iter().filter_map(|(w, _)| w.lease.as_ref()).collect();
        let discovered: Vec<_> = batch
            .iter()
            .filter_map(|(w, _)| w.discovered.as_ref())
            .collect();
        let started = Instant::now();
        match store.commit(&leases, &discovered, unix_now()).await {
            Ok(()) => {
                stats.committed(leases.len(), started.elapsed().as_secs_f64());
                for (w, idx) in batch.drain(..) {
                    if let Some(reply) = &w.reply {
                        send(&socks[idx], reply, &stats).await;
                    }
                }
            }
            Err(e) => {
                // No ACK without a durable lease: the clients retry.
                tracing::error!(error = %e, leases = leases.len(), "lease commit failed; ACKs withheld");
                for (w, _) in batch.drain(..) {
                    if w.reply.is_some() {
                        stats.dropped(DropReason::PersistFailed);
                    }
                }
            }
        }
    }
    store.close().await;
}
