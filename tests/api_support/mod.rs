//! Shared by the `api_*` tests: a real `lariat server` child on a free port and a temporary
//! database, tokens of each role made with `lariat token create`, HTTP helpers, the CLI
//! runner, and a small SSE reader.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_lariat");

/// Generous: CI is a busy 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A `lariat server` child process; killed when dropped.
pub struct TestServer {
    child: Option<Child>,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub admin: String,
    pub operator: String,
    pub viewer: String,
    log: Arc<Mutex<String>>,
    pub http: reqwest::Client,
    args: Vec<String>,
    /// The PostgreSQL database `db` names, when there is one; dropped after the server.
    pg: Option<lariat_db::testing::TestDatabase>,
}

/// Where a test server keeps its tables: `dir/lariat.db`, or, with
/// `LARIAT_TEST_STORE=postgres`, a PostgreSQL database of its own on the test server
/// (`LARIAT_TEST_POSTGRES`), whose URL then goes where the file's path would.
pub fn test_tables(dir: &Path) -> (PathBuf, Option<lariat_db::testing::TestDatabase>) {
    match std::env::var("LARIAT_TEST_STORE").as_deref() {
        Ok("postgres") => {
            // Tests call this inside and outside a runtime: a thread of its own has one.
            let pg = std::thread::spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime")
                    .block_on(lariat_db::testing::TestDatabase::create())
            })
            .join()
            .expect("the test database is made")
            .expect("LARIAT_TEST_STORE=postgres needs LARIAT_TEST_POSTGRES");
            (PathBuf::from(&pg.url), Some(pg))
        }
        Ok("sqlite") | Err(_) => (dir.join("lariat.db"), None),
        Ok(other) => panic!("LARIAT_TEST_STORE={other}: say sqlite or postgres"),
    }
}

/// Runs `sql` on the tables at `db` (a SQLite file or a PostgreSQL URL), as an operator
/// with a SQL shell would behind the server's back; the rows it changed.
pub async fn run_sql(db: &Path, sql: &str) -> u64 {
    use sqlx::Connection;
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    // Once per database's connection type.
    macro_rules! run_on {
        ($connect:expr) => {{
            let mut c = $connect.await.expect("the database opens");
            let done = sqlx::raw_sql(sql)
                .execute(&mut c)
                .await
                .expect("the SQL runs");
            let _ = c.close().await;
            done.rows_affected()
        }};
    }
    if on_postgres() {
        run_on!(sqlx::PgConnection::connect(db.to_str().expect("a URL")))
    } else {
        run_on!(sqlx::SqliteConnection::connect(&format!(
            "sqlite://{}",
            db.display()
        )))
    }
}

/// Whether the test servers keep their tables on PostgreSQL (`LARIAT_TEST_STORE`).
pub fn on_postgres() -> bool {
    std::env::var("LARIAT_TEST_STORE").as_deref() == Ok("postgres")
}

