//! Loading and inheritance through the public API: merge rules in documents, cycles,
//! deep chains, error findings that name document and field.

use lariat_workflows::design::{self, DesignError, Level};

const BASE: &str = r#"
kind: Site
name: s1
spec: {id: s1, agent_endpoint: "https://a.example", dhcp_mode: proxy, boot_assets: "https://cdn.example/a"}
---
kind: Network
name: prov
spec: {cidr: 10.77.0.0/24}
---
kind: HardwareProfile
name: hw
spec: {vendor: QEMU, model: q35, boot_mode: bios, pxe_interface: eth0}
---
kind: BootProfile
name: bp
spec:
  kernel: k
  assets: [{path: k, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}]
"#;

fn load(extra: &str) -> design::Loaded {
    design::load_files(&[
        ("base.yaml".to_string(), BASE.to_string()),
        ("test.yaml".to_string(), extra.to_string()),
    ])
}

fn rules(l: &design::Loaded) -> Vec<String> {
    l.report.findings.iter().map(|f| f.rule.clone()).collect()
}

#[test]
fn four_levels_deep_with_every_bang_form() {
    let l = load(
        r#"
kind: HostProfile
name: l1
spec:
  hardware_profile: hw
  boot_profile: bp
  kernel_params: [quiet, splash, console=tty0]
  labels: {a: "1", b: "2", c: "3"}
  interfaces: [{name: eth0, network: prov}, {name: eth1, network: prov}]
  storage:
    disks:
      - name: sda
        size: 100G
        partitions:
          - {name: root, size: 50G, filesystem: ext4, mountpoint: /}
          - {name: swap, size: 4G}
  bmc: {type: redfish, username: root, port: 443, credential: {file: /etc/lariat/bmc}}
---
kind: HostProfile
name: l2
spec:
  parent: l1
  kernel_params: ["!splash", nomodeset]
  labels: {"!a": ~, b: "20"}
  interfaces: ["!eth1", {name: eth2, network: prov}]
---
kind: HostProfile
name: l3
spec:
  parent: l2
  labels: {c: "!"}
  storage:
    disks: [{name: sda, partitions: ["!swap", {name: root, size: ">60G"}]}]
  bmc: {port: "!"}
---
kind: Host
name: h1
spec:
  site: s1
  profile: l3
  rack: r9
  kernel_params: [quiet, "!console=tty0"]
  interfaces: [{name: eth0, mac: "52:54:00:00:00:01"}]
  bmc: {address: 10.77.1.5}
"#,
    );
    assert!(l.report.findings.is_empty(), "{:#?}", l.report.findings);
    let h = l.design.resolved_host("h1").unwrap();
    assert_eq!(h.profiles, ["l3", "l2", "l1"]);
    assert_eq!(h.kernel_params, ["quiet", "nomodeset"]);
    assert_eq!(
        h.labels.into_iter().collect::<Vec<_>>(),
        [("b".to_string(), "20".to_string())]
    );
    let names: Vec<_> = h
        .interfaces
        .iter()
        .map(|i| i.interface.name.as_str())
        .collect();
    assert_eq!(names, ["eth0", "eth2"]);
    assert_eq!(h.interfaces[0].interface.network.as_deref(), Some("prov"));
    assert_eq!(h.interfaces[0].prefix_len, Some(24));
    let disk = &h.storage.disks[0];
    assert_eq!(disk.partitions.len(), 1);
    assert_eq!(disk.partitions[0].size.unwrap().to_string(), ">60G");
    assert_eq!(disk.partitions[0].filesystem.as_deref(), Some("ext4"));
    let bmc = h.bmc.unwrap();
    assert_eq!(bmc.port, None, "\"!\" unset the inherited port");
    assert_eq!(bmc.username.as_deref(), Some("root"));
    assert_eq!(bmc.address.as_deref(), Some("10.77.1.5"));
    assert_eq!(h.rack.as_deref(), Some("r9"));
    assert_eq!(h.boot_mode, Some(design::BootMode::Bios));
}

