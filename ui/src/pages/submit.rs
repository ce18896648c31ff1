//! Submitting a run: a form made from the workflow's typed parameters (sensitive ones
//! only as `env:`/`file:` references), targets by names or by a node filter with a preview
//! of the hosts it selects.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use lariat_api_types::{HostList, Run, WorkflowDetail, WorkflowList};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::Ui;
use crate::api::query;
use crate::error::UiError;
use crate::extract::{Fields, Mutation, PageQuery, Signed};
use crate::render::page;
use crate::session::Session;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct SubmitQuery {
    #[serde(default)]
    workflow: String,
}

/// One declared parameter, as the form shows it.
#[derive(Debug, Clone, serde::Serialize)]
struct ParamField {
    name: String,
    kind: String,
    required: bool,
    sensitive: bool,
    description: Option<String>,
    default: Option<String>,
    /// What the operator typed (never for a sensitive one that was refused).
    value: String,
}

/// The form, for the workflow picked (the list of workflows first).
pub(crate) async fn form(
    State(ui): State<Arc<Ui>>,
    Signed(s): Signed,
    PageQuery(q): PageQuery<SubmitQuery>,
) -> Result<Response, UiError> {
    render(
        &ui,
        &s,
        &q.workflow,
        &Fields::default(),
        None,
        None,
        StatusCode::OK,
    )
    .await
}

async fn params_of(ui: &Ui, s: &Session, workflow: &str) -> Result<Vec<ParamField>, UiError> {
    let wf: WorkflowDetail = ui
        .get(s, &format!("/v1/workflows/{}", crate::api::q(workflow)))
        .await?;
    let declared = wf
        .latest
        .definition
        .get("parameters")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    Ok(declared
        .into_iter()
        .map(|(name, d)| ParamField {
            kind: d["type"].as_str().unwrap_or("string").to_string(),
            required: d["required"].as_bool().unwrap_or(false),
            sensitive: d["sensitive"].as_bool().unwrap_or(false),
            description: d["description"].as_str().map(str::to_string),
            default: d.get("default").filter(|v| !v.is_null()).map(|v| match v {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            }),
            value: String::new(),
            name,
        })
        .collect())
}

#[allow(clippy::too_many_arguments)]
async fn render(
    ui: &Ui,
    s: &Session,
    workflow: &str,
    fields: &Fields,
    error: Option<String>,
    preview: Option<Value>,
    status: StatusCode,
) -> Result<Response, UiError> {
    let workflows: WorkflowList = ui.get(s, "/v1/workflows").await?;
    let params = if workflow.is_empty() {
        Vec::new()
    } else {
        let mut ps = params_of(ui, s, workflow).await?;
        for p in &mut ps {
            p.value = fields.get(&format!("p.{}", p.name)).to_string();
            if p.sensitive && !is_reference(&p.value) {
                p.value.clear();
            }
        }
        ps
    };
    let f = fields.as_map();
    let get = |k: &str| f.get(k).copied().unwrap_or("");
    let html = page::<UiError>(
        Some(s),
        "submit.html",
        "submit",
        json!({
            "workflows": workflows.workflows,
            "workflow": workflow,
            "params": params,
            "error": error,
            "preview": preview,
            "targets": {
                "by": if get("by").is_empty() { "names" } else { get("by") },
                "names": get("names"), "labels": get("labels"), "racks": get("racks"),
                "sites": get("sites"), "union": get("union") == "on",
                "key": get("idempotency_key"),
            },
        }),
    )?;
    Ok((status, html).into_response())
}

fn is_reference(v: &str) -> bool {
    reference(v).is_some()
}

/// `env:NAME` or `file:/path` as the API's reference object.
fn reference(v: &str) -> Option<Value> {
    let (kind, rest) = v.split_once(':')?;
    let rest = rest.trim();
    if rest.is_empty() {
        return None;
    }
    match kind.trim() {
        "env" if rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            Some(json!({ "env": rest }))
        }
        "file" if rest.starts_with('/') => Some(json!({ "file": rest })),
        _ => None,
    }
}

/// The run's input from the form, or every field that does not read, named.
fn input_of(params: &[ParamField], fields: &Fields) -> Result<Value, Vec<String>> {
    let mut input = Map::new();
    let mut problems = Vec::new();
    for p in params {
        let text = fields.get(&format!("p.{}", p.name));
        if text.is_empty() {
            continue;
        }
        let value = if p.sensitive {
            match reference(text) {
                Some(r) => Ok(r),
                None => Err(format!(
                    "parameter '{}' is sensitive: give a reference, env:VARIABLE or file:/path, not the value itself (the value was not kept)",
                    p.name
                )),
            }
        } else {
            match p.kind.as_str() {
                "integer" => text
                    .parse::<i64>()
                    .map(Value::from)
                    .map_err(|_| format!("parameter '{}' is an integer, not '{text}'", p.name)),
                "boolean" => match text {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    _ => Err(format!(
                        "parameter '{}' is true or false, not '{text}'",
                        p.name
                    )),
                },
                "list" | "object" => serde_json::from_str::<Value>(text)
                    .map_err(|e| format!("parameter '{}' must be JSON ({}): {e}", p.name, p.kind))
                    .and_then(|v| {
                        let ok = if p.kind == "list" {
                            v.is_array()
                        } else {
                            v.is_object()
                        };
                        if ok {
                            Ok(v)
                        } else {
                            Err(format!("parameter '{}' must be a JSON {}", p.name, p.kind))
                        }
                    }),
                _ => Ok(Value::String(text.to_string())),
            }
        };
        match value {
            Ok(v) => {
                input.insert(p.name.clone(), v);
            }
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        Ok(Value::Object(input))
    } else {
        Err(problems)
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// The targets from the form: a list of names, or a node filter.
fn targets_of(fields: &Fields) -> Result<Value, String> {
    if fields.get("by") != "filter" {
        return Ok(Value::from(split_list(fields.get("names"))));
    }
    let mut labels = BTreeMap::new();
    for pair in split_list(fields.get("labels")) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!("label '{pair}' is not key=value"));
        };
        labels.insert(k.to_string(), v.to_string());
    }
    let filter = json!({
        "labels": labels,
        "racks": split_list(fields.get("racks")),
        "sites": split_list(fields.get("sites")),
        "mode": if fields.get("union") == "on" { "union" } else { "intersection" },
    });
    Ok(filter)
}

