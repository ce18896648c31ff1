//! The document kinds of a design and their `spec` types.
//!
//! Every struct denies unknown fields, so a typo in a design is an error that names the
//! field rather than a setting silently ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

pub use crate::template::TemplateSpec as WorkflowTemplateSpec;

/// The kind of a design document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Site,
    Network,
    NetworkLink,
    HardwareProfile,
    HostProfile,
    Host,
    BootProfile,
    MaintenanceWindow,
    WorkflowTemplate,
}

impl Kind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [Kind; 9] = [
        Kind::Site,
        Kind::Network,
        Kind::NetworkLink,
        Kind::HardwareProfile,
        Kind::HostProfile,
        Kind::Host,
        Kind::BootProfile,
        Kind::MaintenanceWindow,
        Kind::WorkflowTemplate,
    ];

    /// The name written in a document's `kind` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Site => "Site",
            Kind::Network => "Network",
            Kind::NetworkLink => "NetworkLink",
            Kind::HardwareProfile => "HardwareProfile",
            Kind::HostProfile => "HostProfile",
            Kind::Host => "Host",
            Kind::BootProfile => "BootProfile",
            Kind::MaintenanceWindow => "MaintenanceWindow",
            Kind::WorkflowTemplate => "WorkflowTemplate",
        }
    }

    /// The kind named `s`, if it is one.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A datacenter served by one site agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// Short stable id (used in run ownership and agent tokens).
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
    /// URL the central node and the nodes reach the site agent at.
    pub agent_endpoint: String,
    pub dhcp_mode: DhcpMode,
    /// Base URL (local HTTP or a CDN) boot assets are fetched from.
    pub boot_assets: String,
    #[serde(default)]
    pub timezone: Option<String>,
}

/// Whether the site agent hands out addresses or leaves that to an existing server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    Server,
    Proxy,
}

/// An IP network (one L2 segment / VLAN).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    pub cidr: IpNet,
    #[serde(default)]
    pub vlan: Option<u16>,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    #[serde(default)]
    pub ntp: Vec<String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub ranges: Vec<AddressRange>,
    /// Extra DHCP options by name or code, passed through to the DHCP server.
    #[serde(default)]
    pub dhcp_options: BTreeMap<String, Value>,
    /// Address of the DHCP relay (giaddr) that forwards this network's requests.
    #[serde(default)]
    pub relay: Option<IpAddr>,
}

/// An inclusive address range of a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressRange {
    pub kind: RangeKind,
    pub start: IpAddr,
    pub end: IpAddr,
}

/// What the addresses of a range are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RangeKind {
    /// Written in the design, one per interface.
    Static,
    /// Handed out (or reserved per MAC) by DHCP.
    Dhcp,
    /// Neither: gateways, switches, VIPs.
    Reserved,
}

/// How a host's interfaces attach to the switches: a bond, its MTU, its VLANs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkLinkSpec {
    #[serde(default)]
    pub bond: Option<Bond>,
    #[serde(default)]
    pub mtu: Option<u32>,
    /// 802.1q tagging on the link.
    #[serde(default)]
    pub trunk: bool,
    /// Networks allowed on the link.
    #[serde(default)]
    pub networks: Vec<String>,
}

/// Linux bonding settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bond {
    pub mode: BondMode,
    #[serde(default)]
    pub options: BTreeMap<String, Value>,
}

/// Linux bonding modes, by their kernel names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BondMode {
    #[serde(rename = "balance-rr")]
    BalanceRr,
    #[serde(rename = "active-backup")]
    ActiveBackup,
    #[serde(rename = "balance-xor")]
    BalanceXor,
    #[serde(rename = "broadcast")]
    Broadcast,
    #[serde(rename = "802.3ad")]
    Lacp,
    #[serde(rename = "balance-tlb")]
    BalanceTlb,
    #[serde(rename = "balance-alb")]
    BalanceAlb,
}

impl BondMode {
    /// The kernel's name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            BondMode::BalanceRr => "balance-rr",
            BondMode::ActiveBackup => "active-backup",
            BondMode::BalanceXor => "balance-xor",
            BondMode::Broadcast => "broadcast",
            BondMode::Lacp => "802.3ad",
            BondMode::BalanceTlb => "balance-tlb",
            BondMode::BalanceAlb => "balance-alb",
        }
    }
}

/// A server model: how it boots and what its devices are called.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareProfileSpec {
    pub vendor: String,
    pub model: String,
    pub boot_mode: BootMode,
    /// Name of the host interface the firmware PXE-boots from.
    pub pxe_interface: String,
    /// Stable names for devices, e.g. `boot-disk: /dev/nvme0n1`.
    #[serde(default)]
    pub device_aliases: BTreeMap<String, String>,
    /// Expected firmware version per component (bios, bmc, nic...).
    #[serde(default)]
    pub firmware: BTreeMap<String, String>,
    /// Installed memory; `verify` accepts what the node reports down to 5 % below it
    /// (firmware and the kernel keep some for themselves).
    #[serde(default)]
    pub memory: Option<Bytes>,
}

