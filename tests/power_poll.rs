//! `--power-poll`: every host's power read in the background from its BMC (here
//! `lariat-redfish-sim` BMCs, one on, one off, and one that does not answer), as runs of
//! the built-in `power-poll` workflow, folded into the inventory as observations only.

mod api_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use api_support::{PATIENCE, Repo, TestServer};
use lariat_redfish_sim::{ApplyTime, BmcSpec, RunningBmc, SimConfig};
use serde_json::Value;

const PASSWORD_ENV: &str = "LARIAT_POWER_POLL_PASSWORD";

fn spec(name: &str, on: bool) -> BmcSpec {
    BmcSpec {
        name: name.into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        username: "admin".into(),
        password: "poll-pass".into(),
        firmware: BTreeMap::from([("BMC".into(), "1.0".into())]),
        apply_time: ApplyTime::Immediate,
        task_duration: Duration::from_millis(100),
        reboot_mid_update: None,
        powered_on: on,
        fail_update: None,
    }
}

fn host(name: &str, url: &str) -> String {
    format!(
        "kind: Host\nname: {name}\nspec: {{site: lab, never_provision: true, hardware_profile: hw, bmc: {{type: redfish, address: \"{url}\", username: admin, credential: {{env: {PASSWORD_ENV}}}}}}}\n"
    )
}

async fn power_of(s: &TestServer, name: &str) -> Option<Value> {
    let (_, v) = s
        .get(&s.viewer, &format!("/v1/inventory/hosts/{name}"))
        .await;
    v.get("power").cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_power_poll_reads_every_bmc_and_the_inventory_shows_it_as_an_observation() {
    let bmcs: Vec<RunningBmc> = lariat_redfish_sim::start(SimConfig {
        bmcs: vec![spec("on", true), spec("off", false)],
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let design = [
        "kind: Site\nname: lab\nspec: {id: lab, agent_endpoint: \"https://agent.lab.example:8443\", dhcp_mode: server, boot_assets: \"http://10.0.0.5/assets\", timezone: UTC}\n".to_string(),
        "kind: HardwareProfile\nname: hw\nspec: {vendor: Sim, model: r1, boot_mode: uefi, pxe_interface: eth0}\n".to_string(),
        host("h-on", &bmcs[0].url()),
        host("h-off", &bmcs[1].url()),
        host("h-dead", "http://127.0.0.1:9"),
    ]
    .join("---\n");
    std::fs::write(dir.path().join("design.yaml"), design).unwrap();
    let repo = Repo::with(dir.path());
    // SAFETY: set before the server starts, which inherits it; nothing else reads it.
    unsafe { std::env::set_var(PASSWORD_ENV, "poll-pass") };
    let s = TestServer::start_with(&["--design-repo", repo.path(), "--power-poll", "1s"]);

    let deadline = Instant::now() + PATIENCE;
    let seen = loop {
        let seen = (
            power_of(&s, "h-on").await,
            power_of(&s, "h-off").await,
            power_of(&s, "h-dead").await,
        );
        if seen.0.is_some() && seen.1.is_some() && seen.2.is_some() {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "no power observed: {seen:?}\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(seen.0.as_ref().unwrap()["state"], "on", "{seen:?}");
    assert_eq!(seen.1.as_ref().unwrap()["state"], "off", "{seen:?}");
    assert_eq!(seen.2.as_ref().unwrap()["state"], "unreachable", "{seen:?}");
    assert_eq!(seen.0.as_ref().unwrap()["step"], "power_status");

    // An observation, not an action: no activity, no history, never busy, still new.
    let (_, h) = s.get(&s.viewer, "/v1/inventory/hosts/h-on").await;
    assert_eq!(h["state"], "new", "{h}");
    assert!(h.get("activity").is_none_or(Value::is_null), "{h}");
    assert_eq!(h["history"], serde_json::json!([]), "{h}");

    // Period after period, one run at a time, each succeeded even with a dead BMC.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, runs) = s.get(&s.viewer, "/v1/runs?workflow=power-poll").await;
    let runs = runs["runs"].as_array().unwrap();
    assert!(runs.len() >= 2, "{runs:?}");
    let running = runs.iter().filter(|r| r["status"] == "running").count();
    assert!(running <= 1, "{runs:?}");
    assert!(
        runs.iter()
            .all(|r| r["status"] == "succeeded" || r["status"] == "running"),
        "{runs:?}"
    );
    let first = runs.last().unwrap();
    assert_eq!(first["targets"].as_array().unwrap().len(), 3, "{first}");
}
