//! Workflow definitions: the YAML/JSON an operator submits, and its validation into a
//! [`Workflow`] the executor can run.
//!
//! Parsing happens in two passes so that every error can name the step it is about: the
//! document is first read as a generic JSON value, then each step is decoded on its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::action::Actions;
use crate::params::{ParamError, Parameters};

/// Largest number of steps one workflow may have; a guard against runaway documents.
pub const MAX_STEPS: usize = 500;
/// Largest retry budget a step may ask for: "nothing retries forever".
pub const MAX_ATTEMPTS: u32 = 100;
const MAX_NAME_LEN: usize = 64;

/// The text format of a submitted definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Yaml => "YAML",
            Format::Json => "JSON",
        })
    }
}

/// A workflow definition as written by an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The run parameters the workflow declares ([`Parameters`]); every run's input is
    /// checked against those of the version it is pinned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    pub steps: Vec<StepDef>,
}

impl WorkflowDef {
    /// The run parameters it declares, read.
    pub fn parameters(&self) -> Result<Parameters, ParamError> {
        Parameters::read(&self.name, self.parameters.as_ref())
    }
}

/// One node of the DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    pub name: String,
    /// Name of a registered action.
    pub action: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub input: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Bound on one attempt, and on how long the step waits for a signal.
    #[serde(default = "default_timeout", with = "duration_text")]
    pub timeout: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation: Option<Compensation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<ForEach>,
    /// The maintenance window the step (each attempt, each item) starts in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowRef>,
}

impl StepDef {
    /// What an attempt needs left of its window to start: the cutoff, else the timeout.
    pub fn window_need(&self) -> Duration {
        self.window
            .as_ref()
            .map_or(self.timeout, |w| w.need(self.timeout))
    }
}

/// What a step that names no timeout gets.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(3600);

/// A step's window: `window: NAME`, or `window: {name: NAME, cutoff: 45m}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRef {
    pub name: String,
    /// Time that must be left before the window closes for an attempt to start; the
    /// step's timeout when absent, so that an attempt that cannot finish does not start.
    pub cutoff: Option<Duration>,
}

impl WindowRef {
    /// Time an attempt of a step with `timeout` needs left in the window to start.
    pub fn need(&self, timeout: Duration) -> Duration {
        self.cutoff.unwrap_or(timeout)
    }
}

impl Serialize for WindowRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // A bare name stays a bare name, so definitions written before cutoffs keep
        // their text (and their version).
        match self.cutoff {
            None => s.serialize_str(&self.name),
            Some(c) => {
                #[derive(Serialize)]
                struct Full<'a> {
                    name: &'a str,
                    #[serde(with = "duration_text")]
                    cutoff: Duration,
                }
                Full {
                    name: &self.name,
                    cutoff: c,
                }
                .serialize(s)
            }
        }
    }
}

impl<'de> Deserialize<'de> for WindowRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            name: String,
            #[serde(default, with = "duration_text::optional")]
            cutoff: Option<Duration>,
        }
        match Value::deserialize(d)? {
            Value::String(name) => Ok(WindowRef { name, cutoff: None }),
            v @ Value::Object(_) => {
                let f: Full = serde_json::from_value(v).map_err(|e| {
                    serde::de::Error::custom(format!(
                        "window: {e} (write {{name: fw, cutoff: 45m}})"
                    ))
                })?;
                Ok(WindowRef {
                    name: f.name,
                    cutoff: f.cutoff,
                })
            }
            other => Err(serde::de::Error::custom(format!(
                "window must be a name, or {{name: NAME, cutoff: DURATION}}, got {other}"
            ))),
        }
    }
}

fn default_timeout() -> Duration {
    DEFAULT_STEP_TIMEOUT
}

