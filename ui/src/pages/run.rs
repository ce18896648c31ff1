//! One run: its DAG, each step with its items and attempts, its history, its verbs with a
//! confirmation, and its live stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use lariat_api_types::{
    EventPage, RunDetail, RunStatus, Step, StepStatus, StreamQuery, Task, WorkflowVersion,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Ui;
use crate::api::q;
use crate::dag;
use crate::error::UiError;
use crate::extract::{Following, Mutation, PageQuery, Signed};
use crate::render::page;

/// Items shown per page of one state group.
const ITEMS_PAGE: usize = 50;
const EVENTS_PAGE: u32 = 200;

/// Groups are listed in this order: what needs an operator first.
const GROUP_ORDER: [StepStatus; 11] = [
    StepStatus::Failed,
    StepStatus::Retrying,
    StepStatus::Waiting,
    StepStatus::Running,
    StepStatus::Compensating,
    StepStatus::Ready,
    StepStatus::Pending,
    StepStatus::Succeeded,
    StepStatus::Compensated,
    StepStatus::Skipped,
    StepStatus::Cancelled,
];

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DetailQuery {
    /// `step:status`: the item group opened.
    #[serde(default)]
    group: String,
    /// Page of that group, from 1.
    #[serde(default)]
    page: Option<usize>,
    /// Events after this seq.
    #[serde(default)]
    after: Option<i64>,
}

/// The run page.
pub(crate) async fn detail(
    State(ui): State<Arc<Ui>>,
    Signed(s): Signed,
    Path(id): Path<String>,
    PageQuery(dq): PageQuery<DetailQuery>,
) -> Result<Html<String>, UiError> {
    let id = parse_id(&id)?;
    // The events first: one committed between the two reads is then in the run as
    // drawn and replayed by the stream, which starts after the last event shown, and the
    // page refreshes once more (the other order could leave it showing an older state,
    // with nothing left to tell it otherwise).
    let after = dq.after.unwrap_or(0);
    let events: EventPage = ui
        .get(
            &s,
            &format!("/v1/runs/{id}/events?after={after}&limit={EVENTS_PAGE}"),
        )
        .await?;
    let run: RunDetail = ui.get(&s, &format!("/v1/runs/{id}")).await?;
    // The retry editor starts from the input the step runs with: the operator's, else the
    // definition's, read from the version the run is pinned to.
    let definition: Option<WorkflowVersion> = if s.can_operate() && run.steps.iter().any(has_failed)
    {
        ui.get(
            &s,
            &format!(
                "/v1/workflows/{}/versions/{}",
                q(&run.run.workflow),
                run.run.version
            ),
        )
        .await
        .ok()
    } else {
        None
    };
    let view = View {
        run: id,
        status: run.run.status,
        operable: s.can_operate(),
        open: dq.group.split_once(':').unwrap_or(("", "")),
        page: dq.page.unwrap_or(1).max(1),
        definition: definition.as_ref(),
    };
    let (steps, notes): (Vec<Value>, Vec<String>) =
        run.steps.iter().map(|st| view.step(st)).unzip();
    let nodes: Vec<dag::Node> = run
        .steps
        .iter()
        .zip(notes)
        .map(|(st, note)| dag::Node {
            name: &st.name,
            needs: &st.needs,
            status: st.task.status.as_str(),
            note,
        })
        .collect();
    let status = run.run.status;
    let verbs: Vec<(&str, &str)> = if view.operable {
        [
            ("pause", "Pause", matches!(status, RunStatus::Running)),
            ("resume", "Resume", matches!(status, RunStatus::Paused)),
            (
                "rollback",
                "Roll back",
                matches!(
                    status,
                    RunStatus::Failed | RunStatus::CompensationFailed | RunStatus::Paused
                ),
            ),
            (
                "cancel",
                "Cancel",
                matches!(
                    status,
                    RunStatus::Running
                        | RunStatus::Paused
                        | RunStatus::Failed
                        | RunStatus::CompensationFailed
                        | RunStatus::Assigned
                ),
            ),
        ]
        .into_iter()
        .filter(|(_, _, ok)| *ok)
        .map(|(v, label, _)| (v, label))
        .collect()
    } else {
        Vec::new()
    };
    page(
        Some(&s),
        "run.html",
        "runs",
        json!({
            "run": run.run,
            "final": status.is_final() && status != RunStatus::Failed && status != RunStatus::CompensationFailed,
            "steps": steps,
            "dag": dag::svg(&nodes),
            "events": events.events,
            "events_next": events.next_after.map(|a| format!("/ui/runs/{id}?after={a}#events")),
            "events_from": after,
            // The stream starts after what the page shows, not from the run's first event.
            "last_seq": events.events.last().map(|e| e.seq).unwrap_or(after),
            "verbs": verbs,
        }),
    )
}

