//! The validation rules (see the table in the module documentation of `design`).
//!
//! References are checked on each document as written, so that a broken reference in a
//! profile is reported once, at the profile, not once per host. Checks that need the
//! effective values (addressing, storage, BMC, templates) run on resolved hosts.
//! Uniqueness and range checks use maps, so the whole pass is linear in the hosts.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use super::render::{describe, environment, render_context};
use super::report::Finding;
use super::resolve::ResolvedHost;
use super::schema::{
    Addressing, BmcKind, BondMode, Interface, Kind, Mac, NetworkSpec, RangeKind, Size, Volume,
};
use super::{Design, DesignError};

pub(crate) fn validate(design: &Design, out: &mut Vec<Finding>) {
    sites(design, out);
    networks(design, out);
    links(design, out);
    profiles(design, out);
    host_layers(design, out);
    resolved_hosts(design, out);
    boot_profiles(design, out);
    windows(design, out);
    templates(design, out);
}

fn err(
    rule: &str,
    kind: Kind,
    name: &str,
    path: impl Into<String>,
    message: impl Into<String>,
) -> Finding {
    Finding::error(rule, kind.as_str(), name, path, message)
}

fn unresolved(kind: Kind, name: &str, path: &str, target: Kind, missing: &str) -> Finding {
    err(
        "unresolved-reference",
        kind,
        name,
        path,
        format!("{kind} '{name}': {path} refers to {target} '{missing}', which does not exist"),
    )
}

fn check_ref(
    design: &Design,
    out: &mut Vec<Finding>,
    kind: Kind,
    name: &str,
    path: &str,
    target: Kind,
    reference: Option<&str>,
) {
    if let Some(r) = reference
        && !design.resolves(target, r)
    {
        out.push(unresolved(kind, name, path, target, r));
    }
}

fn is_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

fn sites(design: &Design, out: &mut Vec<Finding>) {
    for site in design.sites() {
        for (field, value) in [
            ("agent_endpoint", &site.spec.agent_endpoint),
            ("boot_assets", &site.spec.boot_assets),
        ] {
            if !is_url(value) {
                out.push(err(
                    "invalid-field",
                    Kind::Site,
                    &site.name,
                    format!("spec.{field}"),
                    format!(
                        "Site '{}': {field} '{value}' is not an http:// or https:// URL",
                        site.name
                    ),
                ));
            }
        }
    }
}

fn mtu_in_range(mtu: Option<u32>) -> bool {
    mtu.is_none_or(|m| (576..=9216).contains(&m))
}

fn networks(design: &Design, out: &mut Vec<Finding>) {
    for net in design.networks() {
        let n = &net.name;
        let s = &net.spec;
        if s.cidr != s.cidr.trunc() {
            out.push(err(
                "cidr-host-bits",
                Kind::Network,
                n,
                "spec.cidr",
                format!(
                    "Network '{n}': CIDR {} has host bits set (did you mean {}?)",
                    s.cidr,
                    s.cidr.trunc()
                ),
            ));
        }
        if s.vlan.is_some_and(|v| !(1..=4094).contains(&v)) {
            out.push(err(
                "invalid-field",
                Kind::Network,
                n,
                "spec.vlan",
                format!("Network '{n}': VLAN must be 1-4094"),
            ));
        }
        if !mtu_in_range(s.mtu) {
            out.push(err(
                "invalid-field",
                Kind::Network,
                n,
                "spec.mtu",
                format!("Network '{n}': MTU must be 576-9216"),
            ));
        }
        if let Some(gw) = s.gateway
            && !s.cidr.contains(&gw)
        {
            out.push(err(
                "ip-outside-cidr",
                Kind::Network,
                n,
                "spec.gateway",
                format!("Network '{n}': gateway {gw} is outside {}", s.cidr),
            ));
        }
        for (i, r) in s.ranges.iter().enumerate() {
            for (end, ip) in [("start", r.start), ("end", r.end)] {
                if !s.cidr.contains(&ip) {
                    out.push(err(
                        "ip-outside-cidr",
                        Kind::Network,
                        n,
                        format!("spec.ranges[{i}].{end}"),
                        format!("Network '{n}': range {end} {ip} is outside {}", s.cidr),
                    ));
                }
            }
            if r.start > r.end {
                out.push(err(
                    "range-invalid",
                    Kind::Network,
                    n,
                    format!("spec.ranges[{i}]"),
                    format!(
                        "Network '{n}': range starts at {} after its end {}",
                        r.start, r.end
                    ),
                ));
            }
        }
        let mut sorted: Vec<(usize, IpAddr, IpAddr)> = s
            .ranges
            .iter()
            .enumerate()
            .filter(|(_, r)| r.start <= r.end)
            .map(|(i, r)| (i, r.start, r.end))
            .collect();
        sorted.sort_by_key(|r| r.1);
        for w in sorted.windows(2) {
            if w[1].1 <= w[0].2 {
                out.push(err(
                    "range-invalid",
                    Kind::Network,
                    n,
                    format!("spec.ranges[{}]", w[1].0),
                    format!(
                        "Network '{n}': range {}-{} overlaps range {}-{}",
                        w[1].1, w[1].2, w[0].1, w[0].2
                    ),
                ));
            }
        }
    }
}

