//! The provisioning actions: they act on real machines through their BMCs, on the site's
//! boot asset cache, and on the facts a node reports when it calls back.
//!
//! Every action here reads the host it works on from its fan-out item (or `input.host`),
//! looks the host up in the design in force, and is safe to repeat: power and boot-device
//! actions check and confirm state, staging skips what is present and valid, verify only
//! reads. They are registered inside [`crate::WithParams`], which expands parameters and
//! turns `enabled: false` into a recorded no-op.

mod assets;
mod callback;
mod design;
mod exec;
mod firmware;
mod power;
mod verify;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lariat_bmc::{Bmc, BmcConfig, BmcError, Connector, IpmiConfig, RedfishConfig, Timing};
use lariat_engine::{Actions, StepContext, StepError};
use lariat_workflows::design::{BmcKind, CredentialRef, IpmiDriver, Loaded, ResolvedHost};
use serde_json::Value;

pub use assets::StageAssets;
pub use callback::AwaitCallback;
pub use design::ValidateDesign;
pub use exec::{Exec, KILL_GRACE, OUTPUT_LIMIT};
pub use firmware::{FirmwareUpdate, FirmwareUpgrade};
pub use power::{PowerCycle, PowerOff, PowerOn, PowerStatus, SetBootDevice, SetPxe};
pub use verify::Verify;

/// The design the actions work from.
///
/// Implementations hand out the design in force at the moment of the call; an action
/// reads it once per attempt, so a design change between attempts is seen by the next one.
#[async_trait::async_trait]
pub trait DesignView: Send + Sync + 'static {
    /// The design in force and the revision it came from (`None` when no revision has
    /// been accepted, in which case the design is empty). May wait while the process is
    /// still loading its design at start.
    async fn current(&self) -> CurrentDesign;

    /// The design `host` is provisioned from: its site's pinned revision when the site is
    /// pinned, the design in force otherwise. An error (a pinned revision that cannot be
    /// read) names what is missing; the caller must not fall back to another revision.
    async fn for_host(&self, _host: &str) -> Result<CurrentDesign, String> {
        Ok(self.current().await)
    }
}

/// A design and the revision it was loaded from.
#[derive(Clone)]
pub struct CurrentDesign {
    pub revision: Option<String>,
    pub loaded: Arc<Loaded>,
}

/// A design that never changes: for tests, and for a server with no design repository.
pub struct FixedDesign(pub CurrentDesign);

#[async_trait::async_trait]
impl DesignView for FixedDesign {
    async fn current(&self) -> CurrentDesign {
        self.0.clone()
    }
}

