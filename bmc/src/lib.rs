//! BMC drivers behind one trait, [`Bmc`]: IPMI over LAN (RMCP+ on ipmi-rs, plus the chassis,
//! boot-option and session commands it lacks), the `ipmitool -I lanplus` program for BMCs the
//! native driver cannot reach, and Redfish over HTTP(S).
//!
//! A [`Connector`] turns a per-host [`BmcConfig`] into a `Box<dyn Bmc>`. All handles made by one
//! connector share one [`BmcPool`]: at most one operation at a time per BMC, and a bounded
//! number of operations (blocking IPMI sessions, ipmitool processes) in flight overall.
//!
//! Nothing here logs a password: credentials are [`CredentialRef`]s resolved when a session
//! is opened, into a [`Secret`] that prints as `***`.

mod config;
mod credential;
mod error;
pub mod ipmi;
pub mod ipmitool;
mod pool;
pub mod redfish;

use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use config::{BmcConfig, Connector, IpmiConfig, RedfishConfig, Timing};
pub use credential::{CredentialRef, Secret};
pub use error::{BmcError, completion_meaning};
pub use pool::BmcPool;

/// Chassis power as the BMC reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    On,
    Off,
    /// Redfish `PoweringOn`/`PoweringOff`/`Paused`: in between, poll again.
    Transitioning,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerState::On => "on",
            PowerState::Off => "off",
            PowerState::Transitioning => "transitioning",
        })
    }
}

/// The device to boot from on the next (or every) boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootDevice {
    /// Network boot (PXE).
    Pxe,
    /// The default local disk.
    Disk,
    /// Firmware setup.
    Bios,
}

/// Whether a boot override applies to the next boot only or to every boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootPersistence {
    Once,
    Persistent,
}

/// Firmware boot mode the override asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootMode {
    Uefi,
    Legacy,
}

/// A boot override to set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootOverride {
    pub device: BootDevice,
    pub persistence: BootPersistence,
    pub mode: BootMode,
}

impl BootOverride {
    /// PXE on the next boot only, in UEFI mode: what provisioning asks for.
    pub fn pxe_once() -> Self {
        BootOverride {
            device: BootDevice::Pxe,
            persistence: BootPersistence::Once,
            mode: BootMode::Uefi,
        }
    }
}

/// The boot override as the BMC reports it. Fields the BMC does not report are `None`
/// (ipmi_sim, for one, reports only the device).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSetting {
    /// `None` when there is no override, or it names a device outside [`BootDevice`]
    /// (`raw` says which).
    pub device: Option<BootDevice>,
    pub persistence: Option<BootPersistence>,
    pub mode: Option<BootMode>,
    /// The BMC's own words: `"boot flags 00 04 00 00 00"` (IPMI) or
    /// `"Pxe/Once/UEFI"` (Redfish).
    pub raw: String,
}

/// One firmware component the BMC knows about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareComponent {
    /// Stable id (Redfish `Id`, or `bmc` for the IPMI controller itself).
    pub id: String,
    pub name: String,
    pub version: String,
    /// Whether the BMC says this component can be updated.
    pub updateable: Option<bool>,
}

/// A firmware update to apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareUpdate {
    /// Where the BMC fetches the image from (Redfish `ImageURI`).
    pub image_uri: String,
    /// `HTTP`, `HTTPS`, ... (Redfish `TransferProtocol`); `None` lets the BMC infer it.
    pub transfer_protocol: Option<String>,
    /// Redfish resources to update (`Targets`); empty = the BMC decides.
    #[serde(default)]
    pub targets: Vec<String>,
}

/// How a firmware update ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareUpdateOutcome {
    /// The task or task monitor that was followed, when the BMC gave one.
    pub task: Option<String>,
    /// Final `TaskState` (`Completed`), or `accepted` when the BMC gave no task.
    pub state: String,
    pub messages: Vec<String>,
}

/// How a soft off ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SoftOffOutcome {
    /// It was already off; nothing was sent.
    AlreadyOff,
    /// The OS shut down within the timeout.
    Graceful,
    /// The OS did not shut down in time; a hard off followed.
    Forced,
}

/// One BMC. Every method is safe to call again with the same arguments (the engine re-runs
/// steps after a crash): power methods check the state first and confirm it after.
///
/// A handle serializes its own calls (one operation at a time per BMC, across all handles of
/// one [`Connector`]), so callers may share it freely.
#[async_trait]
pub trait Bmc: Send + Sync {
    /// A short name for logs: `ipmi://10.0.0.5:623`, `redfish://bmc1/…/Systems/1`.
    fn describe(&self) -> String;