#[test]
fn a_cycle_is_one_finding_and_hosts_on_it_do_not_resolve() {
    let l = load(
        r#"
kind: HostProfile
name: a
spec: {parent: c}
---
kind: HostProfile
name: b
spec: {parent: a}
---
kind: HostProfile
name: c
spec: {parent: b}
---
kind: Host
name: h1
spec: {site: s1, profile: a, never_provision: true}
"#,
    );
    assert_eq!(rules(&l), ["inheritance-cycle"], "{:#?}", l.report.findings);
    let f = &l.report.findings[0];
    assert_eq!(f.name, "a");
    assert!(f.message.contains("a -> c -> b -> a"), "{}", f.message);
    assert!(matches!(
        l.design.resolved_host("h1"),
        Err(DesignError::Cycle(c)) if c.len() == 4
    ));
    assert!(matches!(
        l.design.resolved_host("nope"),
        Err(DesignError::UnknownHost(_))
    ));
}

#[test]
fn a_self_parent_is_a_cycle() {
    let l = load("kind: HostProfile\nname: a\nspec: {parent: a}\n");
    assert_eq!(rules(&l), ["inheritance-cycle"]);
}

#[test]
fn unknown_fields_name_document_and_field_with_line() {
    let l = load(
        "kind: Network\nname: n2\nspec:\n  cidr: 10.77.9.0/24\n  vlna: 9\n---\nkind: Host\nname: h9\nbogus: 1\nspec: {site: s1}\n",
    );
    let f: Vec<_> = l.report.findings.iter().collect();
    assert_eq!(f.len(), 2, "{f:#?}");
    assert_eq!(f[0].rule, "unknown-field");
    assert_eq!((f[0].kind.as_str(), f[0].name.as_str()), ("Network", "n2"));
    assert_eq!(f[0].path, "spec.vlna");
    assert!(f[0].message.contains("'vlna'"));
    assert_eq!(f[0].file.as_deref(), Some("test.yaml"));
    assert_eq!(f[0].line, Some(5));
    assert_eq!(
        (f[1].kind.as_str(), f[1].name.as_str(), f[1].path.as_str()),
        ("Host", "h9", "bogus")
    );
    assert_eq!(f[1].line, Some(9));
}

#[test]
fn a_credential_value_is_refused() {
    let l = load(
        "kind: HostProfile\nname: p\nspec:\n  bmc: {type: ipmi, credential: hunter2}\n---\nkind: Host\nname: h1\nspec: {site: s1, profile: p, never_provision: true}\n",
    );
    assert_eq!(rules(&l), ["invalid-field"]);
    assert!(
        l.report.findings[0]
            .message
            .contains("never the secret itself")
    );
    assert!(
        !serde_json::to_string(&l.report)
            .unwrap()
            .contains("hunter2")
    );
    let l = load("kind: HostProfile\nname: p\nspec:\n  bmc: {password: hunter2}\n");
    // A layer failing its schema is checked no further (no unused-profile on top).
    assert_eq!(rules(&l), ["unknown-field"]);
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let l = load(
        r#"
kind: Host
name: h1
spec:
  site: nowhere
  never_provision: true
  interfaces:
    - {name: eth0, mac: "52:54:00:00:00:01", network: prov, address: 10.99.0.1}
    - {name: eth1, mac: "52:54:00:00:00:01", network: nonet}
---
kind: Host
name: h2
spec: {site: s1, never_provision: true, interfaces: [{name: eth0, network: prov, address: 10.99.0.1}]}
---
kind: Host
name: bad_name
spec: {site: s1, never_provision: true}
"#,
    );
    let mut r = rules(&l);
    r.sort();
    assert_eq!(
        r,
        [
            "duplicate-ip",
            "duplicate-mac",
            "invalid-hostname",
            "ip-outside-cidr",
            "ip-outside-cidr",
            "unresolved-reference",
            "unresolved-reference"
        ],
        "{:#?}",
        l.report.findings
    );
    assert!(l.report.has_errors());
    assert_eq!(l.report.warnings().count(), 0);
    assert_eq!(l.report.errors().count(), 7);
    let json = serde_json::to_value(&l.report).unwrap();
    assert_eq!(json["findings"][0]["level"], "error");
}

