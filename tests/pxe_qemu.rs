//! The whole boot path with real PXE clients: `lariat server` in a network namespace serves
//! DHCP, TFTP and HTTP boot on a bridge; two QEMU VMs (TCG) boot from the network, one with
//! SeaBIOS and the NIC's iPXE ROM, one with OVMF and no NIC ROM (the firmware's own PXE
//! client fetches `ipxe.efi` over TFTP first). Each chains Lariat's iPXE script, boots the
//! node image (Debian kernel + busybox initramfs) and posts its facts to `/v1/state`,
//! which completes the `provision` run's `await_callback` step.
//!
//! Needs root, `ip`, qemu-system-x86_64, Debian's ipxe, ipxe-qemu and ovmf, and what
//! images/build-node-image.sh needs. Skips without them, unless
//! LARIAT_REQUIRE_PRIVILEGED=1 (CI), where a missing one fails the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_lariat");
const BIOS_MAC: &str = "52:54:00:77:00:21";
const UEFI_MAC: &str = "52:54:00:77:00:22";
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Whether this machine can run the test; the reason when not.
fn missing() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix("Uid:")
                        .map(|r| r.split_whitespace().next().map(str::to_string))
                })
                .flatten()
        });
    if uid.as_deref() != Some("0") {
        return Some("not root (network namespaces and tap devices need it)".into());
    }
    for tool in ["ip", "qemu-system-x86_64", "apt-get", "cpio", "depmod"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    for f in [
        "/usr/lib/ipxe/ipxe.efi",
        "/usr/lib/ipxe/qemu/efi-virtio.rom",
        OVMF_CODE,
        OVMF_VARS,
    ] {
        if !Path::new(f).exists() {
            return Some(format!("{f} is missing (packages ipxe, ipxe-qemu, ovmf)"));
        }
    }
    None
}

fn skip_or_fail(reason: &str) {
    if std::env::var("LARIAT_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
        panic!("LARIAT_REQUIRE_PRIVILEGED=1 but this test cannot run: {reason}");
    }
    eprintln!("SKIPPED pxe_qemu: {reason}");
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A namespace with a bridge (10.77.0.1/24) for the VMs' tap devices, and a veth pair so
/// the test reaches the server at 10.79.n.2. Deleted, with its links, on drop.
struct BootNet {
    ns: String,
    host_veth: String,
    api: String,
}

impl BootNet {
    fn new(taps: &[&str]) -> BootNet {
        let n = std::process::id() % 200 + NEXT.fetch_add(1, Ordering::Relaxed);
        let ns = format!("lpxe{n}");
        let host_veth = format!("lpxh{n}");
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &host_veth])
            .output();
        ip(&["netns", "add", &ns]);
        let net = BootNet {
            ns: ns.clone(),
            host_veth: host_veth.clone(),
            api: format!("10.79.{}.2", n % 250),
        };
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &ns,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ]);
        ip(&["-n", &ns, "addr", "add", "10.77.0.1/24", "dev", "br0"]);
        ip(&["-n", &ns, "link", "set", "br0", "up"]);
        for tap in taps {
            ip(&["-n", &ns, "tuntap", "add", "dev", tap, "mode", "tap"]);
            ip(&["-n", &ns, "link", "set", tap, "master", "br0"]);
            ip(&["-n", &ns, "link", "set", tap, "up"]);
        }
        ip(&[
            "link", "add", &host_veth, "type", "veth", "peer", "name", "api0", "netns", &ns,
        ]);
        let sub = format!("10.79.{}", n % 250);
        ip(&["addr", "add", &format!("{sub}.1/30"), "dev", &host_veth]);
        ip(&["link", "set", &host_veth, "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{sub}.2/30"),
            "dev",
            "api0",
        ]);
        ip(&["-n", &ns, "link", "set", "api0", "up"]);
        net
    }

    fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }
}

impl Drop for BootNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node_image() -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("node-image");
    run(
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("images/build-node-image.sh"))
            .arg(&out)
            .stdout(Stdio::null()),
    );
    out
}

