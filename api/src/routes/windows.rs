//! Maintenance windows of the design in force: open now or not, next openings in the
//! window's zone and in UTC, the steps waiting on each, by executor, and the operators'
//! overrides (made at the central node, carried to the agents by their sync).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use lariat_api_types::{
    ClearOverrides, ClearedOverrides, ErrorBody, OverrideRequest, WindowDetail, WindowList,
    WindowOpening, WindowOverride, WindowScope, WindowStatus, WindowWaiter,
};
use lariat_central::{Central, NewOverride, Registration};
use lariat_workflows::design::schema::WindowMode;
use lariat_workflows::windows::{Opening, Override, OverrideAction, Window, Windows};
use serde_json::{Value, json};

use crate::auth::{Caller, Operator, Viewer};
use crate::error::HttpError;
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

/// Openings listed after the current one.
const NEXT: usize = 3;
/// How far a window's current opening is followed through overlapping starts.
const HORIZON_MS: i64 = 31 * 24 * 3600 * 1000;
/// The shortest and the longest override: a change of schedule for longer belongs in
/// the design.
const OVERRIDE_MIN_MS: i64 = 60_000;
const OVERRIDE_MAX_MS: i64 = 7 * 24 * 3600 * 1000;
/// Overrides of a window listed in its history.
const HISTORY: u32 = 50;

/// Every window of the design in force, with where it stands now.
#[utoipa::path(
    get,
    path = "/v1/windows",
    tag = "windows",
    responses((status = 200, body = WindowList)),
    security(("bearer" = ["viewer"])),
)]
pub async fn list_windows(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
) -> Result<Json<WindowList>, HttpError> {
    let (revision, windows) = in_force(&st).await?;
    let now = st.engine.clock().now_ms();
    let mut waiting: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for w in st.engine.window_waiters(None, 100_000).await? {
        *waiting
            .entry(w.window)
            .or_default()
            .entry(w.owner)
            .or_default() += 1;
    }
    let overrides = in_force_bodies(&st, now).await?;
    let windows = windows
        .iter()
        .map(|w| {
            let waiting = waiting.remove(&w.name).unwrap_or_default();
            status(w, now, waiting, &st.overrides(), &overrides)
        })
        .collect();
    Ok(Json(WindowList {
        revision,
        now,
        windows,
    }))
}