/// Firmware boot mode; decides the iPXE binary a node is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    Bios,
    Uefi,
}

/// A reusable layer of host settings. Hosts and profiles inherit from profiles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostProfileSpec {
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub hardware_profile: Option<String>,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub storage: Option<Storage>,
    #[serde(default)]
    pub boot_profile: Option<String>,
    #[serde(default)]
    pub kernel_params: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// BMC defaults shared by the hosts (type, port, username, credential).
    #[serde(default)]
    pub bmc: Option<Bmc>,
}

/// One machine. Every profile field may be set (or unset with `"!"`) here too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub rack: Option<String>,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub hardware_profile: Option<String>,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub storage: Option<Storage>,
    #[serde(default)]
    pub boot_profile: Option<String>,
    #[serde(default)]
    pub kernel_params: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub bmc: Option<Bmc>,
    /// A host Lariat must never wipe (a provision run refuses it).
    #[serde(default)]
    pub never_provision: Option<bool>,
    /// The chassis serial number; `verify` compares it with what the node reports.
    #[serde(default)]
    pub serial: Option<String>,
}

/// A host network interface (or a bond of interfaces).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: Option<Mac>,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub address: Option<IpAddr>,
    /// How `address` is given to the host; static when absent.
    #[serde(default)]
    pub addressing: Option<Addressing>,
    /// The NetworkLink this interface is attached through.
    #[serde(default)]
    pub link: Option<String>,
    /// For a bond: the member interfaces.
    #[serde(default)]
    pub members: Vec<String>,
}

/// How an interface gets its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Addressing {
    /// Configured on the host; must lie in a `static` range.
    Static,
    /// A DHCP reservation for the MAC; must lie in a `dhcp` range.
    Dhcp,
}

/// Disk layout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    #[serde(default)]
    pub disks: Vec<Disk>,
    #[serde(default)]
    pub volume_groups: Vec<VolumeGroup>,
}

/// A physical disk: either partitioned, or wholly a physical volume of a volume group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub name: String,
    /// A path (`/dev/sda`) or a device alias of the hardware profile.
    #[serde(default)]
    pub device: Option<String>,
    /// The disk's capacity, when known; sizes are checked against it.
    #[serde(default)]
    pub size: Option<Bytes>,
    #[serde(default)]
    pub partitions: Vec<Volume>,
    #[serde(default)]
    pub volume_group: Option<String>,
}

/// An LVM volume group built from the disks that name it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeGroup {
    pub name: String,
    #[serde(default)]
    pub logical_volumes: Vec<Volume>,
}

/// A partition or a logical volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    pub name: String,
    #[serde(default)]
    pub size: Option<Size>,
    #[serde(default)]
    pub filesystem: Option<String>,
    #[serde(default)]
    pub mountpoint: Option<String>,
}

/// The management controller of a host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bmc {
    #[serde(rename = "type", default)]
    pub kind: Option<BmcKind>,
    /// IP address or DNS name.
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub credential: Option<CredentialRef>,
    /// For IPMI: `native` (default, RMCP+ in process) or `ipmitool` (an `ipmitool -I
    /// lanplus` process per operation, for BMCs the native driver cannot talk to).
    #[serde(default)]
    pub driver: Option<IpmiDriver>,
}

/// Which IPMI implementation drives a host's BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpmiDriver {
    Native,
    Ipmitool,
}

/// BMC protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BmcKind {
    Ipmi,
    Redfish,
}

/// Where a secret is found at the moment it is needed. The design never holds the
/// secret itself, so a design repository can be read by anyone who may read the design.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialRef {
    /// An environment variable of the process that uses it.
    Env(String),
    /// A file on the machine that uses it.
    File(String),
}

impl<'de> Deserialize<'de> for CredentialRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let refuse = || {
            serde::de::Error::custom(
                "a credential is a reference, {env: NAME} or {file: PATH}, never the secret itself",
            )
        };
        let Value::Object(m) = v else {
            return Err(refuse());
        };
        if m.len() != 1 {
            return Err(refuse());
        }
        match m.iter().next() {
            Some((k, Value::String(s))) if k == "env" && !s.is_empty() => {
                Ok(CredentialRef::Env(s.clone()))
            }
            Some((k, Value::String(s))) if k == "file" && !s.is_empty() => {
                Ok(CredentialRef::File(s.clone()))
            }
            _ => Err(refuse()),
        }
    }
}

