//! The inventory (`/v1/inventory/hosts`), drift (`/v1/drift`) and reconciliation
//! (`/v1/reconcile`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use lariat_api_types::{
    Drift, DriftKind, DriftQuery, DriftReport, ErrorBody, HostDetail, HostPage, HostState,
    HostsQuery, InventoryQuery, ReconcileOutcome, ReconcileRequest, ReconcileSkip,
};
use lariat_engine::NewRun;
use lariat_workflows::design::NodeFilter;
use serde_json::json;

use crate::auth::{Caller, Operator, Viewer};
use crate::convert::Dto;
use crate::error::HttpError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::inventory::{self, CHUNK, Designs, drift};
use crate::routes::designs::filter_of;
use crate::routes::runs::{page_size, place};
use crate::state::AppState;

/// The node filter of an inventory or drift query, as `GET /v1/hosts` reads one.
fn hosts_query(
    names: Option<String>,
    labels: Option<String>,
    racks: Option<String>,
    sites: Option<String>,
) -> HostsQuery {
    HostsQuery {
        names,
        labels,
        racks,
        sites,
        mode: None,
    }
}

/// The hosts of the active design a query's node filter selects, sorted; every host
/// without a criterion.
fn selected(st: &AppState, q: HostsQuery) -> Result<Vec<String>, HttpError> {
    let mut filter = filter_of(&q)?;
    filter.all = q.names.is_none() && q.labels.is_none() && q.racks.is_none() && q.sites.is_none();
    let mut hosts = st.design.active().loaded.design.select(&filter);
    hosts.sort();
    Ok(hosts)
}

/// The inventory: each host's state, the step acting on it, its power, what it was
/// provisioned from. Sorted by name, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/inventory/hosts",
    tag = "inventory",
    params(InventoryQuery),
    responses(
        (status = 200, body = HostPage),
        (status = 400, description = "Bad filter, state or page", body = ErrorBody),
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn list_inventory(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<InventoryQuery>,
) -> Result<Json<HostPage>, HttpError> {
    let limit = page_size(q.limit, 100, 1000)? as usize;
    let state: Option<HostState> = q
        .state
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: String| HttpError::bad_request("invalid_query", e))?;
    let active = st.design.active();
    let mut hosts = selected(&st, hosts_query(q.names, q.labels, q.racks, q.sites))?;
    if let Some(after) = &q.after {
        hosts.retain(|h| h > after);
    }
    let mut page = Vec::new();
    let mut next = None;
    'chunks: for chunk in hosts.chunks(CHUNK) {
        let projected = inventory::project_hosts(&st.engine, chunk).await?;
        for name in chunk {
            let p = &projected[name];
            if state.is_some_and(|s| s != p.state) {
                continue;
            }
            if page.len() == limit {
                // Another host matches: the page is full, and this one starts the next.
                next = page
                    .last()
                    .map(|h: &lariat_api_types::HostSummary| h.name.clone());
                break 'chunks;
            }
            let resolved = active.loaded.design.resolved_host(name).ok();
            page.push(inventory::summary(name, p, resolved.as_ref(), true));
        }
    }
    Ok(Json(HostPage {
        revision: active.revision.as_ref().map(|r| r.commit.clone()),
        hosts: page,
        next,
    }))
}

/// One host: its summary, the facts of its last callback, its firmware, its history
/// and its drift. A host the design no longer has is shown while runs remember it.
#[utoipa::path(
    get,
    path = "/v1/inventory/hosts/{name}",
    tag = "inventory",
    params(("name" = String, Path, description = "Host name")),
    responses(
        (status = 200, body = HostDetail),
        (status = 404, description = "Neither the design nor any run knows the host", body = ErrorBody),
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn get_inventory_host(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<HostDetail>, HttpError> {
    let active = st.design.active();
    let in_design = active.loaded.design.host(&name).is_some();
    let one = [name.clone()];
    let projected = inventory::project_hosts(&st.engine, &one).await?;
    let p = &projected[&name];
    if !in_design && p.history.is_empty() {
        return Err(HttpError::not_found(format!(
            "no host {name}: the active design does not have it and no run worked on it"
        )));
    }
    let resolved = Designs::new(&st.design).resolved(&name).await?;
    let shown = active.loaded.design.resolved_host(&name).ok();
    Ok(Json(HostDetail {
        summary: inventory::summary(&name, p, shown.as_ref(), in_design),
        facts: p.facts.clone(),
        firmware: p.firmware.clone(),
        history: p.history.clone(),
        drift: drift::drift_of(&name, p, resolved.as_ref()),
    }))
}

/// The drift of `hosts` of the kinds in `kinds`; with `digests`, also the resolved
/// digest of each host that drifts (what reconciliation keys its runs by; a report
/// needs none, and a digest hashes the host's whole configuration).
async fn drift_of_hosts(
    st: &AppState,
    hosts: &[String],
    kinds: &BTreeSet<DriftKind>,
    digests: bool,
) -> Result<(Vec<Drift>, BTreeMap<String, String>), HttpError> {
    let mut designs = Designs::new(&st.design);
    let mut out = Vec::new();
    let mut digested = BTreeMap::new();
    for chunk in hosts.chunks(CHUNK) {
        let projected = inventory::project_hosts(&st.engine, chunk).await?;
        for name in chunk {
            let resolved = designs.resolved(name).await?;
            let found: Vec<Drift> = drift::drift_of(name, &projected[name], resolved.as_ref())
                .into_iter()
                .filter(|d| kinds.contains(&d.kind))
                .collect();
            if digests
                && !found.is_empty()
                && let Some(h) = &resolved
            {
                digested.insert(name.clone(), h.digest());
            }
            out.extend(found);
        }
    }
    Ok((out, digested))
}

/// How hosts differ from the design they are provisioned from, and the workflow that
/// would fix each difference.
#[utoipa::path(
    get,
    path = "/v1/drift",
    tag = "inventory",
    params(DriftQuery),
    responses(
        (status = 200, body = DriftReport),
        (status = 400, description = "Bad filter or drift kind", body = ErrorBody),
    ),
    security(("bearer" = ["viewer"])),
)]
pub async fn list_drift(
    Viewer(_caller): Viewer,
    State(st): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<DriftQuery>,
) -> Result<Json<DriftReport>, HttpError> {
    let kinds: BTreeSet<DriftKind> = match q.kinds.as_deref() {
        None => DriftKind::ALL.into_iter().collect(),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<_, String>>()
            .map_err(|e| HttpError::bad_request("invalid_query", e))?,
    };
    let hosts = selected(&st, hosts_query(q.names, q.labels, q.racks, q.sites))?;
    let (drift, _) = drift_of_hosts(&st, &hosts, &kinds, false).await?;
    Ok(Json(DriftReport {
        revision: st
            .design
            .active()
            .revision
            .as_ref()
            .map(|r| r.commit.clone()),
        hosts: hosts.len(),
        drift,
    }))
}

