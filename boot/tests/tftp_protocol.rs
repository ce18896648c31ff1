//! The TFTP server against a raw UDP client written here: the PXE tsize-probe sequence,
//! windowing, bounded retransmits, and bad input (answered with the right code, counted).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lariat_boot::tftp::packet::{Opcode, Packet, encode_ack, encode_error, encode_request};
use lariat_boot::tftp::{ErrorCode, TftpConfig, TftpServer, serve};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

// ---- a counting recorder, installed once for this test binary ----

#[derive(Default)]
struct Counts(Mutex<HashMap<String, Arc<AtomicU64>>>);

fn key_string(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for Counts {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut map = self.0.lock().expect("recorder lock");
        Counter::from_arc(map.entry(key_string(key)).or_default().clone())
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn counts() -> &'static Counts {
    static COUNTS: OnceLock<&'static Counts> = OnceLock::new();
    COUNTS.get_or_init(|| {
        let counts: &'static Counts = Box::leak(Box::default());
        metrics::set_global_recorder(counts).expect("only this binary installs a recorder");
        counts
    })
}

fn counter(key: &str) -> u64 {
    counts()
        .0
        .lock()
        .expect("recorder lock")
        .get(key)
        .map_or(0, |c| c.load(Ordering::Relaxed))
}

// ---- server and client helpers ----

struct Running {
    server: Option<TftpServer>,
    stop: Option<oneshot::Sender<()>>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        drop(self.server.take());
    }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn start(tweak: impl FnOnce(&mut TftpConfig, &Path)) -> Running {
    counts();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("mkdir root");
    let mut config = TftpConfig {
        root: Some(root.clone()),
        ipxe_dir: None,
        bind: "127.0.0.1:0".parse().expect("addr"),
        timeout: Duration::from_secs(1),
        retries: 3,
        ..TftpConfig::default()
    };
    tweak(&mut config, dir.path());
    let (tx, rx) = oneshot::channel::<()>();
    let server = serve(config, async {
        let _ = rx.await;
    })
    .await
    .expect("server starts");
    let addr = server.local_addr();
    Running {
        server: Some(server),
        stop: Some(tx),
        addr,
        _dir: dir,
    }
}

async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("client socket")
}

async fn recv(sock: &UdpSocket, within: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 70_000];
    match tokio::time::timeout(within, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => {
            buf.truncate(n);
            Some((buf, from))
        }
        _ => None,
    }
}

fn rrq(name: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let options: Vec<(&[u8], &[u8])> = options
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
    encode_request(Opcode::Rrq, name.as_bytes(), b"octet", &options)
}

fn oack_options(bytes: &[u8]) -> HashMap<String, String> {
    match Packet::parse(bytes) {
        Ok(Packet::Oack { options }) => options
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect(),
        other => panic!("expected an OACK, got {other:?}"),
    }
}

fn expect_error(bytes: &[u8]) -> (u16, String) {
    match Packet::parse(bytes) {
        Ok(Packet::Error { code, message }) => {
            (code, String::from_utf8_lossy(message).into_owned())
        }
        other => panic!("expected an ERROR, got {other:?}"),
    }
}

/// Receives DATA from `tid` acknowledging every `window`-th block and the last one.
async fn download(sock: &UdpSocket, tid: SocketAddr, blksize: usize, window: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let mut expected: u16 = 1;
    let mut in_window = 0;
    loop {
        let (pkt, from) = recv(sock, Duration::from_secs(5))
            .await
            .expect("DATA in time");
        assert_eq!(from, tid, "DATA from the transfer's own port");
        let Ok(Packet::Data { block, data }) = Packet::parse(&pkt) else {
            panic!("expected DATA, got {:?}", Packet::parse(&pkt));
        };
        assert_eq!(block, expected, "blocks in order on loopback");
        out.extend_from_slice(data);
        in_window += 1;
        let last = data.len() < blksize;
        if last || in_window == window {
            sock.send_to(&encode_ack(block), tid).await.expect("ack");
            in_window = 0;
        }
        if last {
            return out;
        }
        expected = expected.wrapping_add(1);
    }
}

