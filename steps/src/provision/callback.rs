//! `await_callback`: wait for the node's `POST /v1/state`.

use std::sync::Arc;

use async_trait::async_trait;
use lariat_engine::{Action, Output, StepContext, StepError};

use super::Provisioning;
use super::power::pxe_and_cycle;

/// Waits for the host's callback (the boot service signals the step with the node's
/// state and facts), up to `input.timeout`.
///
/// The first attempt only waits: `boot` has just powered the host on. A later attempt
/// means the host did not call back in time (or the wait was cut short), so it sets PXE
/// for the next boot and power-cycles the host before waiting again; with
/// `retry: {retry_on: [timeout]}` that is the provision workflow's answer to a host that
/// hung in firmware or in its ramdisk.
pub struct AwaitCallback(pub Arc<Provisioning>);

#[async_trait]
impl Action for AwaitCallback {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        let timeout = crate::duration(&ctx.input, "timeout")?;
        let host = self.0.host(&ctx).await?;
        if ctx.attempt > 1 {
            tracing::info!(
                host = %host.name,
                attempt = ctx.attempt,
                "no callback yet: setting PXE and power-cycling before waiting again"
            );
            pxe_and_cycle(&self.0, &host).await?;
        }
        Ok(Output::AwaitSignal { timeout })
    }
}
