//! The power and boot-device actions against real BMCs, from a host's design entry: an
//! `ipmi_sim` (OpenIPMI) BMC and sushy-emulator (Redfish, fake mode). The BMC tests'
//! peers are reused as they are.
//!
//! Needs ipmi_sim and a sushy-tools virtualenv (LARIAT_SUSHY_VENV); skips without them
//! unless LARIAT_REQUIRE_PRIVILEGED=1 (CI).

mod common;
#[path = "../../bmc/tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use lariat_engine::{Action, Output, StepContext, StepError};
use lariat_steps::provision::{
    AwaitCallback, FirmwareUpdate, PowerOff, PowerOn as Boot, SetBootDevice, SetPxe,
};
use lariat_steps::{CurrentDesign, FixedDesign, Provisioning};
use serde_json::{Value, json};
use support::{IpmiSim, PASSWORD_ENV, Sushy, WRONG_PASSWORD_ENV, fast_timing, set_password_env};

/// Provisioning over a design with one host, `h1`, whose BMC entry is `bmc` (JSON).
fn provisioning(bmc: Value, timing: lariat_bmc::Timing) -> Arc<Provisioning> {
    let yaml = format!(
        "kind: HardwareProfile\nname: hw\nspec: {{vendor: QEMU, model: pc, boot_mode: bios, pxe_interface: eth0}}\n---\nkind: Host\nname: h1\nspec: {{hardware_profile: hw, bmc: {bmc}}}\n"
    );
    let loaded = lariat_workflows::design::load_files(&[("d.yaml".into(), yaml)]);
    Arc::new(
        Provisioning::new(Arc::new(FixedDesign(CurrentDesign {
            revision: Some("test".into()),
            loaded: Arc::new(loaded),
        })))
        .with_bmc_timing(timing),
    )
}

fn ctx(input: Value, attempt: u32) -> StepContext {
    common::attempt(Some("h1"), &["h1"], input, attempt)
}

async fn done(a: &dyn Action, input: Value) -> Value {
    common::finished(a, ctx(input, 1)).await.unwrap()
}

/// Provisioning whose host `h1` has the sushy emulator as its Redfish BMC.
fn over_sushy(sushy: &Sushy) -> Arc<Provisioning> {
    set_password_env();
    provisioning(
        json!({"type": "redfish", "address": format!("http://127.0.0.1:{}", sushy.port),
               "username": "admin", "credential": {"env": PASSWORD_ENV}}),
        sushy.config(PASSWORD_ENV).timing,
    )
}

fn ipmi_entry(sim: &IpmiSim, env: &str) -> Value {
    json!({"type": "ipmi", "address": "127.0.0.1", "port": sim.port,
           "username": "admin", "credential": {"env": env}})
}

#[tokio::test]
async fn ipmi_power_boot_device_and_compensations_confirm_what_they_set() {
    let Some(sim) = IpmiSim::start() else { return };
    set_password_env();
    let p = provisioning(ipmi_entry(&sim, PASSWORD_ENV), fast_timing());

    let out = done(&PowerOff(p.clone()), json!({})).await;
    assert_eq!(
        (out["power"].as_str(), sim.power().as_str()),
        (Some("off"), "0")
    );
    let out = done(&SetPxe(p.clone()), json!({"persistent": false})).await;
    assert_eq!(sim.boot(), "pxe");
    assert_eq!(
        out["boot"]["mode"], "legacy",
        "a BIOS hardware profile: {out}"
    );
    let out = done(&Boot(p.clone()), json!({})).await;
    assert_eq!(
        (out["was"].as_str(), sim.power().as_str()),
        (Some("off"), "1")
    );
    // Repeating an attempt finds the work done and only confirms it.
    let before = sim.sets().len();
    done(&Boot(p.clone()), json!({})).await;
    assert_eq!(sim.sets().len(), before, "{:?}", sim.sets());

    // Rollback: boot's compensation powers off; set_pxe's sets disk, persistently.
    let mut undo = ctx(json!({}), 1);
    undo.undoing = Some(out);
    Boot(p.clone()).compensate(undo).await.unwrap();
    assert_eq!(sim.power(), "0");
    done(
        &SetBootDevice(p.clone()),
        json!({"device": "disk", "persistent": true}),
    )
    .await;
    assert_eq!(sim.boot(), "default");
    let e = SetBootDevice(p.clone())
        .run(ctx(json!({"device": "floppy"}), 1))
        .await
        .unwrap_err();
    assert_eq!(e.kind, "bad_input");

    // A later await_callback attempt sets PXE and powers the host back up.
    let before = sim.sets().len();
    let out = AwaitCallback(p.clone())
        .run(ctx(json!({"timeout": "5m"}), 2))
        .await
        .unwrap();
    assert_eq!(
        out,
        Output::AwaitSignal {
            timeout: Some(Duration::from_secs(300))
        }
    );
    let new: Vec<String> = sim.sets()[before..].to_vec();
    assert_eq!(new, ["set boot pxe", "set power 1"], "{new:?}");
    // The first attempt only waits: boot has just powered the host on.
    let before = sim.sets().len();
    AwaitCallback(p.clone())
        .run(ctx(json!({}), 1))
        .await
        .unwrap();
    assert_eq!(sim.sets().len(), before);
    assert_eq!(sim.open_sessions_by_ipmitool().unwrap_or(0), 0);
}

