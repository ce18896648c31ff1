//! Lariat's own Redfish driver against the simulator: what the driver does (power, boot
//! override, inventory, SimpleUpdate followed to its end) is what real BMCs answer, so
//! the simulator's answers are held to the driver that production uses.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use lariat_bmc::redfish::Redfish;
use lariat_bmc::{
    Bmc, BmcError, BmcPool, BootDevice, BootOverride, BootPersistence, CredentialRef,
    FirmwareUpdate, PowerState, RedfishConfig, Timing,
};
use lariat_redfish_sim::{ApplyTime, BmcSpec, RunningBmc, SimConfig, start};

const PASSWORD_ENV: &str = "LARIAT_SIM_BMC_PASSWORD";

fn spec(name: &str) -> BmcSpec {
    BmcSpec {
        name: name.into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        username: "admin".into(),
        password: "s3cret".into(),
        firmware: BTreeMap::from([
            ("BMC".into(), "1.70".into()),
            ("BIOS".into(), "2.1.0".into()),
        ]),
        apply_time: ApplyTime::OnReset,
        task_duration: Duration::from_millis(600),
        reboot_mid_update: None,
        powered_on: true,
        fail_update: None,
    }
}

fn driver(bmc: &RunningBmc) -> Redfish {
    // SAFETY: every test of this file sets the same value.
    unsafe { std::env::set_var(PASSWORD_ENV, "s3cret") };
    let timing = Timing {
        poll_interval: Duration::from_millis(100),
        task_timeout: Duration::from_secs(20),
        ..Timing::default()
    };
    Redfish::new(
        RedfishConfig {
            url: bmc.url(),
            system: None,
            username: "admin".into(),
            password: CredentialRef::Env(PASSWORD_ENV.into()),
            insecure_tls: false,
            timing,
        },
        BmcPool::new(4),
    )
    .unwrap()
}