/// Which bond modes accept an option; `None` for an option Linux bonding does not have.
fn option_modes(option: &str) -> Option<&'static [BondMode]> {
    use BondMode::*;
    const ALL: &[BondMode] = &[
        BalanceRr,
        ActiveBackup,
        BalanceXor,
        Broadcast,
        Lacp,
        BalanceTlb,
        BalanceAlb,
    ];
    // ARP monitoring does not work with 802.3ad, tlb and alb (kernel bonding docs).
    const ARP: &[BondMode] = &[BalanceRr, ActiveBackup, BalanceXor, Broadcast];
    Some(match option {
        "miimon" | "updelay" | "downdelay" | "use_carrier" | "all_slaves_active"
        | "resend_igmp" | "peer_notif_delay" => ALL,
        "arp_interval" | "arp_ip_target" | "arp_validate" | "arp_all_targets" => ARP,
        "lacp_rate" | "ad_select" | "min_links" | "ad_actor_sys_prio" | "ad_user_port_key"
        | "ad_actor_system" => &[Lacp],
        "xmit_hash_policy" => &[BalanceXor, Lacp, BalanceTlb],
        "primary" | "primary_reselect" => &[ActiveBackup, BalanceTlb, BalanceAlb],
        "fail_over_mac" | "num_grat_arp" | "num_unsol_na" => &[ActiveBackup],
        "packets_per_slave" => &[BalanceRr],
        "tlb_dynamic_lb" => &[BalanceTlb],
        "lp_interval" => &[BalanceTlb, BalanceAlb],
        _ => return None,
    })
}

/// Why a bond option's value is wrong, if it is.
fn option_value_problem(option: &str, v: &Value) -> Option<String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return Some("must be a string or a number".into()),
    };
    let allowed: &[&str] = match option {
        "lacp_rate" => &["slow", "fast", "0", "1"],
        "xmit_hash_policy" => &[
            "layer2",
            "layer2+3",
            "layer3+4",
            "encap2+3",
            "encap3+4",
            "vlan+srcmac",
        ],
        "ad_select" => &["stable", "bandwidth", "count"],
        "fail_over_mac" => &["none", "active", "follow"],
        "arp_validate" => &["none", "active", "backup", "all", "filter"],
        "primary_reselect" => &["always", "better", "failure"],
        "miimon" | "updelay" | "downdelay" | "arp_interval" | "min_links" | "num_grat_arp"
        | "num_unsol_na" | "packets_per_slave" | "resend_igmp" | "lp_interval"
        | "peer_notif_delay" | "ad_actor_sys_prio" | "ad_user_port_key" => {
            return text
                .parse::<u32>()
                .err()
                .map(|_| format!("'{text}' is not a whole number"));
        }
        _ => return None,
    };
    (!allowed.contains(&text.as_str()))
        .then(|| format!("'{text}' is not one of {}", allowed.join(", ")))
}

fn links(design: &Design, out: &mut Vec<Finding>) {
    for link in design.links() {
        let n = &link.name;
        let s = &link.spec;
        if !mtu_in_range(s.mtu) {
            out.push(err(
                "invalid-field",
                Kind::NetworkLink,
                n,
                "spec.mtu",
                format!("NetworkLink '{n}': MTU must be 576-9216"),
            ));
        }
        for (i, net) in s.networks.iter().enumerate() {
            let path = format!("spec.networks[{i}]");
            if !design.resolves(Kind::Network, net) {
                out.push(unresolved(Kind::NetworkLink, n, &path, Kind::Network, net));
                continue;
            }
            if let (Some(link_mtu), Some(network)) = (s.mtu, design.network(net)) {
                let net_mtu = network.spec.mtu.unwrap_or(1500);
                if net_mtu > link_mtu {
                    out.push(err(
                        "mtu-exceeds-link",
                        Kind::NetworkLink,
                        n,
                        path,
                        format!(
                            "NetworkLink '{n}': network '{net}' has MTU {net_mtu}, more than the link's {link_mtu}"
                        ),
                    ));
                }
            }
        }
        if s.networks.len() > 1 && !s.trunk {
            out.push(err(
                "trunk-required",
                Kind::NetworkLink,
                n,
                "spec.trunk",
                format!(
                    "NetworkLink '{n}' carries {} networks, which needs 802.1q trunking (trunk: true)",
                    s.networks.len()
                ),
            ));
        }
        if let Some(bond) = &s.bond {
            for (opt, v) in &bond.options {
                let path = format!("spec.bond.options.{opt}");
                let problem = match option_modes(opt) {
                    None => Some(format!("'{opt}' is not a Linux bonding option")),
                    Some(modes) if !modes.contains(&bond.mode) => Some(format!(
                        "'{opt}' does not apply to bond mode {}",
                        bond.mode.as_str()
                    )),
                    Some(_) => option_value_problem(opt, v).map(|p| format!("{opt}: {p}")),
                };
                if let Some(p) = problem {
                    out.push(err(
                        "bond-options",
                        Kind::NetworkLink,
                        n,
                        path,
                        format!("NetworkLink '{n}': {p}"),
                    ));
                }
            }
        }
    }
}