// ---- the PXE sequence ----

/// EDK2's PXE client: RRQ with tsize=0 + blksize, OACK, ERROR, then RRQ again from the
/// same port. The second transfer must start at once, long before the server's first
/// retransmit timeout, and the aborted one must stay silent.
async fn pxe_probe_then_fetch(error_code: ErrorCode) {
    let run = start(|_, _| {}).await;
    let image = pseudo_random(300_000, 7);
    let root = run._dir.path().join("root");
    std::fs::write(root.join("ipxe.efi"), &image).expect("write image");
    let sock = client().await;

    sock.send_to(
        &rrq("ipxe.efi", &[("tsize", "0"), ("blksize", "1468")]),
        run.addr,
    )
    .await
    .expect("send probe");
    let (oack, probe_tid) = recv(&sock, Duration::from_secs(2))
        .await
        .expect("OACK to the probe");
    let options = oack_options(&oack);
    assert_eq!(options.get("tsize").map(String::as_str), Some("300000"));
    assert_eq!(options.get("blksize").map(String::as_str), Some("1468"));

    sock.send_to(&encode_error(error_code, "tsize probe done"), probe_tid)
        .await
        .expect("send ERROR");
    let asked = Instant::now();
    sock.send_to(
        &rrq("ipxe.efi", &[("blksize", "1468"), ("windowsize", "4")]),
        run.addr,
    )
    .await
    .expect("send RRQ again");
    let (oack, tid) = recv(&sock, Duration::from_secs(5))
        .await
        .expect("an answer to the second RRQ");
    let answered = asked.elapsed();
    assert_ne!(
        tid, probe_tid,
        "the probe's transfer must not answer the new request"
    );
    eprintln!(
        "PXE sequence ({error_code:?}): second RRQ answered after {:.2} ms",
        answered.as_secs_f64() * 1000.0
    );
    assert!(
        answered < Duration::from_secs(1),
        "second RRQ answered after {answered:?}, not before the 1 s retransmit timeout"
    );
    let options = oack_options(&oack);
    assert_eq!(options.get("windowsize").map(String::as_str), Some("4"));
    assert!(!options.contains_key("tsize"));
    sock.send_to(&encode_ack(0), tid)
        .await
        .expect("ack the OACK");
    let got = download(&sock, tid, 1468, 4).await;
    assert!(
        got == image,
        "downloaded image differs ({} bytes vs {})",
        got.len(),
        image.len()
    );

    // The probe's transfer would retransmit its OACK after 1 s if ERROR had not ended it.
    let quiet_until = asked + Duration::from_millis(1600);
    while let Some(left) = quiet_until.checked_duration_since(Instant::now()) {
        if let Some((pkt, from)) = recv(&sock, left).await {
            panic!("stray packet after the transfer from {from} (probe {probe_tid}): {pkt:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pxe_tsize_probe_error_8_then_same_port_rrq_starts_at_once() {
    pxe_probe_then_fetch(ErrorCode::BadOption).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pxe_tsize_probe_error_0_then_same_port_rrq_starts_at_once() {
    pxe_probe_then_fetch(ErrorCode::NotDefined).await;
}

/// ERROR from the client ends its transfer at once: it leaves the server's table and
/// sends nothing more (no OACK retransmit after the 1 s timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_error_ends_the_transfer_at_once() {
    let run = start(|_, _| {}).await;
    std::fs::write(run._dir.path().join("root/f"), b"x").expect("write");
    let sock = client().await;
    sock.send_to(&rrq("f", &[("tsize", "0")]), run.addr)
        .await
        .expect("send");
    let (_, tid) = recv(&sock, Duration::from_secs(2)).await.expect("OACK");
    let server = run.server.as_ref().expect("running");
    assert_eq!(server.active_transfers(), 1);
    sock.send_to(&encode_error(ErrorCode::BadOption, "probe"), tid)
        .await
        .expect("send");
    let sent = Instant::now();
    while server.active_transfers() > 0 {
        assert!(
            sent.elapsed() < Duration::from_millis(500),
            "transfer still active after ERROR"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if let Some((_, from)) = recv(&sock, Duration::from_millis(1500)).await {
        panic!("packet from {from} after the client's ERROR");
    }
}

/// A new RRQ from the same port replaces the transfer even when no ERROR came first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_port_rrq_without_error_replaces_the_transfer() {
    let run = start(|_, _| {}).await;
    std::fs::write(run._dir.path().join("root/f"), b"hello").expect("write");
    let sock = client().await;
    sock.send_to(&rrq("f", &[("tsize", "0")]), run.addr)
        .await
        .expect("send");
    let (_, first) = recv(&sock, Duration::from_secs(2)).await.expect("OACK");
    sock.send_to(&rrq("f", &[]), run.addr).await.expect("send");
    let (pkt, second) = recv(&sock, Duration::from_secs(2)).await.expect("DATA");
    assert_ne!(first, second);
    assert!(matches!(
        Packet::parse(&pkt),
        Ok(Packet::Data {
            block: 1,
            data: b"hello"
        })
    ));
    sock.send_to(&encode_ack(1), second).await.expect("ack");
    // The replaced transfer is gone: no OACK retransmit from it after its 1 s timeout.
    if let Some((_, from)) = recv(&sock, Duration::from_millis(1500)).await {
        panic!("packet from {from} after the transfer was replaced");
    }
}

// ---- windowing, roll-over and retransmits ----

/// RFC 7440: an ACK inside the window means the rest was lost; the server goes on from
/// the block after it at once, without waiting for its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_window_ack_resends_from_the_gap_at_once() {
    let run = start(|_, _| {}).await;
    let data = pseudo_random(512 * 10 + 100, 3);
    std::fs::write(run._dir.path().join("root/f"), &data).expect("write");
    let sock = client().await;
    sock.send_to(&rrq("f", &[("windowsize", "4")]), run.addr)
        .await
        .expect("send");
    let (_, tid) = recv(&sock, Duration::from_secs(2)).await.expect("OACK");
    sock.send_to(&encode_ack(0), tid).await.expect("ack");
    for want in 1..=4u16 {
        let (pkt, _) = recv(&sock, Duration::from_secs(2)).await.expect("DATA");
        assert!(matches!(Packet::parse(&pkt), Ok(Packet::Data { block, .. }) if block == want));
    }
    let acked = Instant::now();
    sock.send_to(&encode_ack(2), tid).await.expect("ack 2");
    for want in 3..=6u16 {
        let (pkt, _) = recv(&sock, Duration::from_secs(2)).await.expect("DATA");
        let Ok(Packet::Data { block, data: got }) = Packet::parse(&pkt) else {
            panic!("expected DATA");
        };
        assert_eq!(block, want);
        let at = usize::from(want - 1) * 512;
        assert_eq!(got, &data[at..at + 512]);
    }
    assert!(
        acked.elapsed() < Duration::from_millis(500),
        "resent after {:?}",
        acked.elapsed()
    );
}

/// Without ACKs the server sends the OACK once and retransmits it `retries` times, then
/// stops; ACKs that answer nothing (here a stale ACK 7 every 40 ms) do not stretch the
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retransmits_are_bounded() {
    let run = start(|c, _| {
        c.timeout = Duration::from_millis(150);
        c.retries = 2;
    })
    .await;
    std::fs::write(run._dir.path().join("root/f"), b"x").expect("write");
    let sock = Arc::new(client().await);
    sock.send_to(&rrq("f", &[("tsize", "0")]), run.addr)
        .await
        .expect("send");
    let (pkt, tid) = recv(&sock, Duration::from_secs(2)).await.expect("OACK");
    oack_options(&pkt);
    let noise = {
        let sock = sock.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                let _ = sock.send_to(&encode_ack(7), tid).await;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    let mut oacks = 1;
    while let Some((pkt, _)) = recv(&sock, Duration::from_millis(600)).await {
        oack_options(&pkt);
        oacks += 1;
    }
    noise.abort();
    assert_eq!(oacks, 3, "one OACK and two retransmits");
    assert_eq!(
        run.server.as_ref().map(TftpServer::active_transfers),
        Some(0)
    );
}

/// Lock-step past block 65,535: the block after 65,535 is 0 on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_numbers_roll_over() {
    let run = start(|_, _| {}).await;
    // blksize 8 keeps the file small: 65,540 blocks of 8 bytes.
    let data = pseudo_random(8 * 65_540 + 3, 11);
    std::fs::write(run._dir.path().join("root/f"), &data).expect("write");
    let sock = client().await;
    sock.send_to(
        &rrq("f", &[("blksize", "8"), ("windowsize", "64")]),
        run.addr,
    )
    .await
    .expect("send");
    let (_, tid) = recv(&sock, Duration::from_secs(2)).await.expect("OACK");
    sock.send_to(&encode_ack(0), tid).await.expect("ack");
    let got = download(&sock, tid, 8, 64).await;
    assert!(got == data, "{} bytes back, {} sent", got.len(), data.len());
}

// ---- bad input ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_error_code_and_are_counted() {
    let run = start(|_, dir| {
        let outside = dir.join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        std::fs::write(outside.join("secret"), b"secret").expect("write");
        let root = dir.join("root");
        std::os::unix::fs::symlink(outside.join("secret"), root.join("escape")).expect("symlink");
        std::fs::create_dir(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("ok"), b"fine").expect("write");
    })
    .await;
    let sock = client().await;
    let cases: Vec<(Vec<u8>, ErrorCode, &str, &str)> = vec![
        (
            b"\x00\x63junk".to_vec(),
            ErrorCode::IllegalOperation,
            "opcode",
            "lariat_tftp_requests_total{reason=bad_opcode,result=refused}",
        ),
        (
            encode_request(Opcode::Rrq, b"ok", b"mail", &[]),
            ErrorCode::IllegalOperation,
            "mail",
            "lariat_tftp_requests_total{reason=bad_mode,result=refused}",
        ),
        (
            b"\x00\x01ok\0oct".to_vec(),
            ErrorCode::IllegalOperation,
            "NUL",
            "lariat_tftp_requests_total{reason=missing_nul,result=refused}",
        ),
        (
            encode_request(Opcode::Wrq, b"new", b"octet", &[]),
            ErrorCode::AccessViolation,
            "read-only",
            "lariat_tftp_requests_total{reason=write_request,result=refused}",
        ),
        (
            rrq("ok", &[("blksize", "7")]),
            ErrorCode::BadOption,
            "blksize",
            "lariat_tftp_requests_total{reason=bad_option,result=refused}",
        ),
        (
            rrq("ok", &[("blksize", "65465")]),
            ErrorCode::BadOption,
            "blksize",
            "",
        ),
        (
            rrq("ok", &[("blksize", "big")]),
            ErrorCode::BadOption,
            "blksize",
            "",
        ),
        (
            rrq("ok", &[("windowsize", "0")]),
            ErrorCode::BadOption,
            "windowsize",
            "",
        ),
        (
            rrq("ok", &[("windowsize", "65536")]),
            ErrorCode::BadOption,
            "windowsize",
            "",
        ),
        (
            rrq("ok", &[("tsize", "x")]),
            ErrorCode::BadOption,
            "tsize",
            "",
        ),
        (
            rrq("../outside/secret", &[]),
            ErrorCode::AccessViolation,
            "..",
            "lariat_tftp_transfers_total{outcome=lookup_error}",
        ),
        (
            rrq("/etc/passwd", &[]),
            ErrorCode::AccessViolation,
            "absolute",
            "",
        ),
        (
            rrq("escape", &[]),
            ErrorCode::AccessViolation,
            "outside",
            "",
        ),
        (
            rrq("sub", &[]),
            ErrorCode::AccessViolation,
            "regular file",
            "",
        ),
        (rrq("missing", &[]), ErrorCode::FileNotFound, "missing", ""),
    ];
    for (datagram, code, needle, metric) in cases {
        let before = (!metric.is_empty()).then(|| counter(metric));
        sock.send_to(&datagram, run.addr).await.expect("send");
        let (pkt, _) = recv(&sock, Duration::from_secs(2))
            .await
            .unwrap_or_else(|| panic!("no answer to {datagram:?}"));
        let (got, message) = expect_error(&pkt);
        assert_eq!(got, code as u16, "{message}");
        assert!(
            message.contains(needle),
            "{message:?} should name {needle:?}"
        );
        if let Some(before) = before {
            // The transfer task counts after it sent the error; give it a moment.
            let deadline = Instant::now() + Duration::from_secs(1);
            while counter(metric) <= before && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(counter(metric) > before, "{metric} not counted");
        }
    }

    // Dropped without an answer, but counted.
    for (datagram, metric) in [
        (
            &b"\x00"[..],
            "lariat_tftp_packets_dropped_total{reason=too_short}",
        ),
        (
            b"\x00\x04\x00",
            "lariat_tftp_packets_dropped_total{reason=truncated}",
        ),
        (
            b"\x00\x04\x00\x01",
            "lariat_tftp_packets_dropped_total{reason=stray_packet}",
        ),
        (
            b"\x00\x05\x00\x00oops\0",
            "lariat_tftp_packets_dropped_total{reason=stray_error}",
        ),
    ] {
        let before = counter(metric);
        sock.send_to(datagram, run.addr).await.expect("send");
        assert!(
            recv(&sock, Duration::from_millis(200)).await.is_none(),
            "{datagram:?} answered"
        );
        assert!(counter(metric) > before, "{metric} not counted");
    }

    // Garbage on a transfer's port is dropped and the transfer goes on.
    sock.send_to(&rrq("ok", &[("tsize", "0")]), run.addr)
        .await
        .expect("send");
    let (_, tid) = recv(&sock, Duration::from_secs(2)).await.expect("OACK");
    for junk in [&b"\xff\xff\xff"[..], b"\x00\x03\x00\x01data", b"\x00"] {
        sock.send_to(junk, tid).await.expect("send junk");
    }
    sock.send_to(&encode_ack(0), tid).await.expect("ack");
    assert_eq!(download(&sock, tid, 512, 1).await, b"fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_transfers_get_server_busy() {
    let run = start(|c, _| c.max_transfers = 1).await;
    std::fs::write(run._dir.path().join("root/f"), b"x").expect("write");
    let first = client().await;
    first
        .send_to(&rrq("f", &[("tsize", "0")]), run.addr)
        .await
        .expect("send");
    recv(&first, Duration::from_secs(2)).await.expect("OACK");
    let second = client().await;
    second
        .send_to(&rrq("f", &[]), run.addr)
        .await
        .expect("send");
    let (pkt, _) = recv(&second, Duration::from_secs(2))
        .await
        .expect("an answer");
    let (code, message) = expect_error(&pkt);
    assert_eq!(code, 0);
    assert!(message.contains("busy"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_the_problem() {
    let missing = TftpConfig {
        root: Some("/nonexistent/lariat-tftp".into()),
        ipxe_dir: None,
        bind: "127.0.0.1:0".parse().expect("addr"),
        ..TftpConfig::default()
    };
    let err = serve(missing.clone(), async {})
        .await
        .expect_err("missing root");
    assert!(
        err.to_string().contains("/nonexistent/lariat-tftp"),
        "{err}"
    );
    let none = TftpConfig {
        root: None,
        ..missing
    };
    let err = serve(none, async {}).await.expect_err("nothing to serve");
    assert!(err.to_string().contains("no directory"), "{err}");
}
