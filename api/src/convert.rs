//! The engine's rows and views, and the design source's records, as the API shows them
//! ([`lariat_api_types`]).

use std::sync::Arc;

use lariat_api_types as types;
use lariat_engine as eng;

/// A value of ours in the API's own terms.
pub(crate) trait Dto {
    type Out;
    fn dto(self) -> Self::Out;
}

impl Dto for eng::RunStatus {
    type Out = types::RunStatus;
    fn dto(self) -> types::RunStatus {
        use types::RunStatus as T;
        match self {
            eng::RunStatus::Running => T::Running,
            eng::RunStatus::Paused => T::Paused,
            eng::RunStatus::Failed => T::Failed,
            eng::RunStatus::Succeeded => T::Succeeded,
            eng::RunStatus::Cancelled => T::Cancelled,
            eng::RunStatus::RollingBack => T::RollingBack,
            eng::RunStatus::RolledBack => T::RolledBack,
            eng::RunStatus::CompensationFailed => T::CompensationFailed,
            eng::RunStatus::Assigned => T::Assigned,
        }
    }
}

impl Dto for eng::StepStatus {
    type Out = types::StepStatus;
    fn dto(self) -> types::StepStatus {
        use types::StepStatus as T;
        match self {
            eng::StepStatus::Pending => T::Pending,
            eng::StepStatus::Ready => T::Ready,
            eng::StepStatus::Running => T::Running,
            eng::StepStatus::Waiting => T::Waiting,
            eng::StepStatus::Retrying => T::Retrying,
            eng::StepStatus::Succeeded => T::Succeeded,
            eng::StepStatus::Failed => T::Failed,
            eng::StepStatus::Skipped => T::Skipped,
            eng::StepStatus::Cancelled => T::Cancelled,
            eng::StepStatus::Compensating => T::Compensating,
            eng::StepStatus::Compensated => T::Compensated,
        }
    }
}

impl Dto for eng::RunRow {
    type Out = types::Run;
    fn dto(self) -> types::Run {
        types::Run {
            id: self.id,
            workflow: self.workflow,
            version: self.version,
            owner: self.owner.to_string(),
            status: self.status.dto(),
            input: Arc::unwrap_or_clone(self.input),
            targets: Arc::unwrap_or_clone(self.targets),
            idempotency_key: self.idempotency_key,
            error: self.error,
            created_at: self.created_at,
            updated_at: self.updated_at,
            ended_at: self.ended_at,
            group: self.group,
            retrying: None,
        }
    }
}

impl Dto for eng::RunView {
    type Out = types::RunDetail;
    fn dto(self) -> types::RunDetail {
        types::RunDetail {
            run: self.run.dto(),
            steps: self.steps.into_iter().map(Dto::dto).collect(),
        }
    }
}

impl Dto for eng::StepView {
    type Out = types::Step;
    fn dto(self) -> types::Step {
        types::Step {
            name: self.name,
            action: self.action,
            needs: self.needs,
            task: self.task.dto(),
            items: self.items.into_iter().map(Dto::dto).collect(),
        }
    }
}

impl Dto for eng::TaskView {
    type Out = types::Task;
    fn dto(self) -> types::Task {
        let attempts_used = self.row.attempts_used();
        let r = self.row;
        let retrying = matches!(r.status, eng::StepStatus::Retrying);
        let waiting_for = match (&r.status, r.waiting_for) {
            (eng::StepStatus::Waiting, Some(w)) => Some(waiting(w, r.wake_at)),
            _ => None,
        };
        types::Task {
            item: r.item,
            item_value: r.item_value,
            status: r.status.dto(),
            attempt: r.attempt,
            attempts_used,
            input: r.input,
            output: r.output,
            error: r.error,
            waiting_for,
            next_retry_at: if retrying { r.wake_at } else { None },
            started_at: r.started_at,
            ended_at: r.ended_at,
            compensating: r.compensating,
            updated_at: r.updated_at,
            attempts: self.attempts.into_iter().map(Dto::dto).collect(),
        }
    }
}

fn waiting(w: eng::WaitFor, until: Option<i64>) -> types::Waiting {
    match w {
        eng::WaitFor::Signal => types::Waiting {
            for_: "signal".into(),
            window: None,
            until,
        },
        eng::WaitFor::Window { window } => types::Waiting {
            for_: "window".into(),
            window: Some(window),
            until,
        },
    }
}

