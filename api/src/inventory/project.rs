//! A host's inventory folded from the fan-out items that worked on it.
//!
//! Everything here is a pure function of engine rows, which are themselves the fold of the
//! event log; a site agent and the centre hold the same rows after replication, so they
//! show the same inventory, and a restart changes nothing.

use std::collections::{BTreeMap, HashMap};

use lariat_api_types as types;
use lariat_engine::{HostTask, RunStatus, StepStatus, TaskRow};
use serde_json::Value;
use uuid::Uuid;

use crate::convert::Dto;

/// What a workflow does to a host's life, told by its name: `provision` and
/// `deprovision`, or a name starting with either and `-` or `_` (a design's own
/// `provision-raid`, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    Provision,
    Deprovision,
}

impl Lifecycle {
    pub(crate) fn of(workflow: &str) -> Option<Lifecycle> {
        let is = |base: &str| {
            workflow == base
                || workflow
                    .strip_prefix(base)
                    .is_some_and(|rest| rest.starts_with('-') || rest.starts_with('_'))
        };
        if is("provision") {
            Some(Lifecycle::Provision)
        } else if is("deprovision") {
            Some(Lifecycle::Deprovision)
        } else {
            None
        }
    }
}

/// One host's inventory, before the design is consulted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Projection {
    pub(crate) state: types::HostState,
    pub(crate) reason: Option<String>,
    pub(crate) stage: Option<types::HostStep>,
    pub(crate) activity: Option<types::HostStep>,
    pub(crate) power: Option<types::PowerObservation>,
    pub(crate) provisioned: Option<types::Provisioned>,
    pub(crate) facts: Option<types::HostFacts>,
    pub(crate) firmware: Vec<types::FirmwareVersion>,
    /// Newest first.
    pub(crate) history: Vec<types::HostRun>,
    /// A live run with an item for the host not settled yet.
    pub(crate) busy: Option<Uuid>,
}

/// Runs of this workflow read a host and change nothing: their outputs are observations
/// (the power a poll read), and they are no activity, no history, and never make a host
/// busy.
fn observes_only(workflow: &str) -> bool {
    workflow == lariat_workflows::POWER_POLL.name
}

