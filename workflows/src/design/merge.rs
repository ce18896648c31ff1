//! The inheritance merge of host and profile layers, on the documents' JSON form.
//!
//! Rules (a child layer merged onto the result of its parents):
//! - scalar: the child's non-null value wins; `"!"` unsets the field;
//! - list: union with the parent's (parent order first); `"!item"` removes `item`;
//! - map (and any nested object): child keys win, recursively; `"!key"` as a key removes
//!   the parent's key, and a value `"!"` does too;
//! - named list (`interfaces`, `disks`, `partitions`, `volume_groups`, `logical_volumes`):
//!   items are matched by their `name` and merged field by field; a string `"!name"`
//!   removes that item.
//!
//! A string that must start with `!` is written with `!!` (one is dropped).

use serde_json::{Map, Value};

/// Fields whose items are merged by `name` instead of by value.
pub const NAMED_LISTS: &[&str] = &[
    "interfaces",
    "disks",
    "partitions",
    "volume_groups",
    "logical_volumes",
];

fn is_named(key: &str) -> bool {
    NAMED_LISTS.contains(&key)
}

/// The removal target of a `"!x"` marker, if `s` is one (`"!!x"` is a literal).
fn removal(s: &str) -> Option<&str> {
    match s.strip_prefix('!') {
        Some(rest) if !rest.starts_with('!') => Some(rest),
        _ => None,
    }
}

fn unescape(s: &str) -> String {
    match s.strip_prefix("!!") {
        Some(rest) => format!("!{rest}"),
        None => s.to_string(),
    }
}

/// A layer with its markers taken out, as it reads when there is nothing to inherit.
/// Returns `None` for a value that unsets (`"!"`).
pub fn strip(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) if s == "!" => None,
        Value::String(s) => Some(Value::String(unescape(s))),
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .filter(|i| !matches!(i, Value::String(s) if removal(s).is_some()))
                .filter_map(strip)
                .collect(),
        )),
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                if removal(k).is_some() {
                    continue;
                }
                if let Some(v) = strip(v) {
                    out.insert(unescape(k), v);
                }
            }
            Some(Value::Object(out))
        }
        other => Some(other.clone()),
    }
}

/// Merges `child` onto `parent` (already stripped), under field `key`.
/// Returns `None` when the result is unset.
pub fn merge(parent: Option<Value>, child: &Value, key: &str) -> Option<Value> {
    match (parent, child) {
        (_, Value::String(s)) if s == "!" => None,
        (p, Value::Null) => p,
        (Some(Value::Object(p)), Value::Object(c)) => Some(Value::Object(merge_object(p, c))),
        (Some(Value::Array(p)), Value::Array(c)) if is_named(key) => {
            Some(Value::Array(merge_named(p, c)))
        }
        (Some(Value::Array(p)), Value::Array(c)) => Some(Value::Array(merge_list(p, c))),
        (_, c) => strip(c),
    }
}

fn merge_object(mut p: Map<String, Value>, c: &Map<String, Value>) -> Map<String, Value> {
    for (k, v) in c {
        if let Some(target) = removal(k) {
            p.remove(target);
            continue;
        }
        let k = unescape(k);
        let old = p.remove(&k);
        if let Some(merged) = merge(old, v, &k) {
            p.insert(k, merged);
        }
    }
    p
}

fn merge_list(mut p: Vec<Value>, c: &[Value]) -> Vec<Value> {
    for item in c {
        if let Value::String(s) = item
            && let Some(target) = removal(s)
        {
            p.retain(|x| x.as_str() != Some(target));
            continue;
        }
        if let Some(item) = strip(item)
            && !p.contains(&item)
        {
            p.push(item);
        }
    }
    p
}

fn item_name(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}

fn merge_named(mut p: Vec<Value>, c: &[Value]) -> Vec<Value> {
    for item in c {
        if let Value::String(s) = item
            && let Some(target) = removal(s)
        {
            p.retain(|x| item_name(x) != Some(target));
            continue;
        }
        match item_name(item).and_then(|n| p.iter().position(|x| item_name(x) == Some(n))) {
            Some(i) => {
                let old = std::mem::take(&mut p[i]);
                match merge(Some(old), item, "") {
                    Some(v) => p[i] = v,
                    None => {
                        p.remove(i);
                    }
                }
            }
            None => {
                if let Some(v) = strip(item) {
                    p.push(v);
                }
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn m(parent: Value, child: Value) -> Value {
        merge(strip(&parent), &child, "").unwrap_or(Value::Null)
    }

    #[test]
    fn scalar_child_non_null_wins_and_bang_unsets() {
        assert_eq!(m(json!({"a": 1}), json!({"a": 2})), json!({"a": 2}));
        assert_eq!(m(json!({"a": 1}), json!({"a": null})), json!({"a": 1}));
        assert_eq!(
            m(json!({"a": 1, "b": 2}), json!({"a": "!"})),
            json!({"b": 2})
        );
        assert_eq!(
            m(json!({"a": 1}), json!({"b": "!!x"})),
            json!({"a": 1, "b": "!x"})
        );
    }

    #[test]
    fn lists_union_and_bang_item_removes() {
        assert_eq!(
            m(
                json!({"kernel_params": ["quiet", "console=tty0"]}),
                json!({"kernel_params": ["console=ttyS0", "quiet", "!console=tty0"]})
            ),
            json!({"kernel_params": ["quiet", "console=ttyS0"]})
        );
    }

    #[test]
    fn maps_child_keys_win_and_bang_key_removes() {
        assert_eq!(
            m(
                json!({"labels": {"role": "web", "tier": "1", "zone": "a"}}),
                json!({"labels": {"role": "db", "!tier": null, "zone": "!"}})
            ),
            json!({"labels": {"role": "db"}})
        );
    }

    #[test]
    fn named_lists_merge_by_name_field_by_field() {
        let parent = json!({"interfaces": [
            {"name": "eth0", "network": "prov", "link": "l1"},
            {"name": "eth1", "network": "stor"}
        ]});
        let child = json!({"interfaces": [
            {"name": "eth0", "mac": "52:54:00:00:00:01", "link": "!"},
            "!eth1",
            {"name": "eth2", "network": "oob"}
        ]});
        assert_eq!(
            m(parent, child),
            json!({"interfaces": [
                {"name": "eth0", "network": "prov", "mac": "52:54:00:00:00:01"},
                {"name": "eth2", "network": "oob"}
            ]})
        );
    }

    #[test]
    fn nested_named_lists_merge_partitions_inside_disks() {
        let parent = json!({"storage": {"disks": [{"name": "sda", "partitions": [
            {"name": "root", "size": "20G", "mountpoint": "/"},
            {"name": "swap", "size": "4G"}
        ]}]}});
        let child = json!({"storage": {"disks": [{"name": "sda", "partitions": [
            {"name": "root", "size": ">40G"}, "!swap"
        ]}]}});
        assert_eq!(
            m(parent, child),
            json!({"storage": {"disks": [{"name": "sda", "partitions": [
                {"name": "root", "size": ">40G", "mountpoint": "/"}
            ]}]}})
        );
    }

    #[test]
    fn strip_drops_markers_with_nothing_to_inherit() {
        assert_eq!(
            strip(&json!({"a": "!", "l": ["x", "!y"], "m": {"!k": 1, "j": 2}})),
            Some(json!({"l": ["x"], "m": {"j": 2}}))
        );
    }
}
