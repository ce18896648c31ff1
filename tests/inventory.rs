//! The inventory, drift and reconciliation through the real binary: a design repository
//! made with the git CLI, runs of a provisioning-shaped template whose BMC steps are
//! replaced by `noop` read-backs (the real BMC path is `provision_e2e`'s), a node's
//! callback given as the signal it becomes, a design change, a restart, and the CLI.

mod api_support;

use std::path::Path;

use api_support::{Repo, TestServer, copy_dir, examples};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The provision workflow's shape (a lifecycle workflow by its name), with what the BMC
/// would read back given as noop inputs: power on, and a BIOS one release behind the
/// hardware profile's 1.13.2.
const TEMPLATE: &str = r#"
kind: WorkflowTemplate
name: provision-lab
spec:
  description: validate, power on, await the callback, read the firmware (BMC read-backs as noops)
  steps:
    - {name: validate_design, action: validate_design}
    - name: power_on
      action: noop
      needs: [validate_design]
      input: {power: "on"}
      for_each: {over: targets}
    - name: await_callback
      action: await_signal
      needs: [power_on]
      timeout: 10m
      for_each: {over: targets}
    - name: firmware
      action: noop
      needs: [await_callback]
      input: {firmware: [{id: bios, name: BIOS, version: 1.13.1}, {id: idrac, name: iDRAC, version: 7.00.30.00}]}
      for_each: {over: targets}
"#;

fn design_with_template(dir: &Path) {
    copy_dir(&examples().join("design"), dir);
    std::fs::write(dir.join("provision-lab.yaml"), TEMPLATE).unwrap();
}

fn server_for(repo: &Repo) -> TestServer {
    TestServer::start_with(&["--design-repo", repo.path()])
}

async fn get(s: &TestServer, path: &str) -> Value {
    let (st, v) = s.get(&s.viewer, path).await;
    assert_eq!(st, StatusCode::OK, "GET {path}: {v}");
    v
}

