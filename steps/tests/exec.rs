//! The `exec` action running real scripts of a design: what a script is given, what the
//! step keeps of what it says, secrets that never come back, and a process group killed
//! whole on cancellation.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lariat_engine::StepContext;
use lariat_steps::provision::{
    CurrentDesign, Exec, FixedDesign, KILL_GRACE, OUTPUT_LIMIT, Provisioning,
};
use serde_json::{Value, json};

/// A design with one host and the scripts given, as a repository would have them.
fn exec(scripts: &[(&str, &str)]) -> Exec {
    let mut files = vec![(
        "d.yaml".to_string(),
        "kind: Site\nname: s1\nspec: {}\n---\nkind: Host\nname: h1\nspec: {site: s1}\n".to_string(),
    )];
    for (p, t) in scripts {
        files.push((p.to_string(), t.to_string()));
    }
    let loaded = lariat_workflows::design::load_files(&files);
    Exec(Arc::new(Provisioning::new(Arc::new(FixedDesign(
        CurrentDesign {
            revision: Some("abc123".into()),
            loaded: Arc::new(loaded),
        },
    )))))
}

/// Whether process `pid` still runs: neither gone nor a zombie waiting for a parent that
/// is gone too.
fn alive(pid: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next());
    !stat.is_empty() && state != Some("Z")
}

fn ctx(input: Value, params: Value, sensitive: &[&str]) -> StepContext {
    StepContext {
        run_input: Arc::new(params),
        sensitive: sensitive.iter().map(|s| s.to_string()).collect(),
        ..common::attempt(Some("h1"), &["h1", "h2"], input, 3)
    }
}

#[tokio::test]
async fn a_script_gets_its_params_environment_and_key_and_its_stdout_json_is_the_result() {
    let e = exec(&[(
        "scripts/show.sh",
        r#"#!/bin/sh
set -e
level=$(sed -n 's/.*"level":\([0-9]*\).*/\1/p' "$LARIAT_PARAMS")
printf '{"level": %s, "host": "%s", "key": "%s", "count": %s, "name": "%s", "targets": "%s", "args": "%s", "home": "%s", "pwd": "%s"}\n' \
  "$level" "$LARIAT_HOST" "$LARIAT_IDEMPOTENCY_KEY" "$LARIAT_PARAM_COUNT" "$LARIAT_PARAM_NAME" "$LARIAT_TARGETS" "$*" "$HOME" "$(pwd)"
echo "done" >&2
"#,
    )]);
    let out = common::finished(
        &e,
        ctx(
            json!({"script": "scripts/show.sh", "level": 5, "args": ["-v", 2]}),
            json!({"count": 7, "name": "raid10"}),
            &[],
        ),
    )
    .await
    .unwrap();
    let r = &out["result"];
    assert_eq!(r["level"], 5, "{out}");
    assert_eq!(r["host"], "h1");
    assert_eq!(r["key"], "r/step[h1]/3");
    assert_eq!(r["count"], 7);
    assert_eq!(r["name"], "raid10");
    assert_eq!(r["targets"], "h1,h2");
    assert_eq!(r["args"], "-v 2");
    assert_eq!(r["home"], r["pwd"], "the working folder is home");
    assert_eq!(out["stderr"], "done\n");
    assert_eq!(out["exit_code"], 0);
    assert_eq!(out["revision"], "abc123");
    let home = r["home"].as_str().unwrap();
    assert!(
        !std::path::Path::new(home).exists(),
        "the working folder {home} is removed after the attempt"
    );
}

#[tokio::test]
async fn the_result_file_wins_over_stdout_and_output_is_kept_to_its_end() {
    let e = exec(&[(
        "scripts/big.sh",
        // No `#!`: run by sh, as sh(1) would.
        "i=0; while [ $i -lt 20000 ]; do echo \"line $i of chatter\"; i=$((i+1)); done\necho '{\"ok\": true}' > \"$LARIAT_RESULT\"\n",
    )]);
    let out = common::finished(&e, ctx(json!({"script": "scripts/big.sh"}), json!({}), &[]))
        .await
        .unwrap();
    assert_eq!(out["result"], json!({"ok": true}));
    let stdout = out["stdout"].as_str().unwrap();
    assert!(stdout.len() <= OUTPUT_LIMIT, "{}", stdout.len());
    assert_eq!(out["stdout_truncated"], true);
    assert!(
        stdout.ends_with("line 19999 of chatter\n"),
        "the end is kept"
    );
}

