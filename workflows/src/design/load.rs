//! Reading design files: split into documents, parse, decode each `spec` into its type.
//! Nothing here fails: every problem becomes a finding and the document is left out (or
//! kept as "broken" so that references to it do not cascade into more findings).

use std::collections::HashMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::merge;
use super::report::Finding;
use super::schema::Kind;
use super::{Design, Doc, Source};

/// One file's text, split into documents with their first line.
pub(crate) struct RawDoc<'a> {
    pub text: &'a str,
    pub first_line: usize,
}

/// Splits YAML text on `---` lines (and ends a document at `...`).
pub(crate) fn split_documents(text: &str) -> Vec<RawDoc<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    fn push<'a>(text: &'a str, from: usize, to: usize, first: usize, docs: &mut Vec<RawDoc<'a>>) {
        let chunk = &text[from..to];
        let meaningful = chunk.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        });
        if meaningful {
            docs.push(RawDoc {
                text: chunk,
                first_line: first,
            });
        }
    }
    for (line_no, line) in (1usize..).zip(text.split_inclusive('\n')) {
        let t = line.trim_end();
        let is_sep = t == "---" || t.starts_with("--- ") || t.starts_with("---\t") || t == "...";
        if is_sep {
            push(text, start, offset, start_line, &mut docs);
            start = offset + line.len();
            start_line = line_no + 1;
        }
        offset += line.len();
    }
    push(text, start, text.len(), start_line, &mut docs);
    docs
}

/// Finds the line (1-based, in the file) of `field:` inside a document, after the item
/// `name: item` when the path goes through a named list item. A best effort for humans.
pub(crate) fn locate(doc_text: &str, first_line: usize, path: &str) -> Option<usize> {
    let mut from = 0usize;
    let lines: Vec<&str> = doc_text.lines().collect();
    let mut last_field = None;
    for seg in path.split('.') {
        let (field, item) = match seg.split_once('[') {
            Some((f, rest)) => (f, Some(rest.trim_end_matches(']'))),
            None => (seg, None),
        };
        if !field.is_empty()
            && let Some(i) = find_key(&lines, from, field)
        {
            from = i;
            last_field = Some(i);
        }
        if let Some(item) = item
            && let Some(i) = lines.iter().enumerate().skip(from).find_map(|(i, l)| {
                let t = l
                    .trim_start()
                    .trim_start_matches("- ")
                    .trim_start_matches('{');
                let hit = t.starts_with(&format!("name: {item}"))
                    || t.starts_with(&format!("name: \"{item}\""))
                    || t.starts_with(&format!("- \"!{item}\""))
                    || (item.parse::<usize>().is_err() && l.contains(&format!("name: {item}")));
                hit.then_some(i)
            })
        {
            from = i;
            last_field = Some(i);
        }
    }
    last_field.map(|i| i + first_line)
}

fn find_key(lines: &[&str], from: usize, key: &str) -> Option<usize> {
    let pat = format!("{key}:");
    lines.iter().enumerate().skip(from).find_map(|(i, l)| {
        let t = l
            .trim_start()
            .trim_start_matches("- ")
            .trim_start_matches('{');
        (t.starts_with(&pat) || l.contains(&format!(" {pat}")) || l.contains(&format!("{{{pat}")))
            .then_some(i)
    })
}

