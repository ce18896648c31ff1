//! Credential references: the design names where a BMC password lives (an environment
//! variable or a file), and this crate reads it only when a session is opened.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::BmcError;

/// Where a secret lives. Serialized as `{"env": "NAME"}` or `{"file": "/path"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialRef {
    /// An environment variable of the agent's process.
    Env(String),
    /// A file whose content (one trailing newline trimmed) is the secret.
    File(PathBuf),
}

impl CredentialRef {
    /// Reads the secret now. Errors name the reference, never the content.
    pub fn resolve(&self) -> Result<Secret, BmcError> {
        match self {
            CredentialRef::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(Secret(v)),
                Ok(_) => Err(self.error("environment variable is empty")),
                Err(std::env::VarError::NotPresent) => {
                    Err(self.error("environment variable is not set"))
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(self.error("environment variable is not valid UTF-8"))
                }
            },
            CredentialRef::File(path) => {
                let raw = std::fs::read_to_string(path)
                    .map_err(|e| self.error(&format!("cannot read file: {e}")))?;
                let value = raw
                    .strip_suffix("\r\n")
                    .or_else(|| raw.strip_suffix('\n'))
                    .unwrap_or(&raw);
                if value.is_empty() {
                    return Err(self.error("file is empty"));
                }
                Ok(Secret(value.to_owned()))
            }
        }
    }

    fn error(&self, detail: &str) -> BmcError {
        BmcError::Credential {
            reference: self.to_string(),
            detail: detail.to_owned(),
        }
    }
}

impl fmt::Display for CredentialRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialRef::Env(name) => write!(f, "env:{name}"),
            CredentialRef::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

/// A resolved secret. `Debug` and `Display` print `***`, so it cannot leak through a log
/// line or an error message; [`Secret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value (tests, or callers that already hold the secret).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn file_reference_trims_one_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "pa ss\n").expect("write");
        let s = CredentialRef::File(path).resolve().expect("resolve");
        assert_eq!(s.expose(), "pa ss");
    }

    #[test]
    fn missing_env_names_the_reference_not_a_value() {
        let r = CredentialRef::Env("LARIAT_BMC_TEST_SURELY_UNSET".into());
        let e = r.resolve().expect_err("unset");
        let msg = e.to_string();
        assert!(msg.contains("env:LARIAT_BMC_TEST_SURELY_UNSET"), "{msg}");
        assert!(msg.contains("not set"), "{msg}");
    }

    #[test]
    fn unreadable_file_is_an_error() {
        let r = CredentialRef::File("/nonexistent/lariat/pw".into());
        assert!(matches!(r.resolve(), Err(BmcError::Credential { .. })));
    }

    #[test]
    fn serde_shape() {
        let r: CredentialRef = serde_json::from_str(r#"{"env":"BMC_PW"}"#).expect("parse");
        assert_eq!(r, CredentialRef::Env("BMC_PW".into()));
        let r: CredentialRef = serde_json::from_str(r#"{"file":"/run/pw"}"#).expect("parse");
        assert_eq!(r, CredentialRef::File("/run/pw".into()));
    }
}
