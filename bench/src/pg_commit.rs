//! `lariat-bench pg-commit`: the engine's group commit, reduced to its rows, on SQLite (as
//! the engine writes it today: one JSON parameter per table, `jsonb_each`) and on
//! PostgreSQL in two forms the PostgreSQL store could take (`jsonb_to_recordset` over one
//! JSON parameter, `UNNEST` over typed arrays), in one run, so that the form is chosen by
//! a measured figure and the ≥ 1,000 workflows/s target is known to be within reach of
//! the writes alone.
//!
//! The workload has the provision-7 shape: `--in-flight` workflows advance together, one
//! commit per step, each commit carrying for every workflow the step's two events and its
//! step row (the first also the run's row and its creation event, the last the run's
//! final row): 15 events, 7 step rows and 2 run rows per workflow, in 7 commits per wave.
//! Both databases commit durably (SQLite `synchronous=FULL` in WAL, PostgreSQL's
//! default `synchronous_commit=on`). The tables have the engine's keys and indexes but
//! fewer columns; the figure is the writes' ceiling, not the engine's.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use serde_json::{Value, json};
use sqlx::Connection;

const STEPS: [&str; 7] = [
    "validate",
    "stage",
    "power_off",
    "set_pxe",
    "boot",
    "callback",
    "verify",
];

#[derive(Args)]
pub struct PgCommitBench {
    /// A PostgreSQL server the bench may create a database on (dropped after).
    #[arg(long, env = "LARIAT_TEST_POSTGRES")]
    postgres: String,
    /// Workflows in all, per form and wave size.
    #[arg(long, default_value_t = 20_000)]
    workflows: usize,
    /// Workflows that advance together (rows per commit), one figure each.
    #[arg(long, value_delimiter = ',', default_value = "16,256,2048")]
    in_flight: Vec<usize>,
}

/// One commit's rows.
#[derive(Default)]
struct Batch {
    events: Vec<EventRow>,
    steps: Vec<StepRow>,
    runs: Vec<RunRow>,
}

struct EventRow {
    run: String,
    seq: i64,
    owner_seq: i64,
    at: i64,
    kind: &'static str,
    step: Option<&'static str>,
    data: Option<String>,
}

struct StepRow {
    run: String,
    step: &'static str,
    status: &'static str,
    output: Option<String>,
    updated_at: i64,
}

struct RunRow {
    id: String,
    status: &'static str,
    updated_at: i64,
}

