//! Maintenance windows through the real binary: a design from git with the example's
//! `firmware` window, a server whose clock starts seconds before the window opens
//! (`--clock-start`), a gated run that waits and starts when it opens, and what
//! `GET /v1/windows` and `lariat window list|show` say meanwhile.

mod api_support;

use api_support::{Repo, TestServer, examples, step_of};
use reqwest::StatusCode;
use serde_json::json;

/// Tuesday 2027-06-01 01:00 in Amsterdam (CEST, UTC+2): Monday 23:00 UTC.
const OPENS_MS: i64 = 1_811_804_400_000;

/// A server over the example design from git whose clock starts at `clock`, with `flash`
/// registered: one item per target, gated by `firmware` with a 30 minute cutoff.
async fn flash_server(clock: &str) -> (Repo, TestServer) {
    let repo = Repo::with(&examples().join("design"));
    let s = TestServer::start_with(&["--design-repo", repo.path(), "--clock-start", clock]);
    s.register(
        "name: flash\nsteps:\n  - name: flash\n    action: noop\n    for_each: {over: targets}\n    window: {name: firmware, cutoff: 30m}\n",
    )
    .await;
    (repo, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_run_waits_for_the_design_window_and_starts_when_it_opens() {
    assert_eq!(
        lariat_workflows::windows::utc_ms(2027, 5, 31, 23, 0, 0),
        OPENS_MS
    );
    // Long enough before the opening for the server to start and the run to be submitted
    // on a busy machine; the test takes that long.
    let (_repo, s) = flash_server("2027-05-31T22:59:48Z").await;
    let id = s
        .submit(json!({"workflow": "flash", "targets": ["ams1-a02"]}))
        .await;
    let run = s
        .wait_run(&id, "the item waits for its window", |r| {
            step_of(r, "flash")["items"][0]["status"] == "waiting"
        })
        .await;
    let item = &step_of(&run, "flash")["items"][0];
    assert_eq!(item["waiting_for"]["for"], "window", "{item}");
    assert_eq!(item["waiting_for"]["window"], "firmware", "{item}");
    assert_eq!(item["waiting_for"]["until"], OPENS_MS, "{item}");

    // The operator's view while it waits.
    let (st, list) = s.get(&s.viewer, "/v1/windows").await;
    assert_eq!(st, StatusCode::OK, "{list}");
    let fw = list["windows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "firmware")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(fw["open"], false, "{fw}");
    assert_eq!(fw["next"][0]["opens_at"], OPENS_MS, "{fw}");
    assert_eq!(
        fw["next"][0]["opens_local"], "2027-06-01T01:00:00+02:00",
        "{fw}"
    );
    assert_eq!(fw["waiting"]["central"], 1, "{fw}");
    let freeze = list["windows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "holiday-freeze")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(freeze["mode"], "deny");
    let text = s.cli(Some(&s.viewer), &["window", "list"], None).await;
    text.ok();
    let line = text
        .stdout
        .lines()
        .find(|l| l.starts_with("firmware"))
        .unwrap_or_else(|| panic!("{text:#?}"));
    assert!(
        line.contains("closed")
            && line.contains("2027-06-01T01:00:00+02:00")
            && line.contains("1 at central"),
        "{line}"
    );
    let show = s
        .cli(
            Some(&s.viewer),
            &["window", "show", "firmware", "--json"],
            None,
        )
        .await;
    let detail = show.ok().json();
    assert_eq!(detail["waiters"][0]["host"], "ams1-a02", "{detail}");
    assert_eq!(detail["waiters"][0]["step"], "flash", "{detail}");

    let done = s.wait_status(&id, "succeeded").await;
    let started = step_of(&done, "flash")["items"][0]["started_at"]
        .as_i64()
        .unwrap();
    assert!(
        started >= OPENS_MS,
        "started {} ms early",
        OPENS_MS - started
    );
    println!(
        "window opened -> gated item started: {} ms",
        started - OPENS_MS
    );

    // An unknown window is named in a 404.
    let (st, body) = s.get(&s.viewer, "/v1/windows/no-such").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("no-such"),
        "{body}"
    );
}

/// An operator opens a closed window by an override, closes it again, clears it; each
/// is audited, and bad requests change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_opens_and_closes_a_window_by_overrides_that_expire() {
    // Monday noon UTC: `firmware` next opens at 23:00 UTC, eleven hours away.
    let (_repo, s) = flash_server("2027-05-31T12:00:00Z").await;
    let first = s
        .submit(json!({"workflow": "flash", "targets": ["ams1-a02"]}))
        .await;
    s.wait_run(&first, "the item waits for its window", |r| {
        step_of(r, "flash")["items"][0]["waiting_for"]["until"] == OPENS_MS
    })
    .await;

    // Bad requests: each named, none recorded.
    let path = "/v1/windows/firmware/open";
    let bad = [
        (
            json!({"for": "2h", "reason": "  "}),
            StatusCode::BAD_REQUEST,
            "reason",
        ),
        (json!({"for": "2h"}), StatusCode::BAD_REQUEST, "reason"),
        (
            json!({"for": "2h", "reason": "fw\u{0}"}),
            StatusCode::BAD_REQUEST,
            "control character",
        ),
        (json!({"reason": "x"}), StatusCode::BAD_REQUEST, "for"),
        (
            json!({"for": "10s", "reason": "x"}),
            StatusCode::BAD_REQUEST,
            "a minute to 7 days",
        ),
        (
            json!({"for": "8days", "reason": "x"}),
            StatusCode::BAD_REQUEST,
            "a minute to 7 days",
        ),
        (
            json!({"for": "soon", "reason": "x"}),
            StatusCode::BAD_REQUEST,
            "soon",
        ),
        (
            json!({"for": "2h", "reason": "x", "site": "nowhere"}),
            StatusCode::BAD_REQUEST,
            "nowhere",
        ),
        (
            json!({"for": "2h", "reason": "x", "until": 5}),
            StatusCode::BAD_REQUEST,
            "until",
        ),
    ];
    for (body, status, names) in bad {
        let (st, answer) = s.post(&s.operator, path, Some(body.clone())).await;
        assert_eq!(st, status, "{body} -> {answer}");
        let msg = answer["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(names), "{body} -> {msg}");
    }
    let (st, answer) = s
        .post(
            &s.operator,
            "/v1/windows/no-such/open",
            Some(json!({"for": "2h", "reason": "x"})),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("no-such")
    );
    let (st, answer) = s
        .post(
            &s.operator,
            "/v1/windows/firmware/close",
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(
        st,
        StatusCode::CONFLICT,
        "closing a closed window needs a span: {answer}"
    );
    let (st, _) = s
        .post(&s.viewer, path, Some(json!({"for": "2h", "reason": "x"})))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "a viewer cannot open a window");
    let (_, detail) = s.get(&s.viewer, "/v1/windows/firmware").await;
    assert_eq!(
        detail["history"],
        json!([]),
        "nothing was recorded: {detail}"
    );

    // Open it for two hours: the waiting item starts.
    let opened = s
        .cli(
            Some(&s.operator),
            &[
                "window",
                "open",
                "firmware",
                "--for",
                "2h",
                "--reason",
                "CVE-2027-1234 hotfix",
                "--json",
            ],
            None,
        )
        .await;
    let opened = opened.ok().json();
    let made_at = opened["starts_at"].as_i64().unwrap();
    assert_eq!(
        opened["ends_at"].as_i64().unwrap() - made_at,
        2 * 3600 * 1000,
        "{opened}"
    );
    assert_eq!(opened["who"], "alice", "{opened}");
    let done = s.wait_status(&first, "succeeded").await;
    let started = step_of(&done, "flash")["items"][0]["started_at"]
        .as_i64()
        .unwrap();
    assert!(started >= made_at, "started before the override");
    println!(
        "override made -> gated item started: {} ms",
        started - made_at
    );
    let list = s.cli(Some(&s.viewer), &["window", "list"], None).await;
    let line = list
        .ok()
        .stdout
        .lines()
        .find(|l| l.starts_with("firmware"))
        .unwrap_or_else(|| panic!("{list:#?}"))
        .to_string();
    assert!(
        line.contains("open until") && line.contains("1 override"),
        "{line}"
    );

    // Closing it without a span lasts to the end of its opening, here the override's.
    let (st, closed) = s
        .post(
            &s.operator,
            "/v1/windows/firmware/close",
            Some(json!({"reason": "check"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{closed}");
    assert_eq!(closed["ends_at"], opened["ends_at"], "{closed}");
    // Closed for 30 minutes: a new run waits until then, when the open override, which
    // outlasts the close, takes over again.
    let closed = s
        .cli(
            Some(&s.operator),
            &[
                "window",
                "close",
                "firmware",
                "--for",
                "30m",
                "--reason",
                "incident INC-88",
                "--json",
            ],
            None,
        )
        .await;
    let closed = closed.ok().json();
    let second = s
        .submit(json!({"workflow": "flash", "targets": ["ams1-a03"]}))
        .await;
    s.wait_run(&second, "the item waits for the close to end", |r| {
        step_of(r, "flash")["items"][0]["waiting_for"]["until"] == closed["ends_at"]
    })
    .await;

    // Clear: both overrides end, the schedule decides again.
    let cleared = s
        .cli(
            Some(&s.operator),
            &[
                "window",
                "clear",
                "firmware",
                "--reason",
                "incident over",
                "--json",
            ],
            None,
        )
        .await;
    let cleared = cleared.ok().json();
    assert_eq!(
        cleared["ended"].as_array().map(Vec::len),
        Some(3),
        "{cleared}"
    );
    s.wait_run(&second, "the item waits for the scheduled opening", |r| {
        step_of(r, "flash")["items"][0]["waiting_for"]["until"] == OPENS_MS
    })
    .await;

    // The audit: who, why, when, newest first, and how each ended.
    let show = s
        .cli(
            Some(&s.viewer),
            &["window", "show", "firmware", "--json"],
            None,
        )
        .await;
    let detail = show.ok().json();
    let history = detail["history"].as_array().unwrap();
    assert_eq!(history.len(), 3, "{detail}");
    assert_eq!(history[0]["action"], "close");
    assert_eq!(history[0]["reason"], "incident INC-88");
    assert_eq!(history[1]["reason"], "check");
    assert_eq!(history[2]["action"], "open");
    assert_eq!(history[2]["reason"], "CVE-2027-1234 hotfix");
    for h in history {
        assert_eq!(h["who"], "alice", "{h}");
        assert_eq!(h["from"], "127.0.0.1", "{h}");
        assert!(
            h["ended_by"]
                .as_str()
                .unwrap_or("")
                .contains("incident over"),
            "{h}"
        );
    }
    assert_eq!(detail["window"]["overrides"], json!([]), "{detail}");
    let text = s
        .cli(Some(&s.viewer), &["window", "show", "firmware"], None)
        .await;
    assert!(text.ok().stdout.contains("earlier overrides:"), "{text:#?}");
}
