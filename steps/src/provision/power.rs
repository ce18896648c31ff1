//! Power and boot-device actions. Each confirms the state it asked for before it
//! succeeds, so a repeat after a crash finds the work done and only confirms it again.

use std::sync::Arc;

use async_trait::async_trait;
use lariat_bmc::{BootDevice, BootMode, BootOverride, BootPersistence, PowerState};
use lariat_engine::{Action, Output, StepContext, StepError};
use lariat_workflows::design::{self, ResolvedHost};
use serde_json::{Value, json};

use super::{Provisioning, bmc_error};

/// `power_off`: hard off, confirmed.
pub struct PowerOff(pub Arc<Provisioning>);

#[async_trait]
impl Action for PowerOff {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        let host = self.0.host(&ctx).await?;
        let bmc = self.0.bmc(&host)?;
        let was = bmc
            .power_status()
            .await
            .map_err(|e| bmc_error(&host.name, e))?;
        bmc.power_off()
            .await
            .map_err(|e| bmc_error(&host.name, e))?;
        Ok(Output::done(
            json!({"host": host.name, "power": "off", "was": was, "bmc": bmc.describe()}),
        ))
    }
}

/// `power_status`: reads the power and changes nothing (the background power poll). A BMC
/// that does not answer, or a host with no usable BMC, is an observation too (`power`
/// null, `unreachable` saying why): a poll over thousands of hosts must not stop at the
/// first dead BMC, nor wait for an operator.
pub struct PowerStatus(pub Arc<Provisioning>);

#[async_trait]
impl Action for PowerStatus {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        let host = self.0.host(&ctx).await?;
        let bmc = match self.0.bmc(&host) {
            Ok(b) => b,
            Err(e) => {
                return Ok(Output::done(
                    json!({"host": host.name, "power": null, "unreachable": e.to_string()}),
                ));
            }
        };
        Ok(Output::done(match bmc.power_status().await {
            Ok(state) => json!({"host": host.name, "power": state, "bmc": bmc.describe()}),
            Err(e) => json!({
                "host": host.name,
                "power": null,
                "unreachable": bmc_error(&host.name, e).to_string(),
                "bmc": bmc.describe(),
            }),
        }))
    }
}

/// `power_on`, and `boot` (the same action, named for what it means in a provision: the
/// host boots from what `set_pxe` chose): on, confirmed. Its compensation powers the host
/// off again.
pub struct PowerOn(pub Arc<Provisioning>);

#[async_trait]
impl Action for PowerOn {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        power_on(&self.0, &ctx).await
    }

    fn compensates(&self) -> bool {
        true
    }

    async fn compensate(&self, ctx: StepContext) -> Result<Value, StepError> {
        undo_power_on(&self.0, &ctx).await
    }
}

async fn power_on(p: &Provisioning, ctx: &StepContext) -> Result<Output, StepError> {
    let host = p.host(ctx).await?;
    let bmc = p.bmc(&host)?;
    let was = bmc
        .power_status()
        .await
        .map_err(|e| bmc_error(&host.name, e))?;
    bmc.power_on().await.map_err(|e| bmc_error(&host.name, e))?;
    Ok(Output::done(
        json!({"host": host.name, "power": "on", "was": was, "bmc": bmc.describe()}),
    ))
}

async fn undo_power_on(p: &Provisioning, ctx: &StepContext) -> Result<Value, StepError> {
    let host = p.host(ctx).await?;
    let bmc = p.bmc(&host)?;
    bmc.power_off()
        .await
        .map_err(|e| bmc_error(&host.name, e))?;
    Ok(json!({"host": host.name, "power": "off"}))
}

/// `power_cycle`: off, confirm off, on, confirm on (never a raw BMC cycle, which is not
/// safe to repeat).
pub struct PowerCycle(pub Arc<Provisioning>);

#[async_trait]
impl Action for PowerCycle {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        let host = self.0.host(&ctx).await?;
        let bmc = self.0.bmc(&host)?;
        bmc.power_cycle()
            .await
            .map_err(|e| bmc_error(&host.name, e))?;
        Ok(Output::done(
            json!({"host": host.name, "power": "on", "cycled": true}),
        ))
    }
}

