//! The site design: YAML documents describing sites, networks, hardware, profiles, hosts,
//! boot profiles, maintenance windows and workflow templates; their inheritance and
//! their validation.
//!
//! A design is a set of files, each holding one or more documents `{kind, name, spec}`
//! separated by `---`. [`load_dir`] and [`load_files`] never fail: a file that cannot be
//! read, a YAML error, an unknown kind or field, a broken reference all become
//! [`Finding`]s in the [`Report`], and everything else is still loaded and checked, so one
//! run lists every problem.
//!
//! Hosts inherit from a host profile, which may inherit from a parent profile, to any
//! depth; see [`merge`] for the rules (`"!"` unsets, `"!item"` / `"!key"` / `"!name"`
//! remove). [`Design::resolved_host`] returns the effective host.
//!
//! # Rules
//!
//! | rule id | level | what it finds |
//! |---|---|---|
//! | `read-error` | error | a file or directory that cannot be read, or is not UTF-8 |
//! | `yaml-syntax` | error | a YAML syntax error |
//! | `invalid-document` | error | a document that is not a mapping, or lacks `kind` or `name` |
//! | `unknown-kind` | error | a `kind` that is not one of the nine kinds |
//! | `unknown-field` | error | a field the kind does not have (named with its path) |
//! | `invalid-field` | error | a field of the wrong type or format, a missing required field, a value out of range |
//! | `invalid-name` | error | a document name other than 1-64 of `[A-Za-z0-9._-]` |
//! | `invalid-hostname` | error | a Host name that is not an RFC 1123 host name |
//! | `duplicate-name` | error | two documents of one kind with one name; two items of one named list with one name |
//! | `unresolved-reference` | error | a reference to a document (site, profile, parent, hardware or boot profile, network, link, volume group, device alias, window, pxe interface) that does not exist |
//! | `inheritance-cycle` | error | profiles whose parents form a cycle (reported once per cycle) |
//! | `missing-field` | error | a resolved host without a site; a host to provision without hardware profile, boot profile, or a MAC on its PXE interface |
//! | `duplicate-mac` | error | one MAC on two interfaces |
//! | `duplicate-ip` | error | one address on two interfaces or BMCs, or a host using a gateway's address |
//! | `cidr-host-bits` | error | a network CIDR with host bits set (`10.77.1.5/24`) |
//! | `ip-outside-cidr` | error | a gateway, range bound or interface address outside its network |
//! | `ip-outside-range` | error | an interface address outside every range of its kind (`static` or `dhcp`), when the network declares ranges |
//! | `range-invalid` | error | a range whose start is after its end, or two overlapping ranges |
//! | `mtu-exceeds-link` | error | a network (MTU 1500 when unset) allowed on a link with a smaller MTU |
//! | `trunk-required` | error | a link carrying more than one network without `trunk: true` (802.1q) |
//! | `network-not-on-link` | error | an interface whose network is not among its link's networks |
//! | `bond-options` | error | a bond option unknown, not valid for the bond mode, or with an invalid value |
//! | `disk-partitions-and-vg` | error | a disk with both partitions and a volume group |
//! | `duplicate-mountpoint` | error | one mountpoint used twice in a host's storage |
//! | `no-root-filesystem` | error | a host whose storage has disks but nothing mounted at `/` |
//! | `size-does-not-fit` | error | sizes exceeding their disk or volume group, shares over 100%, more than one `>` size on a device |
//! | `bmc-incomplete` | error | an IPMI or Redfish BMC without an address or a credential reference |
//! | `asset-without-checksum` | error | a boot profile kernel or initrd not listed among its assets (with sha256) |
//! | `template-syntax` | error | an unattended template that does not compile |
//! | `template-render` | error | an unattended template that fails for a host using it (strict: an undefined variable fails) |
//! | `invalid-cron` | error | a maintenance window cron expression croner refuses, one without exactly five fields, or one that never fires (the 31st of February) |
//! | `invalid-timezone` | error | a maintenance window timezone that is not an IANA zone name |
//! | `window-too-short` | error | a template step whose window is open for less than the step needs left to start (its cutoff, else its timeout): it would never start |
//! | `unknown-label` | error | a template step whose `for_each.max_per` counts hosts by a label no host or host profile sets (keys are `site`, `rack` or a label) |
//! | `invalid-parameter` | error | a workflow template parameter declaration that is wrong (default of the wrong type, sensitive or required with a default, bad name) |
//! | `missing-script` | error | a template step `exec`s a script the design repository does not have (scripts are the files of its `scripts/` folders) |
//! | `unused-profile` | warning | a host profile no host or profile uses |
//!
//! Each rule has a broken design in `examples/broken/<rule-id>/` that produces exactly
//! that one finding.

