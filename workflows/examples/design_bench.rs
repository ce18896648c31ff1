//! Times loading (parse + resolve + validate) a generated design and prints one JSON
//! object. The load runs three times; the fastest run's phases are reported, with every
//! run's total, because the machine is shared and single runs are noisy.
//!
//! `cargo run --release -p lariat-workflows --example design_bench [HOSTS PROFILES]`

use lariat_workflows::design;

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU time of this process (user + system) in ms, from /proc/self/stat (100 Hz ticks):
/// less sensitive than wall time to other processes on a shared machine.
fn cpu_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let hosts: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let profiles: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let files = design::generate(hosts, profiles);
    let bytes: usize = files.iter().map(|(_, t)| t.len()).sum();
    let mut runs = Vec::new();
    let cpu_before = cpu_ms();
    let mut best: Option<design::TimedLoad> = None;
    for _ in 0..3 {
        let t = design::load_files_timed(&files);
        let total = t.parse + t.resolve + t.validate;
        runs.push(total.as_millis());
        if best
            .as_ref()
            .is_none_or(|b| total < b.parse + b.resolve + b.validate)
        {
            best = Some(t);
        }
    }
    let cpu_per_load = match (cpu_before, cpu_ms()) {
        (Some(a), Some(b)) => Some((b - a) / 3),
        _ => None,
    };
    let Some(best) = best else { return };
    let report = &best.loaded.report;
    let selected = best.loaded.design.select(&design::NodeFilter {
        labels: [("batch".to_string(), "b3".to_string())].into(),
        ..Default::default()
    });
    println!(
        "{}",
        serde_json::json!({
            "hosts": hosts,
            "profiles": profiles,
            "input_mb": (bytes as f64 / 1e5).round() / 10.0,
            "findings": report.findings.len(),
            "errors": report.errors().count(),
            "parse_ms": best.parse.as_millis(),
            "resolve_ms": best.resolve.as_millis(),
            "validate_ms": best.validate.as_millis(),
            "total_ms": (best.parse + best.resolve + best.validate).as_millis(),
            "runs_total_ms": runs,
            "cpu_ms_per_load": cpu_per_load,
            "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "selected_by_label": selected.len(),
            "peak_rss_mb": peak_rss_mb().map(|m| (m * 10.0).round() / 10.0),
            "target_total_ms": 2000,
        })
    );
    if let Some(f) = report.findings.first() {
        eprintln!(
            "first finding: {}",
            serde_json::to_string(f).unwrap_or_default()
        );
    }
}