/// Turns a serde_path_to_error path into our field path, naming list items by their
/// `name` where they have one: `spec.interfaces[eth0].address`.
fn field_path(spec: &Value, path: &serde_path_to_error::Path) -> String {
    let mut out = String::from("spec");
    let mut cur = Some(spec);
    for seg in path.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => {
                let item = cur.and_then(|v| v.get(*index));
                match item.and_then(|i| i.get("name")).and_then(Value::as_str) {
                    Some(n) => out.push_str(&format!("[{n}]")),
                    None => out.push_str(&format!("[{index}]")),
                }
                cur = item;
            }
            serde_path_to_error::Segment::Map { key } => {
                out.push('.');
                out.push_str(key);
                cur = cur.and_then(|v| v.get(key));
            }
            serde_path_to_error::Segment::Enum { variant } => {
                out.push('.');
                out.push_str(variant);
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

/// Decodes `spec` into `T`; a failure becomes one finding (unknown-field or invalid-field).
fn decode<T: DeserializeOwned>(
    kind: Kind,
    name: &str,
    spec: &Value,
    doc: &RawDoc<'_>,
    file: Option<&str>,
) -> Result<T, Box<Finding>> {
    // The plain decode is the fast path; the path-tracking one only runs to explain a
    // failure.
    if let Ok(v) = T::deserialize(spec) {
        return Ok(v);
    }
    serde_path_to_error::deserialize::<_, T>(spec).map_err(|e| {
        let mut path = field_path(spec, e.path());
        let inner = e.inner().to_string();
        let (rule, message) = match unknown_field_name(&inner) {
            Some(field) => {
                // The path stops at the map holding the unknown key; name the key.
                if !path.ends_with(&format!(".{field}")) {
                    path = format!("{path}.{field}");
                }
                let expected = inner
                    .split_once("`, ")
                    .map(|(_, rest)| format!(" ({rest})"))
                    .unwrap_or_default();
                (
                    "unknown-field",
                    format!("{kind} '{name}': unknown field '{field}' at {path}{expected}"),
                )
            }
            None => ("invalid-field", format!("{kind} '{name}': {path}: {inner}")),
        };
        let line = locate(doc.text, doc.first_line, &path).or(Some(doc.first_line));
        Box::new(Finding::error(rule, kind.as_str(), name, path, message).at(file, line))
    })
}

fn unknown_field_name(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// A document name for kinds other than Host: letters, digits, `.`, `_`, `-`.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
pub(crate) fn valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The parse step: fills `design` and pushes findings. Files must be sorted by the caller.
///
/// YAML parsing, the costly part, runs on all cores (files split among threads); the
/// documents are then decoded and inserted in file order, so the result does not depend
/// on the threads.
pub(crate) fn parse_files(
    files: &[(String, String)],
    design: &mut Design,
    findings: &mut Vec<Finding>,
) {
    type Parsed<'a> = Vec<(RawDoc<'a>, Result<Value, serde_norway::Error>)>;
    fn parse_one(text: &str) -> Parsed<'_> {
        split_documents(text)
            .into_iter()
            .map(|d| {
                let v = serde_norway::from_str(d.text);
                (d, v)
            })
            .collect()
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(files.len().max(1));
    let parsed: Vec<Parsed<'_>> = if threads <= 1 {
        files.iter().map(|(_, t)| parse_one(t)).collect()
    } else {
        let per = files.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = files
                .chunks(per)
                .map(|chunk| {
                    scope.spawn(move || chunk.iter().map(|(_, t)| parse_one(t)).collect::<Vec<_>>())
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| match h.join() {
                    Ok(v) => v,
                    // A parser panic is a bug in the YAML crate; re-raise it here rather
                    // than lose files silently.
                    Err(e) => std::panic::resume_unwind(e),
                })
                .collect()
        })
    };
    for ((path, _), docs) in files.iter().zip(parsed) {
        let file = Some(path.as_str());
        for (doc, value) in docs {
            parse_document(&doc, value, file, design, findings);
        }
    }
}

