//! `exec` through the real binary: a design from git with a script in its `scripts/`
//! folder and a template with a sensitive parameter; the run's attempt shows what the
//! script said, and the secret is nowhere in the database files or the server's log.

mod api_support;

use api_support::{Repo, TestServer, copy_dir, examples, step_of};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SCRIPT: &str = r#"#!/bin/sh
# Checks that the BMC password is there without saying it, and reports the plan.
set -e
pw=$(cat "$LARIAT_SECRET_BMC_PASSWORD_FILE")
[ -n "$pw" ] || { echo "no password" >&2; exit 2; }
echo "configuring RAID $LARIAT_PARAM_LEVEL on $LARIAT_HOST (key $LARIAT_IDEMPOTENCY_KEY)"
echo "careless debug line: $pw" >&2
printf '{"host": "%s", "level": %s, "password_length": %s}\n' "$LARIAT_HOST" "$LARIAT_PARAM_LEVEL" "${#pw}" > "$LARIAT_RESULT"
"#;

/// Leaves a child that ignores TERM and waits for it: only killing the group ends it.
const HANG: &str =
    "#!/bin/sh\n(trap '' TERM; sleep 300) &\necho $$ $! > \"$LARIAT_PARAM_PIDS\"\nwait\n";

const HANG_TEMPLATE: &str = "\
kind: WorkflowTemplate
name: hang
spec:
  parameters:
    pids: {type: string, required: true}
  steps:
    - name: wait
      action: exec
      timeout: 2s
      retry: {max_attempts: 1}
      input: {script: design/scripts/hang.sh}
";

const TEMPLATE: &str = "\
kind: WorkflowTemplate
name: raid-config
spec:
  description: Set the RAID level of each host with the vendor's script.
  parameters:
    level: {type: integer, required: true}
    bmc_password: {type: string, sensitive: true, required: true}
  steps:
    - name: configure
      action: exec
      for_each: {over: targets}
      timeout: 2m
      input: {script: design/scripts/raid-config.sh, level: \"${params.level}\"}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_step_runs_a_design_script_and_its_secret_is_nowhere_kept() {
    let secret = format!("s3cr3t-{}", uuid::Uuid::now_v7().simple());
    let design = tempfile::tempdir().unwrap();
    copy_dir(&examples().join("design"), design.path());
    std::fs::create_dir_all(design.path().join("scripts")).unwrap();
    std::fs::write(design.path().join("scripts/raid-config.sh"), SCRIPT).unwrap();
    std::fs::write(design.path().join("raid.yaml"), TEMPLATE).unwrap();
    std::fs::write(design.path().join("scripts/hang.sh"), HANG).unwrap();
    std::fs::write(design.path().join("hang.yaml"), HANG_TEMPLATE).unwrap();
    let repo = Repo::with(design.path());
    let secret_file = design.path().join("bmc-password");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    // The log as a shipper takes it: every line a JSON object.
    let s = TestServer::start_with(&["--design-repo", repo.path(), "--log-format", "json"]);

    // The template is registered from the design.
    let wf = async {
        for _ in 0..200 {
            let (st, _) = s.get(&s.viewer, "/v1/workflows/raid-config").await;
            if st == StatusCode::OK {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the design's template was never registered:\n{}", s.log());
    };
    wf.await;
    // A secret given as a value is refused at submit, and named.
    let (st, body) = s
        .post(
            &s.operator,
            "/v1/runs",
            Some(json!({"workflow": "raid-config", "targets": ["ams1-a01"],
                        "input": {"level": 10, "bmc_password": secret}})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("bmc_password"), "{body}");
    assert!(!body.to_string().contains(&secret), "{body}");

    let id = s
        .submit(json!({
            "workflow": "raid-config",
            "targets": ["ams1-a01", "ams1-a02"],
            "input": {"level": 10, "bmc_password": {"file": secret_file.display().to_string()}},
        }))
        .await;
    let run = s.wait_status(&id, "succeeded").await;
    for item in step_of(&run, "configure")["items"].as_array().unwrap() {
        let out = &item["output"];
        let host = item["item_value"].as_str().unwrap();
        assert_eq!(out["result"]["host"], host, "{out}");
        assert_eq!(out["result"]["level"], 10, "{out}");
        assert_eq!(out["result"]["password_length"], secret.len(), "{out}");
        assert!(
            out["stdout"].as_str().unwrap().contains(&format!(
                "configuring RAID 10 on {host} (key {id}/configure[{host}]/1)"
            )),
            "{out}"
        );
        assert_eq!(out["stderr"], "careless debug line: [secret]\n", "{out}");
    }

    // Nowhere: not in any database file, not in the log, not in any answer.
    let (_, events) = s.get(&s.viewer, &format!("/v1/runs/{id}/events")).await;
    assert!(!events.to_string().contains(&secret));
    assert!(!run.to_string().contains(&secret));
    let log = s.log();
    assert!(log.contains("exec started"), "{log}");
    assert!(!log.contains(&secret), "the secret is in the log:\n{log}");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["process"] == "server" && l["level"].is_string())
    );
    // What an action logs carries its attempt's run, step, number and host.
    let mut hosts: Vec<&str> = lines
        .iter()
        .filter(|l| l["message"] == "exec started" && l["run"] == id.as_str())
        .map(|l| {
            assert_eq!(l["step"], "configure", "{l}");
            assert_eq!(l["attempt"], 1, "{l}");
            assert_eq!(l["target"], "lariat_steps::provision::exec", "{l}");
            l["host"].as_str().unwrap_or_else(|| panic!("no host: {l}"))
        })
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["ams1-a01", "ams1-a02"], "{log}");
    let mut files = 0;
    for e in std::fs::read_dir(s.dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.is_file()
            && p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("lariat.db")
        {
            let bytes = std::fs::read(&p).unwrap();
            files += 1;
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the secret is in {}",
                p.display()
            );
        }
    }
    assert!(files >= 2, "the database and its WAL were read");

    // The step's timeout kills the script's whole process group.
    let pid_file = design.path().join("pids");
    let id = s
        .submit(json!({"workflow": "hang", "input": {"pids": pid_file.display().to_string()}}))
        .await;
    let run = s.wait_status(&id, "failed").await;
    let error = step_of(&run, "wait")["error"].to_string();
    assert!(
        error.contains("timeout") || error.contains("timed out"),
        "{run}"
    );
    let text = std::fs::read_to_string(&pid_file).expect("the script wrote its pids");
    for p in text.split_whitespace() {
        let mut gone = false;
        for _ in 0..100 {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            if stat.is_empty() || state == Some("Z") {
                gone = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(gone, "process {p} outlived the step's timeout");
    }
}
