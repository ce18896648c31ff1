//! `lariat`: one binary for the central server, site agents and the operator's command
//! line. `anyhow` lives here, at the edge; crates below use typed errors.

mod agent;
mod cli;
mod logs;
mod server;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lariat",
    version,
    about = "Bare-metal provisioning: durable DAG workflows, site agents, boot services"
)]
struct Cli {
    /// `text` for people, `json` for a log shipper: one object a line, with the run,
    /// step, attempt, host and site of what it is about.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "LARIAT_LOG_FORMAT"
    )]
    log_format: logs::LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the central node: the workflow engine and the REST API.
    Server(server::ServerArgs),
    /// Run a site agent: it provisions its site's hosts and reports to the central node,
    /// and keeps working while cut off from it.
    Agent(agent::AgentArgs),
    #[command(flatten)]
    Client(cli::ClientCmd),
}

fn main() {
    let cli = Cli::parse();
    let mut fixed = serde_json::Map::new();
    match &cli.cmd {
        Cmd::Server(_) => {
            fixed.insert("process".into(), "server".into());
        }
        Cmd::Agent(a) => {
            fixed.insert("process".into(), "agent".into());
            fixed.insert("site".into(), a.site.clone().into());
        }
        Cmd::Client(_) => {}
    }
    logs::init(cli.log_format, fixed);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async move {
        let res = match cli.cmd {
            Cmd::Server(a) => server::run(a).await.map(|_| 0),
            Cmd::Agent(a) => agent::run(a).await.map(|_| 0),
            Cmd::Client(c) => cli::run(c).await,
        };
        match res {
            Ok(code) => code,
            Err(e) => {
                let hint = e
                    .downcast_ref::<lariat_client::ClientError>()
                    .and_then(cli::hint)
                    .unwrap_or_default();
                eprintln!("error: {e:#}{hint}");
                1
            }
        }
    });
    std::process::exit(code);
}
