//! How a run, its steps and its history read as text.

use std::collections::BTreeMap;

use lariat_client::types::{RunDetail, RunEvent, StepStatus, Task};

use super::output::{clock, elapsed, table, time};

/// What a step's detail column says: why it waits, when it retries, why it failed.
pub fn step_detail(t: &Task, items: &[Task], now: i64) -> String {
    let mut parts = Vec::new();
    match t.status {
        StepStatus::Waiting => {
            let mut s = match &t.waiting_for {
                Some(w) if w.for_ == "window" => format!(
                    "waiting for window {}",
                    w.window.as_deref().unwrap_or_default()
                ),
                Some(w) if !w.for_.is_empty() => format!("waiting for {}", w.for_),
                _ => "waiting".to_string(),
            };
            match t.waiting_for.as_ref() {
                // A window may open days from now: the whole date.
                Some(w) if w.for_ == "window" => match w.until {
                    Some(u) => s.push_str(&format!(", may start at {}", time(Some(u)))),
                    None => s.push_str(", which does not open by itself"),
                },
                Some(w) => {
                    if let Some(u) = w.until {
                        s.push_str(&format!(" until {}", clock(Some(u))));
                    }
                }
                None => {}
            }
            parts.push(s);
        }
        StepStatus::Retrying => {
            if let Some(n) = t.next_retry_at {
                parts.push(format!("next attempt in {}", elapsed(n - now)));
            }
        }
        _ => {}
    }
    if !items.is_empty() {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for i in items {
            *counts.entry(i.status.as_str()).or_default() += 1;
        }
        let c: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        parts.push(format!("items: {}", c.join(", ")));
        // Items held by a window: which, and when the first of them may start.
        let held = items.iter().filter_map(|i| {
            let w = i.waiting_for.as_ref().filter(|w| w.for_ == "window")?;
            Some((w.window.as_deref().unwrap_or_default(), w.until))
        });
        if let Some((name, until)) = held.min_by_key(|(_, u)| u.unwrap_or(i64::MAX)) {
            parts.push(match until {
                Some(u) => format!("window {name} may let them start at {}", time(Some(u))),
                None => format!("window {name} does not open by itself"),
            });
        }
    }
    if let Some(e) = &t.error {
        parts.push(e.clone());
    }
    parts.join("; ")
}

fn task_elapsed(t: &Task, now: i64) -> String {
    match (t.started_at, t.ended_at) {
        (Some(s), Some(e)) if e >= s => elapsed(e - s),
        (Some(s), _) => elapsed(now - s),
        _ => "-".into(),
    }
}

pub fn show_run(d: &RunDetail, now: i64) -> String {
    let r = &d.run;
    let mut out = format!(
        "run {}  {} v{}  {}\ncreated {}{}\n",
        r.id,
        r.workflow,
        r.version,
        r.status,
        time(Some(r.created_at)),
        r.ended_at
            .map(|e| format!(", ended {}", time(Some(e))))
            .unwrap_or_default(),
    );
    if let Some(e) = &r.error {
        out.push_str(&format!("error: {e}\n"));
    }
    let rows: Vec<Vec<String>> = d
        .steps
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.task.status.to_string(),
                s.task.attempt.to_string(),
                clock(s.task.started_at),
                task_elapsed(&s.task, now),
                step_detail(&s.task, &s.items, now),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &["STEP", "STATUS", "ATTEMPT", "STARTED", "ELAPSED", "DETAIL"],
        &rows,
    ));
    out.push('\n');
    out
}

/// One line of a run's history.
pub fn event_line(e: &RunEvent) -> String {
    let mut s = format!("{:>5}  {}  {}", e.seq, time(Some(e.at)), e.kind);
    if let Some(step) = &e.step {
        s.push_str(&format!("  {step}"));
        if let Some(i) = e.item {
            s.push_str(&format!("[{i}]"));
        }
        if let Some(a) = e.attempt {
            s.push_str(&format!(" #{a}"));
        }
    }
    if e.kind == "operator"
        && let Some(d) = &e.data
    {
        let actor = &d["actor"];
        s.push_str(&format!(
            "  {} by {}{}",
            d["verb"].as_str().unwrap_or(""),
            actor["who"].as_str().unwrap_or(""),
            actor["from"]
                .as_str()
                .map(|f| format!(" from {f}"))
                .unwrap_or_default()
        ));
        if !d["detail"].is_null() {
            s.push_str(&format!(" {}", d["detail"]));
        }
    }
    if let Some(err) = &e.error {
        s.push_str(&format!("  error: {err}"));
    }
    s
}