/// `set_pxe`: network boot on the next boot (or every boot with `persistent: true`), in
/// the host's firmware mode, confirmed by reading it back. Its compensation (given in
/// the provision workflow) sets the boot device back to disk.
pub struct SetPxe(pub Arc<Provisioning>);

#[async_trait]
impl Action for SetPxe {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        let host = self.0.host(&ctx).await?;
        let boot = BootOverride {
            device: BootDevice::Pxe,
            persistence: persistence(&ctx.input)?,
            mode: mode(&host),
        };
        set_and_confirm(&self.0, &host, boot)
            .await
            .map(Output::Done)
    }
}

/// `set_boot_device`: `input.device` (pxe | disk | bios), `input.persistent`, confirmed.
pub struct SetBootDevice(pub Arc<Provisioning>);

#[async_trait]
impl Action for SetBootDevice {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        let host = self.0.host(&ctx).await?;
        let device = match ctx.input.get("device").and_then(Value::as_str) {
            Some("pxe") => BootDevice::Pxe,
            Some("disk") => BootDevice::Disk,
            Some("bios") => BootDevice::Bios,
            other => {
                return Err(StepError::fatal(
                    "bad_input",
                    format!("input.device must be pxe, disk or bios, got {other:?}"),
                ));
            }
        };
        let boot = BootOverride {
            device,
            persistence: persistence(&ctx.input)?,
            mode: mode(&host),
        };
        set_and_confirm(&self.0, &host, boot)
            .await
            .map(Output::Done)
    }
}

fn persistence(input: &Value) -> Result<BootPersistence, StepError> {
    match input.get("persistent") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(BootPersistence::Once),
        Some(Value::Bool(true)) => Ok(BootPersistence::Persistent),
        Some(other) => Err(StepError::fatal(
            "bad_input",
            format!("input.persistent must be true or false, got {other}"),
        )),
    }
}

/// The firmware mode the override asks for: the hardware profile's, UEFI when unknown.
fn mode(host: &ResolvedHost) -> BootMode {
    match host.boot_mode {
        Some(design::BootMode::Bios) => BootMode::Legacy,
        _ => BootMode::Uefi,
    }
}

/// Sets the override and reads it back. Only the device is compared: BMCs differ in
/// what they report of persistence and mode (sushy's fake driver always says
/// Continuous, ipmi_sim reports the device alone). Another device, or none, is a
/// retryable mismatch.
pub(super) async fn set_and_confirm(
    p: &Provisioning,
    host: &ResolvedHost,
    boot: BootOverride,
) -> Result<Value, StepError> {
    let bmc = p.bmc(host)?;
    bmc.set_boot_device(boot)
        .await
        .map_err(|e| bmc_error(&host.name, e))?;
    let now = bmc
        .boot_device()
        .await
        .map_err(|e| bmc_error(&host.name, e))?;
    if now.device != Some(boot.device) {
        return Err(StepError::retryable(
            "bmc_not_confirmed",
            format!(
                "host '{}': asked {} for boot device {:?}, it reports {}",
                host.name,
                bmc.describe(),
                boot.device,
                now.raw
            ),
        ));
    }
    Ok(json!({
        "host": host.name,
        "boot": boot,
        "reported": now.raw,
        "bmc": bmc.describe(),
    }))
}

/// Sets PXE for the next boot and power-cycles: how a host that never called back is
/// given another chance.
pub(super) async fn pxe_and_cycle(p: &Provisioning, host: &ResolvedHost) -> Result<(), StepError> {
    let boot = BootOverride {
        device: BootDevice::Pxe,
        persistence: BootPersistence::Once,
        mode: mode(host),
    };
    set_and_confirm(p, host, boot).await?;
    let bmc = p.bmc(host)?;
    if bmc
        .power_status()
        .await
        .map_err(|e| bmc_error(&host.name, e))?
        == PowerState::Off
    {
        bmc.power_on().await
    } else {
        bmc.power_cycle().await
    }
    .map_err(|e| bmc_error(&host.name, e))
}
