//! Maintenance windows evaluated: when each `MaintenanceWindow` of a design is open, and
//! whether a gated step for some hosts may start now.
//!
//! The rules of time, which DESIGN.md states too:
//! - A window opens at each occurrence of its cron in its zone, and stays open for its
//!   duration in elapsed time (a 2h window that opens at 01:00 on the night the clock
//!   falls back closes at 02:00 of the second pass, two real hours later).
//! - A fixed start in the spring-forward gap (02:30 on the night 02:00 jumps to 03:00)
//!   opens at the first minute after the gap, 03:00, that day; a fixed start in the
//!   fall-back overlap opens once, at its first pass. Wildcard and step minutes or hours
//!   skip what the gap removes and fire on each pass of the overlap. (croner's DST rules,
//!   which follow Vixie cron.)
//! - Openings that overlap or touch (a window longer than its recurrence) are one opening:
//!   open from the first start to the last end.
//! - A window across midnight is nothing special: a start and a duration.

use std::collections::BTreeMap;

use chrono::{TimeZone as _, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

use crate::design::Design;
use crate::design::schema::{MaintenanceWindowSpec, WindowMode, WindowScope};

/// Openings chained into one before giving up on finding where it ends: an every-minute
/// window of a day is 1,440 of them.
const MAX_CHAIN: usize = 20_000;

/// Why a window cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("timezone '{0}' is not an IANA time zone (such as Europe/Amsterdam or UTC)")]
    Zone(String),
    #[error(
        "cron expression '{cron}' has {fields} fields; a window's cron has five (minute, hour, day of month, month, day of week)"
    )]
    Fields { cron: String, fields: usize },
    #[error("cron expression '{cron}': {why}")]
    Cron { cron: String, why: String },
    #[error("a window of no duration never opens")]
    NoDuration,
}

/// Parses a window's five-field cron: six fields (seconds) or seven (years) are refused
/// with the count named.
pub fn parse_cron(cron: &str) -> Result<Cron, WindowError> {
    let fields = cron.split_whitespace().count();
    if fields != 5 && !cron.trim_start().starts_with('@') {
        return Err(WindowError::Fields {
            cron: cron.to_string(),
            fields,
        });
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(cron)
        .map_err(|e| WindowError::Cron {
            cron: cron.to_string(),
            why: e.to_string(),
        })
}

/// One opening: from `opens_at` (inclusive) to `closes_at` (exclusive), ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opening {
    pub opens_at: i64,
    pub closes_at: i64,
}

/// When a window is open: its cron, in its zone, and how long each opening lasts.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
    duration_ms: i64,
}

impl Schedule {
    /// The schedule of a window as the design writes it.
    pub fn new(spec: &MaintenanceWindowSpec) -> Result<Schedule, WindowError> {
        let zone = match spec.timezone.as_deref() {
            None => chrono_tz::UTC,
            Some(z) => z.parse().map_err(|_| WindowError::Zone(z.to_string()))?,
        };
        if spec.duration.is_zero() {
            return Err(WindowError::NoDuration);
        }
        Ok(Schedule {
            cron: parse_cron(&spec.cron)?,
            zone,
            duration_ms: spec.duration.as_millis().min(i64::MAX as u128) as i64,
        })
    }

    /// The window's zone.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// `t` on the wall clock of the window's zone, RFC 3339 with its offset.
    pub fn local_text(&self, t: i64) -> String {
        match self.zone.timestamp_millis_opt(t).single() {
            Some(d) => d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            None => t.to_string(),
        }
    }

    /// The first start strictly after `t`; None when the cron never fires again.
    pub fn next_start(&self, t: i64) -> Option<i64> {
        // Starts are whole seconds, so searching from the second `t` falls in finds
        // exactly the starts after `t`.
        let from = self
            .zone
            .timestamp_millis_opt(t.div_euclid(1000) * 1000)
            .single()?;
        let next = self.cron.find_next_occurrence(&from, false).ok()?;
        Some(next.timestamp_millis())
    }

