//! Templates compiled into the binary, and the page frame every one of them fills.

use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{Environment, Value};
use serde::Serialize;

use crate::session::Session;

/// A template that did not render: a bug of the UI, not of the request.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct RenderError(pub String);

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("signin.html", include_str!("../templates/signin.html")),
    ("runs.html", include_str!("../templates/runs.html")),
    ("run.html", include_str!("../templates/run.html")),
    ("confirm.html", include_str!("../templates/confirm.html")),
    ("submit.html", include_str!("../templates/submit.html")),
    ("hosts.html", include_str!("../templates/hosts.html")),
    ("host.html", include_str!("../templates/host.html")),
    ("sites.html", include_str!("../templates/sites.html")),
    ("design.html", include_str!("../templates/design.html")),
    ("windows.html", include_str!("../templates/windows.html")),
];

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES {
        // The templates are part of the binary: one that does not parse is a build bug,
        // caught by the first test that renders any page.
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("template {name}: {e}"));
    }
    env.add_filter("ts", ts);
    env.add_filter("took", took);
    env.add_filter("pretty", pretty);
    env
});

/// The first millisecond of the year 10000, which RFC 3339 cannot write.
const YEAR_10000_MS: i64 = 253_402_300_800_000;

/// Milliseconds since the epoch as UTC time to the second; `-` for none.
fn ts(ms: Option<i64>) -> String {
    match ms {
        // humantime's Display fails past 9999, and a failing Display panics `to_string`.
        Some(ms) if ms >= YEAR_10000_MS => format!("{ms} ms after the epoch (past 9999)"),
        Some(ms) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
                .to_string()
                .replace('T', " ")
        }
        None => "-".into(),
    }
}

/// The time from `start` to `end` (or to now), rounded for people.
fn took(start: Option<i64>, end: Option<i64>) -> String {
    let Some(start) = start else {
        return "-".into();
    };
    let end = end.unwrap_or_else(now_ms);
    let ms = (end - start).max(0) as u64;
    if ms < 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
    }
}

/// A JSON value indented, cut at 4 KiB so one output cannot swamp the page.
fn pretty(v: Value) -> String {
    let json = serde_json::to_value(&v)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_default();
    if json.len() > 4096 {
        let cut = (0..=4096)
            .rev()
            .find(|&i| json.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}\n… ({} bytes in all)", &json[..cut], json.len())
    } else {
        json
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Render `template` with `ctx` and the frame's fields: who is signed in, their CSRF
/// token, the flash message, and which tab is open.
pub(crate) fn page<E: From<RenderError>>(
    session: Option<&Session>,
    template: &str,
    tab: &str,
    ctx: impl Serialize,
) -> Result<Html<String>, E> {
    let me = session.map(|s| {
        serde_json::json!({
            "name": s.name,
            "role": s.role,
            "can_operate": s.can_operate(),
            "can_admin": s.can_admin(),
        })
    });
    let frame = minijinja::context! {
        me => me,
        csrf => session.map(|s| s.csrf.clone()),
        flash => session.and_then(|s| s.flash.clone()),
        tab => tab,
    };
    let ctx = minijinja::context! { ..frame, ..Value::from_serialize(&ctx) };
    ENV.get_template(template)
        .and_then(|t| t.render(ctx))
        .map(Html)
        .map_err(|e| RenderError(format!("{e:#}")).into())
}

/// The error page: a sentence saying what went wrong and what to do, never a trace.
pub(crate) fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let ctx = minijinja::context! { status => status.as_u16(), title => title, message => message };
    match ENV.get_template("error.html").and_then(|t| t.render(ctx)) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => (status, format!("{title}: {message}")).into_response(),
    }
}

/// The stylesheet and the script.
pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "lariat.css" => (
            include_str!("../static/lariat.css"),
            "text/css; charset=utf-8",
        ),
        "lariat.js" => (
            include_str!("../static/lariat.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => {
            return error_page(
                StatusCode::NOT_FOUND,
                "No such file",
                &format!("the UI has no file '{file}'"),
            );
        }
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_outputs_read_for_people() {
        assert_eq!(ts(Some(0)), "1970-01-01 00:00:00Z");
        assert_eq!(ts(None), "-");
        assert_eq!(ts(Some(YEAR_10000_MS - 1000)), "9999-12-31 23:59:59Z");
        assert!(ts(Some(i64::MAX)).contains("past 9999"));
        assert_eq!(took(Some(1000), Some(3500)), "2.5 s");
        assert_eq!(took(Some(0), Some(125_000)), "2m 5s");
        let big = Value::from("x".repeat(5000));
        assert!(pretty(big).contains("bytes in all"));
    }

    #[test]
    fn every_template_parses() {
        for (name, _) in TEMPLATES {
            ENV.get_template(name).unwrap();
        }
    }
}
