//! What the benchmarks share: a work folder, the peak memory of a process, rounding.

use std::path::{Path, PathBuf};

use anyhow::Context;
use uuid::Uuid;

/// Peak resident set size of this process, in MB (kB / 1000, as the peer scripts count).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1000.0)
        .unwrap_or(0.0)
}

/// Where a benchmark keeps its databases: the folder the operator named, or a temporary
/// one that is removed when the benchmark ends, however it ends.
pub struct WorkDir {
    path: PathBuf,
    temporary: bool,
}

impl WorkDir {
    pub fn new(named: Option<&Path>, prefix: &str) -> anyhow::Result<WorkDir> {
        let (path, temporary) = match named {
            Some(d) => (d.to_path_buf(), false),
            None => (
                std::env::temp_dir().join(format!("{prefix}-{}", Uuid::now_v7())),
                true,
            ),
        };
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(WorkDir { path, temporary })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// `x` rounded to `digits` decimals, for printing.
pub fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}
