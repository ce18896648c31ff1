//! How client commands read their input files and print: JSON, tables, times.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

/// A file's text, or standard input's for `-`.
pub fn read_source(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read standard input")?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

/// A JSON or YAML document from a file (or - for standard input).
pub fn read_doc(path: &Path) -> anyhow::Result<Value> {
    let text = read_source(path)?;
    if let Ok(v) = serde_json::from_str(&text) {
        return Ok(v);
    }
    serde_norway::from_str(&text)
        .with_context(|| format!("{} is neither JSON nor YAML", path.display()))
}

/// Pretty JSON on standard output.
pub fn print_json<T: Serialize + ?Sized>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("warning: cannot print JSON: {e}"),
    }
}

pub use lariat_db::now_ms;

/// A timestamp in ms as RFC 3339 (UTC, seconds).
pub fn time(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms > 0 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms as u64))
                .to_string()
        }
        _ => "-".into(),
    }
}

/// The time of day (UTC) of a timestamp in ms.
pub fn clock(ms: Option<i64>) -> String {
    let t = time(ms);
    if t.len() >= 19 {
        t[11..19].to_string()
    } else {
        t
    }
}

/// A duration in ms as people read it: `1.5s`, `2m05s`, `1h02m`.
pub fn elapsed(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    LONGER\nxyz  1\nq    22");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(elapsed(1500), "1.5s");
        assert_eq!(elapsed(125_000), "2m05s");
        assert_eq!(elapsed(-5), "0.0s");
        assert_eq!(lariat_client::encode("a b/c"), "a%20b%2Fc");
    }
}