    /// The first moment from `t` on when the window is open: `t` itself, or its next start.
    pub fn open_from(&self, t: i64) -> Option<i64> {
        if self.opening_at(t, t).is_some() {
            Some(t)
        } else {
            self.next_start(t)
        }
    }

    /// The opening `t` falls in, chained through overlapping starts until it ends or
    /// until it is known to last past `horizon`.
    pub fn opening_at(&self, t: i64, horizon: i64) -> Option<Opening> {
        // A start covers `t` when it lies in (t - duration, t].
        let first = self.next_start(t.saturating_sub(self.duration_ms))?;
        if first > t {
            return None;
        }
        Some(Opening {
            opens_at: first,
            closes_at: self.chain_end(first, horizon),
        })
    }

    /// The next opening that starts after `t` (whole, with overlapping starts chained).
    pub fn next_opening(&self, t: i64, horizon: i64) -> Option<Opening> {
        let start = self.next_start(t)?;
        Some(Opening {
            opens_at: start,
            closes_at: self.chain_end(start, horizon),
        })
    }

    fn chain_end(&self, start: i64, horizon: i64) -> i64 {
        let mut end = start.saturating_add(self.duration_ms);
        let mut at = start;
        for _ in 0..MAX_CHAIN {
            if end >= horizon {
                break;
            }
            match self.next_start(at) {
                Some(next) if next <= end => {
                    end = end.max(next.saturating_add(self.duration_ms));
                    at = next;
                }
                _ => break,
            }
        }
        end
    }
}

/// Where a host stands, as far as window scopes and rolling limits go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPlace {
    pub site: Option<String>,
    pub rack: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl HostPlace {
    /// The host's value for a grouping key of a rolling limit: `site`, `rack`, or else
    /// the label of that name.
    pub fn value(&self, key: &str) -> Option<&str> {
        match key {
            "site" => self.site.as_deref(),
            "rack" => self.rack.as_deref(),
            label => self.labels.get(label).map(String::as_str),
        }
    }
}

impl WindowScope {
    /// Whether the scope covers a host at `place`.
    pub fn covers(&self, place: &HostPlace) -> bool {
        let any = |list: &[String], v: &Option<String>| {
            list.is_empty() || v.as_ref().is_some_and(|v| list.contains(v))
        };
        any(&self.sites, &place.site)
            && any(&self.racks, &place.rack)
            && self
                .labels
                .iter()
                .all(|(k, v)| place.labels.get(k) == Some(v))
    }
}

/// One window of a design, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Window {
    pub name: String,
    pub mode: WindowMode,
    pub scope: Option<WindowScope>,
    pub schedule: Schedule,
    /// What the design wrote, for display.
    pub spec: MaintenanceWindowSpec,
}

impl Window {
    /// Whether the window covers every one of `places` (no places: it does).
    pub fn covers(&self, places: &[&HostPlace]) -> bool {
        match &self.scope {
            None => true,
            Some(s) => places.iter().all(|p| s.covers(p)),
        }
    }

    /// The opening `now` falls in, as the schedule and the overrides for every host
    /// (those not scoped to a site) make it; None while closed.
    pub fn opening_with(&self, overrides: &[Override], now: i64, horizon: i64) -> Option<Opening> {
        Effective::new(self, overrides, &[], now).opening_now(now, horizon)
    }

    /// Whether the window covers any of `places` (what a deny window needs to stop a
    /// step; no places: only an unscoped one does).
    fn touches(&self, places: &[&HostPlace]) -> bool {
        match &self.scope {
            None => true,
            Some(s) => places.iter().any(|p| s.covers(p)),
        }
    }
}