/// Runs `lariat ARGS --db DB` (a local command on a database file, no server) to
/// success; returns what it printed, trimmed.
pub fn lariat_on(db: &Path, args: &[&str]) -> String {
    let mut c = Command::new(BIN);
    c.args(args).arg("--db").arg(db).env("LARIAT_LOG", "warn");
    let out = c.output().expect("lariat runs");
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Create a token with the CLI; returns the secret.
pub fn create_token(db: &Path, role: &str, name: &str) -> String {
    let out = lariat_on(
        db,
        &["token", "create", "--json", "--role", role, "--name", name],
    );
    let v: Value = serde_json::from_str(&out).expect("token create --json prints JSON");
    v["token"].as_str().expect("a token").to_string()
}

impl TestServer {
    /// A server with tokens `root` (admin), `alice` (operator) and `victor` (viewer).
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (db, pg) = test_tables(dir.path());
        let admin = create_token(&db, "admin", "root");
        let operator = create_token(&db, "operator", "alice");
        let viewer = create_token(&db, "viewer", "victor");
        let args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        let log = Arc::new(Mutex::new(String::new()));
        let (child, base) = spawn_server(&db, dir.path(), &args, &log);
        if pg.is_some() {
            let started = log.lock().unwrap().clone();
            assert!(
                started.contains("db=postgres://"),
                "the server is not on the PostgreSQL test database:\n{started}"
            );
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        TestServer {
            child: Some(child),
            base,
            dir,
            db,
            admin,
            operator,
            viewer,
            log,
            http,
            args,
            pg,
        }
    }

    /// Stops the server (SIGKILL) and starts it again on the same database with the same
    /// arguments; it listens on a new port.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let (child, base) = spawn_server(&self.db, self.dir.path(), &self.args, &self.log);
        self.child = Some(child);
        self.base = base;
    }

    /// The typed client of this server, acting with `token`.
    pub fn client(&self, token: &str) -> lariat_client::Client {
        lariat_client::Client::new(&self.base, Some(token.to_string())).unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Wait for the server to exit by itself, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self.http.request(method, self.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let res = rb.send().await.expect("the server answers");
        let status = res.status();
        let text = res.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    pub async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    pub async fn post(&self, token: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(token), body.as_ref())
            .await
    }

    /// Pins `site` to `rev` (`Some`) or removes its pin (`None`), as admin.
    pub async fn pin(&self, site: &str, rev: Option<&str>) {
        let c = self.client(&self.admin);
        let res = match rev {
            Some(rev) => c.pin(site, rev).await.map(|_| ()),
            None => c.unpin(site).await,
        };
        if let Err(e) = res {
            panic!("pin {site} {rev:?}: {e}");
        }
    }

    /// Register a YAML definition as admin; returns the version.
    pub async fn register(&self, yaml: &str) -> i64 {
        let r = self
            .client(&self.admin)
            .register_workflow(yaml.to_string(), lariat_client::DefinitionFormat::Yaml)
            .await
            .unwrap_or_else(|e| panic!("register: {e}"));
        r.version
    }

    /// Submit as the operator; returns the run id.
    pub async fn submit(&self, body: Value) -> String {
        let req: lariat_client::types::SubmitRun =
            serde_json::from_value(body).expect("a submit body");
        let sub = self
            .client(&self.operator)
            .submit(&req)
            .await
            .unwrap_or_else(|e| panic!("submit: {e}"));
        assert!(sub.created, "submit: found run {} instead", sub.run.id);
        sub.run.id.to_string()
    }

    pub async fn run(&self, id: &str) -> Value {
        let (status, v) = self.get(&self.viewer, &format!("/v1/runs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "get run: {v}");
        v
    }

    /// Poll a run until `pred` holds.
    pub async fn wait_run(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let v = self.run(id).await;
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} never got {what}: {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        self.wait_run(id, status, |v| v["status"] == status).await
    }

    pub async fn wait_step(&self, id: &str, step: &str, status: &str) -> Value {
        self.wait_run(id, &format!("{step} {status}"), |v| {
            step_of(v, step)["status"] == status
        })
        .await
    }

    /// Every event of a run, through the paged endpoint.
    pub async fn events(&self, id: &str) -> Vec<Value> {
        self.client(&self.viewer)
            .all_events(id.parse().expect("a run id"))
            .await
            .unwrap_or_else(|e| panic!("events of {id}: {e}"))
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect()
    }

    /// The CLI against this server, with `token` (or none).
    pub fn cli_command(&self, token: Option<&str>, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("LARIAT_SERVER", &self.base)
            .env("LARIAT_LOG", "warn")
            .env("NO_COLOR", "1")
            .env_remove("LARIAT_DB");
        match token {
            Some(t) => c.env("LARIAT_TOKEN", t),
            None => c.env_remove("LARIAT_TOKEN"),
        };
        c
    }

    /// Run the CLI to completion (off the async runtime), with `stdin` as its input.
    pub async fn cli(&self, token: Option<&str>, args: &[&str], stdin: Option<&str>) -> Cli {
        let mut c = self.cli_command(token, args);
        let stdin = stdin.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            c.stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            let mut child = c.spawn().expect("lariat runs");
            if let Some(s) = stdin {
                child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
            }
            Cli::from(child.wait_with_output().unwrap())
        })
        .await
        .unwrap()
    }
}

/// A `lariat server` on `db` with `args`, in the folder `dir` (where a server on
/// PostgreSQL keeps its files), its stderr drained into `log`; returns the child and the
/// URL it listens on.
fn spawn_server(
    db: &Path,
    dir: &Path,
    args: &[String],
    log: &Arc<Mutex<String>>,
) -> (Child, String) {
    let mut c = Command::new(BIN);
    if on_postgres() {
        c.current_dir(dir);
    }
    let mut child = c
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--durability",
            "normal",
        ])
        .args(args)
        .arg("--db")
        .arg(db)
        .env("LARIAT_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the lariat binary starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    let keep = log.clone();
    // Drain stderr for the life of the server, or a full pipe would stall it.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = listening_url(&line) {
                let _ = tx.send(url);
            }
            let mut l = keep.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(u) => (child, u),
        Err(_) => {
            let _ = child.kill();
            panic!("server did not listen:\n{}", log.lock().unwrap());
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- server log ----\n{}", self.log());
        }
    }
}