/// How a failed attempt is retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in one series, the first included.
    pub max_attempts: u32,
    #[serde(with = "duration_text")]
    pub initial_backoff: Duration,
    pub multiplier: f64,
    #[serde(with = "duration_text")]
    pub max_backoff: Duration,
    /// Fraction of each backoff that is randomised, 0 to 1.
    pub jitter: f64,
    /// Error kinds that retry; empty means every retryable error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(60),
            jitter: 0.1,
            retry_on: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `n + 1` of a series, after `n` failed attempts (n >= 1).
    pub fn backoff(&self, failed: u32, unit_random: f64) -> Duration {
        let exp = self
            .multiplier
            .powi(failed.saturating_sub(1).min(64) as i32);
        let base = (self.initial_backoff.as_secs_f64() * exp).min(self.max_backoff.as_secs_f64());
        // Jitter spreads retries of many hosts that failed together (a rack losing power).
        let spread = base * self.jitter * (2.0 * unit_random - 1.0);
        Duration::from_secs_f64((base + spread).max(0.0))
    }

    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS {
            out.push(format!(
                "retry.max_attempts must be between 1 and {MAX_ATTEMPTS}, got {}",
                self.max_attempts
            ));
        }
        if !self.multiplier.is_finite() || !(1.0..=100.0).contains(&self.multiplier) {
            out.push(format!(
                "retry.multiplier must be between 1 and 100, got {}",
                self.multiplier
            ));
        }
        if !self.jitter.is_finite() || !(0.0..=1.0).contains(&self.jitter) {
            out.push(format!(
                "retry.jitter must be between 0 and 1, got {}",
                self.jitter
            ));
        }
        if self.max_backoff < self.initial_backoff {
            out.push(format!(
                "retry.max_backoff ({}) is shorter than retry.initial_backoff ({})",
                humantime::format_duration(self.max_backoff),
                humantime::format_duration(self.initial_backoff)
            ));
        }
        if self.max_backoff > Duration::from_secs(86_400) {
            out.push("retry.max_backoff must be at most 24h".to_string());
        }
        if self.retry_on.iter().any(|k| k.trim().is_empty()) {
            out.push("retry.retry_on has an empty error kind".to_string());
        }
        out
    }
}

/// The action that undoes a step, run on rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compensation {
    pub action: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub input: Value,
}

/// Fan-out: one item per element of a list, usually the run's targeted hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForEach {
    pub over: ItemSource,
    /// Items in progress at once; unbounded when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// Rolling limits: at most N items in progress at once per value of a host's
    /// grouping key (`{rack: 1}`: one host per rack), as [`crate::HostGroups`] answers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub max_per: BTreeMap<String, u32>,
    /// Items that may fail while the step still succeeds.
    #[serde(default)]
    pub max_failures: u32,
}

/// Where a fan-out takes its items from.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemSource {
    /// The run's `targets`.
    Targets,
    /// A literal list written in the definition.
    List(Vec<Value>),
}

impl Serialize for ItemSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ItemSource::Targets => s.serialize_str("targets"),
            ItemSource::List(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ItemSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) if s == "targets" => Ok(ItemSource::Targets),
            Value::Array(v) => Ok(ItemSource::List(v)),
            other => Err(serde::de::Error::custom(format!(
                "for_each.over must be \"targets\" or a list, got {other}"
            ))),
        }
    }
}

/// One thing wrong with a definition. Every variant that concerns a step names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("malformed {format}: {message}")]
    Syntax { format: String, message: String },
    #[error("{message}")]
    Document { message: String },
    #[error("step #{index} ({step}): {message}")]
    Field {
        index: usize,
        step: String,
        message: String,
    },
    #[error("step '{step}' is defined more than once")]
    DuplicateStep { step: String },
    #[error("step '{step}' needs '{needs}', which is not a step of this workflow")]
    UnknownDependency { step: String, needs: String },
    #[error("steps form a cycle: {}", steps.join(" -> "))]
    Cycle { steps: Vec<String> },
    #[error("step '{step}' uses unknown action '{action}'")]
    UnknownAction { step: String, action: String },
    #[error("step '{step}': {message}")]
    InvalidRetry { step: String, message: String },
    #[error("step '{step}': {message}")]
    InvalidStep { step: String, message: String },
}

/// A rejected definition, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid workflow definition: {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
pub struct DefinitionError {
    pub problems: Vec<Problem>,
}

impl DefinitionError {
    fn one(p: Problem) -> Self {
        DefinitionError { problems: vec![p] }
    }
}

/// A validated workflow, ready to run. Shared by every run pinned to its version.
#[derive(Debug)]
pub struct Workflow {
    pub name: String,
    pub version: i64,
    pub def: WorkflowDef,
    /// Direct dependencies of each step, by index.
    pub deps: Vec<Vec<usize>>,
    /// Direct dependents of each step, by index.
    pub dependents: Vec<Vec<usize>>,
    /// Step indices in dependency order.
    pub topo: Vec<usize>,
    /// Step names by index, shared with every event that names them.
    pub step_names: Vec<Arc<str>>,
    /// The run parameters the definition declares, read once. `Err` only for a stored
    /// version whose declarations no longer read: its runs are refused at submit, with
    /// the reason.
    pub parameters: Result<Parameters, ParamError>,
    /// The names of the parameters declared sensitive, handed to each attempt.
    pub sensitive: Arc<[String]>,
    index: HashMap<String, usize>,
}