/// Whether a gated step may start, and if not, why and when to ask again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It may start: the window stays open, and no freeze begins, for what it needs.
    Start { closes_at: i64 },
    /// It must wait. `recheck_at` is the first moment the answer can change (the
    /// window's next opening, the end of a freeze); None when it never can by itself.
    Wait {
        why: String,
        recheck_at: Option<i64>,
    },
}

/// The windows of one design, and where its hosts stand.
#[derive(Debug, Clone, Default)]
pub struct Windows {
    windows: BTreeMap<String, Window>,
    places: BTreeMap<String, HostPlace>,
    /// Windows the design declares but that cannot be evaluated (design validation
    /// reports them as errors): a step naming one waits and says why.
    broken: BTreeMap<String, String>,
}

impl Windows {
    /// The windows of `design`, with the place of each of its hosts.
    pub fn of(design: &Design) -> Windows {
        let mut out = Windows::default();
        for w in design.windows() {
            match Schedule::new(&w.spec) {
                Ok(schedule) => {
                    out.windows.insert(
                        w.name.clone(),
                        Window {
                            name: w.name.clone(),
                            mode: w.spec.mode,
                            scope: w.spec.scope.clone(),
                            schedule,
                            spec: w.spec.clone(),
                        },
                    );
                }
                Err(e) => {
                    out.broken.insert(w.name.clone(), e.to_string());
                }
            }
        }
        // Every host's place, for scoped windows and for rolling limits (`max_per`).
        for h in design.hosts() {
            let place = match design.resolved_host(&h.name) {
                Ok(r) => HostPlace {
                    site: r.site,
                    rack: r.rack,
                    labels: r.labels,
                },
                Err(_) => HostPlace {
                    site: h.spec.site.clone(),
                    rack: h.spec.rack.clone(),
                    labels: h.spec.labels.clone(),
                },
            };
            out.places.insert(h.name.clone(), place);
        }
        out
    }

    /// Every window that can be evaluated, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Window> {
        self.windows.values()
    }

    /// Where the design puts `host`; None for a host it does not know.
    pub fn place(&self, host: &str) -> Option<&HostPlace> {
        self.places.get(host)
    }

    /// The window named `name`.
    pub fn get(&self, name: &str) -> Option<&Window> {
        self.windows.get(name)
    }

    /// Whether a step gated by `window`, acting on `hosts`, may start at `now` when an
    /// attempt needs `need_ms` before the window closes. Hosts the design does not know
    /// have no place: only unscoped windows cover them.
    pub fn decide(&self, window: &str, hosts: &[String], now: i64, need_ms: i64) -> Decision {
        self.decide_with(window, hosts, now, need_ms, &[])
    }

    /// [`Windows::decide`] with the operators' overrides: of those in force now that
    /// count for the task's hosts, the latest made wins over the window's schedule.
    pub fn decide_with(
        &self,
        window: &str,
        hosts: &[String],
        now: i64,
        need_ms: i64,
        overrides: &[Override],
    ) -> Decision {
        let Some(w) = self.windows.get(window) else {
            let why = match self.broken.get(window) {
                Some(e) => format!("window '{window}' cannot be evaluated: {e}"),
                None => format!("the design has no MaintenanceWindow '{window}'"),
            };
            return Decision::Wait {
                why,
                recheck_at: None,
            };
        };
        let unknown = HostPlace::default();
        let places: Vec<&HostPlace> = hosts
            .iter()
            .map(|h| self.places.get(h).unwrap_or(&unknown))
            .collect();
        if w.mode == WindowMode::Deny {
            return Decision::Wait {
                why: format!("window '{window}' is a deny window: nothing starts in it"),
                recheck_at: None,
            };
        }
        if !w.covers(&places) {
            let who = hosts.join(", ");
            return Decision::Wait {
                why: format!("window '{window}' does not cover {who} (see its scope)"),
                recheck_at: None,
            };
        }
        let need_until = now.saturating_add(need_ms.max(0));
        let allow = Effective::new(w, overrides, &places, now);
        let closes_at = match allow.opening_now(now, need_until) {
            None => {
                let why = match allow.by {
                    Some(o) => format!("window '{window}' is closed by {}", o.describe()),
                    None => format!("window '{window}' is closed"),
                };
                return Decision::Wait {
                    why,
                    recheck_at: allow.open_from(now),
                };
            }
            Some(o) if o.closes_at < need_until => {
                return Decision::Wait {
                    why: format!(
                        "window '{window}' closes in {}, and the step needs {} (its cutoff)",
                        span_text(o.closes_at - now),
                        span_text(need_ms)
                    ),
                    recheck_at: w.schedule.next_start(o.closes_at - 1),
                };
            }
            Some(o) => o.closes_at,
        };
        // A freeze open now, or one that begins before the attempt would be done.
        for d in self.windows.values() {
            if d.mode != WindowMode::Deny || !d.touches(&places) {
                continue;
            }
            let freeze = Effective::new(d, overrides, &places, now);
            if let Some(o) = freeze.opening_now(now, i64::MAX) {
                let why = match freeze.by {
                    Some(by) => {
                        format!("deny window '{}' is in force by {}", d.name, by.describe())
                    }
                    None => format!("deny window '{}' is open", d.name),
                };
                return Decision::Wait {
                    why,
                    recheck_at: allow.open_from(o.closes_at),
                };
            }
            if let Some(start) = freeze.next_start(now)
                && start < need_until
            {
                let ends = d
                    .schedule
                    .opening_at(start, i64::MAX)
                    .map_or(start, |o| o.closes_at);
                return Decision::Wait {
                    why: format!(
                        "deny window '{}' opens in {}, before the step's cutoff",
                        d.name,
                        span_text(start - now)
                    ),
                    recheck_at: allow.open_from(ends),
                };
            }
        }
        Decision::Start { closes_at }
    }
}

