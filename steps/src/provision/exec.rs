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
//! in a process group of its own, read by the interpreter its `#!` line names (sh
//! without one): cancellation and the step's timeout stop the whole group (TERM, then
//! KILL after [`KILL_GRACE`]), and what the script left running when it exited is killed
//! too, by a supervisor task that outlives an attempt the engine gave up on.

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
use tokio_util::sync::CancellationToken;

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

/// The resolved secrets of an attempt, to scrub from all it returns: each as it is and
/// as JSON writes it inside a string, longest first so that a secret inside another does
/// not break the longer one's replacement.
struct Secrets(Vec<String>);

impl Secrets {
    fn new(values: Vec<String>) -> Secrets {
        let mut forms: Vec<String> = Vec::new();
        for v in values.into_iter().filter(|v| !v.is_empty()) {
            let quoted = serde_json::to_string(&v).unwrap_or_default();
            let escaped = quoted
                .strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .unwrap_or_default()
                .to_string();
            if !escaped.is_empty() && escaped != v {
                forms.push(escaped);
            }
            forms.push(v);
        }
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup();
        Secrets(forms)
    }

    /// The longest form, in bytes: how much more of a stream to keep so that a secret cut
    /// by the limit is still whole when scrubbed.
    fn longest(&self) -> usize {
        self.0.first().map_or(0, String::len)
    }

    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.0 {
            out = out.replace(s.as_str(), "[secret]");
        }
        out
    }

    /// A stream's tail, scrubbed, then cut to [`OUTPUT_LIMIT`].
    fn finish(&self, (bytes, cut): &(Vec<u8>, bool)) -> (String, bool) {
        let text = self.scrub(&String::from_utf8_lossy(bytes));
        if text.len() <= OUTPUT_LIMIT {
            return (text, *cut);
        }
        (last_bytes(&text, OUTPUT_LIMIT).to_string(), true)
    }

    fn scrub_value(&self, v: Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.scrub(&s)),
            Value::Number(n) if self.0.iter().any(|s| *s == n.to_string()) => {
                Value::String("[secret]".into())
            }
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

/// The interpreter a script names on its `#!` line, with its one argument; `/bin/sh`
/// for a script without one.
fn interpreter_of(script: &str) -> (String, Option<String>) {
    let Some(line) = script.strip_prefix("#!").and_then(|r| r.lines().next()) else {
        return ("/bin/sh".into(), None);
    };
    let line = line.trim();
    match line.split_once(char::is_whitespace) {
        Some((i, a)) if !a.trim().is_empty() => (i.to_string(), Some(a.trim().to_string())),
        _ => (line.to_string(), None),
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

/// What a stream said: its last bytes, and whether earlier ones were dropped.
type Tail = Arc<std::sync::Mutex<(Vec<u8>, bool)>>;

/// Reads a stream to its end into `tail`, keeping its last `limit` bytes.
async fn read_tail(mut r: impl AsyncRead + Unpin, limit: usize, tail: Tail) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                t.0.extend_from_slice(&buf[..n]);
                if t.0.len() > limit {
                    let extra = t.0.len() - limit;
                    t.0.drain(..extra);
                    t.1 = true;
                }
            }
        }
    }
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

