//! The whole boot path with real PXE clients: `lariat server` in a network namespace serves
//! DHCP, TFTP and HTTP boot on a bridge; two QEMU VMs (TCG) boot from the network, one with
//! SeaBIOS and the NIC's iPXE ROM, one with OVMF and no NIC ROM (the firmware's own PXE
//! client fetches `ipxe.efi` over TFTP first). Each chains Lariat's iPXE script, boots the
//! node image (Debian kernel + busybox initramfs) and posts its facts to `/v1/state`,
//! which completes the `await_callback` step of a run of the design's `await-boot` workflow
//! (the VMs are started by the test; `provision_e2e` powers them through BMCs).
//!
//! Needs root, `ip`, qemu-system-x86_64, Debian's ipxe, ipxe-qemu and ovmf, and what
//! images/build-node-image.sh needs. Skips without them, unless
//! LARIAT_REQUIRE_PRIVILEGED=1 (CI), where a missing one fails the test.

mod boot_support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use boot_support::{
    BootNet, Proc, design_repo, fill_design, get, item, lariat_server, missing, node_image,
    qemu_args, skip_or_fail, stage_node_image,
};
use serde_json::{Value, json};

const BIOS_MAC: &str = "52:54:00:77:00:21";
const UEFI_MAC: &str = "52:54:00:77:00:22";

fn qemu(net: &BootNet, dir: &Path, name: &str, tap: &str, mac: &str, uefi: bool) -> Proc {
    let log = std::fs::File::create(dir.join(format!("{name}.qemu.log"))).unwrap();
    let child = net
        .exec("qemu-system-x86_64")
        .args(qemu_args(dir, name, tap, mac, uefi, &[]))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("qemu starts");
    Proc(child)
}

#[tokio::test(flavor = "multi_thread")]
async fn bios_and_uefi_vms_pxe_boot_through_lariat_and_call_back() {
    if let Some(reason) = missing(&[]) {
        return skip_or_fail("pxe_qemu", &reason);
    }
    let image = node_image();
    let dir = tempfile::tempdir().unwrap();
    design_repo(
        &dir.path().join("design"),
        &fill_design(include_str!("pxe_qemu.design.yaml"), &image),
    );
    stage_node_image(&image, &dir.path().join("assets"));

    let net = BootNet::new(&["tap0", "tap1"]);
    let log_path = dir.path().join("server.log");
    let _server = lariat_server(&net, dir.path(), &log_path, &[]);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let base = format!("http://{}:7300", net.api);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the server never answered:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The design's own workflow is registered once the design becomes active.
    while !http
        .get(format!("{base}/v1/workflows/await-boot"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            Instant::now() < deadline,
            "await-boot never registered:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run: Value = http
        .post(format!("{base}/v1/runs"))
        .json(&json!({"workflow": "await-boot", "targets": ["vm-bios", "vm-uefi"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = run["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{run}\n{}", log()))
        .to_string();
    let url = format!("{base}/v1/runs/{id}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = get(&http, &url).await;
        if ["vm-bios", "vm-uefi"]
            .iter()
            .all(|h| item(&r, "await_callback", h)["status"] == "waiting")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never waited for the callbacks: {r:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let t0 = Instant::now();
    let _bios = qemu(&net, dir.path(), "bios", "tap0", BIOS_MAC, false);
    let _uefi = qemu(&net, dir.path(), "uefi", "tap1", UEFI_MAC, true);
    let mut called_back = [None, None];
    let deadline = Instant::now() + Duration::from_secs(240);
    let final_run = loop {
        let r = get(&http, &url).await;
        for (i, h) in ["vm-bios", "vm-uefi"].iter().enumerate() {
            if called_back[i].is_none() && item(&r, "await_callback", h)["status"] == "succeeded" {
                called_back[i] = Some(t0.elapsed());
            }
        }
        if r["status"] != "running" {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the VMs did not call back in time: {r:#}\nserver log:\n{}\nbios serial:\n{}\nuefi serial:\n{}",
            log(),
            std::fs::read_to_string(dir.path().join("bios.serial")).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("uefi.serial")).unwrap_or_default(),
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(final_run["status"], "succeeded", "{final_run:#}\n{}", log());
    for (host, mac) in [("vm-bios", BIOS_MAC), ("vm-uefi", UEFI_MAC)] {
        let out = &item(&final_run, "await_callback", host)["output"];
        assert_eq!(out["host"], host);
        assert_eq!(out["state"], "installed", "{out}");
        let macs: Vec<&str> = out["facts"]["macs"]
            .as_array()
            .unwrap_or_else(|| panic!("{out}"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(macs.contains(&mac), "{host} reported {macs:?}");
        let mem = out["facts"]["memory_mib"].as_u64().unwrap_or(0);
        assert!((400..=512).contains(&mem), "{host} memory {mem}");
    }
    // The UEFI firmware fetched ipxe.efi over Lariat's TFTP; both VMs leased from its DHCP.
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counter = |prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(counter("lariat_tftp_transfers_total") >= 1.0, "{metrics}");
    assert!(counter("lariat_dhcp") >= 1.0, "{metrics}");
    println!(
        "qemu start to callback: bios {:.1} s, uefi {:.1} s",
        called_back[0].unwrap_or_default().as_secs_f64(),
        called_back[1].unwrap_or_default().as_secs_f64()
    );
}