fn interface_refs(
    design: &Design,
    out: &mut Vec<Finding>,
    kind: Kind,
    name: &str,
    interfaces: &[Interface],
) {
    for i in interfaces {
        let base = format!("spec.interfaces[{}]", i.name);
        check_ref(
            design,
            out,
            kind,
            name,
            &format!("{base}.network"),
            Kind::Network,
            i.network.as_deref(),
        );
        check_ref(
            design,
            out,
            kind,
            name,
            &format!("{base}.link"),
            Kind::NetworkLink,
            i.link.as_deref(),
        );
    }
}

fn profiles(design: &Design, out: &mut Vec<Finding>) {
    let used = &design.referenced_profiles;
    let mut cycles_seen: HashSet<Vec<String>> = HashSet::new();
    for p in design.host_profiles() {
        let n = &p.name;
        let s = &p.spec;
        check_ref(
            design,
            out,
            Kind::HostProfile,
            n,
            "spec.parent",
            Kind::HostProfile,
            s.parent.as_deref(),
        );
        check_ref(
            design,
            out,
            Kind::HostProfile,
            n,
            "spec.hardware_profile",
            Kind::HardwareProfile,
            s.hardware_profile.as_deref(),
        );
        check_ref(
            design,
            out,
            Kind::HostProfile,
            n,
            "spec.boot_profile",
            Kind::BootProfile,
            s.boot_profile.as_deref(),
        );
        interface_refs(design, out, Kind::HostProfile, n, &s.interfaces);
        // Follow parents; a name seen twice closes a cycle.
        let mut chain: Vec<&str> = vec![n];
        let mut cur = s.parent.as_deref();
        while let Some(c) = cur {
            if let Some(pos) = chain.iter().position(|x| *x == c) {
                let mut members: Vec<String> = chain[pos..].iter().map(|x| x.to_string()).collect();
                members.sort();
                if cycles_seen.insert(members.clone()) {
                    // Report at the cycle's first member by name, listing it from there.
                    let start = chain[pos..]
                        .iter()
                        .position(|x| *x == members[0])
                        .unwrap_or(0)
                        + pos;
                    let mut shown: Vec<&str> = chain[start..].to_vec();
                    shown.extend(&chain[pos..start]);
                    shown.push(shown[0]);
                    out.push(err(
                        "inheritance-cycle",
                        Kind::HostProfile,
                        &members[0],
                        "spec.parent",
                        format!("host profiles inherit in a cycle: {}", shown.join(" -> ")),
                    ));
                }
                break;
            }
            chain.push(c);
            cur = design
                .host_profile(c)
                .and_then(|p| p.spec.parent.as_deref());
        }
        if !used.contains(n.as_str()) {
            out.push(Finding::warning(
                "unused-profile",
                Kind::HostProfile.as_str(),
                n.as_str(),
                "name",
                format!("HostProfile '{n}' is used by no host and no profile"),
            ));
        }
    }
}

fn host_layers(design: &Design, out: &mut Vec<Finding>) {
    for h in design.hosts() {
        let n = &h.name;
        let s = &h.spec;
        check_ref(
            design,
            out,
            Kind::Host,
            n,
            "spec.site",
            Kind::Site,
            s.site.as_deref(),
        );
        check_ref(
            design,
            out,
            Kind::Host,
            n,
            "spec.profile",
            Kind::HostProfile,
            s.profile.as_deref(),
        );
        check_ref(
            design,
            out,
            Kind::Host,
            n,
            "spec.hardware_profile",
            Kind::HardwareProfile,
            s.hardware_profile.as_deref(),
        );
        check_ref(
            design,
            out,
            Kind::Host,
            n,
            "spec.boot_profile",
            Kind::BootProfile,
            s.boot_profile.as_deref(),
        );
        interface_refs(design, out, Kind::Host, n, &s.interfaces);
    }
}

/// What first claimed an address or a MAC, for the duplicate message.
struct Claim {
    owner: String,
    /// For a BMC's address: its port. BMCs may share an address on different ports (a
    /// chassis manager, or simulators); nothing else may share it.
    bmc_port: Option<u16>,
}

