//! A run's DAG drawn as SVG: each step in the column of its longest chain of needs, so
//! every arrow points right, coloured by the step's status.

use std::collections::HashMap;
use std::fmt::Write;

/// One step to draw.
pub(crate) struct Node<'a> {
    pub name: &'a str,
    pub needs: &'a [String],
    pub status: &'a str,
    /// Shown under the name (item counts of a fan-out step).
    pub note: String,
}

const W: i32 = 210;
const H: i32 = 44;
const GAP_X: i32 = 50;
const GAP_Y: i32 = 16;

/// The SVG of `nodes`, in definition order (needs name earlier or later steps alike).
pub(crate) fn svg(nodes: &[Node]) -> String {
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name, i)).collect();
    // Depth by relaxation: a definition is acyclic (the engine refuses cycles), and the
    // bound on passes keeps a malformed one from looping.
    let mut depth = vec![0usize; nodes.len()];
    for _ in 0..nodes.len() {
        let mut changed = false;
        for (i, n) in nodes.iter().enumerate() {
            for need in n.needs {
                if let Some(&j) = index.get(need.as_str())
                    && depth[i] < depth[j] + 1
                {
                    depth[i] = depth[j] + 1;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut rows: HashMap<usize, i32> = HashMap::new();
    let mut at = Vec::with_capacity(nodes.len());
    for d in &depth {
        let row = rows.entry(*d).or_insert(0);
        at.push((*d as i32 * (W + GAP_X) + 10, *row * (H + GAP_Y) + 10));
        *row += 1;
    }
    let width = depth.iter().max().map_or(0, |d| *d as i32 + 1) * (W + GAP_X) + 20;
    let height = rows.values().max().copied().unwrap_or(1) * (H + GAP_Y) + 20;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="the run's steps and what each needs">"#
    );
    out.push_str(r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>"#);
    for (i, n) in nodes.iter().enumerate() {
        for need in n.needs {
            if let Some(&j) = index.get(need.as_str()) {
                let (x1, y1) = (at[j].0 + W, at[j].1 + H / 2);
                let (x2, y2) = (at[i].0, at[i].1 + H / 2);
                let mid = (x1 + x2) / 2;
                let _ = write!(
                    out,
                    r#"<path class="edge" d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}" marker-end="url(#arrow)"/>"#
                );
            }
        }
    }
    for (n, (x, y)) in nodes.iter().zip(&at) {
        let name = escape(n.name);
        let status = escape(n.status);
        let _ = write!(
            out,
            r##"<a href="#step-{name}"><g class="node s-{status}" data-step="{name}"><rect x="{x}" y="{y}" width="{W}" height="{H}" rx="6"/><text x="{tx}" y="{ty}">{label}</text><text class="note" x="{tx}" y="{ny}">{status}{sep}{note}</text></g></a>"##,
            tx = x + 8,
            ty = y + 18,
            ny = y + 35,
            label = escape(&ellipsis(n.name, 28)),
            sep = if n.note.is_empty() { "" } else { " · " },
            note = escape(&ellipsis(&n.note, 26)),
        );
    }
    out.push_str("</svg>");
    out
}

fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut cut: String = s.chars().take(max - 1).collect();
        cut.push('…');
        cut
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_sit_in_the_column_of_their_longest_chain_and_names_are_escaped() {
        let a: Vec<String> = vec![];
        let b = vec!["a".to_string()];
        let c = vec!["a".to_string(), "<b>".to_string()];
        let nodes = [
            Node {
                name: "a",
                needs: &a,
                status: "succeeded",
                note: String::new(),
            },
            Node {
                name: "<b>",
                needs: &b,
                status: "running",
                note: "3 running".into(),
            },
            Node {
                name: "c",
                needs: &c,
                status: "pending",
                note: String::new(),
            },
        ];
        let svg = svg(&nodes);
        assert!(svg.contains("&lt;b&gt;"), "{svg}");
        assert!(!svg.contains("<b>"), "{svg}");
        // a in column 0, <b> in column 1, c in column 2 (x = 10, 270, 530).
        assert!(svg.contains(r#"<rect x="10" y="10""#), "{svg}");
        assert!(svg.contains(r#"<rect x="270" y="10""#), "{svg}");
        assert!(svg.contains(r#"<rect x="530" y="10""#), "{svg}");
        assert_eq!(svg.matches("class=\"edge\"").count(), 3);
    }
}