/// Preview the hosts the targets select, or submit the run.
pub(crate) async fn submit(State(ui): State<Arc<Ui>>, m: Mutation) -> Result<Response, UiError> {
    let (s, fields) = (&m.session, &m.fields);
    let workflow = fields.get("workflow").to_string();
    if workflow.is_empty() {
        let e = "pick a workflow first".to_string();
        return render(&ui, s, "", fields, Some(e), None, StatusCode::BAD_REQUEST).await;
    }
    let targets = match targets_of(fields) {
        Ok(t) => t,
        Err(e) => {
            return render(
                &ui,
                s,
                &workflow,
                fields,
                Some(e),
                None,
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
    };
    if fields.get("action") == "preview" {
        let (path, by) = if let Some(names) = targets.as_array() {
            let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
            (
                format!("/v1/hosts{}", query(&[("names", &names.join(","))])),
                "names",
            )
        } else {
            (
                format!(
                    "/v1/hosts{}",
                    query(&[
                        ("labels", &split_list(fields.get("labels")).join(",")),
                        ("racks", &split_list(fields.get("racks")).join(",")),
                        ("sites", &split_list(fields.get("sites")).join(",")),
                        (
                            "mode",
                            if fields.get("union") == "on" {
                                "union"
                            } else {
                                ""
                            }
                        ),
                    ])
                ),
                "filter",
            )
        };
        let preview = match ui.get::<HostList>(s, &path).await {
            Ok(list) => json!({
                "hosts": list.hosts,
                "revision": list.revision,
                "empty": list.hosts.is_empty(),
                "by": by,
            }),
            Err(f) => json!({ "error": f.message }),
        };
        return render(
            &ui,
            s,
            &workflow,
            fields,
            None,
            Some(preview),
            StatusCode::OK,
        )
        .await;
    }
    let params = params_of(&ui, s, &workflow).await?;
    let input = match input_of(&params, fields) {
        Ok(i) => i,
        Err(problems) => {
            return render(
                &ui,
                s,
                &workflow,
                fields,
                Some(problems.join("; ")),
                None,
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
    };
    let mut body = json!({ "workflow": workflow, "input": input, "targets": targets });
    let key = fields.get("idempotency_key");
    if !key.is_empty() {
        body["idempotency_key"] = Value::String(key.to_string());
    }
    match ui.post::<_, Run>(s, "/v1/runs", &body).await {
        Ok(run) => {
            ui.sessions
                .flash(&s.id, format!("run {} of {} started", run.id, run.workflow));
            Ok(Redirect::to(&format!("/ui/runs/{}", run.id)).into_response())
        }
        Err(f) if f.status == StatusCode::UNAUTHORIZED => Err(f.into()),
        Err(f) => render(&ui, s, &workflow, fields, Some(f.message), None, f.status).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(name: &str, kind: &str, sensitive: bool) -> ParamField {
        ParamField {
            name: name.into(),
            kind: kind.into(),
            required: false,
            sensitive,
            description: None,
            default: None,
            value: String::new(),
        }
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        Fields(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn the_input_is_typed_and_a_sensitive_value_is_refused_by_name() {
        let ps = [
            param("image", "string", false),
            param("n", "integer", false),
            param("pw", "string", true),
        ];
        let ok = input_of(
            &ps,
            &fields(&[
                ("p.image", "http://x/i"),
                ("p.n", "3"),
                ("p.pw", "env:ROOT_PW"),
            ]),
        )
        .unwrap();
        assert_eq!(
            ok,
            json!({"image": "http://x/i", "n": 3, "pw": {"env": "ROOT_PW"}})
        );
        let bad = input_of(&ps, &fields(&[("p.n", "three"), ("p.pw", "hunter2")])).unwrap_err();
        assert_eq!(bad.len(), 2);
        assert!(bad[0].contains("'n' is an integer"), "{bad:?}");
        assert!(bad[1].contains("'pw' is sensitive"), "{bad:?}");
        assert!(!bad[1].contains("hunter2"), "{bad:?}");
    }

    #[test]
    fn targets_are_names_or_a_filter() {
        assert_eq!(
            targets_of(&fields(&[("names", "a, b\nc")])).unwrap(),
            json!(["a", "b", "c"])
        );
        let f = targets_of(&fields(&[
            ("by", "filter"),
            ("labels", "role=web"),
            ("racks", "r1"),
        ]))
        .unwrap();
        assert_eq!(f["labels"], json!({"role": "web"}));
        assert_eq!(f["mode"], "intersection");
        assert!(
            targets_of(&fields(&[("by", "filter"), ("labels", "web")]))
                .unwrap_err()
                .contains("key=value")
        );
    }
}
