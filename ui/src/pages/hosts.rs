//! The inventory: every host with filters, and one host with its history and drift.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Html;
use lariat_api_types::{HostDetail, HostPage, HostState};
use serde::Deserialize;
use serde_json::json;

use crate::Ui;
use crate::api::{q, query};
use crate::error::UiError;
use crate::extract::{PageQuery, Signed};
use crate::render::page;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct HostsFilter {
    #[serde(default)]
    names: String,
    #[serde(default)]
    labels: String,
    #[serde(default)]
    racks: String,
    #[serde(default)]
    sites: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    after: String,
}

/// 100 hosts a page, by name.
pub(crate) async fn list(
    State(ui): State<Arc<Ui>>,
    Signed(s): Signed,
    PageQuery(f): PageQuery<HostsFilter>,
) -> Result<Html<String>, UiError> {
    let filter = [
        ("names", f.names.as_str()),
        ("labels", f.labels.as_str()),
        ("racks", f.racks.as_str()),
        ("sites", f.sites.as_str()),
        ("state", f.state.as_str()),
    ];
    let mut asked = filter.to_vec();
    asked.push(("after", &f.after));
    asked.push(("limit", "100"));
    let hosts: HostPage = ui
        .get(&s, &format!("/v1/inventory/hosts{}", query(&asked)))
        .await?;
    let next = hosts.next.as_ref().map(|n| {
        let mut p = filter.to_vec();
        p.push(("after", n));
        format!("/ui/hosts{}", query(&p))
    });
    let filtered = filter.iter().any(|(_, v)| !v.is_empty());
    page(
        Some(&s),
        "hosts.html",
        "hosts",
        json!({
            "hosts": hosts.hosts,
            "revision": hosts.revision,
            "next": next,
            "filter": {"names": f.names, "labels": f.labels, "racks": f.racks, "sites": f.sites, "state": f.state},
            "filtered": filtered,
            "states": HostState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        }),
    )
}

/// A host's record, history and drift.
pub(crate) async fn detail(
    State(ui): State<Arc<Ui>>,
    Signed(s): Signed,
    Path(name): Path<String>,
) -> Result<Html<String>, UiError> {
    let host: HostDetail = ui
        .get(&s, &format!("/v1/inventory/hosts/{}", q(&name)))
        .await?;
    page(Some(&s), "host.html", "hosts", json!({ "host": host }))
}
