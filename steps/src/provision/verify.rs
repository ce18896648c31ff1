//! `verify`: what the node reported against what the design says it is.

use std::sync::Arc;

use async_trait::async_trait;
use lariat_engine::{Action, Output, StepContext, StepError};
use lariat_workflows::design::{ResolvedHost, check_facts};
use serde_json::{Value, json};

use super::{Provisioning, bmc_error};

/// Compares the facts of the host's callback (the output of the step named by
/// `input.from`, `await_callback` by default) with the design:
/// - every MAC the design gives the host is among the node's;
/// - the serial number, when the design gives one;
/// - each disk the design names by device path is there, at least as large as declared
///   (less 7 %: vendors sell decimal gigabytes, the design writes binary ones);
/// - the memory of the hardware profile, less max(5 %, 128 MiB) that firmware and the
///   kernel keep for themselves.
///
/// With `input.firmware: true` it reads the firmware inventory from the BMC instead and
/// compares `input.component` (or every component the hardware profile lists) with the
/// expected versions. Any mismatch fails the step, listing every mismatch; no retry can
/// change a machine's hardware.
pub struct Verify(pub Arc<Provisioning>);

#[async_trait]
impl Action for Verify {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        let host = self.0.host(&ctx).await?;
        if ctx.input.get("firmware") == Some(&Value::Bool(true)) {
            return self.firmware(&host, &ctx).await;
        }
        let from = ctx
            .input
            .get("from")
            .and_then(Value::as_str)
            .unwrap_or("await_callback");
        let facts = callback_facts(&ctx, from, &host.name)?;
        let (checked, problems) = check_facts(&host, facts);
        if !problems.is_empty() {
            return Err(StepError::fatal(
                "verify",
                format!("host '{}': {}", host.name, problems.join("; ")),
            ));
        }
        Ok(Output::done(json!({"host": host.name, "checked": checked})))
    }
}

impl Verify {
    async fn firmware(&self, host: &ResolvedHost, ctx: &StepContext) -> Result<Output, StepError> {
        let bmc = self.0.bmc(host)?;
        let inventory = bmc
            .firmware_inventory()
            .await
            .map_err(|e| bmc_error(&host.name, e))?;
        let wanted: Vec<(&String, &String)> =
            match ctx.input.get("component").and_then(Value::as_str) {
                Some(c) => host
                    .firmware
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(c))
                    .collect(),
                None => host.firmware.iter().collect(),
            };
        let mut problems = Vec::new();
        for (component, version) in &wanted {
            match inventory.iter().find(|f| {
                f.id.eq_ignore_ascii_case(component) || f.name.eq_ignore_ascii_case(component)
            }) {
                Some(f) if &f.version == *version => {}
                Some(f) => problems.push(format!(
                    "firmware {component} is {}, the hardware profile expects {version}",
                    f.version
                )),
                None => problems.push(format!("the BMC lists no firmware component '{component}'")),
            }
        }
        if !problems.is_empty() {
            return Err(StepError::fatal(
                "verify",
                format!("host '{}': {}", host.name, problems.join("; ")),
            ));
        }
        Ok(Output::done(
            json!({"host": host.name, "firmware": inventory, "checked": wanted.len()}),
        ))
    }
}

/// The `facts` object of this host's callback among the outputs of step `from`.
fn callback_facts<'a>(
    ctx: &'a StepContext,
    from: &str,
    host: &str,
) -> Result<&'a Value, StepError> {
    let out = ctx.needs.get(from).ok_or_else(|| {
        StepError::fatal(
            "bad_input",
            format!("verify reads the facts of step '{from}', which this step does not need"),
        )
    })?;
    let payload = match out {
        // A fanned-out step's output lists its items' outputs.
        Value::Array(items) => items.iter().find(|i| i["host"] == host),
        one if one["host"] == host => Some(one),
        _ => None,
    }
    .ok_or_else(|| {
        StepError::fatal(
            "no_callback",
            format!("step '{from}' has no callback from host '{host}'"),
        )
    })?;
    Ok(&payload["facts"])
}