impl Workflow {
    /// Index of the step with this name.
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The step at `i`.
    pub fn step(&self, i: usize) -> &StepDef {
        &self.def.steps[i]
    }

    /// Every step reachable downstream of `i`, `i` excluded.
    pub fn downstream(&self, i: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![i];
        while let Some(s) = stack.pop() {
            for &d in &self.dependents[s] {
                if seen.insert(d) {
                    stack.push(d);
                }
            }
        }
        seen
    }

    /// The definition as canonical JSON, the form stored and compared between versions.
    pub fn canonical_json(def: &WorkflowDef) -> String {
        serde_json::to_string(def).expect("a definition always serialises")
    }
}

/// Parse a definition from text.
pub fn parse(text: &str, format: Format) -> Result<WorkflowDef, DefinitionError> {
    from_value(read(text, format)?)
}

fn read(text: &str, format: Format) -> Result<Value, DefinitionError> {
    Ok(match format {
        Format::Json => serde_json::from_str(text).map_err(|e| {
            DefinitionError::one(Problem::Syntax {
                format: format.to_string(),
                message: e.to_string(),
            })
        })?,
        Format::Yaml => serde_norway::from_str(text).map_err(|e| {
            DefinitionError::one(Problem::Syntax {
                format: format.to_string(),
                message: e.to_string(),
            })
        })?,
    })
}

/// Decode a definition from a generic document, naming the step of each field error.
pub fn from_value(doc: Value) -> Result<WorkflowDef, DefinitionError> {
    let parsed = decode(doc)?;
    if parsed.problems.is_empty() {
        Ok(parsed.def)
    } else {
        Err(DefinitionError {
            problems: parsed.problems,
        })
    }
}

/// A document decoded as far as possible: the steps that decoded, the problems of those
/// that did not, and the names of the latter (so that needing them is not a second error).
struct Decoded {
    def: WorkflowDef,
    problems: Vec<Problem>,
    undecoded: Vec<String>,
}

fn decode(doc: Value) -> Result<Decoded, DefinitionError> {
    let Value::Object(mut obj) = doc else {
        return Err(DefinitionError::one(Problem::Document {
            message: "a workflow definition must be a mapping with `name` and `steps`".into(),
        }));
    };
    let steps = obj.remove("steps");
    obj.insert("steps".into(), Value::Array(Vec::new()));
    let mut def: WorkflowDef = serde_json::from_value(Value::Object(obj)).map_err(|e| {
        DefinitionError::one(Problem::Document {
            message: format!("workflow: {e}"),
        })
    })?;
    let Some(Value::Array(steps)) = steps else {
        return Err(DefinitionError::one(Problem::Document {
            message: "workflow: `steps` must be a list of steps".into(),
        }));
    };
    let mut problems = Vec::new();
    let mut undecoded = Vec::new();
    for (index, raw) in steps.into_iter().enumerate() {
        let name = raw.get("name").and_then(Value::as_str).map(str::to_string);
        let label = name
            .as_ref()
            .map(|s| format!("'{s}'"))
            .unwrap_or_else(|| "unnamed".to_string());
        match serde_json::from_value::<StepDef>(raw) {
            Ok(s) => def.steps.push(s),
            Err(e) => {
                problems.push(Problem::Field {
                    index: index + 1,
                    step: label,
                    message: e.to_string(),
                });
                undecoded.extend(name);
            }
        }
    }
    Ok(Decoded {
        def,
        problems,
        undecoded,
    })
}

