//! Plain configuration for the DHCP server.
//!
//! Two kinds, because they change at different times:
//! - [`ServerOptions`] is fixed for the life of a server: where it listens, who it says it
//!   is, whether it hands out addresses or only boot information, and its lease file.
//! - [`DhcpConfig`] follows the active design (networks, reservations, boot settings) and
//!   can be replaced while the server runs, with [`crate::dhcp::DhcpHandle::replace_config`].
//!
//! Every type here derives serde so the glue can build it from anything; [`DhcpConfig::compile`]
//! checks it and says what is wrong, naming the network, range, reservation or option.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

use dhcproto::v4::{DhcpOption, OptionCode};
use dhcproto::{Decodable, Decoder};
use serde::{Deserialize, Serialize};

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Listen {
    /// Bind to one interface by name (SO_BINDTODEVICE): broadcasts from that link only.
    Interface(String),
    /// Listen on every interface; the incoming interface of each packet (IP_PKTINFO)
    /// chooses the network and the way out. The address is the server's own on the
    /// served links and only documents intent; sockets bind to 0.0.0.0 to see broadcasts.
    Address(Ipv4Addr),
}

/// Server or proxyDHCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Hands out addresses and boot information (port 67).
    #[default]
    Server,
    /// Boot information only, beside a DHCP server that owns addressing (ports 67 and 4011).
    Proxy,
}

/// How hard a lease commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// fsync every commit: an acknowledged lease survives power loss.
    #[default]
    Full,
    /// fsync at WAL checkpoints: an acknowledged lease survives a process crash.
    Normal,
}

/// Start-time settings of one DHCP server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerOptions {
    pub listen: Listen,
    /// Option 54, and the address clients name when they choose this server.
    pub server_id: Ipv4Addr,
    #[serde(default)]
    pub mode: Mode,
    /// SQLite file holding leases and discovered hosts (created if missing).
    pub lease_db: PathBuf,
    #[serde(default)]
    pub durability: Durability,
    /// UDP port for DHCP (67). Tests may move it; clients cannot.
    #[serde(default = "default_server_port")]
    pub port: u16,
}

fn default_server_port() -> u16 {
    67
}

impl ServerOptions {
    /// Options for a server on `interface` with identifier `server_id`.
    pub fn new(listen: Listen, server_id: Ipv4Addr, lease_db: impl Into<PathBuf>) -> Self {
        ServerOptions {
            listen,
            server_id,
            mode: Mode::Server,
            lease_db: lease_db.into(),
            durability: Durability::Full,
            port: 67,
        }
    }
}

/// The part that follows the active design; replaceable at runtime.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DhcpConfig {
    /// Answer unknown MACs from the networks' dynamic ranges and record them as
    /// discovered hosts. Off: unknown MACs are ignored.
    #[serde(default)]
    pub discovery: bool,
    /// Default lease time in seconds (a network may override it).
    #[serde(default = "default_lease_time")]
    pub lease_time: u32,
    /// How long a declined address is kept out of the pool, in seconds.
    #[serde(default = "default_decline_hold")]
    pub decline_hold: u32,
    #[serde(default)]
    pub boot: BootConfig,
    #[serde(default)]
    pub networks: Vec<Network>,
    #[serde(default)]
    pub reservations: Vec<Reservation>,
}

fn default_lease_time() -> u32 {
    3600
}
fn default_decline_hold() -> u32 {
    600
}

/// Boot information for PXE and iPXE clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootConfig {
    /// TFTP server: siaddr, and option 66 when the client asks for it.
    pub next_server: Option<Ipv4Addr>,
    /// Boot file for legacy BIOS PXE (option 93 = 0).
    pub bios_file: String,
    /// Boot file for x86-64 UEFI (option 93 = 7 or 9): `ipxe.efi` or `snponly.efi`.
    pub uefi_x64_file: String,
    /// Boot files for other architectures, by option 93 value (e.g. 11 = ARM64 UEFI).
    #[serde(default)]
    pub files_by_arch: BTreeMap<u16, String>,
    /// Given as the boot file to clients with user class `iPXE`. `{mac}` becomes the
    /// client's MAC (aa:bb:..); iPXE settings such as `${net0/mac}` pass through for iPXE
    /// to expand, e.g. `http://10.77.0.1:7300/boot/ipxe?mac=${net0/mac}`.
    pub ipxe_script_url: Option<String>,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            next_server: None,
            bios_file: "undionly.kpxe".into(),
            uefi_x64_file: "ipxe.efi".into(),
            files_by_arch: BTreeMap::new(),
            ipxe_script_url: None,
        }
    }
}