fn parse_document(
    doc: &RawDoc<'_>,
    value: Result<Value, serde_norway::Error>,
    file: Option<&str>,
    design: &mut Design,
    findings: &mut Vec<Finding>,
) {
    let at_doc = Some(doc.first_line);
    let value: Value = match value {
        Ok(v) => v,
        Err(e) => {
            let line = e
                .location()
                .map(|l| l.line() + doc.first_line - 1)
                .or(at_doc);
            // An unquoted `!item` marker is a YAML tag: say how to write it.
            let hint = if e.to_string().contains("tag") {
                " (inheritance markers like \"!item\" must be quoted)"
            } else {
                ""
            };
            findings.push(
                Finding::error("yaml-syntax", "", "", "", format!("YAML: {e}{hint}"))
                    .at(file, line),
            );
            return;
        }
    };
    let Value::Object(mut top) = value else {
        findings.push(
            Finding::error(
                "invalid-document",
                "",
                "",
                "",
                "a document is a mapping with kind, name and spec",
            )
            .at(file, at_doc),
        );
        return;
    };
    let name = match top.remove("name") {
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            findings.push(
                Finding::error(
                    "invalid-document",
                    top.get("kind").and_then(Value::as_str).unwrap_or(""),
                    "",
                    "name",
                    "the document has no name (a string)",
                )
                .at(file, at_doc),
            );
            return;
        }
    };
    let kind_text = match top.remove("kind") {
        Some(Value::String(s)) => s,
        _ => {
            findings.push(
                Finding::error(
                    "invalid-document",
                    "",
                    name.as_str(),
                    "kind",
                    format!("document '{name}' has no kind (a string)"),
                )
                .at(file, at_doc),
            );
            return;
        }
    };
    let Some(kind) = Kind::parse(&kind_text) else {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        findings.push(
            Finding::error(
                "unknown-kind",
                kind_text.as_str(),
                name.as_str(),
                "kind",
                format!(
                    "document '{name}' has unknown kind '{kind_text}' (one of {})",
                    known.join(", ")
                ),
            )
            .at(file, locate(doc.text, doc.first_line, "kind").or(at_doc)),
        );
        return;
    };
    let spec = match top.remove("spec") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(v) => v,
    };
    if let Some(extra) = top.keys().next() {
        findings.push(
            Finding::error(
                "unknown-field",
                kind.as_str(),
                name.as_str(),
                extra.as_str(),
                format!(
                    "{kind} '{name}': unknown field '{extra}' (a document has kind, name and spec)"
                ),
            )
            .at(file, locate(doc.text, doc.first_line, extra).or(at_doc)),
        );
        design.broken.insert((kind, name));
        return;
    }
    if kind == Kind::Host {
        if !valid_hostname(&name) {
            findings.push(
                Finding::error(
                    "invalid-hostname",
                    kind.as_str(),
                    name.as_str(),
                    "name",
                    format!("host name '{name}' is not a valid hostname (RFC 1123 labels: letters, digits, inner hyphens, at most 63 each)"),
                )
                .at(file, at_doc),
            );
        }
    } else if !valid_name(&name) {
        findings.push(
            Finding::error(
                "invalid-name",
                kind.as_str(),
                name.as_str(),
                "name",
                format!("{kind} name '{name}' must be 1-64 letters, digits, '.', '_' or '-'"),
            )
            .at(file, at_doc),
        );
    }
    if design.contains(kind, &name) {
        let first = design.source(kind, &name);
        let where_first = match first.and_then(|s| s.file.clone()) {
            Some(f) => format!(" (first in {f})"),
            None => String::new(),
        };
        findings.push(
            Finding::error(
                "duplicate-name",
                kind.as_str(),
                name.as_str(),
                "name",
                format!("{kind} '{name}' is defined more than once{where_first}"),
            )
            .at(file, at_doc),
        );
        return;
    }
    let source = Source {
        file: file.map(str::to_string),
        line: doc.first_line,
    };
    if let Err(f) = insert(kind, &name, spec, doc, file, source, design) {
        findings.push(*f);
        design.broken.insert((kind, name));
    }
}

fn insert(
    kind: Kind,
    name: &str,
    spec: Value,
    doc: &RawDoc<'_>,
    file: Option<&str>,
    source: Source,
    design: &mut Design,
) -> Result<(), Box<Finding>> {
    fn put<T>(
        map: &mut std::collections::BTreeMap<String, Doc<T>>,
        name: &str,
        spec: T,
        source: Source,
    ) {
        map.insert(
            name.to_string(),
            Doc {
                name: name.to_string(),
                spec,
                source,
            },
        );
    }
    match kind {
        Kind::Site => put(
            &mut design.sites,
            name,
            decode(kind, name, &spec, doc, file)?,
            source,
        ),
        Kind::Network => put(
            &mut design.networks,
            name,
            decode(kind, name, &spec, doc, file)?,
            source,
        ),
        Kind::NetworkLink => put(
            &mut design.links,
            name,
            decode(kind, name, &spec, doc, file)?,
            source,
        ),
        Kind::HardwareProfile => put(
            &mut design.hardware,
            name,
            decode(kind, name, &spec, doc, file)?,
            source,
        ),
        Kind::BootProfile => put(
            &mut design.boot_profiles,
            name,
            decode(kind, name, &spec, doc, file)?,
            source,
        ),
        Kind::MaintenanceWindow => put(
            &mut design.windows,
            name,
            decode(kind, name, &spec, doc, file)?,
            source,
        ),
        Kind::WorkflowTemplate => put(
            &mut design.templates,
            name,
            decode(kind, name, &spec, doc, file)?,
            source,
        ),
        Kind::HostProfile | Kind::Host => {
            // The layer is checked with its markers taken out; the raw form (markers
            // kept) is what inheritance merges.
            let stripped = merge::strip(&spec).unwrap_or(Value::Null);
            if !spec.is_object() {
                return Err(Box::new(
                    Finding::error(
                        "invalid-field",
                        kind.as_str(),
                        name,
                        "spec",
                        format!("{kind} '{name}': spec must be a mapping"),
                    )
                    .at(file, Some(doc.first_line)),
                ));
            }
            // Remember the reference even if the layer fails its schema, so the profile
            // it names is not also reported as unused.
            let reference = if kind == Kind::Host {
                "profile"
            } else {
                "parent"
            };
            if let Some(p) = spec.get(reference).and_then(Value::as_str) {
                design.referenced_profiles.insert(p.to_string());
            }
            if let Some(f) = duplicate_items(kind, name, &spec, doc, file) {
                return Err(Box::new(f));
            }
            if kind == Kind::Host {
                let typed = decode(kind, name, &stripped, doc, file)?;
                put(&mut design.hosts, name, typed, source);
                design.raw_hosts.insert(name.to_string(), spec);
            } else {
                let typed = decode(kind, name, &stripped, doc, file)?;
                put(&mut design.profiles, name, typed, source);
                design.raw_profiles.insert(name.to_string(), spec);
            }
        }
    }
    Ok(())
}