fn name_problem(what: &str, name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Some(format!(
            "{what} must be 1 to {MAX_NAME_LEN} characters, got {} characters",
            name.len()
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Some(format!(
            "{what} '{name}' may only contain letters, digits, '_', '-' and '.'"
        ));
    }
    None
}

/// Validate a definition against the registered actions and build its DAG.
pub fn validate(
    def: WorkflowDef,
    version: i64,
    actions: &Actions,
) -> Result<Workflow, DefinitionError> {
    check(def, version, Some(actions), &[], Vec::new())
}

/// Validate everything but the action names: for stored versions whose runs must load
/// even if this build no longer has one of their actions.
pub fn validate_shape(def: WorkflowDef, version: i64) -> Result<Workflow, DefinitionError> {
    check(def, version, None, &[], Vec::new())
}

fn check(
    def: WorkflowDef,
    version: i64,
    actions: Option<&Actions>,
    undecoded: &[String],
    mut problems: Vec<Problem>,
) -> Result<Workflow, DefinitionError> {
    if let Some(m) = name_problem("workflow name", &def.name) {
        problems.push(Problem::Document { message: m });
    }
    if def.steps.is_empty() && undecoded.is_empty() && problems.is_empty() {
        problems.push(Problem::Document {
            message: format!("workflow '{}' has no steps", def.name),
        });
    }
    let parameters = def.parameters();
    // New definitions must declare their parameters well; stored ones load regardless.
    if actions.is_some() {
        let declared = match &parameters {
            Ok(p) => p.declaration_problems(),
            Err(e) => e.problems.clone(),
        };
        problems.extend(
            declared
                .into_iter()
                .map(|message| Problem::Document { message }),
        );
    }
    if def.steps.len() > MAX_STEPS {
        problems.push(Problem::Document {
            message: format!(
                "workflow '{}' has {} steps; at most {MAX_STEPS} are allowed",
                def.name,
                def.steps.len()
            ),
        });
    }

    let mut index = HashMap::new();
    for (i, s) in def.steps.iter().enumerate() {
        if let Some(m) = name_problem("step name", &s.name) {
            problems.push(Problem::InvalidStep {
                step: s.name.clone(),
                message: m,
            });
        }
        if index.insert(s.name.clone(), i).is_some() {
            problems.push(Problem::DuplicateStep {
                step: s.name.clone(),
            });
        }
    }

    for s in &def.steps {
        if actions.is_some_and(|a| !a.contains(&s.action)) {
            problems.push(Problem::UnknownAction {
                step: s.name.clone(),
                action: s.action.clone(),
            });
        }
        if let Some(c) = &s.compensation
            && actions.is_some_and(|a| !a.contains(&c.action))
        {
            problems.push(Problem::UnknownAction {
                step: s.name.clone(),
                action: c.action.clone(),
            });
        }
        for m in s.retry.problems() {
            problems.push(Problem::InvalidRetry {
                step: s.name.clone(),
                message: m,
            });
        }
        if s.timeout.is_zero() {
            problems.push(Problem::InvalidStep {
                step: s.name.clone(),
                message: "timeout must be longer than zero".into(),
            });
        }
        if let Some(fe) = &s.for_each {
            if fe.max_parallel == Some(0) {
                problems.push(Problem::InvalidStep {
                    step: s.name.clone(),
                    message: "for_each.max_parallel must be at least 1".into(),
                });
            }
            for (key, n) in &fe.max_per {
                let message = if key.trim().is_empty() {
                    "for_each.max_per has an empty key; keys are rack, site or a host label"
                        .to_string()
                } else if *n == 0 {
                    format!("for_each.max_per.{key} must be at least 1")
                } else {
                    continue;
                };
                problems.push(Problem::InvalidStep {
                    step: s.name.clone(),
                    message,
                });
            }
            if let ItemSource::List(items) = &fe.over
                && items.len() > 100_000
            {
                problems.push(Problem::InvalidStep {
                    step: s.name.clone(),
                    message: "for_each.over lists more than 100000 items".into(),
                });
            }
        }
        if let Some(w) = &s.window {
            if let Some(m) = name_problem("window name", &w.name) {
                problems.push(Problem::InvalidStep {
                    step: s.name.clone(),
                    message: m,
                });
            }
            if w.cutoff.is_some_and(|c| c > s.timeout) {
                problems.push(Problem::InvalidStep {
                    step: s.name.clone(),
                    message: format!(
                        "window.cutoff ({}) is longer than the step's timeout ({}): an attempt never needs more than its timeout",
                        humantime::format_duration(w.cutoff.unwrap_or_default()),
                        humantime::format_duration(s.timeout)
                    ),
                });
            }
        }
        let mut seen = BTreeSet::new();
        for n in &s.needs {
            if !seen.insert(n) {
                problems.push(Problem::InvalidStep {
                    step: s.name.clone(),
                    message: format!("needs '{n}' more than once"),
                });
            } else if !index.contains_key(n) && !undecoded.contains(n) {
                problems.push(Problem::UnknownDependency {
                    step: s.name.clone(),
                    needs: n.clone(),
                });
            }
        }
    }

    let n = def.steps.len();
    let mut deps = vec![Vec::new(); n];
    let mut dependents = vec![Vec::new(); n];
    let mut graph = DiGraph::<usize, ()>::with_capacity(n, n);
    let nodes: Vec<NodeIndex> = (0..n).map(|i| graph.add_node(i)).collect();
    for (i, s) in def.steps.iter().enumerate() {
        for need in &s.needs {
            // Only the first definition of a duplicated name takes part in the graph.
            if let Some(&d) = index.get(need)
                && !deps[i].contains(&d)
            {
                deps[i].push(d);
                dependents[d].push(i);
                graph.add_edge(nodes[d], nodes[i], ());
            }
        }
    }
    for scc in tarjan_scc(&graph) {
        let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
        if scc.len() > 1 || self_loop {
            problems.push(Problem::Cycle {
                steps: cycle_path(&scc, &graph, &def),
            });
        }
    }

    if !problems.is_empty() {
        return Err(DefinitionError { problems });
    }
    let topo = petgraph::algo::toposort(&graph, None)
        .expect("cycles were rejected above")
        .into_iter()
        .map(|n| graph[n])
        .collect();
    Ok(Workflow {
        name: def.name.clone(),
        version,
        step_names: def
            .steps
            .iter()
            .map(|s| Arc::from(s.name.as_str()))
            .collect(),
        def,
        deps,
        dependents,
        topo,
        sensitive: match &parameters {
            Ok(p) => {
                p.0.iter()
                    .filter(|(_, d)| d.sensitive)
                    .map(|(n, _)| n.clone())
                    .collect()
            }
            Err(_) => Arc::from([]),
        },
        parameters,
        index,
    })
}

/// Order the members of a strongly connected component along one cycle, so the error
/// reads as a path an operator can follow ("a -> b -> c -> a").
fn cycle_path(scc: &[NodeIndex], graph: &DiGraph<usize, ()>, def: &WorkflowDef) -> Vec<String> {
    let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
    let start = *members.iter().next().expect("an SCC is never empty");
    let name = |n: NodeIndex| def.steps[graph[n]].name.clone();
    // Depth-first search inside the component for a path back to `start`.
    let mut path = vec![start];
    let mut visited = BTreeSet::from([start]);
    fn dfs(
        g: &DiGraph<usize, ()>,
        members: &BTreeSet<NodeIndex>,
        start: NodeIndex,
        path: &mut Vec<NodeIndex>,
        visited: &mut BTreeSet<NodeIndex>,
    ) -> bool {
        let cur = *path.last().expect("path starts non-empty");
        for next in g.neighbors(cur) {
            if next == start {
                return true;
            }
            if members.contains(&next) && visited.insert(next) {
                path.push(next);
                if dfs(g, members, start, path, visited) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    if dfs(graph, &members, start, &mut path, &mut visited) {
        let mut names: Vec<String> = path.into_iter().map(name).collect();
        names.push(name(start));
        names
    } else {
        members.into_iter().map(name).collect()
    }
}

/// Parse and validate in one go, reporting every problem found: those of steps that did
/// not decode, and those of the rest.
pub fn compile(
    text: &str,
    format: Format,
    version: i64,
    actions: &Actions,
) -> Result<Workflow, DefinitionError> {
    let doc = read(text, format)?;
    let d = decode(doc)?;
    check(d.def, version, Some(actions), &d.undecoded, d.problems)
}

/// Registered versions of workflows are shared between runs.
pub type SharedWorkflow = Arc<Workflow>;

/// Durations are written the way operators write them ("30s", "5m", "1h 30m"); a bare
/// number is read as seconds.
pub mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::Value;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// An optional duration, absent or written the same way.
    pub mod optional {
        use serde::{Deserialize, Deserializer};
        use std::time::Duration;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] Duration);
            Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => humantime::parse_duration(s.trim()).map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration '{s}': {e} (write it like 30s, 5m or 1h)"
                ))
            }),
            Value::Number(n) => match n.as_f64() {
                Some(f) if (0.0..1e9).contains(&f) => Ok(Duration::from_secs_f64(f)),
                _ => Err(serde::de::Error::custom(format!(
                    "invalid duration {n}: seconds must be between 0 and 1e9"
                ))),
            },
            other => Err(serde::de::Error::custom(format!(
                "invalid duration {other}: write it like 30s, 5m or 1h"
            ))),
        }
    }
}
