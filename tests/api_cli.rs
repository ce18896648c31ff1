//! The CLI against a real server: every command in text and JSON, `run watch` exit codes,
//! and server errors printed as messages, not stack traces.

mod api_support;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use api_support::*;
use serde_json::json;

const FAILS: &str = r#"
name: fails
steps:
  - {name: ok, action: noop}
  - name: broken
    action: fail
    input: {retryable: false, kind: firmware}
    needs: [ok]
"#;

fn assert_clean_error(out: &Cli, needle: &str) {
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.starts_with("error: "), "{out:#?}");
    assert!(out.stderr.contains(needle), "wanted {needle:?}: {out:#?}");
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "at src/"] {
        assert!(!out.stderr.contains(bad), "a stack trace: {out:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_and_run_commands_in_text_and_json() {
    let s = TestServer::start();
    let dir = s.dir.path();
    let wf = dir.join("gate.yaml");
    std::fs::write(&wf, GATE).unwrap();
    let wf = wf.to_str().unwrap();

    let out = s
        .cli(Some(&s.admin), &["workflow", "apply", wf], None)
        .await;
    assert_eq!(out.ok().stdout.trim(), "registered gate version 1");
    let out = s
        .cli(Some(&s.admin), &["workflow", "apply", wf, "--json"], None)
        .await;
    assert_eq!(
        out.ok().json(),
        json!({"name": "gate", "version": 1, "created": false})
    );
    let out = s.cli(Some(&s.viewer), &["workflow", "list"], None).await;
    assert!(
        out.ok().stdout.lines().any(|l| l.starts_with("gate ")),
        "{out:#?}"
    );
    let out = s
        .cli(
            Some(&s.viewer),
            &["workflow", "show", "gate", "--json"],
            None,
        )
        .await;
    assert_eq!(out.ok().json()["definition"]["steps"][1]["name"], "gate");

    // Submit with input from a file and from standard input, targets and a key.
    let input = dir.join("input.json");
    std::fs::write(&input, r#"{"rack": "r12"}"#).unwrap();
    let out = s
        .cli(
            Some(&s.operator),
            &[
                "run",
                "submit",
                "gate",
                "--input",
                input.to_str().unwrap(),
                "--targets",
                "n1,n2",
                "--idempotency-key",
                "k1",
                "--json",
            ],
            None,
        )
        .await;
    let run = out.ok().json();
    assert_eq!(run["input"], json!({"rack": "r12"}));
    assert_eq!(run["targets"], json!(["n1", "n2"]));
    let id = run["id"].as_str().unwrap().to_string();
    let again = s
        .cli(
            Some(&s.operator),
            &["run", "submit", "gate", "--idempotency-key", "k1"],
            None,
        )
        .await;
    assert_eq!(again.ok().stdout.trim(), id);
    assert!(again.stderr.contains("no new run"), "{again:#?}");
    let out = s
        .cli(
            Some(&s.operator),
            &["run", "submit", "gate", "--input", "-"],
            Some("rack: r13\n"),
        )
        .await;
    let second = out.ok().stdout.trim().to_string();
    assert_eq!(s.run(&second).await["input"], json!({"rack": "r13"}));

    let out = s.cli(Some(&s.viewer), &["run", "list"], None).await;
    let text = &out.ok().stdout;
    assert!(text.starts_with("ID "), "{text}");
    assert!(text.contains(&id) && text.contains(&second), "{text}");
    let out = s
        .cli(
            Some(&s.viewer),
            &["run", "list", "--json", "--limit", "1"],
            None,
        )
        .await;
    let page = out.ok().json();
    assert_eq!(page["runs"][0]["id"], second.as_str());
    let cursor = page["next_cursor"].as_str().unwrap();
    let out = s
        .cli(
            Some(&s.viewer),
            &["run", "list", "--json", "--cursor", cursor],
            None,
        )
        .await;
    assert_eq!(out.ok().json()["runs"][0]["id"], id.as_str());

    s.wait_step(&id, "gate", "waiting").await;
    let out = s.cli(Some(&s.viewer), &["run", "show", &id], None).await;
    let text = &out.ok().stdout;
    let gate_line = text
        .lines()
        .find(|l| l.starts_with("gate "))
        .expect("a gate row");
    assert!(
        gate_line.contains("waiting") && gate_line.contains("waiting for signal"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("first ") && l.contains("succeeded")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("STEP ")), "{text}");
    let out = s
        .cli(Some(&s.viewer), &["run", "show", &id, "--json"], None)
        .await;
    assert_eq!(step_of(&out.ok().json(), "gate")["status"], "waiting");

    // Pause, resume, signal with a payload from a file, then the history.
    let out = s.cli(Some(&s.operator), &["run", "pause", &id], None).await;
    assert!(out.ok().stdout.contains("paused"), "{out:#?}");
    let out = s
        .cli(Some(&s.operator), &["run", "resume", &id, "--json"], None)
        .await;
    assert_eq!(out.ok().json()["status"], "running");
    let payload = dir.join("payload.yaml");
    std::fs::write(&payload, "mac: 52:54:00:12:34:56\n").unwrap();
    let out = s
        .cli(
            Some(&s.operator),
            &[
                "run",
                "signal",
                &id,
                "gate",
                "--payload",
                payload.to_str().unwrap(),
            ],
            None,
        )
        .await;
    out.ok();
    let v = s.wait_status(&id, "succeeded").await;
    assert_eq!(
        step_of(&v, "gate")["output"],
        json!({"mac": "52:54:00:12:34:56"})
    );
    let out = s.cli(Some(&s.viewer), &["run", "events", &id], None).await;
    let text = &out.ok().stdout;
    assert!(
        text.contains("operator  pause by alice from 127.0.0.1"),
        "{text}"
    );
    assert!(text.contains("run_succeeded"), "{text}");

    let out = s
        .cli(Some(&s.operator), &["run", "rollback", &id], None)
        .await;
    out.ok();
    s.wait_status(&id, "rolled_back").await;
    let out = s
        .cli(
            Some(&s.operator),
            &["run", "cancel", &second, "--json"],
            None,
        )
        .await;
    assert_eq!(out.ok().json()["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_from_the_cli_with_new_input() {
    let s = TestServer::start();
    s.register(FAILS).await;
    let run = s.submit(json!({"workflow": "fails"})).await;
    s.wait_status(&run, "failed").await;
    let input = s.dir.path().join("fixed.json");
    std::fs::write(&input, r#"{"times": 0}"#).unwrap();
    let out = s
        .cli(
            Some(&s.operator),
            &[
                "run",
                "retry",
                &run,
                "broken",
                "--input",
                input.to_str().unwrap(),
            ],
            None,
        )
        .await;
    assert!(out.ok().stdout.contains("retrying step broken"), "{out:#?}");
    let v = s.wait_status(&run, "succeeded").await;
    assert_eq!(step_of(&v, "broken")["input"], json!({"times": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_a_run_and_exits_by_its_outcome() {
    let s = TestServer::start();
    s.register(GATE).await;
    s.register(FAILS).await;

    // A run that succeeds while watched: exit 0, a line per step change, the outcome.
    let run = s.submit(json!({"workflow": "gate"})).await;
    let mut watch = s
        .cli_command(Some(&s.viewer), &["run", "watch", &run])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    s.wait_step(&run, "gate", "waiting").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        watch.try_wait().unwrap().is_none(),
        "watch waits while the run waits"
    );
    let (status, _) = s
        .post(
            &s.operator,
            &format!("/v1/runs/{run}/steps/gate/signal"),
            None,
        )
        .await;
    assert!(status.is_success());
    let out = tokio::task::block_in_place(|| wait_output(watch, Duration::from_secs(60)));
    assert_eq!(out.code, 0, "{out:#?}");
    for step in ["first", "gate", "last"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.contains(step) && l.contains("succeeded") && l.contains("attempt 1")),
            "no line for {step}: {out:#?}"
        );
    }
    assert!(
        out.stdout.contains(&format!("run {run} succeeded")),
        "{out:#?}"
    );

    // Watching a run that already finished replays it and exits at once.
    let out = s.cli(Some(&s.viewer), &["run", "watch", &run], None).await;
    assert_eq!(out.code, 0, "{out:#?}");

    // A run that fails: non-zero, with the error.
    let failing = s.submit(json!({"workflow": "fails"})).await;
    let out = s
        .cli(Some(&s.viewer), &["run", "watch", &failing], None)
        .await;
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stdout.contains(&format!("run {failing} failed")),
        "{out:#?}"
    );
    assert!(out.stdout.contains("planned failure"), "{out:#?}");

    // --json: one event per line, then the same exit code.
    let out = s
        .cli(Some(&s.viewer), &["run", "watch", &failing, "--json"], None)
        .await;
    assert_eq!(out.code, 1, "{out:#?}");
    let kinds: Vec<String> = out
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("a JSON line")["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("run_created"));
    assert_eq!(kinds.last().map(String::as_str), Some("run_failed"));
}

fn wait_output(mut child: std::process::Child, timeout: Duration) -> Cli {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stdout = String::new();
            let mut stderr = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut stdout)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return Cli {
                code: status.code().unwrap_or(-1),
                stdout,
                stderr,
            };
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the command did not finish in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_print_the_message_not_a_stack_trace() {
    let s = TestServer::start();
    let unknown = "0190c2d5-0000-7000-8000-000000000000";
    let out = s
        .cli(Some(&s.viewer), &["run", "show", unknown], None)
        .await;
    assert_clean_error(&out, &format!("unknown run {unknown} (404 not_found)"));
    let out = s
        .cli(Some(&s.viewer), &["run", "cancel", unknown], None)
        .await;
    assert_clean_error(
        &out,
        "this route needs the operator role; token 'victor' has viewer (403 forbidden)",
    );
    let out = s.cli(None, &["run", "list"], None).await;
    assert_clean_error(&out, "LARIAT_TOKEN is not set");
    let out = s
        .cli(Some(&s.operator), &["run", "submit", "nope"], None)
        .await;
    assert_clean_error(&out, "unknown workflow 'nope' (404 not_found)");
    let bad = s.dir.path().join("bad.yaml");
    std::fs::write(&bad, "name: bad\nsteps:\n  - {name: a, action: teleport}\n").unwrap();
    let out = s
        .cli(
            Some(&s.admin),
            &["workflow", "apply", bad.to_str().unwrap()],
            None,
        )
        .await;
    assert_clean_error(&out, "unknown action 'teleport'");
    let out = s
        .cli(
            Some(&s.operator),
            &["run", "submit", "gate", "--input", "/does/not/exist.json"],
            None,
        )
        .await;
    assert_clean_error(&out, "cannot read /does/not/exist.json");

    // An unreachable server says so.
    let mut c = s.cli_command(Some(&s.viewer), &["run", "list"]);
    c.env("LARIAT_SERVER", "http://127.0.0.1:9");
    let out = Cli::from(tokio::task::block_in_place(|| c.output()).unwrap());
    assert_clean_error(&out, "cannot reach the lariat server at http://127.0.0.1:9");
}
