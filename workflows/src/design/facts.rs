//! A node's reported facts against the design.

use serde_json::Value;

use super::ResolvedHost;

const MIB: u64 = 1 << 20;

/// Checks the facts a node reported (`macs`, `serial`, `memory_mib`, `disks` with `name`
/// and `size_bytes`) against the design's `host`; returns what was checked and every
/// mismatch, in that order. Used by the `verify` step and by drift, so both judge a node
/// alike:
/// - every MAC the design gives the host is among the node's;
/// - the serial number, when the design gives one;
/// - each disk the design names by device path is there, at least as large as declared
///   (less 7 %: vendors sell decimal gigabytes, the design writes binary ones);
/// - the memory of the hardware profile, less max(5 %, 128 MiB) that firmware and the
///   kernel keep for themselves.
pub fn check_facts(host: &ResolvedHost, facts: &Value) -> (Vec<&'static str>, Vec<String>) {
    let mut checked = Vec::new();
    let mut problems = Vec::new();
    let reported_macs: Vec<String> = facts["macs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default();
    let design_macs: Vec<String> = host
        .interfaces
        .iter()
        .filter_map(|i| i.interface.mac.as_ref())
        .map(|m| m.to_string().to_ascii_lowercase())
        .collect();
    if !design_macs.is_empty() {
        checked.push("macs");
        for m in &design_macs {
            if !reported_macs.contains(m) {
                problems.push(format!(
                    "MAC {m} is in the design but the node reports {}",
                    if reported_macs.is_empty() {
                        "no MACs".to_string()
                    } else {
                        reported_macs.join(", ")
                    }
                ));
            }
        }
    }
    if let Some(serial) = &host.serial {
        checked.push("serial");
        match facts["serial"].as_str() {
            Some(s) if s.trim() == serial => {}
            Some(s) => problems.push(format!(
                "serial is '{}', the design says '{serial}'",
                s.trim()
            )),
            None => problems.push(format!(
                "the node reports no serial; the design says '{serial}'"
            )),
        }
    }
    if let Some(memory) = host.memory {
        checked.push("memory");
        let slack = (memory.0 / 20).max(128 * MIB);
        match facts["memory_mib"].as_u64() {
            Some(m) if m * MIB + slack >= memory.0 => {}
            Some(m) => problems.push(format!(
                "memory is {m} MiB, the hardware profile says {memory}"
            )),
            None => problems.push("the node reports no memory_mib".to_string()),
        }
    }
    let disks = facts["disks"].as_array();
    for d in &host.storage.disks {
        let (Some(device), Some(size)) = (&d.device, d.size) else {
            continue;
        };
        if !checked.contains(&"disks") {
            checked.push("disks");
        }
        let short = device.trim_start_matches("/dev/");
        let found = disks.and_then(|ds| ds.iter().find(|x| x["name"].as_str() == Some(short)));
        match found.and_then(|x| x["size_bytes"].as_u64()) {
            Some(bytes) if bytes as f64 >= size.0 as f64 * 0.93 => {}
            Some(bytes) => problems.push(format!(
                "disk {device} has {bytes} bytes, the design says {size}"
            )),
            None => problems.push(format!(
                "disk {device} ({}) is not among the node's disks",
                d.name
            )),
        }
    }
    (checked, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host() -> ResolvedHost {
        let yaml = r#"
kind: HardwareProfile
name: hw
spec: {vendor: QEMU, model: pc, boot_mode: bios, pxe_interface: eth0, memory: 512M}
---
kind: Host
name: h1
spec:
  hardware_profile: hw
  serial: LAB-0001
  interfaces: [{name: eth0, mac: "52:54:00:AA:00:01"}]
  storage:
    disks: [{name: root, device: /dev/vda, size: 2G, partitions: [{name: r, size: 100%, filesystem: ext4, mountpoint: /}]}]
"#;
        let loaded = crate::design::load_files(&[("d.yaml".into(), yaml.into())]);
        loaded.design.resolved_host("h1").unwrap()
    }

    fn facts() -> Value {
        json!({"macs": ["52:54:00:aa:00:01", "52:54:00:aa:00:02"], "serial": "LAB-0001",
               "memory_mib": 459, "disks": [{"name": "vda", "size_bytes": 2147483648u64}]})
    }

    #[test]
    fn matching_facts_pass_every_check() {
        let (checked, problems) = check_facts(&host(), &facts());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(checked, ["macs", "serial", "memory", "disks"]);
    }

    #[test]
    fn every_mismatch_is_listed() {
        let mut f = facts();
        f["macs"] = json!(["52:54:00:aa:00:09"]);
        f["serial"] = json!("OTHER");
        f["memory_mib"] = json!(256);
        f["disks"] = json!([{"name": "vda", "size_bytes": 1073741824u64}]);
        let (_, problems) = check_facts(&host(), &f);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[0].contains("MAC 52:54:00:aa:00:01"),
            "{}",
            problems[0]
        );
        assert!(problems[1].contains("serial is 'OTHER'"), "{}", problems[1]);
        assert!(problems[2].contains("memory is 256 MiB"), "{}", problems[2]);
        assert!(
            problems[3].contains("disk /dev/vda has 1073741824 bytes"),
            "{}",
            problems[3]
        );
        f["disks"] = json!([]);
        let (_, problems) = check_facts(&host(), &f);
        assert!(
            problems[3].contains("not among the node's disks"),
            "{problems:?}"
        );
    }
}
