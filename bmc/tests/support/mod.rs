//! Real peers for the BMC tests: an `ipmi_sim` (OpenIPMI) LAN BMC whose chassis_control hook
//! keeps power and boot device in state files, and `sushy-emulator --fake` (Redfish).
//! Each peer lives in its own temp dir on its own port and is killed in Drop.
#![allow(dead_code)]

use std::io::Read;
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lariat_bmc::{CredentialRef, IpmiConfig, RedfishConfig, Timing};
use tempfile::TempDir;

/// Skips (returns false) when a peer program is missing, unless LARIAT_REQUIRE_PRIVILEGED=1,
/// where a missing peer fails the test.
pub fn have(program: &str) -> bool {
    let found = if program.contains('/') {
        Path::new(program).exists()
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
            .unwrap_or(false)
    };
    if !found {
        if std::env::var("LARIAT_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            panic!("{program} is required (LARIAT_REQUIRE_PRIVILEGED=1) but not found");
        }
        eprintln!("SKIP: {program} not found");
    }
    found
}

/// A free UDP port on loopback (the kernel picks it; we release it for the peer).
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    s.local_addr().expect("addr").port()
}

pub fn free_tcp_port() -> u16 {
    let s = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    s.local_addr().expect("addr").port()
}

/// The password env var the tests point their credential references at.
pub const PASSWORD_ENV: &str = "LARIAT_BMC_TEST_PASSWORD";
pub const WRONG_PASSWORD_ENV: &str = "LARIAT_BMC_TEST_WRONG_PASSWORD";

pub fn set_password_env() {
    // SAFETY: every test sets the same two values; no test reads them while they change.
    unsafe {
        std::env::set_var(PASSWORD_ENV, "password");
        std::env::set_var(WRONG_PASSWORD_ENV, "not-the-password");
    }
}

/// chassis_control hook: `<hook> <dir> <mc> get power|boot` prints `power:0|1`, `boot:<dev>`;
/// `set power 0|1 | boot <dev> | shutdown 1 | reset 1 | identify i f` changes state files.
/// Every call goes to events.log. If `<dir>/ignore-shutdown` exists, soft shutdown does
/// nothing (an OS that ignores ACPI). If `<dir>/host-cmd` exists, power on starts that
/// command as the host (detached; its pid in `<dir>/host.pid`) and power off stops it and
/// waits until it is gone, so an off-then-on starts a fresh one (a QEMU VM, say).
const HOOK: &str = r#"#!/bin/sh
dir=$1; op=$3; shift 3
[ -f "$dir/power" ] || echo 0 > "$dir/power"
[ -f "$dir/boot" ] || echo default > "$dir/boot"
echo "$op $*" >> "$dir/events.log"
alive() {
  [ -f "$dir/host.pid" ] || return 1
  pid=$(cat "$dir/host.pid")
  [ -d "/proc/$pid" ] && ! grep -q ') Z ' "/proc/$pid/stat" 2>/dev/null
}
case "$op" in
  get) for p in "$@"; do
         case "$p" in
           power) echo "power:$(cat "$dir/power")" ;;
           boot) echo "boot:$(cat "$dir/boot")" ;;
           *) echo "Invalid parameter: $p"; exit 1 ;;
         esac
       done ;;
  set) while [ $# -gt 0 ]; do
         p=$1; v=$2; shift 2
         case "$p" in
           power|shutdown)
             if [ "$p" = shutdown ]; then
               [ -f "$dir/ignore-shutdown" ] && continue
               v=0
             fi
             echo "$v" > "$dir/power"
             if [ "$v" = 1 ]; then
               if [ -f "$dir/host-cmd" ] && ! alive; then
                 setsid sh -c "exec $(cat "$dir/host-cmd")" </dev/null >>"$dir/host.out" 2>&1 &
                 echo $! > "$dir/host.pid"
               fi
             elif alive; then
               kill "$pid" 2>/dev/null
               for _ in $(seq 1 50); do alive || break; sleep 0.1; done
             fi ;;
           boot) echo "$v" > "$dir/boot" ;;
           reset) ;;
           identify) shift ;;
           *) echo "Invalid parameter: $p"; exit 1 ;;
         esac
       done ;;
  check) exit 1 ;;
  *) echo "Unknown operation: $op"; exit 1 ;;
