//! `lariat audit`: the server's audit trail, newest first (admin).

use clap::Args;
use lariat_client::Client;
use lariat_client::types::AuditQuery;

use super::conn::Conn;
use super::output::{now_ms, print_json, table, time};

/// Filters of `lariat audit`.
#[derive(Args)]
pub struct AuditArgs {
    /// Only what this credential did (a token's name, `local:<user>`, `webhook`).
    #[arg(long)]
    who: Option<String>,
    /// Only this action (`run.cancel`) or a noun's every action (`token`, `window`).
    #[arg(long)]
    action: Option<String>,
    /// Only what was done to this target (a run id, a token, window or site name).
    #[arg(long)]
    target: Option<String>,
    /// Only the last this long: 24h, 7d.
    #[arg(long)]
    since: Option<humantime::Duration>,
    /// At most this many entries (1 to 1000).
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

pub async fn run(c: Client, conn: &Conn, a: AuditArgs) -> anyhow::Result<i32> {
    let q = AuditQuery {
        who: a.who,
        action: a.action,
        target: a.target,
        since: a
            .since
            .map(|d| now_ms().saturating_sub(d.as_millis() as i64)),
        before: None,
        limit: Some(a.limit),
    };
    let page = c.audit(&q).await?;
    if conn.json {
        print_json(&page);
        return Ok(0);
    }
    if page.entries.is_empty() {
        println!("no audit entries match");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = page
        .entries
        .iter()
        .map(|e| {
            let mut detail = match &e.detail {
                serde_json::Value::Object(m) if m.is_empty() => String::new(),
                serde_json::Value::Null => String::new(),
                d => d.to_string(),
            };
            if detail.chars().count() > 80 {
                detail = detail.chars().take(77).collect::<String>() + "...";
            }
            vec![
                time(Some(e.at)),
                e.who.clone(),
                e.from.clone().unwrap_or_else(|| "-".into()),
                e.action.clone(),
                e.target.clone(),
                detail,
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &["AT (UTC)", "WHO", "FROM", "ACTION", "TARGET", "DETAIL"],
            &rows
        )
    );
    if page.next_before.is_some() {
        eprintln!("(older entries left out: raise --limit or narrow the filters)");
    }
    Ok(0)
}
