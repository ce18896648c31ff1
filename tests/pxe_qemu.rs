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

/// `lariat server` in `net` with a run of `await-boot` for `hosts`, each of which waits
/// for its callback.
struct Lab {
    _server: Proc,
    http: reqwest::Client,
    base: String,
    /// The run's URL.
    url: String,
    log_path: std::path::PathBuf,
}

impl Lab {
    async fn start(net: &BootNet, dir: &Path, hosts: &[&str]) -> Lab {
        let log_path = dir.join("server.log");
        let server = lariat_server(net, dir, &log_path, &[]);
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
            .json(&json!({"workflow": "await-boot", "targets": hosts}))
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
            if hosts
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
        Lab {
            _server: server,
            http,
            base,
            url,
            log_path,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
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
    let lab = Lab::start(&net, dir.path(), &["vm-bios", "vm-uefi"]).await;
    let (http, url) = (&lab.http, &lab.url);
    let base = &lab.base;
    let log = || lab.log();

    let t0 = Instant::now();
    let _bios = qemu(&net, dir.path(), "bios", "tap0", BIOS_MAC, false);
    let _uefi = qemu(&net, dir.path(), "uefi", "tap1", UEFI_MAC, true);
    let mut called_back = [None, None];
    let deadline = Instant::now() + Duration::from_secs(240);
    let final_run = loop {
        let r = get(http, url).await;
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

/// A namespace with one interface on the lab's bridge, with `mac`: a machine on the
/// provisioning network. Deleted on drop.
struct Neighbour {
    ns: String,
}

impl Neighbour {
    fn plug(net: &BootNet, name: &str, mac: &str) -> Neighbour {
        let ns = format!("{}{name}", net.ns);
        let ip = |args: &[&str]| {
            boot_support::run(std::process::Command::new("ip").args(args));
        };
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns])
            .output();
        ip(&["netns", "add", &ns]);
        let br_end = format!("{name}b");
        ip(&[
            "-n", &net.ns, "link", "add", &br_end, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ]);
        ip(&["-n", &net.ns, "link", "set", &br_end, "master", "br0"]);
        ip(&["-n", &net.ns, "link", "set", &br_end, "up"]);
        ip(&["-n", &ns, "link", "set", "eth0", "address", mac]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        Neighbour { ns }
    }

    /// Leases an address from the bridge's DHCP server with udhcpc and configures it.
    fn lease(&self, dir: &Path) -> String {
        let hook = dir.join(format!("{}.udhcpc.sh", self.ns));
        std::fs::write(
            &hook,
            "#!/bin/sh\n[ \"$1\" = bound ] && ip addr add \"$ip/${mask:-24}\" dev \"$interface\" && echo \"leased $ip\"\nexit 0\n",
        )
        .unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let out = boot_support::run(
            std::process::Command::new("ip")
                .args([
                    "netns", "exec", &self.ns, "udhcpc", "-i", "eth0", "-f", "-q", "-n",
                ])
                .args(["-t", "10", "-T", "1", "-s"])
                .arg(&hook),
        );
        out.lines()
            .find_map(|l| l.strip_prefix("leased "))
            .unwrap_or_else(|| panic!("udhcpc leased nothing: {out}"))
            .to_string()
    }

    /// `GET url` from this machine: (status, body).
    fn get(&self, url: &str) -> (u16, String) {
        curl(&["netns", "exec", &self.ns], url)
    }
}

impl Drop for Neighbour {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .output();
    }
}

/// curl run through `ip <via>`: (status, body).
fn curl(via: &[&str], url: &str) -> (u16, String) {
    let out = std::process::Command::new("ip")
        .args(via)
        .args(["curl", "-s", "-m", "10", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl runs");
    let out = String::from_utf8_lossy(&out.stdout);
    let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
    (code.parse().unwrap_or(0), body.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nodes_script_and_token_go_only_to_the_address_leased_to_its_mac() {
    if let Some(reason) = missing(&["udhcpc", "curl"]) {
        return skip_or_fail("pxe_qemu lease check", &reason);
    }
    let dir = tempfile::tempdir().unwrap();
    // Nothing is staged or booted here: any well-formed sums do.
    let design = include_str!("pxe_qemu.design.yaml")
        .replace("SHA_KERNEL", &"a".repeat(64))
        .replace("SHA_INITRD", &"b".repeat(64));
    design_repo(&dir.path().join("design"), &design);
    let net = BootNet::new(&[]);
    let lab = Lab::start(&net, dir.path(), &["vm-bios", "vm-uefi"]).await;
    let script = |mac: &str| format!("http://10.77.0.1:7300/boot/ipxe?mac={mac}");

    let node = Neighbour::plug(&net, "n", BIOS_MAC);
    // Before it holds a lease, no address gets its script.
    let (code, body) = curl(&["netns", "exec", &net.ns], &script(BIOS_MAC));
    assert_eq!(code, 403, "{body}\n{}", lab.log());
    assert!(
        body.contains("holds no lease") && !body.contains("token"),
        "{body}"
    );

    let ip = node.lease(dir.path());
    assert_eq!(ip, "10.77.0.21", "the design's reservation for vm-bios");
    let (code, body) = node.get(&script(BIOS_MAC));
    assert_eq!(code, 200, "{body}\n{}", lab.log());
    assert!(
        body.contains("vm-bios") && body.contains("token="),
        "{body}"
    );
    // Another node's MAC from this address, and this MAC from another address: refused,
    // and no token is minted for either.
    let (code, body) = node.get(&script(UEFI_MAC));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("holds no lease"), "{body}");
    let (code, body) = curl(&["netns", "exec", &net.ns], &script(BIOS_MAC));
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("is leased 10.77.0.21") && body.contains("not to 10.77.0.1"),
        "{body}"
    );
    assert!(!body.contains("token="), "{body}");
    assert!(lab.log().contains("script refused"), "{}", lab.log());
}
