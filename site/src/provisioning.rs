//! The provisioning actions of this site: the workflow library's steps over the site's
//! design, its BMCs and its boot asset cache.

use std::path::PathBuf;
use std::sync::Arc;

use lariat_engine::Actions;
use lariat_steps::{DesignView, Provisioning};

/// How the provisioning actions reach the machines and the assets.
#[derive(Debug, Clone)]
pub struct ProvisioningConfig {
    /// The folder HTTP boot serves as `/boot/assets`; `stage_assets` fills it. None
    /// without HTTP boot.
    pub asset_cache: Option<PathBuf>,
    /// Where assets without a URL of their own are downloaded from (`{origin}/{path}`).
    pub asset_origin: Option<String>,
    /// BMC operations in flight at once, across all hosts (one at a time per BMC).
    pub bmc_max_in_flight: usize,
}

/// Every action this site runs: the utilities, and the provisioning actions over
/// `design`, sharing one BMC connector.
pub fn actions(design: Arc<dyn DesignView>, cfg: &ProvisioningConfig) -> Actions {
    let mut actions = Actions::new();
    lariat_steps::register_builtin(&mut actions);
    let mut p =
        Provisioning::new(design).with_connector(lariat_bmc::Connector::new(cfg.bmc_max_in_flight));
    if let Some(dir) = &cfg.asset_cache {
        p = p.with_asset_cache(dir.clone());
    }
    if let Some(origin) = &cfg.asset_origin {
        p = p.with_asset_origin(origin.clone());
    }
    Arc::new(p).register(&mut actions);
    actions
}