/// The runs a projection needs the run-level steps of: the provisioning runs that
/// succeeded, whose `validate_design` output says what the host was built from.
pub(crate) fn runs_needing_steps(tasks: &[HostTask]) -> Vec<Uuid> {
    let mut v: Vec<Uuid> = tasks
        .iter()
        .filter(|t| {
            t.run_status == RunStatus::Succeeded
                && Lifecycle::of(&t.workflow) == Some(Lifecycle::Provision)
        })
        .map(|t| t.run)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Folds `tasks` (every fan-out item of `host`, any order) and the run-level steps of the
/// runs [`runs_needing_steps`] named into the host's inventory.
pub(crate) fn project(
    host: &str,
    tasks: &[&HostTask],
    run_steps: &HashMap<Uuid, Vec<TaskRow>>,
) -> Projection {
    let mut by_time: Vec<&HostTask> = tasks.to_vec();
    // Ties broken by run and step so that two equal projections order alike.
    by_time.sort_by(|a, b| {
        (changed_at(&a.task), a.run, &a.task.step).cmp(&(changed_at(&b.task), b.run, &b.task.step))
    });

    // A power poll only observes: it counts for the power, not as what acted on the host.
    let activity = by_time
        .iter()
        .rev()
        .find(|t| !observes_only(&t.workflow))
        .map(|t| step_of(t));
    let mut power = None;
    let mut facts = None;
    let mut firmware: BTreeMap<String, types::FirmwareVersion> = BTreeMap::new();
    for t in &by_time {
        let Some(out) = t.task.output.as_ref() else {
            continue;
        };
        let at = changed_at(&t.task);
        if let Some(state) = out.get("power").and_then(Value::as_str) {
            power = Some(types::PowerObservation {
                state: state.to_string(),
                at,
                run: t.run,
                step: t.task.step.to_string(),
            });
        } else if out.get("unreachable").is_some_and(Value::is_string) {
            power = Some(types::PowerObservation {
                state: "unreachable".into(),
                at,
                run: t.run,
                step: t.task.step.to_string(),
            });
        } else if out.get("power_cycled") == Some(&Value::Bool(true)) {
            power = Some(types::PowerObservation {
                state: "on".into(),
                at,
                run: t.run,
                step: t.task.step.to_string(),
            });
        }
        if let Some(f) = out.get("facts").filter(|f| f.is_object()) {
            facts = Some(types::HostFacts {
                at,
                run: t.run,
                facts: f.clone(),
            });
        }
        // A BMC's whole inventory (verify with `firmware: true`), then one component's
        // version after an upgrade.
        if let Some(list) = out.get("firmware").and_then(Value::as_array) {
            for c in list {
                let (Some(id), Some(version)) = (
                    c.get("id")
                        .or_else(|| c.get("name"))
                        .and_then(Value::as_str),
                    c.get("version").and_then(Value::as_str),
                ) else {
                    continue;
                };
                firmware.insert(
                    id.to_ascii_lowercase(),
                    types::FirmwareVersion {
                        component: id.to_string(),
                        version: version.to_string(),
                        at,
                        run: t.run,
                    },
                );
            }
        }
        if t.task.status == StepStatus::Succeeded
            && let (Some(c), Some(v)) = (
                out.get("component").and_then(Value::as_str),
                out.get("version").and_then(Value::as_str),
            )
        {
            firmware.insert(
                c.to_ascii_lowercase(),
                types::FirmwareVersion {
                    component: c.to_string(),
                    version: v.to_string(),
                    at,
                    run: t.run,
                },
            );
        }
    }

    // The runs, each with the host's items in it.
    let mut runs: BTreeMap<Uuid, Vec<&HostTask>> = BTreeMap::new();
    for t in tasks.iter().filter(|t| !observes_only(&t.workflow)) {
        runs.entry(t.run).or_default().push(t);
    }
    let mut ordered: Vec<(Uuid, Vec<&HostTask>)> = runs.into_iter().collect();
    ordered.sort_by_key(|(id, ts)| (ts[0].run_created_at, *id));

    let busy = ordered.iter().rev().find_map(|(id, ts)| {
        let live = ts[0].run_status.is_live() || ts[0].run_status == RunStatus::Assigned;
        (live && ts.iter().any(|t| !t.task.status.is_settled())).then_some(*id)
    });

    let (state, reason, stage) = match ordered
        .iter()
        .rev()
        .find_map(|(_, ts)| Lifecycle::of(&ts[0].workflow).map(|l| (l, ts)))
    {
        None => (types::HostState::New, None, None),
        Some((kind, ts)) => {
            let (state, reason) = lifecycle_state(kind, ts);
            let reached = ts
                .iter()
                .filter(|t| t.task.started_at.is_some())
                .max_by_key(|t| (t.task.started_at, changed_at(&t.task)))
                .or_else(|| ts.iter().max_by_key(|t| changed_at(&t.task)));
            (state, reason, reached.map(|t| step_of(t)))
        }
    };

    let provisioned = ordered
        .iter()
        .rev()
        .find(|(_, ts)| {
            ts[0].run_status == RunStatus::Succeeded
                && Lifecycle::of(&ts[0].workflow) == Some(Lifecycle::Provision)
                && !ts.iter().any(|t| t.task.status == StepStatus::Failed)
        })
        .map(|(id, ts)| {
            let validated = run_steps
                .get(id)
                .into_iter()
                .flatten()
                .filter_map(|s| s.output.as_ref())
                .find(|o| o.get("revisions").is_some() || o.get("digests").is_some());
            let revision = validated.and_then(|o| {
                o.get("revisions")?
                    .as_object()?
                    .iter()
                    .find(|(_, hosts)| {
                        hosts
                            .as_array()
                            .is_some_and(|a| a.iter().any(|h| h.as_str() == Some(host)))
                    })
                    .map(|(rev, _)| rev.clone())
                    .filter(|rev| rev != "none")
            });
            let digest = validated
                .and_then(|o| o.get("digests")?.get(host)?.as_str())
                .map(str::to_string);
            types::Provisioned {
                run: *id,
                at: ts[0]
                    .run_ended_at
                    .unwrap_or_else(|| ts.iter().map(|t| changed_at(&t.task)).max().unwrap_or(0)),
                revision,
                digest,
            }
        });

    let history = ordered
        .iter()
        .rev()
        .take(50)
        .filter_map(|(id, ts)| {
            let last = ts
                .iter()
                .max_by_key(|t| (changed_at(&t.task), &t.task.step))?;
            Some(types::HostRun {
                run: *id,
                workflow: ts[0].workflow.clone(),
                status: ts[0].run_status.dto(),
                created_at: ts[0].run_created_at,
                ended_at: ts[0].run_ended_at,
                last_step: step_of(last),
            })
        })
        .collect();

    Projection {
        state,
        reason,
        stage,
        activity,
        power,
        provisioned,
        facts,
        firmware: firmware.into_values().collect(),
        history,
        busy,
    }
}

/// The state a (de)provisioning run leaves its host in, from the host's own items first
/// (a host can fail in a run that goes on for others) and then from the run.
fn lifecycle_state(kind: Lifecycle, ts: &[&HostTask]) -> (types::HostState, Option<String>) {
    use types::HostState as H;
    let (doing, done) = match kind {
        Lifecycle::Provision => (H::Provisioning, H::Provisioned),
        Lifecycle::Deprovision => (H::Deprovisioning, H::Deprovisioned),
    };
    let run = ts[0];
    if let Some(failed) = ts
        .iter()
        .filter(|t| t.task.status == StepStatus::Failed)
        .max_by_key(|t| changed_at(&t.task))
    {
        let why = failed.task.error.as_deref().unwrap_or("no error recorded");
        return (
            H::Failed,
            Some(format!(
                "step {} of run {} ({}) failed: {why}",
                failed.task.step, run.run, run.workflow
            )),
        );
    }
    match run.run_status {
        RunStatus::Succeeded => (done, None),
        RunStatus::Running | RunStatus::Assigned => (doing, None),
        RunStatus::Paused => (doing, Some(format!("run {} is paused", run.run))),
        RunStatus::Failed => (
            doing,
            Some(format!(
                "run {} stopped for an operator (a step failed for another host)",
                run.run
            )),
        ),
        RunStatus::RollingBack => (H::Failed, Some(format!("run {} is rolling back", run.run))),
        other => (
            H::Failed,
            Some(format!(
                "run {} ({}) ended {} before finishing for this host",
                run.run,
                run.workflow,
                other.as_str()
            )),
        ),
    }
}

/// When a task last changed: its end, else its start, else its row's last update.
fn changed_at(t: &TaskRow) -> i64 {
    t.updated_at
        .max(t.ended_at.unwrap_or(0))
        .max(t.started_at.unwrap_or(0))
}

fn step_of(t: &HostTask) -> types::HostStep {
    types::HostStep {
        run: t.run,
        workflow: t.workflow.clone(),
        step: t.task.step.to_string(),
        status: t.task.status.dto(),
        attempt: t.task.attempt,
        at: changed_at(&t.task),
        error: t.task.error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    fn task(
        run: u128,
        workflow: &str,
        rs: RunStatus,
        step: &str,
        st: StepStatus,
        at: i64,
    ) -> HostTask {
        let mut t = TaskRow::new(Arc::from(step), Some(0));
        t.status = st;
        t.attempt = 1;
        t.item_value = Some(json!("h1"));
        t.started_at = Some(at);
        t.updated_at = at;
        if st.is_settled() {
            t.ended_at = Some(at);
        }
        HostTask {
            run: Uuid::from_u128(run),
            workflow: workflow.into(),
            run_status: rs,
            run_created_at: run as i64,
            run_ended_at: (!rs.is_live()).then_some(at),
            task: t,
        }
    }

    fn with_output(mut t: HostTask, out: Value) -> HostTask {
        t.task.output = Some(out);
        t
    }

    fn fold(tasks: &[HostTask], steps: &HashMap<Uuid, Vec<TaskRow>>) -> Projection {
        let refs: Vec<&HostTask> = tasks.iter().collect();
        project("h1", &refs, steps)
    }

    #[test]
    fn a_host_no_provisioning_touched_is_new_whatever_else_ran() {
        let p = fold(&[], &HashMap::new());
        assert_eq!(p.state, types::HostState::New);
        assert!(p.activity.is_none() && p.history.is_empty());
        let power = with_output(
            task(
                1,
                "power_cycle",
                RunStatus::Succeeded,
                "cycle",
                StepStatus::Succeeded,
                10,
            ),
            json!({"host": "h1", "power": "on", "cycled": true}),
        );
        let p = fold(&[power], &HashMap::new());
        assert_eq!(p.state, types::HostState::New);
        assert_eq!(p.power.as_ref().map(|o| o.state.as_str()), Some("on"));
        assert_eq!(p.activity.as_ref().map(|a| a.step.as_str()), Some("cycle"));
    }

    #[test]
    fn a_power_poll_is_an_observation_only_and_a_dead_bmc_reads_unreachable() {
        let ok = RunStatus::Succeeded;
        let provision = with_output(
            task(1, "provision", ok, "boot", StepStatus::Succeeded, 10),
            json!({"host": "h1", "power": "on"}),
        );
        let poll = with_output(
            task(
                2,
                "power-poll",
                RunStatus::Running,
                "power_status",
                StepStatus::Succeeded,
                20,
            ),
            json!({"host": "h1", "power": "off"}),
        );
        let p = fold(&[provision.clone(), poll], &HashMap::new());
        assert_eq!(
            p.power.as_ref().map(|o| (o.state.as_str(), o.at)),
            Some(("off", 20))
        );
        assert_eq!(p.activity.as_ref().map(|a| a.step.as_str()), Some("boot"));
        assert_eq!(p.history.len(), 1, "the poll is not history");
        assert!(p.busy.is_none(), "a live poll does not make the host busy");
        let dead = with_output(
            task(
                3,
                "power-poll",
                ok,
                "power_status",
                StepStatus::Succeeded,
                30,
            ),
            json!({"host": "h1", "power": null, "unreachable": "connection refused"}),
        );
        let p = fold(&[provision, dead], &HashMap::new());
        assert_eq!(p.power.map(|o| o.state), Some("unreachable".into()));
    }

    #[test]
    fn a_succeeded_provision_says_what_it_was_built_from() {
        let ok = RunStatus::Succeeded;
        let tasks = [
            with_output(
                task(1, "provision", ok, "power_off", StepStatus::Succeeded, 10),
                json!({"host": "h1", "power": "off"}),
            ),
            with_output(
                task(1, "provision", ok, "boot", StepStatus::Succeeded, 20),
                json!({"host": "h1", "power": "on"}),
            ),
            with_output(
                task(
                    1,
                    "provision",
                    ok,
                    "await_callback",
                    StepStatus::Succeeded,
                    30,
                ),
                json!({"host": "h1", "state": "installed", "facts": {"serial": "S1"}}),
            ),
            task(1, "provision", ok, "verify", StepStatus::Succeeded, 40),
        ];
        let mut validate = TaskRow::new(Arc::from("validate_design"), None);
        validate.output = Some(json!({
            "revision": "abc", "revisions": {"abc": ["h1", "h2"]},
            "digests": {"h1": "d1", "h2": "d2"},
        }));
        let steps = HashMap::from([(Uuid::from_u128(1), vec![validate])]);
        assert_eq!(runs_needing_steps(&tasks), vec![Uuid::from_u128(1)]);
        let p = fold(&tasks, &steps);
        assert_eq!(p.state, types::HostState::Provisioned);
        assert_eq!(p.stage.as_ref().map(|s| s.step.as_str()), Some("verify"));
        assert_eq!(
            p.power.as_ref().map(|o| (o.state.as_str(), o.at)),
            Some(("on", 20))
        );
        assert_eq!(
            p.facts.as_ref().map(|f| f.facts["serial"].clone()),
            Some(json!("S1"))
        );
        let prov = p.provisioned.expect("provisioned");
        assert_eq!(prov.revision.as_deref(), Some("abc"));
        assert_eq!(prov.digest.as_deref(), Some("d1"));
        assert!(p.busy.is_none());
    }

    #[test]
    fn a_host_failing_in_a_run_that_goes_on_is_failed_and_says_where() {
        let mut failed = task(
            1,
            "provision",
            RunStatus::Failed,
            "await_callback",
            StepStatus::Failed,
            30,
        );
        failed.task.error = Some("timeout: no callback in 30m".into());
        let tasks = [
            task(
                1,
                "provision",
                RunStatus::Failed,
                "boot",
                StepStatus::Succeeded,
                20,
            ),
            failed,
        ];
        let p = fold(&tasks, &HashMap::new());
        assert_eq!(p.state, types::HostState::Failed);
        let reason = p.reason.unwrap();
        assert!(
            reason.contains("step await_callback") && reason.contains("no callback"),
            "{reason}"
        );
        // Stopped for an operator, the run is still live: the host is busy until it ends.
        assert_eq!(p.busy, None, "every item of the host is settled");
    }

    #[test]
    fn a_host_mid_way_is_provisioning_and_busy_and_a_later_deprovision_wins() {
        let tasks = [task(
            1,
            "provision",
            RunStatus::Running,
            "boot",
            StepStatus::Running,
            20,
        )];
        let p = fold(&tasks, &HashMap::new());
        assert_eq!(p.state, types::HostState::Provisioning);
        assert_eq!(p.busy, Some(Uuid::from_u128(1)));

        let tasks = [
            task(
                1,
                "provision",
                RunStatus::Succeeded,
                "verify",
                StepStatus::Succeeded,
                40,
            ),
            task(
                2,
                "deprovision",
                RunStatus::Succeeded,
                "boot_from_disk",
                StepStatus::Succeeded,
                90,
            ),
        ];
        let p = fold(&tasks, &HashMap::new());
        assert_eq!(p.state, types::HostState::Deprovisioned);
        assert_eq!(p.history.len(), 2);
        assert_eq!(p.history[0].workflow, "deprovision", "newest first");
        // The last provision still says what the host was built from.
        assert_eq!(p.provisioned.map(|v| v.run), Some(Uuid::from_u128(1)));
    }

    #[test]
    fn a_cancelled_provision_leaves_its_host_failed() {
        let tasks = [task(
            1,
            "provision",
            RunStatus::Cancelled,
            "boot",
            StepStatus::Cancelled,
            20,
        )];
        let p = fold(&tasks, &HashMap::new());
        assert_eq!(p.state, types::HostState::Failed);
        assert!(p.reason.unwrap().contains("ended cancelled"));
    }

    #[test]
    fn firmware_versions_come_from_the_inventory_then_from_later_upgrades() {
        let tasks = [
            with_output(
                task(
                    1,
                    "firmware_check",
                    RunStatus::Succeeded,
                    "verify",
                    StepStatus::Succeeded,
                    10,
                ),
                json!({"host": "h1", "firmware": [
                    {"id": "BMC", "name": "BMC", "version": "1.0"},
                    {"id": "BIOS", "name": "BIOS", "version": "2.0"}]}),
            ),
            with_output(
                task(
                    2,
                    "firmware_upgrade",
                    RunStatus::Succeeded,
                    "upgrade",
                    StepStatus::Succeeded,
                    20,
                ),
                json!({"host": "h1", "component": "BMC", "from": "1.0", "version": "1.2", "power_cycled": true}),
            ),
        ];
        let p = fold(&tasks, &HashMap::new());
        let fw: Vec<(&str, &str)> = p
            .firmware
            .iter()
            .map(|f| (f.component.as_str(), f.version.as_str()))
            .collect();
        assert_eq!(fw, [("BIOS", "2.0"), ("BMC", "1.2")]);
        assert_eq!(p.power.map(|o| o.state), Some("on".into()));
    }

    #[test]
    fn lifecycle_is_told_by_the_workflow_name() {
        assert_eq!(Lifecycle::of("provision"), Some(Lifecycle::Provision));
        assert_eq!(Lifecycle::of("provision-noop"), Some(Lifecycle::Provision));
        assert_eq!(
            Lifecycle::of("deprovision_fast"),
            Some(Lifecycle::Deprovision)
        );
        assert_eq!(Lifecycle::of("provisioner"), None);
        assert_eq!(Lifecycle::of("firmware_upgrade"), None);
    }
}