#[tokio::test]
async fn a_secret_reaches_the_script_by_file_only_and_never_comes_back() {
    const SECRET: &str = "hunter2-7f3a9c";
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("pw");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let reference = json!({"file": secret_file.display().to_string()});
    let e = exec(&[(
        "scripts/leak.sh",
        r#"#!/bin/sh
pw=$(cat "$LARIAT_SECRET_BMC_PASSWORD_FILE")
echo "the password is $pw"
echo "stderr has $pw too" >&2
env | grep -c hunter2 >&2 || true
echo "{\"pw\": \"$pw\", \"mode\": \"$(stat -c %a "$LARIAT_SECRET_BMC_PASSWORD_FILE")\", \"env\": \"$(env | grep -c ^CARGO_)\"}" > "$LARIAT_RESULT"
"#,
    )]);
    assert!(
        std::env::var("CARGO_PKG_NAME").is_ok(),
        "cargo gives the test its variables"
    );
    let params = json!({"bmc_password": reference.clone(), "user": "admin"});
    let input = json!({"script": "scripts/leak.sh", "password": params["bmc_password"]});
    let out = common::finished(&e, ctx(input, params, &["bmc_password"]))
        .await
        .unwrap();
    let text = out.to_string();
    assert!(!text.contains(SECRET), "the secret came back: {text}");
    assert_eq!(out["result"]["pw"], "[secret]", "{out}");
    assert_eq!(out["result"]["mode"], "600", "{out}");
    assert_eq!(
        out["result"]["env"], "0",
        "the executor's environment is not passed: {out}"
    );
    assert!(
        out["stdout"]
            .as_str()
            .unwrap()
            .contains("the password is [secret]")
    );
    assert!(
        out["stderr"]
            .as_str()
            .unwrap()
            .starts_with("stderr has [secret] too\n0\n"),
        "{out}"
    );

    // A failure's message is scrubbed too.
    let e = exec(&[(
        "scripts/fail.sh",
        "echo \"bad $(cat $LARIAT_SECRET_BMC_PASSWORD_FILE)\" >&2; exit 3\n",
    )]);
    let params = json!({"bmc_password": reference});
    let err = common::finished(
        &e,
        ctx(
            json!({"script": "scripts/fail.sh"}),
            params,
            &["bmc_password"],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, "exit_status");
    assert!(err.retryable);
    assert!(err.message.contains("exited with status 3"), "{err}");
    assert!(
        err.message.contains("bad [secret]") && !err.message.contains(SECRET),
        "{err}"
    );

    // A reference that cannot be resolved is named, the value never.
    let params = json!({"bmc_password": {"env": "LARIAT_TEST_EXEC_NOT_SET"}});
    let err = common::finished(
        &e,
        ctx(
            json!({"script": "scripts/fail.sh"}),
            params,
            &["bmc_password"],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, "secret_unavailable", "{err}");
    assert!(err.message.contains("LARIAT_TEST_EXEC_NOT_SET"), "{err}");
}

#[tokio::test]
async fn cancellation_kills_the_whole_process_group() {
    let pids = tempfile::tempdir().unwrap();
    let pid_file = pids.path().join("pids");
    let e = exec(&[(
        "scripts/hang.sh",
        // A child that ignores TERM, in the background, and the script waiting on it.
        "#!/bin/sh\n(trap '' TERM; sleep 300) &\necho $$ $! > \"$1\"\nwait\n",
    )]);
    let c = ctx(
        json!({"script": "scripts/hang.sh", "args": [pid_file.display().to_string()]}),
        json!({}),
        &[],
    );
    let cancel = c.cancel.clone();
    let run = tokio::spawn(async move { common::finished(&e, c).await });
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        if let Ok(t) = std::fs::read_to_string(&pid_file)
            && t.ends_with('\n')
        {
            break t;
        }
        assert!(Instant::now() < deadline, "the script never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let pids: Vec<u32> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    let t0 = Instant::now();
    cancel.cancel();
    let err = run.await.unwrap().unwrap_err();
    assert_eq!(err.kind, "cancelled", "{err}");
    assert!(t0.elapsed() < KILL_GRACE + Duration::from_secs(5));
    for p in pids {
        assert!(
            !alive(&p.to_string()),
            "process {p} survived the cancellation"
        );
    }
}

#[tokio::test]
async fn a_missing_script_or_bad_input_is_named() {
    let e = exec(&[("scripts/a.sh", "true\n")]);
    let err = common::finished(&e, ctx(json!({"script": "scripts/b.sh"}), json!({}), &[]))
        .await
        .unwrap_err();
    assert_eq!(err.kind, "missing_script");
    assert!(
        err.message.contains("scripts/b.sh") && err.message.contains("abc123"),
        "{err}"
    );
    assert!(!err.retryable);
    for (input, names) in [
        (json!({}), "input.script"),
        (json!({"script": "/bin/rm"}), "scripts/ folder"),
        (
            json!({"script": "scripts/a.sh", "args": "x"}),
            "`args` must be a list",
        ),
        (
            json!({"script": "scripts/a.sh", "args": [{"a": 1}]}),
            "args[0]",
        ),
    ] {
        let err = common::finished(&e, ctx(input.clone(), json!({}), &[]))
            .await
            .unwrap_err();
        assert_eq!(err.kind, "bad_input", "{input}");
        assert!(err.message.contains(names), "{input}: {err}");
    }
}

#[tokio::test]
async fn an_attempt_given_up_on_still_stops_its_script_gently_and_cleans_up() {
    let marks = tempfile::tempdir().unwrap();
    let m = marks.path().display().to_string();
    let e = exec(&[(
        "scripts/slow.sh",
        // Says goodbye on TERM; its child ignores TERM and must be killed.
        "#!/bin/sh\ntrap 'echo bye > \"$1/term\"; exit 1' TERM\n(trap '' TERM; sleep 300) &\necho $$ $! \"$LARIAT_WORKDIR\" > \"$1/pids\"\nwhile true; do sleep 1; done\n",
    )]);
    let c = ctx(
        json!({"script": "scripts/slow.sh", "args": [m]}),
        json!({}),
        &[],
    );
    // The engine drops an attempt's future past its timeout: so does this.
    let gave_up = tokio::time::timeout(Duration::from_millis(1500), common::finished(&e, c)).await;
    assert!(gave_up.is_err(), "the script was still running");
    let deadline = Instant::now() + KILL_GRACE + Duration::from_secs(10);
    let pids = std::fs::read_to_string(marks.path().join("pids")).expect("the script started");
    let parts: Vec<&str> = pids.split_whitespace().collect();
    loop {
        let term = marks.path().join("term").exists();
        let alive = parts[..2].iter().any(|p| alive(p));
        let folder = std::path::Path::new(parts[2]).exists();
        if term && !alive && !folder {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the attempt was dropped: TERM seen {term}, processes alive {alive}, folder left {folder}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