mod facts;
mod filter;
mod generate;
mod load;
pub mod merge;
mod render;
mod report;
mod resolve;
pub mod schema;
mod site_part;
mod validate;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

pub use facts::check_facts;
pub use filter::{FilterMode, NodeFilter};
pub use generate::generate;
pub use render::{render_context, render_unattended};
pub use report::{Finding, Level, Report};
pub use resolve::{ResolvedHost, ResolvedInterface};
pub use schema::*;
pub use site_part::site_part;

/// Where a document was read from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Source {
    /// Relative path inside the design, when it came from a file.
    pub file: Option<String>,
    /// 1-based line of the document's first line.
    pub line: usize,
}

/// One document of a design.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Doc<S> {
    pub name: String,
    pub spec: S,
    #[serde(skip)]
    pub source: Source,
}

/// A site document.
pub type Site = Doc<SiteSpec>;
/// A network document.
pub type Network = Doc<NetworkSpec>;
/// A network link document.
pub type NetworkLink = Doc<NetworkLinkSpec>;
/// A hardware profile document.
pub type HardwareProfile = Doc<HardwareProfileSpec>;
/// A host profile document (one inheritance layer, as written).
pub type HostProfile = Doc<HostProfileSpec>;
/// A host document (as written; see [`Design::resolved_host`] for the effective host).
pub type Host = Doc<HostSpec>;
/// A boot profile document.
pub type BootProfile = Doc<BootProfileSpec>;
/// A maintenance window document.
pub type MaintenanceWindow = Doc<MaintenanceWindowSpec>;
/// A workflow template document.
pub type WorkflowTemplate = Doc<WorkflowTemplateSpec>;

/// Why a host cannot be resolved or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DesignError {
    #[error("no host named '{0}' in the design")]
    UnknownHost(String),
    #[error("{from} refers to host profile '{missing}', which does not exist")]
    UnknownProfile { from: String, missing: String },
    #[error("host profiles inherit in a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("{0} has schema errors (see the design's findings)")]
    Broken(String),
    #[error("host '{host}' resolves to an invalid host: {message}")]
    Invalid { host: String, message: String },
    #[error("host '{0}' has no boot profile")]
    NoBootProfile(String),
    #[error("boot profile '{0}' does not exist")]
    UnknownBootProfile(String),
    #[error("boot profile '{0}' has no unattended template")]
    NoTemplate(String),
    #[error("unattended template of boot profile '{profile}' for host '{host}': {message}")]
    Render {
        profile: String,
        host: String,
        message: String,
    },
}

/// A loaded design: every document that parsed, by kind and name.
#[derive(Debug, Clone, Default)]
pub struct Design {
    sites: BTreeMap<String, Site>,
    networks: BTreeMap<String, Network>,
    links: BTreeMap<String, NetworkLink>,
    hardware: BTreeMap<String, HardwareProfile>,
    profiles: BTreeMap<String, HostProfile>,
    hosts: BTreeMap<String, Host>,
    boot_profiles: BTreeMap<String, BootProfile>,
    windows: BTreeMap<String, MaintenanceWindow>,
    templates: BTreeMap<String, WorkflowTemplate>,
    /// Files under `scripts/`, by path in the repository: what `exec` steps run.
    scripts: BTreeMap<String, Arc<str>>,
    /// Documents that were named but failed their schema: references to them resolve,
    /// so that one mistake is reported once.
    broken: HashSet<(Kind, String)>,
    /// Host and profile specs as written, `"!"` markers kept, for the merge.
    raw_hosts: HashMap<String, Value>,
    raw_profiles: HashMap<String, Value>,
    /// Profiles named by a host's `profile` or a profile's `parent`, as written.
    referenced_profiles: HashSet<String>,
    /// Every host resolved once at load.
    resolved: HashMap<String, Result<Arc<ResolvedHost>, DesignError>>,
}

/// The result of loading: the design and everything found wrong with it.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub design: Design,
    pub report: Report,
}

/// Loads every `*.yaml` / `*.yml` file under `dir` (recursively, in path order, hidden
/// entries skipped), resolves and validates. Never fails; see the report.
pub fn load_dir(dir: &Path) -> Loaded {
    let mut findings = Vec::new();
    let files = load::read_dir(dir, &mut findings);
    let mut loaded = load_files(&files);
    findings.append(&mut loaded.report.findings);
    loaded.report.findings = findings;
    sort_findings(&mut loaded.report.findings);
    loaded
}

