//! The design: its source, the revisions fetched with their findings, the active one and
//! the site pins.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use lariat_api_types::{DesignOverview, RevisionFindings};
use serde::Deserialize;
use serde_json::json;

use crate::Ui;
use crate::api::q;
use crate::error::UiError;
use crate::extract::{PageQuery, Signed};
use crate::render::page;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DesignQuery {
    /// The revision whose findings are shown.
    #[serde(default)]
    rev: String,
}

pub(crate) async fn overview(
    State(ui): State<Arc<Ui>>,
    Signed(s): Signed,
    PageQuery(dq): PageQuery<DesignQuery>,
) -> Result<Html<String>, UiError> {
    let design: DesignOverview = ui.get(&s, "/v1/designs?limit=50").await?;
    let rev = if dq.rev.is_empty() {
        design
            .revisions
            .iter()
            .find(|r| r.errors + r.warnings > 0)
            .or(design.active.as_ref())
            .map(|r| r.commit.clone())
            .unwrap_or_default()
    } else {
        dq.rev.clone()
    };
    let findings: Option<RevisionFindings> = if rev.is_empty() {
        None
    } else {
        Some(
            ui.get(&s, &format!("/v1/designs/{}/findings", q(&rev)))
                .await?,
        )
    };
    page(
        Some(&s),
        "design.html",
        "design",
        json!({ "design": design, "findings": findings }),
    )
}
