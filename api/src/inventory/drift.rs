//! A host's inventory against the design it is provisioned from, and the runs that fix
//! what differs.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use lariat_api_types as types;
use lariat_workflows::design::{ResolvedHost, check_facts};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::project::Projection;
use types::{Drift, DriftKind};

/// The workflow that provisions a host again.
pub(crate) const PROVISION: &str = "provision";
/// The workflow that brings one firmware component to a version.
pub(crate) const FIRMWARE_UPGRADE: &str = "firmware_upgrade";

/// How `host` (its inventory `p`) differs from `design`, its resolved configuration in
/// the design it is provisioned from; `None` when the design does not have it. A host
/// marked `never_provision` has no drift: nothing may be done to it.
pub(crate) fn drift_of(host: &str, p: &Projection, design: Option<&ResolvedHost>) -> Vec<Drift> {
    let Some(design) = design else {
        return Vec::new();
    };
    if design.never_provision {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut add = |kind, reason: String, workflow: Option<&str>, input: Value| {
        out.push(Drift {
            host: host.to_string(),
            kind,
            reason,
            workflow: workflow.map(str::to_string),
            input,
            busy: p.busy,
        })
    };
    if p.state == types::HostState::New {
        add(
            DriftKind::NeverProvisioned,
            "in the design, never provisioned".into(),
            Some(PROVISION),
            Value::Null,
        );
    }
    if p.state == types::HostState::Provisioned
        && let Some(prov) = &p.provisioned
        && let Some(built) = &prov.digest
    {
        let now = design.digest();
        if &now != built {
            add(
                DriftKind::ConfigChanged,
                format!(
                    "its resolved configuration changed since run {} provisioned it{}",
                    prov.run,
                    prov.revision
                        .as_ref()
                        .map(|r| format!(" from revision {}", short(r)))
                        .unwrap_or_default()
                ),
                Some(PROVISION),
                Value::Null,
            );
        }
    }
    for (component, want) in &design.firmware {
        let Some(seen) = p
            .firmware
            .iter()
            .find(|f| f.component.eq_ignore_ascii_case(component))
        else {
            continue;
        };
        if compare_versions(&seen.version, want) == Ordering::Less {
            add(
                DriftKind::FirmwareBehind,
                format!(
                    "firmware {component} is {}, the hardware profile expects {want}",
                    seen.version
                ),
                Some(FIRMWARE_UPGRADE),
                json!({"component": component, "version": want}),
            );
        }
    }
    if p.state == types::HostState::Provisioned
        && let Some(facts) = &p.facts
    {
        let (_, problems) = check_facts(design, &facts.facts);
        if !problems.is_empty() {
            add(
                DriftKind::FactsMismatch,
                format!(
                    "its callback of run {} disagrees with the design: {}",
                    facts.run,
                    problems.join("; ")
                ),
                None,
                Value::Null,
            );
        }
    }
    out
}

/// Orders firmware versions as their vendors mean them: runs of digits compare as
/// numbers (`2.10` after `2.9`), other runs as text, case aside.
pub(crate) fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| -> Vec<(bool, String)> {
        let mut v: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            if !c.is_ascii_alphanumeric() {
                v.push((false, String::new()));
                continue;
            }
            let digit = c.is_ascii_digit();
            match v.last_mut() {
                Some((d, run)) if !run.is_empty() && *d == digit => run.push(c),
                _ => v.push((digit, c.to_ascii_lowercase().to_string())),
            }
        }
        v.into_iter().filter(|(_, r)| !r.is_empty()).collect()
    };
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (x, y) {
            ((true, n), (true, m)) => {
                let (n, m) = (n.trim_start_matches('0'), m.trim_start_matches('0'));
                n.len().cmp(&m.len()).then_with(|| n.cmp(m))
            }
            ((_, n), (_, m)) => n.cmp(m),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

/// The runs that would fix `drift`: hosts that share a workflow and input share a run
/// (so a rolling limit such as `max_per: {rack: 1}` holds across them), each with a key
/// derived from its hosts and what the design says of each now (`digests`). `inputs` are
/// merged over each run's input by workflow; `images` give `firmware_behind` its image.
pub(crate) fn plan(
    drift: &[Drift],
    digests: &BTreeMap<String, String>,
    inputs: &BTreeMap<String, Value>,
    images: &BTreeMap<String, String>,
) -> (Vec<types::ReconcileRun>, Vec<types::ReconcileSkip>) {
    let mut groups: BTreeMap<(String, String), (Value, Vec<String>)> = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut skip = |d: &Drift, reason: String| {
        skipped.push(types::ReconcileSkip {
            host: d.host.clone(),
            kind: d.kind,
            reason,
        })
    };
    for d in drift {
        let Some(workflow) = &d.workflow else {
            skip(
                d,
                "no workflow fixes it: correct the design or the hardware".into(),
            );
            continue;
        };
        if let Some(run) = d.busy {
            skip(
                d,
                format!("run {run} is working on the host; wait for it to end"),
            );
            continue;
        }
        let mut input = match inputs.get(workflow) {
            Some(Value::Object(m)) => Value::Object(m.clone()),
            _ => json!({}),
        };
        if let Value::Object(m) = &d.input {
            for (k, v) in m {
                input[k] = v.clone();
            }
        }
        if d.kind == DriftKind::FirmwareBehind {
            let component = d.input["component"].as_str().unwrap_or_default();
            let image = images
                .iter()
                .find(|(c, _)| c.eq_ignore_ascii_case(component))
                .map(|(_, url)| url);
            match image {
                Some(url) => input["image_url"] = Value::String(url.clone()),
                None if input.get("image_url").is_some() => {}
                None => {
                    skip(
                        d,
                        format!(
                            "no firmware image for {component}: give one (--image {component}=URL)"
                        ),
                    );
                    continue;
                }
            }
        }
        let text = serde_json::to_string(&input).unwrap_or_default();
        let entry = groups
            .entry((workflow.clone(), text))
            .or_insert_with(|| (input, Vec::new()));
        if !entry.1.contains(&d.host) {
            entry.1.push(d.host.clone());
        }
    }
    let runs = groups
        .into_iter()
        .map(|((workflow, input_text), (input, mut hosts))| {
            hosts.sort();
            let mut h = Sha256::new();
            h.update(workflow.as_bytes());
            h.update([0]);
            h.update(input_text.as_bytes());
            for host in &hosts {
                h.update([0]);
                h.update(host.as_bytes());
                h.update([1]);
                h.update(
                    digests
                        .get(host)
                        .map(String::as_str)
                        .unwrap_or("")
                        .as_bytes(),
                );
            }
            let hex: String = h
                .finalize()
                .iter()
                .take(12)
                .map(|b| format!("{b:02x}"))
                .collect();
            types::ReconcileRun {
                idempotency_key: format!("reconcile:{workflow}:{hex}"),
                workflow,
                input,
                hosts,
                run: None,
                created: false,
            }
        })
        .collect();
    (runs, skipped)
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::inventory::project::project;

    const DESIGN: &str = r#"
kind: HardwareProfile
name: hw
spec:
  vendor: QEMU
  model: pc
  boot_mode: bios
  pxe_interface: eth0
  memory: 512M
  firmware: {BMC: "2.10", BIOS: "1.4"}
---
kind: Host
name: h1
spec:
  hardware_profile: hw
  serial: LAB-1
  interfaces: [{name: eth0, mac: "52:54:00:AA:00:01"}]
---
kind: Host
name: keep
spec:
  hardware_profile: hw
  never_provision: true
  interfaces: [{name: eth0, mac: "52:54:00:AA:00:02"}]
"#;

    fn host(yaml: &str, name: &str) -> ResolvedHost {
        let loaded = lariat_workflows::design::load_files(&[("d.yaml".into(), yaml.into())]);
        loaded.design.resolved_host(name).unwrap()
    }

    fn new_host() -> Projection {
        project("h1", &[], &HashMap::new())
    }

    fn provisioned(digest: &str, serial: &str, bmc: &str) -> Projection {
        let mut p = new_host();
        let run = uuid::Uuid::from_u128(7);
        p.state = types::HostState::Provisioned;
        p.provisioned = Some(types::Provisioned {
            run,
            at: 1,
            revision: Some("0123456789abcdef".into()),
            digest: Some(digest.into()),
        });
        p.facts = Some(types::HostFacts {
            at: 1,
            run,
            facts: json!({"macs": ["52:54:00:aa:00:01"], "serial": serial, "memory_mib": 512}),
        });
        p.firmware = vec![types::FirmwareVersion {
            component: "bmc".into(),
            version: bmc.into(),
            at: 1,
            run,
        }];
        p
    }

    #[test]
    fn each_kind_of_drift_is_found_and_only_when_it_is_there() {
        let h1 = host(DESIGN, "h1");
        let kinds = |d: Vec<Drift>| d.into_iter().map(|d| d.kind).collect::<Vec<_>>();
        assert_eq!(
            kinds(drift_of("h1", &new_host(), Some(&h1))),
            [DriftKind::NeverProvisioned]
        );
        assert!(
            drift_of("gone", &new_host(), None).is_empty(),
            "not in the design"
        );
        assert!(drift_of("keep", &new_host(), Some(&host(DESIGN, "keep"))).is_empty());

        let same = provisioned(&h1.digest(), "LAB-1", "2.10");
        assert!(drift_of("h1", &same, Some(&h1)).is_empty());

        let changed = host(&DESIGN.replace("memory: 512M", "memory: 1G"), "h1");
        let d = drift_of("h1", &same, Some(&changed));
        // The memory now expected is also more than the node reported.
        assert_eq!(
            kinds(d.clone()),
            [DriftKind::ConfigChanged, DriftKind::FactsMismatch]
        );
        assert!(
            d[0].reason.contains("revision 0123456789ab"),
            "{}",
            d[0].reason
        );

        let d = drift_of("h1", &provisioned(&h1.digest(), "OTHER", "2.9"), Some(&h1));
        assert_eq!(
            kinds(d.clone()),
            [DriftKind::FirmwareBehind, DriftKind::FactsMismatch]
        );
        assert_eq!(d[0].input, json!({"component": "BMC", "version": "2.10"}));
        assert!(d[1].reason.contains("serial is 'OTHER'"), "{}", d[1].reason);
        // Ahead of the profile is not behind.
        assert!(drift_of("h1", &provisioned(&h1.digest(), "LAB-1", "2.11"), Some(&h1)).is_empty());
    }

    #[test]
    fn versions_compare_by_their_numbers() {
        use Ordering::*;
        assert_eq!(compare_versions("2.9", "2.10"), Less);
        assert_eq!(compare_versions("2.10", "2.10"), Equal);
        assert_eq!(compare_versions("2.010", "2.10"), Equal);
        assert_eq!(compare_versions("1.2.3", "1.2"), Greater);
        assert_eq!(compare_versions("U46 v1.4", "u46-v1.5"), Less);
        assert_eq!(compare_versions("", "1"), Less);
    }

    #[test]
    fn a_plan_groups_hosts_by_fix_and_its_key_follows_the_design() {
        let d = |host: &str, kind, workflow: Option<&str>, input: Value| Drift {
            host: host.into(),
            kind,
            reason: String::new(),
            workflow: workflow.map(str::to_string),
            input,
            busy: None,
        };
        let fw = json!({"component": "BMC", "version": "2.10"});
        let drift = vec![
            d(
                "b",
                DriftKind::NeverProvisioned,
                Some(PROVISION),
                Value::Null,
            ),
            d("a", DriftKind::ConfigChanged, Some(PROVISION), Value::Null),
            d(
                "a",
                DriftKind::FirmwareBehind,
                Some(FIRMWARE_UPGRADE),
                fw.clone(),
            ),
            d("c", DriftKind::FirmwareBehind, Some(FIRMWARE_UPGRADE), fw),
            d("c", DriftKind::FactsMismatch, None, Value::Null),
            Drift {
                busy: Some(uuid::Uuid::from_u128(3)),
                ..d(
                    "e",
                    DriftKind::NeverProvisioned,
                    Some(PROVISION),
                    Value::Null,
                )
            },
        ];
        let digests = BTreeMap::from([
            ("a".to_string(), "da".to_string()),
            ("b".into(), "db".into()),
        ]);
        let inputs = BTreeMap::from([(
            PROVISION.to_string(),
            json!({"root_password": {"env": "PW"}}),
        )]);
        let (runs, skipped) = plan(&drift, &digests, &inputs, &BTreeMap::new());
        assert_eq!(runs.len(), 1, "no image: the firmware drift is skipped");
        assert_eq!(runs[0].hosts, ["a", "b"]);
        assert_eq!(runs[0].input, json!({"root_password": {"env": "PW"}}));
        let reasons: Vec<(&str, &str)> = skipped
            .iter()
            .map(|s| (s.host.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(
            reasons
                .iter()
                .any(|(h, r)| *h == "a" && r.contains("--image BMC=URL"))
        );
        assert!(
            reasons
                .iter()
                .any(|(h, r)| *h == "c" && r.contains("no workflow fixes it"))
        );
        assert!(
            reasons
                .iter()
                .any(|(h, r)| *h == "e" && r.contains("is working on the host"))
        );

        let images = BTreeMap::from([("bmc".to_string(), "http://fw/bmc.bin".to_string())]);
        let (again, _) = plan(&drift, &digests, &inputs, &images);
        assert_eq!(again.len(), 2);
        let by = |w: &str| again.iter().find(|r| r.workflow == w).unwrap();
        assert_eq!(
            by(PROVISION).idempotency_key,
            runs[0].idempotency_key,
            "the same plan, the same key"
        );
        assert_eq!(by(FIRMWARE_UPGRADE).hosts, ["a", "c"]);
        assert_eq!(by(FIRMWARE_UPGRADE).input["image_url"], "http://fw/bmc.bin");

        // What the design says of a host changed: a new key, so a new run.
        let moved = BTreeMap::from([
            ("a".to_string(), "da2".to_string()),
            ("b".into(), "db".into()),
        ]);
        let (changed, _) = plan(&drift, &moved, &inputs, &BTreeMap::new());
        assert_ne!(changed[0].idempotency_key, runs[0].idempotency_key);
    }
}