/// Submits the workflows that fix the drift of the selected hosts: one run per workflow
/// and input, each with an idempotency key derived from its hosts and what the design
/// says of each now, so that applying the same drift twice starts nothing new. Hosts a
/// live run is working on are left alone. The runs' steps wait for their windows as any
/// run's do.
#[utoipa::path(
    post,
    path = "/v1/reconcile",
    tag = "inventory",
    request_body = ReconcileRequest,
    responses(
        (status = 200, description = "What was submitted (or would be, with dry_run), and what was left alone", body = ReconcileOutcome),
        (status = 400, description = "Bad filter, or a workflow refused the input", body = ErrorBody),
        (status = 404, description = "A fixing workflow is not registered", body = ErrorBody),
    ),
    security(("bearer" = ["operator"])),
)]
pub async fn reconcile(
    Operator(caller): Operator,
    State(st): State<Arc<AppState>>,
    ApiJson(req): ApiJson<ReconcileRequest>,
) -> Result<Json<ReconcileOutcome>, HttpError> {
    Ok(Json(reconcile_with(&st, req, &caller, false).await?))
}

/// Plan the fixes of the drift `req` selects and, unless a dry run, submit them as
/// `caller`. A run that cannot be placed fails the whole call, or with `keep_going` is
/// listed among the skipped with why (the background reconciler goes on with the rest).
pub(crate) async fn reconcile_with(
    st: &AppState,
    req: ReconcileRequest,
    caller: &Caller,
    keep_going: bool,
) -> Result<ReconcileOutcome, HttpError> {
    let active = st.design.active();
    let filter: NodeFilter = match req.filter {
        Some(f) => f.dto(),
        None => NodeFilter {
            all: true,
            ..Default::default()
        },
    };
    let mut hosts = active.loaded.design.select(&filter);
    hosts.sort();
    let kinds: BTreeSet<DriftKind> = if req.kinds.is_empty() {
        [
            DriftKind::NeverProvisioned,
            DriftKind::ConfigChanged,
            DriftKind::FirmwareBehind,
        ]
        .into_iter()
        .collect()
    } else {
        req.kinds.iter().copied().collect()
    };
    let (found, digests) = drift_of_hosts(st, &hosts, &kinds, true).await?;
    let (mut runs, mut skipped) = drift::plan(&found, &digests, &req.inputs, &req.images);
    if !req.dry_run {
        let mut placed = Vec::with_capacity(runs.len());
        for mut r in runs {
            let run = NewRun {
                workflow: r.workflow.clone(),
                input: r.input.clone(),
                targets: r.hosts.clone(),
                idempotency_key: Some(r.idempotency_key.clone()),
                ..Default::default()
            };
            let (row, created) = match place(st, run, caller).await {
                Ok(p) => p,
                Err(e) if keep_going => {
                    // Each host of the run, with the drift the run was to fix.
                    let reason = format!("{} could not be submitted: {}", r.workflow, e.message);
                    skipped.extend(found.iter().filter(|d| r.hosts.contains(&d.host)).map(|d| {
                        ReconcileSkip {
                            host: d.host.clone(),
                            kind: d.kind,
                            reason: reason.clone(),
                        }
                    }));
                    continue;
                }
                Err(e) => return Err(e),
            };
            r.run = Some(row.id);
            r.created = created;
            if created {
                let detail = json!({
                    "workflow": r.workflow,
                    "hosts": r.hosts.len(),
                    "idempotency_key": r.idempotency_key,
                    "group": row.group,
                });
                st.audit(caller, "reconcile.submit", row.id, detail).await;
            }
            placed.push(r);
        }
        runs = placed;
    }
    Ok(ReconcileOutcome {
        revision: active.revision.as_ref().map(|r| r.commit.clone()),
        runs,
        skipped,
    })
}