fn sha256_of(sums: &str, name: &str) -> String {
    sums.lines()
        .find(|l| l.ends_with(name))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{name} not in SHA256SUMS"))
        .to_string()
}

fn design(dir: &Path, image: &Path) {
    let sums = std::fs::read_to_string(image.join("SHA256SUMS")).unwrap();
    let text = include_str!("pxe_qemu.design.yaml")
        .replace("SHA_KERNEL", &sha256_of(&sums, "vmlinuz"))
        .replace("SHA_INITRD", &sha256_of(&sums, "initrd.img"));
    std::fs::write(dir.join("design.yaml"), text).unwrap();
    let git = |args: &[&str]| run(Command::new("git").args(args).current_dir(dir));
    git(&["init", "-q", "-b", "main"]);
    git(&[
        "-c",
        "user.email=t@example.com",
        "-c",
        "user.name=t",
        "add",
        "-A",
    ]);
    git(&[
        "-c",
        "user.email=t@example.com",
        "-c",
        "user.name=t",
        "commit",
        "-q",
        "-m",
        "lab",
    ]);
}

fn qemu(net: &BootNet, dir: &Path, name: &str, tap: &str, mac: &str, uefi: bool) -> Proc {
    let mut c = net.exec("qemu-system-x86_64");
    c.args([
        "-machine",
        "pc",
        "-accel",
        "tcg",
        "-m",
        "512",
        "-nodefaults",
    ])
    .args(["-vga", "std", "-display", "none"])
    .arg("-serial")
    .arg(format!(
        "file:{}",
        dir.join(format!("{name}.serial")).display()
    ))
    .args([
        "-netdev",
        &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
    ]);
    if uefi {
        let vars = dir.join(format!("{name}-vars.fd"));
        std::fs::copy(OVMF_VARS, &vars).unwrap();
        c.args([
            "-drive",
            &format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
        ])
        .args([
            "-drive",
            &format!("if=pflash,format=raw,file={}", vars.display()),
        ])
        // No NIC ROM: the firmware's own PXE client boots, and fetches ipxe.efi by TFTP.
        .args([
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={mac},bootindex=1,romfile="),
        ]);
    } else {
        c.args(["-boot", "n"])
            .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={mac}")]);
    }
    let log = std::fs::File::create(dir.join(format!("{name}.qemu.log"))).unwrap();
    let child = c
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("qemu starts");
    Proc(child)
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

fn item<'a>(run: &'a Value, step: &str, host: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == step))
        .and_then(|s| s["items"].as_array())
        .and_then(|i| i.iter().find(|i| i["item_value"] == host))
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn bios_and_uefi_vms_pxe_boot_through_lariat_and_call_back() {
    if let Some(reason) = missing() {
        return skip_or_fail(&reason);
    }
    let image = node_image();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("design");
    std::fs::create_dir_all(&repo).unwrap();
    design(&repo, &image);
    let db = dir.path().join("lariat.db");
    let assets = dir.path().join("assets/node");
    std::fs::create_dir_all(&assets).unwrap();
    for f in ["vmlinuz", "initrd.img"] {
        std::fs::copy(image.join(f), assets.join(f)).unwrap();
    }

    let net = BootNet::new(&["tap0", "tap1"]);
    let log_path = dir.path().join("server.log");
    let server = net
        .exec(BIN)
        .args([
            "server",
            "--listen",
            "0.0.0.0:7300",
            "--durability",
            "normal",
            "--insecure-no-auth",
        ])
        .arg("--db")
        .arg(&db)
        .args(["--design-repo", repo.to_str().unwrap()])
        .args(["--http-boot", "--boot-url", "http://10.77.0.1:7300"])
        .arg("--boot-assets")
        .arg(dir.path().join("assets"))
        .args([
            "--dhcp",
            "--tftp",
            "--boot-interface",
            "br0",
            "--boot-address",
            "10.77.0.1",
        ])
        .env("LARIAT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("lariat starts");
    let _server = Proc(server);
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

    let run: Value = http
        .post(format!("{base}/v1/runs"))
        .json(&json!({"workflow": "provision", "targets": ["vm-bios", "vm-uefi"]}))
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
