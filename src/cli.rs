//! The operator's commands: the same binary talking to a server's REST API.
//!
//! Every command prints text for people by default and JSON with `--json`. The server's
//! error messages are printed as they are, with the status and code they came with.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// Where the server is, and how to print.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        env = "LARIAT_SERVER",
        default_value = "http://127.0.0.1:7300"
    )]
    pub server: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum ClientCmd {
    /// Workflow definitions on a server (the token comes from LARIAT_TOKEN).
    Workflow {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: WorkflowCmd,
    },
    /// Runs on a server: submit, list, show, watch, and the operator verbs (the token
    /// comes from LARIAT_TOKEN).
    Run {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: RunCmd,
    },
    /// API tokens, kept in the server's database.
    #[command(subcommand)]
    Token(TokenCmd),
    /// The site design: validate a folder here, or ask a server for revisions, findings,
    /// hosts and pins (the token comes from LARIAT_TOKEN).
    Design {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        cmd: crate::cli_design::DesignCmd,
    },
}

#[derive(Subcommand)]
pub enum WorkflowCmd {
    /// Register a definition (YAML, or JSON for a .json file); each change is a new version.
    Apply {
        /// The definition, or - for standard input (read as YAML).
        file: PathBuf,
    },
    /// The latest version of every workflow.
    List,
    /// A workflow's definition.
    Show {
        name: String,
        /// A given version instead of the latest.
        #[arg(long)]
        version: Option<i64>,
    },
}

