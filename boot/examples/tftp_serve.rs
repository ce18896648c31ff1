//! A standalone read-only TFTP server on `lariat_boot::tftp`, for benchmarks and manual
//! tests. Prints `listening <addr>` on stdout once bound; stops on SIGINT or SIGTERM.
//!
//! `cargo run --release -p lariat-boot --example tftp_serve -- --root DIR [--ipxe-dir DIR]
//!  [--bind ADDR:PORT] [--max-transfers N] [--timeout-ms MS] [--retries N]`
//!
//! `TFTP_THREADS=N` sets the tokio worker threads (1 = current-thread runtime); the
//! default is tokio's (one per core). Transfers run on their own threads either way.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use lariat_boot::tftp::{TftpConfig, serve};

fn parse_args() -> Result<TftpConfig, String> {
    let mut config = TftpConfig {
        ipxe_dir: None,
        ..TftpConfig::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--root" => config.root = Some(PathBuf::from(value()?)),
            "--ipxe-dir" => config.ipxe_dir = Some(PathBuf::from(value()?)),
            "--bind" => config.bind = value()?.parse().map_err(|e| format!("--bind: {e}"))?,
            "--max-transfers" => {
                config.max_transfers = value()?
                    .parse()
                    .map_err(|e| format!("--max-transfers: {e}"))?;
            }
            "--retries" => {
                config.retries = value()?.parse().map_err(|e| format!("--retries: {e}"))?
            }
            "--timeout-ms" => {
                let ms: u64 = value()?.parse().map_err(|e| format!("--timeout-ms: {e}"))?;
                config.timeout = Duration::from_millis(ms);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(config)
}

fn main() -> ExitCode {
    let threads: usize = std::env::var("TFTP_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            b.worker_threads(threads);
        }
        b.enable_all().build()
    };
    match runtime {
        Ok(rt) => rt.block_on(run()),
        Err(e) => {
            eprintln!("tftp_serve: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let config = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tftp_serve: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = async {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    match serve(config, shutdown).await {
        Ok(server) => {
            println!("listening {}", server.local_addr());
            let _ = std::io::stdout().flush();
            server.stopped().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tftp_serve: {e}");
            ExitCode::FAILURE
        }
    }
}
