//! The design fixtures of `examples/`: the realistic design validates clean, and each
//! broken design produces exactly the finding its folder is named after.

use std::path::{Path, PathBuf};

use lariat_workflows::design::{self, Level, NodeFilter};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn realistic_design_validates_clean() {
    let loaded = design::load_dir(&examples().join("design"));
    assert!(
        loaded.report.findings.is_empty(),
        "{:#?}",
        loaded.report.findings
    );
    let d = &loaded.design;
    assert_eq!(d.hosts().count(), 12);
    assert_eq!(d.sites().count(), 1);
    assert_eq!(d.networks().count(), 3);
    let racks: std::collections::BTreeSet<_> =
        d.hosts().filter_map(|h| h.spec.rack.clone()).collect();
    assert_eq!(racks.len(), 2);
    // Two levels of profiles: every host's chain is profile -> base.
    for h in d.hosts() {
        let r = d.resolved_host(&h.name).expect("resolves");
        assert_eq!(r.profiles.len(), 2, "{}", h.name);
        assert_eq!(r.profiles[1], "base");
    }
}

#[test]
fn realistic_design_resolves_through_two_levels() {
    let d = design::load_dir(&examples().join("design")).design;
    let c = d.resolved_host("ams1-a01").unwrap();
    assert_eq!(c.profiles, ["compute", "base"]);
    assert_eq!(c.hardware_profile.as_deref(), Some("r650"));
    assert_eq!(c.pxe_interface.as_deref(), Some("eno1"));
    assert_eq!(
        c.pxe().and_then(|i| i.interface.mac).map(|m| m.to_string()),
        Some("52:54:00:77:01:01".to_string())
    );
    // "!quiet" removed the base's quiet; the list is otherwise a union.
    assert_eq!(
        c.kernel_params,
        ["console=ttyS0,115200n8", "intel_iommu=on"]
    );
    // Named list merge: bond0 keeps the profile's members/link/network and gains the
    // host's address; the device alias is replaced by its path.
    let bond = c
        .interfaces
        .iter()
        .find(|i| i.interface.name == "bond0")
        .unwrap();
    assert_eq!(bond.interface.members, ["eno1", "eno2"]);
    assert_eq!(bond.interface.network.as_deref(), Some("prov"));
    assert_eq!(
        bond.interface.address.map(|a| a.to_string()).as_deref(),
        Some("10.77.0.11")
    );
    assert_eq!(
        bond.gateway.map(|a| a.to_string()).as_deref(),
        Some("10.77.0.1")
    );
    assert_eq!(c.storage.disks[0].device.as_deref(), Some("/dev/nvme0n1"));
    assert_eq!(c.labels.get("role").map(String::as_str), Some("compute"));
    assert_eq!(c.labels.get("canary").map(String::as_str), Some("true"));

    let s = d.resolved_host("ams1-b05").unwrap();
    assert_eq!(s.profiles, ["storage-node", "base"]);
    // "!efi" removed a partition; root's size overridden field by field.
    let boot = &s.storage.disks[0];
    let parts: Vec<_> = boot.partitions.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(parts, ["boot", "root"]);
    assert_eq!(boot.partitions[1].mountpoint.as_deref(), Some("/"));
    assert_eq!(boot.partitions[1].size.unwrap().to_string(), "100G");
    // "!managed-by" removed a label; the BMC merged as a map (type from the child,
    // credential from the parent).
    assert!(!s.labels.contains_key("managed-by"));
    let bmc = s.bmc.as_ref().unwrap();
    assert_eq!(bmc.port, Some(623));
    assert!(bmc.credential.is_some());
    assert!(d.resolved_host("ams1-b06").unwrap().never_provision);

    // The JSON the API returns.
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["interfaces"][0]["mac"], "52:54:00:77:01:01");
    assert_eq!(json["boot_mode"], "uefi");
}