impl Dto for eng::AttemptView {
    type Out = types::Attempt;
    fn dto(self) -> types::Attempt {
        types::Attempt {
            attempt: self.attempt,
            phase: self.phase,
            status: self.status,
            started_at: self.started_at,
            ended_at: self.ended_at,
            error: self.error,
            output: self.output,
        }
    }
}

impl Dto for &eng::Event {
    type Out = types::RunEvent;
    fn dto(self) -> types::RunEvent {
        types::RunEvent {
            run_id: self.run_id,
            seq: self.seq,
            at: self.at,
            kind: self.kind.name().to_string(),
            step: self.step.as_deref().map(str::to_string),
            item: self.item,
            attempt: self.attempt,
            error: self.error.clone(),
            data: self.kind.data(),
            owner: self.owner.to_string(),
        }
    }
}

impl Dto for &lariat_source::Revision {
    type Out = types::Revision;
    fn dto(self) -> types::Revision {
        types::Revision {
            id: self.id,
            commit: self.commit.clone(),
            branch: self.branch.clone(),
            summary: self.summary.clone(),
            trigger: self.trigger.clone(),
            fetched_at: self.fetched_at,
            status: match self.status {
                lariat_source::RevisionStatus::Active => types::RevisionStatus::Active,
                lariat_source::RevisionStatus::Accepted => types::RevisionStatus::Accepted,
                lariat_source::RevisionStatus::Rejected => types::RevisionStatus::Rejected,
            },
            accepted: self.accepted,
            errors: self.errors,
            warnings: self.warnings,
        }
    }
}

impl Dto for &lariat_source::Pin {
    type Out = types::SitePin;
    fn dto(self) -> types::SitePin {
        types::SitePin {
            site: self.site.clone(),
            rev: self.rev.clone(),
            commit: self.commit.clone(),
            pinned_at: self.pinned_at,
            pinned_by: self.pinned_by.clone(),
        }
    }
}

impl Dto for &lariat_workflows::design::Finding {
    type Out = types::Finding;
    fn dto(self) -> types::Finding {
        types::Finding {
            level: match self.level {
                lariat_workflows::design::Level::Error => types::FindingLevel::Error,
                lariat_workflows::design::Level::Warning => types::FindingLevel::Warning,
            },
            rule: self.rule.clone(),
            message: self.message.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            path: self.path.clone(),
            file: self.file.clone(),
            line: self.line,
        }
    }
}

impl Dto for types::NodeFilter {
    type Out = lariat_workflows::design::NodeFilter;
    fn dto(self) -> lariat_workflows::design::NodeFilter {
        lariat_workflows::design::NodeFilter {
            names: self.names,
            labels: self.labels,
            racks: self.racks,
            sites: self.sites,
            mode: match self.mode {
                types::FilterMode::Union => lariat_workflows::design::FilterMode::Union,
                types::FilterMode::Intersection => {
                    lariat_workflows::design::FilterMode::Intersection
                }
            },
            all: self.all,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_filter_reads_as_the_design_reads_it() {
        // api-types keeps its own copy of the filter's shape; the two must agree on JSON.
        for doc in [
            serde_json::json!({"racks": ["a"], "labels": {"role": "compute"}}),
            serde_json::json!({"names": ["n1"], "sites": ["ams1"], "mode": "union"}),
            serde_json::json!({"all": true}),
        ] {
            let ours: types::NodeFilter = serde_json::from_value(doc.clone()).unwrap();
            let theirs: lariat_workflows::design::NodeFilter =
                serde_json::from_value(doc.clone()).unwrap();
            assert_eq!(ours.clone().dto(), theirs, "{doc}");
            assert_eq!(
                serde_json::to_value(&ours).unwrap(),
                serde_json::to_value(&theirs).unwrap()
            );
        }
        let bad = serde_json::json!({"rack": ["a"]});
        assert!(serde_json::from_value::<types::NodeFilter>(bad.clone()).is_err());
        assert!(serde_json::from_value::<lariat_workflows::design::NodeFilter>(bad).is_err());
    }
}
