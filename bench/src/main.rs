//! `lariat-bench`: benchmarks that print their figures as JSON, never judge them. Kept out
//! of the product binary; `bench/*.sh` beside this crate measure the boot services and
//! BMC drivers against real peers.

mod api;
mod drill;
mod engine;
mod pg_commit;
mod sites;
mod ui;
mod work;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lariat-bench",
    version,
    about = "Benchmarks that print their figures as JSON"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The engine on the provision-7 workload: throughput, latency, memory, resume.
    Engine(engine::EngineBench),
    /// REST read and submit rates while the engine runs workflows.
    Api(api::ApiBench),
    /// Many site agents replicating to one central node: apply rate, lag, catch-up.
    Sites(sites::SitesBench),
    /// Fault drill: SIGKILL the server again and again with runs in flight through REST.
    KillDrill(drill::KillDrill),
    /// Fault drill: the disk fills up under the server with runs in flight.
    DiskDrill(drill::DiskDrill),
    /// The web UI: the runs list over 100,000 runs, a run page with 1,000 items in Chromium.
    Ui(ui::UiBench),
    /// The engine's group commit reduced to its rows: SQLite against two PostgreSQL forms.
    PgCommit(pg_commit::PgCommitBench),
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LARIAT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
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
    let res = rt.block_on(async move {
        match cli.cmd {
            Cmd::Engine(b) => engine::run(b).await,
            Cmd::Api(a) => api::run(a).await,
            Cmd::Sites(s) => sites::run(s).await,
            Cmd::KillDrill(d) => drill::kill(d).await,
            Cmd::DiskDrill(d) => drill::disk(d).await,
            Cmd::Ui(u) => ui::run(u).await,
            Cmd::PgCommit(p) => pg_commit::run(p).await,
        }
    });
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
