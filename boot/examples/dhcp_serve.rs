//! A Lariat DHCP server from the command line, for benchmarks and manual tests.
//!
//! dhcp_serve --interface IFACE --server-id IP --db FILE --subnet CIDR --range START-END
//!            [--router IP] [--durability full|normal] [--lease-time SECS]
//!            [--reserve MAC=IP]... [--no-discovery] [--proxy]
//!
//! Serves one network; discovery is on unless --no-discovery. Prints `ready` on stdout
//! once it listens, runs until SIGTERM or Ctrl-C, then prints its counters as JSON.

use std::net::Ipv4Addr;
use std::process::ExitCode;

use lariat_boot::dhcp::{
    DhcpConfig, DhcpServer, DropReason, Durability, Listen, MacAddr, Mode, Network, Range,
    Reservation, ServerOptions,
};

fn usage(msg: &str) -> ExitCode {
    eprintln!("dhcp_serve: {msg}");
    eprintln!(
        "usage: dhcp_serve --interface IFACE --server-id IP --db FILE --subnet CIDR --range START-END [--router IP] [--durability full|normal] [--lease-time SECS] [--reserve MAC=IP]... [--no-discovery] [--proxy]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut iface = None;
    let mut server_id = None;
    let mut db = None;
    let mut subnet = None;
    let mut ranges = vec![];
    let mut routers = vec![];
    let mut reservations = vec![];
    let mut durability = Durability::Full;
    let mut lease_time = 3600;
    let mut discovery = true;
    let mut mode = Mode::Server;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        let r: Result<(), String> = (|| {
            match a.as_str() {
                "--interface" => iface = Some(val()?),
                "--server-id" => {
                    server_id = Some(val()?.parse::<Ipv4Addr>().map_err(|e| e.to_string())?)
                }
                "--db" => db = Some(val()?),
                "--subnet" => subnet = Some(val()?.parse().map_err(|e: String| e)?),
                "--range" => {
                    let v = val()?;
                    let (s, e) = v.split_once('-').ok_or("range is START-END")?;
                    ranges.push(Range {
                        start: s.parse().map_err(|_| format!("bad range start '{s}'"))?,
                        end: e.parse().map_err(|_| format!("bad range end '{e}'"))?,
                    });
                }
                "--router" => routers.push(val()?.parse().map_err(|_| "bad router")?),
                "--reserve" => {
                    let v = val()?;
                    let (m, ip) = v.split_once('=').ok_or("reserve is MAC=IP")?;
                    reservations.push(Reservation {
                        mac: m.parse::<MacAddr>()?,
                        ip: ip.parse().map_err(|_| format!("bad address '{ip}'"))?,
                        hostname: None,
                        network: None,
                    });
                }
                "--durability" => {
                    durability = match val()?.as_str() {
                        "full" => Durability::Full,
                        "normal" => Durability::Normal,
                        o => return Err(format!("durability '{o}' is not full or normal")),
                    }
                }
                "--lease-time" => lease_time = val()?.parse().map_err(|_| "bad lease time")?,
                "--no-discovery" => discovery = false,
                "--proxy" => mode = Mode::Proxy,
                o => return Err(format!("unknown argument '{o}'")),
            }
            Ok(())
        })();
        if let Err(e) = r {
            return usage(&e);
        }
    }
    let (Some(iface), Some(server_id), Some(db), Some(subnet)) = (iface, server_id, db, subnet)
    else {
        return usage("--interface, --server-id, --db and --subnet are required");
    };
    let mut net = Network::new("bench", subnet);
    net.ranges = ranges;
    net.routers = routers;
    let config = DhcpConfig {
        discovery,
        lease_time,
        networks: vec![net],
        reservations,
        ..DhcpConfig::default()
    };
    let mut opts = ServerOptions::new(Listen::Interface(iface), server_id, db);
    opts.durability = durability;
    opts.mode = mode;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return usage(&format!("cannot start the runtime: {e}")),
    };
    rt.block_on(async move {
        let handle = match DhcpServer::start(opts, config).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("dhcp_serve: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("ready");
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("dhcp_serve: {e}");
                return ExitCode::FAILURE;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let s = handle.stats().clone();
        handle.shutdown().await;
        use dhcproto::v4::MessageType as T;
        let drops: Vec<String> = DropReason::ALL
            .iter()
            .filter(|r| s.dropped_for(**r) > 0)
            .map(|r| format!("\"{}\":{}", r.as_str(), s.dropped_for(*r)))
            .collect();
        println!(
            "{{\"discover\":{},\"request\":{},\"offers\":{},\"acks\":{},\"naks\":{},\"lease_writes\":{},\"commits\":{},\"dropped\":{{{}}}}}",
            s.received_of(T::Discover),
            s.received_of(T::Request),
            s.replies_of(T::Offer),
            s.replies_of(T::Ack),
            s.replies_of(T::Nak),
            s.lease_writes(),
            s.commits(),
            drops.join(",")
        );
        ExitCode::SUCCESS
    })
}
