//! The operator's commands: the same binary talking to a server's REST API.
//! (Being built for the API issue.)

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ClientCmd {}

pub async fn run(cmd: ClientCmd) -> anyhow::Result<i32> {
    match cmd {}
}
