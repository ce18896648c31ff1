//! `validate_design`: the run's hosts against the design in force.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use lariat_engine::{Action, Output, StepContext, StepError};
use lariat_workflows::design::{Finding, Level, ResolvedHost};
use serde_json::{Value, json};

use super::Provisioning;

/// Checks that every target is in the design in force and resolves, and reports the
/// findings of the active revision that concern them: on the host itself or on a document
/// it uses (its profiles, hardware and boot profile, site, networks, links). An error
/// finding fails the step (no retry can fix a design); warnings are listed in the output.
/// With `input.refuse_never_provision: true` a host marked `never_provision` fails it too.
pub struct ValidateDesign(pub Arc<Provisioning>);

#[async_trait]
impl Action for ValidateDesign {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        let hosts: Vec<String> = match &ctx.item {
            Some(Value::String(h)) => vec![h.clone()],
            _ => ctx.targets.iter().cloned().collect(),
        };
        let refuse_protected = ctx.input.get("refuse_never_provision") == Some(&Value::Bool(true));
        let mut problems = Vec::new();
        // Findings once each, though several hosts use the same documents.
        let mut errors: BTreeSet<String> = BTreeSet::new();
        let mut warnings: Vec<Finding> = Vec::new();
        let mut revisions: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // What each host is built from, for drift: the resolved configuration's digest.
        let mut digests: BTreeMap<String, String> = BTreeMap::new();
        for name in &hosts {
            // A pinned site's hosts are checked against the revision it is pinned to.
            let current = self.0.for_host(name).await?;
            let revision = current.revision.clone().unwrap_or_else(|| "none".into());
            revisions
                .entry(revision.clone())
                .or_default()
                .push(name.clone());
            let design = &current.loaded.design;
            if design.host(name).is_none() {
                problems.push(format!(
                    "host '{name}' is not in the design (revision {revision})"
                ));
                continue;
            }
            let used: BTreeSet<(String, String)> = match design.resolved_host(name) {
                Ok(h) => {
                    digests.insert(name.clone(), h.digest());
                    if refuse_protected && h.never_provision {
                        problems.push(format!(
                            "host '{name}' is marked never_provision in the design"
                        ));
                    }
                    documents(&h).into_iter().collect()
                }
                Err(e) => {
                    problems.push(format!("host '{name}': {e}"));
                    continue;
                }
            };
            for f in
                current.loaded.report.findings.iter().filter(|f| {
                    used.contains(&(f.kind.clone(), f.name.clone())) || f.kind.is_empty()
                })
            {
                match f.level {
                    Level::Error => {
                        errors.insert(format!(
                            "{} {} {}: {} [{}] (revision {revision})",
                            f.kind, f.name, f.path, f.message, f.rule
                        ));
                    }
                    Level::Warning if !warnings.contains(f) => warnings.push(f.clone()),
                    Level::Warning => {}
                }
            }
        }
        problems.extend(errors);
        if !problems.is_empty() {
            return Err(StepError::fatal(
                "design",
                format!("{} problem(s): {}", problems.len(), problems.join("; ")),
            ));
        }
        let revision = match revisions.len() {
            1 => revisions.keys().next().cloned().map(Value::String),
            _ => None,
        };
        Ok(Output::done(json!({
            "revision": revision,
            "revisions": revisions,
            "hosts": hosts,
            "digests": digests,
            "warnings": warnings,
        })))
    }
}

/// The documents a resolved host depends on, as (kind, name).
fn documents(h: &ResolvedHost) -> Vec<(String, String)> {
    let mut v = vec![("Host".to_string(), h.name.clone())];
    let mut add = |kind: &str, name: &Option<String>| {
        if let Some(n) = name {
            v.push((kind.to_string(), n.clone()));
        }
    };
    add("HardwareProfile", &h.hardware_profile);
    add("BootProfile", &h.boot_profile);
    add("Site", &h.site);
    for i in &h.interfaces {
        add("Network", &i.interface.network);
        add("NetworkLink", &i.interface.link);
    }
    for p in &h.profiles {
        v.push(("HostProfile".to_string(), p.clone()));
    }
    v
}