fn resolved_hosts(design: &Design, out: &mut Vec<Finding>) {
    let mut ips: HashMap<IpAddr, Claim> = HashMap::new();
    let mut macs: HashMap<Mac, Claim> = HashMap::new();
    for net in design.networks() {
        if let Some(gw) = net.spec.gateway {
            ips.insert(
                gw,
                Claim {
                    owner: format!("the gateway of network '{}'", net.name),
                    bmc_port: None,
                },
            );
        }
    }
    let mut results: Vec<(&String, &Result<_, DesignError>)> = design.resolved_results().collect();
    results.sort_by(|a, b| a.0.cmp(b.0));
    for (name, result) in results {
        let h = match result {
            Ok(h) => h,
            Err(DesignError::Invalid { message, .. }) => {
                out.push(err(
                    "invalid-field",
                    Kind::Host,
                    name,
                    "spec",
                    format!("Host '{name}' resolves to an invalid host: {message}"),
                ));
                continue;
            }
            // Missing profiles, cycles and broken layers are reported at their document.
            Err(_) => continue,
        };
        host_required(design, h, out);
        host_addresses(design, h, &mut ips, &mut macs, out);
        host_bmc(h, &mut ips, out);
        host_storage(h, out);
    }
}

fn host_required(design: &Design, h: &ResolvedHost, out: &mut Vec<Finding>) {
    let n = &h.name;
    if h.site.is_none() {
        out.push(err(
            "missing-field",
            Kind::Host,
            n,
            "spec.site",
            format!("Host '{n}' has no site"),
        ));
    }
    if h.never_provision {
        return;
    }
    if h.hardware_profile.is_none() {
        out.push(err(
            "missing-field",
            Kind::Host,
            n,
            "spec.hardware_profile",
            format!("Host '{n}' has no hardware profile (needed to PXE boot it; set never_provision: true for a host Lariat must not install)"),
        ));
    }
    if h.boot_profile.is_none() {
        out.push(err(
            "missing-field",
            Kind::Host,
            n,
            "spec.boot_profile",
            format!("Host '{n}' has no boot profile (set never_provision: true for a host Lariat must not install)"),
        ));
    }
    let hw_known = h
        .hardware_profile
        .as_deref()
        .is_some_and(|p| design.hardware_profile(p).is_some());
    if let (true, Some(pxe)) = (hw_known, h.pxe_interface.as_deref()) {
        match h.pxe() {
            None => out.push(err(
                "unresolved-reference",
                Kind::Host,
                n,
                "spec.interfaces",
                format!(
                    "Host '{n}': PXE interface '{pxe}' of hardware profile '{}' is not one of its interfaces",
                    h.hardware_profile.as_deref().unwrap_or_default()
                ),
            )),
            Some(i) if i.interface.mac.is_none() => out.push(err(
                "missing-field",
                Kind::Host,
                n,
                format!("spec.interfaces[{pxe}].mac"),
                format!("Host '{n}': PXE interface '{pxe}' has no MAC address"),
            )),
            Some(_) => {}
        }
    }
}

fn in_ranges(net: &NetworkSpec, kind: RangeKind, ip: IpAddr) -> bool {
    net.ranges
        .iter()
        .any(|r| r.kind == kind && r.start <= ip && ip <= r.end)
}

fn host_addresses(
    design: &Design,
    h: &ResolvedHost,
    ips: &mut HashMap<IpAddr, Claim>,
    macs: &mut HashMap<Mac, Claim>,
    out: &mut Vec<Finding>,
) {
    let n = &h.name;
    let names: HashSet<&str> = h
        .interfaces
        .iter()
        .map(|i| i.interface.name.as_str())
        .collect();
    for ri in &h.interfaces {
        let i = &ri.interface;
        let base = format!("spec.interfaces[{}]", i.name);
        for m in &i.members {
            if !names.contains(m.as_str()) {
                out.push(err(
                    "unresolved-reference",
                    Kind::Host,
                    n,
                    format!("{base}.members"),
                    format!("Host '{n}': bond member '{m}' is not an interface of the host"),
                ));
            }
        }
        if let Some(mac) = i.mac {
            let me = format!("interface {} of host '{n}'", i.name);
            if let Some(first) = macs.get(&mac) {
                out.push(err(
                    "duplicate-mac",
                    Kind::Host,
                    n,
                    format!("{base}.mac"),
                    format!(
                        "Host '{n}': MAC {mac} of {} is also on {}",
                        i.name, first.owner
                    ),
                ));
            } else {
                macs.insert(
                    mac,
                    Claim {
                        owner: me,
                        bmc_port: None,
                    },
                );
            }
        }
        let network = i.network.as_deref().and_then(|x| design.network(x));
        if let (Some(link), Some(net_name)) = (
            i.link.as_deref().and_then(|l| design.link(l)),
            i.network.as_deref(),
        ) && !link.spec.networks.is_empty()
            && !link.spec.networks.iter().any(|x| x == net_name)
        {
            out.push(err(
                "network-not-on-link",
                Kind::Host,
                n,
                format!("{base}.network"),
                format!(
                    "Host '{n}': network '{net_name}' is not among the networks of link '{}' ({})",
                    link.name,
                    link.spec.networks.join(", ")
                ),
            ));
        }
        let Some(addr) = i.address else { continue };
        if i.network.is_none() {
            out.push(err(
                "missing-field",
                Kind::Host,
                n,
                format!("{base}.network"),
                format!(
                    "Host '{n}': interface {} has an address but no network",
                    i.name
                ),
            ));
        }
        if let Some(first) = ips.get(&addr) {
            out.push(err(
                "duplicate-ip",
                Kind::Host,
                n,
                format!("{base}.address"),
                format!(
                    "Host '{n}': address {addr} of {} is also {}",
                    i.name, first.owner
                ),
            ));
        } else {
            ips.insert(
                addr,
                Claim {
                    owner: format!("the address of interface {} of host '{n}'", i.name),
                    bmc_port: None,
                },
            );
        }
        let Some(net) = network else { continue };
        let cidr: IpNet = net.spec.cidr;
        if !cidr.contains(&addr) {
            out.push(err(
                "ip-outside-cidr",
                Kind::Host,
                n,
                format!("{base}.address"),
                format!(
                    "Host '{n}': address {addr} of {} is outside network '{}' ({cidr})",
                    i.name, net.name
                ),
            ));
            continue;
        }
        if !net.spec.ranges.is_empty() {
            let (kind, word) = match i.addressing.unwrap_or(Addressing::Static) {
                Addressing::Static => (RangeKind::Static, "static"),
                Addressing::Dhcp => (RangeKind::Dhcp, "dhcp"),
            };
            if !in_ranges(&net.spec, kind, addr) {
                out.push(err(
                    "ip-outside-range",
                    Kind::Host,
                    n,
                    format!("{base}.address"),
                    format!(
                        "Host '{n}': {word} address {addr} of {} is in no {word} range of network '{}'",
                        i.name, net.name
                    ),
                ));
            }
        }
    }
}

