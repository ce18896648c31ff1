//! Handler tests without sockets: protocol decisions and bad input.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use dhcproto::v4::{Architecture, DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

use super::*;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const KNOWN: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
const STRANGER: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 9]);

fn config(discovery: bool) -> DhcpConfig {
    let mut net = Network::new("lab", "10.77.0.0/24".parse().unwrap());
    net.routers = vec![SERVER];
    net.dns = vec![Ipv4Addr::new(10, 77, 0, 53)];
    net.domain = Some("lab.example".into());
    net.ranges = vec![Range {
        start: Ipv4Addr::new(10, 77, 0, 100),
        end: Ipv4Addr::new(10, 77, 0, 102),
    }];
    net.options
        .insert(252, OptionValue::Text("http://wpad/".into()));
    let mut relayed = Network::new("far", "10.88.0.0/24".parse().unwrap());
    relayed.routers = vec![Ipv4Addr::new(10, 88, 0, 1)];
    relayed.ranges = vec![Range {
        start: Ipv4Addr::new(10, 88, 0, 50),
        end: Ipv4Addr::new(10, 88, 0, 60),
    }];
    DhcpConfig {
        discovery,
        lease_time: 600,
        decline_hold: 600,
        boot: BootConfig {
            ipxe_script_url: Some("http://10.77.0.1:7300/boot/ipxe?mac=${net0/mac}".into()),
            ..BootConfig::default()
        },
        networks: vec![net, relayed],
        reservations: vec![Reservation {
            mac: KNOWN,
            ip: Ipv4Addr::new(10, 77, 0, 10),
            hostname: Some("node1".into()),
            network: None,
        }],
    }
}

fn handler(mode: Mode, discovery: bool) -> Handler {
    Handler::new(
        HandlerOptions {
            server_id: SERVER,
            mode,
            port: 67,
        },
        Arc::new(config(discovery).compile().unwrap()),
        Arc::new(Stats::default()),
        vec![],
        vec![],
    )
}

fn info(port: u16) -> RecvInfo {
    RecvInfo {
        src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        local_port: port,
        ifindex: 3,
        local_addr: SERVER,
    }
}

fn request(mac: MacAddr, kind: MessageType) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_xid(0x1234)
        .set_chaddr(&mac.0);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m
}

fn pxe(m: &mut Message, arch: u16) {
    m.opts_mut().insert(DhcpOption::ClassIdentifier(
        format!("PXEClient:Arch:{arch:05}:UNDI:002001").into_bytes(),
    ));
    m.opts_mut()
        .insert(DhcpOption::ClientSystemArchitecture(Architecture::from(
            arch,
        )));
}

fn run(h: &mut Handler, m: &Message, port: u16) -> Outcome {
    h.handle(&m.to_vec().unwrap(), &info(port), 1_000_000)
}

fn reply_of(o: &Outcome) -> Message {
    let r = match o {
        Outcome::Send(r) | Outcome::SendAndRecord(r, _) => r,
        Outcome::Commit(LeaseWrite { reply: Some(r), .. }) => r,
        other => panic!("expected a reply, got {other:?}"),
    };
    Message::decode(&mut Decoder::new(&r.bytes)).unwrap()
}

fn dest_of(o: &Outcome) -> SocketAddrV4 {
    match o {
        Outcome::Send(r) | Outcome::SendAndRecord(r, _) => r.dest,
        Outcome::Commit(LeaseWrite { reply: Some(r), .. }) => r.dest,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn file(m: &Message) -> String {
    String::from_utf8(m.fname().unwrap_or_default().to_vec())
        .unwrap()
        .trim_end_matches('\0')
        .to_string()
}

#[test]
fn reserved_host_gets_its_address_options_and_bios_boot_file() {
    let mut h = handler(Mode::Server, false);
    let mut d = request(KNOWN, MessageType::Discover);
    pxe(&mut d, 0);
    d.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::BootfileName,
        OptionCode::TFTPServerName,
    ]));
    let o = run(&mut h, &d, 67);
    let offer = reply_of(&o);
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 77, 0, 10));
    assert_eq!(offer.siaddr(), SERVER);
    assert_eq!(file(&offer), "undionly.kpxe");
    assert_eq!(
        offer.opts().get(OptionCode::BootfileName),
        Some(&DhcpOption::BootfileName(b"undionly.kpxe".to_vec()))
    );
    assert_eq!(
        offer.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    // A firmware PXE client needs discovery control 8 beside option 60 (EDK2 refuses the
    // offer otherwise).
    assert_eq!(
        offer.opts().get(OptionCode::VendorExtensions),
        Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
    );
    assert_eq!(
        offer.opts().get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![SERVER]))
    );
    assert!(matches!(
        offer.opts().get(OptionCode::Unknown(252)),
        Some(DhcpOption::Unknown(_))
    ));
    assert_eq!(dest_of(&o), SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));

    let mut r = request(KNOWN, MessageType::Request);
    pxe(&mut r, 7);
    r.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    r.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 77, 0, 10)));
    let o = run(&mut h, &r, 67);
    let Outcome::Commit(w) = &o else {
        panic!("an ACK waits for its lease commit, got {o:?}")
    };
    assert_eq!(w.lease.as_ref().unwrap().ip, Ipv4Addr::new(10, 77, 0, 10));
    let ack = reply_of(&o);
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(file(&ack), "ipxe.efi");
    assert_eq!(
        ack.opts().get(OptionCode::Hostname),
        Some(&DhcpOption::Hostname("node1".into()))
    );
}