#[test]
fn unattended_template_renders_with_host_data() {
    let d = design::load_dir(&examples().join("design")).design;
    let ks = design::render_unattended(&d, "ams1-a02").unwrap();
    assert!(ks.contains("network --hostname=ams1-a02"), "{ks}");
    assert!(
        ks.contains("--ip=10.77.0.12 --netmask=255.255.255.0 --gateway=10.77.0.1"),
        "{ks}"
    );
    assert!(ks.contains("--ondisk=/dev/nvme0n1"), "{ks}");
    assert!(ks.contains("timezone Europe/Amsterdam"), "{ks}");
    assert!(design::render_unattended(&d, "no-such-host").is_err());
}

#[test]
fn filters_select_by_rack_label_site_and_name() {
    let d = design::load_dir(&examples().join("design")).design;
    let f = |json: serde_json::Value| -> NodeFilter { serde_json::from_value(json).unwrap() };
    assert!(
        d.select(&f(serde_json::json!({}))).is_empty(),
        "empty filter selects nothing"
    );
    assert_eq!(d.select(&f(serde_json::json!({"all": true}))).len(), 12);
    assert_eq!(d.select(&f(serde_json::json!({"racks": ["a"]}))).len(), 6);
    assert_eq!(
        d.select(&f(serde_json::json!({"labels": {"role": "storage"}}))),
        ["ams1-b04", "ams1-b05", "ams1-b06"]
    );
    // Union: rack a or storage role; intersection: rack b and compute role.
    assert_eq!(
        d.select(&f(
            serde_json::json!({"racks": ["a"], "labels": {"role": "storage"}, "mode": "union"})
        ))
        .len(),
        9
    );
    assert_eq!(
        d.select(&f(serde_json::json!({
            "racks": ["b"], "labels": {"role": "compute"}, "mode": "intersection"
        }))),
        ["ams1-b01", "ams1-b02", "ams1-b03"]
    );
    assert_eq!(
        d.select(&f(
            serde_json::json!({"names": ["ams1-a03", "nope"], "sites": ["elsewhere"], "mode": "union"})
        )),
        ["ams1-a03"]
    );
    assert_eq!(
        d.select(&f(serde_json::json!({"names": ["ams1-a03"], "sites": ["elsewhere"], "mode": "intersection"}))),
        Vec::<String>::new()
    );
    assert_eq!(
        d.unknown_names(&f(serde_json::json!({"names": ["ams1-a03", "nope"]}))),
        ["nope"]
    );
    assert!(serde_json::from_value::<NodeFilter>(serde_json::json!({"rack": ["a"]})).is_err());
}

