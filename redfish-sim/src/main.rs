//! `lariat-redfish-sim --config bmcs.json`: serves the BMCs the file lists and prints one
//! JSON line per BMC (`{"name", "url"}`) once all listen, so scripts learn the ports.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use lariat_redfish_sim::{SimConfig, start};

#[derive(Parser)]
#[command(
    about = "A Redfish BMC simulator: power, boot override, firmware inventory, SimpleUpdate tasks"
)]
struct Args {
    /// JSON file: {"bmcs": [{"name", "listen", "username", "password", "firmware",
    /// "apply_time", "task_duration", "reboot_mid_update", "powered_on", "fail_update"}]}.
    #[arg(long)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let config: SimConfig = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a simulator configuration", args.config.display()))?;
    let bmcs = start(config).await?;
    for b in &bmcs {
        println!("{}", serde_json::json!({"name": b.name, "url": b.url()}));
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