#[derive(Subcommand)]
pub enum RunCmd {
    /// Start a run of a workflow.
    Submit {
        workflow: String,
        /// The run's input: a JSON or YAML file, or - for standard input.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Hosts the run targets, comma-separated.
        #[arg(long, value_delimiter = ',')]
        targets: Vec<String>,
        #[command(flatten)]
        select: crate::cli_design::Select,
        /// Submitting again with the same key returns the first run instead of a new one.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Pin this workflow version instead of the latest.
        #[arg(long)]
        version: Option<i64>,
    },
    /// Runs, newest first.
    List {
        /// Only runs in this status (running, paused, failed, succeeded, cancelled,
        /// rolling_back, rolled_back, compensation_failed).
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Page size (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue after this run (the cursor printed under the previous page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// A run and a table of its steps.
    Show {
        /// The run's id.
        id: Uuid,
    },
    /// Follow a run live, one line per step; exits 0 when it succeeds, 1 when it fails,
    /// is cancelled or rolled back.
    Watch {
        /// The run's id.
        id: Uuid,
    },
    /// A run's full history, operator actions included.
    Events {
        /// The run's id.
        id: Uuid,
    },
    /// Retry a failed step and everything after it.
    Retry {
        id: Uuid,
        step: String,
        /// New input for the step: a JSON or YAML file, or - for standard input.
        #[arg(long)]
        input: Option<PathBuf>,
    },
    /// Deliver a signal to a step waiting for one.
    Signal {
        id: Uuid,
        step: String,
        /// The payload (the step's output): a JSON or YAML file, or - for standard input.
        #[arg(long)]
        payload: Option<PathBuf>,
        /// For a fan-out step: the item, by host name or index.
        #[arg(long)]
        item: Option<String>,
    },
    /// Run the compensations of the succeeded steps, in reverse order.
    Rollback {
        /// The run's id.
        id: Uuid,
    },
    /// Stop the run: running attempts are told to stop, nothing more starts.
    Cancel {
        /// The run's id.
        id: Uuid,
    },
    /// Start no new attempts until resumed.
    Pause {
        /// The run's id.
        id: Uuid,
    },
    /// Resume a paused run.
    Resume {
        /// The run's id.
        id: Uuid,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token and print it, once. Works next to a running server.
    Create {
        /// viewer (read), operator (submit and act on runs) or admin (workflows, tokens).
        #[arg(long)]
        role: lariat_api::Role,
        /// A name for the token, recorded as the actor of what it does.
        #[arg(long)]
        name: Option<String>,
        /// The server's database.
        #[arg(long, default_value = "./lariat.db", env = "LARIAT_DB")]
        db: PathBuf,
        /// Print JSON (with the token) instead of the bare token.
        #[arg(long)]
        json: bool,
    },
    /// Every token's name, role and creation time (never the secret).
    List {
        /// The server's database.
        #[arg(long, default_value = "./lariat.db", env = "LARIAT_DB")]
        db: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Run a client command; the value is the process's exit code.
pub async fn run(cmd: ClientCmd) -> anyhow::Result<i32> {
    match cmd {
        ClientCmd::Workflow { conn, cmd } => workflow(Client::new(&conn)?, &conn, cmd).await,
        ClientCmd::Run { conn, cmd } => run_cmd(Client::new(&conn)?, &conn, cmd).await,
        ClientCmd::Token(t) => token(t).await,
        ClientCmd::Design { conn, cmd } => crate::cli_design::run(&conn, cmd).await,
    }
}

// ---- HTTP -------------------------------------------------------------------------

/// A client of one server, with the token from `LARIAT_TOKEN`.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    /// For event streams, which must not time out.
    streaming: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub(crate) fn new(conn: &Conn) -> anyhow::Result<Client> {
        let token = std::env::var("LARIAT_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty());
        Self::with_token(&conn.server, token)
    }

    pub(crate) fn with_token(server: &str, token: Option<String>) -> anyhow::Result<Client> {
        let base = server.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("--server {server} is not an http:// URL");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot build the HTTP client")?;
        let streaming = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Client {
            http,
            streaming,
            base,
            token: token.map(|t| t.trim().to_string()),
        })
    }

    fn request(
        &self,
        http: &reqwest::Client,
        method: Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let rb = http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Send and read a JSON answer; an error answer becomes an error with its message.
    pub(crate) async fn send(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let res = rb.send().await.map_err(|e| self.unreachable(e))?;
        let status = res.status();
        let text = res
            .text()
            .await
            .with_context(|| format!("cannot read the answer of {}", self.base))?;
        if !status.is_success() {
            return Err(self.server_error(status, &text));
        }
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| {
                format!("the server answered {status} with something that is not JSON")
            })?
        };
        Ok((status, v))
    }

    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        let mut msg = format!("cannot reach the lariat server at {}", self.base);
        let mut src: Option<&dyn std::error::Error> = Some(&e);
        let mut last = String::new();
        while let Some(s) = src {
            last = s.to_string();
            src = s.source();
        }
        if !last.is_empty() {
            msg.push_str(&format!(": {last}"));
        }
        msg.push_str(" (is `lariat server` running? set --server or LARIAT_SERVER)");
        anyhow::anyhow!(msg)
    }

    fn server_error(&self, status: StatusCode, text: &str) -> anyhow::Error {
        let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let err = &body["error"];
        let mut msg = match err["message"].as_str() {
            Some(m) => format!(
                "{m} ({} {})",
                status.as_u16(),
                err["code"].as_str().unwrap_or("error")
            ),
            None => format!("the server answered {status}: {}", text.trim()),
        };
        if status == StatusCode::UNAUTHORIZED && self.token.is_none() {
            msg.push_str("; LARIAT_TOKEN is not set");
        }
        anyhow::anyhow!(msg)
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .send(self.request(&self.http, Method::GET, path))
            .await?
            .1)
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let rb = self.request(&self.http, Method::POST, path);
        let rb = match body {
            Some(b) => rb.json(b),
            None => rb,
        };
        self.send(rb).await
    }

    pub(crate) async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let rb = self.request(&self.http, Method::PUT, path).json(body);
        Ok(self.send(rb).await?.1)
    }

    pub(crate) async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send(self.request(&self.http, Method::DELETE, path))
            .await
            .map(|_| ())
    }

    async fn post_text(
        &self,
        path: &str,
        content_type: &str,
        body: String,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let rb = self
            .request(&self.http, Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        self.send(rb).await
    }

    /// Open a run's event stream after `after`.
    async fn stream(&self, id: Uuid, after: i64) -> anyhow::Result<reqwest::Response> {
        let rb = self
            .request(
                &self.streaming,
                Method::GET,
                &format!("/v1/runs/{id}/events/stream"),
            )
            .header("Last-Event-ID", after.to_string())
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let res = rb.send().await.map_err(|e| self.unreachable(e))?;
        if !res.status().is_success() {
            let status = res.status();
            let text = res.text().await.unwrap_or_default();
            return Err(self.server_error(status, &text));
        }
        Ok(res)
    }
}

// ---- input files --------------------------------------------------------------------

fn read_source(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read standard input")?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

/// A JSON or YAML document from a file (or - for standard input).
fn read_doc(path: &Path) -> anyhow::Result<Value> {
    let text = read_source(path)?;
    if let Ok(v) = serde_json::from_str(&text) {
        return Ok(v);
    }
    serde_norway::from_str(&text)
        .with_context(|| format!("{} is neither JSON nor YAML", path.display()))
}

// ---- formatting ---------------------------------------------------------------------

pub(crate) fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A timestamp in ms as RFC 3339 (UTC, seconds).
pub(crate) fn time(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms > 0 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms as u64))
                .to_string()
        }
        _ => "-".into(),
    }
}