/// The 7 commits of one wave of `n` workflows, numbered from `first`.
fn wave(first: usize, n: usize, owner_seq: &mut i64) -> Vec<Batch> {
    let now = 1_767_000_000_000i64;
    let runs: Vec<String> = (first..first + n)
        .map(|i| format!("0190a1d2-0000-7000-8000-{i:012x}"))
        .collect();
    let mut seqs = vec![0i64; n];
    let mut batches = Vec::new();
    for (s, step) in STEPS.iter().enumerate() {
        let mut b = Batch::default();
        for (w, run) in runs.iter().enumerate() {
            let mut event = |kind, step, data: Option<String>| {
                seqs[w] += 1;
                *owner_seq += 1;
                b.events.push(EventRow {
                    run: run.clone(),
                    seq: seqs[w],
                    owner_seq: *owner_seq,
                    at: now,
                    kind,
                    step,
                    data,
                });
            };
            if s == 0 {
                event(
                    "run_created",
                    None,
                    Some(r#"{"input":{"image":"debian-13"}}"#.into()),
                );
            }
            event("step_started", Some(step), None);
            event(
                "step_succeeded",
                Some(step),
                Some(r#"{"output":{"ok":true}}"#.into()),
            );
            b.steps.push(StepRow {
                run: run.clone(),
                step,
                status: "succeeded",
                output: Some(r#"{"ok":true}"#.into()),
                updated_at: now,
            });
            if s == 0 || s == STEPS.len() - 1 {
                b.runs.push(RunRow {
                    id: run.clone(),
                    status: if s == 0 { "running" } else { "succeeded" },
                    updated_at: now,
                });
            }
        }
        batches.push(b);
    }
    batches
}

const SCHEMA: [&str; 4] = [
    "CREATE TABLE events (run_id TEXT NOT NULL, seq BIGINT NOT NULL, owner TEXT NOT NULL, owner_seq BIGINT NOT NULL, at BIGINT NOT NULL, kind TEXT NOT NULL, step TEXT, data TEXT, PRIMARY KEY (run_id, seq))",
    "CREATE UNIQUE INDEX events_by_owner ON events (owner, owner_seq)",
    "CREATE TABLE steps (run_id TEXT NOT NULL, step TEXT NOT NULL, item BIGINT NOT NULL, status TEXT NOT NULL, output TEXT, updated_at BIGINT NOT NULL, PRIMARY KEY (run_id, step, item))",
    "CREATE TABLE runs (id TEXT PRIMARY KEY, status TEXT NOT NULL, updated_at BIGINT NOT NULL)",
];

fn as_json(b: &Batch) -> (Value, Value, Value) {
    let events = b
        .events
        .iter()
        .map(|e| json!({"run_id": e.run, "seq": e.seq, "owner": "central", "owner_seq": e.owner_seq, "at": e.at, "kind": e.kind, "step": e.step, "data": e.data}))
        .collect();
    let steps = b
        .steps
        .iter()
        .map(|s| json!({"run_id": s.run, "step": s.step, "item": -1, "status": s.status, "output": s.output, "updated_at": s.updated_at}))
        .collect();
    let runs = b
        .runs
        .iter()
        .map(|r| json!({"id": r.id, "status": r.status, "updated_at": r.updated_at}))
        .collect();
    (
        Value::Array(events),
        Value::Array(steps),
        Value::Array(runs),
    )
}

/// The engine's form on SQLite: a JSON array per table, read by position with `->>`.
async fn commit_sqlite(c: &mut sqlx::SqliteConnection, b: &Batch) -> Result<()> {
    let events: Vec<Value> = b
        .events
        .iter()
        .map(|e| {
            json!([
                e.run,
                e.seq,
                "central",
                e.owner_seq,
                e.at,
                e.kind,
                e.step,
                e.data
            ])
        })
        .collect();
    let steps: Vec<Value> = b
        .steps
        .iter()
        .map(|s| json!([s.run, s.step, -1, s.status, s.output, s.updated_at]))
        .collect();
    let runs: Vec<Value> = b
        .runs
        .iter()
        .map(|r| json!([r.id, r.status, r.updated_at]))
        .collect();
    let mut tx = c.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("INSERT INTO events (run_id, seq, owner, owner_seq, at, kind, step, data) SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7 FROM jsonb_each(?1)")
        .bind(Value::Array(events).to_string())
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO steps (run_id, step, item, status, output, updated_at) SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5 FROM jsonb_each(?1) WHERE true ON CONFLICT (run_id, step, item) DO UPDATE SET status = excluded.status, output = excluded.output, updated_at = excluded.updated_at")
        .bind(Value::Array(steps).to_string())
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO runs (id, status, updated_at) SELECT value->>0, value->>1, value->>2 FROM jsonb_each(?1) WHERE true ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at")
        .bind(Value::Array(runs).to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// PostgreSQL, one JSON parameter per table typed by `jsonb_to_recordset`.
async fn commit_recordset(c: &mut sqlx::PgConnection, b: &Batch) -> Result<()> {
    let (events, steps, runs) = as_json(b);
    let mut tx = c.begin().await?;
    sqlx::query("INSERT INTO events (run_id, seq, owner, owner_seq, at, kind, step, data) SELECT * FROM jsonb_to_recordset($1) AS x(run_id text, seq bigint, owner text, owner_seq bigint, at bigint, kind text, step text, data text)")
        .bind(events)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO steps (run_id, step, item, status, output, updated_at) SELECT * FROM jsonb_to_recordset($1) AS x(run_id text, step text, item bigint, status text, output text, updated_at bigint) ON CONFLICT (run_id, step, item) DO UPDATE SET status = excluded.status, output = excluded.output, updated_at = excluded.updated_at")
        .bind(steps)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO runs (id, status, updated_at) SELECT * FROM jsonb_to_recordset($1) AS x(id text, status text, updated_at bigint) ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at")
        .bind(runs)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// PostgreSQL, one typed array per column, zipped by `UNNEST`.
async fn commit_unnest(c: &mut sqlx::PgConnection, b: &Batch) -> Result<()> {
    let e = &b.events;
    let mut tx = c.begin().await?;
    sqlx::query("INSERT INTO events (run_id, seq, owner, owner_seq, at, kind, step, data) SELECT r, s, 'central', o, a, k, st, d FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[]) AS x(r, s, o, a, k, st, d)")
        .bind(e.iter().map(|e| e.run.as_str()).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.seq).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.owner_seq).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.at).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.kind).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.step).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.data.as_deref()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    let s = &b.steps;
    sqlx::query("INSERT INTO steps (run_id, step, item, status, output, updated_at) SELECT r, st, -1, status, o, u FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) AS x(r, st, status, o, u) ON CONFLICT (run_id, step, item) DO UPDATE SET status = excluded.status, output = excluded.output, updated_at = excluded.updated_at")
        .bind(s.iter().map(|s| s.run.as_str()).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.step).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.status).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.output.as_deref()).collect::<Vec<_>>())
        .bind(s.iter().map(|s| s.updated_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    let r = &b.runs;
    sqlx::query("INSERT INTO runs (id, status, updated_at) SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[]) ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at")
        .bind(r.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
        .bind(r.iter().map(|r| r.status).collect::<Vec<_>>())
        .bind(r.iter().map(|r| r.updated_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn run(b: PgCommitBench) -> Result<()> {
    for &in_flight in &b.in_flight {
        let waves = b.workflows.div_ceil(in_flight.max(1));
        for form in ["sqlite-jsonb_each", "pg-jsonb_to_recordset", "pg-unnest"] {
            let mut owner_seq = 0i64;
            let mut sqlite = None;
            let mut pg = None;
            let mut scratch = None;
            let dir = tempfile::tempdir()?;
            if form.starts_with("sqlite") {
                let opts = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(dir.path().join("bench.db"))
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
                let mut c = sqlx::SqliteConnection::connect_with(&opts).await?;
                for ddl in SCHEMA {
                    sqlx::query(ddl).execute(&mut c).await?;
                }
                sqlite = Some(c);
            } else {
                let s = lariat_db::testing::TestDatabase::on(&b.postgres).await?;
                let mut c = sqlx::PgConnection::connect(&s.url).await?;
                for ddl in SCHEMA {
                    sqlx::query(ddl).execute(&mut c).await?;
                }
                pg = Some(c);
                scratch = Some(s);
            }
            let (mut commits, mut rows) = (0usize, 0usize);
            let mut busy = std::time::Duration::ZERO;
            for w in 0..waves {
                // Rows are made before the clock starts: the figure is the database's.
                let batches = wave(w * in_flight, in_flight, &mut owner_seq);
                let started = Instant::now();
                for batch in &batches {
                    match (form, sqlite.as_mut(), pg.as_mut()) {
                        ("sqlite-jsonb_each", Some(c), _) => commit_sqlite(c, batch).await?,
                        ("pg-jsonb_to_recordset", _, Some(c)) => commit_recordset(c, batch).await?,
                        (_, _, Some(c)) => commit_unnest(c, batch).await?,
                        _ => unreachable!("each form has its connection"),
                    }
                    commits += 1;
                    rows += batch.events.len() + batch.steps.len() + batch.runs.len();
                }
                busy += started.elapsed();
            }
            let secs = busy.as_secs_f64();
            let workflows = waves * in_flight;
            println!(
                "{}",
                json!({
                    "bench": "pg-commit",
                    "form": form,
                    "in_flight": in_flight,
                    "workflows": workflows,
                    "commits": commits,
                    "rows": rows,
                    "seconds": (secs * 1000.0).round() / 1000.0,
                    "workflows_per_s": (workflows as f64 / secs).round(),
                    "rows_per_s": (rows as f64 / secs).round(),
                    "commit_ms": (secs * 1000.0 / commits as f64 * 1000.0).round() / 1000.0,
                })
            );
            // The connection first: the scratch database is dropped with its handle.
            drop(pg);
            drop(scratch);
        }
    }
    Ok(())
}