fn host_bmc(h: &ResolvedHost, ips: &mut HashMap<IpAddr, Claim>, out: &mut Vec<Finding>) {
    let n = &h.name;
    let Some(bmc) = &h.bmc else { return };
    let Some(kind) = bmc.kind else {
        out.push(err(
            "missing-field",
            Kind::Host,
            n,
            "spec.bmc.type",
            format!("Host '{n}': bmc has no type (ipmi or redfish)"),
        ));
        return;
    };
    let word = match kind {
        BmcKind::Ipmi => "IPMI",
        BmcKind::Redfish => "Redfish",
    };
    let mut missing = Vec::new();
    if bmc.address.as_deref().is_none_or(str::is_empty) {
        missing.push("an address");
    }
    if bmc.credential.is_none() {
        missing.push("a credential reference ({env: NAME} or {file: PATH})");
    }
    if !missing.is_empty() {
        out.push(err(
            "bmc-incomplete",
            Kind::Host,
            n,
            "spec.bmc",
            format!("Host '{n}': {word} BMC has no {}", missing.join(" and no ")),
        ));
    }
    if let Some(ip) = bmc
        .address
        .as_deref()
        .and_then(|a| a.parse::<IpAddr>().ok())
    {
        let port = bmc.port.unwrap_or(match kind {
            BmcKind::Ipmi => 623,
            BmcKind::Redfish => 443,
        });
        match ips.get(&ip) {
            Some(first) if first.bmc_port.is_some_and(|p| p != port) => {}
            Some(first) => out.push(err(
                "duplicate-ip",
                Kind::Host,
                n,
                "spec.bmc.address",
                format!(
                    "Host '{n}': BMC address {ip} port {port} is also {}",
                    first.owner
                ),
            )),
            None => {
                ips.insert(
                    ip,
                    Claim {
                        owner: format!("the BMC address of host '{n}'"),
                        bmc_port: Some(port),
                    },
                );
            }
        }
    }
}

/// Why `sizes` do not fit in `capacity` bytes (unknown capacity: only the shares and the
/// number of "rest" sizes are checked).
fn fit_problem(capacity: Option<u64>, vols: &[Volume]) -> Option<String> {
    let mut fixed = 0u128;
    let mut percent = 0f64;
    let mut rest = 0usize;
    for v in vols {
        match v.size {
            Some(Size::Bytes(b)) => fixed += b as u128,
            Some(Size::AtLeast(b)) => {
                fixed += b as u128;
                rest += 1;
            }
            Some(Size::Percent(p)) => percent += p,
            None => {}
        }
    }
    if percent > 100.0 + 1e-9 {
        return Some(format!("shares add up to {percent}%, more than 100%"));
    }
    if rest > 1 {
        return Some(format!(
            "{rest} sizes take \"the rest\" (>N); at most one can"
        ));
    }
    let cap = capacity? as u128;
    let needed = fixed + (cap as f64 * percent / 100.0).ceil() as u128;
    (needed > cap).then(|| {
        format!(
            "sizes need {} but the device has {}",
            super::schema::Bytes(needed.min(u64::MAX as u128) as u64),
            super::schema::Bytes(cap as u64)
        )
    })
}