/// One window, with the steps waiting on it.
#[utoipa::path(
    get,
    path = "/v1/windows/{name}",
    tag = "windows",
    params(("name" = String, Path, description = "The window's name")),
    responses(
        (status = 200, body = WindowDetail),
        (status = 404, description = "No such window in the design in force", body = ErrorBody),
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn get_window(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<WindowDetail>, HttpError> {
    let (revision, windows) = in_force(&st).await?;
    let Some(w) = windows.get(&name) else {
        return Err(HttpError::not_found(format!(
            "the design in force has no MaintenanceWindow '{name}' (GET /v1/windows lists them)"
        )));
    };
    let now = st.engine.clock().now_ms();
    let found = st.engine.window_waiters(Some(&name), 1000).await?;
    let mut by_owner: BTreeMap<String, u64> = BTreeMap::new();
    for f in &found {
        *by_owner.entry(f.owner.clone()).or_default() += 1;
    }
    let waiters = found
        .into_iter()
        .map(|f| WindowWaiter {
            run_id: f.run_id,
            step: f.step,
            item: f.item,
            host: match f.item_value {
                Some(Value::String(h)) => Some(h),
                _ => None,
            },
            until: f.until,
            owner: f.owner,
        })
        .collect();
    let overrides = in_force_bodies(&st, now).await?;
    let history = match &st.central {
        Some(c) => c
            .overrides()
            .history(Some(&name), HISTORY)
            .await
            .map_err(|e| HttpError::internal("reading the window overrides", &e))?
            .iter()
            .map(|o| o.body())
            .collect(),
        // An agent holds the set in force only; the history is the centre's.
        None => overrides
            .iter()
            .filter(|o| o.window == name)
            .cloned()
            .collect(),
    };
    Ok(Json(WindowDetail {
        revision,
        now,
        window: status(w, now, by_owner, &st.overrides(), &overrides),
        waiters,
        history,
    }))
}

/// Opens a window now, whatever its schedule says, until the override expires; for a
/// deny window, puts its freeze in force.
#[utoipa::path(
    post,
    path = "/v1/windows/{name}/open",
    tag = "windows",
    params(("name" = String, Path, description = "The window's name")),
    request_body(content = OverrideRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "In force; it reaches the agents with their next sync", body = WindowOverride),
        (status = 400, description = "No reason, a duration out of bounds, an unknown site", body = ErrorBody),
        (status = 404, description = "No such window in the design in force", body = ErrorBody),
        (status = 409, description = "Asked of a site agent: overrides are made at the centre", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "A body that is not JSON", body = ErrorBody),
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn open_window(
    Operator(caller): Operator,
    State(st): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<OverrideRequest>,
) -> Result<(StatusCode, Json<WindowOverride>), HttpError> {
    make_override(&st, &caller, &name, req, OverrideAction::Open).await
}

/// Closes a window now until the override expires (by default, the end of its current
/// opening): nothing new starts in it, what runs finishes. For a deny window, lifts its
/// freeze.
#[utoipa::path(
    post,
    path = "/v1/windows/{name}/close",
    tag = "windows",
    params(("name" = String, Path, description = "The window's name")),
    request_body(content = OverrideRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "In force; it reaches the agents with their next sync", body = WindowOverride),
        (status = 400, description = "No reason, a duration out of bounds, an unknown site", body = ErrorBody),
        (status = 404, description = "No such window in the design in force", body = ErrorBody),
        (status = 409, description = "Not open now and no duration given, or asked of a site agent", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "A body that is not JSON", body = ErrorBody),
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn close_window(
    Operator(caller): Operator,
    State(st): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<OverrideRequest>,
) -> Result<(StatusCode, Json<WindowOverride>), HttpError> {
    make_override(&st, &caller, &name, req, OverrideAction::Close).await
}

/// Ends a window's overrides in force (of one site, when given), so that its schedule
/// decides again.
#[utoipa::path(
    post,
    path = "/v1/windows/{name}/clear",
    tag = "windows",
    params(("name" = String, Path, description = "The window's name")),
    request_body(content = ClearOverrides, content_type = "application/json"),
    responses(
        (status = 200, description = "The overrides ended (none when none was in force)", body = ClearedOverrides),
        (status = 400, description = "No reason", body = ErrorBody),
        (status = 404, description = "No such window in the design in force", body = ErrorBody),
        (status = 409, description = "Asked of a site agent: overrides are made at the centre", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "A body that is not JSON", body = ErrorBody),
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn clear_window(
    Operator(caller): Operator,
    State(st): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<ClearOverrides>,
) -> Result<Json<ClearedOverrides>, HttpError> {
    let central = at_centre(&st)?;
    reason_of(&req.reason)?;
    let (_, windows) = in_force(&st).await?;
    known_window(&windows, &name)?;
    let by = format!("{} ({})", caller.name, req.reason.trim());
    let ended = central
        .overrides()
        .end(&name, req.site.as_deref(), &by)
        .await
        .map_err(|e| HttpError::internal("ending the window overrides", &e))?;
    let ids: Vec<String> = ended.iter().map(|o| o.body().id).collect();
    let detail = json!({ "site": req.site, "reason": req.reason.trim(), "ended": ids });
    st.audit(&caller, "window.clear", &name, detail).await;
    Ok(Json(ClearedOverrides {
        ended: ended.iter().map(|o| o.body()).collect(),
    }))
}

async fn make_override(
    st: &AppState,
    caller: &Caller,
    name: &str,
    req: OverrideRequest,
    action: OverrideAction,
) -> Result<(StatusCode, Json<WindowOverride>), HttpError> {
    let central = at_centre(st)?;
    let reason = reason_of(&req.reason)?;
    let (_, windows) = in_force(st).await?;
    let w = known_window(&windows, name)?;
    if let Some(site) = &req.site {
        let known = central.site_names().await?;
        if !known.contains(site) {
            return Err(HttpError::bad_request(
                "bad_override",
                format!(
                    "site '{site}' is not a site of the design in force nor of a registered agent (sites: {})",
                    known.join(", ")
                ),
            ));
        }
    }
    let now = st.engine.clock().now_ms();
    let until = match (&req.duration, action) {
        (Some(d), _) => now.saturating_add(span_of(d)?),
        (None, OverrideAction::Open) => {
            return Err(HttpError::bad_request(
                "bad_override",
                "opening a window needs `for`, how long (such as 2h): an override always expires",
            ));
        }
        (None, OverrideAction::Close) => {
            let feed = st.overrides();
            match w.opening_with(&feed, now, now.saturating_add(HORIZON_MS)) {
                Some(o) => o.closes_at,
                None => {
                    return Err(HttpError::new(
                        StatusCode::CONFLICT,
                        "window_not_open",
                        format!(
                            "window '{name}' is not open now; give `for` (such as 12h) to keep it closed through its coming openings"
                        ),
                    ));
                }
            }
        }
    };
    let made = central
        .overrides()
        .make(NewOverride {
            window: name.to_string(),
            action,
            site: req.site,
            from: now,
            until,
            reason,
            who: caller.name.to_string(),
            from_addr: caller.from.map(|a| a.to_string()),
        })
        .await
        .map_err(|e| HttpError::internal("recording the window override", &e))?;
    let mut body = made.body();
    let detail = json!({
        "override": body.id, "site": body.site, "reason": body.reason,
        "starts_at": body.starts_at, "ends_at": body.ends_at,
    });
    st.audit(caller, &format!("window.{}", body.action), name, detail)
        .await;
    body.awaiting = awaiting(&registrations(central).await?, &body);
    Ok((StatusCode::CREATED, Json(body)))
}

fn at_centre(st: &AppState) -> Result<&Central, HttpError> {
    st.central.as_ref().ok_or_else(|| {
        HttpError::new(
            StatusCode::CONFLICT,
            "at_centre",
            "window overrides are made at the central node, which carries them to every agent; this agent goes by the ones it was sent",
        )
    })
}

fn reason_of(reason: &str) -> Result<String, HttpError> {
    let r = reason.trim();
    if r.is_empty() {
        return Err(HttpError::bad_request(
            "bad_override",
            "`reason` is required: say why, it is kept with the override",
        ));
    }
    if r.chars().count() > 500 {
        return Err(HttpError::bad_request(
            "bad_override",
            "`reason` is longer than 500 characters",
        ));
    }
    // NUL above all: PostgreSQL cannot store it.
    if r.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(HttpError::bad_request(
            "bad_override",
            "`reason` holds a control character; write it as plain text",
        ));
    }
    Ok(r.to_string())
}

fn known_window<'a>(windows: &'a Windows, name: &str) -> Result<&'a Window, HttpError> {
    windows.get(name).ok_or_else(|| {
        HttpError::not_found(format!(
            "the design in force has no MaintenanceWindow '{name}' (GET /v1/windows lists them)"
        ))
    })
}