/// What an operator's override does to a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverrideAction {
    /// Open for its span whatever the schedule says: an allow window lets its steps
    /// start; a deny window's freeze is in force.
    Open,
    /// Closed for its span: an allow window lets nothing new start; a deny window's
    /// freeze is lifted.
    Close,
}

/// An operator's manual override of a window, from `from` (inclusive) to `until`
/// (exclusive), ms since the epoch. It expires by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub id: String,
    /// Later overrides win over earlier ones: the order they were made in.
    pub seq: i64,
    pub window: String,
    pub action: OverrideAction,
    /// Only hosts of this site; every host the window covers when absent.
    #[serde(default)]
    pub site: Option<String>,
    pub from: i64,
    pub until: i64,
    pub reason: String,
    pub who: String,
}

impl Override {
    /// Whether it is in force at `t`.
    pub fn in_force(&self, t: i64) -> bool {
        self.from <= t && t < self.until
    }

    /// Whether it counts for a task on `places`. One scoped to a site loosens (opens an
    /// allow window, lifts a freeze) only when every host is at that site, and tightens
    /// (closes an allow window, puts a freeze in force) when any host is.
    fn counts_for(&self, mode: WindowMode, places: &[&HostPlace]) -> bool {
        let Some(site) = &self.site else {
            return true;
        };
        let at = |p: &&HostPlace| p.site.as_deref() == Some(site.as_str());
        let loosens = matches!(
            (mode, self.action),
            (WindowMode::Allow, OverrideAction::Open) | (WindowMode::Deny, OverrideAction::Close)
        );
        if loosens {
            !places.is_empty() && places.iter().all(at)
        } else {
            places.iter().any(at)
        }
    }

    fn describe(&self) -> String {
        let until = Utc
            .timestamp_millis_opt(self.until)
            .single()
            .map_or(self.until.to_string(), |t| {
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            });
        format!(
            "an override of {} until {until} ({})",
            self.who, self.reason
        )
    }
}

