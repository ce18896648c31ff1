//! What the benchmarks share: a work folder, the peak memory of a process, rounding.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
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

/// CPU seconds this process has used, user and system (`/proc/self/stat`, in the
/// kernel's 100 Hz ticks).
pub fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
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

/// The `lariat` binary: `--lariat`, or the one `cargo build` put beside this one.
pub fn lariat_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .context("cannot find this binary")?
            .with_file_name("lariat"),
    };
    if !path.is_file() {
        bail!(
            "no lariat binary at {}: build it first (cargo build --release) or give --lariat",
            path.display()
        );
    }
    Ok(path)
}

/// A token the CLI makes in `db` as an operator would (`args` print `{"token": ...}`).
pub async fn cli_token(exe: &Path, db: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(exe)
        .args(args)
        .arg("--db")
        .arg(db)
        .env("LARIAT_LOG", "warn")
        .output()
        .await
        .with_context(|| format!("cannot run lariat {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "lariat {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("the token as JSON")?;
    v["token"]
        .as_str()
        .map(str::to_string)
        .context("no token printed")
}

/// The server child; killed when dropped.
pub struct ServerChild {
    child: Child,
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ServerChild {
    /// `lariat server` with `args` (and `--listen 127.0.0.1:0`), once it listens.
    pub async fn start(exe: &Path, args: &[&std::ffi::OsStr]) -> anyhow::Result<ServerChild> {
        Self::start_on(exe, "127.0.0.1:0", args).await
    }

    /// `lariat server --listen listen` with `args`, once it listens.
    pub async fn start_on(
        exe: &Path,
        listen: &str,
        args: &[&std::ffi::OsStr],
    ) -> anyhow::Result<ServerChild> {
        let mut child = Command::new(exe)
            .args(["server", "--listen", listen])
            .args(args)
            .env("LARIAT_LOG", "info,audit=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start lariat server")?;
        let stderr = child.stderr.take().context("no stderr from the server")?;
        let mut lines = BufReader::new(stderr).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let deadline = Instant::now() + Duration::from_secs(60);
        let base = loop {
            let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
                .await
                .context("the server did not start listening within 60s")?
                .context("cannot read the server's log")?;
            let Some(line) = line else {
                bail!(
                    "the server exited before listening:\n{}",
                    log.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
                );
            };
            if let Some(url) = listening_url(&line) {
                break url;
            }
            log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        };
        // Keep draining, or a full pipe would stall the server.
        let keep = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                let mut k = keep.lock().unwrap_or_else(|e| e.into_inner());
                if k.len() > 200 {
                    k.remove(0);
                }
                k.push(l);
            }
        });
        Ok(ServerChild { child, base, log })
    }

    /// SIGKILL, and the exit reaped: no shutdown of any kind runs.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child
            .start_kill()
            .context("cannot SIGKILL the server")?;
        self.child.wait().await.context("cannot reap the server")?;
        Ok(())
    }

    /// The server's exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines the server logged.
    pub fn log_tail(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// The server's peak resident set size, in MB.
    pub fn peak_rss_mb(&self) -> Option<f64> {
        let pid = self.child.id()?;
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb: f64 = s
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1000.0)
    }
}

/// The URL in the server's "listening on http://..." log line.
pub fn listening_url(line: &str) -> Option<String> {
    let at = line.find("listening on http://")? + "listening on ".len();
    let url: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '.' | '[' | ']'))
        .collect();
    Some(url)
}
