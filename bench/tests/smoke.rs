//! `lariat-bench engine` keeps working and prints every figure the engine issue asks for.
//! A tiny run: the figures themselves are only printed, never judged here.

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_engine_prints_every_figure() {
    let out = Command::new(env!("CARGO_BIN_EXE_lariat-bench"))
        .args([
            "engine",
            "--runs",
            "60",
            "--concurrency",
            "8",
            "--latency-runs",
            "5",
            "--inflight",
            "40",
            "--json",
        ])
        .env("LARIAT_LOG", "warn")
        .output()
        .expect("the lariat-bench binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"));
    for k in [
        "workflows_per_s",
        "transitions_per_s",
        "p50_run_ms",
        "p99_run_ms",
        "peak_rss_mb",
        "db_bytes_per_step",
        "resume_ms",
    ] {
        let x = v[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {v}"));
        assert!(x > 0.0 && x.is_finite(), "{k} = {x}");
    }
    assert!(v["p50_run_ms"].as_f64() <= v["p99_run_ms"].as_f64());
    assert_eq!(v["phases"]["throughput"]["failed_runs"], 0);
    assert_eq!(
        v["resumed_runs"], 40,
        "every run in flight at the kill was resumed: {v}"
    );
    assert_eq!(v["inflight_at_kill"], 40);
}