#[test]
fn each_broken_design_produces_exactly_its_finding() {
    let root = examples().join("broken");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 30, "only {} broken designs", dirs.len());
    let mut failures = Vec::new();
    for dir in &dirs {
        let rule = dir.file_name().unwrap().to_string_lossy().to_string();
        let report = design::load_dir(dir).report;
        let ok = report.findings.len() == 1 && report.findings[0].rule == rule;
        if !ok {
            failures.push(format!(
                "{rule}: {}",
                serde_json::to_string_pretty(&report.findings).unwrap()
            ));
        } else {
            let f = &report.findings[0];
            assert!(f.file.is_some(), "{rule}: finding has no file");
            assert!(!f.message.is_empty());
            let expect = if rule == "unused-profile" {
                Level::Warning
            } else {
                Level::Error
            };
            assert_eq!(f.level, expect, "{rule}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Windows that parse yet cannot work: a cron naming no real moment, and no duration.
#[test]
fn a_window_that_can_never_open_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let base = examples().join("broken/invalid-cron/base.yaml");
    std::fs::copy(base, dir.path().join("base.yaml")).unwrap();
    std::fs::write(
        dir.path().join("windows.yaml"),
        "kind: MaintenanceWindow\nname: feb31\nspec: {cron: \"0 2 31 2 *\", duration: 2h, timezone: Europe/Amsterdam}\n---\nkind: MaintenanceWindow\nname: instant\nspec: {cron: \"0 2 * * *\", duration: 0s}\n---\nkind: MaintenanceWindow\nname: fine\nspec: {cron: \"30 2 * * 0\", duration: 3h, timezone: America/New_York}\n",
    )
    .unwrap();
    let report = design::load_dir(dir.path()).report;
    let found: Vec<(&str, &str)> = report
        .findings
        .iter()
        .map(|f| (f.rule.as_str(), f.message.as_str()))
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found
            .iter()
            .any(|(r, m)| *r == "invalid-cron" && m.contains("feb31") && m.contains("never fires")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(r, m)| *r == "invalid-field" && m.contains("instant")),
        "{found:?}"
    );
}

#[test]
fn every_documented_rule_has_a_broken_design() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/design/mod.rs"))
            .unwrap();
    let rules: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("//! | `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    assert!(rules.len() >= 30);
    for r in rules {
        assert!(
            examples().join("broken").join(r).is_dir(),
            "rule {r} has no examples/broken/{r}/"
        );
    }
}

/// What a step may ask of a window, and what a window may say: each mistake named.
#[test]
fn windows_and_the_steps_gated_by_them_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let base = examples().join("broken/invalid-cron/base.yaml");
    std::fs::copy(base, dir.path().join("base.yaml")).unwrap();
    std::fs::write(
        dir.path().join("windows.yaml"),
        "kind: MaintenanceWindow\nname: seconds\nspec: {cron: \"0 0 2 * * *\", duration: 2h}\n---\nkind: MaintenanceWindow\nname: freeze\nspec: {cron: \"0 0 24 12 *\", duration: 48h, mode: deny, scope: {sites: [nowhere]}}\n---\nkind: MaintenanceWindow\nname: ok\nspec: {cron: \"0 1 * * *\", duration: 3h}\n---\nkind: MaintenanceWindow\nname: hourly\nspec: {cron: \"0 * * * *\", duration: 1h}\n---\nkind: WorkflowTemplate\nname: t\nspec:\n  steps:\n    - {name: a, action: noop, window: freeze}\n    - {name: b, action: noop, window: {cutoff: 5m}}\n    - {name: c, action: noop, window: {name: ok, cutoff: 30m}}\n    - {name: d, action: noop, window: {name: ok, cutoff: 4h}}\n    - {name: e, action: noop, window: {name: hourly, cutoff: 90m}}\n    - {name: f, action: noop, for_each: {over: targets, max_per: {rack: 1, site: 2}}}\n    - {name: g, action: noop, for_each: {over: targets, max_per: {rack: 1, row: 1}}}\n",
    )
    .unwrap();
    let report = design::load_dir(dir.path()).report;
    let found: Vec<(&str, &str, &str)> = report
        .findings
        .iter()
        .map(|f| (f.rule.as_str(), f.path.as_str(), f.message.as_str()))
        .collect();
    let has = |rule: &str, path: &str, text: &str| {
        found
            .iter()
            .any(|(r, p, m)| *r == rule && *p == path && m.contains(text))
    };
    assert!(
        has("invalid-cron", "spec.cron", "has 6 fields"),
        "{found:?}"
    );
    assert!(
        has("unresolved-reference", "spec.scope.sites[0]", "nowhere"),
        "{found:?}"
    );
    assert!(
        has("invalid-field", "spec.steps[a].window", "deny window"),
        "{found:?}"
    );
    assert!(
        has("invalid-field", "spec.steps[b].window", "needs a name"),
        "{found:?}"
    );
    assert!(
        has("window-too-short", "spec.steps[d].window", "needs 4h"),
        "{found:?}"
    );
    assert!(
        has(
            "unknown-label",
            "spec.steps[g].for_each.max_per.row",
            "no host or host profile has a label 'row'"
        ),
        "{found:?}"
    );
    assert_eq!(
        found.len(),
        6,
        "steps c and e (touching hourly openings) and f (by rack and site) are fine: {found:?}"
    );
}