/// An IPv4 network in CIDR form, `10.77.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask_bits())
    }
    fn mask_bits(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask_bits() == u32::from(self.addr) & self.mask_bits()
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask_bits())
    }
    fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask_bits())
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' is not in CIDR form (10.0.0.0/24)"))?;
        let addr = a
            .parse()
            .map_err(|_| format!("'{a}' in '{s}' is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("prefix '{p}' in '{s}' is not 0..=32"))?;
        Ok(Subnet { addr, prefix })
    }
}

impl Serialize for Subnet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An Ethernet MAC address, `aa:bb:cc:dd:ee:ff` (also accepts `-` separators).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(format!("'{s}' is not a MAC address (aa:bb:cc:dd:ee:ff)"));
        }
        let mut m = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            m[i] = u8::from_str_radix(p, 16)
                .ok()
                .filter(|_| p.len() == 2)
                .ok_or_else(|| format!("'{s}' is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
        }
        Ok(MacAddr(m))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An inclusive range of addresses for dynamic leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

/// A custom option value, encoded as the option's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptionValue {
    Text(String),
    Addresses(Vec<Ipv4Addr>),
    U8(u8),
    U16(u16),
    U32(u32),
    Bool(bool),
    /// Raw payload as hex digits (`0a0b0c`, separators `:` and spaces allowed).
    Hex(String),
}

impl OptionValue {
    fn to_bytes(&self) -> Result<Vec<u8>, String> {
        Ok(match self {
            OptionValue::Text(s) => s.as_bytes().to_vec(),
            OptionValue::Addresses(a) => a.iter().flat_map(|ip| ip.octets()).collect(),
            OptionValue::U8(v) => vec![*v],
            OptionValue::U16(v) => v.to_be_bytes().to_vec(),
            OptionValue::U32(v) => v.to_be_bytes().to_vec(),
            OptionValue::Bool(b) => vec![u8::from(*b)],
            OptionValue::Hex(h) => {
                let digits: String = h.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
                if !digits.len().is_multiple_of(2) {
                    return Err(format!("hex value '{h}' has an odd number of digits"));
                }
                (0..digits.len())
                    .step_by(2)
                    .map(|i| {
                        digits
                            .get(i..i + 2)
                            .and_then(|d| u8::from_str_radix(d, 16).ok())
                            .ok_or_else(|| format!("hex value '{h}' has a non-hex digit"))
                    })
                    .collect::<Result<_, _>>()?
            }
        })
    }
}

/// One served network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub subnet: Subnet,
    #[serde(default)]
    pub routers: Vec<Ipv4Addr>,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    #[serde(default)]
    pub ntp: Vec<Ipv4Addr>,
    pub mtu: Option<u16>,
    /// Dynamic ranges (used only in discovery mode).
    #[serde(default)]
    pub ranges: Vec<Range>,
    /// Overrides [`DhcpConfig::lease_time`] on this network.
    pub lease_time: Option<u32>,
    /// Extra options by code; they replace a built-in option with the same code.
    #[serde(default)]
    pub options: BTreeMap<u8, OptionValue>,
}

impl Network {
    /// A network with only a name and a subnet.
    pub fn new(name: impl Into<String>, subnet: Subnet) -> Self {
        Network {
            name: name.into(),
            subnet,
            routers: vec![],
            dns: vec![],
            domain: None,
            ntp: vec![],
            mtu: None,
            ranges: vec![],
            lease_time: None,
            options: BTreeMap::new(),
        }
    }
}

/// A known host's interface: this MAC always gets this address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reservation {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub hostname: Option<String>,
    /// Network name; when absent, the network whose subnet holds `ip`.
    pub network: Option<String>,
}

/// What is wrong with a [`DhcpConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("network '{0}' is defined twice")]
    DuplicateNetwork(String),
    #[error("network '{network}': {detail}")]
    Network { network: String, detail: String },
    #[error("network '{network}' option {code}: {detail}")]
    Option {
        network: String,
        code: u8,
        detail: String,
    },
    #[error("reservation for {mac}: {detail}")]
    Reservation { mac: MacAddr, detail: String },
    #[error("boot settings: {0}")]
    Boot(String),
}

