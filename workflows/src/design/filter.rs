//! Node filters: which hosts a run targets.
//!
//! A filter has four criteria. Each criterion that is given selects a set of hosts:
//! - `names`: the hosts with those names (names not in the design select nothing; see
//!   [`Design::unknown_names`] to report them);
//! - `labels`: the hosts carrying *every* given `key=value` label;
//! - `racks`: the hosts in any of the racks;
//! - `sites`: the hosts in any of the sites.
//!
//! `mode: union` takes the hosts selected by any given criterion, `mode: intersection`
//! those selected by every given criterion (the default). A criterion left empty is not given: it
//! neither adds hosts to a union nor narrows an intersection.
//!
//! **A filter with no criterion selects no host**, in either mode. A run whose targets
//! were forgotten must not provision a whole datacenter; to mean every host, say
//! `all: true` (which ignores the other criteria).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::Design;

/// How the criteria of a filter combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterMode {
    /// Hosts matched by any given criterion.
    Union,
    /// Hosts matched by every given criterion. The default: adding a criterion narrows a
    /// selection, so a filter written as "rack b, role compute" never grows past either.
    #[default]
    Intersection,
}

/// A selection of hosts by names, labels, racks and sites. See the module docs for the
/// meaning of empty criteria.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub racks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
    #[serde(default)]
    pub mode: FilterMode,
    /// Every host of the design, whatever the other criteria say.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

impl NodeFilter {
    /// Whether the filter has no criterion (and so selects nothing).
    pub fn is_empty(&self) -> bool {
        !self.all
            && self.names.is_empty()
            && self.labels.is_empty()
            && self.racks.is_empty()
            && self.sites.is_empty()
    }
}

impl Design {
    /// Names of the hosts the filter selects, sorted. Hosts are matched on their resolved
    /// site, rack and labels (so a label set by a profile counts); a host that does not
    /// resolve is matched on what it wrote itself.
    pub fn select(&self, filter: &NodeFilter) -> Vec<String> {
        if filter.all {
            return self.hosts.keys().cloned().collect();
        }
        if filter.is_empty() {
            return Vec::new();
        }
        let names: BTreeSet<&str> = filter.names.iter().map(String::as_str).collect();
        let racks: BTreeSet<&str> = filter.racks.iter().map(String::as_str).collect();
        let sites: BTreeSet<&str> = filter.sites.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        for host in self.hosts.values() {
            let resolved = self.resolved_ref(&host.name);
            let site = resolved
                .map(|r| r.site.as_deref())
                .unwrap_or(host.spec.site.as_deref());
            let rack = resolved
                .map(|r| r.rack.as_deref())
                .unwrap_or(host.spec.rack.as_deref());
            let labels = resolved.map(|r| &r.labels).unwrap_or(&host.spec.labels);
            let mut verdicts = Vec::with_capacity(4);
            if !names.is_empty() {
                verdicts.push(names.contains(host.name.as_str()));
            }
            if !filter.labels.is_empty() {
                verdicts.push(
                    filter
                        .labels
                        .iter()
                        .all(|(k, v)| labels.get(k).is_some_and(|x| x == v)),
                );
            }
            if !racks.is_empty() {
                verdicts.push(rack.is_some_and(|r| racks.contains(r)));
            }
            if !sites.is_empty() {
                verdicts.push(site.is_some_and(|s| sites.contains(s)));
            }
            let hit = match filter.mode {
                FilterMode::Union => verdicts.iter().any(|v| *v),
                FilterMode::Intersection => verdicts.iter().all(|v| *v),
            };
            if hit {
                out.push(host.name.clone());
            }
        }
        out
    }

    /// The names a filter lists that are not hosts of the design, sorted.
    pub fn unknown_names(&self, filter: &NodeFilter) -> Vec<String> {
        let mut out: Vec<String> = filter
            .names
            .iter()
            .filter(|n| !self.hosts.contains_key(n.as_str()))
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }
}
