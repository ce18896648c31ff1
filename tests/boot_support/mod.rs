//! Shared by the tests that PXE-boot QEMU VMs through Lariat (`pxe_qemu`, `provision_e2e`):
//! a network namespace with a bridge for the VMs' tap devices and a veth to reach the
//! server (deleted on drop), child processes killed on drop, the node image, a design
//! repository, QEMU command lines, and run-JSON accessors.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_lariat");
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Whether this machine can run a QEMU boot test (root, tools, firmware and iPXE files,
/// plus `extra` programs); the reason when not.
pub fn missing(extra: &[&str]) -> Option<String> {
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
    let base = ["ip", "qemu-system-x86_64", "apt-get", "cpio", "depmod"];
    for tool in base.iter().chain(extra) {
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

/// Skips with a message, or fails under LARIAT_REQUIRE_PRIVILEGED=1 (CI).
pub fn skip_or_fail(test: &str, reason: &str) {
    if std::env::var("LARIAT_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
        panic!("LARIAT_REQUIRE_PRIVILEGED=1 but {test} cannot run: {reason}");
    }
    eprintln!("SKIPPED {test}: {reason}");
}

pub fn run(cmd: &mut Command) -> String {
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
pub struct BootNet {
    pub ns: String,
    host_veth: String,
    pub api: String,
}

impl BootNet {
    pub fn new(taps: &[&str]) -> BootNet {
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

    /// The host's end of the veth pair: where the namespace reaches the test's host.
    pub fn host_address(&self) -> String {
        let (sub, _) = self.api.rsplit_once('.').unwrap();
        format!("{sub}.1")
    }

    /// `program` run inside the namespace.
    pub fn exec(&self, program: &str) -> Command {
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
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds (or reuses) the node image: Debian kernel + busybox initramfs whose /init posts
/// the machine's facts to `lariat.callback`.
pub fn node_image() -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("node-image");
    run(
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("images/build-node-image.sh"))
            .arg(&out)
            .stdout(Stdio::null()),
    );
    out
}

/// The sha256 of `name` in the image's SHA256SUMS.
pub fn sha256_of(image: &Path, name: &str) -> String {
    let sums = std::fs::read_to_string(image.join("SHA256SUMS")).unwrap();
    sums.lines()
        .find(|l| l.ends_with(name))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{name} not in SHA256SUMS"))
        .to_string()
}

/// The design template with SHA_KERNEL and SHA_INITRD filled in from the image.
pub fn fill_design(template: &str, image: &Path) -> String {
    template
        .replace("SHA_KERNEL", &sha256_of(image, "vmlinuz"))
        .replace("SHA_INITRD", &sha256_of(image, "initrd.img"))
}

/// A git repository in `dir` holding `design.yaml`, committed on `main`.
pub fn design_repo(dir: &Path, design: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("design.yaml"), design).unwrap();
    let git = |args: &[&str]| run(Command::new("git").args(args).current_dir(dir));
    let who = ["-c", "user.email=t@example.com", "-c", "user.name=t"];
    git(&["init", "-q", "-b", "main"]);
    git(&[&who[..], &["add", "-A"]].concat());
    git(&[&who[..], &["commit", "-q", "-m", "lab"]].concat());
}

/// Copies the image's kernel and initrd into `<assets>/node/`, where the designs'
/// boot profiles name them.
pub fn stage_node_image(image: &Path, assets: &Path) {
    let node = assets.join("node");
    std::fs::create_dir_all(&node).unwrap();
    for f in ["vmlinuz", "initrd.img"] {
        std::fs::copy(image.join(f), node.join(f)).unwrap();
    }
}

/// One VM: the QEMU arguments (TCG, 512 MiB, serial console to `<dir>/<name>.serial`,
/// a virtio NIC on `tap`). BIOS boots the NIC's iPXE ROM; UEFI has no NIC ROM, so OVMF's
/// own PXE client boots and fetches `ipxe.efi` by TFTP. `extra` is appended.
pub fn qemu_args(
    dir: &Path,
    name: &str,
    tap: &str,
    mac: &str,
    uefi: bool,
    extra: &[String],
) -> Vec<String> {
    let mut a: Vec<String> = [
        "-machine",
        "pc",
        "-accel",
        "tcg",
        "-m",
        "512",
        "-nodefaults",
        "-vga",
        "std",
        "-display",
        "none",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push("-serial".into());
    a.push(format!(
        "file:{}",
        dir.join(format!("{name}.serial")).display()
    ));
    a.push("-netdev".into());
    a.push(format!("tap,id=n0,ifname={tap},script=no,downscript=no"));
    if uefi {
        let vars = dir.join(format!("{name}-vars.fd"));
        std::fs::copy(OVMF_VARS, &vars).unwrap();
        a.push("-drive".into());
        a.push(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"));
        a.push("-drive".into());
        a.push(format!("if=pflash,format=raw,file={}", vars.display()));
        a.push("-device".into());
        a.push(format!(
            "virtio-net-pci,netdev=n0,mac={mac},bootindex=1,romfile="
        ));
    } else {
        a.push("-boot".into());
        a.push("n".into());
        a.push("-device".into());
        a.push(format!("virtio-net-pci,netdev=n0,mac={mac}"));
    }
    a.extend(extra.iter().cloned());
    a
}

/// The arguments of DHCP, TFTP and HTTP boot on the bridge (10.77.0.1:7300), with boot
/// assets in `<dir>/assets`.
pub fn boot_services(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = ["--http-boot", "--boot-url", "http://10.77.0.1:7300"]
        .map(Into::into)
        .to_vec();
    a.push("--boot-assets".into());
    a.push(dir.join("assets").into());
    a.extend(
        [
            "--dhcp",
            "--tftp",
            "--boot-interface",
            "br0",
            "--boot-address",
            "10.77.0.1",
        ]
        .map(Into::into),
    );
    a
}

/// `lariat server` in the namespace: API on 0.0.0.0:7300, DHCP, TFTP and HTTP boot on the
/// bridge (10.77.0.1), the design from the git repository `<dir>/design`, the database
/// `<dir>/lariat.db`, boot assets in `<dir>/assets`; its log (info) goes to `log`.
pub fn lariat_server(net: &BootNet, dir: &Path, log: &Path, env: &[(&str, &str)]) -> Proc {
    let child = net
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
        .arg(dir.join("lariat.db"))
        .arg("--design-repo")
        .arg(dir.join("design"))
        .args(boot_services(dir))
        .envs(env.iter().copied())
        .env("LARIAT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("lariat starts");
    Proc(child)
}

/// The fan-out item of `step` for `host` in a run's JSON (Null when absent).
pub fn item<'a>(run: &'a Value, step: &str, host: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == step))
        .and_then(|s| s["items"].as_array())
        .and_then(|i| i.iter().find(|i| i["item_value"] == host))
        .unwrap_or(&Value::Null)
}

/// The step named `step` in a run's JSON (Null when absent).
pub fn step<'a>(run: &'a Value, step: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == step))
        .unwrap_or(&Value::Null)
}

pub async fn get(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}