/// Options a network config may not set: they belong to the protocol, not the design.
const RESERVED_CODES: &[u8] = &[0, 50, 51, 52, 53, 54, 55, 57, 58, 59, 61, 82, 255];

/// A checked, indexed [`DhcpConfig`], as the packet handler reads it.
#[derive(Debug)]
pub struct CompiledConfig {
    pub(crate) source: DhcpConfig,
    pub(crate) networks: Vec<CompiledNetwork>,
    pub(crate) by_mac: HashMap<MacAddr, usize>,
    pub(crate) reserved_ips: HashSet<Ipv4Addr>,
}

#[derive(Debug)]
pub(crate) struct CompiledNetwork {
    pub(crate) net: Network,
    /// Options every reply on this network carries (mask, router, dns, ... and custom).
    pub(crate) options: Vec<DhcpOption>,
    pub(crate) lease_time: u32,
    /// Ranges as u32 bounds, with the subnet's own, broadcast and router addresses
    /// skipped at allocation time.
    pub(crate) ranges: Vec<(u32, u32)>,
}

impl DhcpConfig {
    /// Check the config and index it for the packet handler.
    pub fn compile(self) -> Result<CompiledConfig, ConfigError> {
        let mut names = HashSet::new();
        let mut networks = Vec::with_capacity(self.networks.len());
        for n in &self.networks {
            if !names.insert(n.name.clone()) {
                return Err(ConfigError::DuplicateNetwork(n.name.clone()));
            }
            networks.push(compile_network(n, self.lease_time)?);
        }
        for (i, a) in networks.iter().enumerate() {
            for b in &networks[i + 1..] {
                if a.net.subnet.contains(b.net.subnet.network())
                    || b.net.subnet.contains(a.net.subnet.network())
                {
                    return Err(ConfigError::Network {
                        network: b.net.name.clone(),
                        detail: format!(
                            "subnet {} overlaps network '{}' ({})",
                            b.net.subnet, a.net.name, a.net.subnet
                        ),
                    });
                }
            }
        }
        let mut by_mac = HashMap::new();
        let mut reserved_ips = HashSet::new();
        for (i, r) in self.reservations.iter().enumerate() {
            let err = |detail: String| ConfigError::Reservation { mac: r.mac, detail };
            let net = match &r.network {
                Some(name) => networks
                    .iter()
                    .find(|n| &n.net.name == name)
                    .ok_or_else(|| err(format!("network '{name}' is not defined")))?,
                None => networks
                    .iter()
                    .find(|n| n.net.subnet.contains(r.ip))
                    .ok_or_else(|| err(format!("no network holds {}", r.ip)))?,
            };
            if !net.net.subnet.contains(r.ip) {
                return Err(err(format!(
                    "{} is outside network '{}' ({})",
                    r.ip, net.net.name, net.net.subnet
                )));
            }
            if r.ip == net.net.subnet.network() || r.ip == net.net.subnet.broadcast() {
                return Err(err(format!(
                    "{} is the network or broadcast address of {}",
                    r.ip, net.net.subnet
                )));
            }
            if by_mac.insert(r.mac, i).is_some() {
                return Err(err("the MAC is reserved twice".into()));
            }
            if !reserved_ips.insert(r.ip) {
                return Err(err(format!("{} is reserved for another MAC too", r.ip)));
            }
            if let Some(h) = &r.hostname
                && (h.is_empty() || h.len() > 255)
            {
                return Err(err("hostname must be 1..=255 bytes".into()));
            }
        }
        let b = &self.boot;
        for (what, f) in [
            ("bios_file", &b.bios_file),
            ("uefi_x64_file", &b.uefi_x64_file),
        ]
        .into_iter()
        .chain(b.files_by_arch.values().map(|f| ("files_by_arch", f)))
        {
            if f.is_empty() || f.len() > 255 {
                return Err(ConfigError::Boot(format!(
                    "{what} '{f}' must be 1..=255 bytes"
                )));
            }
        }
        if let Some(u) = &b.ipxe_script_url
            && (u.is_empty() || u.len() > 1024)
        {
            return Err(ConfigError::Boot(
                "ipxe_script_url must be 1..=1024 bytes".into(),
            ));
        }
        Ok(CompiledConfig {
            source: self,
            networks,
            by_mac,
            reserved_ips,
        })
    }
}

