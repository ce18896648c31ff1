//! The DHCP configuration a design implies: its networks with their options and ranges,
//! and a reservation for every host interface with a MAC and an address.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use lariat_boot::dhcp::{self, BootConfig, DhcpConfig, MacAddr, OptionValue, Reservation, Subnet};
use lariat_workflows::design::{Design, RangeKind};

/// The DHCP configuration a design implies: every IPv4 network with its options and
/// dhcp ranges, and a reservation for every host interface with a MAC and an address.
pub fn dhcp_config(design: &Design, boot: &BootConfig, discovery: bool) -> DhcpConfig {
    let mut networks = Vec::new();
    for n in design.networks() {
        let ipnet::IpNet::V4(v4) = n.spec.cidr else {
            continue;
        };
        let mut net = dhcp::Network::new(
            n.name.clone(),
            Subnet {
                addr: v4.network(),
                prefix: v4.prefix_len(),
            },
        );
        net.routers = n.spec.gateway.iter().filter_map(v4_of).collect();
        net.dns = n.spec.dns.iter().filter_map(v4_of).collect();
        net.domain = n.spec.domain.clone();
        net.ntp = n.spec.ntp.iter().filter_map(|s| s.parse().ok()).collect();
        net.mtu = n.spec.mtu.and_then(|m| u16::try_from(m).ok());
        net.ranges = n
            .spec
            .ranges
            .iter()
            .filter(|r| r.kind == RangeKind::Dhcp)
            .filter_map(|r| {
                Some(dhcp::Range {
                    start: v4_of(&r.start)?,
                    end: v4_of(&r.end)?,
                })
            })
            .collect();
        net.options = custom_options(&n.name, &n.spec.dhcp_options);
        networks.push(net);
    }
    let mut reservations = Vec::new();
    for h in design.hosts() {
        let Ok(host) = design.resolved_host(&h.name) else {
            continue;
        };
        for i in &host.interfaces {
            let Some(mac) = i.interface.mac else { continue };
            // A bond member carries no address of its own: the one the firmware PXE-boots
            // from gets the bond's (an address is reserved for one MAC only).
            let is_pxe = host.pxe_interface.as_deref() == Some(i.interface.name.as_str());
            let addressed = if i.interface.address.is_some() {
                Some(i)
            } else if !is_pxe {
                None
            } else {
                host.interfaces.iter().find(|b| {
                    b.interface.members.contains(&i.interface.name) && b.interface.address.is_some()
                })
            };
            let Some(a) = addressed else { continue };
            let Some(ip) = a.interface.address.as_ref().and_then(v4_of) else {
                continue;
            };
            reservations.push(Reservation {
                mac: MacAddr(mac.0),
                ip,
                hostname: Some(host.name.clone()),
                network: a.interface.network.clone(),
            });
        }
    }
    DhcpConfig {
        discovery,
        boot: boot.clone(),
        networks,
        reservations,
        lease_time: 3600,
        decline_hold: 600,
    }
}

fn v4_of(ip: &IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v) => Some(*v),
        IpAddr::V6(_) => None,
    }
}

/// Custom options from the design, by code (`"119"`) or by the names operators write
/// (`domain-search`). Values: a string, a number, a boolean, or a list of addresses.
fn custom_options(
    network: &str,
    opts: &BTreeMap<String, serde_json::Value>,
) -> BTreeMap<u8, OptionValue> {
    let mut out = BTreeMap::new();
    for (key, v) in opts {
        let code = match key.as_str() {
            "domain-search" => Some(119),
            "tftp-server-name" => Some(66),
            "bootfile-name" => Some(67),
            "time-offset" => Some(2),
            "log-servers" => Some(7),
            "interface-mtu" => Some(26),
            "ntp-servers" => Some(42),
            k => k.parse::<u8>().ok(),
        };
        let value = match v {
            serde_json::Value::String(s) if code == Some(119) => {
                Some(OptionValue::Hex(dns_search_list(s)))
            }
            serde_json::Value::String(s) => Some(OptionValue::Text(s.clone())),
            serde_json::Value::Bool(b) => Some(OptionValue::Bool(*b)),
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(OptionValue::U32),
            serde_json::Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().and_then(|s| s.parse::<Ipv4Addr>().ok()))
                .collect::<Option<Vec<_>>>()
                .map(OptionValue::Addresses),
            _ => None,
        };
        match (code, value) {
            (Some(c), Some(v)) => {
                out.insert(c, v);
            }
            _ => tracing::warn!(
                network,
                option = %key,
                "DHCP option skipped: give a code (1-254) or a known name, and a string, number, boolean or list of IPv4 addresses"
            ),
        }
    }
    out
}

/// Option 119 (RFC 3397): each domain as DNS labels, hex-encoded for [`OptionValue::Hex`].
fn dns_search_list(domains: &str) -> String {
    let mut bytes = Vec::new();
    for d in domains.split([',', ' ']).filter(|d| !d.is_empty()) {
        for label in d.trim_end_matches('.').split('.') {
            bytes.push(label.len().min(63) as u8);
            bytes.extend(label.bytes().take(63));
        }
        bytes.push(0);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_design_gives_reservations_for_pxe_macs_with_bond_addresses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/design");
        let loaded = lariat_workflows::design::load_dir(&dir);
        assert!(!loaded.report.has_errors());
        let cfg = dhcp_config(&loaded.design, &BootConfig::default(), false);
        let r = cfg
            .reservations
            .iter()
            .find(|r| r.mac == MacAddr([0x52, 0x54, 0, 0x77, 1, 1]))
            .expect("ams1-a01's eno1 is reserved");
        assert_eq!(
            r.ip,
            Ipv4Addr::new(10, 77, 0, 11),
            "eno1 boots with bond0's address"
        );
        assert_eq!(r.hostname.as_deref(), Some("ams1-a01"));
        let prov = cfg.networks.iter().find(|n| n.name == "prov").unwrap();
        assert_eq!(prov.routers, [Ipv4Addr::new(10, 77, 0, 1)]);
        assert_eq!(prov.ranges.len(), 1, "only the dhcp range");
        assert!(prov.options.contains_key(&119));
        cfg.compile().expect("the DHCP server accepts it");
    }

    #[test]
    fn search_domains_encode_as_labels() {
        assert_eq!(dns_search_list("a.bc"), "0161026263".to_string() + "00");
    }
}