#[test]
fn ipxe_user_class_gets_the_script_url() {
    let mut h = handler(Mode::Server, false);
    let mut d = request(KNOWN, MessageType::Discover);
    pxe(&mut d, 0);
    d.opts_mut().insert(DhcpOption::UserClass(b"iPXE".to_vec()));
    let offer = reply_of(&run(&mut h, &d, 67));
    assert_eq!(
        file(&offer),
        "http://10.77.0.1:7300/boot/ipxe?mac=${net0/mac}"
    );
    assert_eq!(
        offer.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec())),
        "without option 60 iPXE waits ~3 s for a proxyDHCP offer"
    );
    assert_eq!(offer.opts().get(OptionCode::VendorExtensions), None);
}

#[test]
fn long_boot_url_goes_in_option_67_without_panicking() {
    let mut cfg = config(false);
    cfg.boot.ipxe_script_url = Some(format!("http://10.77.0.1/{}", "x".repeat(300)));
    let mut h = Handler::new(
        HandlerOptions {
            server_id: SERVER,
            mode: Mode::Server,
            port: 67,
        },
        Arc::new(cfg.compile().unwrap()),
        Arc::new(Stats::default()),
        vec![],
        vec![],
    );
    let mut d = request(KNOWN, MessageType::Discover);
    d.opts_mut().insert(DhcpOption::UserClass(b"iPXE".to_vec()));
    let offer = reply_of(&run(&mut h, &d, 67));
    assert!(offer.fname().is_none());
    match offer.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(f)) => assert_eq!(f.len(), 317),
        other => panic!("no option 67: {other:?}"),
    }
}

#[test]
fn unknown_mac_is_ignored_without_discovery() {
    let mut h = handler(Mode::Server, false);
    let o = run(&mut h, &request(STRANGER, MessageType::Discover), 67);
    assert!(matches!(o, Outcome::Drop(DropReason::UnknownMac)), "{o:?}");
}

#[test]
fn discovery_allocates_records_and_nak_on_wrong_address() {
    let mut h = handler(Mode::Server, true);
    let o = run(&mut h, &request(STRANGER, MessageType::Discover), 67);
    let Outcome::SendAndRecord(_, w) = &o else {
        panic!("{o:?}")
    };
    assert_eq!(w.discovered.as_ref().unwrap().mac, STRANGER);
    let offered = reply_of(&o).yiaddr();
    assert_eq!(offered, Ipv4Addr::new(10, 77, 0, 100));

    // Someone else asking for the offered address is refused.
    let other = MacAddr([2, 0, 0, 0, 0, 2]);
    let mut r = request(other, MessageType::Request);
    r.opts_mut().insert(DhcpOption::RequestedIpAddress(offered));
    let nak = reply_of(&run(&mut h, &r, 67));
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));

    // The reserved host asking for a wrong address gets a NAK too.
    let mut r = request(KNOWN, MessageType::Request);
    r.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 77, 0, 11)));
    let nak = reply_of(&run(&mut h, &r, 67));
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));

    // Pool of three: two more clients, then exhaustion.
    for i in 0..2u8 {
        let o = run(
            &mut h,
            &request(MacAddr([2, 0, 0, 0, 1, i]), MessageType::Discover),
            67,
        );
        assert!(matches!(o, Outcome::SendAndRecord(..)), "{o:?}");
    }
    let o = run(
        &mut h,
        &request(MacAddr([2, 0, 0, 0, 2, 0]), MessageType::Discover),
        67,
    );
    assert!(
        matches!(o, Outcome::Drop(DropReason::PoolExhausted)),
        "{o:?}"
    );
}

