//! The one character PostgreSQL cannot store: NUL (U+0000), refused in `TEXT` and, as
//! the escape `\u0000`, in `JSONB`. A batch holding one would fail whole and stop the
//! executor, so what operators send is refused with its place named ([`nul_in`]), and
//! what machines report (an action's output or error, an agent's shipped events) has
//! each NUL replaced by U+FFFD before a PostgreSQL commit ([`text`], [`json`]). SQLite
//! would store it, but the same input is refused on both, so a run behaves the same on
//! either database.

use std::borrow::Cow;

use serde_json::Value;

/// The JSON pointer (`/a/0/b`) of the first string or key in `v` holding a NUL; `""` is
/// `v` itself.
pub fn nul_in(v: &Value) -> Option<String> {
    fn walk(v: &Value, at: &mut Vec<String>) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                at.push(i.to_string());
                let found = walk(item, at);
                if !found {
                    at.pop();
                }
                found
            }),
            Value::Object(map) => map.iter().any(|(k, item)| {
                at.push(k.replace('~', "~0").replace('/', "~1"));
                let found = k.contains('\0') || walk(item, at);
                if !found {
                    at.pop();
                }
                found
            }),
            _ => false,
        }
    }
    let mut at = Vec::new();
    walk(v, &mut at).then(|| {
        at.iter()
            .map(|p| format!("/{}", p.escape_default()))
            .collect()
    })
}

/// `s` with each NUL replaced by U+FFFD.
pub fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// JSON text (as serde_json writes it) with each escaped NUL, `\u0000`, replaced by
/// `\ufffd`. A `\u0000` preceded by an odd run of backslashes is text, not an escape
/// (`"\\u0000"` is a backslash and `u0000`), and stays.
pub fn json(text: String) -> String {
    if !text.contains("\\u0000") {
        return text;
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut backslashes = 0usize;
    while i < bytes.len() {
        if bytes[i] == b'\\' && backslashes.is_multiple_of(2) && text[i..].starts_with("\\u0000") {
            out.push_str("\\ufffd");
            i += 6;
            backslashes = 0;
            continue;
        }
        backslashes = if bytes[i] == b'\\' {
            backslashes + 1
        } else {
            0
        };
        let ch = text[i..].chars().next().unwrap_or_default();
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json as j;

    #[test]
    fn a_nul_is_found_where_it_is() {
        assert_eq!(
            nul_in(&j!({"a": [1, {"b": "x\u{0}y"}]})),
            Some("/a/1/b".into())
        );
        assert_eq!(nul_in(&j!({"k\u{0}": 1})), Some("/k\\u{0}".into()));
        assert_eq!(nul_in(&j!("\u{0}")), Some(String::new()));
        assert_eq!(nul_in(&j!({"a/b": ["fine", "\\u0000 is text"]})), None);
    }

    #[test]
    fn escaped_nuls_are_replaced_and_text_that_looks_like_one_is_kept() {
        let v = j!({"nul": "a\u{0}b", "text": "\\u0000", "both": "\\\u{0}"});
        let cleaned: Value = serde_json::from_str(&json(v.to_string())).unwrap();
        assert_eq!(
            cleaned,
            j!({"nul": "a\u{FFFD}b", "text": "\\u0000", "both": "\\\u{FFFD}"})
        );
        assert_eq!(nul_in(&cleaned), None);
        assert_eq!(text("x\u{0}"), "x\u{FFFD}");
        assert!(matches!(text("plain"), Cow::Borrowed(_)));
        let unchanged = j!({"é": "ü"}).to_string();
        assert_eq!(json(unchanged.clone()), unchanged);
    }
}
