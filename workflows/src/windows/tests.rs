//! The rules of time, each with the moment it is about. Amsterdam springs forward on
//! 2027-03-28 (02:00 CET becomes 03:00 CEST, at 01:00 UTC) and falls back on 2027-10-31
//! (03:00 CEST becomes 02:00 CET, at 01:00 UTC).

use super::*;
use crate::design::load_files;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

fn schedule(cron: &str, duration: &str, zone: Option<&str>) -> Schedule {
    Schedule::new(&MaintenanceWindowSpec {
        cron: cron.into(),
        duration: humantime::parse_duration(duration).unwrap(),
        timezone: zone.map(str::to_string),
        mode: WindowMode::Allow,
        scope: None,
    })
    .unwrap()
}

fn open(s: &Schedule, t: i64) -> Option<(i64, i64)> {
    s.opening_at(t, t + 48 * HOUR)
        .map(|o| (o.opens_at, o.closes_at))
}

#[test]
fn a_window_across_midnight_is_open_on_both_sides() {
    let s = schedule("0 23 * * *", "3h", None);
    let opens = utc_ms(2027, 1, 4, 23, 0, 0);
    let closes = utc_ms(2027, 1, 5, 2, 0, 0);
    assert_eq!(
        open(&s, utc_ms(2027, 1, 4, 23, 30, 0)),
        Some((opens, closes))
    );
    assert_eq!(
        open(&s, utc_ms(2027, 1, 5, 1, 59, 59)),
        Some((opens, closes))
    );
    assert_eq!(open(&s, closes), None, "the end is exclusive");
    assert_eq!(open(&s, opens - 1), None);
    assert_eq!(s.next_start(opens - 1), Some(opens));
}

#[test]
fn a_start_in_the_spring_forward_gap_opens_when_the_gap_ends() {
    let s = schedule("30 2 * * *", "1h", Some("Europe/Amsterdam"));
    // 02:30 does not exist on 2027-03-28: the window opens at 03:00 CEST (01:00 UTC).
    let gap_night = utc_ms(2027, 3, 28, 1, 0, 0);
    assert_eq!(s.next_start(utc_ms(2027, 3, 27, 12, 0, 0)), Some(gap_night));
    assert_eq!(
        open(&s, gap_night + 30 * MIN),
        Some((gap_night, gap_night + HOUR)),
        "a full hour of elapsed time"
    );
    // The next night is summer time: 02:30 CEST is 00:30 UTC.
    assert_eq!(s.next_start(gap_night), Some(utc_ms(2027, 3, 29, 0, 30, 0)));
}

#[test]
fn a_start_in_the_fall_back_overlap_opens_once() {
    let s = schedule("30 2 * * *", "2h", Some("Europe/Amsterdam"));
    // 02:30 happens twice on 2027-10-31: at 00:30 UTC (CEST) and at 01:30 UTC (CET).
    let first = utc_ms(2027, 10, 31, 0, 30, 0);
    assert_eq!(s.next_start(utc_ms(2027, 10, 30, 12, 0, 0)), Some(first));
    assert_eq!(
        s.next_start(first),
        Some(utc_ms(2027, 11, 1, 1, 30, 0)),
        "the second pass of 02:30 does not open it again"
    );
    // Two hours of elapsed time: 02:30 CEST to 03:30 CET.
    assert_eq!(open(&s, first + 90 * MIN), Some((first, first + 2 * HOUR)));
}

#[test]
fn a_window_over_the_fall_back_lasts_its_elapsed_duration() {
    let s = schedule("0 1 * * *", "2h", Some("Europe/Amsterdam"));
    // 01:00 CEST on 2027-10-31 is 23:00 UTC the day before; two hours later the wall
    // clock shows 02:00 CET, not 03:00.
    let opens = utc_ms(2027, 10, 30, 23, 0, 0);
    assert_eq!(
        open(&s, opens + 10 * MIN),
        Some((opens, utc_ms(2027, 10, 31, 1, 0, 0)))
    );
}

