//! Any datagram, on the server port or the proxyDHCP port, in server or proxy mode:
//! the DHCP handler must return a decision, never panic.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, OnceLock};

use lariat_boot::dhcp::{
    BootConfig, CompiledConfig, DhcpConfig, Handler, HandlerOptions, Mode, Network, PXE_PORT,
    Range, RecvInfo, Reservation, Stats,
};
use libfuzzer_sys::fuzz_target;

fn config() -> Arc<CompiledConfig> {
    static C: OnceLock<Arc<CompiledConfig>> = OnceLock::new();
    C.get_or_init(|| {
        let mut net = Network::new("lab", "10.77.0.0/24".parse().expect("subnet"));
        net.routers = vec![Ipv4Addr::new(10, 77, 0, 1)];
        net.ranges = vec![Range {
            start: Ipv4Addr::new(10, 77, 0, 100),
            end: Ipv4Addr::new(10, 77, 0, 110),
        }];
        let cfg = DhcpConfig {
            discovery: true,
            lease_time: 600,
            decline_hold: 60,
            boot: BootConfig {
                ipxe_script_url: Some("http://10.77.0.1/boot/ipxe?mac=${net0/mac}".into()),
                ..BootConfig::default()
            },
            networks: vec![net],
            reservations: vec![Reservation {
                mac: "52:54:00:00:00:01".parse().expect("mac"),
                ip: Ipv4Addr::new(10, 77, 0, 10),
                hostname: Some("n1".into()),
                network: None,
            }],
        };
        Arc::new(cfg.compile().expect("fuzz config"))
    })
    .clone()
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks mode and port; the rest is the datagram.
    let Some((sel, packet)) = data.split_first() else {
        return;
    };
    let mode = if sel & 1 == 0 {
        Mode::Server
    } else {
        Mode::Proxy
    };
    let port = if sel & 2 == 0 { 67 } else { PXE_PORT };
    let mut h = Handler::new(
        HandlerOptions {
            server_id: Ipv4Addr::new(10, 77, 0, 1),
            mode,
            port: 67,
        },
        config(),
        Arc::new(Stats::default()),
        vec![],
        vec![],
    );
    let info = RecvInfo {
        src: SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 50), 68),
        local_port: port,
        ifindex: 2,
        local_addr: Ipv4Addr::new(10, 77, 0, 1),
    };
    // Twice: the second sees the state the first left (offers, leases).
    let _ = h.handle(packet, &info, 1_000);
    let _ = h.handle(packet, &info, 1_001);
});