/// The time of day (UTC) of a timestamp in ms.
fn clock(ms: Option<i64>) -> String {
    let t = time(ms);
    if t.len() >= 19 {
        t[11..19].to_string()
    } else {
        t
    }
}

fn elapsed(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

pub(crate) fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

// ---- workflow -----------------------------------------------------------------------

async fn workflow(c: Client, conn: &Conn, cmd: WorkflowCmd) -> anyhow::Result<i32> {
    match cmd {
        WorkflowCmd::Apply { file } => {
            let text = read_source(&file)?;
            let is_json = file
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"));
            let ct = if is_json {
                "application/json"
            } else {
                "application/yaml"
            };
            let (_, v) = c.post_text("/v1/workflows", ct, text).await?;
            if conn.json {
                print_json(&v);
            } else if v["created"].as_bool() == Some(true) {
                println!("registered {} version {}", str_of(&v["name"]), v["version"]);
            } else {
                println!("{} version {} unchanged", str_of(&v["name"]), v["version"]);
            }
        }
        WorkflowCmd::List => {
            let v = c.get("/v1/workflows").await?;
            if conn.json {
                print_json(&v);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = v["workflows"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| {
                    vec![
                        str_of(&w["name"]).to_string(),
                        w["version"].to_string(),
                        w["steps"].to_string(),
                        str_of(&w["description"]).to_string(),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(&["NAME", "VERSION", "STEPS", "DESCRIPTION"], &rows)
            );
        }
        WorkflowCmd::Show { name, version } => {
            let path = match version {
                Some(n) => format!("/v1/workflows/{}/versions/{n}", encode(&name)),
                None => format!("/v1/workflows/{}", encode(&name)),
            };
            let v = c.get(&path).await?;
            if conn.json {
                print_json(&v);
            } else {
                println!("# {} version {}", str_of(&v["name"]), v["version"]);
                let yaml = serde_norway::to_string(&v["definition"])
                    .unwrap_or_else(|_| v["definition"].to_string());
                print!("{yaml}");
            }
        }
    }
    Ok(0)
}

/// Percent-encode a path segment.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---- run ----------------------------------------------------------------------------

async fn run_cmd(c: Client, conn: &Conn, cmd: RunCmd) -> anyhow::Result<i32> {
    match cmd {
        RunCmd::Submit {
            workflow,
            input,
            targets,
            select,
            idempotency_key,
            version,
        } => {
            let input = match input {
                Some(p) => read_doc(&p)?,
                None => Value::Null,
            };
            // With any design criterion, the names join a node filter the server resolves.
            let targets = match select.filter(&targets)? {
                Some(f) => f,
                None => json!(targets),
            };
            let mut body = json!({"workflow": workflow, "input": input, "targets": targets});
            if let Some(k) = idempotency_key {
                body["idempotency_key"] = json!(k);
            }
            if let Some(v) = version {
                body["version"] = json!(v);
            }
            let (status, v) = c.post("/v1/runs", Some(&body)).await?;
            if conn.json {
                print_json(&v);
            } else if status == StatusCode::CREATED {
                println!("{}", str_of(&v["id"]));
                eprintln!(
                    "started run of {} version {}; follow it with: lariat run watch {}",
                    str_of(&v["workflow"]),
                    v["version"],
                    str_of(&v["id"])
                );
            } else {
                println!("{}", str_of(&v["id"]));
                eprintln!(
                    "this idempotency key started run {} before ({}); no new run",
                    str_of(&v["id"]),
                    str_of(&v["status"])
                );
            }
            Ok(0)
        }
        RunCmd::List {
            status,
            workflow,
            limit,
            cursor,
        } => {
            let mut q = vec![format!("limit={limit}")];
            if let Some(s) = status {
                q.push(format!("status={}", encode(&s)));
            }
            if let Some(w) = workflow {
                q.push(format!("workflow={}", encode(&w)));
            }
            if let Some(cur) = cursor {
                q.push(format!("cursor={}", encode(&cur)));
            }
            let v = c.get(&format!("/v1/runs?{}", q.join("&"))).await?;
            if conn.json {
                print_json(&v);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = v["runs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    vec![
                        str_of(&r["id"]).to_string(),
                        str_of(&r["workflow"]).to_string(),
                        r["version"].to_string(),
                        str_of(&r["status"]).to_string(),
                        time(r["created_at"].as_i64()),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &["ID", "WORKFLOW", "VERSION", "STATUS", "CREATED (UTC)"],
                    &rows
                )
            );
            if let Some(next) = v["next_cursor"].as_str() {
                eprintln!("more: lariat run list --cursor {next}");
            }
            Ok(0)
        }
        RunCmd::Show { id } => {
            let v = c.get(&format!("/v1/runs/{id}")).await?;
            if conn.json {
                print_json(&v);
            } else {
                print!("{}", show_run(&v, now_ms()));
            }
            Ok(0)
        }
        RunCmd::Events { id } => {
            let mut after = 0;
            let mut all = Vec::new();
            loop {
                let v = c
                    .get(&format!("/v1/runs/{id}/events?after={after}&limit=1000"))
                    .await?;
                all.extend(v["events"].as_array().cloned().unwrap_or_default());
                match v["next_after"].as_i64() {
                    Some(n) => after = n,
                    None => break,
                }
            }
            if conn.json {
                print_json(&Value::Array(all));
            } else {
                for e in &all {
                    println!("{}", event_line(e));
                }
            }
            Ok(0)
        }
        RunCmd::Watch { id } => watch(&c, id, conn.json).await,
        RunCmd::Retry { id, step, input } => {
            let body = match input {
                Some(p) => Some(json!({"input": read_doc(&p)?})),
                None => None,
            };
            let path = format!("/v1/runs/{id}/steps/{}/retry", encode(&step));
            let (_, v) = c.post(&path, body.as_ref()).await?;
            verb_done(conn, &v, &format!("retrying step {step} of run {id}"));
            Ok(0)
        }
        RunCmd::Signal {
            id,
            step,
            payload,
            item,
        } => {
            let mut body = json!({"payload": match payload {
                Some(p) => read_doc(&p)?,
                None => Value::Null,
            }});
            if let Some(i) = item {
                body["item"] = json!(i);
            }
            let path = format!("/v1/runs/{id}/steps/{}/signal", encode(&step));
            let (_, v) = c.post(&path, Some(&body)).await?;
            verb_done(conn, &v, &format!("signalled step {step} of run {id}"));
            Ok(0)
        }
        RunCmd::Rollback { id } => simple_verb(&c, conn, id, "rollback", "rolling back").await,
        RunCmd::Cancel { id } => simple_verb(&c, conn, id, "cancel", "cancelled").await,
        RunCmd::Pause { id } => simple_verb(&c, conn, id, "pause", "paused").await,
        RunCmd::Resume { id } => simple_verb(&c, conn, id, "resume", "resumed").await,
    }
}

async fn simple_verb(
    c: &Client,
    conn: &Conn,
    id: Uuid,
    verb: &str,
    done: &str,
) -> anyhow::Result<i32> {
    let (_, v) = c.post(&format!("/v1/runs/{id}/{verb}"), None).await?;
    verb_done(conn, &v, &format!("run {id}: {done}"));
    Ok(0)
}

fn verb_done(conn: &Conn, run: &Value, what: &str) {
    if conn.json {
        print_json(run);
    } else {
        println!("{what} (run is {})", str_of(&run["status"]));
    }
}

/// What a step's detail column says: why it waits, when it retries, why it failed.
fn step_detail(t: &Value, now: i64) -> String {
    let mut parts = Vec::new();
    match str_of(&t["status"]) {
        "waiting" => {
            let w = &t["waiting_for"];
            let mut s = match str_of(&w["for"]) {
                "window" => format!("waiting for window {}", str_of(&w["window"])),
                "" => "waiting".to_string(),
                other => format!("waiting for {other}"),
            };
            if let Some(u) = w["until"].as_i64() {
                s.push_str(&format!(" until {}", clock(Some(u))));
            }
            parts.push(s);
        }
        "retrying" => {
            if let Some(n) = t["next_retry_at"].as_i64() {
                parts.push(format!("next attempt in {}", elapsed(n - now)));
            }
        }
        _ => {}
    }
    if let Some(items) = t["items"].as_array().filter(|i| !i.is_empty()) {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for i in items {
            *counts.entry(str_of(&i["status"])).or_default() += 1;
        }
        let c: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        parts.push(format!("items: {}", c.join(", ")));
    }
    if let Some(e) = t["error"].as_str() {
        parts.push(e.to_string());
    }
    parts.join("; ")
}

fn task_elapsed(t: &Value, now: i64) -> String {
    match (t["started_at"].as_i64(), t["ended_at"].as_i64()) {
        (Some(s), Some(e)) if e >= s => elapsed(e - s),
        (Some(s), _) => elapsed(now - s),
        _ => "-".into(),
    }
}

fn show_run(v: &Value, now: i64) -> String {
    let mut out = format!(
        "run {}  {} v{}  {}\ncreated {}{}\n",
        str_of(&v["id"]),
        str_of(&v["workflow"]),
        v["version"],
        str_of(&v["status"]),
        time(v["created_at"].as_i64()),
        v["ended_at"]
            .as_i64()
            .map(|e| format!(", ended {}", time(Some(e))))
            .unwrap_or_default(),
    );
    if let Some(e) = v["error"].as_str() {
        out.push_str(&format!("error: {e}\n"));
    }
    let mut rows = Vec::new();
    for s in v["steps"].as_array().into_iter().flatten() {
        rows.push(vec![
            str_of(&s["name"]).to_string(),
            str_of(&s["status"]).to_string(),
            s["attempt"].to_string(),
            clock(s["started_at"].as_i64()),
            task_elapsed(s, now),
            step_detail(s, now),
        ]);
    }
    out.push('\n');
    out.push_str(&table(
        &["STEP", "STATUS", "ATTEMPT", "STARTED", "ELAPSED", "DETAIL"],
        &rows,
    ));
    out.push('\n');
    out
}

fn event_line(e: &Value) -> String {
    let mut s = format!(
        "{:>5}  {}  {}",
        e["seq"].as_i64().unwrap_or(0),
        time(e["at"].as_i64()),
        str_of(&e["kind"])
    );
    if let Some(step) = e["step"].as_str() {
        s.push_str(&format!("  {step}"));
        if let Some(i) = e["item"].as_u64() {
            s.push_str(&format!("[{i}]"));
        }
        if let Some(a) = e["attempt"].as_u64() {
            s.push_str(&format!(" #{a}"));
        }
    }
    if e["kind"] == "operator" {
        let d = &e["data"];
        s.push_str(&format!(
            "  {} by {}{}",
            str_of(&d["verb"]),
            str_of(&d["actor"]["who"]),
            d["actor"]["from"]
                .as_str()
                .map(|f| format!(" from {f}"))
                .unwrap_or_default()
        ));
        if !d["detail"].is_null() {
            s.push_str(&format!(" {}", d["detail"]));
        }
    }
    if let Some(err) = e["error"].as_str() {
        s.push_str(&format!("  error: {err}"));
    }
    s
}

// ---- watch --------------------------------------------------------------------------

/// Run states a watch ends on, with its exit code.
fn final_code(status: &str) -> Option<i32> {
    match status {
        "succeeded" => Some(0),
        "failed" | "cancelled" | "rolled_back" | "compensation_failed" => Some(1),
        _ => None,
    }
}

/// One message of an SSE stream.
struct SseMessage {
    event: Option<String>,
    data: String,
}

/// Reads SSE messages off a response body.
struct SseReader {
    res: reqwest::Response,
    buf: Vec<u8>,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl SseReader {
    fn new(res: reqwest::Response) -> Self {
        SseReader {
            res,
            buf: Vec::new(),
            event: None,
            data: String::new(),
            has_data: false,
        }
    }

    /// The next message; None at the end of the stream.
    async fn next(&mut self) -> anyhow::Result<Option<SseMessage>> {
        loop {
            while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                let line = String::from_utf8_lossy(&line).into_owned();
                if line.is_empty() {
                    if self.has_data {
                        self.has_data = false;
                        return Ok(Some(SseMessage {
                            event: self.event.take(),
                            data: std::mem::take(&mut self.data),
                        }));
                    }
                    self.event = None;
                    continue;
                }
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line.as_str(), ""),
                };
                match field {
                    "data" => {
                        if self.has_data {
                            self.data.push('\n');
                        }
                        self.data.push_str(value);
                        self.has_data = true;
                    }
                    "event" => self.event = Some(value.to_string()),
                    _ => {}
                }
            }
            match self.res.chunk().await.context("the event stream broke")? {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }
}

/// A step's line in `run watch`.
struct Line {
    name: String,
    status: String,
    attempt: u64,
    started: Option<i64>,
    ended: Option<i64>,
    detail: String,
    items: BTreeMap<u64, String>,
    bar: ProgressBar,
}

impl Line {
    fn active(&self) -> bool {
        matches!(
            self.status.as_str(),
            "running" | "waiting" | "retrying" | "compensating" | "ready"
        )
    }

    fn text(&self, now: i64) -> String {
        let el = match (self.started, self.ended) {
            (Some(s), Some(e)) if e >= s => elapsed(e - s),
            (Some(s), None) if self.active() => elapsed(now - s),
            _ => "-".into(),
        };
        let mut detail = self.detail.clone();
        if !self.items.is_empty() {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for s in self.items.values() {
                *counts.entry(s.as_str()).or_default() += 1;
            }
            let c: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
            if !detail.is_empty() {
                detail.push_str("; ");
            }
            detail.push_str(&format!("items: {}", c.join(", ")));
        }
        format!(
            "{:<12} attempt {:<3} {:>8}  {}",
            self.status, self.attempt, el, detail
        )
    }
}

/// What `run watch` shows: one line per step, updated from the run's events.
struct WatchView {
    lines: Vec<Line>,
    multi: MultiProgress,
    /// Without a terminal, each change is printed as a plain line instead.
    plain: bool,
    json: bool,
    width: usize,
}

impl WatchView {
    fn new(detail: &Value, json: bool) -> Self {
        let plain = json || !std::io::stderr().is_terminal();
        let multi = if plain {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        } else {
            MultiProgress::new()
        };
        let steps: Vec<&Value> = detail["steps"].as_array().into_iter().flatten().collect();
        let width = steps
            .iter()
            .map(|s| str_of(&s["name"]).len())
            .max()
            .unwrap_or(4)
            .max(4);
        let lines = steps
            .iter()
            .map(|s| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_prefix(format!("{:<width$}", str_of(&s["name"])));
                Line {
                    name: str_of(&s["name"]).to_string(),
                    status: "pending".into(),
                    attempt: 0,
                    started: None,
                    ended: None,
                    detail: String::new(),
                    items: BTreeMap::new(),
                    bar,
                }
            })
            .collect();
        let view = WatchView {
            lines,
            multi,
            plain,
            json,
            width,
        };
        for i in 0..view.lines.len() {
            view.draw(i, now_ms());
        }
        view
    }

    fn draw(&self, i: usize, now: i64) {
        let l = &self.lines[i];
        if self.plain {
            return;
        }
        let (tpl, tick) = if l.active() {
            ("{spinner:.cyan} {prefix} {msg}", true)
        } else {
            ("  {prefix} {msg}", false)
        };
        if let Ok(style) = ProgressStyle::with_template(tpl) {
            l.bar.set_style(style);
        }
        l.bar.set_message(l.text(now));
        if tick {
            l.bar.enable_steady_tick(Duration::from_millis(120));
        } else {
            l.bar.disable_steady_tick();
            l.bar.tick();
        }
    }

    fn say(&self, s: &str) {
        if self.plain {
            println!("{s}");
        } else {
            let _ = self.multi.println(s);
        }
    }

    /// Fold one event in. Returns the event's kind when it is about the run.
    fn apply(&mut self, e: &Value) -> Option<String> {
        let kind = str_of(&e["kind"]).to_string();
        if self.json {
            println!("{e}");
        }
        let Some(step) = e["step"].as_str() else {
            if !self.json {
                if kind == "operator" {
                    self.say(&event_line(e));
                } else if kind != "run_created" {
                    self.say(&format!(
                        "{}  run: {}",
                        clock(e["at"].as_i64()),
                        kind.trim_start_matches("run_")
                    ));
                }
            }
            return Some(kind);
        };
        let at = e["at"].as_i64();
        let i = self.lines.iter().position(|l| l.name == step)?;
        let data = &e["data"];
        let l = &mut self.lines[i];
        if let Some(item) = e["item"].as_u64() {
            let s = match kind.as_str() {
                "signalled" => "succeeded",
                "started" => "running",
                "compensation_retrying" => "compensating",
                "reset" => "pending",
                k => k,
            };
            l.items.insert(item, s.to_string());
        } else {
            if let Some(a) = e["attempt"].as_u64() {
                l.attempt = a;
            }
            match kind.as_str() {
                "ready" => {
                    l.status = "ready".into();
                    l.detail.clear();
                }
                "started" | "compensating" => {
                    l.status = if kind == "started" {
                        "running"
                    } else {
                        "compensating"
                    }
                    .into();
                    l.started = at;
                    l.ended = None;
                    l.detail.clear();
                }
                "waiting" => {
                    l.status = "waiting".into();
                    l.detail = match str_of(&data["for"]) {
                        "window" => format!("for window {}", str_of(&data["window"])),
                        other => format!("for {other}"),
                    };
                }
                "signalled" | "succeeded" | "compensated" => {
                    l.status = if kind == "compensated" {
                        "compensated"
                    } else {
                        "succeeded"
                    }
                    .into();
                    l.ended = at;
                    l.detail.clear();
                }
                "retrying" | "compensation_retrying" => {
                    l.status = if kind == "retrying" {
                        "retrying"
                    } else {
                        "compensating"
                    }
                    .into();
                    l.detail = format!(
                        "next attempt at {}{}",
                        clock(data["next_at"].as_i64()),
                        e["error"]
                            .as_str()
                            .map(|x| format!("; {x}"))
                            .unwrap_or_default()
                    );
                }
                "failed" | "compensation_failed" => {
                    l.status = if kind == "failed" {
                        "failed"
                    } else {
                        "compensation_failed"
                    }
                    .into();
                    l.ended = at;
                    l.detail = e["error"].as_str().unwrap_or("").to_string();
                }
                "interrupted" => {
                    l.status = "interrupted".into();
                    l.detail = "the server restarted during this attempt".into();
                }
                "cancelled" | "skipped" => {
                    l.status = kind.clone();
                    l.ended = at;
                    l.detail = str_of(&data["reason"]).to_string();
                }
                "reset" => {
                    l.status = "pending".into();
                    l.ended = None;
                    l.detail = "retried by an operator".into();
                }
                "expanded" => {
                    let n = data["items"].as_array().map_or(0, Vec::len);
                    l.detail = format!("{n} items");
                }
                _ => {}
            }
        }
        let now = now_ms();
        if self.plain && !self.json {
            let l = &self.lines[i];
            println!(
                "{}  {:<w$}  {}",
                clock(at),
                l.name,
                l.text(now),
                w = self.width
            );
        }
        self.draw(i, now);
        None
    }

    /// Refresh the elapsed time of the steps still going.
    fn tick(&self) {
        if self.plain {
            return;
        }
        let now = now_ms();
        for l in self.lines.iter().filter(|l| l.active()) {
            l.bar.set_message(l.text(now));
        }
    }

    /// Set the lines from the run's detail, the authoritative state, and stop drawing.
    fn finish(&mut self, detail: &Value) {
        let now = now_ms();
        for s in detail["steps"].as_array().into_iter().flatten() {
            if let Some(l) = self.lines.iter_mut().find(|l| l.name == str_of(&s["name"])) {
                l.status = str_of(&s["status"]).to_string();
                l.attempt = s["attempt"].as_u64().unwrap_or(l.attempt);
                l.started = s["started_at"].as_i64();
                l.ended = s["ended_at"].as_i64();
                l.detail = step_detail(s, now);
                l.items.clear();
            }
        }
        for i in 0..self.lines.len() {
            self.draw(i, now);
            self.lines[i].bar.finish();
        }
    }
}

async fn watch(c: &Client, id: Uuid, json: bool) -> anyhow::Result<i32> {
    let detail = c.get(&format!("/v1/runs/{id}")).await?;
    let mut view = WatchView::new(&detail, json);
    if !json {
        view.say(&format!(
            "run {id}  {} v{}",
            str_of(&detail["workflow"]),
            detail["version"]
        ));
    }
    let mut last: i64 = 0;
    let mut failures = 0u32;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let res = match c.stream(id, last).await {
            Ok(r) => r,
            // The server may be restarting: keep trying for a while, resuming after the
            // last event seen.
            Err(e) if failures < 30 => {
                failures += 1;
                tracing::debug!("event stream: {e:#}; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut sse = SseReader::new(res);
        loop {
            let msg = tokio::select! {
                m = sse.next() => m,
                _ = tick.tick() => { view.tick(); continue; }
            };
            let m = match msg {
                Ok(Some(m)) => m,
                Ok(None) | Err(_) => break,
            };
            failures = 0;
            if m.event.as_deref() == Some("error") {
                let v: Value = serde_json::from_str(&m.data).unwrap_or(Value::Null);
                bail!(
                    "the server ended the event stream: {}",
                    v["error"]["message"].as_str().unwrap_or(&m.data)
                );
            }
            let e: Value = serde_json::from_str(&m.data).with_context(|| {
                format!("the server sent an event that is not JSON: {}", m.data)
            })?;
            if let Some(seq) = e["seq"].as_i64() {
                last = seq;
            }
            let Some(kind) = view.apply(&e) else {
                continue;
            };
            if !matches!(
                kind.as_str(),
                "run_succeeded"
                    | "run_failed"
                    | "run_cancelled"
                    | "run_rolled_back"
                    | "run_compensation_failed"
            ) {
                continue;
            }
            // The history may be replaying an old end the run has since left (a failed
            // run retried): only the run's current status decides.
            let now = c.get(&format!("/v1/runs/{id}")).await?;
            if let Some(code) = final_code(str_of(&now["status"])) {
                if !json {
                    view.finish(&now);
                    println!("run {id} {}", str_of(&now["status"]));
                    if let Some(err) = now["error"].as_str() {
                        println!("error: {err}");
                    }
                }
                return Ok(code);
            }
        }
        failures += 1;
        if failures > 30 {
            bail!("lost the event stream of run {id} and could not reconnect");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---- token --------------------------------------------------------------------------

/// The API tokens of the database at `db`, next to a running server or not.
pub(crate) async fn open_tokens(db: &Path) -> anyhow::Result<lariat_api::TokenStore> {
    if !db.exists() {
        tracing::info!("creating database {}", db.display());
    }
    // Next to a running server: no executor lock, and no fsync wait worth having.
    let opts = lariat_db::DbOptions {
        readers: 1,
        ..lariat_db::DbOptions::shared(db)
    };
    let handle = lariat_db::Db::open(opts)
        .await
        .with_context(|| format!("cannot open database {}", db.display()))?;
    lariat_api::TokenStore::open(handle)
        .await
        .with_context(|| format!("cannot open the API tokens of {}", db.display()))
}

async fn token(cmd: TokenCmd) -> anyhow::Result<i32> {
    match cmd {
        TokenCmd::Create {
            role,
            name,
            db,
            json,
        } => {
            let t = open_tokens(&db)
                .await?
                .create(role, name.as_deref())
                .await?;
            if json {
                print_json(&serde_json::to_value(&t)?);
            } else {
                println!("{}", t.token);
                eprintln!(
                    "created {} token '{}'. It is shown only this once; keep it safe.\nUse it with: export LARIAT_TOKEN=<the token above>",
                    t.role, t.name
                );
            }
        }
        TokenCmd::List { db, json } => {
            let list = open_tokens(&db).await?.list().await?;
            if json {
                print_json(&serde_json::to_value(&list)?);
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|t| vec![t.name.clone(), t.role.to_string(), time(Some(t.created_at))])
                    .collect();
                println!("{}", table(&["NAME", "ROLE", "CREATED (UTC)"], &rows));
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    LONGER\nxyz  1\nq    22");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(elapsed(1500), "1.5s");
        assert_eq!(elapsed(125_000), "2m05s");
        assert_eq!(elapsed(-5), "0.0s");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
