//! The sites: who serves each, whether its agent is connected, its lag and active runs.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use serde_json::json;

use crate::Ui;
use crate::error::UiError;
use crate::extract::Signed;
use crate::render::page;

pub(crate) async fn list(
    State(ui): State<Arc<Ui>>,
    Signed(s): Signed,
) -> Result<Html<String>, UiError> {
    let sites = ui.sites(&s).await?;
    page(
        Some(&s),
        "sites.html",
        "sites",
        json!({ "sites": sites, "site_agent": ui.cfg.site_agent }),
    )
}
