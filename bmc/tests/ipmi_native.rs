//! The native IPMI driver (ipmi-rs + our commands) against ipmi_sim.

mod support;

use std::time::{Duration, Instant};

use lariat_bmc::ipmi::IpmiLan;
use lariat_bmc::{
    Bmc, BmcError, BmcPool, BootDevice, BootMode, BootOverride, BootPersistence, CredentialRef,
    FirmwareUpdate, PowerState, SoftOffOutcome,
};
use support::{IpmiSim, PASSWORD_ENV, WRONG_PASSWORD_ENV, set_password_env};

fn driver(sim: &IpmiSim) -> IpmiLan {
    set_password_env();
    IpmiLan::new(sim.config(PASSWORD_ENV), BmcPool::new(8)).expect("driver")
}

async fn assert_no_sessions(sim: &IpmiSim, bmc: &IpmiLan) {
    assert_eq!(
        bmc.open_sessions().await.expect("session info"),
        0,
        "native count"
    );
    if let Some(n) = sim.open_sessions_by_ipmitool() {
        assert_eq!(n, 0, "ipmitool count");
    }
}

#[tokio::test]
async fn power_on_off_cycle_confirmed_by_the_hook() {
    let Some(sim) = IpmiSim::start() else { return };
    let bmc = driver(&sim);

    assert_eq!(bmc.power_status().await.expect("status"), PowerState::Off);
    bmc.power_on().await.expect("on");
    assert_eq!(sim.power(), "1");
    assert_eq!(bmc.power_status().await.expect("status"), PowerState::On);
    // already on: nothing more is sent
    let sets = sim.sets().len();
    bmc.power_on().await.expect("on again");
    assert_eq!(sim.sets().len(), sets, "a second power on must not act");

    bmc.power_off().await.expect("off");
    assert_eq!(sim.power(), "0");
    assert_eq!(bmc.power_status().await.expect("status"), PowerState::Off);

    let before = sim.sets().len();
    bmc.power_cycle().await.expect("cycle");
    assert_eq!(sim.power(), "1");
    // off already: the cycle is just "on"; then from on: off, then on.
    bmc.power_cycle().await.expect("cycle from on");
    let sets = sim.sets()[before..].to_vec();
    assert_eq!(
        sets,
        ["set power 1", "set power 0", "set power 1"],
        "{sets:?}"
    );
    assert!(
        !sim.events().iter().any(|e| e.contains("reset")),
        "a raw cycle/reset was sent"
    );
    assert_no_sessions(&sim, &bmc).await;
}

#[tokio::test]
async fn boot_device_pxe_once_and_back() {
    let Some(sim) = IpmiSim::start() else { return };
    let bmc = driver(&sim);

    bmc.set_boot_device(BootOverride::pxe_once())
        .await
        .expect("set pxe");
    assert_eq!(sim.boot(), "pxe");
    let got = bmc.boot_device().await.expect("get");
    assert_eq!(got.device, Some(BootDevice::Pxe), "{got:?}");

    let bios = BootOverride {
        device: BootDevice::Bios,
        persistence: BootPersistence::Persistent,
        mode: BootMode::Legacy,
    };
    bmc.set_boot_device(bios).await.expect("set bios");
    assert_eq!(sim.boot(), "bios");
    assert_eq!(
        bmc.boot_device().await.expect("get").device,
        Some(BootDevice::Bios)
    );

    let disk = BootOverride {
        device: BootDevice::Disk,
        ..BootOverride::pxe_once()
    };
    bmc.set_boot_device(disk).await.expect("set disk");
    assert_eq!(
        bmc.boot_device().await.expect("get").device,
        Some(BootDevice::Disk)
    );
    assert_no_sessions(&sim, &bmc).await;
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_and_leaves_no_session() {
    let Some(sim) = IpmiSim::start() else { return };
    set_password_env();
    let wrong = IpmiLan::new(sim.config(WRONG_PASSWORD_ENV), BmcPool::new(2)).expect("driver");
    let err = wrong.power_status().await.expect_err("must fail");
    assert!(matches!(err, BmcError::Auth { .. }), "{err}");
    assert!(!err.to_string().contains("not-the-password"), "{err}");
    assert!(!err.is_transient());
    let mut unknown_user = sim.config(PASSWORD_ENV);
    unknown_user.username = "nobody".into();
    let err = IpmiLan::new(unknown_user, BmcPool::new(2))
        .expect("driver")
        .power_status()
        .await
        .expect_err("must fail");
    assert!(matches!(err, BmcError::Auth { .. }), "{err}");
    assert_no_sessions(&sim, &driver(&sim)).await;
}

#[tokio::test]
async fn unreachable_bmc_fails_fast_with_a_typed_error() {
    set_password_env();
    // A closed port on loopback: the kernel answers ICMP port unreachable.
    let mut cfg = lariat_bmc::IpmiConfig {
        address: "127.0.0.1".into(),
        port: support::free_udp_port(),
        username: "admin".into(),
        password: CredentialRef::Env(PASSWORD_ENV.into()),
        cipher_suite: 3,
        timing: support::fast_timing(),
    };
    cfg.timing.command_timeout = Duration::from_millis(200);
    cfg.timing.retries = 1;
    let start = Instant::now();
    let err = IpmiLan::new(cfg.clone(), BmcPool::new(2))
        .expect("driver")
        .power_status()
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, BmcError::Unreachable { .. }), "{err}");
    assert!(err.is_transient());
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );

    // A socket that reads and never answers: a BMC that is down behind a live network.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    cfg.port = silent.local_addr().expect("addr").port();
    let start = Instant::now();
    let err = IpmiLan::new(cfg, BmcPool::new(2))
        .expect("driver")
        .power_status()
        .await
        .expect_err("nothing answers");
    assert!(matches!(err, BmcError::Timeout { .. }), "{err}");
    assert!(err.is_transient());
    // two tries of 200 ms
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(2),
        "{took:?}"
    );
    drop(silent);
}