/// What the provisioning actions share: the design, the BMC connector, the asset cache.
pub struct Provisioning {
    design: Arc<dyn DesignView>,
    connector: Connector,
    /// The folder `/boot/assets` serves; `stage_assets` fills it.
    asset_cache: Option<PathBuf>,
    /// Where assets without a URL of their own are downloaded from (`{origin}/{path}`).
    asset_origin: Option<String>,
    /// Timeouts and retries for every BMC (the design does not carry them).
    bmc_timing: Timing,
    http: reqwest::Client,
    /// One download per cache file at a time, across runs.
    staging: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl Provisioning {
    /// Actions over `design`, with a default connector and no asset cache.
    pub fn new(design: Arc<dyn DesignView>) -> Self {
        Provisioning {
            design,
            connector: Connector::default(),
            asset_cache: None,
            asset_origin: None,
            bmc_timing: Timing::default(),
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            staging: Mutex::new(HashMap::new()),
        }
    }

    /// An empty design: every host is unknown, and `validate_design` says no revision is
    /// active. What `register_builtin` wires when nothing else is given.
    pub fn unconfigured() -> Self {
        Provisioning::new(Arc::new(FixedDesign(CurrentDesign {
            revision: None,
            loaded: Arc::new(lariat_workflows::design::load_files(&[])),
        })))
    }

    /// Shares `connector` (and its limits) with the rest of the process.
    pub fn with_connector(mut self, connector: Connector) -> Self {
        self.connector = connector;
        self
    }

    /// Stages boot assets into `dir` (the folder the site serves as `/boot/assets`).
    pub fn with_asset_cache(mut self, dir: PathBuf) -> Self {
        self.asset_cache = Some(dir);
        self
    }

    /// Downloads assets that name no URL of their own from `{origin}/{path}`.
    pub fn with_asset_origin(mut self, origin: String) -> Self {
        self.asset_origin = Some(origin.trim_end_matches('/').to_string());
        self
    }

    /// Timeouts, retries and confirm time for every BMC.
    pub fn with_bmc_timing(mut self, timing: Timing) -> Self {
        self.bmc_timing = timing;
        self
    }

    /// Registers every provisioning action over `self`, replacing earlier ones.
    pub fn register(self: Arc<Self>, actions: &mut Actions) {
        let p = || Arc::clone(&self);
        actions
            .register("validate_design", with_params(ValidateDesign(p())))
            .register("stage_assets", with_params(StageAssets(p())))
            .register("power_off", with_params(PowerOff(p())))
            .register("power_on", with_params(PowerOn(p())))
            .register("power_cycle", with_params(PowerCycle(p())))
            .register("power_status", with_params(PowerStatus(p())))
            .register("boot", with_params(PowerOn(p())))
            .register("set_pxe", with_params(SetPxe(p())))
            .register("set_boot_device", with_params(SetBootDevice(p())))
            .register("await_callback", with_params(AwaitCallback(p())))
            .register("verify", with_params(Verify(p())))
            .register("firmware_update", with_params(FirmwareUpdate(p())))
            .register("firmware_upgrade", with_params(FirmwareUpgrade(p())))
            .register("exec", with_params(Exec(p())));
    }

    async fn for_host(&self, host: &str) -> Result<CurrentDesign, StepError> {
        self.design
            .for_host(host)
            .await
            .map_err(|e| StepError::retryable("design_unavailable", format!("host '{host}': {e}")))
    }

    /// The effective host this attempt works on.
    async fn host(&self, ctx: &StepContext) -> Result<ResolvedHost, StepError> {
        let name = host_name(ctx)?;
        let current = self.for_host(&name).await?;
        let design = &current.loaded.design;
        if design.host(&name).is_none() {
            return Err(StepError::fatal(
                "unknown_host",
                match &current.revision {
                    Some(rev) => format!("host '{name}' is not in design revision {rev}"),
                    None => format!("host '{name}': no design revision is active"),
                },
            ));
        }
        design
            .resolved_host(&name)
            .map_err(|e| StepError::fatal("design", format!("host '{name}': {e}")))
    }

    /// A driver for the host's BMC, from its design entry.
    fn bmc(&self, host: &ResolvedHost) -> Result<Box<dyn Bmc>, StepError> {
        let config = bmc_config(host, &self.bmc_timing)?;
        self.connector
            .connect(&config)
            .map_err(|e| bmc_error(&host.name, e))
    }
}

/// Wraps an action so `${params.X}` in its input is expanded first.
fn with_params<A: lariat_engine::Action>(a: A) -> crate::WithParams<A> {
    crate::WithParams(a)
}

/// The host an attempt works on: its fan-out item, or `input.host`.
fn host_name(ctx: &StepContext) -> Result<String, StepError> {
    match ctx.item.as_ref().or_else(|| ctx.input.get("host")) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(other) => Err(StepError::fatal(
            "bad_input",
            format!("step '{}': the host must be a name, got {other}", ctx.step),
        )),
        None => Err(StepError::fatal(
            "bad_input",
            format!(
                "step '{}' works on one host: give it `for_each: {{over: targets}}` or input.host",
                ctx.step
            ),
        )),
    }
}

/// The driver configuration for a host's BMC as the design describes it.
fn bmc_config(host: &ResolvedHost, timing: &Timing) -> Result<BmcConfig, StepError> {
    let name = &host.name;
    let missing = |what: &str| {
        StepError::fatal(
            "no_bmc",
            format!("host '{name}': the design gives its BMC no {what}"),
        )
    };
    let bmc = host.bmc.as_ref().ok_or_else(|| missing("entry"))?;
    let kind = bmc.kind.ok_or_else(|| missing("type (ipmi or redfish)"))?;
    let address = bmc.address.clone().ok_or_else(|| missing("address"))?;
    let username = bmc.username.clone().ok_or_else(|| missing("username"))?;
    let password = match bmc
        .credential
        .as_ref()
        .ok_or_else(|| missing("credential"))?
    {
        CredentialRef::Env(v) => lariat_bmc::CredentialRef::Env(v.clone()),
        CredentialRef::File(f) => lariat_bmc::CredentialRef::File(f.into()),
    };
    Ok(match kind {
        BmcKind::Ipmi => {
            let config = IpmiConfig {
                address,
                port: bmc.port.unwrap_or(623),
                username,
                password,
                cipher_suite: 3,
                timing: timing.clone(),
            };
            match bmc.driver {
                Some(IpmiDriver::Ipmitool) => BmcConfig::Ipmitool(config),
                Some(IpmiDriver::Native) | None => BmcConfig::Ipmi(config),
            }
        }
        BmcKind::Redfish if bmc.driver.is_some() => {
            return Err(StepError::fatal(
                "bmc_config",
                format!(
                    "host '{name}': `driver` chooses an IPMI implementation; this BMC is Redfish"
                ),
            ));
        }
        BmcKind::Redfish => {
            let url = if address.contains("://") {
                address
            } else {
                match bmc.port {
                    Some(p) => format!("https://{address}:{p}"),
                    None => format!("https://{address}"),
                }
            };
            BmcConfig::Redfish(RedfishConfig {
                url,
                system: None,
                username,
                password,
                insecure_tls: true,
                timing: timing.clone(),
            })
        }
    })
}

