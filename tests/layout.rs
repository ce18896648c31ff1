//! The shape DESIGN.md promises, checked on the source tree: crates depend on each other
//! only along the arrows it lists, no two source files import each other, and the
//! migrations of the crates that share one database never reuse a version.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The crates of the workspace: folder, and the lariat crates it depends on (normal
/// dependencies; tests may reach further).
fn crates() -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(root()).unwrap() {
        let dir = entry.unwrap().path();
        let manifest = dir.join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        out.insert(name, lariat_deps(&manifest));
    }
    out.insert("lariat".into(), lariat_deps(&root().join("Cargo.toml")));
    out
}

fn lariat_deps(manifest: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut section = String::new();
    let mut deps = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        if section == "[dependencies]"
            && let Some(name) = line.split(['.', ' ', '=']).next()
            && let Some(c) = name.strip_prefix("lariat-")
        {
            deps.insert(c.to_string());
        }
    }
    deps
}

#[test]
fn crates_depend_on_each_other_only_along_the_arrows_of_design_md() {
    // DESIGN.md, "Workspace": what each crate may use. Nothing may use the binary.
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("db", &[][..]),
        ("engine", &["db"][..]),
        ("workflows", &["engine"][..]),
        ("source", &["db", "workflows"][..]),
        ("bmc", &[][..]),
        ("redfish-sim", &[][..]),
        ("boot", &[][..]),
        ("steps", &["engine", "workflows", "bmc"][..]),
        (
            "site",
            &["db", "engine", "workflows", "steps", "boot", "bmc"][..],
        ),
        ("api-types", &[][..]),
        (
            "central",
            &["db", "engine", "workflows", "source", "api-types"][..],
        ),
        (
            "api",
            &[
                "db",
                "engine",
                "workflows",
                "source",
                "central",
                "api-types",
            ][..],
        ),
        ("client", &["api-types"][..]),
        ("ui", &["api-types"][..]),
        ("link", &["db", "engine", "workflows", "site", "client"][..]),
        (
            "node",
            &[
                "db",
                "engine",
                "workflows",
                "source",
                "site",
                "central",
                "api",
                "client",
                "link",
                "ui",
            ][..],
        ),
        (
            "bench",
            &["db", "engine", "workflows", "steps", "client", "link"][..],
        ),
        (
            "fuzz",
            &["boot", "engine", "workflows", "api-types", "central"][..],
        ),
        (
            "lariat",
            &[
                "db",
                "boot",
                "workflows",
                "source",
                "site",
                "api",
                "client",
                "node",
                "central",
                "ui",
            ][..],
        ),
    ]);
    let found = crates();
    for (name, deps) in &found {
        let Some(ok) = allowed.get(name.as_str()) else {
            panic!("crate {name} is not in DESIGN.md's list; add it there and here");
        };
        let extra: Vec<&String> = deps.iter().filter(|d| !ok.contains(&d.as_str())).collect();
        assert!(
            extra.is_empty(),
            "{name} depends on {extra:?}, against the arrows of DESIGN.md"
        );
    }
    assert_eq!(
        found.len(),
        allowed.len(),
        "a crate of DESIGN.md's list is gone: {:?}",
        found.keys().collect::<Vec<_>>()
    );
}

