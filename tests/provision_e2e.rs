//! Provisioning QEMU "bare-metal" hosts end to end, through their BMCs.
//!
//! Each host has an `ipmi_sim` BMC (OpenIPMI) whose chassis-control hook starts its QEMU
//! VM on power on and stops it on power off. `lariat server` runs the built-in `provision`
//! workflow: it checks the design, stages the boot assets, powers the hosts off over
//! IPMI (RMCP+), sets PXE, powers them on; the VMs lease from Lariat's DHCP, load iPXE by
//! TFTP, chain Lariat's script, boot the node image (Debian kernel + busybox initramfs)
//! and post their facts to `/v1/state`; `verify` checks them against the design.
//!
//! In one test, on one server:
//! - `vm-a` (SeaBIOS) and `vm-b` (OVMF) are provisioned; Lariat is killed with SIGKILL
//!   while it waits for their callbacks (both nodes in their ramdisk, about to post) and
//!   started again, and the run completes;
//! - that run is rolled back: the compensations power the hosts off and set their boot
//!   device back to disk;
//! - `vm-c`'s BMC starts no VM (a host that never calls back): the callback times out,
//!   the retry power-cycles it and times out again, the step fails; the test then "fixes
//!   the cable" (gives the hook a VM to start) and an operator retries the step, which
//!   power-cycles the host once more and succeeds.
//!
//! Once more through a site agent: the centre runs on the test's host, `lariat agent`
//! in the namespace serves DHCP, TFTP and HTTP boot, and its link to the centre is cut
//! after power on: the node's callback reaches the agent, the run succeeds at the site,
//! and shows as succeeded at the centre once the link is back.
//!
//! Needs root, `ip`, qemu-system-x86_64, Debian's ipxe, ipxe-qemu and ovmf, openipmi's
//! ipmi_sim, and what images/build-node-image.sh needs. Skips without them, unless
//! LARIAT_REQUIRE_PRIVILEGED=1 (CI), where a missing one fails the test.

mod api_support;
#[path = "../bmc/tests/support/mod.rs"]
mod bmc_support;
mod boot_support;
mod link_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boot_support::{
    BootNet, Proc, boot_services, design_repo, fill_design, get, item, lariat_server, missing,
    node_image, qemu_args, skip_or_fail, stage_node_image, step,
};
use serde_json::{Value, json};

const PASSWORD_ENV: &str = "LARIAT_E2E_BMC_PASSWORD";

/// One host: its ipmi_sim BMC on 127.0.0.1:`port` in the namespace, and the VM its hook
/// starts. Stops both on drop.
struct Machine {
    name: &'static str,
    /// The hook's state folder: power, boot, events.log, host-cmd, host.pid, the console.
    dir: PathBuf,
    host_cmd: String,
    _sim: bmc_support::IpmiSim,
}

impl Machine {
    fn start(net: &BootNet, name: &'static str, port: u16, vm: Vm) -> Machine {
        let sim = bmc_support::IpmiSim::start_via(port, &["ip", "netns", "exec", &net.ns]);
        let dir = sim.var();
        // Powered on, as a machine in service is, so power_off has work to do.
        std::fs::write(dir.join("power"), "1\n").unwrap();
        let mut extra = Vec::new();
        if let Some(serial) = vm.serial {
            extra.extend(["-smbios".to_string(), format!("type=1,serial={serial}")]);
        }
        if let Some(size) = vm.disk {
            let img = dir.join("disk.img");
            std::fs::File::create(&img).unwrap().set_len(size).unwrap();
            extra.extend([
                "-drive".to_string(),
                format!("file={},format=raw,if=virtio", img.display()),
            ]);
        }
        let host_cmd = std::iter::once("qemu-system-x86_64".to_string())
            .chain(qemu_args(&dir, name, vm.tap, vm.mac, vm.uefi, &extra))
            .collect::<Vec<_>>()
            .join(" ");
        let m = Machine {
            name,
            dir,
            host_cmd,
            _sim: sim,
        };
        if vm.plugged {
            m.plug();
        }
        m
    }

    /// Gives the hook the VM to start on power on (for `vm-c`: the operator's fix).
    fn plug(&self) {
        std::fs::write(self.dir.join("host-cmd"), &self.host_cmd).unwrap();
    }

    fn state(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The hook's `set ...` calls, in order (reads are left out).
    fn sets(&self) -> Vec<String> {
        self.state("events.log")
            .lines()
            .filter(|l| l.starts_with("set "))
            .map(str::to_string)
            .collect()
    }

    fn serial_console(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.serial", self.name))).unwrap_or_default()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("host.pid")) {
            let _ = std::process::Command::new("kill")
                .args(["-9", pid.trim()])
                .output();
        }
    }
}