fn host_storage(h: &ResolvedHost, out: &mut Vec<Finding>) {
    let n = &h.name;
    let st = &h.storage;
    let vgs: HashSet<&str> = st.volume_groups.iter().map(|v| v.name.as_str()).collect();
    let mut mounts: HashMap<String, String> = HashMap::new();
    let mut mount = |m: &str, path: String, out: &mut Vec<Finding>| {
        if let Some(first) = mounts.get(m) {
            out.push(err(
                "duplicate-mountpoint",
                Kind::Host,
                n,
                format!("{path}.mountpoint"),
                format!("Host '{n}': mountpoint {m} is used by {path} and by {first}"),
            ));
        } else {
            mounts.insert(m.to_string(), path);
        }
    };
    let mut vg_size: HashMap<&str, Option<u64>> = HashMap::new();
    let mut root = false;
    for d in &st.disks {
        let base = format!("spec.storage.disks[{}]", d.name);
        if let Some(dev) = d.device.as_deref()
            && !dev.starts_with('/')
        {
            out.push(err(
                "unresolved-reference",
                Kind::Host,
                n,
                format!("{base}.device"),
                format!(
                    "Host '{n}': disk {} device '{dev}' is neither a path nor a device alias of hardware profile '{}'",
                    d.name,
                    h.hardware_profile.as_deref().unwrap_or("(none)")
                ),
            ));
        }
        if let Some(vg) = d.volume_group.as_deref() {
            if !d.partitions.is_empty() {
                out.push(err(
                    "disk-partitions-and-vg",
                    Kind::Host,
                    n,
                    base.clone(),
                    format!(
                        "Host '{n}': disk {} has partitions and is also in volume group '{vg}'; it can be one or the other",
                        d.name
                    ),
                ));
            }
            if !vgs.contains(vg) {
                out.push(err(
                    "unresolved-reference",
                    Kind::Host,
                    n,
                    format!("{base}.volume_group"),
                    format!("Host '{n}': disk {} names volume group '{vg}', which the host's storage does not define", d.name),
                ));
            }
            let e = vg_size.entry(vg).or_insert(Some(0));
            *e = match (*e, d.size) {
                (Some(a), Some(b)) => Some(a.saturating_add(b.0)),
                _ => None,
            };
        }
        for p in &d.partitions {
            if let Some(m) = p.mountpoint.as_deref() {
                root |= m == "/";
                mount(m, format!("{base}.partitions[{}]", p.name), out);
            }
        }
        if let Some(problem) = fit_problem(d.size.map(|b| b.0), &d.partitions) {
            out.push(err(
                "size-does-not-fit",
                Kind::Host,
                n,
                format!("{base}.partitions"),
                format!("Host '{n}': disk {}: {problem}", d.name),
            ));
        }
    }
    for vg in &st.volume_groups {
        let base = format!("spec.storage.volume_groups[{}]", vg.name);
        for lv in &vg.logical_volumes {
            if let Some(m) = lv.mountpoint.as_deref() {
                root |= m == "/";
                mount(m, format!("{base}.logical_volumes[{}]", lv.name), out);
            }
        }
        let cap = vg_size.get(vg.name.as_str()).copied().flatten();
        if let Some(problem) = fit_problem(cap, &vg.logical_volumes) {
            out.push(err(
                "size-does-not-fit",
                Kind::Host,
                n,
                format!("{base}.logical_volumes"),
                format!("Host '{n}': volume group {}: {problem}", vg.name),
            ));
        }
    }
    if !st.disks.is_empty() && !root {
        out.push(err(
            "no-root-filesystem",
            Kind::Host,
            n,
            "spec.storage",
            format!("Host '{n}': storage has disks but nothing is mounted at /"),
        ));
    }
}

