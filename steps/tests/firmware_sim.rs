//! `firmware_upgrade` on hosts whose BMCs are `lariat-redfish-sim` BMCs: skipped at the
//! version, applied at once, staged for the next reset and cycled, failed with the host
//! named when the BMC cannot fetch the image.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use lariat_engine::Action;
use lariat_redfish_sim::{ApplyTime, BmcSpec, RunningBmc, SimConfig};
use lariat_steps::provision::FirmwareUpgrade;
use lariat_steps::{CurrentDesign, FixedDesign, Provisioning};
use serde_json::{Value, json};

const PASSWORD_ENV: &str = "LARIAT_FW_SIM_PASSWORD";

async fn bmc(version: &str, apply_time: ApplyTime) -> RunningBmc {
    let spec = BmcSpec {
        name: "h1".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        username: "admin".into(),
        password: "fw-pass".into(),
        firmware: BTreeMap::from([
            ("BMC".into(), version.into()),
            ("BIOS".into(), "2.1.0".into()),
        ]),
        apply_time,
        task_duration: Duration::from_millis(400),
        reboot_mid_update: None,
        powered_on: true,
        fail_update: None,
    };
    lariat_redfish_sim::start(SimConfig { bmcs: vec![spec] })
        .await
        .unwrap()
        .remove(0)
}

/// Provisioning over a design whose host h1 expects BMC firmware 1.80 and has `sim` as
/// its Redfish BMC.
fn over(sim: &RunningBmc) -> Arc<Provisioning> {
    // SAFETY: every test of this file sets the same value.
    unsafe { std::env::set_var(PASSWORD_ENV, "fw-pass") };
    let bmc = json!({"type": "redfish", "address": sim.url(), "username": "admin",
                     "credential": {"env": PASSWORD_ENV}});
    let yaml = format!(
        "kind: HardwareProfile\nname: hw\nspec: {{vendor: Sim, model: r1, boot_mode: uefi, pxe_interface: eth0, firmware: {{BMC: \"1.80\"}}}}\n---\nkind: Host\nname: h1\nspec: {{hardware_profile: hw, bmc: {bmc}}}\n"
    );
    let loaded = lariat_workflows::design::load_files(&[("d.yaml".into(), yaml)]);
    let timing = lariat_bmc::Timing {
        poll_interval: Duration::from_millis(100),
        task_timeout: Duration::from_secs(20),
        ..lariat_bmc::Timing::default()
    };
    Arc::new(
        Provisioning::new(Arc::new(FixedDesign(CurrentDesign {
            revision: Some("test".into()),
            loaded: Arc::new(loaded),
        })))
        .with_bmc_timing(timing),
    )
}

async fn images() -> String {
    let app = Router::new()
        .route(
            "/bmc-1.80.bin",
            get(|| async { "component=BMC\nversion=1.80\n" }),
        )
        .route(
            "/bmc-1.79.bin",
            get(|| async { "component=BMC\nversion=1.79\n" }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

async fn upgrade(sim: &RunningBmc, input: Value) -> Result<Value, lariat_engine::StepError> {
    let a = FirmwareUpgrade(over(sim));
    common::finished(
        &a as &dyn Action,
        common::attempt(Some("h1"), &["h1"], input, 1),
    )
    .await
}

#[tokio::test]
async fn an_update_staged_for_reset_is_applied_by_a_power_cycle_and_checked() {
    let img = images().await;
    let sim = bmc("1.70", ApplyTime::OnReset).await;
    let out = upgrade(
        &sim,
        json!({"image_url": format!("{img}/bmc-1.80.bin"), "component": "BMC"}),
    )
    .await
    .unwrap();
    assert_eq!(out["from"], "1.70", "{out}");
    assert_eq!(out["version"], "1.80", "{out}");
    assert_eq!(out["power_cycled"], true, "{out}");
    assert_eq!(sim.boots(), 1);
    assert!(sim.powered_on(), "the host is left on");
}

#[tokio::test]
async fn an_update_applied_at_once_needs_no_power_cycle() {
    let img = images().await;
    let sim = bmc("1.70", ApplyTime::Immediate).await;
    let out = upgrade(
        &sim,
        json!({"image_url": format!("{img}/bmc-1.80.bin"), "component": "BMC"}),
    )
    .await
    .unwrap();
    assert_eq!(out["power_cycled"], false, "{out}");
    assert_eq!(sim.boots(), 0);
    assert_eq!(sim.versions()["BMC"], "1.80");
}

#[tokio::test]
async fn a_host_at_the_version_is_skipped_without_anything_sent() {
    let sim = bmc("1.80", ApplyTime::OnReset).await;
    // The image URL goes nowhere: were anything sent, the task would fail.
    let out = upgrade(
        &sim,
        json!({"image_url": "http://127.0.0.1:1/none.bin", "component": "BMC"}),
    )
    .await
    .unwrap();
    assert_eq!(out["skipped"], true, "{out}");
    assert_eq!(sim.boots(), 0);
}

#[tokio::test]
async fn failures_name_the_host_and_what_went_wrong() {
    let img = images().await;
    let sim = bmc("1.70", ApplyTime::OnReset).await;
    let e = upgrade(
        &sim,
        json!({"image_url": format!("{img}/missing.bin"), "component": "BMC"}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, "firmware_task", "{e}");
    assert!(
        e.message.contains("host 'h1'") && e.message.contains("HTTP 404"),
        "{e}"
    );
    assert_eq!(sim.versions()["BMC"], "1.70");

    // An image of another version than expected: applied, cycled, and refused.
    let e = upgrade(
        &sim,
        json!({"image_url": format!("{img}/bmc-1.79.bin"), "component": "BMC"}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, "firmware_not_applied", "{e}");
    assert!(
        e.message.contains("at 1.79") && e.message.contains("expected 1.80"),
        "{e}"
    );

    let e = upgrade(
        &sim,
        json!({"image_url": format!("{img}/bmc-1.80.bin"), "component": "NIC"}),
    )
    .await
    .unwrap_err();
    assert!(
        e.message
            .contains("no version expected for component 'NIC'"),
        "{e}"
    );
    let e = upgrade(
        &sim,
        json!({"image_url": format!("{img}/bmc-1.80.bin"), "component": "NIC", "version": "3"}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, "unknown_component", "{e}");
    assert!(e.message.contains("it has BIOS, BMC"), "{e}");
}
