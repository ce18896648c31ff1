//! The node ramdisk built by `images/build-node-image.sh` boots a real Debian kernel in
//! QEMU (TCG), gets a lease from QEMU's user network, posts its facts to a callback
//! served by this test, retries when the callback answers 409, and powers itself off.
//!
//! Needs qemu-system-x86_64 and the build script's tools (apt-get, dpkg-deb, kmod, cpio,
//! gzip) plus the Debian archive for `apt-get download`. Without them the tests skip,
//! unless LARIAT_REQUIRE_PRIVILEGED=1, where a skip is a failure.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const TOOLS: &[&str] = &[
    "qemu-system-x86_64",
    "bash",
    "apt-get",
    "apt-cache",
    "dpkg-deb",
    "tar",
    "depmod",
    "modprobe",
    "cpio",
    "gzip",
    "sha256sum",
];
const MAC: &str = "52:54:00:12:34:56";
const TOKEN: &str = "nt_test";
const DISK_BYTES: u64 = 64 * 1024 * 1024;
/// Brand string with the characters a hand-written JSON encoder gets wrong.
const CPU_MODEL: &str = r#"Lariat "odd" \cpu\ model"#;
const SERIAL: &str = "SN-0001";
const PRODUCT: &str = "Lariat Test Node";

/// Skips the calling test, or fails it when CI demands the capability.
fn skip(reason: &str) {
    if std::env::var("LARIAT_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("node image test cannot run (LARIAT_REQUIRE_PRIVILEGED=1): {reason}");
    }
    eprintln!("SKIP node image test: {reason}");
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

struct Image {
    dir: PathBuf,
    /// The build script's stdout of the run that produced (or confirmed) the image.
    first_build_log: String,
}

fn run_build(out: &Path) -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/build-node-image.sh");
    let started = Instant::now();
    let res = Command::new("bash")
        .arg(&script)
        .arg(out)
        .arg(out.join("cache"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&res.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&res.stderr);
    if !res.status.success() {
        return Err(format!(
            "{} failed ({}):\n{stdout}\n{stderr}",
            script.display(),
            res.status
        ));
    }
    eprintln!(
        "build-node-image.sh took {:.1} s:\n{stdout}",
        started.elapsed().as_secs_f64()
    );
    Ok(stdout)
}

/// Builds the image once per test process into the target dir, so later runs reuse it.
fn image() -> Option<&'static Image> {
    static IMAGE: OnceLock<Result<Image, String>> = OnceLock::new();
    let built = IMAGE.get_or_init(|| {
        let missing: Vec<&str> = TOOLS.iter().copied().filter(|t| !on_path(t)).collect();
        if !missing.is_empty() {
            return Err(format!("missing tools: {}", missing.join(", ")));
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("node-image");
        let log = run_build(&dir).map_err(|e| format!("BUILD FAILED: {e}"))?;
        Ok(Image {
            dir,
            first_build_log: log,
        })
    });
    match built {
        Ok(image) => Some(image),
        // A broken build is a failure even outside CI: the tools were there.
        Err(e) if e.starts_with("BUILD FAILED") => panic!("{e}"),
        Err(e) => {
            skip(e);
            None
        }
    }
}

fn sha256_hex(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Entry names and contents of a newc ("070701") cpio archive.
fn newc_entries(archive: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
    let mut entries = Vec::new();
    let mut at = 0usize;
    let field = |hdr: &[u8], i: usize| -> usize {
        let s = std::str::from_utf8(&hdr[6 + i * 8..6 + (i + 1) * 8]).expect("ascii header");
        usize::from_str_radix(s, 16).expect("hex header field")
    };
    let pad4 = |n: usize| (n + 3) & !3;
    while at + 110 <= archive.len() {
        let hdr = &archive[at..at + 110];
        assert_eq!(&hdr[..6], b"070701", "not a newc cpio header at byte {at}");
        let mode = field(hdr, 1) as u32;
        let filesize = field(hdr, 6);
        let namesize = field(hdr, 11);
        let name_end = at + 110 + namesize - 1;
        let name = String::from_utf8_lossy(&archive[at + 110..name_end]).into_owned();
        let data_at = pad4(at + 110 + namesize);
        if name == "TRAILER!!!" {
            break;
        }
        entries.push((name, mode, archive[data_at..data_at + filesize].to_vec()));
        at = pad4(data_at + filesize);
    }
    entries
}

#[test]
fn build_is_idempotent_and_initrd_holds_init_busybox_and_nic_modules() {
    let Some(image) = image() else { return };
    let before = fs::read_to_string(image.dir.join("SHA256SUMS")).expect("SHA256SUMS written");

    // The recorded sums are the files' real sums.
    for line in before.lines() {
        let (sum, name) = line.split_once("  ").expect("sha256sum line");
        assert_eq!(sha256_hex(&image.dir.join(name)), sum, "{name}");
    }
    assert!(before.contains("vmlinuz") && before.contains("initrd.img"));

    let again = run_build(&image.dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        again.contains("up to date"),
        "second run rebuilt: {again}\n(first: {})",
        image.first_build_log
    );
    assert_eq!(
        fs::read_to_string(image.dir.join("SHA256SUMS")).expect("SHA256SUMS"),
        before
    );

    let gz = Command::new("gzip")
        .arg("-dc")
        .arg(image.dir.join("initrd.img"))
        .output()
        .expect("gzip runs");
    assert!(gz.status.success(), "initrd.img is not gzip");
    let entries = newc_entries(&gz.stdout);
    let by_name: HashMap<&str, (u32, &[u8])> = entries
        .iter()
        .map(|(n, m, d)| (n.as_str(), (*m, d.as_slice())))
        .collect();

    let (init_mode, init) = by_name.get("init").expect("/init in the initrd");
    assert!(init.starts_with(b"#!/bin/sh"), "/init is a shell script");
    assert_ne!(init_mode & 0o111, 0, "/init is executable");
    let (_, busybox) = by_name.get("bin/busybox").expect("busybox in the initrd");
    assert!(busybox.starts_with(b"\x7fELF"), "busybox is an ELF binary");
    for applet in [
        "bin/sh",
        "bin/udhcpc",
        "bin/wget",
        "bin/insmod",
        "bin/poweroff",
    ] {
        assert!(by_name.contains_key(applet), "{applet} missing");
    }

    let order_name = entries
        .iter()
        .map(|(n, _, _)| n.as_str())
        .find(|n| n.ends_with("/load-order"))
        .expect("module load-order in the initrd");
    let modules_dir = order_name.trim_end_matches("load-order");
    let order = String::from_utf8_lossy(by_name[order_name].1).into_owned();
    let position = |m: &str| {
        order
            .lines()
            .position(|l| l.ends_with(&format!("/{m}.ko")))
            .unwrap_or_else(|| panic!("{m}.ko not in load-order:\n{order}"))
    };
    // Dependencies load before the modules that need them.
    assert!(position("virtio") < position("virtio_pci"));
    assert!(position("virtio_ring") < position("virtio_net"));
    assert!(position("net_failover") < position("virtio_net"));
    position("e1000");
    position("virtio_blk");
    for line in order.lines() {
        let (_, ko) = by_name
            .get(format!("{modules_dir}{line}").as_str())
            .unwrap_or_else(|| panic!("{line} listed but not in the initrd"));
        assert!(ko.starts_with(b"\x7fELF"), "{line} is not an ELF object");
    }
}

/// One request seen by the callback server.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    status: u16,
    at: Instant,
}

/// Reads one HTTP/1.1 request; `status` and `at` are filled in by the caller.
fn read_request(stream: &mut TcpStream) -> std::io::Result<Seen> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len.min(1 << 20)];
    reader.read_exact(&mut body)?;
    Ok(Seen {
        method,
        path,
        headers,
        body,
        status: 0,
        at: Instant::now(),
    })
}