/// Waits until process `pid` has exited without reaping it: while its zombie stands,
/// its pid, and so its group's id, cannot be given to another process, so signalling
/// the group afterwards can only reach what the script left behind.
fn exited_unreaped(pid: u32) {
    let id: libc::id_t = pid;
    loop {
        // SAFETY: waitid(2) writes only into `info`, a zeroed siginfo_t we own.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        if rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// How a script's run ended, as its supervisor saw it.
struct Ran {
    /// None: stopped (cancelled, timed out, or the attempt given up on).
    status: Option<std::process::ExitStatus>,
    out: (Vec<u8>, bool),
    err: (Vec<u8>, bool),
    /// The result file, when the script wrote one: its text, or why it cannot be read.
    result: Option<Result<String, String>>,
}

/// Runs a started script to its end, or stops it when `stop` or `cancel` fires: TERM to
/// its group, KILL after [`KILL_GRACE`]. Whatever the script left running in its group
/// is killed before the leader is reaped; the working folder goes last. It runs as a
/// task of its own, so an attempt whose future is dropped (the engine gives up on it
/// past its timeout) still stops its script the same way and cleans up.
async fn supervise(
    mut child: tokio::process::Child,
    work: tempfile::TempDir,
    limit: usize,
    stop: CancellationToken,
    cancel: CancellationToken,
) -> Ran {
    let pid = child.id().unwrap_or(0);
    let out: Tail = Default::default();
    let err: Tail = Default::default();
    let readers = [
        tokio::spawn(read_tail(
            child.stdout.take().expect("piped"),
            limit,
            out.clone(),
        )),
        tokio::spawn(read_tail(
            child.stderr.take().expect("piped"),
            limit,
            err.clone(),
        )),
    ];
    let mut exited = tokio::task::spawn_blocking(move || exited_unreaped(pid));
    let stopped = tokio::select! {
        _ = &mut exited => false,
        _ = stop.cancelled() => true,
        _ = cancel.cancelled() => true,
    };
    if stopped {
        signal_group(pid, libc::SIGTERM);
        if tokio::time::timeout(KILL_GRACE, &mut exited).await.is_err() {
            signal_group(pid, libc::SIGKILL);
            let _ = exited.await;
        }
    }
    // The leader is a zombie now: its group id is still its own.
    signal_group(pid, libc::SIGKILL);
    let status = child.wait().await.ok();
    // A process that left the group (setsid) may hold the pipes: what was read is kept.
    for r in readers {
        let abort = r.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), r)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    let take = |t: &Tail| std::mem::take(&mut *t.lock().unwrap_or_else(|e| e.into_inner()));
    let result_file = work.path().join("result.json");
    let result = match std::fs::symlink_metadata(&result_file) {
        _ if stopped => None,
        Err(_) => None,
        Ok(m) if !m.is_file() => Some(Err("it is not a regular file".to_string())),
        Ok(m) if m.len() > RESULT_LIMIT => {
            Some(Err(format!("it is {} bytes, over {RESULT_LIMIT}", m.len())))
        }
        Ok(_) => Some(std::fs::read_to_string(&result_file).map_err(|e| e.to_string())),
    };
    let folder = work.path().display().to_string();
    if let Err(e) = work.close() {
        tracing::warn!("exec: the working folder {folder} could not be removed: {e}");
    }
    Ran {
        status: if stopped { None } else { status },
        out: take(&out),
        err: take(&err),
        result,
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
        let mut resolved = Vec::new();
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
                resolved.push(secret);
            } else {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                env.insert(format!("LARIAT_PARAM_{}", env_name(name)), text);
            }
        }
        let secrets = Secrets::new(resolved);
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

        // The interpreter runs the script as a file it reads, rather than the kernel
        // exec'ing it: no `noexec` working folder and no ETXTBSY from a fork of another
        // thread that still holds the file's write descriptor. Without `#!`, sh(1).
        let (interpreter, interpreter_arg) = interpreter_of(&script);
        let mut cmd = tokio::process::Command::new(&interpreter);
        if let Some(a) = &interpreter_arg {
            cmd.arg(a);
        }
        cmd.arg(&script_file)
            .args(&call.args)
            .current_dir(dir)
            .env_clear()
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let child = cmd.spawn().map_err(|e| {
            StepError::fatal(
                "exec_failed",
                format!("exec: cannot start {} with {interpreter}: {e}", call.script),
            )
        })?;
        tracing::info!(script = %call.script, pgid = child.id().unwrap_or(0), "exec started");
        let stop = CancellationToken::new();
        // Dropped with this attempt's future, it tells the supervisor to stop the script.
        let _stop_on_drop = stop.clone().drop_guard();
        let limit = OUTPUT_LIMIT + secrets.longest();
        let ran = tokio::spawn(supervise(child, work, limit, stop, ctx.cancel.clone()))
            .await
            .map_err(|e| setup_error("supervising the script", e))?;
        let (out, out_cut) = secrets.finish(&ran.out);
        let (err, err_cut) = secrets.finish(&ran.err);
        let Some(status) = ran.status else {
            return Err(StepError::retryable(
                "cancelled",
                format!(
                    "exec: {} stopped (the attempt was cancelled or timed out); its process group was killed",
                    call.script
                ),
            ));
        };
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
        let bad_result = |why: String| {
            StepError::fatal(
                "bad_result",
                format!(
                    "exec: {}'s result file: {}",
                    call.script,
                    secrets.scrub(&why)
                ),
            )
        };
        let result = match ran.result {
            Some(Ok(text)) => serde_json::from_str(&text)
                .map_err(|e| bad_result(format!("it is not JSON: {e}")))?,
            Some(Err(why)) => return Err(bad_result(why)),
            None => serde_json::from_str(out.trim()).unwrap_or(Value::Null),
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