/// The override among `overrides` that decides `w` for a task on `places` at `now`: the
/// latest made of those in force that count for it.
pub fn override_in_force<'a>(
    overrides: &'a [Override],
    w: &Window,
    places: &[&HostPlace],
    now: i64,
) -> Option<&'a Override> {
    overrides
        .iter()
        .filter(|o| o.window == w.name && o.in_force(now) && o.counts_for(w.mode, places))
        .max_by_key(|o| o.seq)
}

/// A window as its schedule and the override in force make it.
struct Effective<'a> {
    w: &'a Window,
    /// The override that decides now.
    by: Option<&'a Override>,
    /// Every override of the window that counts for the task and has not expired.
    live: Vec<&'a Override>,
}

impl<'a> Effective<'a> {
    fn new(w: &'a Window, overrides: &'a [Override], places: &[&HostPlace], now: i64) -> Self {
        let live: Vec<&Override> = overrides
            .iter()
            .filter(|o| o.window == w.name && o.until > now && o.counts_for(w.mode, places))
            .collect();
        Effective {
            w,
            by: live
                .iter()
                .copied()
                .filter(|o| o.in_force(now))
                .max_by_key(|o| o.seq),
            live,
        }
    }

    /// The opening `now` falls in, followed until `horizon`; None while closed.
    fn opening_now(&self, now: i64, horizon: i64) -> Option<Opening> {
        let s = &self.w.schedule;
        match self.by {
            None => s.opening_at(now, horizon),
            Some(o) if o.action == OverrideAction::Close => None,
            // Open until the override ends, and on through a scheduled opening it runs
            // into, unless an earlier close that outlasts it takes over then.
            Some(o) => Some(Opening {
                opens_at: s
                    .opening_at(now, now)
                    .map_or(o.from, |c| c.opens_at.min(o.from)),
                closes_at: if self.resumes_at(o, OverrideAction::Close) {
                    o.until
                } else {
                    s.opening_at(o.until, horizon.max(o.until))
                        .map_or(o.until, |c| c.closes_at.max(o.until))
                },
            }),
        }
    }

    /// The first moment from `t` on when it is open.
    fn open_from(&self, t: i64) -> Option<i64> {
        let from_schedule = match self.by {
            Some(o) if o.action == OverrideAction::Open && t < o.until => Some(t.max(o.from)),
            Some(o) if o.action == OverrideAction::Close && t < o.until => {
                if self.resumes_at(o, OverrideAction::Open) {
                    Some(o.until)
                } else {
                    self.w.schedule.open_from(o.until)
                }
            }
            _ => self.w.schedule.open_from(t),
        };
        // An override not in force yet (an executor whose clock is behind the one that
        // made it) is asked about again when it begins.
        let pending = self.live.iter().map(|o| o.from).filter(|f| *f > t).min();
        match (from_schedule, pending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The first start after `now` while it is closed now.
    fn next_start(&self, now: i64) -> Option<i64> {
        match self.by {
            Some(o)
                if o.action == OverrideAction::Close
                    && self.resumes_at(o, OverrideAction::Open) =>
            {
                Some(o.until)
            }
            Some(o) if o.action == OverrideAction::Close => self.w.schedule.open_from(o.until),
            _ => self.w.schedule.next_start(now),
        }
    }

    /// Whether an earlier override with `action`, still in force when `o` ends, takes
    /// over then.
    fn resumes_at(&self, o: &Override, action: OverrideAction) -> bool {
        self.live
            .iter()
            .any(|x| x.action == action && x.seq < o.seq && x.in_force(o.until))
    }
}

fn span_text(ms: i64) -> String {
    // Whole seconds: a window's edges are whole seconds, the clock is not.
    humantime::format_duration(std::time::Duration::from_secs((ms.max(0) / 1000) as u64))
        .to_string()
}

/// The wall clock, for checks made at design load.
pub(crate) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Milliseconds of a UTC wall-clock time, for tests and tools.
pub fn utc_ms(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .map(|t| t.timestamp_millis())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
