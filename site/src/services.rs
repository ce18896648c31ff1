//! The site's boot services: DHCP and TFTP on the boot network, fed by the site's design
//! and following its changes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use lariat_boot::dhcp::{
    self, BootConfig, DhcpError, DhcpHandle, DhcpServer, LeaseReader, Listen, ServerOptions,
};
use lariat_boot::tftp::{self, TftpConfig, TftpError, TftpServer};
use lariat_steps::CurrentDesign;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::design::SiteDesign;
use crate::dhcp::dhcp_config;

/// Which boot services to run, and where.
#[derive(Debug, Clone)]
pub struct BootServicesConfig {
    /// Serve DHCP: the design's reservations, PXE boot files, the iPXE script URL.
    pub dhcp: bool,
    pub dhcp_mode: dhcp::Mode,
    /// Answer unknown MACs from the networks' dhcp ranges and record them as discovered.
    pub dhcp_discovery: bool,
    /// Serve TFTP (iPXE binaries and `tftp_root`) on `boot_address`, port 69.
    pub tftp: bool,
    /// The site's TFTP root, looked up before the iPXE binaries.
    pub tftp_root: Option<PathBuf>,
    /// Where the iPXE binaries are.
    pub ipxe_dir: PathBuf,
    /// The interface nodes PXE-boot on.
    pub boot_interface: Option<String>,
    /// This server's IPv4 address on the boot network (DHCP server id, next-server, TFTP).
    pub boot_address: Option<Ipv4Addr>,
    /// The leases database.
    pub lease_db: PathBuf,
}

/// Why the boot services cannot start. Each names the setting to give.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error(
        "--dhcp and --tftp need --boot-address (this server's IPv4 address on the boot network)"
    )]
    NoBootAddress,
    #[error("--dhcp needs --boot-interface")]
    NoBootInterface,
    #[error("cannot start TFTP on {0}:69")]
    Tftp(Ipv4Addr, #[source] TftpError),
    #[error("cannot start DHCP on {0}")]
    Dhcp(String, #[source] DhcpError),
}

/// Running boot services; [`shutdown`](Self::shutdown) stops them.
pub struct BootServices {
    /// Owns the DHCP server: follows the design, shuts it down on stop.
    dhcp: Option<tokio::task::JoinHandle<()>>,
    tftp: Option<TftpServer>,
    leases: Option<LeaseReader>,
    mode: dhcp::Mode,
    stop: CancellationToken,
}

impl BootServices {
    /// Starts what `cfg` asks for. `script_url` is the iPXE script URL given to iPXE.
    pub async fn start(
        cfg: &BootServicesConfig,
        design: Arc<dyn SiteDesign>,
        script_url: Option<String>,
    ) -> Result<BootServices, ServicesError> {
        let stop = CancellationToken::new();
        if !cfg.dhcp && !cfg.tftp {
            return Ok(BootServices {
                dhcp: None,
                tftp: None,
                leases: None,
                mode: cfg.dhcp_mode,
                stop,
            });
        }
        let address = cfg.boot_address.ok_or(ServicesError::NoBootAddress)?;
        let tftp = if cfg.tftp {
            let tc = TftpConfig {
                root: cfg.tftp_root.clone(),
                ipxe_dir: Some(cfg.ipxe_dir.clone()),
                bind: SocketAddr::new(IpAddr::V4(address), 69),
                ..TftpConfig::default()
            };
            let s = stop.clone();
            let server = tftp::serve(tc, async move { s.cancelled().await })
                .await
                .map_err(|e| ServicesError::Tftp(address, e))?;
            tracing::info!(addr = %server.local_addr(), "TFTP serving");
            Some(server)
        } else {
            None
        };
        let mut leases = None;
        let dhcp = if cfg.dhcp {
            let iface = cfg
                .boot_interface
                .clone()
                .ok_or(ServicesError::NoBootInterface)?;
            let mut opts = ServerOptions::new(
                Listen::Interface(iface.clone()),
                address,
                cfg.lease_db.clone(),
            );
            opts.mode = cfg.dhcp_mode;
            let boot = BootConfig {
                next_server: Some(address),
                ipxe_script_url: script_url,
                ..BootConfig::default()
            };
            let current = design.current();
            let dc = dhcp_config(&current.loaded.design, &boot, cfg.dhcp_discovery);
            let handle = DhcpServer::start(opts, dc)
                .await
                .map_err(|e| ServicesError::Dhcp(iface.clone(), e))?;
            tracing::info!(interface = %iface, "DHCP serving");
            leases = Some(handle.leases().clone());
            Some(tokio::spawn(follow(
                design.subscribe(),
                handle,
                boot,
                cfg.dhcp_discovery,
                stop.clone(),
            )))
        } else {
            None
        };
        Ok(BootServices {
            dhcp,
            tftp,
            leases,
            mode: cfg.dhcp_mode,
            stop,
        })
    }

    /// The DHCP server's leases, when it runs.
    pub fn leases(&self) -> Option<&LeaseReader> {
        self.leases.as_ref()
    }

    /// The leases of addresses this server hands out: none as a proxyDHCP, whose
    /// clients' addresses come from another server.
    pub fn address_leases(&self) -> Option<Arc<dyn lariat_boot::http::LeasedAddress>> {
        if self.mode != dhcp::Mode::Server {
            return None;
        }
        let r: Arc<dyn lariat_boot::http::LeasedAddress> = Arc::new(self.leases.clone()?);
        Some(r)
    }

    /// Stops the services and waits for them.
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Some(d) = self.dhcp {
            let _ = d.await;
        }
        if let Some(t) = self.tftp {
            t.stopped().await;
        }
    }
}

/// Replaces the DHCP configuration each time the design changes; shuts the server down
/// when `stop` fires.
async fn follow(
    mut designs: watch::Receiver<CurrentDesign>,
    dhcp: DhcpHandle,
    boot: BootConfig,
    discovery: bool,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = designs.changed() => if changed.is_err() { break },
        }
        let current = designs.borrow_and_update().clone();
        let cfg = dhcp_config(&current.loaded.design, &boot, discovery);
        match dhcp.replace_config(cfg) {
            Ok(()) => tracing::info!(
                revision = current.revision.as_deref().unwrap_or("-"),
                "DHCP follows the new design"
            ),
            Err(e) => tracing::error!("DHCP keeps its previous configuration: {e}"),
        }
    }
    dhcp.shutdown().await;
}

/// Counts `reader`'s active leases now, for site health; `None` when the lease file
/// cannot be read (said in the log).
pub async fn active_leases(reader: &LeaseReader) -> Option<i64> {
    let now = u64::try_from(lariat_db::now_ms() / 1000).unwrap_or(0);
    reader
        .active(now)
        .await
        .inspect_err(|e| tracing::warn!("cannot count the DHCP leases: {e}"))
        .ok()
}