fn boot_profiles(design: &Design, out: &mut Vec<Finding>) {
    // Hosts by boot profile, so each template is compiled once.
    let mut users: HashMap<&str, Vec<&ResolvedHost>> = HashMap::new();
    let mut names: Vec<&String> = design.hosts.keys().collect();
    names.sort();
    for name in names {
        if let Some(h) = design.resolved_ref(name)
            && let Some(bp) = h.boot_profile.as_deref()
        {
            users.entry(bp).or_default().push(h);
        }
    }
    for bp in design.boot_profiles() {
        let n = &bp.name;
        let s = &bp.spec;
        let assets: HashSet<&str> = s.assets.iter().map(|a| a.path.as_str()).collect();
        let files = std::iter::once(("spec.kernel".to_string(), &s.kernel)).chain(
            s.initrd
                .iter()
                .enumerate()
                .map(|(i, f)| (format!("spec.initrd[{i}]"), f)),
        );
        for (path, f) in files {
            if !assets.contains(f.as_str()) {
                out.push(err(
                    "asset-without-checksum",
                    Kind::BootProfile,
                    n,
                    path,
                    format!("BootProfile '{n}': {f} is not listed in assets with a sha256"),
                ));
            }
        }
        let Some(unattended) = &s.unattended else {
            continue;
        };
        let env = environment();
        let tmpl = match env.template_from_str(&unattended.template) {
            Ok(t) => t,
            Err(e) => {
                out.push(err(
                    "template-syntax",
                    Kind::BootProfile,
                    n,
                    "spec.unattended.template",
                    format!("BootProfile '{n}': unattended template: {}", describe(&e)),
                ));
                continue;
            }
        };
        for h in users.get(n.as_str()).map(Vec::as_slice).unwrap_or_default() {
            let rendered = render_context(design, h, n).and_then(|ctx| {
                tmpl.render(ctx).map_err(|e| DesignError::Render {
                    profile: n.clone(),
                    host: h.name.clone(),
                    message: describe(&e),
                })
            });
            if let Err(e) = rendered {
                out.push(err(
                    "template-render",
                    Kind::Host,
                    &h.name,
                    "spec.boot_profile",
                    e.to_string(),
                ));
            }
        }
    }
}

fn windows(design: &Design, out: &mut Vec<Finding>) {
    use crate::windows::{Schedule, WindowError};
    for w in design.windows() {
        let n = &w.name;
        if let Some(scope) = &w.spec.scope {
            for (i, site) in scope.sites.iter().enumerate() {
                check_ref(
                    design,
                    out,
                    Kind::MaintenanceWindow,
                    n,
                    &format!("spec.scope.sites[{i}]"),
                    Kind::Site,
                    Some(site),
                );
            }
        }
        let schedule = match Schedule::new(&w.spec) {
            Ok(s) => s,
            Err(e) => {
                let (rule, path) = match e {
                    WindowError::Zone(_) => ("invalid-timezone", "spec.timezone"),
                    WindowError::NoDuration => ("invalid-field", "spec.duration"),
                    WindowError::Fields { .. } | WindowError::Cron { .. } => {
                        ("invalid-cron", "spec.cron")
                    }
                };
                out.push(err(
                    rule,
                    Kind::MaintenanceWindow,
                    n,
                    path,
                    format!("MaintenanceWindow '{n}': {e}"),
                ));
                continue;
            }
        };
        // A cron that parses may still name no real moment (the 31st of February): a
        // window that can never open would hold its steps for good.
        if schedule.next_start(crate::windows::now_ms()).is_none() {
            out.push(err(
                "invalid-cron",
                Kind::MaintenanceWindow,
                n,
                "spec.cron",
                format!(
                    "MaintenanceWindow '{n}': cron expression '{}' never fires",
                    w.spec.cron
                ),
            ));
        }
    }
}

/// A template step's `for_each.max_per`: each key a host grouping that exists (`site`,
/// `rack`, or a label some host or host profile sets). Under a key nobody sets, every
/// host would be in one group, which is never what the author meant.
/// An `exec` step's script must be in the design's `scripts/` (one given by a run
/// parameter is checked when the step runs).
fn step_script(
    design: &Design,
    out: &mut Vec<Finding>,
    template: &str,
    step_name: &str,
    step: &Value,
) {
    let script = step.get("input").and_then(|i| i.get("script"));
    let Some(path) = script.and_then(Value::as_str) else {
        out.push(err(
            "missing-script",
            Kind::WorkflowTemplate,
            template,
            format!("spec.steps[{step_name}].input.script"),
            format!(
                "WorkflowTemplate '{template}': step '{step_name}' runs exec without `input.script` (the path of a file in a scripts/ folder of the design repository)"
            ),
        ));
        return;
    };
    // A path made from run parameters is checked when the step runs.
    if path.contains("${") || design.script(path).is_some() {
        return;
    }
    let known: Vec<&str> = design.script_paths().collect();
    out.push(err(
        "missing-script",
        Kind::WorkflowTemplate,
        template,
        format!("spec.steps[{step_name}].input.script"),
        format!(
            "WorkflowTemplate '{template}': step '{step_name}' runs script '{path}', which the design repository does not have (scripts: {})",
            if known.is_empty() { "none in a scripts/ folder".to_string() } else { known.join(", ") }
        ),
    ));
}

fn step_rolling_limits(
    design: &Design,
    out: &mut Vec<Finding>,
    template: &str,
    step_name: &str,
    step: &Value,
) {
    let Some(limits) = step
        .get("for_each")
        .and_then(|f| f.get("max_per"))
        .and_then(Value::as_object)
    else {
        return;
    };
    for key in limits.keys() {
        if key == "site" || key == "rack" {
            continue;
        }
        let set = design.hosts().any(|h| h.spec.labels.contains_key(key))
            || design
                .host_profiles()
                .any(|p| p.spec.labels.contains_key(key));
        if !set {
            out.push(err(
                "unknown-label",
                Kind::WorkflowTemplate,
                template,
                format!("spec.steps[{step_name}].for_each.max_per.{key}"),
                format!(
                    "WorkflowTemplate '{template}': step '{step_name}' limits hosts per '{key}', but no host or host profile has a label '{key}' (max_per counts by site, rack or a label)"
                ),
            ));
        }
    }
}