/// Serves firmware images the way a site's HTTP boot serves assets.
async fn image_server(images: &[(&'static str, &'static str)]) -> String {
    let mut app = Router::new();
    for &(path, body) in images {
        app = app.route(path, get(move || async move { body }));
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

async fn one(spec: BmcSpec) -> RunningBmc {
    start(SimConfig { bmcs: vec![spec] })
        .await
        .unwrap()
        .remove(0)
}

fn version(inv: &[lariat_bmc::FirmwareComponent], id: &str) -> String {
    inv.iter().find(|c| c.id == id).unwrap().version.clone()
}

#[tokio::test]
async fn power_and_a_once_boot_override_used_up_at_the_next_boot() {
    let sim = one(spec("h01")).await;
    let bmc = driver(&sim);
    assert_eq!(bmc.system_path().await.unwrap(), "/redfish/v1/Systems/1");
    assert_eq!(bmc.power_status().await.unwrap(), PowerState::On);
    bmc.set_boot_device(BootOverride::pxe_once()).await.unwrap();
    let got = bmc.boot_device().await.unwrap();
    assert_eq!(got.device, Some(BootDevice::Pxe), "{got:?}");
    assert_eq!(got.persistence, Some(BootPersistence::Once), "{got:?}");
    bmc.power_off().await.unwrap();
    assert_eq!(bmc.power_status().await.unwrap(), PowerState::Off);
    bmc.power_on().await.unwrap();
    assert_eq!(sim.boots(), 1);
    let got = bmc.boot_device().await.unwrap();
    assert_eq!(
        got.device, None,
        "a Once override is used by the boot: {got:?}"
    );
}

#[tokio::test]
async fn a_wrong_password_is_an_auth_error() {
    let mut s = spec("h02");
    s.password = "other".into();
    let sim = one(s).await;
    match driver(&sim).power_status().await {
        Err(BmcError::Auth { detail, .. }) => assert!(detail.contains("401"), "{detail}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_update_applied_on_reset_shows_only_after_the_power_cycle() {
    let images = image_server(&[("/bmc-1.80.bin", "component=BMC\nversion=1.80\n")]).await;
    let sim = one(spec("h03")).await;
    let bmc = driver(&sim);
    let inv = bmc.firmware_inventory().await.unwrap();
    assert_eq!(version(&inv, "BMC"), "1.70");
    let outcome = bmc
        .firmware_update(&FirmwareUpdate {
            image_uri: format!("{images}/bmc-1.80.bin"),
            transfer_protocol: None,
            targets: vec!["/redfish/v1/UpdateService/FirmwareInventory/BMC".into()],
        })
        .await
        .unwrap();
    assert_eq!(outcome.state, "Completed");
    assert!(
        outcome.messages.iter().any(|m| m.contains("Awaiting")),
        "{outcome:?}"
    );
    assert_eq!(
        version(&bmc.firmware_inventory().await.unwrap(), "BMC"),
        "1.70",
        "staged, not applied"
    );
    bmc.power_off().await.unwrap();
    bmc.power_on().await.unwrap();
    assert_eq!(
        version(&bmc.firmware_inventory().await.unwrap(), "BMC"),
        "1.80"
    );
    assert_eq!(
        sim.versions()["BIOS"],
        "2.1.0",
        "the other component is untouched"
    );
}

#[tokio::test]
async fn an_image_the_bmc_cannot_fetch_fails_the_task_with_the_reason() {
    let images = image_server(&[("/bios.bin", "component=BIOS\nversion=2.2.0\n")]).await;
    let sim = one(spec("h04")).await;
    let bmc = driver(&sim);
    let missing = bmc
        .firmware_update(&FirmwareUpdate {
            image_uri: format!("{images}/no-such.bin"),
            transfer_protocol: None,
            targets: vec![],
        })
        .await;
    match missing {
        Err(BmcError::TaskFailed { state, message, .. }) => {
            assert_eq!(state, "Exception");
            assert!(message.contains("HTTP 404"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // An image for another component than the target named.
    let wrong = bmc
        .firmware_update(&FirmwareUpdate {
            image_uri: format!("{images}/bios.bin"),
            transfer_protocol: None,
            targets: vec!["/redfish/v1/UpdateService/FirmwareInventory/BMC".into()],
        })
        .await;
    match wrong {
        Err(BmcError::TaskFailed { message, .. }) => {
            assert!(message.contains("not for the targets BMC"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.versions()["BIOS"], "2.1.0");
}

#[tokio::test]
async fn a_bmc_that_reboots_mid_update_answers_503_then_completes() {
    let images = image_server(&[("/bios.bin", "component=BIOS\nversion=2.2.0\n")]).await;
    let mut s = spec("h05");
    s.apply_time = ApplyTime::Immediate;
    s.reboot_mid_update = Some(Duration::from_millis(1500));
    let sim = one(s).await;
    let bmc = Arc::new(driver(&sim));
    let update = {
        let bmc = bmc.clone();
        let uri = format!("{images}/bios.bin");
        tokio::spawn(async move {
            bmc.firmware_update(&FirmwareUpdate {
                image_uri: uri,
                transfer_protocol: None,
                targets: vec![],
            })
            .await
        })
    };
    // Meanwhile, a plain request sees the BMC restarting.
    let http = reqwest::Client::new();
    let mut saw_503 = None;
    for _ in 0..60 {
        let r = http
            .get(format!("{}/redfish/v1/Systems/1", sim.url()))
            .basic_auth("admin", Some("s3cret"))
            .send()
            .await
            .unwrap();
        if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            saw_503 = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        saw_503.is_some(),
        "the BMC never answered 503 with Retry-After"
    );
    let outcome = update.await.unwrap().unwrap();
    assert_eq!(outcome.state, "Completed");
    assert_eq!(sim.versions()["BIOS"], "2.2.0", "applied at once");
}

#[tokio::test]
async fn a_bmc_whose_flash_fails_ends_the_task_in_exception_and_changes_nothing() {
    let images = image_server(&[("/bmc.bin", "component=BMC\nversion=1.80\n")]).await;
    let mut s = spec("h06");
    s.fail_update = Some("Flash write failed at block 0x1f00.".into());
    let sim = one(s).await;
    let e = driver(&sim)
        .firmware_update(&FirmwareUpdate {
            image_uri: format!("{images}/bmc.bin"),
            transfer_protocol: None,
            targets: vec![],
        })
        .await
        .unwrap_err();
    match e {
        BmcError::TaskFailed { state, message, .. } => {
            assert_eq!(state, "Exception");
            assert!(message.contains("Flash write failed"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.versions()["BMC"], "1.70");
}
