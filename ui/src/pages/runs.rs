//! The runs list, filtered by status, workflow, site and host.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{Html, Redirect};
use lariat_api_types::{RunPage, WorkflowList};
use serde::Deserialize;

use crate::Ui;
use crate::api::query;
use crate::error::UiError;
use crate::extract::{PageQuery, Signed};
use crate::render::page;

/// `/` and `/ui`: the runs.
pub(crate) async fn home() -> Redirect {
    Redirect::to("/ui/runs")
}

/// The list's filter, as the form sends it (empty fields are no filter).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RunsFilter {
    #[serde(default)]
    status: String,
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    site: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    cursor: String,
}

const STATUSES: [&str; 9] = [
    "running",
    "paused",
    "failed",
    "succeeded",
    "cancelled",
    "rolling_back",
    "rolled_back",
    "compensation_failed",
    "assigned",
];

/// Newest first, 50 a page; a site filter selects the runs its agent owns.
pub(crate) async fn list(
    State(ui): State<Arc<Ui>>,
    Signed(s): Signed,
    PageQuery(f): PageQuery<RunsFilter>,
) -> Result<Html<String>, UiError> {
    if !f.status.is_empty() && !STATUSES.contains(&f.status.as_str()) {
        return Err(UiError::BadInput(format!(
            "no run status '{}': pick one of {}",
            f.status,
            STATUSES.join(", ")
        )));
    }
    let sites = ui.sites(&s).await?;
    let mut owner = String::new();
    let mut notice = None;
    if !f.site.is_empty() {
        match sites.iter().find(|x| x.site == f.site) {
            None => {
                return Err(UiError::NotFound(format!(
                    "no site '{}' in the design; the sites are: {}",
                    f.site,
                    sites
                        .iter()
                        .map(|x| x.site.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            Some(x) => match &x.executor {
                Some(e) => owner = e.clone(),
                None => {
                    notice = Some(format!(
                        "site {} has no agent: its runs are the central node's, shown unfiltered by site",
                        f.site
                    ))
                }
            },
        }
    }
    let path = format!(
        "/v1/runs{}",
        query(&[
            ("status", &f.status),
            ("workflow", &f.workflow),
            ("owner", &owner),
            ("host", &f.host),
            ("cursor", &f.cursor),
            ("limit", "50"),
        ])
    );
    let runs: RunPage = ui.get(&s, &path).await?;
    let workflows: WorkflowList = ui.get(&s, "/v1/workflows").await?;
    let site_of: std::collections::HashMap<&str, &str> = sites
        .iter()
        .filter_map(|x| x.executor.as_deref().map(|e| (e, x.site.as_str())))
        .collect();
    let rows: Vec<serde_json::Value> = runs
        .runs
        .iter()
        .map(|r| {
            serde_json::json!({
                "run": r,
                "site": site_of.get(r.owner.as_str()).copied().unwrap_or(if ui.cfg.site_agent { "this site" } else { "central" }),
                "targets": shorten(&r.targets, 4),
            })
        })
        .collect();
    let next = runs.next_cursor.as_ref().map(|c| {
        format!(
            "/ui/runs{}",
            query(&[
                ("status", &f.status),
                ("workflow", &f.workflow),
                ("site", &f.site),
                ("host", &f.host),
                ("cursor", c),
            ])
        )
    });
    let filtered =
        !(f.status.is_empty() && f.workflow.is_empty() && f.site.is_empty() && f.host.is_empty());
    page(
        Some(&s),
        "runs.html",
        "runs",
        serde_json::json!({
            "rows": rows,
            "next": next,
            "filter": {"status": f.status, "workflow": f.workflow, "site": f.site, "host": f.host},
            "filtered": filtered,
            "statuses": STATUSES,
            "workflows": workflows.workflows.iter().map(|w| &w.name).collect::<Vec<_>>(),
            "sites": sites.iter().map(|x| &x.site).collect::<Vec<_>>(),
            "notice": notice,
        }),
    )
}

/// The first `n` names, and how many more.
pub(crate) fn shorten(names: &[String], n: usize) -> String {
    if names.len() <= n {
        names.join(", ")
    } else {
        format!("{} and {} more", names[..n].join(", "), names.len() - n)
    }
}