/// A template step's `window`: a name, or `{name, cutoff}`.
fn step_window(
    design: &Design,
    out: &mut Vec<Finding>,
    template: &str,
    step_name: &str,
    step: &Value,
) {
    use super::schema::WindowMode;
    let Some(w) = step.get("window") else {
        return;
    };
    let path = format!("spec.steps[{step_name}].window");
    let name = match w {
        Value::String(n) => n.as_str(),
        Value::Object(m) => match m.get("name").and_then(Value::as_str) {
            Some(n) => n,
            None => {
                out.push(err(
                    "invalid-field",
                    Kind::WorkflowTemplate,
                    template,
                    path,
                    format!(
                        "WorkflowTemplate '{template}': step '{step_name}': window needs a name (window: NAME, or window: {{name: NAME, cutoff: 45m}})"
                    ),
                ));
                return;
            }
        },
        _ => return,
    };
    let Some(doc) = design.window(name) else {
        if !design.resolves(Kind::MaintenanceWindow, name) {
            out.push(unresolved(
                Kind::WorkflowTemplate,
                template,
                &path,
                Kind::MaintenanceWindow,
                name,
            ));
        }
        return;
    };
    if doc.spec.mode == WindowMode::Deny {
        out.push(err(
            "invalid-field",
            Kind::WorkflowTemplate,
            template,
            path,
            format!(
                "WorkflowTemplate '{template}': step '{step_name}' is gated by '{name}', a deny window: deny windows stop steps by themselves, a step names the allow window it runs in"
            ),
        ));
        return;
    }
    // What the step needs left before the close, read as the engine reads the step
    // (a bad cutoff or timeout is the engine definition's finding, not this one's).
    #[derive(serde::Deserialize)]
    struct Gated {
        window: lariat_engine::WindowRef,
        #[serde(default, with = "lariat_engine::model::duration_text::optional")]
        timeout: Option<std::time::Duration>,
    }
    let Ok(gated) = serde_json::from_value::<Gated>(serde_json::json!({
        "window": w,
        "timeout": step.get("timeout"),
    })) else {
        return;
    };
    let need = gated.window.need(
        gated
            .timeout
            .unwrap_or(lariat_engine::model::DEFAULT_STEP_TIMEOUT),
    );
    let Ok(schedule) = crate::windows::Schedule::new(&doc.spec) else {
        return;
    };
    let need_ms = need.as_millis().min(i64::MAX as u128) as i64;
    // The next opening, followed from its start as far as the step needs: the answer
    // must not depend on the minute the design is checked.
    let open_for = schedule.next_start(crate::windows::now_ms()).and_then(|s| {
        schedule
            .opening_at(s, s.saturating_add(need_ms))
            .map(|o| o.closes_at - s)
    });
    if let Some(open_ms) = open_for
        && open_ms < need_ms
    {
        out.push(err(
            "window-too-short",
            Kind::WorkflowTemplate,
            template,
            path,
            format!(
                "WorkflowTemplate '{template}': step '{step_name}' needs {} left in window '{name}' to start (its {}), but the window is open for {}: it would never start",
                humantime::format_duration(need),
                if gated.window.cutoff.is_some() { "cutoff" } else { "timeout; set window: {name, cutoff} to start with less" },
                humantime::format_duration(std::time::Duration::from_millis(
                    open_ms.max(0) as u64
                )),
            ),
        ));
    }
}

fn templates(design: &Design, out: &mut Vec<Finding>) {
    for t in design.templates() {
        let n = &t.name;
        for p in t.spec.parameters.declaration_problems() {
            out.push(err(
                "invalid-parameter",
                Kind::WorkflowTemplate,
                n,
                "spec.parameters",
                format!("WorkflowTemplate '{n}': {p}"),
            ));
        }
        let mut step_names = BTreeSet::new();
        for (i, step) in t.spec.steps.iter().enumerate() {
            let name = step.get("name").and_then(Value::as_str);
            let action = step.get("action").and_then(Value::as_str);
            let Some(step_name) = name.filter(|_| action.is_some()) else {
                out.push(err(
                    "invalid-field",
                    Kind::WorkflowTemplate,
                    n,
                    format!("spec.steps[{i}]"),
                    format!(
                        "WorkflowTemplate '{n}': step #{i} needs a name and an action (strings)"
                    ),
                ));
                continue;
            };
            step_names.insert(step_name);
            step_window(design, out, n, step_name, step);
            step_rolling_limits(design, out, n, step_name, step);
            if action == Some("exec") {
                step_script(design, out, n, step_name, step);
            }
        }
    }
}