/// The folder name scripts of `exec` steps live in, anywhere in a design repository.
pub const SCRIPTS_DIR: &str = "scripts";

/// Whether `path` (from the repository's root) is a script `exec` steps may run: a file
/// in a `scripts` folder (`scripts/raid.sh`, `design/scripts/bios/set.sh`), hidden
/// entries excepted.
pub fn is_script(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let Some((_file, folders)) = parts.split_last() else {
        return false;
    };
    folders.contains(&SCRIPTS_DIR) && parts.iter().all(|p| !p.is_empty() && !p.starts_with('.'))
}

/// Whether `path` is part of a design: a YAML file, or a script.
pub fn is_design_file(path: &str) -> bool {
    is_script(path) || path.ends_with(".yaml") || path.ends_with(".yml")
}

/// Loads in-memory files given as (relative path, contents); see [`load_dir`].
pub fn load_files(files: &[(String, String)]) -> Loaded {
    load_files_timed(files).loaded
}

/// A load with the time each phase took (for benchmarks).
#[derive(Debug, Clone, Default)]
pub struct TimedLoad {
    pub loaded: Loaded,
    /// Splitting, YAML parsing and decoding every spec.
    pub parse: Duration,
    /// Inheritance: every host merged through its profiles.
    pub resolve: Duration,
    /// Every rule, template rendering included.
    pub validate: Duration,
}

/// [`load_files`], timing its phases.
pub fn load_files_timed(files: &[(String, String)]) -> TimedLoad {
    let t0 = Instant::now();
    let mut design = Design::default();
    let mut findings = Vec::new();
    // Files are read in path order so findings and duplicate resolution are
    // deterministic; copy only when the caller's order differs.
    let owned: Vec<(String, String)>;
    let sorted: &[(String, String)] = if files.windows(2).all(|w| w[0].0 <= w[1].0) {
        files
    } else {
        let mut v = files.to_vec();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        owned = v;
        &owned
    };
    // Scripts are carried as they are; every other file is YAML documents.
    let (scripts, documents): (Vec<_>, Vec<_>) =
        sorted.iter().cloned().partition(|(p, _)| is_script(p));
    design.scripts = scripts
        .into_iter()
        .map(|(p, t)| (p, Arc::from(t)))
        .collect();
    load::parse_files(&documents, &mut design, &mut findings);
    let t1 = Instant::now();
    design.resolve_all();
    let t2 = Instant::now();
    validate::validate(&design, &mut findings);
    place_findings(sorted, &design, &mut findings);
    sort_findings(&mut findings);
    let t3 = Instant::now();
    TimedLoad {
        loaded: Loaded {
            design,
            report: Report { findings },
        },
        parse: t1 - t0,
        resolve: t2 - t1,
        validate: t3 - t2,
    }
}

/// Gives findings raised after parsing (which know the document only) a file and the
/// best line for their field path.
fn place_findings(files: &[(String, String)], design: &Design, findings: &mut [Finding]) {
    let texts: HashMap<&str, &str> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    for f in findings.iter_mut().filter(|f| f.file.is_none()) {
        let Some(kind) = Kind::parse(&f.kind) else {
            continue;
        };
        let Some(src) = design.source(kind, &f.name) else {
            continue;
        };
        f.file = src.file.clone();
        f.line = Some(src.line);
        if let Some(text) = src.file.as_deref().and_then(|p| texts.get(p)) {
            let docs = load::split_documents(text);
            if let Some(doc) = docs.iter().find(|d| d.first_line == src.line)
                && let Some(line) = load::locate(doc.text, doc.first_line, &f.path)
            {
                f.line = Some(line);
            }
        }
    }
}

fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        (&a.file, a.line, &a.rule, &a.kind, &a.name, &a.path)
            .cmp(&(&b.file, b.line, &b.rule, &b.kind, &b.name, &b.path))
    });
}

impl Design {
    pub(crate) fn contains(&self, kind: Kind, name: &str) -> bool {
        self.source(kind, name).is_some() || self.broken.contains(&(kind, name.to_string()))
    }

    /// Whether a reference to `kind`/`name` resolves (to a good or a broken document).
    pub(crate) fn resolves(&self, kind: Kind, name: &str) -> bool {
        self.contains(kind, name)
    }

    pub(crate) fn is_broken(&self, kind: Kind, name: &str) -> bool {
        self.broken.contains(&(kind, name.to_string()))
    }