/// Two items of one named list with the same name in one layer: the merge would fold
/// them silently, so it is refused.
fn duplicate_items(
    kind: Kind,
    name: &str,
    spec: &Value,
    doc: &RawDoc<'_>,
    file: Option<&str>,
) -> Option<Finding> {
    fn walk(v: &Value, path: &str, out: &mut Option<(String, String)>) {
        if out.is_some() {
            return;
        }
        if let Value::Object(m) = v {
            for (k, child) in m {
                let here = format!("{path}.{k}");
                if let Value::Array(items) = child
                    && merge::NAMED_LISTS.contains(&k.as_str())
                {
                    let mut seen: HashMap<&str, ()> = HashMap::new();
                    for it in items {
                        if let Some(n) = it.get("name").and_then(Value::as_str) {
                            if seen.insert(n, ()).is_some() {
                                *out = Some((format!("{here}[{n}]"), n.to_string()));
                                return;
                            }
                            walk(it, &format!("{here}[{n}]"), out);
                        }
                    }
                } else {
                    walk(child, &here, out);
                }
            }
        }
    }
    let mut found = None;
    walk(spec, "spec", &mut found);
    found.map(|(path, item)| {
        let line = locate(doc.text, doc.first_line, &path).or(Some(doc.first_line));
        Finding::error(
            "duplicate-name",
            kind.as_str(),
            name,
            path.as_str(),
            format!("{kind} '{name}': '{item}' appears twice at {path}"),
        )
        .at(file, line)
    })
}

/// Every `*.yaml` / `*.yml` file under `dir`, recursively, as (relative path, contents),
/// sorted by path. Unreadable entries become `read-error` findings.
pub(crate) fn read_dir(dir: &Path, findings: &mut Vec<Finding>) -> Vec<(String, String)> {
    let mut paths = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) => {
                findings.push(
                    Finding::error(
                        "read-error",
                        "",
                        "",
                        "",
                        format!("cannot read directory {}: {e}", d.display()),
                    )
                    .at(Some(&rel(dir, &d)), None),
                );
                continue;
            }
        };
        for entry in entries.flatten() {
            let p = entry.path();
            let name = entry.file_name();
            // Hidden entries (.git) are not part of the design.
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                _ => {
                    if super::is_design_file(&rel(dir, &p)) {
                        paths.push(p);
                    }
                }
            }
        }
    }
    let mut files: Vec<(String, String)> = Vec::new();
    for p in paths {
        let relative = rel(dir, &p);
        match std::fs::read(&p) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => files.push((relative, text)),
                Err(e) => findings.push(
                    Finding::error(
                        "read-error",
                        "",
                        "",
                        "",
                        format!("{relative} is not UTF-8 text: {e}"),
                    )
                    .at(Some(&relative), None),
                ),
            },
            Err(e) => findings.push(
                Finding::error(
                    "read-error",
                    "",
                    "",
                    "",
                    format!("cannot read {relative}: {e}"),
                )
                .at(Some(&relative), None),
            ),
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_separator_lines_and_keeps_first_lines() {
        let text = "# c\n---\nkind: A\n---\nkind: B\nname: x\n...\n---\n\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].first_line, 3);
        assert_eq!(docs[1].first_line, 5);
    }

    #[test]
    fn hostnames() {
        assert!(valid_hostname("r1-n01"));
        assert!(valid_hostname("node1.dc1.example"));
        assert!(!valid_hostname("-bad"));
        assert!(!valid_hostname("under_score"));
        assert!(!valid_hostname(&"a".repeat(64)));
    }
}
