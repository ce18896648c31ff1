//! Typed run parameters: what a workflow version declares its runs' input may hold, and
//! the check of a run's input against them, made once, at submit, against the version the
//! run is pinned to.
//!
//! Sensitive parameters are never values: a run gives a reference (`{env: NAME}` or
//! `{file: PATH}`) that the step resolves when it needs the secret, so the secret is in
//! no event, no log line and no API response.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The type of a run parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Boolean,
    List,
    Object,
}

impl ParamType {
    fn admits(self, v: &Value) -> bool {
        match self {
            ParamType::String => v.is_string(),
            ParamType::Integer => v.is_i64() || v.is_u64(),
            ParamType::Boolean => v.is_boolean(),
            ParamType::List => v.is_array(),
            ParamType::Object => v.is_object(),
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Boolean => "boolean",
            ParamType::List => "list",
            ParamType::Object => "object",
        })
    }
}

/// One declared run parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    #[serde(rename = "type")]
    pub kind: ParamType,
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Given by reference only, and never shown.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sensitive: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A workflow's declared parameters, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Parameters(pub BTreeMap<String, Param>);

/// Why a template or a run's input was refused. Every problem is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct ParamError {
    pub problems: Vec<String>,
}

impl Parameters {
    /// The declarations `workflow`'s definition carries (none when it declares none).
    pub fn read(workflow: &str, declared: Option<&Value>) -> Result<Parameters, ParamError> {
        match declared {
            None | Some(Value::Null) => Ok(Parameters::default()),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| ParamError {
                problems: vec![format!("workflow {workflow}: parameters: {e}")],
            }),
        }
    }

    /// Problems with the declarations themselves.
    pub fn declaration_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, p) in &self.0 {
            if !valid_name(name) {
                out.push(format!(
                    "parameter '{name}': names use letters, digits and '_', and start with a letter"
                ));
            }
            match &p.default {
                Some(_) if p.required => out.push(format!(
                    "parameter '{name}': a required parameter cannot have a default"
                )),
                Some(_) if p.sensitive => out.push(format!(
                    "parameter '{name}': a sensitive parameter cannot have a default (it would be shown)"
                )),
                Some(d) if !p.kind.admits(d) => out.push(format!(
                    "parameter '{name}': default {d} is not a {}",
                    p.kind
                )),
                _ => {}
            }
        }
        out
    }

    /// Checks a run's input against the declarations and fills in defaults. With no
    /// declarations, any input passes unchanged. Errors name each parameter at fault.
    pub fn apply(&self, input: &Value) -> Result<Value, ParamError> {
        if self.0.is_empty() {
            return Ok(input.clone());
        }
        let given = match input {
            Value::Null => Map::new(),
            Value::Object(m) => m.clone(),
            other => {
                return Err(ParamError {
                    problems: vec![format!(
                        "input must be an object of parameters, got {}",
                        kind_of(other)
                    )],
                });
            }
        };
        let mut problems = Vec::new();
        for name in given.keys() {
            if !self.0.contains_key(name) {
                let known: Vec<&str> = self.0.keys().map(String::as_str).collect();
                problems.push(format!(
                    "unknown parameter '{name}' (this workflow takes: {})",
                    known.join(", ")
                ));
            }
        }
        let mut out = Map::new();
        for (name, p) in &self.0 {
            match given.get(name) {
                None | Some(Value::Null) => {
                    if p.required {
                        problems.push(format!("parameter '{name}' is required ({})", p.kind));
                    } else if let Some(d) = &p.default {
                        out.insert(name.clone(), d.clone());
                    }
                }
                Some(v) if p.sensitive => match SecretRef::from_value(v) {
                    Some(_) => {
                        out.insert(name.clone(), v.clone());
                    }
                    None => problems.push(format!(
                        "parameter '{name}' is sensitive: give a reference {{\"env\": \"VAR\"}} or {{\"file\": \"/path\"}}, not a value"
                    )),
                },
                Some(v) if !p.kind.admits(v) => problems.push(format!(
                    "parameter '{name}' must be a {}, got {}",
                    p.kind,
                    kind_of(v)
                )),
                Some(v) => {
                    out.insert(name.clone(), v.clone());
                }
            }
        }
        if problems.is_empty() {
            Ok(Value::Object(out))
        } else {
            Err(ParamError { problems })
        }
    }
}

fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && s.len() <= 64
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Where a sensitive value lives. Resolved by the step that needs it, never stored.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(v) => write!(f, "env:{v}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// Why a secret could not be read; names the reference, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SecretRef {
    /// `{"env": "NAME"}` or `{"file": "/path"}`, and nothing else.
    pub fn from_value(v: &Value) -> Option<SecretRef> {
        let m = v.as_object().filter(|m| m.len() == 1)?;
        if let Some(n) = m.get("env").and_then(Value::as_str) {
            return (!n.is_empty()).then(|| SecretRef::Env(n.to_string()));
        }
        let p = m.get("file").and_then(Value::as_str)?;
        (!p.is_empty()).then(|| SecretRef::File(PathBuf::from(p)))
    }

    /// The secret, with a trailing newline of a file removed.
    pub fn resolve(&self) -> Result<String, SecretError> {
        match self {
            SecretRef::Env(n) => std::env::var(n).map_err(|_| SecretError::MissingEnv(n.clone())),
            SecretRef::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|source| SecretError::File {
                    path: p.clone(),
                    source,
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params() -> Parameters {
        serde_json::from_value(json!({
            "image": {"type": "string", "default": "debian-12"},
            "hosts_at_once": {"type": "integer", "required": true},
            "wipe": {"type": "boolean"},
            "root_password": {"type": "string", "sensitive": true},
        }))
        .unwrap()
    }

    #[test]
    fn input_gets_defaults_and_keeps_given_values() {
        let out = params()
            .apply(&json!({"hosts_at_once": 4, "wipe": true}))
            .unwrap();
        assert_eq!(
            out,
            json!({"image": "debian-12", "hosts_at_once": 4, "wipe": true})
        );
    }

    #[test]
    fn every_input_problem_is_named() {
        let err = params()
            .apply(&json!({"image": 7, "colour": "red", "root_password": "hunter2"}))
            .unwrap_err();
        let all = err.problems.join("\n");
        assert!(all.contains("unknown parameter 'colour'"), "{all}");
        assert!(
            all.contains("'image' must be a string, got an integer"),
            "{all}"
        );
        assert!(all.contains("'hosts_at_once' is required"), "{all}");
        assert!(all.contains("'root_password' is sensitive"), "{all}");
        assert!(
            !all.contains("hunter2"),
            "a refused secret is echoed: {all}"
        );
        assert_eq!(err.problems.len(), 4);
    }

    #[test]
    fn a_sensitive_parameter_takes_a_reference_and_resolves_it() {
        let out = params()
            .apply(&json!({"hosts_at_once": 1, "root_password": {"env": "LARIAT_TEST_PW"}}))
            .unwrap();
        let r = SecretRef::from_value(&out["root_password"]).unwrap();
        assert_eq!(format!("{r:?}"), "env:LARIAT_TEST_PW");
        assert!(matches!(r.resolve(), Err(SecretError::MissingEnv(_))));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let r = SecretRef::File(f);
        assert_eq!(r.resolve().unwrap(), "s3cret");
    }

    #[test]
    fn bad_declarations_are_refused() {
        let p: Parameters = serde_json::from_value(json!({
            "a": {"type": "integer", "default": "x"},
            "b": {"type": "string", "required": true, "default": "y"},
            "c": {"type": "string", "sensitive": true, "default": "z"},
            "9d": {"type": "string"},
        }))
        .unwrap();
        assert_eq!(
            p.declaration_problems().len(),
            4,
            "{:?}",
            p.declaration_problems()
        );
        let bad_type = serde_json::from_value::<Parameters>(json!({"a": {"type": "float"}}));
        assert!(bad_type.is_err());
    }
}