#[tokio::test]
async fn many_operations_in_a_row_and_in_parallel_leak_no_session() {
    let Some(sim) = IpmiSim::start() else { return };
    let bmc = std::sync::Arc::new(driver(&sim));
    // The admin user may hold 10 sessions: 30 operations would lock it out if any leaked.
    for _ in 0..30 {
        bmc.power_status().await.expect("status");
    }
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let bmc = std::sync::Arc::clone(&bmc);
            tokio::spawn(async move { bmc.power_status().await })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("status");
    }
    assert_no_sessions(&sim, &bmc).await;
}

#[tokio::test]
async fn soft_off_graceful_and_forced() {
    let Some(sim) = IpmiSim::start() else { return };
    let bmc = driver(&sim);
    assert_eq!(
        bmc.soft_off(Duration::from_secs(1)).await.expect("soft"),
        SoftOffOutcome::AlreadyOff
    );
    bmc.power_on().await.expect("on");
    assert_eq!(
        bmc.soft_off(Duration::from_secs(5)).await.expect("soft"),
        SoftOffOutcome::Graceful
    );
    assert!(sim.events().iter().any(|e| e == "set shutdown 1"));
    assert_eq!(sim.power(), "0");

    bmc.power_on().await.expect("on");
    std::fs::write(sim.var().join("ignore-shutdown"), "").expect("flag");
    assert_eq!(
        bmc.soft_off(Duration::from_millis(500))
            .await
            .expect("soft"),
        SoftOffOutcome::Forced
    );
    assert_eq!(sim.power(), "0");
    assert_no_sessions(&sim, &bmc).await;
}

#[tokio::test]
async fn firmware_inventory_and_update_refused() {
    let Some(sim) = IpmiSim::start() else { return };
    let bmc = driver(&sim);
    let inv = bmc.firmware_inventory().await.expect("inventory");
    assert_eq!(inv.len(), 1);
    // bmc.emu: mc_add ... fw-major 9 fw-minor 8
    assert_eq!(inv[0].version, "9.08", "{inv:?}");
    let err = bmc
        .firmware_update(&FirmwareUpdate {
            image_uri: "http://x/fw.bin".into(),
            transfer_protocol: None,
            targets: vec![],
        })
        .await
        .expect_err("ipmi cannot");
    assert!(matches!(err, BmcError::Unsupported { .. }), "{err}");
}

#[tokio::test]
async fn password_from_a_file_reference() {
    let Some(sim) = IpmiSim::start() else { return };
    let file = sim.dir.path().join("bmc-password");
    std::fs::write(&file, "password\n").expect("write");
    let mut cfg = sim.config(PASSWORD_ENV);
    cfg.password = CredentialRef::File(file);
    let bmc = IpmiLan::new(cfg, BmcPool::new(1)).expect("driver");
    assert_eq!(bmc.power_status().await.expect("status"), PowerState::Off);
    assert!(!format!("{:?}", CredentialRef::Env("X".into())).contains("password"));
}

/// A UDP "BMC" that answers every datagram with `reply`, until the test ends.
fn broken_bmc(reply: &'static [u8]) -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = socket.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(reply, from);
        }
    });
    port
}

fn broken_config(port: u16) -> lariat_bmc::IpmiConfig {
    set_password_env();
    let mut timing = support::fast_timing();
    timing.command_timeout = Duration::from_millis(200);
    timing.retries = 1;
    lariat_bmc::IpmiConfig {
        address: "127.0.0.1".into(),
        port,
        username: "admin".into(),
        password: CredentialRef::Env(PASSWORD_ENV.into()),
        cipher_suite: 3,
        timing,
    }
}

