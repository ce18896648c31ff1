//! Any set of design files, as a repository's push could bring them: the loader must
//! answer with findings, never panic, and give the same answer twice; a site's part of
//! a design (what its agent receives) must load as well; every host's unattended file
//! must render or fail with an error.
//!
//! Input: files separated by NUL bytes; a file whose first line is `#!` is a script
//! (`scripts/N.sh`), the others `N.yaml`.
#![no_main]

use lariat_workflows::design::{load_files, render_unattended, site_part};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let files: Vec<(String, String)> = text
        .split('\0')
        .enumerate()
        .map(|(i, body)| {
            let path = if body.starts_with("#!") {
                format!("scripts/{i:02}.sh")
            } else {
                format!("{i:02}.yaml")
            };
            (path, body.to_string())
        })
        .collect();
    let first = load_files(&files);
    let again = load_files(&files);
    assert_eq!(
        first.report.findings.len(),
        again.report.findings.len(),
        "a load must be deterministic"
    );
    for f in &first.report.findings {
        assert!(!f.rule.is_empty() && !f.message.is_empty(), "{f:?}");
    }
    let hosts: Vec<String> = first.design.hosts().map(|h| h.name.clone()).collect();
    for h in &hosts {
        let _ = render_unattended(&first.design, h);
    }
    let sites: Vec<String> = first.design.sites().map(|s| s.name.clone()).collect();
    for s in &sites {
        let _ = load_files(&site_part(&files, &first.design, s));
    }
});
