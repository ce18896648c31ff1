//! The design source's tables: revision and pin records (`design_revisions`,
//! `site_pins`). Every statement on them is in this file.

use lariat_db::Tables;
use lariat_workflows::design::{Finding, Report};
use serde::{Deserialize, Serialize};

use crate::{Snapshot, SourceError};

/// What asked for a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Startup,
    Poll,
    Webhook,
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Poll => "poll",
            Trigger::Webhook => "webhook",
            Trigger::Manual => "manual",
        }
    }
}

/// Where a revision stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevisionStatus {
    /// The design in force.
    Active,
    /// Valid, but a later revision replaced it (a site may still be pinned to it).
    Accepted,
    /// Has errors; never became active.
    Rejected,
}

/// One fetched and validated commit of the design repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    pub id: i64,
    pub commit: String,
    pub branch: String,
    pub summary: String,
    pub trigger: String,
    /// Unix milliseconds.
    pub fetched_at: i64,
    pub status: RevisionStatus,
    pub accepted: bool,
    pub errors: usize,
    pub warnings: usize,
}

/// A site held to one revision or tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    pub site: String,
    /// As the operator wrote it: a commit id or a tag.
    pub rev: String,
    /// The commit it named when pinned.
    pub commit: String,
    pub pinned_at: i64,
    pub pinned_by: String,
}

/// The migrations of these tables (`source/migrations/sqlite`).
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The same tables on PostgreSQL (`source/migrations/postgres`).
pub static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

type RevRow = (i64, String, String, String, String, i64, i64, i64, i64, i64);
/// A [`RevRow`] followed by the findings column.
type RevFindingsRow = (
    i64,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    String,
);

/// The columns [`revision`] decodes, in its order (a macro so queries stay `&'static str`).
macro_rules! rev_columns {
    () => {
        "id, commit_id, branch, summary, trigger, fetched_at, accepted, errors, warnings, active"
    };
}

fn revision(
    (id, commit, branch, summary, trigger, fetched_at, accepted, errors, warnings, active): RevRow,
) -> Revision {
    let status = match (active != 0, accepted != 0) {
        (true, _) => RevisionStatus::Active,
        (false, true) => RevisionStatus::Accepted,
        (false, false) => RevisionStatus::Rejected,
    };
    Revision {
        id,
        commit,
        branch,
        summary,
        trigger,
        fetched_at,
        status,
        accepted: accepted != 0,
        errors: errors.max(0) as usize,
        warnings: warnings.max(0) as usize,
    }
}

pub(crate) async fn record(
    db: &Tables,
    snap: &Snapshot,
    branch: &str,
    trigger: Trigger,
    report: &Report,
) -> Result<Revision, SourceError> {
    let errors = report.errors().count();
    let warnings = report.warnings().count();
    let findings = serde_json::to_string(&report.findings)
        .map_err(|e| SourceError::Corrupt(format!("findings do not serialise: {e}")))?;
    let now = lariat_db::now_ms();
    let id: i64 = lariat_db::on_writer!(&db, |c| sqlx::query_scalar(
        "INSERT INTO design_revisions
           (commit_id, branch, trigger, fetched_at, accepted, errors, warnings, findings, summary)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    )
    .bind(&snap.commit)
    .bind(branch)
    .bind(trigger.as_str())
    .bind(now)
    .bind(i64::from(errors == 0))
    .bind(errors as i64)
    .bind(warnings as i64)
    .bind(findings)
    .bind(&snap.summary)
    .fetch_one(&mut *c)
    .await?);
    Ok(Revision {
        id,
        commit: snap.commit.clone(),
        branch: branch.to_string(),
        summary: snap.summary.clone(),
        trigger: trigger.as_str().to_string(),
        fetched_at: now,
        status: if errors == 0 {
            RevisionStatus::Accepted
        } else {
            RevisionStatus::Rejected
        },
        accepted: errors == 0,
        errors,
        warnings,
    })
}

pub(crate) async fn make_active(db: &Tables, id: i64) -> Result<(), SourceError> {
    lariat_db::on_writer!(&db, |c| {
        sqlx::query("UPDATE design_revisions SET active = CASE WHEN id = $1 THEN 1 ELSE 0 END WHERE active = 1 OR id = $1")
        .bind(id)
        .execute(&mut *c).await?;
    });
    Ok(())
}

pub(crate) async fn active(db: &Tables) -> Result<Option<Revision>, SourceError> {
    let sql = concat!(
        "SELECT ",
        rev_columns!(),
        " FROM design_revisions WHERE active = 1"
    );
    let row: Option<RevRow> =
        lariat_db::on_reader!(&db, |ex| sqlx::query_as(sql).fetch_optional(ex).await?);
    Ok(row.map(revision))
}

