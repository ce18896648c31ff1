//! Resolution of hosts through their profile chain.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::merge;
use super::schema::{Bmc, BootMode, Bytes, HostSpec, Interface, Kind, Storage};
use super::{Design, DesignError};

/// The effective host: its own settings over those of its profiles, with the facts of
/// its hardware profile and networks that boot services and steps need.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedHost {
    pub name: String,
    pub site: Option<String>,
    pub rack: Option<String>,
    /// The host's own profile.
    pub profile: Option<String>,
    /// The inheritance chain, nearest first (profile, its parent, ...).
    pub profiles: Vec<String>,
    pub hardware_profile: Option<String>,
    /// From the hardware profile.
    pub boot_mode: Option<BootMode>,
    /// From the hardware profile: the interface the firmware PXE-boots from.
    pub pxe_interface: Option<String>,
    pub interfaces: Vec<ResolvedInterface>,
    pub bmc: Option<Bmc>,
    pub boot_profile: Option<String>,
    pub kernel_params: Vec<String>,
    /// Device aliases already replaced by their paths.
    pub storage: Storage,
    pub labels: BTreeMap<String, String>,
    pub never_provision: bool,
    /// The chassis serial number, when the design gives one.
    pub serial: Option<String>,
    /// From the hardware profile: installed memory.
    pub memory: Option<Bytes>,
    /// From the hardware profile: expected firmware version per component.
    pub firmware: BTreeMap<String, String>,
}

impl ResolvedHost {
    /// A digest of the host's whole resolved configuration (SHA-256 of its JSON, hex),
    /// recorded when the host is provisioned, so that drift compares what the host was
    /// built from with what the design says now, whichever revision either came from.
    /// Null, `false` and empty values are left out before hashing, so a Lariat release
    /// that adds a field with an empty default does not make every host look changed.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        prune(&mut v);
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The interface the host PXE-boots from, if the design names one that exists.
    pub fn pxe(&self) -> Option<&ResolvedInterface> {
        let name = self.pxe_interface.as_deref()?;
        self.interfaces.iter().find(|i| i.interface.name == name)
    }
}

/// A host interface with its network's addressing facts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedInterface {
    #[serde(flatten)]
    pub interface: Interface,
    /// Prefix length of the network.
    pub prefix_len: Option<u8>,
    pub netmask: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
    pub domain: Option<String>,
    pub mtu: Option<u32>,
    pub vlan: Option<u16>,
}

/// Resolves every host; profile chains are merged once each and shared.
pub(crate) fn resolve_all(
    design: &Design,
) -> HashMap<String, Result<Arc<ResolvedHost>, DesignError>> {
    let mut memo: HashMap<String, Result<(Value, Vec<String>), DesignError>> = HashMap::new();
    let mut out = HashMap::with_capacity(design.hosts.len());
    for name in design.hosts.keys() {
        out.insert(
            name.clone(),
            resolve_host(design, name, &mut memo).map(Arc::new),
        );
    }
    out
}