#[test]
fn syntax_errors_and_bad_files_are_findings_with_lines() {
    let l = design::load_files(&[
        (
            "a.yaml".into(),
            "kind: Site\nname: x\nspec: {id: [\n".into(),
        ),
        ("b.yaml".into(), "---\n---\n# only comments\n".into()),
        ("c.yaml".into(), "kind: Host\n".into()),
    ]);
    assert_eq!(
        rules(&l),
        ["yaml-syntax", "invalid-document"],
        "{:#?}",
        l.report.findings
    );
    assert_eq!(l.report.findings[0].file.as_deref(), Some("a.yaml"));
    assert!(l.report.findings[0].line.is_some());
}

#[test]
fn load_dir_reads_nested_yaml_in_order_and_skips_other_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("z/deeper")).unwrap();
    std::fs::create_dir_all(dir.path().join(".git")).unwrap();
    std::fs::write(dir.path().join("base.yml"), BASE).unwrap();
    std::fs::write(dir.path().join("README.md"), "kind: nonsense").unwrap();
    std::fs::write(dir.path().join(".git/x.yaml"), "kind: nonsense").unwrap();
    let host = "kind: Host\nname: h1\nspec: {site: s1, never_provision: true}\n";
    std::fs::write(dir.path().join("z/deeper/h.yaml"), host).unwrap();
    std::fs::write(dir.path().join("a.yaml"), host).unwrap();
    let l = design::load_dir(dir.path());
    assert_eq!(rules(&l), ["duplicate-name"]);
    // a.yaml is read first, so the z/ copy is the duplicate.
    assert_eq!(
        l.report.findings[0].file.as_deref(),
        Some("z/deeper/h.yaml")
    );
    let l = design::load_dir(&dir.path().join("missing"));
    assert_eq!(rules(&l), ["read-error"]);
}

#[test]
fn unquoted_bang_is_a_finding_not_a_panic() {
    // `!quiet` unquoted is a YAML tag; whatever the parser makes of it must be a
    // finding or a value, never a panic.
    let l = load("kind: HostProfile\nname: p\nspec:\n  kernel_params: [!quiet]\n");
    assert_eq!(rules(&l), ["yaml-syntax"]);
    assert!(l.report.findings[0].message.contains("must be quoted"));
}

#[test]
fn generated_designs_validate_clean() {
    let l = design::load_files(&design::generate(300, 120));
    assert!(
        l.report.findings.is_empty(),
        "{:#?}",
        &l.report.findings[..3.min(l.report.findings.len())]
    );
    assert_eq!(l.design.hosts().count(), 300);
    let h = l.design.resolved_host("n00110").unwrap();
    assert_eq!(h.profiles.len(), 3, "{:?}", h.profiles);
    assert!(
        design::render_unattended(&l.design, "n00110")
            .unwrap()
            .contains("n00110")
    );
    // Breaking one host is found among the 300.
    let mut files = design::generate(300, 120);
    files[2].1 = files[2]
        .1
        .replace("address: 10.80.0.11}", "address: 10.80.0.10}");
    let l = design::load_files(&files);
    assert_eq!(rules(&l), ["duplicate-ip"]);
    assert_eq!(l.report.findings[0].level, Level::Error);
}

#[test]
fn bmcs_may_share_an_address_on_different_ports_only() {
    let host = |name: &str, port: u16, ip: &str| {
        format!(
            "---\nkind: Host\nname: {name}\nspec: {{site: s1, hardware_profile: hw, boot_profile: bp,\n  interfaces: [{{name: eth0, network: prov, address: {ip}}}],\n  bmc: {{type: ipmi, address: 127.0.0.1, port: {port}, username: a, credential: {{env: PW}}}}}}\n"
        )
    };
    let two_ports = format!(
        "{}{}",
        host("h1", 6231, "10.77.0.11"),
        host("h2", 6232, "10.77.0.12")
    );
    let dups = |l: &design::Loaded| -> Vec<String> {
        l.report
            .findings
            .iter()
            .filter(|f| f.rule == "duplicate-ip")
            .map(|f| f.message.clone())
            .collect()
    };
    assert_eq!(dups(&load(&two_ports)), Vec::<String>::new());
    let same_port = format!(
        "{}{}",
        host("h1", 6231, "10.77.0.11"),
        host("h2", 6231, "10.77.0.12")
    );
    let found = dups(&load(&same_port));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("BMC address 127.0.0.1 port 6231"),
        "{found:?}"
    );
}