fn span_of(text: &str) -> Result<i64, HttpError> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        HttpError::bad_request(
            "bad_override",
            format!("`for`: '{text}' is not a duration such as 2h or 45m: {e}"),
        )
    })?;
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if !(OVERRIDE_MIN_MS..=OVERRIDE_MAX_MS).contains(&ms) {
        return Err(HttpError::bad_request(
            "bad_override",
            format!(
                "`for`: {text} is out of bounds: an override lasts from a minute to 7 days (change the design for longer)"
            ),
        ));
    }
    Ok(ms)
}

async fn registrations(central: &Central) -> Result<Vec<Registration>, HttpError> {
    central
        .sites()
        .registrations()
        .await
        .map_err(|e| HttpError::internal("reading the site agents", &e))
}

/// The agent sites an override is for that have not taken it yet.
fn awaiting(regs: &[Registration], o: &WindowOverride) -> Vec<String> {
    regs.iter()
        .filter(|r| o.site.as_deref().is_none_or(|s| s == r.site) && r.overrides_seen < o.seq)
        .map(|r| r.site.clone())
        .collect()
}

/// The overrides in force now, as shown: at the centre with the agents that have not
/// taken them yet.
async fn in_force_bodies(st: &AppState, now: i64) -> Result<Vec<WindowOverride>, HttpError> {
    // As made, with their sites, though an agent counts each for every host it serves.
    let set = st
        .overrides
        .as_ref()
        .map(|f| f.borrow().clone())
        .unwrap_or_default();
    // The agents' registrations are read once for all of them.
    let regs = match &st.central {
        Some(c) => registrations(c).await?,
        None => Vec::new(),
    };
    Ok(set
        .iter()
        .filter(|o| o.in_force(now))
        .map(|o| {
            let mut body = lariat_central::override_body(o);
            body.awaiting = awaiting(&regs, &body);
            body
        })
        .collect())
}

async fn in_force(st: &AppState) -> Result<(Option<String>, Windows), HttpError> {
    let active = st.design.active();
    let revision = active.revision.as_ref().map(|r| r.commit.clone());
    let loaded = active.loaded.clone();
    // Scoped windows resolve every host of the design: not on the runtime's threads.
    let windows = tokio::task::spawn_blocking(move || Windows::of(&loaded.design))
        .await
        .map_err(|e| HttpError::internal("evaluating the maintenance windows", &e))?;
    Ok((revision, windows))
}

fn status(
    w: &Window,
    now: i64,
    waiting: BTreeMap<String, u64>,
    set: &[Override],
    shown: &[WindowOverride],
) -> WindowStatus {
    let s = &w.schedule;
    let opening = |o: Opening| WindowOpening {
        opens_at: o.opens_at,
        closes_at: o.closes_at,
        opens_local: s.local_text(o.opens_at),
        closes_local: s.local_text(o.closes_at),
    };
    let current = w.opening_with(set, now, now.saturating_add(HORIZON_MS));
    let mut next = Vec::new();
    let mut after = current.map_or(now, |c| c.closes_at - 1);
    while next.len() < NEXT {
        match s.next_opening(after, after.saturating_add(HORIZON_MS)) {
            Some(o) if o.opens_at > after => {
                after = o.closes_at - 1;
                next.push(opening(o));
            }
            _ => break,
        }
    }
    WindowStatus {
        name: w.name.clone(),
        mode: match w.mode {
            WindowMode::Allow => "allow",
            WindowMode::Deny => "deny",
        }
        .into(),
        cron: w.spec.cron.clone(),
        timezone: s.zone().name().to_string(),
        duration: humantime::format_duration(w.spec.duration).to_string(),
        scope: w.scope.as_ref().map(|sc| WindowScope {
            sites: sc.sites.clone(),
            racks: sc.racks.clone(),
            labels: sc.labels.clone(),
        }),
        open: current.is_some(),
        current: current.map(opening),
        next,
        waiting,
        overrides: shown
            .iter()
            .filter(|o| o.window == w.name)
            .cloned()
            .collect(),
    }
}
