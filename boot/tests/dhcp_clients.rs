//! The DHCP server against real clients in network namespaces.
//!
//! The server runs in this process: its sockets are made on a thread that entered the
//! server namespace (`Netns::run_in`), then handed to the tokio runtime; a socket keeps
//! the namespace it was born in. Clients are the real programs, run with
//! `ip netns exec`: busybox udhcpc, ISC dhclient, dnsmasq (as the address server beside
//! our proxyDHCP) and perfdhcp (as a relay).
//!
//! Needs root and the Debian packages iproute2, busybox, isc-dhcp-client, dnsmasq and
//! kea-admin (perfdhcp). Without them a test skips with a message, or fails when
//! LARIAT_REQUIRE_PRIVILEGED=1.

mod support;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};
use lariat_boot::dhcp::{
    BootConfig, DhcpConfig, DhcpHandle, DhcpServer, DropReason, Listen, MacAddr, Mode, Network,
    Range, Reservation, ServerOptions,
};
use support::{Netns, Pair, peers, privileged};

const SRV: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const MAC: &str = "52:54:00:aa:00:01";
const RESERVED: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
const URL: &str = "http://10.77.0.1:7300/boot/ipxe?mac=${net0/mac}";

fn design(discovery: bool) -> DhcpConfig {
    let mut lab = Network::new("lab", "10.77.0.0/24".parse().unwrap());
    lab.routers = vec![SRV];
    lab.dns = vec![Ipv4Addr::new(10, 77, 0, 53)];
    lab.domain = Some("lab.example".into());
    lab.ranges = vec![Range {
        start: Ipv4Addr::new(10, 77, 0, 100),
        end: Ipv4Addr::new(10, 77, 0, 150),
    }];
    let mut far = Network::new("far", "10.88.0.0/24".parse().unwrap());
    far.routers = vec![Ipv4Addr::new(10, 88, 0, 1)];
    far.ranges = vec![Range {
        start: Ipv4Addr::new(10, 88, 0, 50),
        end: Ipv4Addr::new(10, 88, 0, 250),
    }];
    DhcpConfig {
        discovery,
        lease_time: 600,
        decline_hold: 600,
        boot: BootConfig {
            next_server: Some(SRV),
            ipxe_script_url: Some(URL.into()),
            ..BootConfig::default()
        },
        networks: vec![lab, far],
        reservations: vec![Reservation {
            mac: MAC.parse().unwrap(),
            ip: RESERVED,
            hostname: Some("node1".into()),
            network: None,
        }],
    }
}

async fn start(ns: &Netns, mode: Mode, config: DhcpConfig, db: &Path) -> DhcpHandle {
    start_as(ns, SRV, mode, config, db).await
}

async fn start_as(
    ns: &Netns,
    server_id: Ipv4Addr,
    mode: Mode,
    config: DhcpConfig,
    db: &Path,
) -> DhcpHandle {
    let mut opts = ServerOptions::new(Listen::Interface("veth-s".into()), server_id, db);
    opts.mode = mode;
    let o = opts.clone();
    let sockets = ns
        .run_in(move || DhcpServer::bind(&o))
        .expect("bind DHCP sockets in the server namespace");
    DhcpServer::start_with_sockets(opts, config, sockets)
        .await
        .expect("start DHCP server")
}

