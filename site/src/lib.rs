//! What runs beside the nodes of a site: the boot services configured from the design
//! (DHCP, TFTP), HTTP boot with the node callback and its one-time tokens, the site's view
//! of the design, and the provisioning actions over the site's BMCs.
//!
//! `lariat server` runs all of it for the one site it serves; a site agent (planned) runs
//! it at each datacenter. Nothing here depends on the REST API or on where the design
//! comes from: the design is a [`SiteDesign`].

mod design;
pub mod dhcp;
mod node_tokens;
mod nodes;
mod provisioning;
mod services;
mod windows;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use lariat_engine::Engine;

pub use design::{DesignSetter, LateDesign, SiteDesign};
pub use lariat_boot::http::openapi as http_boot_openapi;
pub use lariat_steps::CurrentDesign;
pub use node_tokens::{MIGRATIONS, NodeToken, NodeTokens, POSTGRES_MIGRATIONS};
pub use nodes::SiteNodes;
pub use provisioning::{ProvisioningConfig, actions};
pub use services::{BootServices, BootServicesConfig, ServicesError, active_leases};
pub use windows::{DesignWindows, OverrideFeed};

/// HTTP boot of this site: where nodes reach it, and what it serves them.
#[derive(Debug, Clone)]
pub struct HttpBoot {
    /// This server's URL as nodes reach it, e.g. `http://10.77.0.1:7300`.
    pub base_url: String,
    /// Staged boot assets, served under `/boot/assets/`.
    pub assets: PathBuf,
    /// Requests a second per client address on the boot routes that look things up.
    pub per_client: u32,
}

impl HttpBoot {
    /// The iPXE script URL DHCP gives iPXE clients.
    pub fn script_url(&self) -> String {
        format!("{}/boot/ipxe?mac=${{net0/mac}}", self.base_url)
    }

    /// The HTTP boot routes (iPXE scripts, assets, unattended files, node metadata, the
    /// node callback), answered from `design` and the engine's waiting steps. With the
    /// boot services' DHCP leases (when they hand out addresses), a node's script goes
    /// only to the address leased to its MAC.
    pub fn routes(
        &self,
        engine: Engine,
        design: Arc<dyn SiteDesign>,
        tokens: NodeTokens,
        services: &BootServices,
    ) -> Router {
        let nodes = SiteNodes::new(engine, design, tokens, &self.base_url);
        lariat_boot::http::router(
            nodes,
            &lariat_boot::http::HttpBootConfig {
                assets: self.assets.clone(),
                per_client: self.per_client,
                leases: services.address_leases(),
            },
        )
    }
}