fn kinds_of(drift: &Value, host: &str) -> Vec<String> {
    drift["drift"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["host"] == host)
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_inventory_follows_runs_and_drift_follows_the_design() {
    let src = tempfile::tempdir().unwrap();
    design_with_template(src.path());
    let repo = Repo::with(src.path());
    let first = repo.git(&["rev-parse", "HEAD"]);
    let mut s = server_for(&repo);

    // Before anything ran: every host of the design is new, and never provisioned.
    let all = get(&s, "/v1/inventory/hosts").await;
    let hosts: Vec<String> = all["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap().to_string())
        .collect();
    let design_hosts = get(&s, "/v1/hosts?sites=ams1").await["hosts"].clone();
    assert_eq!(json!(hosts), design_hosts, "every host, sorted: {all}");
    assert!(
        all["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["state"] == "new")
    );
    assert_eq!(all["revision"], json!(first));
    assert_eq!(all["hosts"][0]["site"], "ams1");
    assert_eq!(all["hosts"][0]["rack"], "a");

    // Pages of two walk the same hosts.
    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/inventory/hosts?limit=2&after={a}"),
            None => "/v1/inventory/hosts?limit=2".into(),
        };
        let page = get(&s, &path).await;
        for h in page["hosts"].as_array().unwrap() {
            walked.push(h["name"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(walked, hosts);

    let drift = get(&s, "/v1/drift").await;
    assert_eq!(drift["hosts"].as_u64(), Some(hosts.len() as u64));
    assert_eq!(kinds_of(&drift, "ams1-a01"), ["never_provisioned"]);
    assert_eq!(drift["drift"][0]["workflow"], "provision");

    // A provisioning run on one host, its callback with a MAC the design does not have.
    let run = s
        .submit(json!({"workflow": "provision-lab", "targets": ["ams1-a01"]}))
        .await;
    s.wait_run(&run, "a waiting callback", |v| {
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|st| st["name"] == "await_callback")
            .flat_map(|st| st["items"].as_array().cloned().unwrap_or_default())
            .any(|i| i["status"] == "waiting")
    })
    .await;
    let mid = get(&s, "/v1/inventory/hosts/ams1-a01").await;
    assert_eq!(mid["state"], "provisioning", "{mid}");
    assert_eq!(mid["stage"]["step"], "await_callback");
    assert_eq!(mid["power"]["state"], "on");
    assert_eq!(mid["power"]["step"], "power_on");
    let busy = get(&s, "/v1/drift?names=ams1-a01").await;
    assert!(
        busy["drift"].as_array().unwrap().is_empty(),
        "provisioning is not drift: {busy}"
    );
    let by_state = get(&s, "/v1/inventory/hosts?state=provisioning").await;
    assert_eq!(by_state["hosts"].as_array().unwrap().len(), 1, "{by_state}");

    let facts = json!({"macs": ["52:54:00:77:01:01", "52:54:00:77:99:99"], "serial": "X1"});
    let (st, v) = s
        .post(
            &s.operator,
            &format!("/v1/runs/{run}/steps/await_callback/signal"),
            Some(json!({"item": "ams1-a01", "payload": {"host": "ams1-a01", "state": "installed", "facts": facts}})),
        )
        .await;
    assert!(st.is_success(), "{v}");
    s.wait_status(&run, "succeeded").await;

    let done = get(&s, "/v1/inventory/hosts/ams1-a01").await;
    assert_eq!(done["state"], "provisioned", "{done}");
    assert_eq!(done["stage"]["step"], "firmware");
    assert_eq!(done["provisioned"]["run"], json!(run));
    assert_eq!(done["provisioned"]["revision"], json!(first));
    assert_eq!(
        done["provisioned"]["digest"].as_str().map(str::len),
        Some(64)
    );
    assert_eq!(done["facts"]["facts"], facts);
    assert_eq!(done["firmware"][0]["component"], "bios");
    assert_eq!(done["history"][0]["run"], json!(run));
    assert_eq!(done["history"][0]["status"], "succeeded");
    let kinds: Vec<&str> = done["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    // bios 1.13.1 < 1.13.2; the eno2 MAC of the design is missing from the callback.
    assert_eq!(kinds, ["firmware_behind", "facts_mismatch"], "{done}");
    assert!(
        done["drift"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("MAC 52:54:00:77:01:02")
    );
    assert_eq!(
        done["drift"][0]["input"],
        json!({"component": "bios", "version": "1.13.2"})
    );

    // The design changes what ams1-a01 is built from: its resolved configuration differs.
    let edited = tempfile::tempdir().unwrap();
    design_with_template(edited.path());
    let hosts_file = edited.path().join("hosts/rack-a.yaml");
    let text = std::fs::read_to_string(&hosts_file).unwrap();
    std::fs::write(
        &hosts_file,
        text.replacen(
            "labels: {canary: \"true\"}",
            "labels: {canary: \"false\"}",
            1,
        ),
    )
    .unwrap();
    let second = repo.commit(edited.path(), "a01 is no canary");
    let (st, v) = s.post(&s.admin, "/v1/designs/sync", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let drift = get(&s, "/v1/drift?names=ams1-a01,ams1-a02").await;
    assert_eq!(drift["revision"], json!(second));
    assert_eq!(
        kinds_of(&drift, "ams1-a01"),
        ["config_changed", "firmware_behind", "facts_mismatch"],
        "{drift}"
    );
    assert_eq!(kinds_of(&drift, "ams1-a02"), ["never_provisioned"]);
    let reason = drift["drift"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&first[..12]),
        "names the revision it was built from: {reason}"
    );

    // A restart: the inventory is the same, it lives in the runs.
    let before = get(&s, "/v1/inventory/hosts/ams1-a01").await;
    s.restart();
    assert_eq!(get(&s, "/v1/inventory/hosts/ams1-a01").await, before);

    // The CLI shows the inventory and the plan.
    let list = s
        .cli(
            Some(&s.viewer),
            &["host", "list", "--state", "provisioned"],
            None,
        )
        .await;
    let rows: Vec<&str> = list.ok().stdout.lines().collect();
    assert_eq!(rows.len(), 2, "a header and ams1-a01: {rows:?}");
    assert!(
        rows[1].starts_with("ams1-a01  ams1  a     provisioned  firmware succeeded  on"),
        "{rows:?}"
    );
    let show = s
        .cli(Some(&s.viewer), &["host", "show", "ams1-a01"], None)
        .await;
    let text = &show.ok().stdout;
    assert!(text.contains("state     provisioned"), "{text}");
    assert!(text.contains("drift     config_changed"), "{text}");
    assert!(text.contains(&format!("built     by run {run}")), "{text}");
    let plan = s
        .cli(
            Some(&s.viewer),
            &["reconcile", "--plan", "--names", "ams1-a03"],
            None,
        )
        .await;
    let plan = plan.ok();
    assert!(
        plan.stdout
            .contains("ams1-a03  never_provisioned  provision"),
        "{}",
        plan.stdout
    );

    // Reconcile: a dry run plans, --apply submits once, a second apply starts nothing.
    let (st, plan) = s
        .post(
            &s.operator,
            "/v1/reconcile",
            Some(json!({"filter": {"names": ["ams1-a01", "ams1-a02"]}, "dry_run": true})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{plan}");
    let runs = plan["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{plan}");
    assert_eq!(runs[0]["workflow"], "provision");
    assert_eq!(runs[0]["hosts"], json!(["ams1-a01", "ams1-a02"]));
    assert!(runs[0].get("run").is_none(), "a dry run submits nothing");
    let skipped: Vec<&str> = plan["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["reason"].as_str().unwrap())
        .collect();
    assert!(
        skipped.iter().any(|r| r.contains("--image bios=URL")),
        "{skipped:?}"
    );

    let args = [
        "reconcile",
        "--apply",
        "--names",
        "ams1-a01,ams1-a02",
        "--kinds",
        "never_provisioned,config_changed",
        "--json",
    ];
    let out = s.cli(Some(&s.operator), &args, None).await.ok().json();
    let started = out["runs"][0]["run"].as_str().unwrap().to_string();
    assert_eq!(out["runs"][0]["created"], true, "{out}");
    let again = s.cli(Some(&s.operator), &args, None).await;
    let again = again.ok().json();
    // The run started: the hosts are busy, and the same plan submits nothing new.
    assert!(
        again["runs"].as_array().unwrap().is_empty()
            || (again["runs"][0]["run"] == json!(started) && again["runs"][0]["created"] == false),
        "{again}"
    );
    let audit = get(&s, "/v1/runs?workflow=provision").await;
    assert_eq!(
        audit["runs"].as_array().unwrap().len(),
        1,
        "one run: {audit}"
    );

    // Bad input: each answer names what is wrong.
    for (path, want) in [
        (
            "/v1/inventory/hosts?state=bogus",
            "unknown host state 'bogus'",
        ),
        ("/v1/inventory/hosts?limit=0", "limit 0 is out of range"),
        ("/v1/drift?kinds=sideways", "unknown drift kind 'sideways'"),
        ("/v1/inventory/hosts?labels=nokey", "must be key=value"),
    ] {
        let (st, v) = s.get(&s.viewer, path).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(want),
            "{path}: {v}"
        );
    }
    let (st, v) = s.get(&s.viewer, "/v1/inventory/hosts/no-such-host").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no host no-such-host")
    );
    let none = get(&s, "/v1/inventory/hosts?names=no-such-host").await;
    assert!(none["hosts"].as_array().unwrap().is_empty());
    let (st, v) = s
        .post(&s.viewer, "/v1/reconcile", Some(json!({"dry_run": true})))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "reconcile is an operator's: {v}");
    let (st, v) = s
        .post(
            &s.operator,
            "/v1/reconcile",
            Some(json!({"kinds": ["sideways"]})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_auto_fixes_the_opted_in_drift_once_however_many_passes_see_it() {
    let src = tempfile::tempdir().unwrap();
    design_with_template(src.path());
    let repo = Repo::with(src.path());
    let s = TestServer::start_with(&[
        "--design-repo",
        repo.path(),
        "--reconcile-auto",
        "never_provisioned",
        "--reconcile-every",
        "1s",
    ]);
    // Every host the design provisions (one is marked never_provision).
    let hosts = get(&s, "/v1/drift?kinds=never_provisioned").await["drift"]
        .as_array()
        .unwrap()
        .len();
    assert!(hosts > 1);
    let deadline = std::time::Instant::now() + api_support::PATIENCE;
    let run = loop {
        let v = get(&s, "/v1/runs?workflow=provision").await;
        if let Some(r) = v["runs"].as_array().unwrap().first() {
            break r.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no provision run was started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(run["targets"].as_array().unwrap().len(), hosts, "{run}");
    assert!(
        run["idempotency_key"]
            .as_str()
            .unwrap()
            .starts_with("reconcile:provision:"),
        "{run}"
    );
    // Several more passes see the same drift (or a busy host): nothing new starts.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let all = get(&s, "/v1/runs").await;
    assert_eq!(all["runs"].as_array().unwrap().len(), 1, "{all}");
    let (st, audit) = s.get(&s.admin, "/v1/audit?action=reconcile.submit").await;
    assert_eq!(st, StatusCode::OK);
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["who"], "reconcile-auto", "{audit}");
}

#[test]
fn reconcile_auto_refuses_kinds_no_workflow_fixes() {
    for (arg, want) in [
        ("facts_mismatch", "no workflow fixes facts"),
        ("sideways", "unknown drift kind 'sideways'"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(api_support::BIN)
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--reconcile-auto",
                arg,
                "--db",
            ])
            .arg(dir.path().join("l.db"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{arg}: {err}");
    }
}
