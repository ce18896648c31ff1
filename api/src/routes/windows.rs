//! Maintenance windows of the design in force: open now or not, next openings in the
//! window's zone and in UTC, and the steps waiting on each, by executor.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use lariat_api_types::{
    ErrorBody, WindowDetail, WindowList, WindowOpening, WindowScope, WindowStatus, WindowWaiter,
};
use lariat_workflows::design::schema::WindowMode;
use lariat_workflows::windows::{Opening, Window, Windows};
use serde_json::Value;

use crate::auth::Viewer;
use crate::error::HttpError;
use crate::extract::ApiPath;
use crate::state::AppState;

/// Openings listed after the current one.
const NEXT: usize = 3;
/// How far a window's current opening is followed through overlapping starts.
const HORIZON_MS: i64 = 31 * 24 * 3600 * 1000;

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
    let windows = windows
        .iter()
        .map(|w| status(w, now, waiting.remove(&w.name).unwrap_or_default()))
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
    Ok(Json(WindowDetail {
        revision,
        now,
        window: status(w, now, by_owner),
        waiters,
    }))
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

fn status(w: &Window, now: i64, waiting: BTreeMap<String, u64>) -> WindowStatus {
    let s = &w.schedule;
    let opening = |o: Opening| WindowOpening {
        opens_at: o.opens_at,
        closes_at: o.closes_at,
        opens_local: s.local_text(o.opens_at),
        closes_local: s.local_text(o.closes_at),
    };
    let current = s.opening_at(now, now.saturating_add(HORIZON_MS));
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
    }
}