/// A finished CLI command.
#[derive(Debug)]
pub struct Cli {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Cli {
    fn from(o: Output) -> Self {
        Cli {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Cli {
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "command failed: {self:#?}");
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:#?}"))
    }
}

pub fn listening_url(line: &str) -> Option<String> {
    let at = line.find("listening on http")? + "listening on ".len();
    Some(
        line[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '.'))
            .collect(),
    )
}

pub fn step_of<'a>(run: &'a Value, step: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == step))
        .unwrap_or(&Value::Null)
}

/// Assert the API's error shape and return the code.
pub fn error_code(status: StatusCode, body: &Value) -> String {
    let e = &body["error"];
    assert!(
        e["code"].is_string() && e["message"].is_string() && e.get("details").is_some(),
        "{status}: not the error shape: {body}"
    );
    assert!(
        !e["message"].as_str().unwrap().is_empty(),
        "empty message: {body}"
    );
    e["code"].as_str().unwrap().to_string()
}

/// One SSE message.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Reads SSE messages from a streaming response.
pub struct SseStream {
    res: reqwest::Response,
    buf: String,
    cur: Sse,
}

impl SseStream {
    pub fn new(res: reqwest::Response) -> Self {
        SseStream {
            res,
            buf: String::new(),
            cur: Sse {
                id: None,
                event: None,
                data: String::new(),
            },
        }
    }

    /// The next message with data, or None when the stream ends or `timeout` passes.
    pub async fn next(&mut self, timeout: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(pos) = self.buf.find('\n') {
                let line = self.buf[..pos].trim_end_matches('\r').to_string();
                self.buf.drain(..=pos);
                if line.is_empty() {
                    if !self.cur.data.is_empty() {
                        let m = self.cur.clone();
                        self.cur = Sse {
                            id: None,
                            event: None,
                            data: String::new(),
                        };
                        return Some(m);
                    }
                    continue;
                }
                if line.starts_with(':') {
                    continue;
                }
                let (f, v) = line.split_once(':').unwrap_or((&line, ""));
                let v = v.strip_prefix(' ').unwrap_or(v).to_string();
                match f {
                    "id" => self.cur.id = Some(v),
                    "event" => self.cur.event = Some(v),
                    "data" => {
                        if !self.cur.data.is_empty() {
                            self.cur.data.push('\n');
                        }
                        self.cur.data.push_str(&v);
                    }
                    _ => {}
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk()).await;
            match chunk {
                Ok(Ok(Some(c))) => self.buf.push_str(&String::from_utf8_lossy(&c)),
                _ => return None,
            }
        }
    }

    /// The next event, parsed; panics if none comes in time.
    pub async fn event(&mut self) -> Value {
        let m = self.next(PATIENCE).await.expect("an event in time");
        let v: Value = serde_json::from_str(&m.data).expect("event data is JSON");
        assert_eq!(
            m.id.as_deref(),
            Some(v["seq"].to_string().as_str()),
            "the SSE id is the seq"
        );
        v
    }
}

/// A workflow that waits for a signal between two no-ops.
pub const GATE: &str = r#"
name: gate
steps:
  - {name: first, action: noop}
  - {name: gate, action: await_signal, needs: [first]}
  - {name: last, action: noop, needs: [gate]}
"#;

pub fn submit_body(workflow: &str) -> Value {
    json!({"workflow": workflow})
}

// ---- design repositories ---------------------------------------------------------

/// The design fixtures: `examples/design` (valid) and `examples/broken/<rule>`.
pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// A git repository in a temporary folder, driven by the git CLI.
pub struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    pub fn with(design: &Path) -> Repo {
        let r = Repo {
            dir: tempfile::tempdir().unwrap(),
        };
        r.git(&["init", "-q", "-b", "main"]);
        r.git(&["config", "user.email", "ops@example.com"]);
        r.git(&["config", "user.name", "Ops"]);
        r.commit(design, "first design");
        r
    }

    pub fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Commits the example design with one edit to `file` (the first `from` becomes `to`),
    /// fetches it into `server`, and returns the commit id.
    pub async fn commit_example_edit(
        &self,
        server: &TestServer,
        file: &str,
        from: &str,
        to: &str,
        msg: &str,
    ) -> String {
        let edited = tempfile::tempdir().unwrap();
        copy_dir(&examples().join("design"), edited.path());
        let path = edited.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        let commit = self.commit(edited.path(), msg);
        let (st, v) = server.post(&server.admin, "/v1/designs/sync", None).await;
        assert_eq!(st, StatusCode::OK, "sync: {v}");
        commit
    }

    /// Replaces the tree with a copy of `design`, commits, returns the commit id.
    pub fn commit(&self, design: &Path, msg: &str) -> String {
        let _ = std::fs::remove_dir_all(self.dir.path().join("design"));
        copy_dir(design, &self.dir.path().join("design"));
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", msg]);
        self.git(&["rev-parse", "HEAD"])
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
