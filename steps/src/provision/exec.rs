//! `exec`: runs a script of the design repository (`scripts/...`) for a step, in a private
//! working folder that is removed after the attempt.
//!
//! What the script gets:
//! - `params.json`: the step's input (sensitive parameters stay references in it);
//! - the run's typed parameters as `LARIAT_PARAM_<NAME>` (strings as they are, other
//!   types as JSON); a sensitive one is resolved from its `{env}`/`{file}` reference for
//!   this attempt only, written to `secrets/<name>` (mode 0600) and named by
//!   `LARIAT_SECRET_<NAME>_FILE`, never put in the environment;
//! - `LARIAT_IDEMPOTENCY_KEY`, `LARIAT_RUN_ID`, `LARIAT_WORKFLOW`, `LARIAT_STEP`,
//!   `LARIAT_ATTEMPT`, `LARIAT_HOST` (the fan-out item), `LARIAT_TARGETS` (comma
//!   separated), `LARIAT_WORKDIR`, `LARIAT_PARAMS` and `LARIAT_RESULT` (where it may write
//!   its output as JSON); and nothing of the executor's own environment, which holds the
//!   agent's credentials, but a fixed `PATH`, `HOME` (the working folder) and `LANG`.
//!
//! The step's output is `{result, exit_code, stdout, stderr, ...}`: `result` is the JSON
//! of the result file, else stdout when it is JSON, else null. stdout and stderr are
//! kept up to [`OUTPUT_LIMIT`] each (their ends), with every resolved secret replaced by
//! `[secret]` there, in `result` and in an error. A status other than 0 fails the attempt
//! (retryable, as the step's retry policy says) with the end of stderr. The script runs
//! in a process group of its own: cancellation and the step's timeout kill the whole
//! group (TERM, then KILL after [`KILL_GRACE`]), and what the script left running when it
//! exited is killed too.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lariat_engine::params::SecretRef;
use lariat_engine::{Action, Output, StepContext, StepError};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::Provisioning;

/// Most bytes of stdout, and of stderr, kept per attempt: the last ones.
pub const OUTPUT_LIMIT: usize = 64 * 1024;
/// How long a cancelled script's group has between TERM and KILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// Most bytes of stderr an error message carries.
const ERROR_TAIL: usize = 2048;
/// Most bytes of a result file read.
const RESULT_LIMIT: u64 = 4 << 20;
const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `exec` action.
pub struct Exec(pub Arc<Provisioning>);

/// What a script is run with, read from the step's input.
struct Call {
    script: String,
    args: Vec<String>,
}

fn bad_input(msg: impl Into<String>) -> StepError {
    StepError::fatal("bad_input", msg)
}

fn call_of(input: &Value) -> Result<Call, StepError> {
    if input.get("image").is_some() {
        return Err(bad_input(
            "exec: container images (`image`) are not supported yet; run a script of the design repository (`script`)",
        ));
    }
    let script = input
        .get("script")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_input("exec needs `input.script`: the path of a file in a scripts/ folder of the design repository"))?
        .to_string();
    if !lariat_workflows::design::is_script(&script) {
        return Err(bad_input(format!(
            "exec: '{script}' is not a script of the design repository (a file in a scripts/ folder)"
        )));
    }
    let args = match input.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                other => Err(bad_input(format!(
                    "exec: args[{i}] must be a string, a number or a boolean, not {other}"
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(bad_input(format!(
                "exec: `args` must be a list, not {other}"
            )));
        }
    };
    Ok(Call { script, args })
}

/// `NAME` of a parameter as an environment variable's part.
fn env_name(param: &str) -> String {
    param.to_ascii_uppercase()
}

/// The resolved secrets of an attempt, to scrub from all it returns.
struct Secrets(Vec<String>);

impl Secrets {
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.0 {
            if !s.is_empty() {
                out = out.replace(s.as_str(), "[secret]");
            }
        }
        out
    }

    fn scrub_value(&self, v: Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.scrub(&s)),
            Value::Array(a) => Value::Array(a.into_iter().map(|x| self.scrub_value(x)).collect()),
            Value::Object(m) => Value::Object(
                m.into_iter()
                    .map(|(k, x)| (self.scrub(&k), self.scrub_value(x)))
                    .collect(),
            ),
            other => other,
        }
    }
}

