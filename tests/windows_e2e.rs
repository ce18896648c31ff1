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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_run_waits_for_the_design_window_and_starts_when_it_opens() {
    assert_eq!(
        lariat_workflows::windows::utc_ms(2027, 5, 31, 23, 0, 0),
        OPENS_MS
    );
    let repo = Repo::with(&examples().join("design"));
    // Long enough before the opening for the server to start and the run to be submitted
    // on a busy machine; the test takes that long.
    let s = TestServer::start_with(&[
        "--design-repo",
        repo.path(),
        "--clock-start",
        "2027-05-31T22:59:48Z",
    ]);
    s.register(
        "name: flash\nsteps:\n  - name: flash\n    action: noop\n    for_each: {over: targets}\n    window: {name: firmware, cutoff: 30m}\n",
    )
    .await;
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