/// How to boot a host into its installer or image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootProfileSpec {
    /// Path of the kernel, relative to the site's boot asset base.
    pub kernel: String,
    #[serde(default)]
    pub initrd: Vec<String>,
    #[serde(default)]
    pub cmdline: String,
    /// Every file the boot fetches, with its checksum.
    #[serde(default)]
    pub assets: Vec<Asset>,
    #[serde(default)]
    pub unattended: Option<Unattended>,
}

/// A boot file and its expected checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Asset {
    pub path: String,
    pub sha256: Sha256,
    /// Where `stage_assets` downloads it from into the site's cache; without one, from
    /// the agent's asset origin (`--asset-origin`) followed by `path`.
    #[serde(default)]
    pub url: Option<String>,
}

/// An unattended-install answer file, rendered per host with minijinja.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unattended {
    pub format: UnattendedFormat,
    pub template: String,
}

/// The installer that reads the rendered answer file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnattendedFormat {
    Kickstart,
    CloudInit,
    Ignition,
}

/// A recurring time span in which gated steps may run (`mode: allow`), or in which no
/// gated step may start (`mode: deny`, a change freeze).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindowSpec {
    /// Five-field cron expression for the window's start, in `timezone`.
    pub cron: String,
    /// How long each opening lasts, in elapsed time.
    #[serde(with = "duration_text")]
    pub duration: Duration,
    /// IANA time zone of the cron; UTC when absent.
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub mode: WindowMode,
    /// The hosts the window covers; every host when absent.
    #[serde(default)]
    pub scope: Option<WindowScope>,
}

/// Whether a window lets gated steps start, or stops them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowMode {
    /// Gated steps naming the window start while it is open.
    #[default]
    Allow,
    /// No gated step for a covered host starts while it is open, whatever allow window
    /// is open too.
    Deny,
}

/// The hosts a window covers: each criterion given must hold (sites and racks: any of
/// the list; labels: every pair).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowScope {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub racks: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("duration '{text}': {e}")))
    }
}

/// A MAC address, written `52:54:00:12:34:56` (or with `-`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(format!("'{s}' is not a MAC address (six hex pairs)"));
        }
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(format!("'{s}' is not a MAC address (six hex pairs)"));
            }
            out[i] = u8::from_str_radix(p, 16)
                .map_err(|_| format!("'{s}' is not a MAC address (six hex pairs)"))?;
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A hex-encoded SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha256(pub String);

impl Serialize for Sha256 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Sha256(s.to_ascii_lowercase()))
        } else {
            Err(serde::de::Error::custom(format!(
                "'{s}' is not a sha256 digest (64 hex digits)"
            )))
        }
    }
}

/// A capacity in bytes, written `480G`, `1.92T`, `512M`, `4096` (binary units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

fn parse_bytes(s: &str) -> Option<u64> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last()? {
        'K' | 'k' => (&t[..t.len() - 1], 1u64 << 10),
        'M' | 'm' => (&t[..t.len() - 1], 1 << 20),
        'G' | 'g' => (&t[..t.len() - 1], 1 << 30),
        'T' | 't' => (&t[..t.len() - 1], 1 << 40),
        'P' | 'p' => (&t[..t.len() - 1], 1 << 50),
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    if !n.is_finite() || n <= 0.0 {
        return None;
    }
    let bytes = n * mult as f64;
    (bytes < u64::MAX as f64).then_some(bytes as u64)
}

fn format_bytes(b: u64) -> String {
    for (unit, m) in [
        ("T", 1u64 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ] {
        if b >= m && b.is_multiple_of(m) {
            return format!("{}{unit}", b / m);
        }
    }
    b.to_string()
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_bytes(self.0))
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let text = match &v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        parse_bytes(&text).map(Bytes).ok_or_else(|| {
            serde::de::Error::custom(format!("'{text}' is not a size (e.g. 512M, 480G, 2T)"))
        })
    }
}

/// The size of a partition or logical volume.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Size {
    /// A fixed size.
    Bytes(u64),
    /// A share of the device, 1 to 100.
    Percent(f64),
    /// `>N`: at least N, then whatever is left of the device.
    AtLeast(u64),
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Size::Bytes(b) => f.write_str(&format_bytes(*b)),
            Size::Percent(p) => write!(f, "{p}%"),
            Size::AtLeast(b) => write!(f, ">{}", format_bytes(*b)),
        }
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let text = match &v {
            Value::String(s) => s.trim().to_string(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        let bad = || {
            serde::de::Error::custom(format!(
                "'{text}' is not a size (absolute like 20G, a share like 50%, or >20G for at least 20G then the rest)"
            ))
        };
        if let Some(p) = text.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            Ok(Size::Percent(p))
        } else if let Some(rest) = text.strip_prefix('>') {
            parse_bytes(rest).map(Size::AtLeast).ok_or_else(bad)
        } else {
            parse_bytes(&text).map(Size::Bytes).ok_or_else(bad)
        }
    }
}