fn setup_error(what: &str, e: impl std::fmt::Display) -> StepError {
    StepError::retryable("exec_setup", format!("exec: {what}: {e}"))
}

fn write_private(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StepError> {
    std::fs::write(path, bytes)
        .map_err(|e| setup_error(&format!("writing {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| setup_error(&format!("setting the mode of {}", path.display()), e))
}

/// Reads a stream to its end, keeping its last `limit` bytes.
async fn tail_of(mut r: impl AsyncRead + Unpin, limit: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut cut = false;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > limit {
                    let extra = kept.len() - limit;
                    kept.drain(..extra);
                    cut = true;
                }
            }
        }
    }
    (kept, cut)
}

/// Signals every process of the group `pgid`.
fn signal_group(pgid: u32, sig: libc::c_int) {
    // 0 would be this process's own group.
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 0 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals that process group; it takes no
    // pointers, and a group that is gone only makes it return ESRCH.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// Kills a script's process group when dropped: when the attempt's future is dropped
/// (the engine gives up on an attempt past its timeout), no process of it stays behind.
struct GroupGuard(u32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        signal_group(self.0, libc::SIGKILL);
    }
}

fn last_bytes(text: &str, n: usize) -> &str {
    if text.len() <= n {
        return text;
    }
    let mut start = text.len() - n;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[async_trait]
impl Action for Exec {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        let call = call_of(&ctx.input)?;
        let host = ctx
            .item
            .as_ref()
            .and_then(Value::as_str)
            .map(str::to_string);
        let current = match &host {
            Some(h) => self.0.for_host(h).await?,
            None => self.0.design.current().await,
        };
        let revision = current.revision.clone();
        let Some(script) = current.loaded.design.script(&call.script).cloned() else {
            return Err(StepError::fatal(
                "missing_script",
                format!(
                    "exec: the design revision {} has no script '{}'",
                    revision.as_deref().unwrap_or("(none)"),
                    call.script
                ),
            ));
        };

        // Private to this attempt, and removed with it whatever happens.
        let work = tempfile::Builder::new()
            .prefix("lariat-exec-")
            .tempdir()
            .map_err(|e| setup_error("making the working folder", e))?;
        let dir = work.path();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| setup_error("securing the working folder", e))?;
        let script_file = dir.join("script");
        write_private(&script_file, script.as_bytes(), 0o700)?;
        let params_file = dir.join("params.json");
        write_private(&params_file, ctx.input.to_string().as_bytes(), 0o600)?;
        let result_file = dir.join("result.json");

        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let mut secrets = Secrets(Vec::new());
        let run_params = ctx.run_input.as_object().cloned().unwrap_or_default();
        for (name, value) in &run_params {
            if ctx.sensitive.iter().any(|s| s == name) {
                let r = SecretRef::from_value(value).ok_or_else(|| {
                    bad_input(format!(
                        "exec: sensitive parameter '{name}' is not an {{env}} or {{file}} reference"
                    ))
                })?;
                let secret = r.resolve().map_err(|e| {
                    StepError::fatal(
                        "secret_unavailable",
                        format!("exec: sensitive parameter '{name}': {e}"),
                    )
                })?;
                let secrets_dir = dir.join("secrets");
                std::fs::create_dir_all(&secrets_dir)
                    .map_err(|e| setup_error("making the secrets folder", e))?;
                let file = secrets_dir.join(name);
                write_private(&file, secret.as_bytes(), 0o600)?;
                env.insert(
                    format!("LARIAT_SECRET_{}_FILE", env_name(name)),
                    file.display().to_string(),
                );
                secrets.0.push(secret);
            } else {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                env.insert(format!("LARIAT_PARAM_{}", env_name(name)), text);
            }
        }
        let dir_text = dir.display().to_string();
        env.insert("PATH".into(), SAFE_PATH.into());
        env.insert("HOME".into(), dir_text.clone());
        env.insert("LANG".into(), "C.UTF-8".into());
        env.insert("LARIAT_IDEMPOTENCY_KEY".into(), ctx.idempotency_key.clone());
        env.insert("LARIAT_RUN_ID".into(), ctx.run_id.to_string());
        env.insert("LARIAT_WORKFLOW".into(), ctx.workflow.to_string());
        env.insert("LARIAT_STEP".into(), ctx.step.to_string());
        env.insert("LARIAT_ATTEMPT".into(), ctx.attempt.to_string());
        env.insert("LARIAT_TARGETS".into(), ctx.targets.join(","));
        env.insert("LARIAT_WORKDIR".into(), dir_text);
        env.insert("LARIAT_PARAMS".into(), params_file.display().to_string());
        env.insert("LARIAT_RESULT".into(), result_file.display().to_string());
        if let Some(h) = &host {
            env.insert("LARIAT_HOST".into(), h.clone());
        }

        // A script without `#!` is a shell script, as for sh(1).
        let mut cmd = if script.starts_with("#!") {
            tokio::process::Command::new(&script_file)
        } else {
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg(&script_file);
            c
        };
        cmd.args(&call.args)
            .current_dir(dir)
            .env_clear()
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            StepError::fatal(
                "exec_failed",
                format!("exec: cannot start {}: {e}", call.script),
            )
        })?;
        let pgid = child.id().unwrap_or(0);
        let _group = GroupGuard(pgid);
        tracing::info!(run = %ctx.run_id, step = %ctx.step, attempt = ctx.attempt, script = %call.script, pgid, "exec started");
        let stdout = tokio::spawn(tail_of(child.stdout.take().expect("piped"), OUTPUT_LIMIT));
        let stderr = tokio::spawn(tail_of(child.stderr.take().expect("piped"), OUTPUT_LIMIT));

        let status = tokio::select! {
            s = child.wait() => s,
            _ = ctx.cancel.cancelled() => {
                signal_group(pgid, libc::SIGTERM);
                if tokio::time::timeout(KILL_GRACE, child.wait()).await.is_err() {
                    signal_group(pgid, libc::SIGKILL);
                    let _ = child.wait().await;
                }
                signal_group(pgid, libc::SIGKILL);
                let _ = tokio::time::timeout(Duration::from_secs(2), stdout).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), stderr).await;
                return Err(StepError::retryable(
                    "cancelled",
                    format!("exec: {} stopped (the attempt was cancelled or timed out); its process group was killed", call.script),
                ));
            }
        };
        // Whatever it left behind in its group goes too, and with it the pipes' last
        // writers.
        signal_group(pgid, libc::SIGKILL);
        let status = status.map_err(|e| setup_error("waiting for the script", e))?;
        let grab = |h: tokio::task::JoinHandle<(Vec<u8>, bool)>| async move {
            match tokio::time::timeout(Duration::from_secs(5), h).await {
                Ok(Ok(v)) => v,
                _ => (Vec::new(), true),
            }
        };
        let (out, out_cut) = grab(stdout).await;
        let (err, err_cut) = grab(stderr).await;
        let out = secrets.scrub(&String::from_utf8_lossy(&out));
        let err = secrets.scrub(&String::from_utf8_lossy(&err));

        if !status.success() {
            let how = match (
                status.code(),
                std::os::unix::process::ExitStatusExt::signal(&status),
            ) {
                (Some(c), _) => format!("exited with status {c}"),
                (None, Some(s)) => format!("was killed by signal {s}"),
                _ => "failed".to_string(),
            };
            return Err(StepError::retryable(
                "exit_status",
                format!(
                    "exec: {} {how}; stderr ends: {}",
                    call.script,
                    last_bytes(err.trim_end(), ERROR_TAIL)
                ),
            ));
        }
        let result = match std::fs::metadata(&result_file) {
            Ok(m) if m.len() > RESULT_LIMIT => {
                return Err(StepError::fatal(
                    "bad_result",
                    format!(
                        "exec: {}'s result file is {} bytes, over {RESULT_LIMIT}",
                        call.script,
                        m.len()
                    ),
                ));
            }
            Ok(_) => {
                let text = std::fs::read_to_string(&result_file)
                    .map_err(|e| setup_error("reading the result file", e))?;
                let v: Value = serde_json::from_str(&text).map_err(|e| {
                    StepError::fatal(
                        "bad_result",
                        format!("exec: {}'s result file is not JSON: {e}", call.script),
                    )
                })?;
                v
            }
            Err(_) => serde_json::from_str(out.trim()).unwrap_or(Value::Null),
        };
        Ok(Output::Done(json!({
            "script": call.script,
            "revision": revision,
            "host": host,
            "exit_code": 0,
            "result": secrets.scrub_value(result),
            "stdout": out,
            "stderr": err,
            "stdout_truncated": out_cut,
            "stderr_truncated": err_cut,
        })))
    }
}
