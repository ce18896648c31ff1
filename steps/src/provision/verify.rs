//! `verify`: what the node reported against what the design says it is.

use std::sync::Arc;

use async_trait::async_trait;
use lariat_engine::{Action, Output, StepContext, StepError};
use lariat_workflows::design::ResolvedHost;
use serde_json::{Value, json};

use super::{Provisioning, bmc_error};

const MIB: u64 = 1 << 20;

/// Compares the facts of the host's callback (the output of the step named by
/// `input.from`, `await_callback` by default) with the design:
/// - every MAC the design gives the host is among the node's;
/// - the serial number, when the design gives one;
/// - each disk the design names by device path is there, at least as large as declared
///   (less 7 %: vendors sell decimal gigabytes, the design writes binary ones);
/// - the memory of the hardware profile, less max(5 %, 128 MiB) that firmware and the
///   kernel keep for themselves.
///
/// With `input.firmware: true` it reads the firmware inventory from the BMC instead and
/// compares `input.component` (or every component the hardware profile lists) with the
/// expected versions. Any mismatch fails the step, listing every mismatch; no retry can
/// change a machine's hardware.
pub struct Verify(pub Arc<Provisioning>);

#[async_trait]
impl Action for Verify {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        let host = self.0.host(&ctx).await?;
        if ctx.input.get("firmware") == Some(&Value::Bool(true)) {
            return self.firmware(&host, &ctx).await;
        }
        let from = ctx
            .input
            .get("from")
            .and_then(Value::as_str)
            .unwrap_or("await_callback");
        let facts = callback_facts(&ctx, from, &host.name)?;
        let (checked, problems) = compare(&host, facts);
        if !problems.is_empty() {
            return Err(StepError::fatal(
                "verify",
                format!("host '{}': {}", host.name, problems.join("; ")),
            ));
        }
        Ok(Output::done(json!({"host": host.name, "checked": checked})))
    }
}

impl Verify {
    async fn firmware(&self, host: &ResolvedHost, ctx: &StepContext) -> Result<Output, StepError> {
        let bmc = self.0.bmc(host)?;
        let inventory = bmc
            .firmware_inventory()
            .await
            .map_err(|e| bmc_error(&host.name, e))?;
        let wanted: Vec<(&String, &String)> =
            match ctx.input.get("component").and_then(Value::as_str) {
                Some(c) => host
                    .firmware
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(c))
                    .collect(),
                None => host.firmware.iter().collect(),
            };
        let mut problems = Vec::new();
        for (component, version) in &wanted {
            match inventory.iter().find(|f| {
                f.id.eq_ignore_ascii_case(component) || f.name.eq_ignore_ascii_case(component)
            }) {
                Some(f) if &f.version == *version => {}
                Some(f) => problems.push(format!(
                    "firmware {component} is {}, the hardware profile expects {version}",
                    f.version
                )),
                None => problems.push(format!("the BMC lists no firmware component '{component}'")),
            }
        }
        if !problems.is_empty() {
            return Err(StepError::fatal(
                "verify",
                format!("host '{}': {}", host.name, problems.join("; ")),
            ));
        }
        Ok(Output::done(
            json!({"host": host.name, "firmware": inventory, "checked": wanted.len()}),
        ))
    }
}

/// The `facts` object of this host's callback among the outputs of step `from`.
fn callback_facts<'a>(
    ctx: &'a StepContext,
    from: &str,
    host: &str,
) -> Result<&'a Value, StepError> {
    let out = ctx.needs.get(from).ok_or_else(|| {
        StepError::fatal(
            "bad_input",
            format!("verify reads the facts of step '{from}', which this step does not need"),
        )
    })?;
    let payload = match out {
        // A fanned-out step's output lists its items' outputs.
        Value::Array(items) => items.iter().find(|i| i["host"] == host),
        one if one["host"] == host => Some(one),
        _ => None,
    }
    .ok_or_else(|| {
        StepError::fatal(
            "no_callback",
            format!("step '{from}' has no callback from host '{host}'"),
        )
    })?;
    Ok(&payload["facts"])
}

/// Checks `facts` against `host`; returns what was checked and what did not match.
fn compare(host: &ResolvedHost, facts: &Value) -> (Vec<&'static str>, Vec<String>) {
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
        let loaded = lariat_workflows::design::load_files(&[("d.yaml".into(), yaml.into())]);
        loaded.design.resolved_host("h1").unwrap()
    }

    fn facts() -> Value {
        json!({"macs": ["52:54:00:aa:00:01", "52:54:00:aa:00:02"], "serial": "LAB-0001",
               "memory_mib": 459, "disks": [{"name": "vda", "size_bytes": 2147483648u64}]})
    }

    #[test]
    fn matching_facts_pass_every_check() {
        let (checked, problems) = compare(&host(), &facts());
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
        let (_, problems) = compare(&host(), &f);
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
        let (_, problems) = compare(&host(), &f);
        assert!(
            problems[3].contains("not among the node's disks"),
            "{problems:?}"
        );
    }
}
