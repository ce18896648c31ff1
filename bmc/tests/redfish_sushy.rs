//! The Redfish driver against sushy-emulator in fake mode. The fake driver applies power
//! changes 1-11 s after the request, so the driver's confirm polling is what is tested.

mod support;

use lariat_bmc::redfish::Redfish;
use lariat_bmc::{
    Bmc, BmcError, BmcPool, BootDevice, BootMode, BootOverride, BootPersistence, FirmwareUpdate,
    PowerState, SoftOffOutcome,
};
use support::{PASSWORD_ENV, SYSTEM_ID, Sushy, WRONG_PASSWORD_ENV, set_password_env};

fn driver(sushy: &Sushy, password_env: &str) -> Redfish {
    set_password_env();
    Redfish::new(sushy.config(password_env), BmcPool::new(4)).expect("driver")
}

#[tokio::test]
async fn power_on_and_off_confirmed() {
    let Some(sushy) = Sushy::start() else { return };
    let bmc = driver(&sushy, PASSWORD_ENV);
    assert_eq!(
        bmc.system_path().await.expect("system"),
        format!("/redfish/v1/Systems/{SYSTEM_ID}")
    );
    assert_eq!(bmc.power_status().await.expect("status"), PowerState::Off);
    bmc.power_on().await.expect("on");
    assert_eq!(bmc.power_status().await.expect("status"), PowerState::On);
    bmc.power_off().await.expect("off");
    assert_eq!(bmc.power_status().await.expect("status"), PowerState::Off);
}

#[tokio::test]
async fn graceful_shutdown_then_already_off() {
    let Some(sushy) = Sushy::start_with_power("On") else {
        return;
    };
    let bmc = driver(&sushy, PASSWORD_ENV);
    assert_eq!(bmc.power_status().await.expect("status"), PowerState::On);
    let outcome = bmc
        .soft_off(std::time::Duration::from_secs(20))
        .await
        .expect("soft off");
    assert_eq!(outcome, SoftOffOutcome::Graceful);
    assert_eq!(bmc.power_status().await.expect("status"), PowerState::Off);
    assert_eq!(
        bmc.soft_off(std::time::Duration::from_secs(1))
            .await
            .expect("soft off"),
        SoftOffOutcome::AlreadyOff
    );
}

#[tokio::test]
async fn boot_override_pxe_and_disk() {
    let Some(sushy) = Sushy::start() else { return };
    let bmc = driver(&sushy, PASSWORD_ENV);
    bmc.set_boot_device(BootOverride::pxe_once())
        .await
        .expect("pxe");
    let got = bmc.boot_device().await.expect("get");
    assert_eq!(got.device, Some(BootDevice::Pxe), "{got:?}");
    assert_eq!(got.mode, Some(BootMode::Uefi), "{got:?}");
    // sushy's fake driver keeps Continuous whatever is asked: read, do not assume.
    assert!(got.persistence.is_some(), "{got:?}");

    let disk = BootOverride {
        device: BootDevice::Disk,
        persistence: BootPersistence::Persistent,
        mode: BootMode::Legacy,
    };
    bmc.set_boot_device(disk).await.expect("disk");
    let got = bmc.boot_device().await.expect("get");
    assert_eq!(got.device, Some(BootDevice::Disk), "{got:?}");
    assert_eq!(
        got.persistence,
        Some(BootPersistence::Persistent),
        "{got:?}"
    );
    assert_eq!(got.mode, Some(BootMode::Legacy), "{got:?}");
}

#[tokio::test]
async fn firmware_paths_report_what_sushy_fake_lacks() {
    let Some(sushy) = Sushy::start() else { return };
    let bmc = driver(&sushy, PASSWORD_ENV);
    // sushy 2.2 links FirmwareInventory from UpdateService but serves 404 for it.
    let err = bmc.firmware_inventory().await.expect_err("404");
    assert!(matches!(err, BmcError::Unsupported { .. }), "{err}");
    // SimpleUpdate exists, but the fake driver cannot read BIOS versions: HTTP 500 with a
    // message, which must reach the caller.
    let err = bmc
        .firmware_update(&FirmwareUpdate {
            image_uri: "http://127.0.0.1:1/bios.bin".into(),
            transfer_protocol: Some("HTTP".into()),
            targets: vec![format!("/redfish/v1/Systems/{SYSTEM_ID}")],
        })
        .await
        .expect_err("fake driver");
    assert!(
        err.to_string().contains("Failed fetching BIOS information"),
        "{err}"
    );
    // Task monitoring against the emulator's one (static, completed) task.
    let done = bmc
        .wait_task("/redfish/v1/TaskService/Tasks/42")
        .await
        .expect("task");
    assert_eq!(done.state, "Completed");
    let err = bmc
        .wait_task("/redfish/v1/TaskService/Tasks/7")
        .await
        .expect_err("no such task");
    assert!(matches!(err, BmcError::Protocol { .. }), "{err}");
}

#[tokio::test]
async fn wrong_password_and_unreachable() {
    let Some(sushy) = Sushy::start() else { return };
    let err = driver(&sushy, WRONG_PASSWORD_ENV)
        .power_status()
        .await
        .expect_err("401");
    assert!(matches!(err, BmcError::Auth { .. }), "{err}");
    assert!(!err.to_string().contains("not-the-password"), "{err}");

    let mut cfg = sushy.config(PASSWORD_ENV);
    cfg.url = format!("http://127.0.0.1:{}", support::free_tcp_port());
    cfg.timing.retries = 1;
    let err = Redfish::new(cfg, BmcPool::new(1))
        .expect("driver")
        .power_status()
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, BmcError::Unreachable { .. }), "{err}");
}