#[tokio::test]
async fn a_wrong_password_fails_at_once_and_is_not_retried() {
    let Some(sim) = IpmiSim::start() else { return };
    set_password_env();
    let p = provisioning(ipmi_entry(&sim, WRONG_PASSWORD_ENV), fast_timing());
    let e: StepError = PowerOff(p).run(ctx(json!({}), 1)).await.unwrap_err();
    assert_eq!((e.kind.as_str(), e.retryable), ("bmc_auth", false), "{e}");
    assert!(e.message.contains("host 'h1'"), "{e}");
    assert!(!e.message.contains("not-the-password"), "{e}");
    assert_eq!(sim.sets(), Vec::<String>::new());
}

#[tokio::test]
async fn redfish_power_and_pxe_from_a_design_entry() {
    let Some(sushy) = Sushy::start() else { return };
    let p = over_sushy(&sushy);
    let out = done(&SetPxe(p.clone()), json!({})).await;
    // sushy's fake driver reports Continuous whatever is asked; the device is what counts.
    assert!(
        out["reported"].as_str().unwrap().starts_with("Pxe/"),
        "{out}"
    );
    let out = done(&Boot(p.clone()), json!({})).await;
    assert_eq!(
        (out["was"].as_str(), out["power"].as_str()),
        (Some("off"), Some("on"))
    );
    let out = done(&PowerOff(p.clone()), json!({})).await;
    assert_eq!(
        (out["was"].as_str(), out["power"].as_str()),
        (Some("on"), Some("off"))
    );
}

#[tokio::test]
async fn the_ipmitool_driver_is_chosen_per_host() {
    let Some(sim) = IpmiSim::start() else { return };
    if !support::have("ipmitool") {
        return;
    }
    set_password_env();
    let mut entry = ipmi_entry(&sim, PASSWORD_ENV);
    entry["driver"] = json!("ipmitool");
    let p = provisioning(entry, fast_timing());
    let out = done(&Boot(p.clone()), json!({})).await;
    assert!(
        out["bmc"].as_str().unwrap().starts_with("ipmitool"),
        "{out}"
    );
    assert_eq!(sim.power(), "1");
    done(&SetPxe(p.clone()), json!({})).await;
    assert_eq!(sim.boot(), "pxe");
}

#[tokio::test]
async fn firmware_update_reaches_simple_update_from_a_design_entry() {
    let Some(sushy) = Sushy::start() else { return };
    let p = over_sushy(&sushy);
    let e = FirmwareUpdate(p.clone())
        .run(ctx(json!({"component": "bios"}), 1))
        .await
        .unwrap_err();
    assert_eq!(e.kind, "bad_input", "{e}");
    // sushy 2.2 has no inventory to check against, so the update is sent; its fake driver
    // then fails it, and that answer reaches the step.
    let e = FirmwareUpdate(p)
        .run(ctx(
            json!({"image_url": "http://127.0.0.1:1/bios.bin", "component": "bios",
                   "targets": [format!("/redfish/v1/Systems/{}", support::SYSTEM_ID)]}),
            1,
        ))
        .await
        .unwrap_err();
    assert!(
        e.message.contains("Failed fetching BIOS information"),
        "{e}"
    );
    assert!(e.message.contains("host 'h1'"), "{e}");
}