struct Vm {
    tap: &'static str,
    mac: &'static str,
    uefi: bool,
    serial: Option<&'static str>,
    disk: Option<u64>,
    plugged: bool,
}

/// `lariat server` in the namespace, with DHCP, TFTP and HTTP boot on the bridge, and
/// the BMCs' password where the design's credential reference points.
fn server(net: &BootNet, dir: &Path, log: &Path) -> Proc {
    lariat_server(net, dir, log, &[(PASSWORD_ENV, "password")])
}

struct Lab {
    http: reqwest::Client,
    base: String,
    logs: Vec<PathBuf>,
}

impl Lab {
    fn log(&self) -> String {
        self.logs
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restarted ---\n")
    }

    async fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self
            .http
            .get(format!("{}/healthz", self.base))
            .send()
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "the server never answered:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn run(&self, id: &str) -> Value {
        get(&self.http, &format!("{}/v1/runs/{id}", self.base)).await
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let v: Value = res.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {v}");
        v
    }

    async fn wait(
        &self,
        id: &str,
        what: &str,
        within: Duration,
        machines: &[&Machine],
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let r = self.run(id).await;
            if done(&r) {
                return r;
            }
            if Instant::now() > deadline {
                let consoles: String = machines
                    .iter()
                    .map(|m| {
                        format!(
                            "\n--- {} BMC sets: {:?}\n--- {} console:\n{}",
                            m.name,
                            m.sets(),
                            m.name,
                            m.serial_console()
                        )
                    })
                    .collect();
                panic!(
                    "{what}: not within {within:?}: {r:#}\nserver log:\n{}{consoles}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Index of the first line in `sets` at or after `from` that starts with `prefix`.
fn find_from(sets: &[String], from: usize, prefix: &str) -> Option<usize> {
    sets.iter()
        .skip(from)
        .position(|l| l.starts_with(prefix))
        .map(|i| i + from)
}

#[tokio::test(flavor = "multi_thread")]
async fn provision_two_hosts_through_their_bmcs_with_a_crash_a_rollback_and_a_host_that_never_calls_back()
 {
    if let Some(reason) = missing(&["ipmi_sim"]) {
        return skip_or_fail("provision_e2e", &reason);
    }
    let image = node_image();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    design_repo(
        &dir.join("design"),
        &fill_design(include_str!("provision_e2e.design.yaml"), &image),
    );
    stage_node_image(&image, &dir.join("assets"));

    let net = BootNet::new(&["tap0", "tap1", "tap2"]);
    let vm = |tap, mac, uefi| Vm {
        tap,
        mac,
        uefi,
        serial: None,
        disk: None,
        plugged: true,
    };
    let a = Machine::start(
        &net,
        "vm-a",
        6231,
        Vm {
            serial: Some("LAB-A-0001"),
            disk: Some(64 << 20),
            ..vm("tap0", "52:54:00:77:00:31", false)
        },
    );
    let b = Machine::start(&net, "vm-b", 6232, vm("tap1", "52:54:00:77:00:32", true));
    let c = Machine::start(
        &net,
        "vm-c",
        6233,
        Vm {
            plugged: false,
            ..vm("tap2", "52:54:00:77:00:33", false)
        },
    );

    let mut lab = Lab {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        base: format!("http://{}:7300", net.api),
        logs: vec![dir.join("server-1.log")],
    };
    let mut srv = server(&net, dir, &lab.logs[0]);
    lab.wait_up().await;
    let t0 = Instant::now();

    let ab = lab
        .post(
            "/v1/runs",
            json!({"workflow": "provision", "targets": ["vm-a", "vm-b"],
                   "input": {"callback_timeout": "10m"}}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cc = lab
        .post(
            "/v1/runs",
            json!({"workflow": "provision", "targets": ["vm-c"],
                   "input": {"callback_timeout": "15s"}}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Both VMs are booting when Lariat dies.
    let waiting = |r: &Value| {
        ["vm-a", "vm-b"]
            .iter()
            .all(|h| item(r, "await_callback", h)["status"] == "waiting")
    };
    lab.wait(
        &ab,
        "await_callback waits for vm-a and vm-b",
        Duration::from_secs(120),
        &[&a, &b],
        waiting,
    )
    .await;
    let before = lab.run(&ab).await;
    for h in ["vm-a", "vm-b"] {
        assert_eq!(
            item(&before, "power_off", h)["output"]["was"],
            "on",
            "{before:#}"
        );
        assert_eq!(item(&before, "boot", h)["output"]["power"], "on");
    }
    // Kill Lariat once both nodes run their ramdisk: past the network boot, which a
    // dead boot server would only stall, and about to post their facts, which they retry
    // until Lariat is back. The wait survives in the database.
    let deadline = Instant::now() + Duration::from_secs(300);
    while ![&a, &b]
        .iter()
        .all(|m| m.serial_console().contains("lariat-node:"))
    {
        assert!(
            Instant::now() < deadline,
            "the nodes never reached their ramdisk:\n{}\n--- vm-a:\n{}\n--- vm-b:\n{}",
            lab.log(),
            a.serial_console(),
            b.serial_console()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    srv.0.kill().unwrap(); // SIGKILL
    srv.0.wait().unwrap();
    // Down long enough for a node's POST to fail and be retried.
    tokio::time::sleep(Duration::from_secs(3)).await;
    lab.logs.push(dir.join("server-2.log"));
    srv = server(&net, dir, &lab.logs[1]);
    lab.wait_up().await;

    let done = lab
        .wait(
            &ab,
            "provision of vm-a and vm-b",
            Duration::from_secs(420),
            &[&a, &b],
            |r| r["status"] != "running",
        )
        .await;
    assert_eq!(done["status"], "succeeded", "{done:#}\n{}", lab.log());
    let provisioned = t0.elapsed();
    // The slower node (vm-b, OVMF; vm-a may have posted before the kill) reported to the
    // restarted process, after retrying through the outage.
    let second = std::fs::read_to_string(&lab.logs[1]).unwrap_or_default();
    assert!(
        second
            .lines()
            .any(|l| l.contains("node reported") && l.contains("vm-b")),
        "vm-b did not report to the restarted server:\n{second}"
    );
    assert_eq!(
        step(&done, "stage_assets")["output"]["assets"][0]["status"],
        "present"
    );
    for (m, mac) in [(&a, "52:54:00:77:00:31"), (&b, "52:54:00:77:00:32")] {
        let h = m.name;
        let cb = &item(&done, "await_callback", h)["output"];
        assert_eq!(cb["state"], "installed", "{cb}");
        assert!(
            cb["facts"]["macs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == mac),
            "{h}: {cb}"
        );
        // The wait outlived the crash: one attempt, and the node called back to the new process.
        assert_eq!(item(&done, "await_callback", h)["attempt"], 1, "{done:#}");
        let sets = m.sets();
        let off = find_from(&sets, 0, "set power 0").unwrap_or_else(|| panic!("{h}: {sets:?}"));
        let pxe = find_from(&sets, off, "set boot pxe").unwrap_or_else(|| panic!("{h}: {sets:?}"));
        find_from(&sets, pxe, "set power 1").unwrap_or_else(|| panic!("{h}: {sets:?}"));
    }
    let checked = |h: &str| item(&done, "verify", h)["output"]["checked"].clone();
    assert_eq!(
        checked("vm-a"),
        json!(["macs", "serial", "memory", "disks"])
    );
    assert_eq!(checked("vm-b"), json!(["macs", "memory"]));
    // The inventory of a host provisioned through its BMC: the power its boot step read
    // back from ipmi_sim, the facts its node reported, the run it was built by, no drift.
    let inv = get(&lab.http, &format!("{}/v1/inventory/hosts/vm-a", lab.base)).await;
    assert_eq!(inv["state"], "provisioned", "{inv:#}");
    assert_eq!(inv["power"]["state"], "on", "{inv:#}");
    assert_eq!(inv["provisioned"]["run"], json!(ab), "{inv:#}");
    assert!(
        inv["facts"]["facts"]["macs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "52:54:00:77:00:31"),
        "{inv:#}"
    );
    assert_eq!(
        inv["drift"],
        json!([]),
        "verified against the design it was built from: {inv:#}"
    );

    // Roll the provision back: boot is undone by a power off, set_pxe by disk, persistent.
    let before_rollback = a.sets().len();
    lab.post(&format!("/v1/runs/{ab}/rollback"), json!({}))
        .await;
    let back = lab
        .wait(&ab, "rollback", Duration::from_secs(120), &[&a, &b], |r| {
            !matches!(r["status"].as_str(), Some("rolling_back" | "succeeded"))
        })
        .await;
    assert_eq!(back["status"], "rolled_back", "{back:#}\n{}", lab.log());
    let inv = get(&lab.http, &format!("{}/v1/inventory/hosts/vm-b", lab.base)).await;
    assert_eq!(inv["state"], "failed", "a rolled-back provision: {inv:#}");
    assert!(
        inv["reason"].as_str().unwrap_or("").contains("rolled_back"),
        "{inv:#}"
    );
    for m in [&a, &b] {
        assert_eq!(m.state("power"), "0", "{}", m.name);
        assert_eq!(
            m.state("boot"),
            "default",
            "{}: boot device after rollback",
            m.name
        );
        let sets = &m.sets()[before_rollback.min(m.sets().len())..];
        let off = find_from(sets, 0, "set power 0");
        let disk = find_from(sets, 0, "set boot default");
        assert!(
            matches!((off, disk), (Some(o), Some(d)) if o < d),
            "{}: power off, then boot from disk: {sets:?}",
            m.name
        );
    }

    // vm-c never calls back: two attempts (the second after a power cycle), then failed.
    let failed = lab
        .wait(
            &cc,
            "vm-c's callback times out twice",
            Duration::from_secs(180),
            &[&c],
            |r| r["status"] != "running",
        )
        .await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    let wait_c = item(&failed, "await_callback", "vm-c");
    assert_eq!(wait_c["status"], "failed", "{failed:#}");
    assert_eq!(wait_c["attempt"], 2, "{failed:#}");
    let inv = get(&lab.http, &format!("{}/v1/inventory/hosts/vm-c", lab.base)).await;
    assert_eq!(inv["state"], "failed", "{inv:#}");
    assert!(
        inv["reason"]
            .as_str()
            .unwrap_or("")
            .contains("step await_callback"),
        "{inv:#}"
    );
    let ons = |m: &Machine| m.sets().iter().filter(|l| *l == "set power 1").count();
    assert_eq!(
        ons(&c),
        2,
        "boot, then the retry's power cycle: {:?}",
        c.sets()
    );

    // The operator fixes the host, and retries the step with a longer wait.
    c.plug();
    lab.post(
        &format!("/v1/runs/{cc}/steps/await_callback/retry"),
        json!({"input": {"timeout": "10m"}}),
    )
    .await;
    let fixed = lab
        .wait(
            &cc,
            "vm-c provisioned after the retry",
            Duration::from_secs(300),
            &[&c],
            |r| {
                !matches!(r["status"].as_str(), Some("running"))
                    && item(r, "verify", "vm-c")["status"] != "pending"
            },
        )
        .await;
    assert_eq!(fixed["status"], "succeeded", "{fixed:#}\n{}", lab.log());
    println!(
        "submit to succeeded: vm-a + vm-b {:.1} s (with a SIGKILL and restart); vm-c after two timeouts and the operator's retry {:.1} s",
        provisioned.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(item(&fixed, "await_callback", "vm-c")["attempt"], 3);
    assert_eq!(ons(&c), 3, "{:?}", c.sets());
    assert_eq!(
        item(&fixed, "verify", "vm-c")["output"]["checked"],
        json!(["macs", "memory"])
    );
    drop(srv);
}

/// `lariat server` on the test's host as the central node only (`--local-sites none`):
/// it serves no boot traffic. Answers its URL once it listens.
async fn central_node(dir: &Path, log: &Path) -> (Proc, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_lariat"))
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--durability",
            "normal",
            "--insecure-no-auth",
            "--local-sites",
            "none",
        ])
        .arg("--db")
        .arg(dir.join("central.db"))
        .arg("--design-repo")
        .arg(dir.join("design"))
        .env("LARIAT_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("lariat starts");
    let proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(url) = text.lines().find_map(api_support::listening_url) {
            return (proc, url);
        }
        assert!(
            Instant::now() < deadline,
            "the centre never listened:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `lariat agent` for site `lab` in the namespace: its API on 0.0.0.0:7300, DHCP, TFTP
/// and HTTP boot on the bridge, dialling the centre at `central`.
fn site_agent(net: &BootNet, dir: &Path, central: &str, token: &str, log: &Path) -> Proc {
    let child = net
        .exec(env!("CARGO_BIN_EXE_lariat"))
        .args([
            "agent",
            "--site",
            "lab",
            "--central",
            central,
            "--listen",
            "0.0.0.0:7300",
            "--durability",
            "normal",
            "--insecure-no-auth",
            "--sync-every",
            "300ms",
        ])
        .arg("--db")
        .arg(dir.join("agent.db"))
        .args(boot_services(dir))
        .env("LARIAT_AGENT_TOKEN", token)
        .env(PASSWORD_ENV, "password")
        .env("LARIAT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("lariat agent starts");
    Proc(child)
}

/// The centre's health row of site `lab`.
async fn lab_site(http: &reqwest::Client, centre: &str) -> Value {
    let sites = get(http, &format!("{centre}/v1/sites")).await;
    sites["sites"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["site"] == "lab"))
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn provision_through_a_site_agent_whose_link_is_cut_after_power_on() {
    if let Some(reason) = missing(&["ipmi_sim"]) {
        return skip_or_fail("provision_e2e", &reason);
    }
    let image = node_image();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    design_repo(
        &dir.join("design"),
        &fill_design(include_str!("provision_e2e.design.yaml"), &image),
    );
    stage_node_image(&image, &dir.join("assets"));
    let net = BootNet::new(&["tap0"]);
    let a = Machine::start(
        &net,
        "vm-a",
        6231,
        Vm {
            tap: "tap0",
            mac: "52:54:00:77:00:31",
            uefi: false,
            serial: Some("LAB-A-0001"),
            disk: Some(64 << 20),
            plugged: true,
        },
    );

    let (central_log, agent_log) = (dir.join("central.log"), dir.join("agent.log"));
    let (_centre, centre_url) = central_node(dir, &central_log).await;
    let token = link_support::site_token(&dir.join("central.db"), "lab");
    // The agent reaches the centre through a proxy on the host's end of the veth pair.
    let link = link_support::Link::on(&format!("{}:0", net.host_address()), &centre_url).await;
    let _agent = site_agent(&net, dir, &link.url(), &token, &agent_log);

    let centre = Lab {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        base: centre_url.clone(),
        logs: vec![central_log.clone(), agent_log.clone()],
    };
    let site = Lab {
        http: centre.http.clone(),
        base: format!("http://{}:7300", net.api),
        logs: vec![agent_log.clone(), central_log.clone()],
    };
    site.wait_up().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while lab_site(&centre.http, &centre.base).await["connected"] != true {
        assert!(
            Instant::now() < deadline,
            "the agent never connected:\n{}",
            centre.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let run = centre
        .post(
            "/v1/runs",
            json!({"workflow": "provision", "targets": ["vm-a"],
                   "input": {"callback_timeout": "10m"}}),
        )
        .await;
    assert_eq!(
        run["owner"], "agent-lab",
        "the site's agent owns the run: {run:#}"
    );
    let id = run["id"].as_str().unwrap().to_string();

    // Powered on: the link goes down before the node has even fetched iPXE.
    centre
        .wait(
            &id,
            "vm-a powered on, as the centre sees it",
            Duration::from_secs(120),
            &[&a],
            |r| item(r, "boot", "vm-a")["status"] == "succeeded",
        )
        .await;
    link.cut();
    let done = site
        .wait(
            &id,
            "the run succeeds at the site, cut off from the centre",
            Duration::from_secs(300),
            &[&a],
            |r| r["status"] == "succeeded" || r["status"] == "failed",
        )
        .await;
    assert_eq!(done["status"], "succeeded", "{done:#}\n{}", site.log());
    let cb = &item(&done, "await_callback", "vm-a")["output"];
    assert_eq!(cb["state"], "installed", "{cb}");
    assert!(
        cb["facts"]["macs"]
            .as_array()
            .is_some_and(|m| m.iter().any(|v| v == "52:54:00:77:00:31")),
        "the callback of vm-a reached the agent: {cb}"
    );
    assert!(
        std::fs::read_to_string(&agent_log)
            .unwrap_or_default()
            .contains("node reported"),
        "the agent took the callback"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab_site(&centre.http, &centre.base).await["connected"] != false {
        assert!(
            Instant::now() < deadline,
            "the centre never saw the site go"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stale = centre.run(&id).await;
    assert_ne!(
        stale["status"], "succeeded",
        "nothing crossed a cut link: {stale:#}"
    );

    link.restore();
    let there = centre
        .wait(
            &id,
            "the run shows succeeded at the centre after the link returns",
            Duration::from_secs(60),
            &[&a],
            |r| r["status"] == "succeeded",
        )
        .await;
    for s in ["power_off", "set_pxe", "boot", "await_callback", "verify"] {
        assert_eq!(
            step(&there, s)["status"],
            step(&done, s)["status"],
            "step {s} at the centre and at the site"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = lab_site(&centre.http, &centre.base).await;
        if health["dhcp_leases"].as_i64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the site's DHCP lease never showed at the centre: {health:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
