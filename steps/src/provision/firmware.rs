//! `firmware_update`: Redfish SimpleUpdate, followed to the end.

use std::sync::Arc;

use async_trait::async_trait;
use lariat_bmc::{Bmc, FirmwareComponent, FirmwareUpdate as Update, FirmwareUpdateOutcome};
use lariat_engine::{Action, Output, StepContext, StepError};
use lariat_workflows::design::ResolvedHost;
use serde_json::{Value, json};

use super::{Provisioning, bmc_error};

/// Applies `input.image_url` to the host through its BMC (to `input.targets`, Redfish
/// resource paths, when given) and follows the update task.
///
/// Firmware updates are not idempotent on the BMC side, so the action reads the inventory
/// first: when `input.component` is already at the version the hardware profile expects,
/// it succeeds without sending anything (a repeat after a crash lands here). Gate the step
/// on a maintenance window in the workflow; the engine holds it outside one.
pub struct FirmwareUpdate(pub Arc<Provisioning>);

#[async_trait]
impl Action for FirmwareUpdate {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        let host = self.0.host(&ctx).await?;
        let image_uri = image_url(&ctx.input)?;
        let component = ctx.input.get("component").and_then(Value::as_str);
        let bmc = self.0.bmc(&host)?;
        if let Some(c) = component {
            let expected = expected_version(&host, c);
            // A BMC without an inventory (sushy's fake driver, some older Redfish
            // services) cannot tell: update anyway rather than refuse.
            let inventory = match bmc.firmware_inventory().await {
                Ok(inv) => inv,
                Err(lariat_bmc::BmcError::Unsupported { .. }) => Vec::new(),
                Err(e) => return Err(bmc_error(&host.name, e)),
            };
            let current = component_in(&inventory, c);
            if let (Some(want), Some(now)) = (expected, current)
                && &now.version == want
            {
                return Ok(at_version(&host.name, c, &now.version));
            }
        }
        let outcome = send_and_follow(&*bmc, &host.name, &image_uri, &ctx).await?;
        Ok(Output::done(json!({
            "host": host.name,
            "image_url": image_uri,
            "task": outcome.task,
            "state": outcome.state,
            "messages": outcome.messages,
        })))
    }
}

/// `firmware_upgrade`: the whole upgrade of one host, so that a rolling limit
/// (`max_per: {rack: 1}`) holds one host per rack from the update to the check: the
/// image through SimpleUpdate, the task followed, a power cycle when the BMC staged it
/// for the next reset, and the inventory read again until it shows the version expected.
///
/// The version expected is `input.version`, else the hardware profile's `firmware` entry
/// for `input.component`. Safe to repeat: a host at that version is skipped without
/// anything sent, and a repeat after a crash between the update and the power cycle
/// sends the update again (BMCs accept a staged image twice) and cycles.
pub struct FirmwareUpgrade(pub Arc<Provisioning>);

#[async_trait]
impl Action for FirmwareUpgrade {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        let host = self.0.host(&ctx).await?;
        let text = |k: &str| {
            ctx.input
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let image_uri = image_url(&ctx.input)?;
        let component = text("component")
            .ok_or_else(|| StepError::fatal("bad_input", "input.component is required"))?;
        let want = match text("version") {
            Some(v) => v,
            None => expected_version(&host, &component)
                .cloned()
                .ok_or_else(|| {
                    StepError::fatal(
                        "bad_input",
                        format!(
                            "host '{}': no version expected for component '{component}': set input.version, or firmware.{component} in the hardware profile",
                            host.name
                        ),
                    )
                })?,
        };
        let bmc = self.0.bmc(&host)?;
        let version_now = || async {
            let inv = bmc
                .firmware_inventory()
                .await
                .map_err(|e| bmc_error(&host.name, e))?;
            component_in(&inv, &component)
                .map(|f| f.version.clone())
                .ok_or_else(|| {
                    StepError::fatal(
                        "unknown_component",
                        format!(
                            "host '{}': the BMC's firmware inventory has no component '{component}' (it has {})",
                            host.name,
                            inv.iter().map(|f| f.id.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    )
                })
        };
        let before = version_now().await?;
        if before == want {
            return Ok(at_version(&host.name, &component, &before));
        }
        let outcome = send_and_follow(&*bmc, &host.name, &image_uri, &ctx).await?;
        let mut cycled = false;
        let mut after = version_now().await?;
        if after != want {
            // Staged for the next reset (Redfish OperationApplyTime OnReset).
            bmc.power_cycle()
                .await
                .map_err(|e| bmc_error(&host.name, e))?;
            cycled = true;
            after = version_now().await?;
        }
        if after != want {
            return Err(StepError::fatal(
                "firmware_not_applied",
                format!(
                    "host '{}': {component} is at {after} after the update{} (expected {want}; task {} ended {})",
                    host.name,
                    if cycled { " and a power cycle" } else { "" },
                    outcome.task.as_deref().unwrap_or("-"),
                    outcome.state,
                ),
            ));
        }
        Ok(Output::done(json!({
            "host": host.name, "component": component, "from": before, "version": after,
            "image_url": image_uri, "task": outcome.task, "power_cycled": cycled,
            "messages": outcome.messages,
        })))
    }
}

fn image_url(input: &Value) -> Result<String, StepError> {
    input
        .get("image_url")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| StepError::fatal("bad_input", "input.image_url is required"))
}

/// The version the host's hardware profile expects of `component`.
fn expected_version<'a>(host: &'a ResolvedHost, component: &str) -> Option<&'a String> {
    host.firmware
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(component))
        .map(|(_, v)| v)
}

/// `component` in a BMC's inventory, by id or by name.
fn component_in<'a>(
    inventory: &'a [FirmwareComponent],
    component: &str,
) -> Option<&'a FirmwareComponent> {
    inventory
        .iter()
        .find(|f| f.id.eq_ignore_ascii_case(component) || f.name.eq_ignore_ascii_case(component))
}

/// `input.targets`: the Redfish resources to update. Redfish makes them optional; some
/// services (sushy) insist on them.
fn update_targets(input: &Value) -> Result<Vec<String>, StepError> {
    match input.get("targets") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => Ok(a
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect()),
        Some(other) => Err(StepError::fatal(
            "bad_input",
            format!("input.targets must be a list of Redfish resource paths, got {other}"),
        )),
    }
}

/// What an action answers for a host already at the version: nothing was sent.
fn at_version(host: &str, component: &str, version: &str) -> Output {
    Output::done(json!({
        "host": host, "component": component, "version": version,
        "skipped": true, "reason": "already at the expected version",
    }))
}

/// Sends `image_uri` (to `input.targets`) and follows the update's task, until it ends
/// or the attempt is cancelled.
async fn send_and_follow(
    bmc: &dyn Bmc,
    host: &str,
    image_uri: &str,
    ctx: &StepContext,
) -> Result<FirmwareUpdateOutcome, StepError> {
    let update = Update {
        image_uri: image_uri.to_string(),
        transfer_protocol: None,
        targets: update_targets(&ctx.input)?,
    };
    tokio::select! {
        r = bmc.firmware_update(&update) => r.map_err(|e| bmc_error(host, e)),
        _ = ctx.cancel.cancelled() => Err(StepError::retryable(
            "cancelled",
            format!("host '{host}': stopped following the update task"),
        )),
    }
}