    /// Where a document came from.
    pub fn source(&self, kind: Kind, name: &str) -> Option<&Source> {
        match kind {
            Kind::Site => self.sites.get(name).map(|d| &d.source),
            Kind::Network => self.networks.get(name).map(|d| &d.source),
            Kind::NetworkLink => self.links.get(name).map(|d| &d.source),
            Kind::HardwareProfile => self.hardware.get(name).map(|d| &d.source),
            Kind::HostProfile => self.profiles.get(name).map(|d| &d.source),
            Kind::Host => self.hosts.get(name).map(|d| &d.source),
            Kind::BootProfile => self.boot_profiles.get(name).map(|d| &d.source),
            Kind::MaintenanceWindow => self.windows.get(name).map(|d| &d.source),
            Kind::WorkflowTemplate => self.templates.get(name).map(|d| &d.source),
        }
    }

    /// The site named `name`.
    pub fn site(&self, name: &str) -> Option<&Site> {
        self.sites.get(name)
    }
    /// Every site, by name.
    pub fn sites(&self) -> impl Iterator<Item = &Site> {
        self.sites.values()
    }
    /// The network named `name`.
    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.get(name)
    }
    /// Every network, by name.
    pub fn networks(&self) -> impl Iterator<Item = &Network> {
        self.networks.values()
    }
    /// The network link named `name`.
    pub fn link(&self, name: &str) -> Option<&NetworkLink> {
        self.links.get(name)
    }
    /// Every network link, by name.
    pub fn links(&self) -> impl Iterator<Item = &NetworkLink> {
        self.links.values()
    }
    /// The hardware profile named `name`.
    pub fn hardware_profile(&self, name: &str) -> Option<&HardwareProfile> {
        self.hardware.get(name)
    }
    /// Every hardware profile, by name.
    pub fn hardware_profiles(&self) -> impl Iterator<Item = &HardwareProfile> {
        self.hardware.values()
    }
    /// The host profile named `name`, as written (one layer).
    pub fn host_profile(&self, name: &str) -> Option<&HostProfile> {
        self.profiles.get(name)
    }
    /// Every host profile, by name.
    pub fn host_profiles(&self) -> impl Iterator<Item = &HostProfile> {
        self.profiles.values()
    }
    /// The host named `name`, as written.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.get(name)
    }
    /// Every host, by name.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.values()
    }
    /// The boot profile named `name`.
    pub fn boot_profile(&self, name: &str) -> Option<&BootProfile> {
        self.boot_profiles.get(name)
    }
    /// Every boot profile, by name.
    pub fn boot_profiles(&self) -> impl Iterator<Item = &BootProfile> {
        self.boot_profiles.values()
    }
    /// The maintenance window named `name`.
    pub fn window(&self, name: &str) -> Option<&MaintenanceWindow> {
        self.windows.get(name)
    }
    /// Every maintenance window, by name.
    pub fn windows(&self) -> impl Iterator<Item = &MaintenanceWindow> {
        self.windows.values()
    }
    /// The workflow template named `name`.
    pub fn template(&self, name: &str) -> Option<&WorkflowTemplate> {
        self.templates.get(name)
    }
    /// Every workflow template, by name.
    pub fn script(&self, path: &str) -> Option<&Arc<str>> {
        self.scripts.get(path)
    }

    /// The scripts' paths, sorted.
    pub fn script_paths(&self) -> impl Iterator<Item = &str> {
        self.scripts.keys().map(String::as_str)
    }

    /// Every workflow template.
    pub fn templates(&self) -> impl Iterator<Item = &WorkflowTemplate> {
        self.templates.values()
    }

    /// The effective host after inheritance (host, its profile, that profile's parent...).
    pub fn resolved_host(&self, name: &str) -> Result<ResolvedHost, DesignError> {
        match self.resolved.get(name) {
            Some(Ok(h)) => Ok(ResolvedHost::clone(h)),
            Some(Err(e)) => Err(e.clone()),
            None if self.is_broken(Kind::Host, name) => {
                Err(DesignError::Broken(format!("host '{name}'")))
            }
            None => Err(DesignError::UnknownHost(name.to_string())),
        }
    }

    pub(crate) fn resolved_ref(&self, name: &str) -> Option<&ResolvedHost> {
        self.resolved
            .get(name)
            .and_then(|r| r.as_ref().ok())
            .map(|a| &**a)
    }

    pub(crate) fn resolved_results(
        &self,
    ) -> impl Iterator<Item = (&String, &Result<Arc<ResolvedHost>, DesignError>)> {
        self.resolved.iter()
    }

    fn resolve_all(&mut self) {
        let resolved = resolve::resolve_all(self);
        self.resolved = resolved;
    }
}