    /// Reads the chassis power state. No side effect.
    async fn power_status(&self) -> Result<PowerState, BmcError>;

    /// Powers on. Idempotent: does nothing but confirm when already on. Returns once the BMC
    /// reports `On`, or [`BmcError::NotConfirmed`] after the confirm timeout.
    async fn power_on(&self) -> Result<(), BmcError>;

    /// Hard power off (no OS shutdown). Idempotent; returns once the BMC reports `Off`, or
    /// [`BmcError::NotConfirmed`] after the confirm timeout.
    async fn power_off(&self) -> Result<(), BmcError>;

    /// Asks the OS to shut down (ACPI soft off / `GracefulShutdown`) and waits up to
    /// `grace` for `Off`; then falls back to [`Bmc::power_off`] (at once if the BMC refuses
    /// the graceful request). Idempotent: already off returns
    /// [`SoftOffOutcome::AlreadyOff`] without sending anything. Confirms `Off` either way.
    async fn soft_off(&self, grace: Duration) -> Result<SoftOffOutcome, BmcError>;

    /// Power cycle as off, confirm off, on, confirm on. Never a raw BMC cycle: a raw cycle
    /// of a machine that is off is refused by some BMCs and ignored by others, so it is not
    /// safe to repeat. Safe to repeat: the machine ends up on either way.
    async fn power_cycle(&self) -> Result<(), BmcError> {
        self.power_off().await?;
        self.power_on().await
    }

    /// Sets the boot override. Idempotent. Returns once the BMC accepted it; it does not
    /// read it back (call [`Bmc::boot_device`] to confirm, as the `set_pxe` step does).
    async fn set_boot_device(&self, boot: BootOverride) -> Result<(), BmcError>;

    /// Reads the current boot override. No side effect.
    async fn boot_device(&self) -> Result<BootSetting, BmcError>;

    /// Lists firmware components and versions. No side effect. IPMI reports the BMC's own
    /// firmware (Get Device ID) only.
    async fn firmware_inventory(&self) -> Result<Vec<FirmwareComponent>, BmcError>;

    /// Applies a firmware update and follows it to the end (Redfish SimpleUpdate + task
    /// monitoring, bounded by the task timeout). Not idempotent in general: the caller (the
    /// `firmware_update` step) checks the inventory first. IPMI backends return
    /// [`BmcError::Unsupported`].
    async fn firmware_update(
        &self,
        update: &FirmwareUpdate,
    ) -> Result<FirmwareUpdateOutcome, BmcError>;
}

/// Polls `status` every `interval` until it returns `wanted` or `timeout` passes.
pub(crate) async fn wait_for_power<F, Fut>(
    bmc: &str,
    wanted: PowerState,
    timeout: Duration,
    interval: Duration,
    mut status: F,
) -> Result<(), BmcError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<PowerState, BmcError>>,
{
    let start = Instant::now();
    loop {
        let now = status().await?;
        if now == wanted {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(BmcError::NotConfirmed {
                bmc: bmc.to_owned(),
                wanted,
                last: now,
                after: start.elapsed(),
            });
        }
        tokio::time::sleep(interval.min(timeout.saturating_sub(start.elapsed()))).await;
    }
}

/// Soft off shared by all backends: `request` sends the graceful request once.
pub(crate) async fn soft_off_then_hard<B, R, Fut>(
    bmc: &B,
    grace: Duration,
    interval: Duration,
    request: R,
) -> Result<SoftOffOutcome, BmcError>
where
    B: Bmc + ?Sized,
    R: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), BmcError>>,
{
    if bmc.power_status().await? == PowerState::Off {
        return Ok(SoftOffOutcome::AlreadyOff);
    }
    let name = bmc.describe();
    match request().await {
        Ok(()) => {}
        // The BMC understood and refused (no ACPI soft off on this model): waiting cannot
        // help, and the caller asked for the machine to end up off.
        Err(e @ (BmcError::Completion { .. } | BmcError::Unsupported { .. })) => {
            tracing::warn!(bmc = %name, error = %e, "graceful shutdown refused; forcing off");
            bmc.power_off().await?;
            return Ok(SoftOffOutcome::Forced);
        }
        Err(e) => return Err(e),
    }
    match wait_for_power(&name, PowerState::Off, grace, interval, || {
        bmc.power_status()
    })
    .await
    {
        Ok(()) => Ok(SoftOffOutcome::Graceful),
        Err(BmcError::NotConfirmed { .. }) => {
            tracing::warn!(bmc = %name, ?grace, "graceful shutdown did not finish; forcing off");
            bmc.power_off().await?;
            Ok(SoftOffOutcome::Forced)
        }
        Err(e) => Err(e),
    }
}