#[test]
fn release_and_decline_free_the_address() {
    let mut h = handler(Mode::Server, true);
    let mut r = request(STRANGER, MessageType::Request);
    r.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(
            10, 77, 0, 101,
        )));
    assert!(matches!(run(&mut h, &r, 67), Outcome::Commit(_)));
    let mut rel = request(STRANGER, MessageType::Release);
    rel.set_ciaddr(Ipv4Addr::new(10, 77, 0, 101));
    let Outcome::Commit(w) = run(&mut h, &rel, 67) else {
        panic!("release must be persisted")
    };
    assert_eq!(w.lease.unwrap().state, LeaseState::Released);
    // Declined: the next client does not get .100.
    let mut dec = request(STRANGER, MessageType::Decline);
    dec.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(
            10, 77, 0, 100,
        )));
    assert!(matches!(run(&mut h, &dec, 67), Outcome::Commit(_)));
    let o = run(
        &mut h,
        &request(MacAddr([2, 0, 0, 0, 3, 3]), MessageType::Discover),
        67,
    );
    assert_ne!(reply_of(&o).yiaddr(), Ipv4Addr::new(10, 77, 0, 100));
}

#[test]
fn relayed_request_uses_giaddr_network_and_answers_the_relay() {
    let mut h = handler(Mode::Server, true);
    let mut d = request(STRANGER, MessageType::Discover);
    d.set_giaddr(Ipv4Addr::new(10, 88, 0, 1)).set_hops(1);
    let o = run(&mut h, &d, 67);
    assert_eq!(
        dest_of(&o),
        SocketAddrV4::new(Ipv4Addr::new(10, 88, 0, 1), 67)
    );
    let offer = reply_of(&o);
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 88, 0, 50));
    assert_eq!(offer.giaddr(), Ipv4Addr::new(10, 88, 0, 1));
    // A giaddr no network holds is dropped.
    d.set_giaddr(Ipv4Addr::new(192, 0, 2, 1));
    assert!(matches!(
        run(&mut h, &d, 67),
        Outcome::Drop(DropReason::NoNetwork)
    ));
}

#[test]
fn renewal_is_unicast_to_ciaddr_and_broadcast_flag_broadcasts() {
    let mut h = handler(Mode::Server, false);
    let mut r = request(KNOWN, MessageType::Request);
    r.set_ciaddr(Ipv4Addr::new(10, 77, 0, 10));
    let o = run(&mut h, &r, 67);
    assert_eq!(
        dest_of(&o),
        SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 10), 68)
    );
    let mut d = request(KNOWN, MessageType::Discover);
    d.set_flags(Flags::default().set_broadcast());
    let o = run(&mut h, &d, 67);
    assert_eq!(dest_of(&o), SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    assert!(reply_of(&o).flags().broadcast());
}

#[test]
fn inform_gets_options_without_an_address() {
    let mut h = handler(Mode::Server, false);
    let mut m = request(KNOWN, MessageType::Inform);
    m.set_ciaddr(Ipv4Addr::new(10, 77, 0, 10));
    let o = run(&mut h, &m, 67);
    let ack = reply_of(&o);
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(ack.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert!(ack.opts().get(OptionCode::DomainNameServer).is_some());
}

#[test]
fn proxy_offers_boot_only_and_answers_4011() {
    let mut h = handler(Mode::Proxy, false);
    let mut d = request(KNOWN, MessageType::Discover);
    pxe(&mut d, 7);
    let offer = reply_of(&run(&mut h, &d, 67));
    assert_eq!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(file(&offer), "ipxe.efi");
    assert!(offer.opts().get(OptionCode::AddressLeaseTime).is_none());
    // Non-PXE DHCP is left to the address server.
    assert!(matches!(
        run(&mut h, &request(KNOWN, MessageType::Discover), 67),
        Outcome::Drop(DropReason::NotForProxy)
    ));
    let mut r = request(KNOWN, MessageType::Request);
    pxe(&mut r, 7);
    r.set_ciaddr(Ipv4Addr::new(10, 77, 0, 150));
    let mut i = info(PXE_PORT);
    i.src = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 150), 68);
    let o = h.handle(&r.to_vec().unwrap(), &i, 1);
    assert_eq!(dest_of(&o), i.src);
    assert_eq!(reply_of(&o).opts().msg_type(), Some(MessageType::Ack));
}

#[test]
fn config_errors_name_the_problem() {
    let mut c = config(false);
    c.reservations[0].ip = Ipv4Addr::new(192, 0, 2, 1);
    let e = c.compile().unwrap_err().to_string();
    assert!(
        e.contains("52:54:00:00:00:01") && e.contains("192.0.2.1"),
        "{e}"
    );
    let mut c = config(false);
    c.networks[0]
        .options
        .insert(3, OptionValue::Text("not an address".into()));
    let e = c.compile().unwrap_err().to_string();
    assert!(e.contains("option 3"), "{e}");
    let mut c = config(false);
    c.networks[0].options.insert(53, OptionValue::U8(1));
    assert!(c.compile().is_err());
    let mut c = config(false);
    c.networks[1].subnet = "10.77.0.128/25".parse().unwrap();
    c.networks[1].ranges.clear();
    c.networks[1].routers.clear();
    let e = c.compile().unwrap_err().to_string();
    assert!(e.contains("overlaps"), "{e}");
}

