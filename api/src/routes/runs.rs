//! `/v1/runs`: submit, list, inspect, page through history, and the operator verbs.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lariat_engine::{EngineError, NewRun, RunQuery, RunRow, RunStatus as EngineRunStatus};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{Caller, Operator, Viewer};
use crate::convert::Dto;
use crate::error::HttpError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson};
use crate::state::AppState;
use lariat_api_types::ErrorBody;
use lariat_api_types::{
    EventPage, EventsQuery, ListRunsQuery, QueuedCommand, RetryStep, Retrying, Run, RunDetail,
    RunPage, SignalStep, SubmitRun, Targets,
};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;
const DEFAULT_EVENTS_PAGE: u32 = 100;
const MAX_EVENTS_PAGE: u32 = 1000;

pub(crate) fn page_size(limit: Option<u32>, default: u32, max: u32) -> Result<u32, HttpError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(HttpError::bad_request(
            "invalid_query",
            format!("limit {n} is out of range: 1 to {max}"),
        )),
    }
}

/// Start a run of a registered workflow, pinned to `version` or the latest. With an
/// `idempotency_key` already used, answers 200 with that run instead of starting another.
#[utoipa::path(
    post,
    path = "/v1/runs",
    tag = "runs",
    request_body = SubmitRun,
    responses(
        (status = 201, description = "Started", body = Run,
            headers(("Location" = String, description = "The run's URL"))),
        (status = 200, description = "The run this idempotency key started before", body = Run),
        (status = 400, description = "Malformed body or invalid input", body = ErrorBody),
        (status = 404, description = "No such workflow or version", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn submit_run(
    Operator(caller): Operator,
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<SubmitRun>,
) -> Result<Response, HttpError> {
    let targets = match req.targets {
        Targets::Names(names) => names,
        Targets::Filter(f) => {
            let active = st.design.active();
            let hosts = active.loaded.design.select(&f.dto());
            if hosts.is_empty() {
                return Err(HttpError::bad_request(
                    "invalid_input",
                    "the targets filter selects no host of the active design",
                ));
            }
            hosts
        }
    };
    let targets_count = targets.len();
    let idempotency_key = req.idempotency_key.clone();
    let run = NewRun {
        workflow: req.workflow,
        version: req.version,
        input: req.input,
        targets,
        idempotency_key: req.idempotency_key,
        ..Default::default()
    };
    let (row, created) = place(&st, run, &caller).await?;
    let id = row.id;
    let run = row.dto();
    if !created {
        return Ok((StatusCode::OK, Json(run)).into_response());
    }
    let detail = json!({
        "workflow": run.workflow,
        "version": run.version,
        "targets": targets_count,
        "group": run.group,
        "idempotency_key": idempotency_key,
    });
    st.audit(&caller, "run.submit", id, detail).await;
    let mut res = (StatusCode::CREATED, Json(run)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/runs/{id}")) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

/// Starts `run` where its hosts are: on a central node, one run per site with an agent,
/// linked by a group (the first is answered); on an agent, and without agents, in this
/// engine. Returns the run and whether it is new (false when its key had started it).
pub(crate) async fn place(
    st: &AppState,
    run: NewRun,
    caller: &Caller,
) -> Result<(RunRow, bool), HttpError> {
    Ok(match &st.central {
        Some(c) => {
            let placed = c.submit(run, caller.actor()).await?;
            let first = placed.runs.into_iter().next().ok_or_else(|| {
                HttpError::internal("placing a run", &"the placement made no run")
            })?;
            (first, placed.created)
        }
        None => {
            let sub = st.engine.submit(run, caller.actor()).await?;
            (st.engine.run_row(sub.run_id).await?, sub.created)
        }
    })
}

/// Runs, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/runs",
    tag = "runs",
    params(ListRunsQuery),
    responses(
        (status = 200, body = RunPage),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn list_runs(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<ListRunsQuery>,
) -> Result<Json<RunPage>, HttpError> {
    let limit = page_size(q.limit, DEFAULT_PAGE, MAX_PAGE)?;
    let status = q
        .status
        .as_deref()
        .map(str::parse::<EngineRunStatus>)
        .transpose()
        .map_err(|e| HttpError::bad_request("invalid_query", e))?;
    // One more than asked says whether another page exists.
    let mut rows = st
        .engine
        .list_runs(&RunQuery {
            status,
            workflow: q.workflow,
            group: q.group,
            owner: q.owner,
            host: q.host,
            before: q.cursor,
            limit: limit + 1,
        })
        .await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    let live: Vec<Uuid> = rows
        .iter()
        .filter(|r| r.status == EngineRunStatus::Running)
        .map(|r| r.id)
        .collect();
    let retrying: std::collections::HashMap<Uuid, Retrying> = st
        .engine
        .store()
        .retrying(&live)
        .await
        .map_err(lariat_engine::EngineError::from)?
        .into_iter()
        .map(|(id, tasks, at)| {
            let r = Retrying {
                tasks: tasks as u32,
                next_attempt_at: at,
            };
            (id, r)
        })
        .collect();
    let runs = rows
        .into_iter()
        .map(|r| {
            let id = r.id;
            let mut run: Run = r.dto();
            run.retrying = retrying.get(&id).copied();
            run
        })
        .collect();
    Ok(Json(RunPage { runs, next_cursor }))
}

/// A run with every step: status, attempts (start, end, error, output), next retry time,
/// and what a waiting step waits for.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}",
    tag = "runs",
    params(("id" = Uuid, Path, description = "Run id")),
    responses(
        (status = 200, body = RunDetail),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn get_run(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, HttpError> {
    if let Some(body) = st.runs.get(id) {
        return Ok(json_bytes(body));
    }
    let ticket = st.runs.ticket();
    let detail = st.engine.run_view(id).await?.dto();
    let body = Bytes::from(
        serde_json::to_vec(&detail).map_err(|e| HttpError::internal("encoding a run", &e))?,
    );
    st.runs.put(id, ticket, body.clone());
    Ok(json_bytes(body))
}

fn json_bytes(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A run's history, oldest first, a page at a time. Operator verbs appear as `operator`
/// events naming who acted and from where.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/events",
    tag = "runs",
    params(("id" = Uuid, Path, description = "Run id"), EventsQuery),
    responses(
        (status = 200, body = EventPage),
        (status = 400, description = "Bad id or query parameter", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn list_events(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<EventPage>, HttpError> {
    let limit = page_size(q.limit, DEFAULT_EVENTS_PAGE, MAX_EVENTS_PAGE)?;
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(HttpError::bad_request(
            "invalid_query",
            format!("after {after} is negative; seqs start at 1"),
        ));
    }
    let mut events = st.engine.events(id, after, limit + 1).await?;
    // An unknown run has no events; say so instead of answering an empty page. (A run
    // that exists has at least run_created, so only an empty page needs the check.)
    if events.is_empty() {
        st.engine.run_row(id).await?;
    }
    let more = events.len() > limit as usize;
    events.truncate(limit as usize);
    let next_after = more.then(|| events.last().map(|e| e.seq)).flatten();
    Ok(Json(EventPage {
        events: events.iter().map(Dto::dto).collect(),
        next_after,
    }))
}

async fn after_verb(
    st: &AppState,
    caller: &crate::auth::Caller,
    (id, verb, detail): (Uuid, &str, serde_json::Value),
    res: Result<(), EngineError>,
) -> Result<Response, HttpError> {
    res?;
    st.runs.invalidate(id);
    st.audit(caller, &format!("run.{verb}"), id, detail).await;
    Ok(Json(st.engine.run_row(id).await?.dto()).into_response())
}

/// A verb on a run a site agent owns is queued for the agent, which carries it out (or
/// refuses it) in the run's log: 202 with the command. `None` for the runs of this
/// executor.
async fn for_agent(
    st: &AppState,
    id: Uuid,
    verb: &str,
    (args, detail): (serde_json::Value, serde_json::Value),
    caller: &crate::auth::Caller,
) -> Result<Option<Response>, HttpError> {
    let Some(central) = &st.central else {
        return Ok(None);
    };
    let row = st.engine.run_row(id).await?;
    let Some(site) = central.agent_site(&row.owner).await? else {
        return Ok(None);
    };
    let actor = lariat_api_types::CommandActor {
        who: caller.name.to_string(),
        from: caller.from.map(|a| a.to_string()),
    };
    let queued = central.queue(&site, &row, verb, args, actor).await?;
    let mut detail = detail;
    if let Some(d) = detail.as_object_mut() {
        d.insert("command".into(), queued.id.clone().into());
        d.insert("site".into(), site.clone().into());
    }
    st.audit(caller, &format!("run.{verb}"), id, detail).await;
    Ok(Some((StatusCode::ACCEPTED, Json(queued)).into_response()))
}

macro_rules! run_verb {
    ($(#[$doc:meta])* $fn:ident, $path:literal, $call:ident) => {
        $(#[$doc])*
        #[utoipa::path(
            post,
            path = $path,
            tag = "runs",
            params(("id" = Uuid, Path, description = "Run id")),
            responses(
                (status = 200, description = "Done; the run as it is now", body = Run),
                (status = 202, description = "Queued for the run's site agent", body = QueuedCommand),
                (status = 400, description = "The id is not a UUID", body = ErrorBody),
                (status = 404, description = "No such run", body = ErrorBody),
                (status = 409, description = "The run's state does not allow this", body = ErrorBody),
            ),
            security(("bearer" = ["operator"])),
        )]
        pub async fn $fn(
            Operator(caller): Operator,
            State(st): State<Arc<AppState>>,
            ApiPath(id): ApiPath<Uuid>,
        ) -> Result<Response, HttpError> {
            if let Some(queued) =
                for_agent(&st, id, stringify!($call), (Value::Null, json!({})), &caller).await?
            {
                return Ok(queued);
            }
            let res = st.engine.$call(id, caller.actor()).await;
            after_verb(&st, &caller, (id, stringify!($call), json!({})), res).await
        }
    };
}

run_verb!(
    /// Cancel a run: running attempts are told to stop and nothing more starts.
    cancel_run, "/v1/runs/{id}/cancel", cancel
);
run_verb!(
    /// Start no new attempts until resumed; running ones finish and are recorded.
    pause_run, "/v1/runs/{id}/pause", pause
);
run_verb!(
    /// Resume a paused run.
    resume_run, "/v1/runs/{id}/resume", resume
);
run_verb!(
    /// Run the compensations of the succeeded steps, in reverse dependency order.
    rollback_run, "/v1/runs/{id}/rollback", rollback
);

/// Retry a failed step and everything downstream of it, as a new attempt series; `input`
/// replaces the step's input from now on. The body may be left out.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/steps/{step}/retry",
    tag = "runs",
    params(
        ("id" = Uuid, Path, description = "Run id"),
        ("step" = String, Path, description = "Step name"),
    ),
    request_body(content = Option<RetryStep>, content_type = "application/json"),
    responses(
        (status = 200, description = "Retrying; the run as it is now", body = Run),
        (status = 202, description = "Queued for the run's site agent", body = QueuedCommand),
        (status = 400, description = "Bad id or body", body = ErrorBody),
        (status = 404, description = "No such run or step", body = ErrorBody),
        (status = 409, description = "The step has not failed, or the run's state does not allow it", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "A body that is not JSON", body = ErrorBody),
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn retry_step(
    Operator(caller): Operator,
    State(st): State<Arc<AppState>>,
    ApiPath((id, step)): ApiPath<(Uuid, String)>,
    OptionalJson(req): OptionalJson<RetryStep>,
) -> Result<Response, HttpError> {
    // Input values may be secrets: the trail keeps only which keys were replaced.
    let detail = json!({ "step": step, "input_keys": keys(req.input.as_ref()) });
    let args = json!({ "step": step, "input": req.input });
    if let Some(queued) = for_agent(&st, id, "retry", (args, detail.clone()), &caller).await? {
        return Ok(queued);
    }
    let res = st.engine.retry(id, &step, req.input, caller.actor()).await;
    after_verb(&st, &caller, (id, "retry", detail), res).await
}

/// Deliver a signal to a step waiting for one; the payload becomes its output. For a
/// fan-out step, `item` names the item. The body may be left out (a null payload).
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/steps/{step}/signal",
    tag = "runs",
    params(
        ("id" = Uuid, Path, description = "Run id"),
        ("step" = String, Path, description = "Step name"),
    ),
    request_body(content = Option<SignalStep>, content_type = "application/json"),
    responses(
        (status = 200, description = "Delivered; the run as it is now", body = Run),
        (status = 202, description = "Queued for the run's site agent", body = QueuedCommand),
        (status = 400, description = "Bad id or body", body = ErrorBody),
        (status = 404, description = "No such run, step or item", body = ErrorBody),
        (status = 409, description = "The step is not waiting for a signal", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "A body that is not JSON", body = ErrorBody),
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn signal_step(
    Operator(caller): Operator,
    State(st): State<Arc<AppState>>,
    ApiPath((id, step)): ApiPath<(Uuid, String)>,
    OptionalJson(req): OptionalJson<SignalStep>,
) -> Result<Response, HttpError> {
    let item = req.item.as_ref().map(|i| i.to_string());
    let detail = json!({ "step": step, "item": item, "payload_keys": keys(Some(&req.payload)) });
    let args = json!({ "step": step, "payload": req.payload, "item": item });
    if let Some(queued) = for_agent(&st, id, "signal", (args, detail.clone()), &caller).await? {
        return Ok(queued);
    }
    let res = st
        .engine
        .signal(id, &step, item.as_deref(), req.payload, caller.actor())
        .await;
    after_verb(&st, &caller, (id, "signal", detail), res).await
}

/// The top-level keys of an object given by an operator, for the audit trail.
fn keys(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}