/// Every `.rs` file under `src/` of every crate, by crate.
fn sources() -> Vec<(PathBuf, Vec<PathBuf>)> {
    let mut out = Vec::new();
    for name in crates().keys() {
        let src = if name == "lariat" {
            root().join("src")
        } else {
            root().join(name).join("src")
        };
        let mut files = Vec::new();
        walk(&src, &mut files);
        out.push((src, files));
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// A file's module path inside its crate: `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    parts
}

/// The `crate::` and `super::` paths a file names, with whether each stands inside an
/// inline module (where `super` is the file itself).
fn paths_named(text: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    // `use` items, with their brace groups expanded.
    let mut rest = code.as_str();
    while let Some(i) = rest.find("use ") {
        let before = &rest[..i];
        let line_start = before.rfind('\n').map_or(0, |n| n + 1);
        let prefix = before[line_start..].trim();
        let indented = before[line_start..].starts_with(' ');
        let after = &rest[i + 4..];
        let Some(end) = after.find(';') else { break };
        if prefix.is_empty() || prefix.starts_with("pub") {
            for p in expand("", &after[..end]) {
                out.push((p, indented));
            }
        }
        rest = &after[end..];
    }
    // Qualified paths in code.
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            let prev = if at == 0 { b' ' } else { bytes[at - 1] };
            let mut end = at;
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric() || b"_:".contains(&bytes[end]))
            {
                end += 1;
            }
            if !(prev.is_ascii_alphanumeric() || prev == b'_' || prev == b':') {
                out.push((code[at..end].trim_end_matches(':').to_string(), false));
            }
            from = end.max(at + 1);
        }
    }
    out
}

fn expand(prefix: &str, item: &str) -> Vec<String> {
    let item = item.trim();
    let Some(open) = item.find('{') else {
        let path = item.split(" as ").next().unwrap_or(item).trim();
        return vec![format!("{prefix}{path}")];
    };
    let close = item.rfind('}').unwrap_or(item.len());
    let head = &item[..open];
    let inner = &item[open + 1..close];
    let mut parts = Vec::new();
    let (mut depth, mut cur) = (0, String::new());
    for ch in inner.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if ch == ',' && depth == 0 {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(ch);
        }
    }
    parts.push(cur);
    parts
        .iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(|p| expand(&format!("{prefix}{head}"), p))
        .collect()
}

#[test]
fn no_two_source_files_import_each_other() {
    let mut circles = Vec::new();
    for (src, files) in sources() {
        let by_module: BTreeMap<Vec<String>, &PathBuf> =
            files.iter().map(|f| (module_of(&src, f), f)).collect();
        let mut edges: BTreeMap<&PathBuf, BTreeSet<&PathBuf>> = BTreeMap::new();
        for (module, file) in &by_module {
            let text = std::fs::read_to_string(file).unwrap();
            for (path, inline) in paths_named(&text) {
                let mut segs = path.split("::");
                let mut full: Vec<String> = match segs.next() {
                    Some("crate") => Vec::new(),
                    Some("super") if inline => module.clone(),
                    Some("super") => module[..module.len().saturating_sub(1)].to_vec(),
                    _ => continue,
                };
                for s in segs {
                    if s == "super" {
                        full.pop();
                    } else {
                        full.push(s.to_string());
                    }
                }
                let target = (0..=full.len())
                    .rev()
                    .find_map(|n| by_module.get(&full[..n]));
                if let Some(t) = target
                    && *t != *file
                {
                    edges.entry(file).or_default().insert(t);
                }
            }
        }
        for (a, targets) in &edges {
            for b in targets {
                if a < b && edges.get(b).is_some_and(|t| t.contains(a)) {
                    circles.push(format!("{} <-> {}", a.display(), b.display()));
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "files that import each other: {circles:#?}"
    );
}

#[test]
fn migrations_of_one_database_never_share_a_version() {
    let mut seen: BTreeMap<i64, PathBuf> = BTreeMap::new();
    let mut count = 0;
    for name in crates().keys() {
        let dir = root().join(name).join("migrations/sqlite");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            let file = p.file_name().unwrap().to_string_lossy().into_owned();
            let version: i64 = file
                .split('_')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{} has no version prefix", p.display()));
            count += 1;
            if let Some(other) = seen.insert(version, p.clone()) {
                panic!(
                    "{} and {} share version {version}: the crates' migrations share one history table",
                    p.display(),
                    other.display()
                );
            }
        }
    }
    assert!(count >= 6, "the migrations were not found ({count})");
}
