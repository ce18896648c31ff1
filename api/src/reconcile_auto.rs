//! `lariat server --reconcile-auto KINDS`: the reconciliation an operator would apply with
//! `lariat reconcile --apply --kinds KINDS`, on a timer, at the central node. Off unless
//! asked for. Each pass submits under the same idempotency keys as a manual apply (hosts
//! and their configuration digests), so a drift is fixed by one run however many passes
//! see it, a failed fix is left to an operator rather than retried, and hosts a live run
//! works on are left alone. Runs wait for their windows as any run does.

use std::sync::Arc;
use std::time::Duration;

use lariat_api_types::{DriftKind, ReconcileRequest};
use tokio_util::sync::CancellationToken;

use crate::auth::Caller;
use crate::routes::inventory::reconcile_with;
use crate::state::AppState;
use crate::tokens::Role;

/// What the background reconciler fixes, and how often it looks.
#[derive(Debug, Clone)]
pub struct AutoReconcile {
    /// The drift kinds it submits fixes for; never empty.
    pub kinds: Vec<DriftKind>,
    pub every: Duration,
}

/// The name its runs and audit entries carry.
pub const ACTOR: &str = "reconcile-auto";

pub(crate) fn spawn(st: Arc<AppState>, cfg: AutoReconcile, stop: CancellationToken) {
    tokio::spawn(async move {
        let caller = Caller {
            name: Arc::from(ACTOR),
            role: Role::Operator,
            from: None,
        };
        tracing::info!(kinds = ?cfg.kinds, every = ?cfg.every, "reconciling drift automatically");
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(cfg.every) => {}
            }
            let req = ReconcileRequest {
                kinds: cfg.kinds.clone(),
                ..Default::default()
            };
            match reconcile_with(&st, req, &caller, true).await {
                Ok(out) => {
                    for r in out.runs.iter().filter(|r| r.created) {
                        metrics::counter!("lariat_reconcile_auto_runs_total").increment(1);
                        tracing::info!(
                            run = ?r.run, workflow = %r.workflow, hosts = r.hosts.len(),
                            "reconcile-auto started a run"
                        );
                    }
                    for s in &out.skipped {
                        tracing::debug!(host = %s.host, kind = ?s.kind, "reconcile-auto left it: {}", s.reason);
                    }
                }
                Err(e) => tracing::warn!("reconcile-auto pass failed: {}", e.message),
            }
        }
    });
}
