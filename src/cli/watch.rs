//! `lariat run watch`: one line per step, kept up to date from the run's event stream.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::bail;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use lariat_client::types::{ListRunsQuery, Run, RunDetail, RunEvent, RunStatus};
use lariat_client::{Client, ClientError};
use serde_json::Value;
use uuid::Uuid;

use super::output::{clock, elapsed, now_ms};
use super::show::{event_line, step_detail};

async fn group_runs(c: &Client, group: Uuid) -> Result<Vec<Run>, ClientError> {
    Ok(c.runs(&ListRunsQuery {
        group: Some(group),
        limit: Some(500),
        ..Default::default()
    })
    .await?
    .runs)
}

/// Follows the runs of a group, one line per run each time one changes; exits 0 when
/// all succeeded, 1 when all ended and one did not.
async fn watch_group(c: &Client, group: Uuid, json: bool) -> anyhow::Result<i32> {
    let mut seen: BTreeMap<Uuid, (RunStatus, i64)> = BTreeMap::new();
    if !json {
        println!("group {group}");
    }
    loop {
        let runs = group_runs(c, group).await?;
        for r in &runs {
            let now = (r.status, r.updated_at);
            if seen.get(&r.id) != Some(&now) {
                seen.insert(r.id, now);
                if json {
                    println!("{}", serde_json::to_string(r)?);
                } else {
                    println!(
                        "{}  run {}  {:<12} {} host(s) at {}",
                        clock(Some(r.updated_at)),
                        r.id,
                        r.status,
                        r.targets.len(),
                        r.owner
                    );
                }
            }
        }
        if !runs.is_empty() && runs.iter().all(|r| final_code(r.status).is_some()) {
            let ok = runs.iter().all(|r| r.status == RunStatus::Succeeded);
            if !json {
                println!("group {group} {}", if ok { "succeeded" } else { "ended" });
            }
            return Ok(if ok { 0 } else { 1 });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Run states a watch ends on, with its exit code.
fn final_code(status: RunStatus) -> Option<i32> {
    match status {
        RunStatus::Succeeded => Some(0),
        s if s.is_final() => Some(1),
        _ => None,
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
    fn new(detail: &RunDetail, json: bool) -> Self {
        let plain = json || !std::io::stderr().is_terminal();
        let multi = if plain {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        } else {
            MultiProgress::new()
        };
        let width = detail
            .steps
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let lines = detail
            .steps
            .iter()
            .map(|s| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_prefix(format!("{:<width$}", s.name));
                Line {
                    name: s.name.clone(),
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
    fn apply(&mut self, e: &RunEvent) -> Option<String> {
        let kind = e.kind.clone();
        if self.json {
            match serde_json::to_string(e) {
                Ok(line) => println!("{line}"),
                Err(err) => eprintln!("warning: cannot print event {}: {err}", e.seq),
            }
        }
        let Some(step) = e.step.as_deref() else {
            if !self.json {
                if kind == "operator" {
                    self.say(&event_line(e));
                } else if kind != "run_created" {
                    self.say(&format!(
                        "{}  run: {}",
                        clock(Some(e.at)),
                        kind.trim_start_matches("run_")
                    ));
                }
            }
            return Some(kind);
        };
        let at = Some(e.at);
        let i = self.lines.iter().position(|l| l.name == step)?;
        let data = e.data.clone().unwrap_or(Value::Null);
        let l = &mut self.lines[i];
        if let Some(item) = e.item.map(u64::from) {
            let s = match kind.as_str() {
                "signalled" => "succeeded",
                "started" => "running",
                "compensation_retrying" => "compensating",
                "reset" => "pending",
                k => k,
            };
            l.items.insert(item, s.to_string());
        } else {
            if let Some(a) = e.attempt {
                l.attempt = u64::from(a);
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
                    l.detail = match data["for"].as_str().unwrap_or("") {
                        "window" => format!("for window {}", data["window"].as_str().unwrap_or("")),
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
                        e.error
                            .as_deref()
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
                    l.detail = e.error.clone().unwrap_or_default();
                }
                "interrupted" => {
                    l.status = "interrupted".into();
                    l.detail = "the server restarted during this attempt".into();
                }
                "cancelled" | "skipped" => {
                    l.status = kind.clone();
                    l.ended = at;
                    l.detail = data["reason"].as_str().unwrap_or("").to_string();
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
    fn finish(&mut self, detail: &RunDetail) {
        let now = now_ms();
        for s in &detail.steps {
            if let Some(l) = self.lines.iter_mut().find(|l| l.name == s.name) {
                l.status = s.task.status.to_string();
                l.attempt = u64::from(s.task.attempt);
                l.started = s.task.started_at;
                l.ended = s.task.ended_at;
                l.detail = step_detail(&s.task, &s.items, now);
                l.items.clear();
            }
        }
        for i in 0..self.lines.len() {
            self.draw(i, now);
            self.lines[i].bar.finish();
        }
    }
}

/// Follow run `id` until it reaches a final state; the exit code says which.
pub async fn watch(c: &Client, id: Uuid, json: bool) -> anyhow::Result<i32> {
    let detail = match c.run(id).await {
        Ok(d) => d,
        // Not a run: the runs of a group (one submit over several sites) are followed
        // as one.
        Err(ClientError::Api { status: 404, .. })
            if !group_runs(c, id).await.unwrap_or_default().is_empty() =>
        {
            return watch_group(c, id, json).await;
        }
        Err(e) => return Err(e.into()),
    };
    let mut view = WatchView::new(&detail, json);
    if !json {
        view.say(&format!(
            "run {id}  {} v{}",
            detail.run.workflow, detail.run.version
        ));
    }
    let mut last: i64 = 0;
    let mut failures = 0u32;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let mut stream = match c.follow(id, last).await {
            Ok(s) => s,
            // The server may be restarting: keep trying for a while, resuming after the
            // last event seen.
            Err(e) if failures < 30 => {
                failures += 1;
                tracing::debug!("event stream: {e}; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        loop {
            let next = tokio::select! {
                n = stream.next() => n,
                _ = tick.tick() => { view.tick(); continue; }
            };
            let e = match next {
                Ok(Some(e)) => e,
                Err(e @ ClientError::StreamEnded(_)) => return Err(e.into()),
                Err(e @ ClientError::Decode { .. }) => return Err(e.into()),
                Ok(None) | Err(_) => break,
            };
            failures = 0;
            last = e.seq;
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
            let now = c.run(id).await?;
            if let Some(code) = final_code(now.run.status) {
                if !json {
                    view.finish(&now);
                    println!("run {id} {}", now.run.status);
                    if let Some(err) = &now.run.error {
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