#[test]
fn wildcard_hours_skip_the_gap_and_fire_on_both_passes_of_the_overlap() {
    let s = schedule("15 * * * *", "10m", Some("Europe/Amsterdam"));
    // Spring: 01:15 CET (00:15 UTC), then 03:15 CEST (01:15 UTC): 02:15 never was.
    assert_eq!(
        s.next_start(utc_ms(2027, 3, 28, 0, 15, 0)),
        Some(utc_ms(2027, 3, 28, 1, 15, 0))
    );
    // Autumn: 02:15 CEST (00:15 UTC) and 02:15 CET (01:15 UTC) both open it.
    assert_eq!(
        s.next_start(utc_ms(2027, 10, 31, 0, 15, 0)),
        Some(utc_ms(2027, 10, 31, 1, 15, 0))
    );
}

#[test]
fn openings_longer_than_the_recurrence_are_one_opening() {
    // Every hour from 00:00 to 03:00, 90 minutes each: open from 00:00 to 04:30.
    let s = schedule("0 0-3 * * *", "90m", None);
    let day = utc_ms(2027, 5, 3, 0, 0, 0);
    assert_eq!(
        open(&s, day + 2 * HOUR),
        Some((day + HOUR, day + 4 * HOUR + 30 * MIN))
    );
    assert_eq!(open(&s, day + 4 * HOUR + 30 * MIN), None);
    // Every hour for two hours: always open; the chain stops at the horizon it was given.
    let always = schedule("0 * * * *", "2h", None);
    let t = day + 17 * MIN;
    let o = always.opening_at(t, t + 30 * HOUR).unwrap();
    assert!(o.closes_at >= t + 30 * HOUR, "{o:?}");
}

#[test]
fn a_cron_with_six_or_seven_fields_is_refused_with_the_count() {
    for (cron, n) in [("0 0 2 * * *", 6), ("0 0 2 * * * 2027", 7), ("0 2 *", 3)] {
        let e = parse_cron(cron).unwrap_err();
        assert_eq!(
            e,
            WindowError::Fields {
                cron: cron.into(),
                fields: n
            }
        );
        assert!(e.to_string().contains("has five"), "{e}");
    }
    assert!(parse_cron("30 2 * * SUN").is_ok());
    assert!(parse_cron("@daily").is_ok());
    assert!(matches!(
        parse_cron("61 2 * * *"),
        Err(WindowError::Cron { .. })
    ));
}

fn design(yaml: &str) -> Windows {
    let loaded = load_files(&[("d.yaml".into(), yaml.into())]);
    Windows::of(&loaded.design)
}

