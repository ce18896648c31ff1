//! Maintenance windows: open or not, their next openings, the steps waiting on them, and
//! the operators' overrides.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use lariat_api_types::WindowList;
use serde_json::json;

use crate::Ui;
use crate::error::UiError;
use crate::extract::Signed;
use crate::render::page;

pub(crate) async fn list(
    State(ui): State<Arc<Ui>>,
    Signed(s): Signed,
) -> Result<Html<String>, UiError> {
    let windows: WindowList = ui.get(&s, "/v1/windows").await?;
    page(
        Some(&s),
        "windows.html",
        "windows",
        json!({ "list": windows }),
    )
}