fn valid_discover() -> Vec<u8> {
    let mut d = request(KNOWN, MessageType::Discover);
    pxe(&mut d, 0);
    d.opts_mut().insert(DhcpOption::Hostname("node".into()));
    d.to_vec().unwrap()
}

#[test]
fn bad_packets_are_dropped_and_counted() {
    let stats = Arc::new(Stats::default());
    let mut h = Handler::new(
        HandlerOptions {
            server_id: SERVER,
            mode: Mode::Server,
            port: 67,
        },
        Arc::new(config(true).compile().unwrap()),
        stats.clone(),
        vec![],
        vec![],
    );
    let good = valid_discover();
    let i = info(67);
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (vec![], DropReason::Truncated),
        (good[..239].to_vec(), DropReason::Truncated),
        (vec![0u8; 1600], DropReason::Oversized),
        (
            {
                let mut b = good.clone();
                b[236] = 0;
                b
            },
            DropReason::BadCookie,
        ),
        (
            {
                let mut b = good.clone();
                b[0] = 2;
                b
            },
            DropReason::WrongOpCode,
        ),
        (
            {
                let mut b = good.clone();
                b[2] = 17;
                b
            },
            DropReason::UnsupportedHardware,
        ),
        (
            {
                let mut b = good[..240].to_vec();
                b.extend_from_slice(&[53, 1, 1, 50, 3, 10, 77, 0, 255]);
                b
            },
            DropReason::BadOptionLength,
        ),
        (
            {
                let mut b = good[..240].to_vec();
                b.extend_from_slice(&[53, 1, 1, 12, 200, b'a']);
                b
            },
            DropReason::BadOptionLength,
        ),
        (
            {
                let mut b = good[..240].to_vec();
                b.extend_from_slice(&[53, 1, 1, 80, 2, 0, 0, 255]);
                b
            },
            DropReason::BadOptionLength,
        ),
        (
            {
                let mut b = good[..240].to_vec();
                b.extend_from_slice(&[53, 1, 1, 81, 1, 0, 255]);
                b
            },
            DropReason::BadOptionLength,
        ),
        (
            {
                let mut b = good[..240].to_vec();
                b.extend_from_slice(&[53, 1, 2, 255]);
                b
            },
            DropReason::BadMessageType,
        ),
        (
            {
                let mut b = good[..240].to_vec();
                b.push(255);
                b
            },
            DropReason::BadMessageType,
        ),
    ];
    for (n, (bytes, want)) in cases.iter().enumerate() {
        match h.handle(bytes, &i, 1) {
            Outcome::Drop(r) => assert_eq!(r, *want, "case {n}"),
            other => panic!("case {n}: expected drop {want:?}, got {other:?}"),
        }
    }
    assert_eq!(stats.dropped_total(), cases.len() as u64);
    assert_eq!(stats.dropped_for(DropReason::BadOptionLength), 4);
}

/// xorshift: enough to spray bytes; no dependency, and the same run every time.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for mode in [Mode::Server, Mode::Proxy] {
        let mut h = handler(mode, true);
        let good = valid_discover();
        for round in 0..20_000u32 {
            let mut b = match round % 4 {
                // pure noise of any length
                0 => (0..rng.next() % 700).map(|_| rng.next() as u8).collect(),
                // a valid header with noise for options
                1 => {
                    let mut b = good[..240].to_vec();
                    let n = rng.next() % 300;
                    b.extend((0..n).map(|_| rng.next() as u8));
                    b
                }
                // a valid packet with a few bytes flipped
                2 => {
                    let mut b = good.clone();
                    for _ in 0..(1 + rng.next() % 4) {
                        let at = (rng.next() as usize) % b.len();
                        b[at] = rng.next() as u8;
                    }
                    b
                }
                // a valid packet cut short
                _ => {
                    let cut = (rng.next() as usize) % good.len();
                    good[..cut].to_vec()
                }
            };
            if round % 7 == 0 && b.len() > 242 {
                // options shaped like real ones, with random codes and lengths
                b.truncate(240);
                for _ in 0..(rng.next() % 12) {
                    let code = rng.next() as u8;
                    let len = (rng.next() % 8) as u8;
                    b.push(code);
                    b.push(len);
                    b.extend((0..len).map(|_| rng.next() as u8));
                }
                b.extend_from_slice(&[53, 1, (1 + rng.next() % 8) as u8, 255]);
            }
            let port = if round % 3 == 0 { PXE_PORT } else { 67 };
            let _ = h.handle(&b, &info(port), u64::from(round));
        }
    }
}
