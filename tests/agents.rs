//! A central node and two site agents as separate `lariat` processes on loopback, each
//! with its own SQLite file; each agent's link to the centre goes through a TCP proxy the
//! test cuts and restores. Runs of a fan-out workflow with a retrying step and a signal
//! gate, on both sites.

mod api_support;
mod link_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use api_support::{BIN, PATIENCE, Repo, copy_dir, examples, listening_url};
use lariat_client::types::{
    AgentHello, EventBatch, LinkEvent, ListRunsQuery, RunDetail, RunStatus, SignalStep, StepStatus,
    SubmitRun, SyncRequest, Targets,
};
use lariat_client::{Client, ClientError, Verbed};
use link_support::Link;
use serde_json::{Value, json};
use uuid::Uuid;

/// Fans out over the site's hosts, retries one step twice, then waits at a gate.
const WORKFLOW: &str = r#"
name: site-gate
steps:
  - {name: check, action: noop}
  - {name: hosts, action: noop, needs: [check], for_each: {over: targets, max_parallel: 2}}
  - name: flaky
    action: fail
    input: {times: 2}
    needs: [hosts]
    retry: {max_attempts: 4, initial_backoff: 100ms, jitter: 0}
  - {name: gate, action: await_signal, needs: [flaky], timeout: 10m}
"#;

/// The example design, and a second site with two hosts of its own.
fn two_site_design(dir: &Path) {
    let src = examples().join("design");
    copy_dir(&src, dir);
    let mut fra = String::from(
        "kind: Site\nname: fra1\nspec:\n  id: fra1\n  display_name: Frankfurt 1\n  agent_endpoint: https://agent.fra1.example.net:8443\n  dhcp_mode: server\n  boot_assets: http://10.77.0.6/assets\n  timezone: Europe/Berlin\n",
    );
    for i in 1..=2 {
        fra.push_str(&format!(
            "---\nkind: Host\nname: fra1-z0{i}\nspec:\n  site: fra1\n  rack: z\n  profile: compute\n  interfaces:\n    - {{name: eno1, mac: \"52:54:00:88:0{i}:01\"}}\n    - {{name: eno2, mac: \"52:54:00:88:0{i}:02\"}}\n    - {{name: bond0, address: 10.77.0.15{i}}}\n    - {{name: bond0.116, address: 10.77.16.15{i}}}\n  bmc: {{address: 10.77.32.15{i}}}\n"
        ));
    }
    std::fs::write(dir.join("fra1.yaml"), fra).unwrap();
}

/// A `lariat` process; killed when dropped, its log printed if the test failed.
struct Proc {
    name: String,
    child: Option<Child>,
    base: String,
    log: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("LARIAT_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("lariat starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let keep = log.clone();
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
        let base = match rx.recv_timeout(PATIENCE) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!("{name} did not listen:\n{}", log.lock().unwrap());
            }
        };
        Proc {
            name: name.to_string(),
            child: Some(child),
            base,
            log,
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.base, None).unwrap()
    }

    /// SIGKILL, and wait for it.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.log.lock().unwrap());
        }
    }
}

fn centre(dir: &Path, repo: &Repo) -> Proc {
    centre_with(dir, repo, &[])
}

