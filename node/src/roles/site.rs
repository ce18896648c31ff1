//! The site role: the provisioning actions over the site's BMCs and asset cache, the
//! window gate, and, once the design is open, the boot services and HTTP boot.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use lariat_db::Tables;
use lariat_engine::{Actions, Engine, Scheduling};
use lariat_site::{
    BootServices, BootServicesConfig, DesignSetter, DesignWindows, HttpBoot, LateDesign,
    NodeTokens, OverrideFeed, ProvisioningConfig, SiteDesign,
};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::ProcessError;

/// What the site role runs.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// Serve HTTP boot: on the API's listener, or on `boot_listen` when given.
    pub http_boot: bool,
    /// A listener of HTTP boot's own, in plain HTTP, apart from the API's: needed when
    /// the API speaks TLS, since PXE firmware cannot check a certificate.
    pub boot_listen: Option<SocketAddr>,
    /// This server's URL as booting nodes reach it; the boot listener's address when
    /// absent.
    pub boot_url: Option<String>,
    /// The boot asset cache, served under `/boot/assets/` and filled by `stage_assets`.
    pub assets: PathBuf,
    /// Where `stage_assets` downloads assets without a URL of their own from.
    pub asset_origin: Option<String>,
    /// BMC operations in flight at once, across all hosts.
    pub bmc_max_in_flight: usize,
    /// Requests a second per client on the boot routes that look things up.
    pub boot_rate: u32,
    /// DHCP and TFTP.
    pub services: BootServicesConfig,
}

/// The site role before the engine starts: what the engine needs of it.
pub struct SiteRole {
    cfg: SiteConfig,
    design: LateDesign,
    set_design: DesignSetter,
    gate: Arc<DesignWindows>,
}

/// The running site role.
pub struct RunningSite {
    services: BootServices,
    windows: JoinHandle<()>,
    overrides: JoinHandle<()>,
    routes: Option<Router>,
    boot_listener: Option<BootListener>,
}

/// HTTP boot on a listener of its own.
struct BootListener {
    stop: CancellationToken,
    served: JoinHandle<std::io::Result<()>>,
}

impl SiteRole {
    pub fn new(cfg: SiteConfig) -> Result<SiteRole, ProcessError> {
        if cfg.bmc_max_in_flight == 0 {
            return Err(ProcessError::NoBmcSlots);
        }
        let (set_design, design) = LateDesign::new();
        Ok(SiteRole {
            cfg,
            design,
            set_design,
            gate: DesignWindows::new(),
        })
    }

    /// The actions this site's runs use. The provisioning actions wait for the site's
    /// design (runs resumed as the engine starts must not see an empty one).
    pub fn actions(&self) -> Actions {
        let p = ProvisioningConfig {
            asset_cache: self.cfg.http_boot.then(|| self.cfg.assets.clone()),
            asset_origin: self.cfg.asset_origin.clone(),
            bmc_max_in_flight: self.cfg.bmc_max_in_flight,
        };
        lariat_site::actions(Arc::new(self.design.clone()), &p)
    }

    /// The maintenance windows this site's steps start in, and the racks, sites and
    /// labels its rolling limits count by: those of the site's design, evaluated here.
    /// Until the design is open, every gated step waits and every host is unplaced.
    pub fn scheduling(&self) -> Scheduling {
        Scheduling::of(self.gate.clone())
    }

    /// The design is open: the actions go on with it, and the boot services start. `api`
    /// is the API's listener, which HTTP boot shares unless it has one of its own. The
    /// window gate goes by `overrides` besides the design.
    pub async fn start(
        self,
        engine: Engine,
        design: Arc<dyn SiteDesign>,
        overrides: OverrideFeed,
        tables: &Tables,
        api: SocketAddr,
    ) -> Result<RunningSite, ProcessError> {
        self.set_design.set(design.clone());
        let windows = self.gate.follow(design.clone(), engine.clone());
        let overrides = self.gate.follow_overrides(overrides, engine.clone());
        let own = match (self.cfg.http_boot, self.cfg.boot_listen) {
            (true, Some(addr)) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| ProcessError::Listen(addr, e))?,
            ),
            _ => None,
        };
        let boot_addr = match &own {
            Some(l) => l.local_addr().map_err(ProcessError::Serve)?,
            None => api,
        };
        let boot = if self.cfg.http_boot {
            let assets = self.cfg.assets.clone();
            std::fs::create_dir_all(&assets)
                .map_err(|e| ProcessError::BootAssets(assets.clone(), e))?;
            let base_url = self
                .cfg
                .boot_url
                .clone()
                .unwrap_or_else(|| format!("http://{boot_addr}"));
            tracing::info!(%base_url, assets = %assets.display(), "HTTP boot on");
            Some(HttpBoot {
                base_url,
                assets,
                per_client: self.cfg.boot_rate,
            })
        } else {
            None
        };
        // iPXE chains to this server's script; without HTTP boot there is none to give.
        let script_url = boot.as_ref().map(HttpBoot::script_url);
        if self.cfg.services.dhcp && script_url.is_none() {
            tracing::warn!("--dhcp without --http-boot: iPXE clients get no script URL");
        }
        let services = BootServices::start(&self.cfg.services, design.clone(), script_url).await?;
        let routes = match boot {
            Some(b) => {
                let tokens = NodeTokens::open(tables.clone())
                    .await
                    .map_err(ProcessError::NodeTokens)?;
                Some(b.routes(engine, design, tokens, &services))
            }
            None => None,
        };
        let (routes, boot_listener) = match (own, routes) {
            (Some(listener), Some(r)) => (None, Some(BootListener::serve(listener, r))),
            (_, r) => (r, None),
        };
        Ok(RunningSite {
            services,
            windows,
            overrides,
            routes,
            boot_listener,
        })
    }
}

impl RunningSite {
    /// HTTP boot's routes, for the listener the API serves on; once. None when HTTP boot
    /// is off or has a listener of its own.
    pub fn take_routes(&mut self) -> Option<lariat_api::ExtraRoutes> {
        self.routes.take().map(|router| lariat_api::ExtraRoutes {
            router,
            doc: lariat_site::http_boot_openapi(),
        })
    }

    /// Counts the DHCP server's active leases, when this site serves DHCP.
    pub fn lease_count(&self) -> Option<lariat_link::LeaseCount> {
        let reader = self.services.leases()?.clone();
        Some(Arc::new(move || {
            let reader = reader.clone();
            Box::pin(async move { lariat_site::active_leases(&reader).await })
        }))
    }

    /// Stops the boot services and HTTP boot's own listener.
    pub async fn shutdown(self) {
        self.windows.abort();
        self.overrides.abort();
        if let Some(b) = self.boot_listener {
            b.stop.cancel();
            match b.served.await {
                Ok(Err(e)) => tracing::error!("HTTP boot's listener failed: {e}"),
                Err(e) => tracing::error!("HTTP boot's listener: {e}"),
                Ok(Ok(())) => {}
            }
        }
        self.services.shutdown().await;
    }
}

impl BootListener {
    fn serve(listener: tokio::net::TcpListener, routes: Router) -> BootListener {
        let stop = CancellationToken::new();
        if let Ok(local) = listener.local_addr() {
            tracing::info!("HTTP boot served on http://{local}");
        }
        let until = stop.clone();
        let served = tokio::spawn(async move {
            axum::serve(
                listener,
                routes.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { until.cancelled().await })
            .await
        });
        BootListener { stop, served }
    }
}
