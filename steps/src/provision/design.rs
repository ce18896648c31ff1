//! `validate_design`: the run's hosts against the design in force.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use lariat_engine::{Action, Output, StepContext, StepError};
use lariat_workflows::design::{Finding, Level, ResolvedHost};
use serde_json::{Value, json};

use super::{Provisioning, skipped};

/// Checks that every target is in the design in force and resolves, and reports the
/// findings of the active revision that concern them: on the host itself or on a document
/// it uses (its profiles, hardware and boot profile, site, networks, links). An error
/// finding fails the step (no retry can fix a design); warnings are listed in the output.
/// With `input.refuse_never_provision: true` a host marked `never_provision` fails it too.
pub struct ValidateDesign(pub Arc<Provisioning>);

#[async_trait]
impl Action for ValidateDesign {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        if let Some(s) = skipped(&ctx) {
            return Ok(Output::Done(s));
        }
        let current = self.0.current().await;
        let design = &current.loaded.design;
        let hosts: Vec<String> = match &ctx.item {
            Some(Value::String(h)) => vec![h.clone()],
            _ => ctx.targets.iter().cloned().collect(),
        };
        let refuse_protected = ctx.input.get("refuse_never_provision") == Some(&Value::Bool(true));
        let mut problems = Vec::new();
        let mut used: BTreeSet<(String, String)> = BTreeSet::new();
        for name in &hosts {
            if design.host(name).is_none() {
                problems.push(format!("host '{name}' is not in the design"));
                continue;
            }
            match design.resolved_host(name) {
                Ok(h) => {
                    if refuse_protected && h.never_provision {
                        problems.push(format!(
                            "host '{name}' is marked never_provision in the design"
                        ));
                    }
                    used.extend(documents(&h));
                }
                Err(e) => problems.push(format!("host '{name}': {e}")),
            }
        }
        let findings: Vec<&Finding> = current
            .loaded
            .report
            .findings
            .iter()
            .filter(|f| used.contains(&(f.kind.clone(), f.name.clone())) || f.kind.is_empty())
            .collect();
        for f in findings.iter().filter(|f| f.level == Level::Error) {
            problems.push(format!(
                "{} {} {}: {} [{}]",
                f.kind, f.name, f.path, f.message, f.rule
            ));
        }
        let revision = current.revision.as_deref().unwrap_or("none");
        if !problems.is_empty() {
            return Err(StepError::fatal(
                "design",
                format!(
                    "design revision {revision}: {} problem(s): {}",
                    problems.len(),
                    problems.join("; ")
                ),
            ));
        }
        let warnings: Vec<&&Finding> = findings
            .iter()
            .filter(|f| f.level == Level::Warning)
            .collect();
        Ok(Output::done(json!({
            "revision": current.revision,
            "hosts": hosts,
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
