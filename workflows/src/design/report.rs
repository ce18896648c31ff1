//! Findings: what is wrong (or doubtful) in a design, each with a stable rule id.

use serde::{Deserialize, Serialize};

/// How bad a finding is. A design with any error is never made active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
}

/// One thing a rule found in one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub level: Level,
    /// Stable id, e.g. `ip-outside-cidr` (see the table in the module documentation).
    pub rule: String,
    pub message: String,
    /// Document kind (`Host`, `Network`...), or empty when the file itself is at fault.
    pub kind: String,
    /// Document name, or empty when the document has none.
    pub name: String,
    /// Field path inside the document, e.g. `spec.interfaces[eth0].address`.
    pub path: String,
    /// File the document came from, relative to the design root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based line in `file`, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

impl Finding {
    /// An error finding with no file position (add it with [`Finding::at`]).
    pub fn error(
        rule: &str,
        kind: impl Into<String>,
        name: impl Into<String>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Finding {
        Finding {
            level: Level::Error,
            rule: rule.to_string(),
            message: message.into(),
            kind: kind.into(),
            name: name.into(),
            path: path.into(),
            file: None,
            line: None,
        }
    }

    /// A warning finding.
    pub fn warning(
        rule: &str,
        kind: impl Into<String>,
        name: impl Into<String>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Finding {
        Finding {
            level: Level::Warning,
            ..Finding::error(rule, kind, name, path, message)
        }
    }

    /// The same finding, placed in a file.
    pub fn at(mut self, file: Option<&str>, line: Option<usize>) -> Finding {
        self.file = file.map(str::to_string);
        self.line = line;
        self
    }
}

/// Every finding of a load, in a deterministic order (file, line, rule).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether any finding is an error (the design must not become active).
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.level == Level::Error)
    }

    /// The error findings.
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.level == Level::Error)
    }

    /// The warning findings.
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.level == Level::Warning)
    }
}
