//! The TFTP server against real clients: tftp-hpa's `tftp`, atftp (with windowsize),
//! curl and busybox tftp, on loopback. Each download is compared byte for byte, including
//! a file larger than 65,535 blocks of 512 bytes (block numbers roll over).
//!
//! Needs the Debian packages `tftp-hpa`, `atftp`, `curl`, `busybox` (and `ipxe` for the
//! iPXE directory case). A missing client skips its test with a message, or fails it
//! when `LARIAT_REQUIRE_PRIVILEGED=1`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use lariat_boot::tftp::{DEBIAN_IPXE_DIR, TftpConfig, TftpServer, serve};
use tokio::process::Command;
use tokio::sync::oneshot;

/// 65,535 blocks of 512 bytes is 33,553,920 bytes; this is past it.
const BIG: usize = 34_000_000;

struct Fixture {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    _server: TftpServer,
    _stop: oneshot::Sender<()>,
}

impl Fixture {
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join("out").join(name)
    }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

async fn fixture(ipxe_dir: Option<PathBuf>) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    std::fs::create_dir(dir.path().join("out")).expect("mkdir");
    std::fs::write(root.join("small.bin"), pseudo_random(200_000, 1)).expect("write");
    std::fs::write(root.join("big.bin"), pseudo_random(BIG, 2)).expect("write");
    std::fs::write(root.join("exact.bin"), pseudo_random(512 * 100, 3)).expect("write");
    std::fs::write(
        root.join("text.txt"),
        b"line one\nline two\r\nbare\rcr\n\nend",
    )
    .expect("write");
    let (tx, rx) = oneshot::channel::<()>();
    let server = serve(
        TftpConfig {
            root: Some(root),
            ipxe_dir,
            bind: "127.0.0.1:0".parse().expect("addr"),
            ..TftpConfig::default()
        },
        async {
            let _ = rx.await;
        },
    )
    .await
    .expect("server starts");
    Fixture {
        addr: server.local_addr(),
        dir,
        _server: server,
        _stop: tx,
    }
}

/// Whether `program` is on PATH; if not, skip (or fail under LARIAT_REQUIRE_PRIVILEGED=1).
fn have(program: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()));
    if !found {
        let msg =
            format!("{program} is not installed (Debian package for it: see this file's header)");
        if std::env::var("LARIAT_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            panic!("{msg}");
        }
        eprintln!("SKIP: {msg}");
    }
    found
}

async fn run(program: &str, args: &[&str]) -> Output {
    let started = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(program).args(args).kill_on_drop(true).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} {args:?} took over 120 s"))
    .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    eprintln!(
        "{program} {args:?}: {:?} in {:.2?}",
        out.status,
        started.elapsed()
    );
    out
}