pub(crate) async fn by_commit(db: &Tables, commit: &str) -> Result<Option<Revision>, SourceError> {
    let sql = concat!(
        "SELECT ",
        rev_columns!(),
        " FROM design_revisions WHERE commit_id = $1"
    );
    let row: Option<RevRow> = lariat_db::on_reader!(&db, |ex| sqlx::query_as(sql)
        .bind(commit)
        .fetch_optional(ex)
        .await?);
    Ok(row.map(revision))
}

pub(crate) async fn list(db: &Tables, limit: u32) -> Result<Vec<Revision>, SourceError> {
    let sql = concat!(
        "SELECT ",
        rev_columns!(),
        " FROM design_revisions ORDER BY id DESC LIMIT $1"
    );
    let rows: Vec<RevRow> = lariat_db::on_reader!(&db, |ex| sqlx::query_as(sql)
        .bind(i64::from(limit))
        .fetch_all(ex)
        .await?);
    Ok(rows.into_iter().map(revision).collect())
}

/// By full id, or by an unambiguous prefix of at least 7 hex digits.
pub(crate) async fn with_findings(
    db: &Tables,
    rev: &str,
) -> Result<Option<(Revision, Vec<Finding>)>, SourceError> {
    let rev = rev.to_ascii_lowercase();
    if rev.len() < 7 || rev.len() > 64 || !rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let sql = concat!(
        "SELECT ",
        rev_columns!(),
        ", findings FROM design_revisions WHERE commit_id >= $1 AND commit_id < $1 || 'g' ORDER BY id LIMIT 2"
    );
    let rows: Vec<RevFindingsRow> = lariat_db::on_reader!(&db, |ex| sqlx::query_as(sql)
        .bind(&rev)
        .fetch_all(ex)
        .await?);
    if rows.len() != 1 {
        return Ok(None);
    }
    let Some((id, c, b, s, t, f, a, e, w, act, findings)) = rows.into_iter().next() else {
        return Ok(None);
    };
    let findings: Vec<Finding> = serde_json::from_str(&findings)
        .map_err(|e| SourceError::Corrupt(format!("findings of revision {c}: {e}")))?;
    Ok(Some((
        revision((id, c, b, s, t, f, a, e, w, act)),
        findings,
    )))
}

pub(crate) async fn pin(
    db: &Tables,
    site: &str,
    rev: &str,
    commit: &str,
    actor: &str,
) -> Result<Pin, SourceError> {
    let now = lariat_db::now_ms();
    lariat_db::on_writer!(&db, |c| {
        sqlx::query(
        "INSERT INTO site_pins (site, rev, commit_id, pinned_at, pinned_by) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (site) DO UPDATE SET rev = $2, commit_id = $3, pinned_at = $4, pinned_by = $5",
    )
    .bind(site)
    .bind(rev)
    .bind(commit)
    .bind(now)
    .bind(actor)
    .execute(&mut *c).await?;
    });
    Ok(Pin {
        site: site.to_string(),
        rev: rev.to_string(),
        commit: commit.to_string(),
        pinned_at: now,
        pinned_by: actor.to_string(),
    })
}

pub(crate) async fn unpin(db: &Tables, site: &str) -> Result<bool, SourceError> {
    let done = lariat_db::on_writer!(&db, |c| sqlx::query(
        "DELETE FROM site_pins WHERE site = $1"
    )
    .bind(site)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(done > 0)
}

type PinRow = (String, String, String, i64, String);

fn pin_row((site, rev, commit, pinned_at, pinned_by): PinRow) -> Pin {
    Pin {
        site,
        rev,
        commit,
        pinned_at,
        pinned_by,
    }
}

pub(crate) async fn pins(db: &Tables) -> Result<Vec<Pin>, SourceError> {
    let rows: Vec<PinRow> = lariat_db::on_reader!(&db, |ex| sqlx::query_as(
        "SELECT site, rev, commit_id, pinned_at, pinned_by FROM site_pins ORDER BY site",
    )
    .fetch_all(ex)
    .await?);
    Ok(rows.into_iter().map(pin_row).collect())
}

pub(crate) async fn pin_of(db: &Tables, site: &str) -> Result<Option<Pin>, SourceError> {
    let row: Option<PinRow> = lariat_db::on_reader!(&db, |ex| sqlx::query_as(
        "SELECT site, rev, commit_id, pinned_at, pinned_by FROM site_pins WHERE site = $1",
    )
    .bind(site)
    .fetch_optional(ex)
    .await?);
    Ok(row.map(pin_row))
}