esac
exit 0
"#;

const EMU: &str = "mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
";

/// One ipmi_sim BMC on 127.0.0.1:`port`.
pub struct IpmiSim {
    pub port: u16,
    pub dir: TempDir,
    child: Child,
}

impl IpmiSim {
    /// None when ipmi_sim is not installed (and the test should skip).
    pub fn start() -> Option<IpmiSim> {
        if !have("ipmi_sim") {
            return None;
        }
        Some(Self::start_on(free_udp_port()))
    }

    pub fn start_on(port: u16) -> IpmiSim {
        Self::start_via(port, &[])
    }

    /// Started through `launcher` (e.g. `["ip", "netns", "exec", NS]`, so that it and the
    /// hosts its hook starts live in that namespace), on 127.0.0.1:`port` there.
    pub fn start_via(port: u16, launcher: &[&str]) -> IpmiSim {
        let dir = tempfile::Builder::new()
            .prefix("lariat-bmc-sim-")
            .tempdir()
            .expect("tempdir");
        let var = dir.path().join("var");
        std::fs::create_dir_all(&var).expect("var");
        std::fs::create_dir_all(dir.path().join("state")).expect("state");
        let hook = dir.path().join("hook.sh");
        std::fs::write(&hook, HOOK).expect("hook");
        set_mode(&hook, 0o755);
        let conf = format!(
            r#"name "lariat-test-{port}"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{hook} {var} 0x20"
  user 1 true "" "test" user 10 none md2 md5 straight
  user 2 true "admin" "password" admin 10 none md2 md5 straight
"#,
            hook = hook.display(),
            var = var.display()
        );
        std::fs::write(dir.path().join("lan.conf"), conf).expect("lan.conf");
        std::fs::write(dir.path().join("bmc.emu"), EMU).expect("emu");
        let log = std::fs::File::create(dir.path().join("ipmi_sim.log")).expect("log");
        let mut cmd = match launcher.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg("ipmi_sim");
                c
            }
            None => Command::new("ipmi_sim"),
        };
        let child = cmd
            .arg("-n")
            .arg("-c")
            .arg(dir.path().join("lan.conf"))
            .arg("-f")
            .arg(dir.path().join("bmc.emu"))
            .arg("-s")
            .arg(dir.path().join("state"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn ipmi_sim");
        let sim = IpmiSim { port, dir, child };
        sim.wait_listening();
        sim
    }

    fn wait_listening(&self) {
        let needle = format!(":{:04X} ", self.port);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let mut udp = String::new();
            // The simulator's own view: right inside another namespace too (a launcher
            // such as `ip netns exec` execs it, keeping the pid).
            if let Ok(mut f) = std::fs::File::open(format!("/proc/{}/net/udp", self.child.id())) {
                let _ = f.read_to_string(&mut udp);
            }
            if udp.lines().any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| format!("{a} ").ends_with(&needle))
            }) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ipmi_sim did not listen on {} within 10 s", self.port);
    }

    pub fn var(&self) -> PathBuf {
        self.dir.path().join("var")
    }

    fn state_file(&self, name: &str) -> String {
        std::fs::read_to_string(self.var().join(name))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// The hook's power state file: "1" on, "0" off, "" never set.
    pub fn power(&self) -> String {
        self.state_file("power")
    }

    /// The hook's boot device file: pxe, default, bios, ...
    pub fn boot(&self) -> String {
        self.state_file("boot")
    }

    /// Every hook call so far, one per line ("set power 1", "get power", ...).
    pub fn events(&self) -> Vec<String> {
        self.state_file("events.log")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The "set ..." hook calls only.
    pub fn sets(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e.starts_with("set "))
            .collect()
    }

    pub fn config(&self, password_env: &str) -> IpmiConfig {
        IpmiConfig {
            address: "127.0.0.1".to_owned(),
            port: self.port,
            username: "admin".to_owned(),
            password: CredentialRef::Env(password_env.to_owned()),
            cipher_suite: 3,
            timing: fast_timing(),
        }
    }

    /// Sessions active on the simulator as ipmitool sees them, minus ipmitool's own.
    /// None when ipmitool is missing.
    pub fn open_sessions_by_ipmitool(&self) -> Option<u32> {
        if !have("ipmitool") {
            return None;
        }
        let out = Command::new("ipmitool")
            .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", "admin", "-E", "session", "info", "active"])
            .env("IPMI_PASSWORD", "password")
            .output()
            .expect("run ipmitool");
        let text = String::from_utf8_lossy(&out.stdout);
        let active: u32 = text
            .lines()
            .find(|l| l.starts_with("active sessions"))
            .and_then(|l| l.rsplit(':').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no session count in ipmitool output: {text}"));
        Some(active - 1)
    }
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn fast_timing() -> Timing {
    Timing {
        command_timeout: Duration::from_millis(500),
        retries: 2,
        confirm_timeout: Duration::from_secs(10),
        poll_interval: Duration::from_millis(100),
        task_timeout: Duration::from_secs(10),
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The sushy-tools virtualenv (`python3 -m venv DIR && DIR/bin/pip install sushy-tools`).
pub fn sushy_venv() -> PathBuf {
    std::env::var_os("LARIAT_SUSHY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/lariat-peers/venv"))
}

/// sushy-emulator in fake mode with one system, `SYSTEM_ID`, powered off (or on).
pub struct Sushy {
    pub port: u16,
    pub dir: TempDir,
    child: Child,
}

pub const SYSTEM_ID: &str = "22222222-0000-0000-0000-000000000001";

impl Sushy {
    pub fn start() -> Option<Sushy> {
        Self::start_with_power("Off")
    }

    pub fn start_with_power(power_state: &str) -> Option<Sushy> {
        let venv = sushy_venv();
        if !have(&venv.join("bin/sushy-emulator").display().to_string()) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("lariat-bmc-sushy-")
            .tempdir()
            .expect("tempdir");
        let port = free_tcp_port();
        // sushy reads basic-auth users from an htpasswd file with bcrypt hashes.
        let htpasswd = Command::new(venv.join("bin/python"))
            .args([
                "-c",
                "import bcrypt;print('admin:'+bcrypt.hashpw(b'password',bcrypt.gensalt(rounds=4)).decode())",
            ])
            .output()
            .expect("python bcrypt");
        assert!(htpasswd.status.success(), "bcrypt: {htpasswd:?}");
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).expect("htpasswd");
        std::fs::create_dir_all(dir.path().join("state")).expect("state");
        let conf = format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'
SUSHY_EMULATOR_LISTEN_PORT = {port}
SUSHY_EMULATOR_FAKE_DRIVER = True
SUSHY_EMULATOR_AUTH_FILE = '{auth}'
SUSHY_EMULATOR_STATE_DIR = '{state}'
SUSHY_EMULATOR_FAKE_SYSTEMS = [
  {{'uuid': '{SYSTEM_ID}', 'name': 'node1', 'power_state': '{power_state}',
    'nics': [{{'mac': '52:54:00:00:00:01', 'ip': '10.77.0.101'}}]}},
]
",
            auth = dir.path().join("htpasswd").display(),
            state = dir.path().join("state").display()
        );
        std::fs::write(dir.path().join("emulator.conf"), conf).expect("conf");
        let log = std::fs::File::create(dir.path().join("sushy.log")).expect("log");
        let child = Command::new(venv.join("bin/sushy-emulator"))
            .arg("--config")
            .arg(dir.path().join("emulator.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn sushy-emulator");
        let sushy = Sushy { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sushy-emulator did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(sushy)
    }

    pub fn config(&self, password_env: &str) -> RedfishConfig {
        RedfishConfig {
            url: format!("http://127.0.0.1:{}", self.port),
            system: None,
            username: "admin".to_owned(),
            password: CredentialRef::Env(password_env.to_owned()),
            insecure_tls: false,
            timing: Timing {
                command_timeout: Duration::from_secs(5),
                retries: 2,
                // the fake driver applies a power change 1-11 s after the request
                confirm_timeout: Duration::from_secs(20),
                poll_interval: Duration::from_millis(250),
                task_timeout: Duration::from_secs(10),
            },
        }
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
