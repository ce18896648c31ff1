//! The design from git through the real binary: a repository made with the git CLI, a
//! signed push webhook sent as a real HTTP POST, polling, findings, resolved hosts, node
//! filters as run targets, and `lariat design validate`.

mod api_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use api_support::{BIN, PATIENCE, Repo, TestServer, examples};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "a-webhook-secret-of-some-length";

fn server_for(repo: &Repo, extra: &[&str]) -> TestServer {
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), format!("{SECRET}\n")).unwrap();
    let (_, secret_path) = secret.keep().unwrap();
    let mut args = vec![
        "--design-repo",
        repo.path(),
        "--design-webhook-secret-file",
        secret_path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    TestServer::start_with(&args)
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

async fn webhook(s: &TestServer, body: &Value, signature: Option<String>) -> (StatusCode, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let mut rb = s
        .http
        .post(s.url("/v1/hooks/git"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .body(bytes.clone());
    if let Some(sig) = signature {
        rb = rb.header("x-hub-signature-256", sig);
    }
    let res = rb.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn revisions(s: &TestServer) -> Vec<Value> {
    let (st, v) = s.get(&s.viewer, "/v1/designs").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["revisions"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_signed_push_fetches_and_only_a_clean_revision_becomes_active() {
    let repo = Repo::with(&examples().join("design"));
    let first = repo.git(&["rev-parse", "HEAD"]);
    let s = server_for(&repo, &[]);

    let revs = revisions(&s).await;
    assert_eq!(revs.len(), 1, "the start fetches the head: {revs:?}");
    assert_eq!(revs[0]["commit"], json!(first));
    assert_eq!(revs[0]["status"], "active");

    let broken = repo.commit(
        &examples().join("broken/duplicate-mac"),
        "two hosts, one MAC",
    );
    let push = json!({"ref": "refs/heads/main", "after": broken});

    // A bad or missing signature: 401, and nothing is fetched.
    let (st, v) = webhook(&s, &push, Some(sign(b"something else"))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let (st, _) = webhook(&s, &push, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(
        revisions(&s).await.len(),
        1,
        "an unsigned push must not fetch"
    );

    // A signed push of a broken design: recorded as rejected, the first stays active.
    let body = serde_json::to_vec(&push).unwrap();
    let (st, v) = webhook(&s, &push, Some(sign(&body))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["revision"]["commit"], json!(broken));
    assert_eq!(v["revision"]["status"], "rejected");
    let (_, overview) = s.get(&s.viewer, "/v1/designs").await;
    assert_eq!(overview["active"]["commit"], json!(first));

    let (st, f) = s
        .get(
            &s.viewer,
            &format!("/v1/designs/{}/findings", &broken[..12]),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{f}");
    let rules: Vec<&str> = f["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["level"] == "error")
        .map(|x| x["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["duplicate-mac"]);

    // A push to another branch is acknowledged and ignored.
    let other = json!({"ref": "refs/heads/feature", "after": broken});
    let body = serde_json::to_vec(&other).unwrap();
    let (st, v) = webhook(&s, &other, Some(sign(&body))).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        v["ignored"]
            .as_str()
            .unwrap()
            .contains("refs/heads/feature"),
        "{v}"
    );

    // The fix becomes active.
    let fixed = repo.commit(&examples().join("design"), "fix the MAC");
    let push = json!({"ref": "refs/heads/main", "after": fixed});
    let body = serde_json::to_vec(&push).unwrap();
    let (st, v) = webhook(&s, &push, Some(sign(&body))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["revision"]["status"], "active");
    let statuses: Vec<String> = revisions(&s)
        .await
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["active", "rejected", "accepted"]);
}

#[tokio::test]
async fn polling_picks_up_a_new_commit() {
    let repo = Repo::with(&examples().join("design"));
    let s = server_for(&repo, &["--design-poll", "1s"]);
    let next = repo.commit(&examples().join("design"), "same design, new commit");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let revs = revisions(&s).await;
        if revs
            .iter()
            .any(|r| r["commit"] == json!(next) && r["status"] == "active")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "poll never fetched {next}: {revs:?}\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn hosts_resolve_and_filters_become_run_targets() {
    let repo = Repo::with(&examples().join("design"));
    let s = server_for(&repo, &[]);

    let (st, h) = s.get(&s.viewer, "/v1/hosts/ams1-a01/resolved").await;
    assert_eq!(st, StatusCode::OK, "{h}");
    assert_eq!(h["name"], "ams1-a01");
    assert_eq!(h["site"], "ams1");
    assert_eq!(
        h["boot_profile"], "rocky9",
        "inherited from the base profile: {h}"
    );
    let (st, _) = s.get(&s.viewer, "/v1/hosts/nope/resolved").await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let (st, v) = s
        .get(&s.viewer, "/v1/hosts?racks=a&labels=canary%3Dtrue")
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["hosts"],
        json!(["ams1-a01"]),
        "intersection of rack a and the label"
    );
    let (_, v) = s.get(&s.viewer, "/v1/hosts?racks=a").await;
    let rack_a = v["hosts"].as_array().unwrap().clone();
    assert!(rack_a.len() > 1, "{v}");

    // A node filter as a run's targets is resolved at submit.
    let (st, run) = s
        .post(
            &s.operator,
            "/v1/runs",
            Some(json!({"workflow": "power_cycle", "targets": {"racks": ["a"], "mode": "intersection"}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{run}");
    assert_eq!(run["targets"], json!(rack_a));
    let (st, e) = s
        .post(
            &s.operator,
            "/v1/runs",
            Some(json!({"workflow": "power_cycle", "targets": {"racks": ["zz"]}})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");

    // Parameters are checked against the workflow's declarations.
    let (st, e) = s
        .post(
            &s.operator,
            "/v1/runs",
            Some(json!({"workflow": "provision", "targets": ["ams1-a01"],
                        "input": {"root_password": "hunter2", "colour": 1}})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("'root_password' is sensitive"), "{msg}");
    assert!(msg.contains("unknown parameter 'colour'"), "{msg}");
    assert!(
        !e.to_string().contains("hunter2"),
        "a secret was echoed: {e}"
    );
    let (st, run) = s
        .post(
            &s.operator,
            "/v1/runs",
            Some(json!({"workflow": "provision", "targets": ["ams1-a01"],
                        "input": {"root_password": {"env": "ROOT_PW"}}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{run}");
    assert_eq!(
        run["input"]["callback_timeout"], "30m",
        "defaults are filled: {run}"
    );
    assert_eq!(run["input"]["root_password"], json!({"env": "ROOT_PW"}));

    // The CLI shows a resolved host.
    let out = Command::new(BIN)
        .args(["design", "show", "host", "ams1-a01", "--server", &s.base])
        .env("LARIAT_TOKEN", &s.viewer)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("name: ams1-a01"), "{text}");
}

#[tokio::test]
async fn a_design_posted_for_validation_gets_every_finding() {
    let s = TestServer::start();
    let mut files = serde_json::Map::new();
    collect(&examples().join("broken/duplicate-mac"), "", &mut files);
    let (st, r) = s
        .post(
            &s.viewer,
            "/v1/designs/validate",
            Some(json!({ "files": files })),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["valid"], false);
    assert_eq!(r["errors"], 1);
    assert_eq!(r["findings"][0]["rule"], "duplicate-mac");

    // One YAML stream works too.
    let yaml = "kind: Site\nname: x\nspec: {id: x, agent_endpoint: http://a, dhcp_mode: server, boot_assets: http://b, colour: red}\n";
    let res = s
        .http
        .post(s.url("/v1/designs/validate"))
        .bearer_auth(&s.viewer)
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let r: Value = res.json().await.unwrap();
    let unknown = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "unknown-field")
        .unwrap_or_else(|| panic!("{r}"));
    assert!(
        unknown["message"].as_str().unwrap().contains("colour"),
        "{unknown}"
    );

    let res = s
        .http
        .post(s.url("/v1/designs/validate"))
        .bearer_auth(&s.viewer)
        .header("content-type", "text/plain")
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Without a repository, the design routes say so.
    let (st, e) = s.post(&s.admin, "/v1/designs/sync", None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--design-repo")
    );
}

fn collect(dir: &Path, prefix: &str, out: &mut serde_json::Map<String, Value>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if e.path().is_dir() {
            collect(&e.path(), &format!("{name}/"), out);
        } else {
            out.insert(name, json!(std::fs::read_to_string(e.path()).unwrap()));
        }
    }
}

#[test]
fn design_validate_exits_by_the_findings() {
    let ok = Command::new(BIN)
        .args(["design", "validate"])
        .arg(examples().join("design"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let bad = Command::new(BIN)
        .args(["design", "validate", "--json"])
        .arg(examples().join("broken/duplicate-mac"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(v["errors"], 1);
    assert_eq!(v["findings"][0]["rule"], "duplicate-mac");
    let missing = Command::new(BIN)
        .args(["design", "validate", "/nonexistent/dir"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/dir"));
}

#[tokio::test]
async fn a_pinned_site_is_provisioned_from_the_revision_it_is_pinned_to() {
    let repo = Repo::with(&examples().join("design"));
    let first = repo.git(&["rev-parse", "HEAD"]);
    let s = TestServer::start_with(&["--design-repo", repo.path()]);
    // The next commit protects ams1-a01.
    let second = repo
        .commit_example_edit(
            &s,
            "hosts/rack-a.yaml",
            "  labels: {canary: \"true\"}\n",
            "  labels: {canary: \"true\"}\n  never_provision: true\n",
            "protect ams1-a01",
        )
        .await;

    let provision = |key: &str| json!({"workflow": "provision", "targets": ["ams1-a01"], "idempotency_key": key});
    let id = s.submit(provision("unpinned")).await;
    let run = s.wait_step(&id, "validate_design", "failed").await;
    let err = api_support::step_of(&run, "validate_design")["error"].to_string();
    assert!(
        err.contains("host 'ams1-a01' is marked never_provision"),
        "{err}"
    );

    s.pin("ams1", Some(&first)).await;
    let id = s.submit(provision("pinned")).await;
    let run = s.wait_step(&id, "validate_design", "succeeded").await;
    let out = &api_support::step_of(&run, "validate_design")["output"];
    assert_eq!(
        out["revision"],
        format!("{first} (site ams1 pinned)"),
        "{out}"
    );
    assert_ne!(first, second);
    s.post(&s.operator, &format!("/v1/runs/{id}/cancel"), None)
        .await;
}
