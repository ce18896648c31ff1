//! Network namespaces for tests against real peers, deleted in Drop.
//!
//! Each namespace gets a unique name (prefix, pid, counter) so tests run in parallel.
//! `Netns::run_in` runs a closure on a fresh thread that has entered the namespace:
//! sockets made there stay in that namespace wherever they are used later, which is how
//! an in-process server listens inside a namespace. Shared by the DHCP and TFTP tests.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether privileged tests can run here. Without root or the `ip` tool they skip with a
/// message, unless `LARIAT_REQUIRE_PRIVILEGED=1`, which makes the skip a failure.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let why = if !root {
        Some("not root".to_string())
    } else if !have("ip") {
        Some("the `ip` tool (iproute2) is missing".to_string())
    } else {
        None
    };
    skip_unless(test, why)
}

/// Whether `bin` is on PATH (or an absolute path that exists).
pub fn have(bin: &str) -> bool {
    if bin.contains('/') {
        return std::path::Path::new(bin).exists();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

/// Like [`privileged`] for a list of peer programs.
pub fn peers(test: &str, bins: &[&str]) -> bool {
    let missing: Vec<&str> = bins.iter().copied().filter(|b| !have(b)).collect();
    skip_unless(
        test,
        (!missing.is_empty()).then(|| format!("missing peer program(s): {}", missing.join(", "))),
    )
}

fn skip_unless(test: &str, why: Option<String>) -> bool {
    match why {
        None => true,
        Some(why) => {
            if std::env::var("LARIAT_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
                panic!("{test}: cannot run: {why} (LARIAT_REQUIRE_PRIVILEGED=1)");
            }
            eprintln!("SKIP {test}: {why}");
            false
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One network namespace.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A new namespace with `lo` up.
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("lt-{tag}-{}-{n}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS...`, asserting success.
    pub fn ip(&self, args: &[&str]) {
        let mut v = vec!["-n", &self.name];
        v.extend_from_slice(args);
        ip(&v);
    }

    /// A command run inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.name, program])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Run `f` on a thread that has entered this namespace; sockets it makes live here.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let fd = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: a valid namespace fd; setns changes only this thread.
            let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("namespace thread panicked")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth ends and bridges inside it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Two namespaces joined by a veth pair: `srv` (`veth-s`) and `cli` (`veth-c`).
pub struct Pair {
    pub cli: Netns,
    pub srv: Netns,
}

impl Pair {
    /// `srv_addr` (CIDR) goes on veth-s; veth-c gets `cli_mac` and, if given, `cli_addr`.
    pub fn new(tag: &str, srv_addr: &str, cli_addr: Option<&str>, cli_mac: &str) -> Pair {
        let srv = Netns::new(&format!("{tag}s"));
        let cli = Netns::new(&format!("{tag}c"));
        ip(&[
            "link", "add", "veth-s", "netns", &srv.name, "type", "veth", "peer", "name", "veth-c",
            "netns", &cli.name,
        ]);
        srv.ip(&["addr", "add", srv_addr, "dev", "veth-s"]);
        srv.ip(&["link", "set", "veth-s", "up"]);
        cli.ip(&["link", "set", "veth-c", "address", cli_mac]);
        if let Some(a) = cli_addr {
            cli.ip(&["addr", "add", a, "dev", "veth-c"]);
        }
        cli.ip(&["link", "set", "veth-c", "up"]);
        Pair { cli, srv }
    }
}
