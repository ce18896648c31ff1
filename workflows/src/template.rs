//! Workflow templates: a step DAG with typed run parameters, compiled to an engine
//! definition.
//!
//! A template is a `kind: WorkflowTemplate` document. Its `steps` are engine steps as
//! they are (actions, needs, retry, `for_each: {over: targets}`, window); its
//! `parameters` declare what a run's input may hold. The compiled definition carries the
//! declarations, so a run's input is checked against the version the run is pinned to.
//!
//! Sensitive parameters are never values: a run gives a reference (`{env: NAME}` or
//! `{file: PATH}`) that the step resolves when it needs the secret, so the secret is in
//! no event, no log line and no API response.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use lariat_engine::params::{Param, ParamError, ParamType, Parameters, SecretError, SecretRef};

/// A template as parsed, before its steps are checked by the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Parameters,
    /// Engine steps; the engine decodes and checks them.
    pub steps: Vec<Value>,
}

/// A `kind: WorkflowTemplate` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateDoc {
    pub kind: String,
    pub name: String,
    pub spec: TemplateSpec,
}

/// Parses a `kind: WorkflowTemplate` YAML document and checks its declarations.
pub fn parse_template(yaml: &str) -> Result<TemplateDoc, ParamError> {
    let doc: TemplateDoc = serde_norway::from_str(yaml).map_err(|e| ParamError {
        problems: vec![format!("workflow template: {e}")],
    })?;
    if doc.kind != "WorkflowTemplate" {
        return Err(ParamError {
            problems: vec![format!(
                "workflow template {}: kind must be WorkflowTemplate, got {}",
                doc.name, doc.kind
            )],
        });
    }
    let problems = doc.spec.parameters.declaration_problems();
    if problems.is_empty() {
        Ok(doc)
    } else {
        Err(ParamError { problems })
    }
}

impl TemplateDoc {
    /// The engine definition: name, description, declared parameters and steps.
    pub fn definition(&self) -> Value {
        let mut def = Map::new();
        def.insert("name".into(), Value::String(self.name.clone()));
        if let Some(d) = &self.spec.description {
            def.insert("description".into(), Value::String(d.clone()));
        }
        if !self.spec.parameters.0.is_empty() {
            def.insert(
                "parameters".into(),
                serde_json::to_value(&self.spec.parameters).unwrap_or(Value::Null),
            );
        }
        def.insert("steps".into(), Value::Array(self.spec.steps.clone()));
        Value::Object(def)
    }

    /// [`definition`](Self::definition) as JSON text, for `Engine::register_workflow`.
    pub fn definition_json(&self) -> String {
        self.definition().to_string()
    }
}

/// Replaces every string `"${params.NAME}"` in a step's input by the run's parameter
/// `NAME` (a whole-string reference keeps the parameter's type). Unknown names stay as
/// written, so the step can report them.
pub fn expand(input: &Value, params: &Value) -> Value {
    match input {
        Value::String(s) => s
            .strip_prefix("${params.")
            .and_then(|r| r.strip_suffix('}'))
            .and_then(|name| params.get(name))
            .cloned()
            .unwrap_or_else(|| input.clone()),
        Value::Array(a) => Value::Array(a.iter().map(|v| expand(v, params)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), expand(v, params)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_expand_with_their_type() {
        let p = json!({"image": "debian-12", "n": 3});
        let got = expand(
            &json!({"img": "${params.image}", "n": ["${params.n}"], "x": "${params.nope}", "s": "a ${params.n}"}),
            &p,
        );
        assert_eq!(
            got,
            json!({"img": "debian-12", "n": [3], "x": "${params.nope}", "s": "a ${params.n}"})
        );
    }
}
