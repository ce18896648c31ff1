//! `lariat bench api`: REST read and submit rates while the engine is busy.
//! (Being built for the API issue.)

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct ApiBench {}

pub async fn run(_b: ApiBench) -> anyhow::Result<()> {
    anyhow::bail!("lariat bench api is not built yet")
}