fn compile_network(n: &Network, default_lease: u32) -> Result<CompiledNetwork, ConfigError> {
    let err = |detail: String| ConfigError::Network {
        network: n.name.clone(),
        detail,
    };
    if n.subnet.prefix > 30 {
        return Err(err(format!(
            "subnet {} is too small to serve (prefix over /30)",
            n.subnet
        )));
    }
    let mut ranges = Vec::new();
    for r in &n.ranges {
        let (s, e) = (u32::from(r.start), u32::from(r.end));
        if s > e {
            return Err(err(format!(
                "range {}-{} ends before it starts",
                r.start, r.end
            )));
        }
        if !n.subnet.contains(r.start) || !n.subnet.contains(r.end) {
            return Err(err(format!(
                "range {}-{} is not inside {}",
                r.start, r.end, n.subnet
            )));
        }
        ranges.push((s, e));
    }
    for r in n.routers.iter() {
        if !n.subnet.contains(*r) {
            return Err(err(format!("router {r} is not inside {}", n.subnet)));
        }
    }
    let lease_time = n.lease_time.unwrap_or(default_lease);
    if lease_time < 60 {
        return Err(err(format!("lease time {lease_time} s is under 60 s")));
    }
    let mut options: BTreeMap<u8, DhcpOption> = BTreeMap::new();
    options.insert(1, DhcpOption::SubnetMask(n.subnet.mask()));
    options.insert(28, DhcpOption::BroadcastAddr(n.subnet.broadcast()));
    if !n.routers.is_empty() {
        options.insert(3, DhcpOption::Router(n.routers.clone()));
    }
    if !n.dns.is_empty() {
        options.insert(6, DhcpOption::DomainNameServer(n.dns.clone()));
    }
    if let Some(d) = &n.domain {
        if d.is_empty() || d.len() > 255 {
            return Err(err("domain must be 1..=255 bytes".into()));
        }
        options.insert(15, DhcpOption::DomainName(d.clone()));
    }
    if !n.ntp.is_empty() {
        options.insert(42, DhcpOption::NtpServers(n.ntp.clone()));
    }
    if let Some(mtu) = n.mtu {
        if mtu < 68 {
            return Err(err(format!("MTU {mtu} is under 68")));
        }
        options.insert(26, DhcpOption::InterfaceMtu(mtu));
    }
    for (code, value) in &n.options {
        let oerr = |detail: String| ConfigError::Option {
            network: n.name.clone(),
            code: *code,
            detail,
        };
        if RESERVED_CODES.contains(code) {
            return Err(oerr("this option is set by the server itself".into()));
        }
        let bytes = value.to_bytes().map_err(oerr)?;
        if bytes.is_empty() || bytes.len() > 255 {
            return Err(oerr(format!(
                "value is {} bytes; an option carries 1..=255",
                bytes.len()
            )));
        }
        // Decode the payload as the option it claims to be, so a wrong shape (text for
        // a router list) is refused here rather than sent to clients.
        let mut wire = vec![*code, bytes.len() as u8];
        wire.extend_from_slice(&bytes);
        wire.push(255);
        let opt = DhcpOption::decode(&mut Decoder::new(&wire))
            .map_err(|e| oerr(format!("value does not fit the option: {e}")))?;
        if OptionCode::from(&opt) != OptionCode::from(*code)
            && !matches!(opt, DhcpOption::Unknown(_))
        {
            return Err(oerr("value does not decode as this option".into()));
        }
        options.insert(*code, opt);
    }
    Ok(CompiledNetwork {
        net: n.clone(),
        options: options.into_values().collect(),
        lease_time,
        ranges,
    })
}

impl CompiledConfig {
    /// The config this was compiled from.
    pub fn source(&self) -> &DhcpConfig {
        &self.source
    }

    pub(crate) fn network_for(&self, ip: Ipv4Addr) -> Option<usize> {
        self.networks.iter().position(|n| n.net.subnet.contains(ip))
    }

    pub(crate) fn reservation(&self, mac: &MacAddr) -> Option<&Reservation> {
        self.by_mac
            .get(mac)
            .and_then(|i| self.source.reservations.get(*i))
    }
}