/// The merged (stripped) value of profile `name` and its chain, nearest first.
fn profile_value(
    design: &Design,
    name: &str,
    from: &str,
    memo: &mut HashMap<String, Result<(Value, Vec<String>), DesignError>>,
) -> Result<(Value, Vec<String>), DesignError> {
    if let Some(r) = memo.get(name) {
        return r.clone();
    }
    // Walk up iteratively to find the chain and catch cycles of any length.
    let mut chain: Vec<String> = Vec::new();
    let mut cur = name.to_string();
    let mut from = from.to_string();
    let result = loop {
        if let Some(pos) = chain.iter().position(|c| *c == cur) {
            let mut cycle: Vec<String> = chain[pos..].to_vec();
            cycle.push(cur.clone());
            break Err(DesignError::Cycle(cycle));
        }
        if memo.contains_key(&cur) {
            break Ok(());
        }
        if design.is_broken(Kind::HostProfile, &cur) {
            break Err(DesignError::Broken(format!("host profile '{cur}'")));
        }
        let Some(raw) = design.raw_profiles.get(&cur) else {
            break Err(DesignError::UnknownProfile {
                from: from.clone(),
                missing: cur.clone(),
            });
        };
        chain.push(cur.clone());
        match raw.get("parent").and_then(Value::as_str) {
            Some(p) => {
                from = format!("host profile '{cur}'");
                cur = p.to_string();
            }
            None => break Ok(()),
        }
    };
    if let Err(e) = result {
        for c in &chain {
            memo.insert(c.clone(), Err(e.clone()));
        }
        return Err(e);
    }
    // Fold from the root-most uncached layer down to `name`.
    for (i, layer_name) in chain.iter().enumerate().rev() {
        let parent = chain.get(i + 1).cloned().or_else(|| {
            design
                .raw_profiles
                .get(layer_name)
                .and_then(|r| r.get("parent"))
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        let (base, mut names) = match parent {
            Some(p) => match memo.get(&p) {
                Some(Ok((v, n))) => (Some(v.clone()), n.clone()),
                Some(Err(e)) => {
                    let e = e.clone();
                    memo.insert(layer_name.clone(), Err(e.clone()));
                    return Err(e);
                }
                None => (None, Vec::new()),
            },
            None => (None, Vec::new()),
        };
        let mut layer = design.raw_profiles[layer_name].clone();
        if let Value::Object(m) = &mut layer {
            m.remove("parent");
        }
        let merged = merge::merge(base, &layer, "").unwrap_or(Value::Object(Default::default()));
        names.insert(0, layer_name.clone());
        memo.insert(layer_name.clone(), Ok((merged, names)));
    }
    memo[name].clone()
}

fn resolve_host(
    design: &Design,
    name: &str,
    memo: &mut HashMap<String, Result<(Value, Vec<String>), DesignError>>,
) -> Result<ResolvedHost, DesignError> {
    let raw = &design.raw_hosts[name];
    let (base, chain) = match raw.get("profile").and_then(Value::as_str) {
        Some(p) => {
            let (v, c) = profile_value(design, p, &format!("host '{name}'"), memo)?;
            (Some(v), c)
        }
        None => (None, Vec::new()),
    };
    let merged = merge::merge(base, raw, "").unwrap_or(Value::Object(Default::default()));
    let spec: HostSpec = serde_json::from_value(merged).map_err(|e| DesignError::Invalid {
        host: name.to_string(),
        message: e.to_string(),
    })?;
    Ok(build(design, name, spec, chain))
}

fn build(design: &Design, name: &str, spec: HostSpec, profiles: Vec<String>) -> ResolvedHost {
    let hw = spec
        .hardware_profile
        .as_deref()
        .and_then(|h| design.hardware_profile(h));
    let mut storage = spec.storage.unwrap_or_default();
    if let Some(hw) = hw {
        for d in &mut storage.disks {
            if let Some(path) = d
                .device
                .as_ref()
                .and_then(|a| hw.spec.device_aliases.get(a))
            {
                d.device = Some(path.clone());
            }
        }
    }
    let interfaces = spec
        .interfaces
        .into_iter()
        .map(|i| {
            let net = i.network.as_deref().and_then(|n| design.network(n));
            ResolvedInterface {
                prefix_len: net.map(|n| n.spec.cidr.prefix_len()),
                netmask: net.map(|n| n.spec.cidr.netmask()),
                gateway: net.and_then(|n| n.spec.gateway),
                dns: net.map(|n| n.spec.dns.clone()).unwrap_or_default(),
                domain: net.and_then(|n| n.spec.domain.clone()),
                mtu: net.and_then(|n| n.spec.mtu),
                vlan: net.and_then(|n| n.spec.vlan),
                interface: i,
            }
        })
        .collect();
    ResolvedHost {
        name: name.to_string(),
        site: spec.site,
        rack: spec.rack,
        profile: spec.profile,
        profiles,
        boot_mode: hw.map(|h| h.spec.boot_mode),
        pxe_interface: hw.map(|h| h.spec.pxe_interface.clone()),
        hardware_profile: spec.hardware_profile,
        interfaces,
        bmc: spec.bmc,
        boot_profile: spec.boot_profile,
        kernel_params: spec.kernel_params,
        storage,
        labels: spec.labels,
        never_provision: spec.never_provision.unwrap_or(false),
        serial: spec.serial,
        memory: hw.and_then(|h| h.spec.memory),
        firmware: hw.map(|h| h.spec.firmware.clone()).unwrap_or_default(),
    }
}

/// Drops null, `false` and empty values from objects, recursively.
fn prune(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            for x in m.values_mut() {
                prune(x);
            }
            m.retain(|_, x| match x {
                Value::Null | Value::Bool(false) => false,
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.is_empty(),
                Value::String(s) => !s.is_empty(),
                _ => true,
            });
        }
        Value::Array(a) => a.iter_mut().for_each(prune),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    const DESIGN: &str = r#"
kind: HardwareProfile
name: hw
spec: {vendor: QEMU, model: pc, boot_mode: bios, pxe_interface: eth0, memory: 512M}
---
kind: HostProfile
name: base
spec: {hardware_profile: hw, labels: {role: web}}
---
kind: Host
name: h1
spec:
  profile: base
  interfaces: [{name: eth0, mac: "52:54:00:AA:00:01"}]
---
kind: Host
name: h2
spec:
  profile: base
  interfaces: [{name: eth0, mac: "52:54:00:AA:00:02"}]
"#;

    fn digest(yaml: &str, host: &str) -> String {
        let loaded = crate::design::load_files(&[("d.yaml".into(), yaml.into())]);
        loaded.design.resolved_host(host).unwrap().digest()
    }

    #[test]
    fn a_digest_follows_what_the_host_inherits_and_nothing_else() {
        let d1 = digest(DESIGN, "h1");
        assert_eq!(d1.len(), 64);
        assert_eq!(
            d1,
            digest(DESIGN, "h1"),
            "the same design gives the same digest"
        );
        assert_ne!(d1, digest(DESIGN, "h2"));
        // A change to the hardware profile reaches the host through inheritance.
        let memory = DESIGN.replace("memory: 512M", "memory: 1G");
        assert_ne!(d1, digest(&memory, "h1"));
        // A change to another host does not.
        let other = DESIGN.replace("52:54:00:AA:00:02", "52:54:00:AA:00:03");
        assert_eq!(d1, digest(&other, "h1"));
        // Nor does a field written out with its empty default.
        let explicit = DESIGN.replace(
            "labels: {role: web}",
            "labels: {role: web}, kernel_params: []",
        );
        assert_eq!(d1, digest(&explicit, "h1"));
    }
}