fn item_label(t: &Task) -> String {
    match &t.item_value {
        Some(Value::String(s)) => s.clone(),
        Some(v) => t
            .item
            .map(|i| i.to_string())
            .unwrap_or_else(|| v.to_string()),
        None => t.item.map(|i| i.to_string()).unwrap_or_default(),
    }
}

/// A task as the page shows it: as the API gives it, with a label for its item.
fn task_view(t: &Task) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or_default();
    v["label"] = Value::String(item_label(t));
    v
}

/// A step or any of its items failed for good.
fn has_failed(st: &Step) -> bool {
    st.task.status == StepStatus::Failed || st.items.iter().any(|t| t.status == StepStatus::Failed)
}

/// What every step's part of the run page depends on.
struct View<'a> {
    run: uuid::Uuid,
    status: RunStatus,
    operable: bool,
    /// The item group asked for (`step`, `status`) and its page.
    open: (&'a str, &'a str),
    page: usize,
    definition: Option<&'a WorkflowVersion>,
}

impl View<'_> {
    /// A step's part of the page, and the note its DAG node carries (items by state).
    fn step(&self, st: &Step) -> (Value, String) {
        let mut by_state: BTreeMap<usize, (StepStatus, Vec<&Task>)> = BTreeMap::new();
        for it in &st.items {
            let order = GROUP_ORDER
                .iter()
                .position(|g| *g == it.status)
                .unwrap_or(GROUP_ORDER.len());
            by_state
                .entry(order)
                .or_insert((it.status, Vec::new()))
                .1
                .push(it);
        }
        let note = by_state
            .values()
            .map(|(g, v)| format!("{} {}", v.len(), g))
            .collect::<Vec<_>>()
            .join(", ");
        let (open_step, open_status) = self.open;
        let asked = open_step == st.name;
        let first = by_state
            .values()
            .next()
            .map(|(g, _)| g.as_str())
            .unwrap_or("");
        let opened = if asked { open_status } else { first };
        let groups: Vec<Value> = by_state
            .values()
            .map(|(g, items)| self.group(st, *g, items, g.as_str() == opened, asked))
            .collect();
        let waiting_items: Vec<String> = st
            .items
            .iter()
            .filter(|t| t.status == StepStatus::Waiting && waits_for_signal(t))
            .map(item_label)
            .collect();
        let input = st
            .task
            .input
            .clone()
            .or_else(|| self.defined_input(&st.name))
            .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
            .unwrap_or_default();
        let retry_allowed = !matches!(
            self.status,
            RunStatus::RollingBack | RunStatus::RolledBack | RunStatus::Cancelled
        );
        let view = json!({
            "name": st.name,
            "action": st.action,
            "needs": st.needs,
            "task": task_view(&st.task),
            "fanout": !st.items.is_empty(),
            "item_count": st.items.len(),
            "groups": groups,
            "can_retry": self.operable && has_failed(st) && retry_allowed,
            "can_signal": self.operable && (waits_for_signal(&st.task) || !waiting_items.is_empty()),
            "waiting_items": waiting_items,
            "input_json": input,
        });
        (view, note)
    }

    /// One state group of a fan-out's items: its count, and its page of items when open.
    fn group(&self, st: &Step, g: StepStatus, items: &[&Task], open: bool, asked: bool) -> Value {
        let pages = items.len().div_ceil(ITEMS_PAGE).max(1);
        let this_page = if open && asked {
            self.page.min(pages)
        } else {
            1
        };
        let shown: Vec<Value> = if open {
            items
                .iter()
                .skip((this_page - 1) * ITEMS_PAGE)
                .take(ITEMS_PAGE)
                .map(|t| task_view(t))
                .collect()
        } else {
            Vec::new()
        };
        let link = |p: usize| {
            format!(
                "/ui/runs/{}?group={}&page={p}#step-{}",
                self.run,
                q(&format!("{}:{}", st.name, g)),
                st.name
            )
        };
        json!({
            "status": g.as_str(),
            "count": items.len(),
            "open": open,
            "items": shown,
            "page": this_page,
            "pages": pages,
            "link": link(1),
            "prev": (this_page > 1).then(|| link(this_page - 1)),
            "next": (this_page < pages).then(|| link(this_page + 1)),
        })
    }

    /// The step's input in the definition the run is pinned to.
    fn defined_input(&self, step: &str) -> Option<Value> {
        self.definition?.definition["steps"]
            .as_array()?
            .iter()
            .find(|d| d["name"] == step)
            .and_then(|d| d.get("input"))
            .filter(|v| !v.is_null())
            .cloned()
    }
}

