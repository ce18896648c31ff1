//! The ipmitool-process backend against ipmi_sim: same operations as the native driver.

mod support;

use std::time::{Duration, Instant};

use lariat_bmc::{
    Bmc, BmcConfig, BmcError, BootDevice, BootOverride, Connector, CredentialRef, FirmwareUpdate,
    PowerState,
};
use support::{IpmiSim, PASSWORD_ENV, WRONG_PASSWORD_ENV, have, set_password_env};

fn driver(sim: &IpmiSim, password_env: &str) -> Box<dyn Bmc> {
    set_password_env();
    Connector::new(8)
        .connect(&BmcConfig::Ipmitool(sim.config(password_env)))
        .expect("driver")
}

#[tokio::test]
async fn power_and_boot_through_ipmitool() {
    if !have("ipmitool") {
        return;
    }
    let Some(sim) = IpmiSim::start() else { return };
    let bmc = driver(&sim, PASSWORD_ENV);
    assert!(bmc.describe().starts_with("ipmitool://"));

    assert_eq!(bmc.power_status().await.expect("status"), PowerState::Off);
    bmc.power_on().await.expect("on");
    assert_eq!(sim.power(), "1");
    bmc.power_off().await.expect("off");
    assert_eq!(sim.power(), "0");
    let before = sim.sets().len();
    bmc.power_on().await.expect("on");
    bmc.power_cycle().await.expect("cycle");
    assert_eq!(
        sim.sets()[before..],
        ["set power 1", "set power 0", "set power 1"]
    );
    assert_eq!(bmc.power_status().await.expect("status"), PowerState::On);

    bmc.set_boot_device(BootOverride::pxe_once())
        .await
        .expect("pxe");
    assert_eq!(sim.boot(), "pxe");
    assert_eq!(
        bmc.boot_device().await.expect("get").device,
        Some(BootDevice::Pxe)
    );
    let inv = bmc.firmware_inventory().await.expect("inventory");
    assert_eq!(inv[0].version, "9.08");
    let err = bmc
        .firmware_update(&FirmwareUpdate {
            image_uri: "http://x/fw.bin".into(),
            transfer_protocol: None,
            targets: vec![],
        })
        .await
        .expect_err("unsupported");
    assert!(matches!(err, BmcError::Unsupported { .. }), "{err}");
    assert_eq!(sim.open_sessions_by_ipmitool(), Some(0));
}

#[tokio::test]
async fn ipmitool_wrong_password_and_unreachable() {
    if !have("ipmitool") {
        return;
    }
    let Some(sim) = IpmiSim::start() else { return };
    let err = driver(&sim, WRONG_PASSWORD_ENV)
        .power_status()
        .await
        .expect_err("wrong password");
    assert!(matches!(err, BmcError::Auth { .. }), "{err}");
    assert!(!err.to_string().contains("not-the-password"), "{err}");

    let cfg = lariat_bmc::IpmiConfig {
        address: "127.0.0.1".into(),
        port: support::free_udp_port(),
        username: "admin".into(),
        password: CredentialRef::Env(PASSWORD_ENV.into()),
        cipher_suite: 3,
        timing: lariat_bmc::Timing {
            command_timeout: Duration::from_secs(1),
            retries: 0,
            ..support::fast_timing()
        },
    };
    let start = Instant::now();
    let err = Connector::new(1)
        .connect(&BmcConfig::Ipmitool(cfg))
        .expect("driver")
        .power_status()
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, BmcError::Timeout { .. }), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn missing_ipmitool_binary_is_a_clear_error() {
    set_password_env();
    let cfg = lariat_bmc::IpmiConfig {
        address: "127.0.0.1".into(),
        port: 623,
        username: "admin".into(),
        password: CredentialRef::Env(PASSWORD_ENV.into()),
        cipher_suite: 3,
        timing: support::fast_timing(),
    };
    let err = Connector::new(1)
        .with_ipmitool_program("/nonexistent/ipmitool")
        .connect(&BmcConfig::Ipmitool(cfg))
        .expect("driver")
        .power_status()
        .await
        .expect_err("no binary");
    assert!(err.to_string().contains("/nonexistent/ipmitool"), "{err}");
}

#[tokio::test]
async fn ipmitool_passes_the_configured_cipher_suite() {
    if !have("ipmitool") {
        return;
    }
    let Some(sim) = IpmiSim::start() else { return };
    set_password_env();
    let mut cfg = sim.config(PASSWORD_ENV);
    // ipmi_sim offers no SHA-256 suite: 17 must fail where 3 works.
    cfg.cipher_suite = 17;
    let err = Connector::new(1)
        .connect(&BmcConfig::Ipmitool(cfg))
        .expect("driver")
        .power_status()
        .await
        .expect_err("suite 17");
    eprintln!("suite 17 against ipmi_sim: {err}");
    assert!(!matches!(err, BmcError::Config(_)), "{err}");
}

#[tokio::test]
async fn the_password_travels_in_the_environment_not_argv() {
    if !have("ipmitool") {
        return;
    }
    let Some(sim) = IpmiSim::start() else { return };
    // A wrapper that records what ipmitool was given, then runs the real one.
    let record = sim.dir.path().join("argv.txt");
    let wrapper = sim.dir.path().join("ipmitool-wrapper.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"argv: $*\" >> {rec}\necho \"env: ${{IPMI_PASSWORD:+set}}\" >> {rec}\nexec ipmitool \"$@\"\n",
            rec = record.display()
        ),
    )
    .expect("wrapper");
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&wrapper)
        .status()
        .expect("chmod");
    set_password_env();
    let bmc = Connector::new(1)
        .with_ipmitool_program(wrapper.display().to_string())
        .connect(&BmcConfig::Ipmitool(sim.config(PASSWORD_ENV)))
        .expect("driver");
    assert_eq!(bmc.power_status().await.expect("status"), PowerState::Off);
    let seen = std::fs::read_to_string(&record).expect("record");
    assert!(seen.contains(" -E "), "{seen}");
    assert!(seen.contains("env: set"), "{seen}");
    assert!(
        !seen.contains("password"),
        "password on the command line: {seen}"
    );
    assert!(!seen.contains(" -P "), "{seen}");
}
