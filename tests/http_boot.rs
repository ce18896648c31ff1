//! HTTP boot through the real binary: the iPXE script a node gets with and without a
//! provisioning step waiting for it, its one-time token, metadata, unattended file, the
//! state callback that moves the run on, and boot assets with Range requests.

mod api_support;

use api_support::{Repo, TestServer, examples};
use reqwest::StatusCode;
use serde_json::{Value, json};

const MAC: &str = "52:54:00:77:01:01";
const HOST: &str = "ams1-a01";

/// The boot half of `provision`: wait for each host's callback.
const AWAIT_BOOT: &str = "name: await-boot
steps:
  - {name: await_callback, action: await_callback, for_each: {over: targets}, timeout: 10m}
";

fn server(repo: &Repo) -> TestServer {
    TestServer::start_with(&["--design-repo", repo.path(), "--http-boot"])
}

async fn script(s: &TestServer, mac: &str) -> (StatusCode, String) {
    let res = s
        .http
        .get(s.url(&format!("/boot/ipxe?mac={mac}")))
        .send()
        .await
        .unwrap();
    (res.status(), res.text().await.unwrap())
}

async fn post_state(s: &TestServer, token: &str, body: &Value) -> (StatusCode, Value) {
    let res = s
        .http
        .post(s.url("/v1/state"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let st = res.status();
    (st, res.json().await.unwrap_or(Value::Null))
}

/// Registers `await-boot`, submits it for `targets`, and waits until the step waits for
/// `HOST`'s callback. Returns the run id.
async fn boot_run(s: &TestServer, targets: &[&str]) -> String {
    s.register(AWAIT_BOOT).await;
    let id = s
        .submit(json!({"workflow": "await-boot", "targets": targets}))
        .await;
    s.wait_run(&id, "await_callback waiting", |v| {
        item(v, "await_callback", HOST)["status"] == "waiting"
    })
    .await;
    id
}

async fn metadata(s: &TestServer, token: &str) -> Value {
    let res = s
        .http
        .get(s.url(&format!("/v1/metadata?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

fn token_in(script: &str) -> String {
    script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("lariat.token="))
        .unwrap_or_else(|| panic!("no token in {script}"))
        .to_string()
}

/// A fan-out item of a step; `Null` before the fan-out starts.
fn item<'a>(run: &'a Value, step: &str, host: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == step))
        .and_then(|s| s["items"].as_array())
        .and_then(|items| items.iter().find(|i| i["item_value"] == host))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn a_node_boots_its_profile_only_while_a_step_waits_and_its_callback_is_one_time() {
    let repo = Repo::with(&examples().join("design"));
    let s = server(&repo);

    // Nothing waits for the node: local disk. Unknown and malformed MACs too.
    let (st, text) = script(&s, MAC).await;
    assert_eq!(st, StatusCode::OK);
    assert!(text.contains("booting from local disk"), "{text}");
    assert!(
        text.contains(&format!("no provisioning step waits for host {HOST}")),
        "{text}"
    );
    let (_, text) = script(&s, "52:54:00:00:00:99").await;
    assert!(
        text.contains("no host of the design has this MAC"),
        "{text}"
    );
    let (st, _) = script(&s, "not-a-mac").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // A run waits for the node's callback. (The provision workflow would first drive the
    // hosts' BMCs, which this design points at addresses nobody answers: provision_e2e
    // covers that part.)
    let id = boot_run(&s, &[HOST, "ams1-a02"]).await;

    let (st, text) = script(&s, "52-54-00-77-01-01").await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        text.contains(&format!("# lariat: provision {HOST} for run {id}")),
        "{text}"
    );
    assert!(
        text.contains("kernel http://10.77.0.5/assets/rocky/9.4/vmlinuz inst.repo="),
        "the kernel comes from the site's asset base: {text}"
    );
    assert!(
        text.contains("initrd --name initrd.img http://10.77.0.5/assets/rocky/9.4/initrd.img"),
        "{text}"
    );
    assert!(
        text.contains("console=ttyS0,115200n8"),
        "the profile's kernel params: {text}"
    );
    assert!(
        text.contains(&format!("lariat.callback={}/v1/state", s.base)),
        "{text}"
    );
    let token = token_in(&text);

    // The token opens the node's metadata and unattended file, and is not used up by them.
    let meta = metadata(&s, &token).await;
    assert_eq!(meta["host"]["name"], HOST);
    assert_eq!(meta["run"], json!(id));
    let res = s
        .http
        .get(s.url("/boot/unattended"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let ks = res.text().await.unwrap();
    assert!(ks.contains(&format!("network --hostname={HOST}")), "{ks}");

    // Wrong tokens change nothing.
    let report = json!({"state": "installed", "facts": {"macs": [MAC], "memory_mib": 65536}});
    for bad in ["nt_wrong", "", "x"] {
        let (st, _) = post_state(&s, bad, &report).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "token {bad:?}");
    }
    let res = s
        .http
        .post(s.url("/v1/state"))
        .json(&report)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let run = s.run(&id).await;
    assert_eq!(item(&run, "await_callback", HOST)["status"], "waiting");
    let (st, e) = post_state(&s, &token, &json!({"state": 5})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");

    // The right token delivers the report once.
    let (st, v) = post_state(&s, &token, &report).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let run = s
        .wait_run(&id, "await_callback succeeded", |v| {
            item(v, "await_callback", HOST)["status"] == "succeeded"
        })
        .await;
    let out = &item(&run, "await_callback", HOST)["output"];
    assert_eq!(out["state"], "installed");
    assert_eq!(out["facts"]["memory_mib"], 65536);
    let (st, _) = post_state(&s, &token, &report).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "a used token must be refused");
    let (st, _) = s
        .get(&s.viewer, &format!("/v1/metadata?token={token}"))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // The other host's callback finishes the run.
    let (_, text) = script(&s, "52:54:00:77:02:01").await;
    let (st, _) = post_state(&s, &token_in(&text), &report).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    s.wait_status(&id, "succeeded").await;

    // Once provisioned, the node boots its disk again.
    let (_, text) = script(&s, MAC).await;
    assert!(text.contains("booting from local disk"), "{text}");
    let events = s.events(&id).await;
    assert!(
        events
            .iter()
            .any(|e| e["data"]["actor"]["who"] == format!("node {HOST}")),
        "the callback is recorded as the node's: {events:#?}"
    );
}

#[tokio::test]
async fn boot_assets_are_served_with_ranges_and_every_boot_route_is_documented() {
    let repo = Repo::with(&examples().join("design"));
    let s = server(&repo);
    let assets = {
        let mut p = s.db.as_os_str().to_owned();
        p.push(".assets");
        std::path::PathBuf::from(p)
    };
    std::fs::create_dir_all(assets.join("debian")).unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(assets.join("debian/vmlinuz"), &data).unwrap();

    let res = s
        .http
        .get(s.url("/boot/assets/debian/vmlinuz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap().as_ref(), &data[..]);

    let res = s
        .http
        .get(s.url("/boot/assets/debian/vmlinuz"))
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.bytes().await.unwrap().as_ref(), &data[1000..2000]);

    // The boot routes are in the document of the listener that serves them.
    let (status, doc) = s.get(&s.viewer, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    for (path, method) in [
        ("/boot/ipxe", "get"),
        ("/boot/assets/{path}", "get"),
        ("/boot/unattended", "get"),
        ("/v1/metadata", "get"),
        ("/v1/state", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{path} {method}");
    }
    assert!(doc["paths"]["/v1/runs"]["post"].is_object());

    for path in [
        "/boot/assets/../lariat.db",
        "/boot/assets/%2e%2e/lariat.db",
        "/boot/assets/nope",
    ] {
        let res = s.http.get(s.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn a_pinned_sites_node_gets_its_script_and_metadata_from_the_pinned_revision() {
    let repo = Repo::with(&examples().join("design"));
    let first = repo.git(&["rev-parse", "HEAD"]);
    let s = server(&repo);
    // The next commit relabels the host.
    repo.commit_example_edit(
        &s,
        "hosts/rack-a.yaml",
        "labels: {canary: \"true\"}",
        "labels: {canary: \"later\"}",
        "relabel ams1-a01",
    )
    .await;
    s.pin("ams1", Some(&first)).await;

    boot_run(&s, &[HOST]).await;
    let (_, text) = script(&s, MAC).await;
    let token = token_in(&text);
    let meta = metadata(&s, &token).await;
    assert_eq!(meta["host"]["labels"]["canary"], "true", "{meta}");
    // Unpinned, the same node sees the active design.
    s.pin("ams1", None).await;
    let meta = metadata(&s, &token).await;
    assert_eq!(meta["host"]["labels"]["canary"], "later", "{meta}");
}

#[tokio::test]
async fn a_node_finds_its_run_among_more_than_a_thousand_live_ones() {
    let repo = Repo::with(&examples().join("design"));
    let s = server(&repo);
    let id = boot_run(&s, &[HOST]).await;
    s.register("name: hold\nsteps:\n  - {name: wait, action: await_signal, timeout: 1h}\n")
        .await;
    // Newer live runs than any page of the run list holds.
    let hold: Vec<_> = (0..1100)
        .map(|_| s.submit(json!({"workflow": "hold"})))
        .collect();
    futures::future::join_all(hold).await;
    let (st, text) = script(&s, MAC).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        text.contains(&format!("# lariat: provision {HOST} for run {id}")),
        "{text}"
    );
}

#[tokio::test]
async fn a_node_token_ends_with_its_step_and_a_flood_of_boot_requests_is_slowed() {
    let repo = Repo::with(&examples().join("design"));
    let s = server(&repo);
    let id = boot_run(&s, &[HOST]).await;
    let (_, text) = script(&s, MAC).await;
    let token = token_in(&text);
    assert_eq!(metadata(&s, &token).await["host"]["name"], HOST);

    // Bad reports are refused by what is wrong, and change nothing.
    let huge = "x".repeat(300 << 10);
    for (body, want, needle) in [
        (json!({"state": "in stalled"}), 400, "`state`"),
        (json!({"state": ""}), 400, "`state`"),
        (
            json!({"state": "installed", "facts": [1, 2]}),
            400,
            "`facts`",
        ),
        (
            json!({"state": "installed", "facts": {"blob": huge}}),
            413,
            "",
        ),
    ] {
        let (st, v) = post_state(&s, &token, &body).await;
        assert_eq!(st.as_u16(), want, "{v}");
        assert!(v.to_string().contains(needle), "{v}");
    }
    let run = s.run(&id).await;
    assert_eq!(item(&run, "await_callback", HOST)["status"], "waiting");

    // The step ends without the node (the run is cancelled): its token opens nothing.
    let (st, v) = s
        .post(&s.operator, &format!("/v1/runs/{id}/cancel"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    s.wait_status(&id, "cancelled").await;
    let (st, v) = s
        .get(&s.viewer, &format!("/v1/metadata?token={token}"))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let res = s
        .http
        .get(s.url("/boot/unattended"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let (st, _) = post_state(&s, &token, &json!({"state": "installed"})).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // One client asking far more than a node boots with is slowed down, and may ask
    // again a second later.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut codes = Vec::new();
    for _ in 0..40 {
        let res = s
            .http
            .get(s.url(&format!("/boot/ipxe?mac={MAC}")))
            .send()
            .await
            .unwrap();
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(res.headers()["retry-after"], "1");
        }
        codes.push(res.status().as_u16());
    }
    let slowed = codes.iter().filter(|&&c| c == 429).count();
    assert!(slowed >= 15, "{codes:?}");
    assert!(codes[..20].iter().all(|&c| c == 200), "{codes:?}");
    // Boot assets are not counted.
    let res = s.http.get(s.url("/boot/assets/none")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (st, _) = script(&s, MAC).await;
    assert_eq!(st, StatusCode::OK);
}
