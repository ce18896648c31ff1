//! `validate_design` and `verify` over a real loaded design (no BMC involved).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use lariat_engine::{Action, StepContext, StepError};
use lariat_steps::provision::{ValidateDesign, Verify};
use lariat_steps::{CurrentDesign, FixedDesign, Provisioning};
use serde_json::{Value, json};

const DESIGN: &str = r#"
kind: Site
name: s1
spec: {id: s1, agent_endpoint: "http://a", dhcp_mode: server, boot_assets: "http://a/assets"}
---
kind: Network
name: prov
spec: {cidr: 10.77.0.0/24}
---
kind: HardwareProfile
name: hw
spec: {vendor: QEMU, model: pc, boot_mode: uefi, pxe_interface: eth0, memory: 1G}
---
kind: BootProfile
name: bp
spec:
  kernel: k
  assets: [{path: k, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}]
---
kind: Host
name: web1
spec:
  site: s1
  rack: r1
  hardware_profile: hw
  boot_profile: bp
  interfaces: [{name: eth0, mac: "52:54:00:00:10:01", network: prov, address: 10.77.0.11}]
---
kind: Host
name: db1
spec:
  site: s1
  rack: r1
  hardware_profile: hw
  boot_profile: bp
  never_provision: true
  interfaces: [{name: eth0, mac: "52:54:00:00:10:02", network: prov, address: 10.77.0.12}]
"#;

fn provisioning() -> Arc<Provisioning> {
    let loaded = lariat_workflows::design::load_files(&[("d.yaml".into(), DESIGN.into())]);
    assert!(!loaded.report.has_errors(), "{:?}", loaded.report);
    Arc::new(Provisioning::new(Arc::new(FixedDesign(CurrentDesign {
        revision: Some("abc123".into()),
        loaded: Arc::new(loaded),
    }))))
}

fn ctx(
    item: Option<&str>,
    targets: &[&str],
    input: Value,
    needs: BTreeMap<String, Value>,
) -> StepContext {
    StepContext {
        needs,
        ..common::attempt(item, targets, input, 1)
    }
}

async fn run(a: &dyn Action, c: StepContext) -> Result<Value, StepError> {
    common::finished(a, c).await
}

#[tokio::test]
async fn validate_design_names_every_problem_of_the_targets() {
    let p = provisioning();
    let out = run(
        &ValidateDesign(p.clone()),
        ctx(None, &["web1"], json!({}), BTreeMap::new()),
    )
    .await
    .unwrap();
    assert_eq!(out["revision"], "abc123");
    assert_eq!(out["hosts"], json!(["web1"]));

    let e = run(
        &ValidateDesign(p.clone()),
        ctx(
            None,
            &["web1", "db1", "ghost"],
            json!({"refuse_never_provision": true}),
            BTreeMap::new(),
        ),
    )
    .await
    .unwrap_err();
    assert!(!e.retryable);
    assert!(e.message.starts_with("2 problem(s)"), "{e}");
    assert!(
        e.message.contains("host 'db1' is marked never_provision"),
        "{e}"
    );
    assert!(
        e.message
            .contains("host 'ghost' is not in the design (revision abc123)"),
        "{e}"
    );
    // Without the flag (a power cycle, say) a protected host is fine.
    run(
        &ValidateDesign(p),
        ctx(None, &["db1"], json!({}), BTreeMap::new()),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn verify_reads_its_hosts_callback_among_the_fanned_out_outputs() {
    let p = provisioning();
    let callbacks = json!([
        {"host": "db1", "state": "installed", "facts": {"macs": ["52:54:00:00:10:02"], "memory_mib": 990}},
        {"host": "web1", "state": "installed", "facts": {"macs": ["52:54:00:00:10:01"], "memory_mib": 2000}},
    ]);
    let needs = BTreeMap::from([("await_callback".to_string(), callbacks.clone())]);
    let out = run(
        &Verify(p.clone()),
        ctx(Some("web1"), &["web1", "db1"], json!({}), needs.clone()),
    )
    .await
    .unwrap();
    assert_eq!(out["checked"], json!(["macs", "memory"]));

    // The other host's facts are not this one's: db1's MAC is not web1's.
    let mut swapped = callbacks;
    swapped[1]["facts"]["macs"] = json!(["52:54:00:00:10:02"]);
    let e = run(
        &Verify(p.clone()),
        ctx(
            Some("web1"),
            &["web1"],
            json!({}),
            BTreeMap::from([("await_callback".to_string(), swapped)]),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, "verify");
    assert!(
        e.message.contains(
            "MAC 52:54:00:00:10:01 is in the design but the node reports 52:54:00:00:10:02"
        ),
        "{e}"
    );

    let e = run(
        &Verify(p),
        ctx(Some("web1"), &["web1"], json!({}), BTreeMap::new()),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, "bad_input");
    assert!(e.message.contains("'await_callback'"), "{e}");
}
