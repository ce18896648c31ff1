//! Load generator for bench/bmc.sh: power status, off and on against many IPMI BMCs at once
//! with the native driver, or the count of sessions left open on them.
//!
//! `bmc_bench --host 127.0.0.1 --ports 9500-9549 [--sessions]`; the password is read from
//! the IPMI_PASSWORD environment variable (as ipmitool -E does). Prints one JSON object.

use std::time::{Duration, Instant};

use lariat_bmc::ipmi::IpmiLan;
use lariat_bmc::{Bmc, BmcPool, CredentialRef, IpmiConfig, Timing};

fn usage() -> ! {
    eprintln!("usage: bmc_bench --host ADDR --ports FIRST-LAST [--user NAME] [--sessions]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut host = "127.0.0.1".to_owned();
    let mut ports = None;
    let mut user = "admin".to_owned();
    let mut sessions = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--host" => host = args.next().unwrap_or_else(|| usage()),
            "--user" => user = args.next().unwrap_or_else(|| usage()),
            "--ports" => {
                let spec = args.next().unwrap_or_else(|| usage());
                let (a, b) = spec.split_once('-').unwrap_or_else(|| usage());
                let first: u16 = a.parse().unwrap_or_else(|_| usage());
                let last: u16 = b.parse().unwrap_or_else(|_| usage());
                ports = Some(first..=last);
            }
            "--sessions" => sessions = true,
            _ => usage(),
        }
    }
    let ports = ports.unwrap_or_else(|| usage());
    let pool = BmcPool::new(64);
    let bmcs: Vec<IpmiLan> = ports
        .map(|port| {
            IpmiLan::new(
                IpmiConfig {
                    address: host.clone(),
                    port,
                    username: user.clone(),
                    password: CredentialRef::Env("IPMI_PASSWORD".to_owned()),
                    cipher_suite: 3,
                    timing: Timing {
                        command_timeout: Duration::from_secs(1),
                        retries: 3,
                        confirm_timeout: Duration::from_secs(10),
                        poll_interval: Duration::from_millis(100),
                        task_timeout: Duration::from_secs(10),
                    },
                },
                pool.clone(),
            )
            .unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(1)
            })
        })
        .collect();

    if sessions {
        let mut open = 0u64;
        let mut errors = 0u64;
        for bmc in &bmcs {
            match bmc.open_sessions().await {
                Ok(n) => open += u64::from(n),
                Err(e) => {
                    eprintln!("{}: {e}", bmc.describe());
                    errors += 1;
                }
            }
        }
        println!(r#"{{"open_sessions":{open},"errors":{errors}}}"#);
        return;
    }

    let bmcs: Vec<std::sync::Arc<IpmiLan>> = bmcs.into_iter().map(std::sync::Arc::new).collect();
    let start = Instant::now();
    let tasks: Vec<_> = bmcs
        .iter()
        .map(|bmc| {
            let bmc = std::sync::Arc::clone(bmc);
            tokio::spawn(async move {
                let mut out = Vec::new();
                for op in ["status", "off", "on"] {
                    let t = Instant::now();
                    let result = match op {
                        "status" => bmc.power_status().await.map(|_| ()),
                        "off" => bmc.power_off().await,
                        _ => bmc.power_on().await,
                    };
                    if let Err(e) = &result {
                        eprintln!("{} {op}: {e}", bmc.describe());
                    }
                    out.push((t.elapsed(), result.is_ok()));
                }
                out
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        for (elapsed, ok) in t.await.unwrap_or_default() {
            latencies.push(elapsed.as_secs_f64() * 1000.0);
            if !ok {
                errors += 1;
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if latencies.is_empty() {
            0.0
        } else {
            let i = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1;
            latencies[i]
        }
    };
    println!(
        r#"{{"bmcs":{},"ops":{},"errors":{errors},"wall_s":{wall:.3},"ops_per_s":{:.1},"p50_ms":{:.1},"p99_ms":{:.1}}}"#,
        bmcs.len(),
        latencies.len(),
        latencies.len() as f64 / wall,
        pct(0.50),
        pct(0.99)
    );
}