const DESIGN: &str = "\
kind: Site
name: ams1
spec: {}
---
kind: Host
name: a01
spec: {site: ams1, rack: r1, labels: {tier: gold}}
---
kind: Host
name: a02
spec: {site: ams1, rack: r2}
---
kind: MaintenanceWindow
name: fw
spec: {cron: \"0 2 * * *\", duration: 2h}
---
kind: MaintenanceWindow
name: rack1
spec: {cron: \"0 2 * * *\", duration: 2h, scope: {racks: [r1]}}
---
kind: MaintenanceWindow
name: freeze
spec: {cron: \"0 3 24 12 *\", duration: 48h, mode: deny, scope: {labels: {tier: gold}}}
";

#[test]
fn a_step_starts_only_with_its_cutoff_left_before_the_close() {
    let w = design(DESIGN);
    let h = vec!["a02".to_string()];
    let at_0230 = utc_ms(2027, 6, 1, 2, 30, 0);
    assert_eq!(
        w.decide("fw", &h, at_0230, 45 * MIN),
        Decision::Start {
            closes_at: utc_ms(2027, 6, 1, 4, 0, 0)
        }
    );
    let at_0330 = utc_ms(2027, 6, 1, 3, 30, 0);
    match w.decide("fw", &h, at_0330, 45 * MIN) {
        Decision::Wait { why, recheck_at } => {
            assert!(
                why.contains("closes in 30m") && why.contains("45m"),
                "{why}"
            );
            assert_eq!(recheck_at, Some(utc_ms(2027, 6, 2, 2, 0, 0)));
        }
        d => panic!("{d:?}"),
    }
    match w.decide("fw", &h, utc_ms(2027, 6, 1, 12, 0, 0), 0) {
        Decision::Wait { why, recheck_at } => {
            assert!(why.contains("closed"), "{why}");
            assert_eq!(recheck_at, Some(utc_ms(2027, 6, 2, 2, 0, 0)));
        }
        d => panic!("{d:?}"),
    }
}

#[test]
fn a_scoped_window_covers_only_its_hosts() {
    let w = design(DESIGN);
    let t = utc_ms(2027, 6, 1, 2, 30, 0);
    assert!(matches!(
        w.decide("rack1", &["a01".into()], t, 0),
        Decision::Start { .. }
    ));
    match w.decide("rack1", &["a01".into(), "a02".into()], t, 0) {
        Decision::Wait { why, recheck_at } => {
            assert!(why.contains("does not cover"), "{why}");
            assert_eq!(recheck_at, None);
        }
        d => panic!("{d:?}"),
    }
}

#[test]
fn a_deny_window_wins_over_an_open_allow_window() {
    let w = design(DESIGN);
    let gold = vec!["a01".to_string()];
    let plain = vec!["a02".to_string()];
    let xmas = utc_ms(2027, 12, 25, 2, 30, 0);
    match w.decide("fw", &gold, xmas, 10 * MIN) {
        Decision::Wait { why, recheck_at } => {
            assert!(why.contains("deny window 'freeze' is open"), "{why}");
            // The freeze ends at 03:00 on the 26th, while fw is open (02:00-04:00).
            assert_eq!(recheck_at, Some(utc_ms(2027, 12, 26, 3, 0, 0)));
        }
        d => panic!("{d:?}"),
    }
    // The freeze is scoped to gold hosts: a02 goes on.
    assert!(matches!(
        w.decide("fw", &plain, xmas, 10 * MIN),
        Decision::Start { .. }
    ));
    // A freeze that begins before the attempt would be done stops it too.
    let eve = utc_ms(2027, 12, 24, 2, 30, 0);
    match w.decide("fw", &gold, eve, 45 * MIN) {
        Decision::Wait { why, .. } => assert!(why.contains("opens in 30m"), "{why}"),
        d => panic!("{d:?}"),
    }
    assert!(matches!(
        w.decide("fw", &gold, eve, 20 * MIN),
        Decision::Start { .. }
    ));
}

#[test]
fn an_unknown_window_waits_and_says_so() {
    let w = design(DESIGN);
    match w.decide("nope", &[], utc_ms(2027, 6, 1, 2, 30, 0), 0) {
        Decision::Wait { why, recheck_at } => {
            assert!(why.contains("no MaintenanceWindow 'nope'"), "{why}");
            assert_eq!(recheck_at, None);
        }
        d => panic!("{d:?}"),
    }
}

/// Hourly windows of an hour touch: a step needing 90 minutes fits, whenever the design
/// is checked (the opening is followed from its start, not from the moment of the check).
#[test]
fn touching_hourly_openings_give_a_step_its_cutoff() {
    let w = design(
        "kind: MaintenanceWindow\nname: hourly\nspec: {cron: \"0 * * * *\", duration: 1h}\n",
    );
    for minute in [10, 40] {
        let t = utc_ms(2027, 6, 1, 0, minute, 0);
        assert!(
            matches!(w.decide("hourly", &[], t, 90 * MIN), Decision::Start { .. }),
            "at 00:{minute}"
        );
    }
}

#[test]
fn hosts_are_placed_for_rolling_limits_after_inheritance() {
    // No window is scoped here: the places are still there for `max_per`.
    let w = design(
        "\
kind: Site
name: ams1
spec: {}
---
kind: HostProfile
name: compute
spec: {labels: {row: east, tier: silver}}
---
kind: Host
name: c01
spec: {site: ams1, rack: r7, profile: compute, labels: {tier: gold}}
",
    );
    let p = w.place("c01").expect("c01 is placed");
    assert_eq!(p.value("rack"), Some("r7"));
    assert_eq!(p.value("site"), Some("ams1"));
    assert_eq!(p.value("row"), Some("east"), "from the profile");
    assert_eq!(p.value("tier"), Some("gold"), "the host's own label wins");
    assert_eq!(p.value("pdu"), None);
    assert!(w.place("nowhere").is_none());
}

fn ov(seq: i64, window: &str, action: OverrideAction, from: i64, until: i64) -> Override {
    Override {
        id: format!("o{seq}"),
        seq,
        window: window.into(),
        action,
        site: None,
        from,
        until,
        reason: "test".into(),
        who: "alice".into(),
    }
}

#[test]
fn an_open_override_opens_a_closed_window_until_it_expires() {
    let w = design(DESIGN);
    let h = vec!["a02".to_string()];
    let noon = utc_ms(2027, 6, 1, 12, 0, 0);
    let o = [ov(1, "fw", OverrideAction::Open, noon, noon + 2 * HOUR)];
    assert_eq!(
        w.decide_with("fw", &h, noon + MIN, 45 * MIN, &o),
        Decision::Start {
            closes_at: noon + 2 * HOUR
        }
    );
    // The cutoff counts against the override's end as against a scheduled close.
    match w.decide_with("fw", &h, noon + 90 * MIN, 45 * MIN, &o) {
        Decision::Wait { why, recheck_at } => {
            assert!(why.contains("closes in 30m"), "{why}");
            assert_eq!(recheck_at, Some(utc_ms(2027, 6, 2, 2, 0, 0)));
        }
        d => panic!("{d:?}"),
    }
    // Expired: the schedule again.
    assert!(matches!(
        w.decide_with("fw", &h, noon + 2 * HOUR, 0, &o),
        Decision::Wait { .. }
    ));
    // An override running into a scheduled opening lasts through it.
    let late = utc_ms(2027, 6, 2, 1, 0, 0);
    let o = [ov(1, "fw", OverrideAction::Open, late, late + HOUR)];
    assert_eq!(
        w.decide_with("fw", &h, late, 0, &o),
        Decision::Start {
            closes_at: utc_ms(2027, 6, 2, 4, 0, 0)
        }
    );
}

#[test]
fn a_close_override_holds_an_open_window_and_the_latest_override_wins() {
    let w = design(DESIGN);
    let h = vec!["a02".to_string()];
    let t = utc_ms(2027, 6, 1, 2, 10, 0);
    let close = ov(1, "fw", OverrideAction::Close, t, t + HOUR);
    match w.decide_with("fw", &h, t + MIN, 0, std::slice::from_ref(&close)) {
        Decision::Wait { why, recheck_at } => {
            assert!(why.contains("closed by an override of alice"), "{why}");
            // The schedule resumes when the override ends: fw is still open at 03:10.
            assert_eq!(recheck_at, Some(t + HOUR));
        }
        d => panic!("{d:?}"),
    }
    let reopen = ov(2, "fw", OverrideAction::Open, t + 5 * MIN, t + 20 * MIN);
    assert!(matches!(
        w.decide_with("fw", &h, t + 6 * MIN, 0, &[close.clone(), reopen]),
        Decision::Start { .. }
    ));
    // A window the design does not declare is not made up by an override.
    let ghost = ov(3, "ghost", OverrideAction::Open, t, t + HOUR);
    assert!(matches!(
        w.decide_with("ghost", &h, t + MIN, 0, &[ghost]),
        Decision::Wait {
            recheck_at: None,
            ..
        }
    ));
}

#[test]
fn overrides_of_a_freeze_lift_it_or_put_it_in_force() {
    let w = design(DESIGN);
    let gold = vec!["a01".to_string()];
    let xmas = utc_ms(2027, 12, 25, 2, 30, 0);
    let lift = ov(1, "freeze", OverrideAction::Close, xmas, xmas + 20 * MIN);
    assert!(matches!(
        w.decide_with(
            "fw",
            &gold,
            xmas + MIN,
            10 * MIN,
            std::slice::from_ref(&lift)
        ),
        Decision::Start { .. }
    ));
    // The freeze comes back when the lift ends: an attempt that would outlast it waits.
    match w.decide_with("fw", &gold, xmas + MIN, 30 * MIN, &[lift]) {
        Decision::Wait { why, .. } => assert!(why.contains("opens in 19m"), "{why}"),
        d => panic!("{d:?}"),
    }
    let june = utc_ms(2027, 6, 1, 2, 30, 0);
    let freeze = ov(1, "freeze", OverrideAction::Open, june, june + HOUR);
    match w.decide_with("fw", &gold, june + MIN, 0, &[freeze]) {
        Decision::Wait { why, recheck_at } => {
            assert!(why.contains("'freeze' is in force by an override"), "{why}");
            assert_eq!(recheck_at, Some(june + HOUR));
        }
        d => panic!("{d:?}"),
    }
}

#[test]
fn a_site_override_loosens_only_when_every_host_is_there_and_tightens_when_any_is() {
    let yaml = format!(
        "{DESIGN}---\nkind: Site\nname: fra1\nspec: {{}}\n---\nkind: Host\nname: f01\nspec: {{site: fra1, rack: r9}}\n"
    );
    let w = design(&yaml);
    let noon = utc_ms(2027, 6, 1, 12, 0, 0);
    let mut open = ov(1, "fw", OverrideAction::Open, noon, noon + HOUR);
    open.site = Some("fra1".into());
    let f = vec!["f01".to_string()];
    let both = vec!["f01".to_string(), "a02".to_string()];
    let o = std::slice::from_ref(&open);
    assert!(matches!(
        w.decide_with("fw", &f, noon, 0, o),
        Decision::Start { .. }
    ));
    assert!(matches!(
        w.decide_with("fw", &both, noon, 0, o),
        Decision::Wait { .. }
    ));
    let night = utc_ms(2027, 6, 1, 2, 30, 0);
    let mut close = ov(2, "fw", OverrideAction::Close, night, night + HOUR);
    close.site = Some("fra1".into());
    let c = std::slice::from_ref(&close);
    assert!(matches!(
        w.decide_with("fw", &both, night, 0, c),
        Decision::Wait { .. }
    ));
    assert!(matches!(
        w.decide_with("fw", &["a02".to_string()], night, 0, c),
        Decision::Start { .. }
    ));
}

#[test]
fn an_open_override_that_outlasts_a_close_takes_over_when_the_close_ends() {
    let w = design(DESIGN);
    let h = vec!["a02".to_string()];
    let noon = utc_ms(2027, 6, 1, 12, 0, 0);
    let o = [
        ov(1, "fw", OverrideAction::Open, noon, noon + 2 * HOUR),
        ov(2, "fw", OverrideAction::Close, noon + MIN, noon + 31 * MIN),
    ];
    match w.decide_with("fw", &h, noon + 2 * MIN, 0, &o) {
        Decision::Wait { recheck_at, .. } => assert_eq!(recheck_at, Some(noon + 31 * MIN)),
        d => panic!("{d:?}"),
    }
    assert!(matches!(
        w.decide_with("fw", &h, noon + 31 * MIN, 0, &o),
        Decision::Start { .. }
    ));
    // Without the open override under it, the close ends into the schedule.
    match w.decide_with("fw", &h, noon + 2 * MIN, 0, &o[1..]) {
        Decision::Wait { recheck_at, .. } => {
            assert_eq!(recheck_at, Some(utc_ms(2027, 6, 2, 2, 0, 0)))
        }
        d => panic!("{d:?}"),
    }
}

#[test]
fn a_close_that_outlasts_a_later_open_takes_over_when_the_open_ends() {
    let w = design(DESIGN);
    let h = vec!["a02".to_string()];
    // fw is open 02:00-04:00 by its schedule; closed from 01:00 to 05:00, opened 01:30-02:30.
    let t = utc_ms(2027, 6, 1, 1, 0, 0);
    let o = [
        ov(1, "fw", OverrideAction::Close, t, t + 4 * HOUR),
        ov(2, "fw", OverrideAction::Open, t + 30 * MIN, t + 90 * MIN),
    ];
    assert_eq!(
        w.decide_with("fw", &h, t + 40 * MIN, 10 * MIN, &o),
        Decision::Start {
            closes_at: t + 90 * MIN
        },
        "the open ends into the close, not into the scheduled opening"
    );
    assert!(matches!(
        w.decide_with("fw", &h, t + 70 * MIN, 30 * MIN, &o),
        Decision::Wait { .. }
    ));
}

#[test]
fn an_override_not_in_force_yet_is_asked_about_when_it_begins() {
    let w = design(DESIGN);
    let h = vec!["a02".to_string()];
    let noon = utc_ms(2027, 6, 1, 12, 0, 0);
    // Made by a clock a few seconds ahead of this executor's.
    let o = [ov(1, "fw", OverrideAction::Open, noon + 3_000, noon + HOUR)];
    match w.decide_with("fw", &h, noon, 0, &o) {
        Decision::Wait { recheck_at, .. } => assert_eq!(recheck_at, Some(noon + 3_000)),
        d => panic!("{d:?}"),
    }
}