fn waits_for_signal(t: &Task) -> bool {
    t.waiting_for.as_ref().is_some_and(|w| w.for_ == "signal")
}

fn parse_id(id: &str) -> Result<uuid::Uuid, UiError> {
    id.parse().map_err(|_| {
        UiError::NotFound(format!(
            "'{id}' is not a run id (run ids are UUIDs, as in the runs list)"
        ))
    })
}

/// The run's events as SSE, passed through from the API with the session's token (a
/// browser's `EventSource` cannot send a bearer token).
pub(crate) async fn stream(
    State(ui): State<Arc<Ui>>,
    Following(s): Following,
    Path(id): Path<String>,
    PageQuery(sq): PageQuery<StreamQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Response, UiError> {
    let id = parse_id(&id)?;
    let after = sq.after.map(|a| format!("?after={a}")).unwrap_or_default();
    let mut extra = Vec::new();
    if let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        extra.push((
            header::HeaderName::from_static("last-event-id"),
            last.to_string(),
        ));
    }
    let res = ui
        .stream(&s, &format!("/v1/runs/{id}/events/stream{after}"), &extra)
        .await?;
    if !res.status().is_success() {
        return Ok((res.status(), "the run's stream is not available").into_response());
    }
    Ok(res)
}

/// A verb on the run or one of its steps: first a page that names what it will do, then,
/// confirmed, the API call, and back to the run with what happened.
pub(crate) async fn verb(
    State(ui): State<Arc<Ui>>,
    Path(id): Path<String>,
    m: Mutation,
) -> Result<Response, UiError> {
    let id = parse_id(&id)?;
    let f = &m.fields;
    let verb = f.get("verb");
    let step = f.get("step");
    let item = f.get("item");
    let (path, body, what) = match verb {
        "pause" | "resume" | "rollback" | "cancel" => {
            let what = match verb {
                "pause" => format!(
                    "Pause run {id}: no new attempt starts until it is resumed; running attempts finish."
                ),
                "resume" => format!("Resume run {id}: its ready steps start again."),
                "rollback" => format!(
                    "Roll back run {id}: the compensation of every succeeded step runs, in reverse order of their needs. This cannot be undone."
                ),
                _ => format!(
                    "Cancel run {id}: running attempts are told to stop and no step starts again. This cannot be undone."
                ),
            };
            (format!("/v1/runs/{id}/{verb}"), json!({}), what)
        }
        "retry" => {
            need_step(step)?;
            let input = json_field(f.get("input"), "the retry's input")?;
            let what = match &input {
                Some(_) => format!(
                    "Retry step {step} of run {id} with the input below; it replaces the step's input from now on, and every step after it runs again."
                ),
                None => format!(
                    "Retry step {step} of run {id} with its definition's input; every step after it runs again."
                ),
            };
            (
                format!("/v1/runs/{id}/steps/{}/retry", q(step)),
                json!({ "input": input }),
                what,
            )
        }
        "signal" => {
            need_step(step)?;
            let payload =
                json_field(f.get("payload"), "the signal's payload")?.unwrap_or(Value::Null);
            let what = if item.is_empty() {
                format!(
                    "Signal step {step} of run {id}: the payload below becomes its output and the run goes on."
                )
            } else {
                format!(
                    "Signal item {item} of step {step} of run {id}: the payload below becomes its output."
                )
            };
            let mut body = json!({ "payload": payload });
            if !item.is_empty() {
                body["item"] = Value::String(item.to_string());
            }
            (
                format!("/v1/runs/{id}/steps/{}/signal", q(step)),
                body,
                what,
            )
        }
        "" => return Err(UiError::BadInput("the form names no verb".into())),
        other => {
            return Err(UiError::BadInput(format!(
                "no verb '{other}': a run takes pause, resume, rollback, cancel, retry or signal"
            )));
        }
    };
    if f.get("confirmed") != "yes" {
        let fields: Vec<(&str, &str)> = m
            .fields
            .0
            .iter()
            .filter(|(k, _)| k != "csrf" && k != "confirmed")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let shown = body
            .get("input")
            .or_else(|| body.get("payload"))
            .filter(|v| !v.is_null())
            .map(|v| serde_json::to_string_pretty(v).unwrap_or_default());
        let html = page::<UiError>(
            Some(&m.session),
            "confirm.html",
            "runs",
            json!({
                "what": what,
                "shown": shown,
                "action": format!("/ui/runs/{id}/verb"),
                "fields": fields,
                "back": format!("/ui/runs/{id}"),
                "button": format!("Yes, {}", if verb == "rollback" { "roll back" } else { verb }),
            }),
        )?;
        return Ok(html.into_response());
    }
    match ui.post::<_, Value>(&m.session, &path, &body).await {
        Ok(answer) => {
            let done = if answer.get("verb").is_some() {
                format!(
                    "{verb}: queued for the run's site agent (command {})",
                    answer["id"].as_str().unwrap_or("?")
                )
            } else {
                format!(
                    "{verb}: done; the run is {}",
                    answer["status"].as_str().unwrap_or("?")
                )
            };
            ui.sessions.flash(&m.session.id, done);
            Ok(Redirect::to(&format!("/ui/runs/{id}")).into_response())
        }
        Err(f) if f.status == StatusCode::UNAUTHORIZED => Err(f.into()),
        Err(f) => {
            ui.sessions
                .flash(&m.session.id, format!("{verb} was refused: {}", f.message));
            Ok(Redirect::to(&format!("/ui/runs/{id}")).into_response())
        }
    }
}

fn need_step(step: &str) -> Result<(), UiError> {
    if step.is_empty() {
        return Err(UiError::BadInput("the form names no step".into()));
    }
    Ok(())
}

/// A JSON text field: empty is none, anything else must read.
fn json_field(text: &str, what: &str) -> Result<Option<Value>, UiError> {
    if text.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text).map(Some).map_err(|e| {
        UiError::BadInput(format!(
            "{what} is not JSON: {e} (write it as JSON, e.g. {{\"image\": \"...\"}})"
        ))
    })
}