fn assert_same(got: &Path, want: &Path, what: &str) {
    let got_bytes = std::fs::read(got).unwrap_or_else(|e| panic!("{what}: no output file: {e}"));
    let want_bytes = std::fs::read(want).expect("source file");
    assert_eq!(got_bytes.len(), want_bytes.len(), "{what}: length");
    assert!(got_bytes == want_bytes, "{what}: content differs");
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftp_hpa_lock_step_past_block_65535_and_netascii() {
    if !have("tftp") {
        return;
    }
    let f = fixture(None).await;
    let (host, port) = (f.addr.ip().to_string(), f.addr.port().to_string());
    let out = f.out("big");
    let o = run(
        "tftp",
        &[
            "-4",
            "-m",
            "binary",
            &host,
            &port,
            "-c",
            "get",
            "big.bin",
            path(&out),
        ],
    )
    .await;
    ok(&o, "tftp-hpa big.bin");
    assert_same(
        &out,
        &f.root().join("big.bin"),
        "tftp-hpa big.bin (66,407 blocks of 512)",
    );

    // A file of exactly 100 blocks ends with an empty block.
    let out = f.out("exact");
    ok(
        &run(
            "tftp",
            &[
                "-4",
                "-m",
                "binary",
                &host,
                &port,
                "-c",
                "get",
                "exact.bin",
                path(&out),
            ],
        )
        .await,
        "exact",
    );
    assert_same(&out, &f.root().join("exact.bin"), "tftp-hpa exact.bin");

    // netascii: the client turns CR LF back into LF and CR NUL into CR.
    let out = f.out("text");
    ok(
        &run(
            "tftp",
            &[
                "-4",
                "-m",
                "ascii",
                &host,
                &port,
                "-c",
                "get",
                "text.txt",
                path(&out),
            ],
        )
        .await,
        "ascii",
    );
    assert_same(
        &out,
        &f.root().join("text.txt"),
        "tftp-hpa netascii text.txt",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atftp_with_windowsize_and_blksize() {
    if !have("atftp") {
        return;
    }
    let f = fixture(None).await;
    let (host, port) = (f.addr.ip().to_string(), f.addr.port().to_string());
    for (file, options) in [
        ("big.bin", &["blksize 512", "windowsize 16"][..]),
        ("small.bin", &["blksize 1468", "windowsize 16"]),
        ("small.bin", &["blksize 8192"]),
        ("exact.bin", &["blksize 512", "windowsize 4", "tsize 0"]),
    ] {
        let out = f.out(&format!("{file}-{}", options.join("-").replace(' ', "")));
        let mut args = vec!["-g", "-r", file, "-l", path(&out)];
        for o in options {
            args.extend(["--option", o]);
        }
        args.extend([host.as_str(), port.as_str()]);
        let o = run("atftp", &args).await;
        ok(&o, "atftp");
        assert_same(
            &out,
            &f.root().join(file),
            &format!("atftp {file} {options:?}"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_blksizes_and_file_not_found() {
    if !have("curl") {
        return;
    }
    let f = fixture(None).await;
    for blksize in ["512", "1468", "8192"] {
        let out = f.out(&format!("curl-{blksize}"));
        let url = format!("tftp://{}/small.bin", f.addr);
        let o = run(
            "curl",
            &["-sS", "--tftp-blksize", blksize, "-o", path(&out), &url],
        )
        .await;
        ok(&o, "curl");
        assert_same(
            &out,
            &f.root().join("small.bin"),
            &format!("curl blksize {blksize}"),
        );
    }
    // curl maps TFTP error 1 (file not found) to its exit code 68.
    let url = format!("tftp://{}/nope.bin", f.addr);
    let o = run("curl", &["-sS", "-o", path(&f.out("nope")), &url]).await;
    assert_eq!(
        o.status.code(),
        Some(68),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busybox_tftp_blksize() {
    if !have("busybox") {
        return;
    }
    let f = fixture(None).await;
    let (host, port) = (f.addr.ip().to_string(), f.addr.port().to_string());
    for blksize in ["512", "1468"] {
        let out = f.out(&format!("bb-{blksize}"));
        let o = run(
            "busybox",
            &[
                "tftp",
                "-g",
                "-r",
                "small.bin",
                "-l",
                path(&out),
                "-b",
                blksize,
                &host,
                &port,
            ],
        )
        .await;
        ok(&o, "busybox tftp");
        assert_same(
            &out,
            &f.root().join("small.bin"),
            &format!("busybox tftp -b {blksize}"),
        );
    }
}

/// The iPXE binaries come from the ipxe directory when the site root lacks them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_debian_ipxe_binaries_after_the_root() {
    let ipxe = Path::new(DEBIAN_IPXE_DIR);
    let files = ["undionly.kpxe", "ipxe.efi", "snponly.efi"];
    if !files.iter().all(|f| ipxe.join(f).is_file()) {
        let msg = format!("{DEBIAN_IPXE_DIR} lacks the iPXE binaries (Debian package ipxe)");
        if std::env::var("LARIAT_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            panic!("{msg}");
        }
        eprintln!("SKIP: {msg}");
        return;
    }
    if !have("curl") {
        return;
    }
    let f = fixture(Some(ipxe.to_path_buf())).await;
    for file in files {
        let out = f.out(file);
        let url = format!("tftp://{}/{file}", f.addr);
        ok(
            &run(
                "curl",
                &["-sS", "--tftp-blksize", "1432", "-o", path(&out), &url],
            )
            .await,
            "curl ipxe",
        );
        assert_same(&out, &ipxe.join(file), file);
    }
    // The site root wins over the iPXE directory for the same name.
    std::fs::write(f.root().join("ipxe.efi"), b"site override").expect("write");
    let out = f.out("override");
    let url = format!("tftp://{}/ipxe.efi", f.addr);
    ok(
        &run("curl", &["-sS", "-o", path(&out), &url]).await,
        "curl override",
    );
    assert_eq!(std::fs::read(&out).expect("read"), b"site override");
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}
