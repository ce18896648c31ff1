//! The part of a design's files that one site needs: every document but the hosts of
//! other sites. A site agent loads only its own hosts, however many sites the design has.

use std::collections::HashMap;

use super::Design;
use super::load::split_documents;

/// `files` (the revision `design` was loaded from) without the `Host` documents of
/// sites other than `site`. A file that loses none of its documents is kept byte for
/// byte; one that loses all of them is left out. Hosts without a site stay.
pub fn site_part(files: &[(String, String)], design: &Design, site: &str) -> Vec<(String, String)> {
    // Where each other site's host starts: (file, first line) -> its name.
    let mut others: HashMap<(&str, usize), &str> = HashMap::new();
    for h in design.hosts() {
        let theirs = h.spec.site.as_deref().is_some_and(|s| s != site);
        if let (true, Some(file)) = (theirs, h.source.file.as_deref()) {
            others.insert((file, h.source.line), h.name.as_str());
        }
    }
    let mut out = Vec::with_capacity(files.len());
    for (path, text) in files {
        let docs = split_documents(text);
        let keep: Vec<&str> = docs
            .iter()
            .filter(|d| {
                !others
                    .get(&(path.as_str(), d.first_line))
                    .is_some_and(|name| names_host(d.text, name))
            })
            .map(|d| d.text)
            .collect();
        if keep.len() == docs.len() {
            out.push((path.clone(), text.clone()));
        } else if !keep.is_empty() {
            let mut joined = String::new();
            for d in keep {
                if !joined.is_empty() {
                    joined.push_str("---\n");
                }
                joined.push_str(d);
                if !d.ends_with('\n') {
                    joined.push('\n');
                }
            }
            out.push((path.clone(), joined));
        }
    }
    out
}

/// Whether `doc` says, line by line, that it is the Host `name`. Checked against the
/// text, not only by position, so that a design of another revision can only ever keep
/// too much, never drop a document it does not know; a document written otherwise (flow
/// style, a name quoted differently) is kept.
fn names_host(doc: &str, name: &str) -> bool {
    let field = |key: &str| {
        doc.lines()
            .filter_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\''))
            .collect::<Vec<_>>()
    };
    field("kind:") == ["Host"] && field("name:") == [name]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::design::load_files;

    const SITES: &str =
        "kind: Site\nname: a\nspec: {id: a}\n---\nkind: Site\nname: b\nspec: {id: b}\n";

    fn host(name: &str, site: Option<&str>) -> String {
        let site = site.map(|s| format!("  site: {s}\n")).unwrap_or_default();
        format!("kind: Host\nname: {name}\nspec:\n{site}  rack: r1\n")
    }

    /// A script whose text would read as two YAML documents.
    const SCRIPT: &str = "#!/bin/sh\necho kind: Host\n---\necho name: b1\n";

    #[test]
    fn keeps_the_sites_own_hosts_and_everything_else() {
        let mixed = [
            host("a1", Some("a")),
            host("b1", Some("b")),
            host("n1", None),
        ]
        .join("---\n");
        let files = vec![
            ("hosts/b.yaml".to_string(), host("b2", Some("b"))),
            ("hosts/mixed.yaml".to_string(), mixed),
            ("scripts/raid.sh".to_string(), SCRIPT.to_string()),
            ("sites.yaml".to_string(), SITES.to_string()),
        ];
        let loaded = load_files(&files);
        let part = site_part(&files, &loaded.design, "a");
        let paths: Vec<&str> = part.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["hosts/mixed.yaml", "scripts/raid.sh", "sites.yaml"],
            "b.yaml is all b's"
        );
        assert_eq!(part[2].1, SITES, "an untouched file is kept as it was");
        let mine = load_files(&part);
        assert_eq!(
            mine.design.script("scripts/raid.sh").map(|s| &**s),
            Some(SCRIPT),
            "scripts travel as they are"
        );
        let mut names: Vec<&str> = mine.design.hosts().map(|h| h.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["a1", "n1"]);
        // Site b's own part holds b's hosts.
        let theirs = load_files(&site_part(&files, &loaded.design, "b"));
        let mut names: Vec<&str> = theirs.design.hosts().map(|h| h.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["b1", "b2", "n1"]);
    }

    #[test]
    fn only_the_host_itself_is_recognised_at_its_place() {
        assert!(names_host(&host("b1", Some("b")), "b1"));
        assert!(names_host("kind: Host\nname: \"b1\"\n", "b1"));
        // Another revision may put something else where b1 was: kept.
        assert!(!names_host(&host("b10", Some("b")), "b1"));
        assert!(!names_host("kind: HostProfile\nname: b1\n", "b1"));
        assert!(!names_host("{kind: Host, name: b1}\n", "b1"));
    }

    #[test]
    fn a_design_of_other_files_drops_nothing() {
        let files = vec![("hosts.yaml".to_string(), host("b1", Some("b")))];
        let loaded = load_files(&files);
        let moved = vec![("other.yaml".to_string(), host("b9", Some("b")))];
        assert_eq!(site_part(&moved, &loaded.design, "a"), moved);
    }
}