/// A BMC failure as a step error: what another attempt may fix is retryable, what it
/// cannot (wrong password, unsupported, bad configuration) is not. Authentication is
/// never retried: repeated failures lock accounts on real BMCs.
fn bmc_error(host: &str, e: BmcError) -> StepError {
    let msg = format!("host '{host}': {e}");
    match e {
        BmcError::Auth { .. } => StepError::fatal("bmc_auth", msg),
        BmcError::Credential { .. } => StepError::fatal("bmc_credential", msg),
        BmcError::Config(_) => StepError::fatal("bmc_config", msg),
        BmcError::Unsupported { .. } => StepError::fatal("bmc_unsupported", msg),
        BmcError::Unreachable { .. } | BmcError::Timeout { .. } => {
            StepError::retryable("bmc_unreachable", msg)
        }
        BmcError::NotConfirmed { .. } => StepError::retryable("bmc_not_confirmed", msg),
        BmcError::Completion { .. } | BmcError::Protocol { .. } => StepError::retryable("bmc", msg),
        BmcError::TaskFailed { .. } => StepError::retryable("firmware_task", msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host(bmc: serde_json::Value) -> ResolvedHost {
        let yaml = format!(
            "kind: Host\nname: h1\nspec: {{bmc: {bmc}}}\n",
            bmc = serde_json::to_string(&bmc).unwrap()
        );
        let loaded = lariat_workflows::design::load_files(&[("h.yaml".into(), yaml)]);
        loaded.design.resolved_host("h1").unwrap()
    }

    #[test]
    fn design_bmc_entries_become_driver_configs() {
        let h = host(json!({"type": "ipmi", "address": "10.0.0.5", "port": 6230,
            "username": "admin", "credential": {"env": "PW"}}));
        let BmcConfig::Ipmi(c) = bmc_config(&h, &Timing::default()).unwrap() else {
            panic!("not ipmi")
        };
        assert_eq!((c.address.as_str(), c.port), ("10.0.0.5", 6230));
        let h = host(
            json!({"type": "ipmi", "address": "10.0.0.5", "driver": "ipmitool",
            "username": "admin", "credential": {"env": "PW"}}),
        );
        assert!(matches!(
            bmc_config(&h, &Timing::default()),
            Ok(BmcConfig::Ipmitool(_))
        ));
        let h = host(
            json!({"type": "redfish", "address": "bmc1", "driver": "ipmitool",
            "username": "root", "credential": {"env": "PW"}}),
        );
        assert_eq!(
            bmc_config(&h, &Timing::default()).unwrap_err().kind,
            "bmc_config"
        );
        let h = host(
            json!({"type": "redfish", "address": "bmc1.example", "port": 8443,
            "username": "root", "credential": {"file": "/etc/pw"}}),
        );
        let BmcConfig::Redfish(c) = bmc_config(&h, &Timing::default()).unwrap() else {
            panic!("not redfish")
        };
        assert_eq!(c.url, "https://bmc1.example:8443");
    }

    #[test]
    fn a_bmc_entry_missing_a_field_names_the_field() {
        let h = host(json!({"type": "ipmi", "address": "10.0.0.5", "username": "admin"}));
        let e = bmc_config(&h, &Timing::default()).unwrap_err();
        assert_eq!(e.kind, "no_bmc");
        assert!(
            e.message.contains("host 'h1'") && e.message.contains("credential"),
            "{e}"
        );
        assert!(!e.retryable);
    }
}