fn hook(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let script = dir.join("hook.sh");
    let dump = dir.join("hook.env");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{{ echo \"=== $1 $reason\"; env; }} >> {}\nexit 0\n",
            dump.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, dump)
}

/// The environment of the last `bound` (udhcpc) or `BOUND` (dhclient) hook call.
fn bound_env(dump: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(dump).unwrap_or_default();
    let block = text
        .split("=== ")
        .filter(|b| b.starts_with("bound") || b.contains(" BOUND"))
        .last()
        .unwrap_or_else(|| panic!("the client never bound; hook saw:\n{text}"));
    block
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn udhcpc(ns: &Netns, script: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = ns.command("busybox");
    c.args([
        "udhcpc", "-i", "veth-c", "-f", "-q", "-n", "-t", "3", "-T", "1",
    ]);
    c.args(extra);
    c.arg("-s").arg(script);
    tokio::time::timeout(Duration::from_secs(20), c.output())
        .await
        .expect("udhcpc hung")
        .expect("run udhcpc")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udhcpc_and_dhclient_get_reservation_options_and_boot_file_by_arch() {
    if !privileged("udhcpc_and_dhclient") || !peers("udhcpc_and_dhclient", &["busybox", "dhclient"])
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pair = Pair::new("dc", "10.77.0.1/24", None, MAC);
    let server = start(
        &pair.srv,
        Mode::Server,
        design(false),
        &dir.path().join("l.db"),
    )
    .await;
    let (script, dump) = hook(dir.path());

    // BIOS PXE, asking for options 66/67.
    let out = udhcpc(
        &pair.cli,
        &script,
        &[
            "-V",
            "PXEClient:Arch:00000:UNDI:002001",
            "-x",
            "0x5d:0000",
            "-O",
            "bootfile",
            "-O",
            "tftp",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "udhcpc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = bound_env(&dump);
    assert_eq!(
        env.get("ip").map(String::as_str),
        Some("10.77.0.10"),
        "{env:?}"
    );
    assert_eq!(env.get("router").map(String::as_str), Some("10.77.0.1"));
    assert_eq!(env.get("dns").map(|s| s.trim()), Some("10.77.0.53"));
    assert_eq!(env.get("domain").map(String::as_str), Some("lab.example"));
    assert_eq!(env.get("siaddr").map(String::as_str), Some("10.77.0.1"));
    assert_eq!(
        env.get("boot_file").map(String::as_str),
        Some("undionly.kpxe")
    );
    assert_eq!(
        env.get("bootfile").map(String::as_str),
        Some("undionly.kpxe")
    );
    assert_eq!(env.get("tftp").map(String::as_str), Some("10.77.0.1"));
    assert_eq!(env.get("hostname").map(String::as_str), Some("node1"));

    // x86-64 UEFI, no option request: the name is in the BOOTP file field only.
    std::fs::write(&dump, "").unwrap();
    let out = udhcpc(
        &pair.cli,
        &script,
        &["-V", "PXEClient:Arch:00007:UNDI:003016", "-x", "0x5d:0007"],
    )
    .await;
    assert!(out.status.success());
    let env = bound_env(&dump);
    assert_eq!(
        env.get("boot_file").map(String::as_str),
        Some("ipxe.efi"),
        "{env:?}"
    );
    assert_eq!(env.get("bootfile"), None);

    // iPXE user class: the HTTP script URL.
    std::fs::write(&dump, "").unwrap();
    let out = udhcpc(
        &pair.cli,
        &script,
        &[
            "-V",
            "PXEClient:Arch:00000:UNDI:002001",
            "-x",
            "0x4d:69505845",
            "-O",
            "bootfile",
        ],
    )
    .await;
    assert!(out.status.success());
    let env = bound_env(&dump);
    assert_eq!(
        env.get("bootfile").map(String::as_str),
        Some(URL),
        "{env:?}"
    );

    // ISC dhclient as x86-64 UEFI.
    std::fs::write(&dump, "").unwrap();
    let conf = dir.path().join("dhclient.conf");
    std::fs::write(
        &conf,
        "option pxe-client-arch code 93 = unsigned integer 16;\n\
         send vendor-class-identifier \"PXEClient:Arch:00007:UNDI:003016\";\n\
         send pxe-client-arch 7;\n\
         request subnet-mask, routers, domain-name-servers, bootfile-name, tftp-server-name;\n",
    )
    .unwrap();
    let leases = dir.path().join("dhclient.leases");
    let mut c = pair.cli.command("dhclient");
    c.args(["-4", "-1", "-d", "-v", "-cf"])
        .arg(&conf)
        .arg("-lf")
        .arg(&leases)
        .arg("-pf")
        .arg(dir.path().join("dhclient.pid"))
        .arg("-sf")
        .arg(&script)
        .arg("veth-c")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().expect("start dhclient");
    let mut bound = false;
    for _ in 0..150 {
        if std::fs::read_to_string(&dump)
            .unwrap_or_default()
            .contains(" BOUND")
        {
            bound = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill().await;
    assert!(bound, "dhclient did not bind within 15 s");
    let env = bound_env(&dump);
    assert_eq!(
        env.get("new_ip_address").map(String::as_str),
        Some("10.77.0.10"),
        "{env:?}"
    );
    assert_eq!(
        env.get("new_routers").map(String::as_str),
        Some("10.77.0.1")
    );
    assert_eq!(
        env.get("new_domain_name_servers").map(String::as_str),
        Some("10.77.0.53")
    );
    assert_eq!(
        env.get("new_filename").map(String::as_str),
        Some("ipxe.efi")
    );
    assert_eq!(
        env.get("new_bootfile_name").map(String::as_str),
        Some("ipxe.efi")
    );
    assert_eq!(
        env.get("new_next_server").map(String::as_str),
        Some("10.77.0.1")
    );

    let s = server.stats();
    assert!(s.replies_of(MessageType::Ack) >= 4);
    let rows = server.leases().leases().await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].ip, RESERVED);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(server.leases().active(now).await.unwrap(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_mac_gets_nothing_without_discovery() {
    if !privileged("unknown_mac") || !peers("unknown_mac", &["busybox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pair = Pair::new("du", "10.77.0.1/24", None, "52:54:00:bb:00:09");
    let server = start(
        &pair.srv,
        Mode::Server,
        design(false),
        &dir.path().join("l.db"),
    )
    .await;
    let (script, dump) = hook(dir.path());
    let out = udhcpc(&pair.cli, &script, &["-t", "2"]).await;
    assert!(!out.status.success(), "an unknown MAC got a lease");
    assert!(
        !std::fs::read_to_string(&dump)
            .unwrap_or_default()
            .contains("=== bound")
    );
    let s = server.stats();
    assert!(s.dropped_for(DropReason::UnknownMac) >= 2);
    assert_eq!(s.replies_of(MessageType::Offer), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lease_survives_a_restart() {
    if !privileged("restart") || !peers("restart", &["busybox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.db");
    let pair = Pair::new("dr", "10.77.0.1/24", None, "02:00:00:00:00:01");
    let (script, dump) = hook(dir.path());
    let server = start(&pair.srv, Mode::Server, design(true), &db).await;
    let mut got = vec![];
    for mac in ["02:00:00:00:00:01", "02:00:00:00:00:02"] {
        pair.cli.ip(&["link", "set", "veth-c", "address", mac]);
        std::fs::write(&dump, "").unwrap();
        let out = udhcpc(&pair.cli, &script, &[]).await;
        assert!(out.status.success());
        got.push(bound_env(&dump)["ip"].clone());
    }
    assert_eq!(got, ["10.77.0.100", "10.77.0.101"]);
    let found = server.leases().discovered_hosts().await.unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].network.as_deref(), Some("lab"));
    server.shutdown().await;

    // A server that forgot would hand .100 to whoever asks first.
    let server = start(&pair.srv, Mode::Server, design(true), &db).await;
    std::fs::write(&dump, "").unwrap();
    let out = udhcpc(&pair.cli, &script, &[]).await;
    assert!(out.status.success());
    assert_eq!(bound_env(&dump)["ip"], "10.77.0.101");
    pair.cli
        .ip(&["link", "set", "veth-c", "address", "02:00:00:00:00:03"]);
    std::fs::write(&dump, "").unwrap();
    assert!(udhcpc(&pair.cli, &script, &[]).await.status.success());
    assert_eq!(bound_env(&dump)["ip"], "10.77.0.102");
    server.shutdown().await;
}

fn pxe_discover(mac: MacAddr, arch: u16) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_xid(0x5eed_0001)
        .set_chaddr(&mac.0)
        .set_flags(dhcproto::v4::Flags::default().set_broadcast());
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(MessageType::Discover));
    o.insert(DhcpOption::ClassIdentifier(
        format!("PXEClient:Arch:{arch:05}:UNDI:002001").into_bytes(),
    ));
    o.insert(DhcpOption::ClientSystemArchitecture(arch.into()));
    m
}

fn collect(sock: &UdpSocket, xid: u32, wait: Duration) -> Vec<Message> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut out = vec![];
    let deadline = std::time::Instant::now() + wait;
    let mut buf = [0u8; 1500];
    while std::time::Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf)
            && let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n]))
            && m.xid() == xid
            && m.opcode() == Opcode::BootReply
        {
            out.push(m);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_dhcp_beside_dnsmasq() {
    if !privileged("proxy_dhcp") || !peers("proxy_dhcp", &["busybox", "dnsmasq"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pair = Pair::new("dp", "10.77.0.1/24", None, MAC);
    // dnsmasq owns the addresses and names itself 10.77.0.1; the proxy stands for
    // another machine on the link, 10.77.0.2.
    let proxy = Ipv4Addr::new(10, 77, 0, 2);
    pair.srv
        .ip(&["addr", "add", "10.77.0.2/24", "dev", "veth-s"]);
    let mut dnsmasq = pair
        .srv
        .command("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
            "-u",
            "root",
        ])
        .args([
            "--interface=veth-s",
            "--bind-interfaces",
            "--no-ping",
            "--dhcp-authoritative",
        ])
        .arg("--dhcp-range=10.77.0.160,10.77.0.200,255.255.255.0,1h")
        .arg(format!(
            "--dhcp-leasefile={}",
            dir.path().join("dnsmasq.leases").display()
        ))
        .arg(format!(
            "--pid-file={}",
            dir.path().join("dnsmasq.pid").display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start dnsmasq");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server = start_as(
        &pair.srv,
        proxy,
        Mode::Proxy,
        design(false),
        &dir.path().join("l.db"),
    )
    .await;

    // A plain DHCP client: dnsmasq answers, the proxy stays out of it.
    let (script, dump) = hook(dir.path());
    let out = udhcpc(&pair.cli, &script, &[]).await;
    assert!(
        out.status.success(),
        "udhcpc with dnsmasq: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = bound_env(&dump);
    let ip: Ipv4Addr = env["ip"].parse().unwrap();
    assert!(
        ip >= Ipv4Addr::new(10, 77, 0, 160),
        "address from dnsmasq: {ip}"
    );
    assert_eq!(env.get("boot_file"), None);
    assert!(server.stats().dropped_for(DropReason::NotForProxy) >= 1);
    pair.cli
        .ip(&["addr", "add", &format!("{ip}/24"), "dev", "veth-c"]);

    // A PXE client: two offers, an address from dnsmasq and boot info from us.
    let sock = pair.cli.run_in(|| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s.set_broadcast(true).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind_device(Some(b"veth-c")).unwrap();
        s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into())
            .unwrap();
        UdpSocket::from(s)
    });
    let mac: MacAddr = MAC.parse().unwrap();
    let d = pxe_discover(mac, 7);
    sock.send_to(&d.to_vec().unwrap(), (Ipv4Addr::BROADCAST, 67))
        .unwrap();
    let offers = collect(&sock, d.xid(), Duration::from_secs(2));
    let ours = offers
        .iter()
        .find(|m| {
            m.opts().get(OptionCode::ServerIdentifier) == Some(&DhcpOption::ServerIdentifier(proxy))
        })
        .unwrap_or_else(|| panic!("no proxy offer among {offers:?}"));
    assert_eq!(ours.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(ours.siaddr(), SRV);
    assert!(ours.fname().unwrap_or_default().starts_with(b"ipxe.efi"));
    assert_eq!(
        ours.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    let theirs = offers
        .iter()
        .find(|m| !m.yiaddr().is_unspecified())
        .unwrap_or_else(|| panic!("no address offer from dnsmasq among {offers:?}"));
    assert!(theirs.yiaddr() >= Ipv4Addr::new(10, 77, 0, 160));

    // The boot-server request on port 4011, from the address dnsmasq gave.
    let sock4011 = pair.cli.run_in(move || UdpSocket::bind((ip, 0)).unwrap());
    let mut r = pxe_discover(mac, 7);
    r.set_xid(0x5eed_0002).set_ciaddr(ip);
    r.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Request));
    sock4011
        .send_to(&r.to_vec().unwrap(), (proxy, 4011))
        .unwrap();
    let acks = collect(&sock4011, r.xid(), Duration::from_secs(1));
    let ack = acks.first().expect("no ACK from the proxy on 4011");
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    let f = ack.fname().unwrap_or_default();
    assert!(
        f.starts_with(b"ipxe.efi"),
        "{:?}",
        String::from_utf8_lossy(f)
    );

    server.shutdown().await;
    let _ = dnsmasq.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_requests_choose_network_by_giaddr() {
    if !privileged("relay") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pair = Pair::new(
        "dy",
        "10.77.0.1/24",
        Some("10.77.0.2/24"),
        "02:00:00:00:01:00",
    );
    // The "relay" in cli also owns 10.88.0.1 on a link we do not see.
    pair.cli.ip(&["addr", "add", "10.88.0.1/24", "dev", "lo"]);
    pair.srv
        .ip(&["route", "add", "10.88.0.0/24", "via", "10.77.0.2"]);
    let server = start(
        &pair.srv,
        Mode::Server,
        design(true),
        &dir.path().join("l.db"),
    )
    .await;

    let relay = pair
        .cli
        .run_in(|| UdpSocket::bind((Ipv4Addr::new(10, 88, 0, 1), 67)).unwrap());
    let mac = MacAddr([2, 0, 0, 0, 2, 1]);
    let mut d = pxe_discover(mac, 0);
    d.set_giaddr(Ipv4Addr::new(10, 88, 0, 1)).set_hops(1);
    relay.send_to(&d.to_vec().unwrap(), (SRV, 67)).unwrap();
    let offers = collect(&relay, d.xid(), Duration::from_millis(800));
    let offer = offers.first().expect("no OFFER to the relay");
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 88, 0, 50));
    assert_eq!(
        offer.opts().get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![Ipv4Addr::new(10, 88, 0, 1)]))
    );
    let mut r = d.clone();
    r.set_xid(0x5eed_0003);
    let o = r.opts_mut();
    o.insert(DhcpOption::MessageType(MessageType::Request));
    o.insert(DhcpOption::ServerIdentifier(SRV));
    o.insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
    relay.send_to(&r.to_vec().unwrap(), (SRV, 67)).unwrap();
    let acks = collect(&relay, r.xid(), Duration::from_millis(800));
    assert_eq!(
        acks.first().and_then(|a| a.opts().msg_type()),
        Some(MessageType::Ack)
    );
    let leases = server.leases().leases().await.unwrap();
    assert!(
        leases
            .iter()
            .any(|l| l.ip == Ipv4Addr::new(10, 88, 0, 50) && l.network == "far")
    );
    drop(relay);

    // perfdhcp is a relay too (giaddr = 10.77.0.2, listens on 67): 50 full exchanges.
    if peers("relay/perfdhcp", &["perfdhcp"]) {
        let out = pair
            .cli
            .command("perfdhcp")
            .args([
                "-4",
                "-l",
                "veth-c",
                "-r",
                "50",
                "-R",
                "50",
                "-n",
                "50",
                "-W",
                "1000000",
                "10.77.0.1",
            ])
            .output()
            .await
            .expect("run perfdhcp");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "perfdhcp saw drops:\n{text}");
        let leases = server.leases().leases().await.unwrap();
        let lab = leases.iter().filter(|l| l.network == "lab").count();
        assert_eq!(lab, 50, "perfdhcp's 50 clients on the giaddr network");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_over_the_wire_is_dropped_and_counted() {
    if !privileged("garbage") || !peers("garbage", &["busybox"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pair = Pair::new("dg", "10.77.0.1/24", Some("10.77.0.2/24"), MAC);
    let server = start(
        &pair.srv,
        Mode::Server,
        design(false),
        &dir.path().join("l.db"),
    )
    .await;
    let sock = pair
        .cli
        .run_in(|| UdpSocket::bind((Ipv4Addr::new(10, 77, 0, 2), 68)).unwrap());
    let mac: MacAddr = MAC.parse().unwrap();
    let good = pxe_discover(mac, 0).to_vec().unwrap();
    let mut wrong_op = good.clone();
    wrong_op[0] = 2;
    let mut bad_len = good[..240].to_vec();
    bad_len.extend_from_slice(&[53, 1, 1, 54, 7, 1, 2, 3, 255]);
    let mut overrun = good[..240].to_vec();
    overrun.extend_from_slice(&[53, 1, 1, 60, 250, b'x']);
    let packets: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        good[..100].to_vec(),
        vec![0xff; 4000],
        wrong_op,
        bad_len,
        overrun,
    ];
    for p in &packets {
        sock.send_to(p, (SRV, 67)).unwrap();
    }
    drop(sock);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = server.stats();
    assert_eq!(s.dropped_for(DropReason::Truncated), 2);
    assert_eq!(s.dropped_for(DropReason::Oversized), 1);
    assert_eq!(s.dropped_for(DropReason::WrongOpCode), 1);
    assert_eq!(s.dropped_for(DropReason::BadOptionLength), 2);
    // Still serving.
    pair.cli.ip(&["addr", "flush", "dev", "veth-c"]);
    let (script, dump) = hook(dir.path());
    let out = udhcpc(&pair.cli, &script, &[]).await;
    assert!(out.status.success());
    assert_eq!(bound_env(&dump)["ip"], "10.77.0.10");
    server.shutdown().await;
}