#[tokio::test]
async fn a_library_panic_on_a_malformed_pong_becomes_an_error() {
    // RMCP header + ASF pong whose length byte promises 16 bytes that are not there:
    // ipmi-rs 0.6 indexes past the end (asf.rs) and panics.
    static SHORT_PONG: &[u8] = &[
        0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE, 0x40, 0xC8, 0x00, 0x10,
    ];
    let port = broken_bmc(SHORT_PONG);
    let bmc = IpmiLan::new(broken_config(port), BmcPool::new(1)).expect("driver");
    let err = bmc.power_status().await.expect_err("malformed");
    assert!(matches!(err, BmcError::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("panicked"), "{err}");
    // the driver is still usable afterwards (same answer, no poisoned state)
    let err = bmc.power_status().await.expect_err("malformed again");
    assert!(matches!(err, BmcError::Protocol { .. }), "{err}");
}

#[tokio::test]
async fn garbage_answers_are_an_error_not_a_hang() {
    static GARBAGE: &[u8] = b"\x06\x00\xff\x07 this is not IPMI at all";
    let port = broken_bmc(GARBAGE);
    let start = Instant::now();
    let err = IpmiLan::new(broken_config(port), BmcPool::new(1))
        .expect("driver")
        .power_status()
        .await
        .expect_err("garbage");
    assert!(
        matches!(err, BmcError::Protocol { .. } | BmcError::Timeout { .. }),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

/// A UDP relay between the driver and a real ipmi_sim that drops the datagrams whose
/// 1-based indexes are listed (client->BMC in `drop_up`, BMC->client in `drop_down`).
/// Returns the relay's port and a counter of datagrams passed up.
fn lossy_relay(
    bmc_port: u16,
    drop_up: &'static [usize],
    drop_down: &'static [usize],
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let front = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = front.local_addr().expect("addr").port();
    let back = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    back.connect(("127.0.0.1", bmc_port)).expect("connect");
    front
        .set_read_timeout(Some(Duration::from_millis(5)))
        .expect("timeout");
    back.set_read_timeout(Some(Duration::from_millis(5)))
        .expect("timeout");
    let up_count = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&up_count);
    std::thread::spawn(move || {
        let (mut client, mut down) = (None, 0usize);
        let mut buf = [0u8; 1024];
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok((n, from)) = front.recv_from(&mut buf) {
                client = Some(from);
                let i = counter.fetch_add(1, Ordering::SeqCst) + 1;
                if !drop_up.contains(&i) {
                    let _ = back.send(&buf[..n]);
                }
            }
            if let Ok(n) = back.recv(&mut buf) {
                down += 1;
                if let (false, Some(to)) = (drop_down.contains(&down), client) {
                    let _ = front.send_to(&buf[..n], to);
                }
            }
        }
    });
    (port, up_count)
}

#[tokio::test]
async fn lost_datagrams_are_sent_again() {
    let Some(sim) = IpmiSim::start() else { return };
    // Datagrams 1-5 open the session (ping, capabilities, open, RAKP 1, RAKP 3), 6 raises
    // the privilege, 7 is Get Chassis Status: lose it, then lose its first answer.
    let (port, sent) = lossy_relay(sim.port, &[7], &[7]);
    let mut cfg = sim.config(PASSWORD_ENV);
    cfg.port = port;
    cfg.timing.command_timeout = Duration::from_millis(300);
    cfg.timing.retries = 2;
    set_password_env();
    let bmc = IpmiLan::new(cfg, BmcPool::new(1)).expect("driver");
    let start = Instant::now();
    assert_eq!(bmc.power_status().await.expect("status"), PowerState::Off);
    assert!(
        start.elapsed() >= Duration::from_millis(600),
        "{:?}",
        start.elapsed()
    );
    // 7, 8 and 9 are the three tries of Get Chassis Status, 10 is Close Session.
    assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 10);
    assert_no_sessions(&sim, &driver(&sim)).await;
}

#[test]
fn native_driver_refuses_other_cipher_suites_by_name() {
    let mut cfg = broken_config(623);
    cfg.cipher_suite = 17;
    let err = IpmiLan::new(cfg.clone(), BmcPool::new(1))
        .err()
        .expect("suite 17 refused");
    assert!(matches!(err, BmcError::Config(_)), "{err}");
    assert!(err.to_string().contains("ipmitool"), "{err}");
    cfg.cipher_suite = 42;
    let err = IpmiLan::new(cfg, BmcPool::new(1))
        .err()
        .expect("no suite 42");
    assert!(err.to_string().contains("0-17"), "{err}");
}