/// A callback endpoint on 127.0.0.1 (the guest sees it at 10.0.2.2): the first POST gets
/// 409, as when Lariat's step is not waiting yet, and later ones 200.
fn callback_server() -> (u16, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind callback server");
    let port = listener.local_addr().expect("local addr").port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut answered = 0usize;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Ok(mut seen) = read_request(&mut stream) else {
                continue;
            };
            answered += 1;
            let status = if answered == 1 { 409 } else { 200 };
            let reason = if status == 409 { "Conflict" } else { "OK" };
            let reply = if status == 409 {
                r#"{"error":"step not waiting"}"#
            } else {
                "{}"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
            seen.status = status;
            seen.at = Instant::now();
            if tx.send(seen).is_err() {
                break;
            }
        }
    });
    (port, rx)
}

/// QEMU, killed when the test ends however it ends.
struct Vm {
    child: Child,
    console: PathBuf,
}

impl Vm {
    fn console(&self) -> String {
        fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// Waits up to `limit` for QEMU to exit on its own.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn node_boots_in_qemu_posts_its_facts_and_powers_off() {
    let Some(image) = image() else { return };
    let work = tempfile::tempdir().expect("tempdir");
    let disk = work.path().join("disk.raw");
    // A sparse raw image: QEMU needs no qemu-img for the raw format.
    fs::File::create(&disk)
        .and_then(|f| f.set_len(DISK_BYTES))
        .expect("create disk image");
    let console = work.path().join("console.log");

    let (port, posts) = callback_server();
    let append = format!(
        "console=ttyS0 quiet lariat.callback=http://10.0.2.2:{port}/v1/state \
         lariat.token={TOKEN} lariat.host=node01 lariat.after=poweroff lariat.retry_delay=1"
    );
    let started = Instant::now();
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot"])
        // QEMU option values escape commas only, so quotes and backslashes reach the guest.
        .arg("-cpu")
        .arg(format!("max,model-id={CPU_MODEL}"))
        .arg("-smbios")
        .arg(format!("type=1,serial={SERIAL},product={PRODUCT}"))
        .arg("-kernel")
        .arg(image.dir.join("vmlinuz"))
        .arg("-initrd")
        .arg(image.dir.join("initrd.img"))
        .arg("-append")
        .arg(&append)
        .arg("-nic")
        .arg(format!("user,model=virtio-net-pci,mac={MAC}"))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .stdin(Stdio::null())
        .stdout(fs::File::create(&console).expect("console log"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start qemu-system-x86_64");
    let mut vm = Vm { child, console };

    let limit = Duration::from_secs(150);
    let mut seen = Vec::new();
    while !seen.iter().any(|s: &Seen| s.status == 200) {
        let left = limit.saturating_sub(started.elapsed());
        match posts.recv_timeout(left) {
            Ok(s) => seen.push(s),
            Err(_) => panic!(
                "no accepted POST within {limit:?} (saw {} requests); console:\n{}",
                seen.len(),
                vm.console()
            ),
        }
    }
    let first = &seen[0];
    let accepted = seen.last().expect("at least one request");
    println!(
        "node image boot: QEMU start -> first POST {:.1} s, -> accepted POST {:.1} s (TCG)",
        first.at.duration_since(started).as_secs_f64(),
        accepted.at.duration_since(started).as_secs_f64()
    );

    assert_eq!(first.status, 409, "the first POST is answered 409");
    assert_eq!(seen.len(), 2, "one retry after the 409: {seen:?}");
    for s in &seen {
        assert_eq!(s.method, "POST");
        assert_eq!(s.path, "/v1/state");
        assert_eq!(
            s.headers.get("authorization").map(String::as_str),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(s.body, first.body, "every attempt posts the same facts");
    }

    let console_text = vm.console();
    let body: serde_json::Value = serde_json::from_slice(&accepted.body).unwrap_or_else(|e| {
        panic!(
            "callback body is not JSON ({e}): {}\nconsole:\n{console_text}",
            String::from_utf8_lossy(&accepted.body)
        )
    });
    assert_eq!(body["state"], "installed", "{body}");
    let facts = &body["facts"];
    let macs: Vec<&str> = facts["macs"]
        .as_array()
        .unwrap_or_else(|| panic!("facts.macs: {body}"))
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    assert!(macs.contains(&MAC), "{MAC} not in {macs:?}");
    assert_eq!(facts["serial"], SERIAL, "{body}");
    assert_eq!(facts["product"], PRODUCT, "{body}");
    assert_eq!(facts["cpu_model"], CPU_MODEL, "{body}");
    let cpus = facts["cpus"].as_u64().unwrap_or(0);
    assert!(cpus >= 1, "cpus {cpus}: {body}");
    let memory = facts["memory_mib"].as_u64().unwrap_or(0);
    assert!((400..=512).contains(&memory), "memory_mib {memory}: {body}");
    let disks = facts["disks"]
        .as_array()
        .unwrap_or_else(|| panic!("facts.disks: {body}"));
    assert!(
        disks
            .iter()
            .any(|d| d["name"] == "vda" && d["size_bytes"].as_u64() == Some(DISK_BYTES)),
        "no vda of {DISK_BYTES} bytes in {disks:?}"
    );
    // The token is a credential: the console shows that it is set, never its value.
    assert!(!console_text.contains(TOKEN), "token leaked to the console");

    let status = vm.wait_exit(Duration::from_secs(30)).unwrap_or_else(|| {
        panic!(
            "QEMU still running 30 s after the POST (no poweroff); console:\n{}",
            vm.console()
        )
    });
    assert!(status.success(), "QEMU exit {status}");
    println!(
        "node image: QEMU exited {:.1} s after start",
        started.elapsed().as_secs_f64()
    );
}