fn centre_with(dir: &Path, repo: &Repo, extra: &[&str]) -> Proc {
    let db = dir.join("central.db");
    let mut args = vec![
        "server",
        "--insecure-no-auth",
        "--durability",
        "normal",
        "--listen",
        "127.0.0.1:0",
        "--design-repo",
        repo.path(),
        "--db",
        db.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Proc::spawn("centre", &args, &[])
}

/// Registers `flash`: one item per target, each gated by the example design's `firmware`
/// window with a 30 minute cutoff.
async fn register_flash(c: &Client) {
    c.register_workflow(
        "name: flash\nsteps:\n  - name: flash\n    action: noop\n    for_each: {over: targets}\n    window: {name: firmware, cutoff: 30m}\n".into(),
        lariat_client::DefinitionFormat::Yaml,
    )
    .await
    .unwrap();
}

/// A centre over the two-site design (in `dir`), with the test's workflow registered.
async fn two_site_centre(dir: &Path) -> (Repo, Proc) {
    let design = dir.join("design");
    two_site_design(&design);
    let repo = Repo::with(&design);
    let central = centre(dir, &repo);
    central
        .client()
        .register_workflow(WORKFLOW.into(), lariat_client::DefinitionFormat::Yaml)
        .await
        .unwrap();
    (repo, central)
}

fn site_token(dir: &Path, site: &str) -> String {
    link_support::site_token(&dir.join("central.db"), site)
}

fn agent(dir: &Path, site: &str, link: &Link, token: &str) -> Proc {
    agent_with(dir, site, link, token, &[])
}

fn agent_with(dir: &Path, site: &str, link: &Link, token: &str, extra: &[&str]) -> Proc {
    agent_at(dir, site, &link.url(), Some(token), extra)
}

/// `lariat agent` for `site` dialling `central`, with `token` as its credential when
/// given (else `extra` names one).
fn agent_at(dir: &Path, site: &str, central: &str, token: Option<&str>, extra: &[&str]) -> Proc {
    let db: PathBuf = dir.join(format!("agent-{site}.db"));
    let mut args = vec![
        "agent",
        "--site",
        site,
        "--central",
        central,
        "--insecure-no-auth",
        "--durability",
        "normal",
        "--sync-every",
        "200ms",
        "--listen",
        "127.0.0.1:0",
        "--db",
        db.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let env: Vec<(&str, &str)> = token
        .map(|t| ("LARIAT_AGENT_TOKEN", t))
        .into_iter()
        .collect();
    Proc::spawn(&format!("agent {site}"), &args, &env)
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn step<'a>(d: &'a RunDetail, name: &str) -> Option<&'a lariat_client::types::Step> {
    d.steps.iter().find(|s| s.name == name)
}

/// What must be equal at the centre and at the agent, for one run.
async fn view(c: &Client, run: Uuid) -> Option<(Value, Vec<(i64, String, Option<String>)>)> {
    let d = c.run(run).await.ok()?;
    let rows: Vec<Value> = d
        .steps
        .iter()
        .map(|s| {
            json!({
                "step": s.name, "status": s.task.status, "attempt": s.task.attempt,
                "items": s.items.iter().map(|i| (i.item, i.status, i.attempt)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let events = c
        .all_events(run)
        .await
        .ok()?
        .into_iter()
        .map(|e| (e.seq, e.kind, e.step))
        .collect();
    Some((json!({"status": d.run.status, "steps": rows}), events))
}

async fn same_at_both(centre: &Client, site: &Client, run: Uuid) {
    eventually(
        &format!("run {run} is the same at the centre and at its site"),
        async || {
            let (a, b) = (view(centre, run).await?, view(site, run).await?);
            (a == b).then_some(())
        },
    )
    .await;
    let (_, events) = view(centre, run).await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.0).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "run {run}: no event lost, duplicated or out of order"
    );
}

async fn waiting_at_gate(c: &Client, run: Uuid) {
    eventually(&format!("run {run} waits at its gate"), async || {
        let d = c.run(run).await.ok()?;
        (step(&d, "gate")?.task.status == StepStatus::Waiting).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_keep_working_cut_off_and_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let design = dir.path().join("design");
    two_site_design(&design);
    let repo = Repo::with(&design);
    let mut central = centre(dir.path(), &repo);
    let c = central.client();
    let active = c.designs(5).await.unwrap().active;
    assert!(active.is_some(), "the two-site design is accepted");
    c.register_workflow(WORKFLOW.into(), lariat_client::DefinitionFormat::Yaml)
        .await
        .unwrap();

    let (ams_token, fra_token) = (
        site_token(dir.path(), "ams1"),
        site_token(dir.path(), "fra1"),
    );
    let (ams_link, fra_link) = (Link::to(&central.base).await, Link::to(&central.base).await);
    let mut ams = agent(dir.path(), "ams1", &ams_link, &ams_token);
    let fra = agent(dir.path(), "fra1", &fra_link, &fra_token);
    eventually("both agents connect", async || {
        let sites = c.sites().await.ok()?.sites;
        let connected = sites.iter().filter(|s| s.connected).count();
        (connected == 2).then_some(())
    })
    .await;

    let metrics = c.metrics().await.unwrap();
    assert!(
        metrics.contains("lariat_site_connected{site=\"ams1\"} 1"),
        "site health as gauges: {metrics}"
    );

    // One submit over both sites: a run per site, one group.
    let sub = c
        .submit(&SubmitRun {
            workflow: "site-gate".into(),
            targets: Targets::Names(vec![
                "ams1-a01".into(),
                "ams1-a02".into(),
                "fra1-z01".into(),
                "fra1-z02".into(),
            ]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(sub.created);
    let group = sub
        .run
        .group
        .expect("a submit over two sites makes a group");
    let runs = c
        .runs(&ListRunsQuery {
            group: Some(group),
            ..Default::default()
        })
        .await
        .unwrap()
        .runs;
    assert_eq!(runs.len(), 2, "one run per site");
    let owner = |o: &str| runs.iter().find(|r| r.owner == o).unwrap().id;
    let (ams_run, fra_run) = (owner("agent-ams1"), owner("agent-fra1"));
    for r in &runs {
        let mut t = r.targets.clone();
        t.sort();
        let site = if r.owner == "agent-ams1" {
            "ams1"
        } else {
            "fra1"
        };
        assert!(
            t.iter().all(|h| h.starts_with(site)),
            "{t:?} at {}",
            r.owner
        );
    }
    waiting_at_gate(&c, ams_run).await;
    waiting_at_gate(&c, fra_run).await;
    same_at_both(&c, &ams.client(), ams_run).await;
    let flaky = step(&c.run(ams_run).await.unwrap(), "flaky")
        .unwrap()
        .task
        .clone();
    assert_eq!(
        flaky.attempt, 3,
        "two failed attempts, then success: {flaky:?}"
    );

    // The link of ams1 is cut: the site keeps working.
    ams_link.cut();
    let a = ams.client();
    let local = a
        .submit(&SubmitRun {
            workflow: "site-gate".into(),
            targets: Targets::Names(vec!["ams1-a03".into()]),
            ..Default::default()
        })
        .await
        .expect("the agent's own API takes a run while cut off");
    waiting_at_gate(&a, local.run.id).await;
    // Verbs at the centre for ams1's run are queued: one the agent will carry out, one
    // it will refuse.
    let resume = match c.resume(ams_run).await.unwrap() {
        Verbed::Queued(q) => q,
        Verbed::Done(r) => panic!("a verb on a cut-off site's run was done at once: {r:?}"),
    };
    let signal = match c
        .signal(
            ams_run,
            "gate",
            &SignalStep {
                payload: json!({"by": "centre"}),
                item: None,
            },
        )
        .await
        .unwrap()
    {
        Verbed::Queued(q) => q,
        Verbed::Done(r) => panic!("queued expected: {r:?}"),
    };
    assert_eq!(
        (resume.state.as_str(), signal.state.as_str()),
        ("queued", "queued")
    );
    assert!(resume.seq < signal.seq, "one per-site sequence, in order");
    let ams_status = eventually("the centre shows ams1 disconnected", async || {
        let s = c.sites().await.ok()?.sites;
        let ams = s.into_iter().find(|s| s.site == "ams1")?;
        (!ams.connected).then_some(ams)
    })
    .await;
    assert!(ams_status.last_seen.is_some());
    // The other site is not held up by it.
    c.signal(fra_run, "gate", &SignalStep::default())
        .await
        .unwrap();
    eventually("fra1's run succeeds meanwhile", async || {
        (c.run(fra_run).await.ok()?.run.status == RunStatus::Succeeded).then_some(())
    })
    .await;

    // The centre is killed while ams1 is cut off, and comes back on another port.
    central.kill9();
    let central = centre(dir.path(), &repo);
    let c = central.client();
    ams_link.point_to(&central.base);
    fra_link.point_to(&central.base);
    ams_link.restore();

    // Catch-up: the queued verbs, in order, acknowledged in the run's log.
    eventually(
        "the signal queued at the centre is carried out",
        async || (c.run(ams_run).await.ok()?.run.status == RunStatus::Succeeded).then_some(()),
    )
    .await;
    let resume = c.command(&resume.id).await.unwrap();
    assert_eq!(resume.state, "refused", "{resume:?}");
    assert!(
        resume
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("only a paused run can be resumed"),
        "{resume:?}"
    );
    assert_eq!(c.command(&signal.id).await.unwrap().state, "applied");
    let kinds: Vec<String> = c
        .all_events(ams_run)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    let refused = kinds.iter().position(|k| k == "command_refused").unwrap();
    let signalled = kinds.iter().position(|k| k == "signalled").unwrap();
    assert!(refused < signalled, "delivered in order: {kinds:?}");
    same_at_both(&c, &a, ams_run).await;
    // The run submitted at the agent while cut off is at the centre now.
    same_at_both(&c, &a, local.run.id).await;
    // The group is followed as one: both of its runs have succeeded.
    let out = Command::new(BIN)
        .args([
            "run",
            "watch",
            &group.to_string(),
            "--server",
            &central.base,
        ])
        .env("LARIAT_LOG", "warn")
        .env_remove("LARIAT_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(&format!("group {group} succeeded")), "{text}");

    // The agent is killed while it ships a backlog, and catches up after its restart.
    ams_link.cut();
    for _ in 0..5 {
        let r = a
            .submit(&SubmitRun {
                workflow: "site-gate".into(),
                targets: Targets::Names(vec!["ams1-b01".into()]),
                ..Default::default()
            })
            .await
            .unwrap();
        a.signal(r.run.id, "gate", &SignalStep::default())
            .await
            .ok();
    }
    ams_link.restore();
    tokio::time::sleep(Duration::from_millis(150)).await;
    ams.kill9();
    let ams = agent(dir.path(), "ams1", &ams_link, &ams_token);
    let a = ams.client();
    let mine = a
        .runs(&ListRunsQuery {
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap()
        .runs;
    for r in &mine {
        same_at_both(&c, &a, r.id).await;
    }
    // The inventory is a projection of the replicated rows: the same at both.
    for h in ["ams1-a01", "ams1-a03", "ams1-b01"] {
        let (here, there) = (
            c.inventory_host(h).await.unwrap(),
            a.inventory_host(h).await.unwrap(),
        );
        assert_eq!(here, there, "{h}: the centre and its site agree");
        assert!(!here.history.is_empty(), "{h}: runs worked on it: {here:?}");
        assert_eq!(here.history[0].workflow, "site-gate");
    }
    // The agent serves the web UI for its own site: its runs, from its own database.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed = http
        .post(format!("{}/ui/signin", ams.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=any&next=%2Fui%2Fhosts")
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), reqwest::StatusCode::SEE_OTHER);
    let cookie = signed.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let page = http
        .get(format!("{}/ui/hosts", ams.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("ams1-a01") && html.contains("site-gate"),
        "{html}"
    );
    // Its runs list and sites page draw too, though its API lists no sites.
    for (path, shows) in [
        ("/ui/runs", "site-gate"),
        ("/ui/sites", "This is a site agent"),
    ] {
        let page = http
            .get(format!("{}{path}", ams.base))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), reqwest::StatusCode::OK, "{path}");
        let html = page.text().await.unwrap();
        assert!(html.contains(shows), "{path}: {html}");
    }
    let at_centre: BTreeMap<Uuid, RunStatus> = c
        .runs(&ListRunsQuery {
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap()
        .runs
        .into_iter()
        .filter(|r| r.owner == "agent-ams1")
        .map(|r| (r.id, r.status))
        .collect();
    assert_eq!(
        at_centre.len(),
        mine.len(),
        "every run of ams1 is at the centre"
    );
    drop(fra);
}

/// What the centre has applied of `site`'s log.
async fn applied(c: &Client, site: &str) -> Option<i64> {
    let s = c.sites().await.ok()?.sites;
    Some(s.into_iter().find(|s| s.site == site)?.applied)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_in_the_middle_of_catch_up_the_centre_and_the_agent_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, mut central) = two_site_centre(dir.path()).await;
    let c = central.client();
    let token = site_token(dir.path(), "ams1");
    let link = Link::to(&central.base).await;
    // Small batches, so a backlog takes many requests to ship.
    let small = ["--link-batch", "4"];
    let mut ams = agent_with(dir.path(), "ams1", &link, &token, &small);
    eventually("ams1 connects", async || {
        let s = c.sites().await.ok()?.sites;
        s.iter()
            .any(|s| s.site == "ams1" && s.connected)
            .then_some(())
    })
    .await;
    let a = ams.client();
    eventually("the workflow reaches ams1", async || {
        a.workflow("site-gate").await.ok().map(|_| ())
    })
    .await;
    let before = applied(&c, "ams1").await.unwrap();

    // A backlog made while cut off: runs submitted at the agent, each to its end.
    link.cut();
    let mut runs = Vec::new();
    for host in [
        "ams1-a01", "ams1-a02", "ams1-a03", "ams1-a01", "ams1-a02", "ams1-a03",
    ] {
        let r = a
            .submit(&SubmitRun {
                workflow: "site-gate".into(),
                targets: Targets::Names(vec![host.into()]),
                ..Default::default()
            })
            .await
            .unwrap()
            .run
            .id;
        runs.push(r);
    }
    for &r in &runs {
        waiting_at_gate(&a, r).await;
        a.signal(r, "gate", &SignalStep::default()).await.unwrap();
    }
    for &r in &runs {
        eventually("the run succeeds at its site", async || {
            (a.run(r).await.ok()?.run.status == RunStatus::Succeeded).then_some(())
        })
        .await;
    }

    // The link comes back thin; the centre is killed once part of the backlog is in.
    link.slow_down(60);
    link.restore();
    let at_kill = eventually("catch-up starts", async || {
        applied(&c, "ams1").await.filter(|&n| n > before)
    })
    .await;
    central.kill9();
    let central = centre(dir.path(), &repo);
    let c = central.client();
    link.point_to(&central.base);
    let after = applied(&c, "ams1").await.unwrap();
    assert!(
        after >= at_kill,
        "what the centre had applied survives its SIGKILL: {after} < {at_kill}"
    );

    // The agent is killed while it ships the rest.
    let resumed = eventually("catch-up resumes at the restarted centre", async || {
        applied(&c, "ams1").await.filter(|&n| n > after)
    })
    .await;
    ams.kill9();
    link.slow_down(0);
    let ams = agent_with(dir.path(), "ams1", &link, &token, &small);
    let a = ams.client();
    for &r in &runs {
        same_at_both(&c, &a, r).await;
    }
    let done = applied(&c, "ams1").await.unwrap();
    assert!(
        before < at_kill && at_kill <= after && after < resumed && resumed < done,
        "both kills fell inside the catch-up: {before} < {at_kill} <= {after} < {resumed} < {done}"
    );
    let s = c.sites().await.unwrap().sites;
    let ams1 = s.iter().find(|s| s.site == "ams1").unwrap();
    assert_eq!(ams1.runs_active, 0, "{ams1:?}");
}

/// A path that dies without a reset (no FIN, no RST: the packets just stop) holds a
/// request of the link only until the link's own timeout, not for the HTTP client's
/// minute: the agent drops the connection, dials again, and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_stuck_on_a_silent_connection_dials_again() {
    let dir = tempfile::tempdir().unwrap();
    let (_repo, central) = two_site_centre(dir.path()).await;
    let c = central.client();
    let token = site_token(dir.path(), "ams1");
    let link = Link::to(&central.base).await;
    let ams = agent_with(dir.path(), "ams1", &link, &token, &["--link-timeout", "2s"]);
    let a = ams.client();
    eventually("the workflow reaches ams1", async || {
        a.workflow("site-gate").await.ok().map(|_| ())
    })
    .await;

    // The link's open connection and every new one go silent; the site works on.
    link.stall();
    let run = a
        .submit(&SubmitRun {
            workflow: "site-gate".into(),
            targets: Targets::Names(vec!["ams1-a01".into()]),
            ..Default::default()
        })
        .await
        .unwrap()
        .run
        .id;
    waiting_at_gate(&a, run).await;
    a.signal(run, "gate", &SignalStep::default()).await.unwrap();
    eventually("the run succeeds at its site", async || {
        (a.run(run).await.ok()?.run.status == RunStatus::Succeeded).then_some(())
    })
    .await;
    // Long enough for the link's requests to be stuck in the silence.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // New connections work again; the silent ones stay silent, and only the link's
    // timeout gets the agent off them. The HTTP client alone would wait 60 s.
    link.restore();
    let back = Instant::now();
    loop {
        if let Ok(d) = c.run(run).await
            && d.run.status == RunStatus::Succeeded
        {
            break;
        }
        if back.elapsed() > Duration::from_secs(25) {
            // The log is copied out first: Proc's Drop prints it, and a lock held while
            // panicking would be poisoned for it.
            let log = ams.log.lock().unwrap().clone();
            panic!("the run never reached the centre after the path came back:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    same_at_both(&c, &a, run).await;
    assert!(
        ams.log
            .lock()
            .unwrap()
            .contains("the centre did not answer within 2s"),
        "the agent says why it dropped the connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_credential_speaks_for_its_site_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_repo, central) = two_site_centre(dir.path()).await;
    let c = central.client();
    let ams_token = site_token(dir.path(), "ams1");
    let fra_token = site_token(dir.path(), "fra1");
    let link = Link::to(&central.base).await;
    let fra = agent(dir.path(), "fra1", &link, &fra_token);
    eventually("fra1's agent registers", async || {
        let s = c.sites().await.ok()?.sites;
        s.iter()
            .any(|s| s.site == "fra1" && s.connected)
            .then_some(())
    })
    .await;
    // Its design holds its own two hosts, not ams1's.
    eventually("fra1's agent has its part of the design", async || {
        let log = fra.log.lock().unwrap().clone();
        log.lines()
            .any(|l| l.contains("design from the centre") && l.ends_with("hosts=2"))
            .then_some(())
    })
    .await;
    // Which its own API answers.
    let at_fra = fra.client();
    let hosts = at_fra
        .hosts(&lariat_client::types::HostsQuery {
            sites: Some("fra1,ams1".into()),
            mode: Some("union".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(hosts.hosts, ["fra1-z01", "fra1-z02"], "{hosts:?}");
    assert_eq!(
        hosts.revision,
        c.designs(1).await.unwrap().active.map(|r| r.commit)
    );
    at_fra.resolved_host("fra1-z02").await.unwrap();
    let err = at_fra.resolved_host("ams1-a01").await.unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 404, .. }), "{err}");
    let fra_run = c
        .submit(&SubmitRun {
            workflow: "site-gate".into(),
            targets: Targets::Names(vec!["fra1-z01".into()]),
            ..Default::default()
        })
        .await
        .unwrap()
        .run
        .id;
    waiting_at_gate(&c, fra_run).await;
    // A command for fra1 that leaves the run as it is (a resume of a running run is
    // refused by the agent), so that a cancelled run below can only mean a forgery.
    let queued = c.resume(fra_run).await.unwrap();
    assert!(matches!(queued, Verbed::Queued(_)));

    let as_ams = Client::new(&central.base, Some(ams_token)).unwrap();
    // ams1's credential cannot read fra1's commands ...
    let err = as_ams
        .agent_sync(&SyncRequest {
            executor: "agent-fra1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 409, .. }), "{err}");
    // ... nor register as fra1's agent, nor push events for fra1's runs.
    as_ams
        .agent_hello(&AgentHello {
            executor: "agent-ams1".into(),
            version: "test".into(),
            owner_seq: 0,
        })
        .await
        .unwrap();
    let forged = LinkEvent {
        run_id: fra_run,
        seq: 99,
        owner: "agent-fra1".into(),
        owner_seq: 99,
        at: 0,
        kind: "run_cancelled".into(),
        step: None,
        item: None,
        attempt: None,
        error: None,
        data: None,
    };
    let err = as_ams
        .agent_events(&EventBatch {
            events: vec![forged.clone()],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 403, .. }), "{err}");
    let err = as_ams
        .agent_events(&EventBatch {
            events: vec![LinkEvent {
                owner: "agent-ams1".into(),
                ..forged
            }],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 403, .. }), "{err}");
    assert_ne!(
        c.run(fra_run).await.unwrap().run.status,
        RunStatus::Cancelled,
        "nothing forged was applied"
    );
    let events = c.all_events(fra_run).await.unwrap();
    assert!(events.iter().all(|e| e.seq != 99), "{events:?}");
    // A second agent claiming fra1 is refused, and an unknown site too.
    let err = Client::new(&central.base, Some(fra_token))
        .unwrap()
        .agent_hello(&AgentHello {
            executor: "agent-fra1-bis".into(),
            version: "test".into(),
            owner_seq: 0,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Api { status: 409, message, .. } if message.contains("cannot claim it too")),
        "{err}"
    );
    let nowhere = site_token(dir.path(), "nowhere");
    let err = Client::new(&central.base, Some(nowhere))
        .unwrap()
        .agent_hello(&AgentHello {
            executor: "agent-nowhere".into(),
            version: "test".into(),
            owner_seq: 0,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 404, .. }), "{err}");
    // An operator token is no site credential.
    let err = Client::new(&central.base, Some("lariat_nope".into()))
        .unwrap()
        .agent_hello(&AgentHello {
            executor: "x".into(),
            version: "test".into(),
            owner_seq: 0,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 401, .. }), "{err}");
}

/// PEM files of a test PKI in `dir`: a CA, the centre's certificate for 127.0.0.1, and
/// client certificates of the CA for each of `clients` (a DNS name each), as
/// `<name>.crt`/`<name>.key`; `rogue.crt`/`rogue.key` come from another CA and name
/// ams1.
fn pki(dir: &Path, clients: &[&str]) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
    let ca = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
    };
    let (ours, theirs) = (ca("lariat test CA"), ca("someone else's CA"));
    std::fs::write(dir.join("ca.crt"), ours.pem()).unwrap();
    let leaf = |name: &str, sans: Vec<SanType>, issuer: &CertifiedIssuer<'_, KeyPair>| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    };
    let dns = |n: &str| SanType::DnsName(n.try_into().unwrap());
    leaf(
        "centre",
        vec![SanType::IpAddress([127, 0, 0, 1].into()), dns("localhost")],
        &ours,
    );
    for c in clients {
        leaf(c, vec![dns(c)], &ours);
    }
    leaf("rogue", vec![dns("ams1")], &theirs);
}

/// A client of the centre over TLS, as the client certificate `who` (none when empty).
fn tls_client(dir: &Path, base: &str, who: &str) -> Client {
    let identity = (!who.is_empty()).then(|| {
        let mut pem = std::fs::read(dir.join(format!("{who}.crt"))).unwrap();
        pem.extend(std::fs::read(dir.join(format!("{who}.key"))).unwrap());
        pem
    });
    let tls = lariat_client::ClientTls {
        identity,
        ca: Some(std::fs::read(dir.join("ca.crt")).unwrap()),
    };
    Client::with_tls(base, None, &tls).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_speaks_for_its_site_by_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let design = dir.path().join("design");
    two_site_design(&design);
    let repo = Repo::with(&design);
    let pki_dir = dir.path().join("pki");
    std::fs::create_dir_all(&pki_dir).unwrap();
    pki(&pki_dir, &["ams1", "fra1", "nowhere"]);
    let file = |n: &str| pki_dir.join(n).to_str().unwrap().to_string();
    let (cert, key, ca) = (file("centre.crt"), file("centre.key"), file("ca.crt"));
    let tls = ["--tls-cert", &cert, "--tls-key", &key, "--client-ca", &ca];
    let central = centre_with(dir.path(), &repo, &tls);
    assert!(central.base.starts_with("https://"), "{}", central.base);
    // Operators without a certificate still come in (here without a token: no-auth).
    let c = tls_client(&pki_dir, &central.base, "");
    c.register_workflow(WORKFLOW.into(), lariat_client::DefinitionFormat::Yaml)
        .await
        .unwrap();
    // The CLI reaches it with the private CA, and not without.
    let cli = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["workflow", "list", "--server", &central.base])
            .args(extra)
            .env_remove("LARIAT_CA")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = cli(&["--ca", &ca]);
    assert!(ok && text.contains("site-gate"), "{text}");
    let (ok, text) = cli(&[]);
    assert!(!ok && text.to_lowercase().contains("certificate"), "{text}");

    // An agent with ams1's certificate and no token replicates its runs.
    let central_url = central.base.replace("127.0.0.1", "localhost");
    let (ams_cert, ams_key) = (file("ams1.crt"), file("ams1.key"));
    // Its local API speaks TLS too; HTTP boot, which PXE firmware needs plain, has a
    // listener of its own.
    let ams = agent_at(
        dir.path(),
        "ams1",
        &central_url,
        None,
        &[
            "--tls-cert",
            &ams_cert,
            "--tls-key",
            &ams_key,
            "--ca",
            &ca,
            "--api-tls-cert",
            &cert,
            "--api-tls-key",
            &key,
            "--http-boot",
            "--boot-listen",
            "127.0.0.1:0",
        ],
    );
    assert!(ams.base.starts_with("https://"), "{}", ams.base);
    eventually("ams1 connects by certificate", async || {
        let s = c.sites().await.ok()?.sites;
        s.iter()
            .any(|s| s.site == "ams1" && s.connected)
            .then_some(())
    })
    .await;
    let run = c
        .submit(&SubmitRun {
            workflow: "site-gate".into(),
            targets: Targets::Names(vec!["ams1-a01".into()]),
            ..Default::default()
        })
        .await
        .unwrap()
        .run;
    assert_eq!(run.owner, "agent-ams1");
    waiting_at_gate(&c, run.id).await;
    c.signal(run.id, "gate", &SignalStep::default())
        .await
        .unwrap();
    eventually("the run succeeds, replicated over mutual TLS", async || {
        (c.run(run.id).await.ok()?.run.status == RunStatus::Succeeded).then_some(())
    })
    .await;
    let local = tls_client(&pki_dir, &ams.base, "");
    same_at_both(&c, &local, run.id).await;
    let boot = {
        let log = ams.log.lock().unwrap();
        let at = log
            .find("HTTP boot served on ")
            .expect("the boot listener is logged")
            + 20;
        log[at..].split_whitespace().next().unwrap().to_string()
    };
    assert!(boot.starts_with("http://"), "{boot}");
    let plain = reqwest::Client::new();
    let script = plain
        .get(format!("{boot}/boot/ipxe?mac=52:54:00:00:00:99"))
        .send()
        .await
        .expect("HTTP boot answers in plain HTTP");
    assert!(!script.status().is_server_error(), "{}", script.status());
    let api = plain.get(format!("{boot}/v1/runs")).send().await.unwrap();
    assert_eq!(
        api.status(),
        reqwest::StatusCode::NOT_FOUND,
        "the API is not on the boot listener"
    );
    // With TLS on the API, HTTP boot on the same listener is refused at start.
    let refused = Command::new(BIN)
        .args([
            "agent",
            "--site",
            "ams1",
            "--central",
            &central_url,
            "--db",
            dir.path().join("refused.db").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--api-tls-cert",
            &cert,
            "--api-tls-key",
            &key,
            "--http-boot",
        ])
        .env("LARIAT_AGENT_TOKEN", "lariat_site_unused")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("--boot-listen"),
        "{}: {said}",
        refused.status
    );

    // fra1's certificate speaks for fra1 only.
    let fra = tls_client(&pki_dir, &central.base, "fra1");
    let err = fra
        .agent_sync(&SyncRequest {
            executor: "agent-ams1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 409, .. }), "{err}");
    let forged = LinkEvent {
        run_id: run.id,
        seq: 99,
        owner: "agent-ams1".into(),
        owner_seq: 99,
        at: 0,
        kind: "run_cancelled".into(),
        step: None,
        item: None,
        attempt: None,
        error: None,
        data: None,
    };
    fra.agent_hello(&AgentHello {
        executor: "agent-fra1".into(),
        version: "test".into(),
        owner_seq: 0,
    })
    .await
    .unwrap();
    let err = fra
        .agent_events(&EventBatch {
            events: vec![forged],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 403, .. }), "{err}");
    // A certificate of the CA that names no site, and none at all, are no credential.
    let hello = AgentHello {
        executor: "agent-x".into(),
        version: "test".into(),
        owner_seq: 0,
    };
    for who in ["nowhere", ""] {
        let err = tls_client(&pki_dir, &central.base, who)
            .agent_hello(&hello)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ClientError::Api { status: 401, .. }),
            "{who}: {err}"
        );
    }
    // A certificate of another CA does not get through the handshake.
    let err = tls_client(&pki_dir, &central.base, "rogue")
        .agent_hello(&hello)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    assert_eq!(
        c.run(run.id).await.unwrap().run.status,
        RunStatus::Succeeded,
        "nothing forged was applied"
    );
}

/// A `run_created` event of `owner` for `run`, `seq` in its log and `owner_seq` in the
/// owner's.
fn created(run: Uuid, owner: &str, owner_seq: i64) -> LinkEvent {
    LinkEvent {
        run_id: run,
        seq: 1,
        owner: owner.into(),
        owner_seq,
        at: 1,
        kind: "run_created".into(),
        step: None,
        item: None,
        attempt: None,
        error: None,
        data: Some(json!({"workflow": "site-gate", "version": 1, "steps": ["check"]})),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_with_gaps_repeats_or_garbage_change_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (_repo, central) = two_site_centre(dir.path()).await;
    let c = central.client();
    // Speak as ams1's agent by hand.
    let token = site_token(dir.path(), "ams1");
    let ams = Client::new(&central.base, Some(token.clone())).unwrap();
    let hello = |owner_seq| AgentHello {
        executor: "agent-ams1".into(),
        version: "test".into(),
        owner_seq,
    };
    assert_eq!(ams.agent_hello(&hello(0)).await.unwrap().cursor, 0);
    let run = Uuid::now_v7();
    let first = created(run, "agent-ams1", 1);
    let a = ams
        .agent_events(&EventBatch {
            events: vec![first.clone()],
        })
        .await
        .unwrap();
    assert_eq!((a.applied, a.skipped, a.cursor), (1, 0, 1));
    // A repeat is skipped.
    let again = ams
        .agent_events(&EventBatch {
            events: vec![first.clone()],
        })
        .await
        .unwrap();
    assert_eq!((again.applied, again.skipped, again.cursor), (0, 1, 1));
    // A gap is not applied; the answer says where to send from.
    let gap = ams
        .agent_events(&EventBatch {
            events: vec![LinkEvent {
                seq: 3,
                owner_seq: 3,
                kind: "run_paused".into(),
                data: None,
                ..first.clone()
            }],
        })
        .await
        .unwrap();
    assert_eq!((gap.applied, gap.cursor), (0, 1), "{gap:?}");
    assert!(
        gap.gap.as_deref().unwrap_or("").contains("expected seq 2"),
        "{gap:?}"
    );
    // An event that does not read is refused with its place named.
    let err = ams
        .agent_events(&EventBatch {
            events: vec![LinkEvent {
                seq: 2,
                owner_seq: 2,
                kind: "teleported".into(),
                data: None,
                ..first.clone()
            }],
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Api { status: 400, message, .. } if message.contains(&format!("{run}#2"))),
        "{err}"
    );
    // A body that is not a batch at all.
    let res = reqwest::Client::new()
        .post(format!("{}/v1/agent/events", central.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"events\": 7}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::BAD_REQUEST);
    // A batch over the centre's limit is refused whole, before any of it is read.
    let huge = "x".repeat(lariat_client::types::EVENT_BATCH_LIMIT);
    let err = ams
        .agent_events(&EventBatch {
            events: vec![LinkEvent {
                seq: 2,
                owner_seq: 2,
                kind: "run_paused".into(),
                error: Some(huge),
                data: None,
                ..first.clone()
            }],
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Api { status: 413, message, .. } if message.contains("larger than")),
        "{err}"
    );
    // The run as accepted is untouched by all of that.
    let events = c.all_events(run).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(c.run(run).await.unwrap().run.status, RunStatus::Running);
    // One event over the API's general body limit (a large run input) still travels:
    // refusing it would stall the site's whole log behind it.
    let big = Uuid::now_v7();
    let mut created_big = created(big, "agent-ams1", 2);
    created_big.data = Some(json!({
        "workflow": "site-gate", "version": 1, "steps": ["check"],
        "input": {"blob": "y".repeat(2 << 20)},
    }));
    let a = ams
        .agent_events(&EventBatch {
            events: vec![created_big],
        })
        .await
        .unwrap();
    assert_eq!((a.applied, a.cursor), (1, 2), "{a:?}");

    // An agent whose database was lost comes back with a shorter log: refused, nothing
    // merged, until an operator resets the site.
    let err = ams.agent_hello(&hello(0)).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Api { status: 409, message, .. } if message.contains("lost or replaced")),
        "{err}"
    );
    api_support::lariat_on(&dir.path().join("central.db"), &["site", "reset", "ams1"]);
    ams.agent_hello(&AgentHello {
        executor: "agent-ams1-new".into(),
        version: "test".into(),
        owner_seq: 0,
    })
    .await
    .expect("a new agent registers once the site is reset");
    assert_eq!(c.all_events(run).await.unwrap().len(), 1, "history kept");
}

/// A site cut off from the centre opens its maintenance window on time: the agent
/// evaluates the windows of the design it keeps, by its own clock (shifted to seconds
/// before the example design's Tuesday-night `firmware` window), and the run it took
/// while cut off waits for the window, runs in it, and reaches the centre afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_site_opens_its_window_on_time() {
    // Tuesday 2027-06-01 01:00 in Amsterdam.
    const OPENS_MS: i64 = 1_811_804_400_000;
    let dir = tempfile::tempdir().unwrap();
    let (_repo, central) = two_site_centre(dir.path()).await;
    let c = central.client();
    register_flash(&c).await;
    let link = Link::to(&central.base).await;
    let ams = agent_with(
        dir.path(),
        "ams1",
        &link,
        &site_token(dir.path(), "ams1"),
        &["--clock-start", "2027-05-31T22:59:40Z"],
    );
    let a = ams.client();
    eventually("the agent connects and keeps the design", async || {
        let sites = c.sites().await.ok()?.sites;
        let s = sites.iter().find(|s| s.site == "ams1")?;
        (s.connected && a.windows().await.is_ok_and(|w| w.revision.is_some())).then_some(())
    })
    .await;

    link.cut();
    let run = a
        .submit(&SubmitRun {
            workflow: "flash".into(),
            targets: Targets::Names(vec!["ams1-a01".into(), "ams1-a02".into()]),
            ..Default::default()
        })
        .await
        .expect("the agent takes a run while cut off")
        .run
        .id;
    let d = eventually("the items wait for the window", async || {
        let d = a.run(run).await.ok()?;
        let items = &step(&d, "flash")?.items;
        (items.len() == 2 && items.iter().all(|i| i.status == StepStatus::Waiting)).then_some(d)
    })
    .await;
    for i in &step(&d, "flash").unwrap().items {
        let w = i.waiting_for.as_ref().unwrap();
        assert_eq!(
            (w.for_.as_str(), w.window.as_deref(), w.until),
            ("window", Some("firmware"), Some(OPENS_MS)),
            "{i:?}"
        );
    }
    let windows = a.windows().await.unwrap();
    let fw = windows
        .windows
        .iter()
        .find(|w| w.name == "firmware")
        .unwrap();
    assert_eq!(fw.waiting.get("agent-ams1"), Some(&2), "{fw:?}");

    let done = eventually(
        "the run finishes inside the window, still cut off",
        async || {
            let d = a.run(run).await.ok()?;
            (d.run.status == RunStatus::Succeeded).then_some(d)
        },
    )
    .await;
    for i in &step(&done, "flash").unwrap().items {
        let started = i.started_at.unwrap();
        assert!(
            started >= OPENS_MS,
            "started {} ms early",
            OPENS_MS - started
        );
        println!(
            "window opened -> item started at the cut-off agent: {} ms",
            started - OPENS_MS
        );
    }
    link.restore();
    same_at_both(&c, &a, run).await;
}

/// A window override made at the centre reaches the agent with its sync, is kept in the
/// agent's database, and opens the window there after a restart while cut off; the
/// centre shows which agents have not taken an override yet, and an agent refuses to
/// make one itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_made_at_the_centre_opens_the_window_at_a_cut_off_agent() {
    let dir = tempfile::tempdir().unwrap();
    let design = dir.path().join("design");
    two_site_design(&design);
    let repo = Repo::with(&design);
    // Monday noon UTC: `firmware` next opens at 23:00 UTC.
    let clock = ["--clock-start", "2027-05-31T12:00:00Z"];
    let central = centre_with(dir.path(), &repo, &clock);
    let c = central.client();
    register_flash(&c).await;
    let link = Link::to(&central.base).await;
    let token = site_token(dir.path(), "ams1");
    let mut ams = agent_with(dir.path(), "ams1", &link, &token, &clock);
    eventually("the agent connects", async || {
        let sites = c.sites().await.ok()?.sites;
        sites
            .iter()
            .find(|s| s.site == "ams1" && s.connected)
            .map(|_| ())
    })
    .await;
    let req = lariat_client::types::OverrideRequest {
        duration: Some("2h".into()),
        reason: "CVE hotfix".into(),
        site: Some("ams1".into()),
    };
    let refused = ams.client().override_window("firmware", "open", &req).await;
    assert!(
        matches!(&refused, Err(ClientError::Api { status: 409, .. })),
        "an agent does not make overrides: {refused:?}"
    );

    link.cut();
    let made = c.override_window("firmware", "open", &req).await.unwrap();
    assert_eq!(made.awaiting, vec!["ams1".to_string()], "{made:?}");
    link.restore();
    eventually("the agent takes the override", async || {
        let w = c.window("firmware").await.ok()?;
        let o = w.window.overrides.first()?;
        o.awaiting.is_empty().then_some(())
    })
    .await;
    let a = ams.client();
    let held = a.window("firmware").await.unwrap();
    assert_eq!(held.window.overrides.len(), 1, "{held:?}");
    assert!(
        held.window.open,
        "open at the agent by the override: {held:?}"
    );

    // Cut off and restarted (later by its clock, still inside the override): the
    // override comes from the agent's own database, and the run starts at once.
    link.cut();
    ams.kill9();
    let ams = agent_with(
        dir.path(),
        "ams1",
        &link,
        &token,
        &["--clock-start", "2027-05-31T12:05:00Z"],
    );
    let a = ams.client();
    let run = a
        .submit(&SubmitRun {
            workflow: "flash".into(),
            targets: Targets::Names(vec!["ams1-a01".into()]),
            ..Default::default()
        })
        .await
        .expect("the agent takes a run while cut off")
        .run
        .id;
    eventually(
        "the run finishes in the overridden window, cut off",
        async || {
            let d = a.run(run).await.ok()?;
            (d.run.status == RunStatus::Succeeded).then_some(())
        },
    )
    .await;
    link.restore();
    same_at_both(&c, &a, run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_centre_takes_a_renewed_certificate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let design = dir.path().join("design");
    two_site_design(&design);
    let repo = Repo::with(&design);
    let (old_pki, new_pki) = (dir.path().join("old"), dir.path().join("new"));
    for d in [&old_pki, &new_pki] {
        std::fs::create_dir_all(d).unwrap();
        pki(d, &[]);
    }
    let (live_cert, live_key) = (dir.path().join("live.crt"), dir.path().join("live.key"));
    let install = |from: &Path| {
        std::fs::copy(from.join("centre.crt"), &live_cert).unwrap();
        std::fs::copy(from.join("centre.key"), &live_key).unwrap();
    };
    install(&old_pki);
    let central = centre_with(
        dir.path(),
        &repo,
        &[
            "--tls-cert",
            live_cert.to_str().unwrap(),
            "--tls-key",
            live_key.to_str().unwrap(),
            "--tls-reload-every",
            "100ms",
        ],
    );
    let answers = async |pki: &Path| tls_client(pki, &central.base, "").ready().await.is_ok();
    assert!(answers(&old_pki).await);
    assert!(
        !answers(&new_pki).await,
        "a certificate of another CA is not trusted"
    );

    // A file that cannot be used is reported and the certificate in force stays.
    std::fs::write(&live_cert, "not a certificate\n").unwrap();
    eventually("the bad file is reported", async || {
        central
            .log
            .lock()
            .unwrap()
            .contains("cannot be used, keeping the ones in force")
            .then_some(())
    })
    .await;
    assert!(answers(&old_pki).await);

    // The renewed certificate holds for new connections, without a restart.
    install(&new_pki);
    eventually("the renewed certificate is served", async || {
        answers(&new_pki).await.then_some(())
    })
    .await;
    assert!(!answers(&old_pki).await);
    assert!(
        central
            .log
            .lock()
            .unwrap()
            .contains("TLS certificate reloaded")
    );
}
