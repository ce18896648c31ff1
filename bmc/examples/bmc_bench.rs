//! Load generator for bench/bmc.sh: power status, off and on against many IPMI BMCs at once
//! with the native driver, or the count of sessions left open on them.
//!
//! `bmc_bench --host 127.0.0.1 --ports 9500-9549 [--sessions | --repeat N]`; the password
//! is read from the IPMI_PASSWORD environment variable (as ipmitool -E does). Prints one
//! JSON object. `--repeat N` (bench/drill_bmc.sh) asks each BMC its power status N times
//! in turn and reports what went wrong: errors by kind, the first error's words, how long
//! an operation took to fail.

use std::time::{Duration, Instant};

use lariat_bmc::ipmi::IpmiLan;
use lariat_bmc::{Bmc, BmcPool, CredentialRef, IpmiConfig, Timing};

fn usage() -> ! {
    eprintln!(
        "usage: bmc_bench --host ADDR --ports FIRST-LAST [--user NAME] [--sessions | --repeat N]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut host = "127.0.0.1".to_owned();
    let mut ports = None;
    let mut user = "admin".to_owned();
    let mut sessions = false;
    let mut repeat = None;
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
            "--repeat" => {
                repeat = Some(
                    args.next()
                        .and_then(|n| n.parse::<u32>().ok())
                        .unwrap_or_else(|| usage()),
                )
            }
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
    if let Some(n) = repeat {
        return repeated(&bmcs, n).await;
    }
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
    let pct = |p: f64| percentile(&latencies, p);
    println!(
        r#"{{"bmcs":{},"ops":{},"errors":{errors},"wall_s":{wall:.3},"ops_per_s":{:.1},"p50_ms":{:.1},"p99_ms":{:.1}}}"#,
        bmcs.len(),
        latencies.len(),
        latencies.len() as f64 / wall,
        pct(0.50),
        pct(0.99)
    );
}

/// `n` power status reads of each BMC in turn, all BMCs at once: what failed and how.
async fn repeated(bmcs: &[std::sync::Arc<IpmiLan>], n: u32) {
    let start = Instant::now();
    let tasks: Vec<_> = bmcs
        .iter()
        .map(|bmc| {
            let bmc = std::sync::Arc::clone(bmc);
            tokio::spawn(async move {
                let mut out = Vec::new();
                for _ in 0..n {
                    let t = Instant::now();
                    let r = bmc.power_status().await.map(|_| ());
                    out.push((t.elapsed(), r));
                }
                out
            })
        })
        .collect();
    let (mut ok_ms, mut failed_ms) = (Vec::new(), Vec::new());
    let mut kinds = std::collections::BTreeMap::<&str, u32>::new();
    let mut first_error = None;
    for t in tasks {
        for (elapsed, r) in t.await.unwrap_or_default() {
            let ms = elapsed.as_secs_f64() * 1000.0;
            match r {
                Ok(()) => ok_ms.push(ms),
                Err(e) => {
                    failed_ms.push(ms);
                    let kind = match &e {
                        lariat_bmc::BmcError::Auth { .. } => "auth",
                        lariat_bmc::BmcError::Timeout { .. } => "timeout",
                        lariat_bmc::BmcError::Unreachable { .. } => "unreachable",
                        lariat_bmc::BmcError::Protocol { .. } => "protocol",
                        _ => "other",
                    };
                    *kinds.entry(kind).or_default() += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
    ok_ms.sort_by(f64::total_cmp);
    failed_ms.sort_by(f64::total_cmp);
    let pct = |v: &[f64], p: f64| (percentile(v, p) * 10.0).round() / 10.0;
    let out = serde_json::json!({
        "bmcs": bmcs.len(),
        "ops": ok_ms.len() + failed_ms.len(),
        "ok": ok_ms.len(),
        "failed": failed_ms.len(),
        "errors_by_kind": kinds,
        "first_error": first_error,
        "ok_p50_ms": pct(&ok_ms, 0.5),
        "ok_p99_ms": pct(&ok_ms, 0.99),
        "time_to_error_p50_ms": pct(&failed_ms, 0.5),
        "time_to_error_max_ms": pct(&failed_ms, 1.0),
        "wall_s": (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
    });
    println!("{out}");
}

/// The `p` quantile of sorted `v` (nearest rank), 0 when empty.
fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}
