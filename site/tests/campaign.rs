//! A firmware campaign end to end at a site: twelve hosts in three racks, each behind its
//! own `lariat-redfish-sim` BMC, upgraded by the site's real provisioning actions under
//! `max_per: {rack: 1}` inside a window of the design. The window closes mid-campaign and
//! the rest waits for its next opening; one host's BMC fails the flash, and the run stops
//! for an operator with that host named. The engine runs by a clock shifted to just
//! before the window opens; the window opens every minute, for twelve seconds.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use std::time::Duration;
use support::Fixed;

use axum::Router;
use axum::routing::get;
use lariat_db::Clock;
use lariat_engine::{
    Actor, Engine, EngineConfig, Format, NewRun, RunStatus, Scheduling, StepStatus,
};
use lariat_redfish_sim::{ApplyTime, BmcSpec, RunningBmc, SimConfig};
use lariat_site::{CurrentDesign, DesignWindows, ProvisioningConfig, SiteDesign};
use lariat_workflows::design::load_files;
use lariat_workflows::windows::utc_ms;
use tokio::sync::watch;

const PASSWORD_ENV: &str = "LARIAT_CAMPAIGN_BMC_PASSWORD";
const OPEN_FOR_MS: i64 = 12_000;
const CUTOFF_MS: i64 = 4_500;

const WORKFLOW: &str = r#"
name: campaign
steps:
  - {name: validate_design, action: validate_design}
  - name: upgrade
    action: firmware_upgrade
    needs: [validate_design]
    input: {image_url: "IMAGE", component: BMC}
    for_each: {over: targets, max_parallel: 5, max_per: {rack: 1}}
    window: {name: firmware, cutoff: 4500ms}
    timeout: 2m
    retry: {max_attempts: 1}
"#;

fn host_name(rack: usize, n: usize) -> String {
    format!("r{rack}-h{n}")
}

#[tokio::test]
async fn a_rolling_campaign_pauses_at_the_close_resumes_at_the_next_opening_and_stops_at_a_failed_flash()
 {
    // The image the BMCs fetch, served as a site's asset server would.
    let app = Router::new().route(
        "/bmc-1.80.bin",
        get(|| async { "component=BMC\nversion=1.80\n" }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let image = format!("http://{}/bmc-1.80.bin", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });

    // Twelve BMCs; the last host of rack 3 fails its flash.
    let failing = host_name(3, 4);
    let mut specs = Vec::new();
    let mut order = Vec::new();
    for n in 1..=4 {
        for rack in 1..=3 {
            let name = host_name(rack, n);
            specs.push(BmcSpec {
                name: name.clone(),
                listen: "127.0.0.1:0".parse().unwrap(),
                username: "admin".into(),
                password: "campaign".into(),
                firmware: BTreeMap::from([("BMC".into(), "1.70".into())]),
                apply_time: ApplyTime::OnReset,
                task_duration: Duration::from_millis(3_500),
                reboot_mid_update: None,
                powered_on: true,
                fail_update: (name == failing)
                    .then(|| "Flash write failed at block 0x1f00.".to_string()),
            });
            order.push(name);
        }
    }
    let bmcs: BTreeMap<String, RunningBmc> = lariat_redfish_sim::start(SimConfig { bmcs: specs })
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.name.clone(), b))
        .collect();
    // SAFETY: set once, before anything reads it.
    unsafe { std::env::set_var(PASSWORD_ENV, "campaign") };

    let mut yaml = String::from(
        "kind: Site\nname: s1\nspec: {id: s1, agent_endpoint: \"https://agent.s1.example:8443\", dhcp_mode: server, boot_assets: \"http://10.77.0.5/assets\"}\n---\nkind: HardwareProfile\nname: hw\nspec: {vendor: Sim, model: r1, boot_mode: uefi, pxe_interface: eth0, firmware: {BMC: \"1.80\"}}\n---\nkind: MaintenanceWindow\nname: firmware\nspec: {cron: \"* * * * *\", duration: 12s}\n",
    );
    for (name, b) in &bmcs {
        let rack = &name[..2];
        yaml.push_str(&format!(
            "---\nkind: Host\nname: {name}\nspec: {{site: s1, rack: {rack}, hardware_profile: hw, never_provision: true, bmc: {{type: redfish, address: \"{}\", username: admin, credential: {{env: {PASSWORD_ENV}}}}}}}\n",
            b.url()
        ));
    }
    let loaded = load_files(&[("d.yaml".into(), yaml)]);
    let errors: Vec<_> = loaded.report.errors().collect();
    assert!(errors.is_empty(), "{errors:?}");
    let (tx, _) = watch::channel(CurrentDesign {
        revision: Some("r1".into()),
        loaded: Arc::new(loaded),
    });
    let design = Arc::new(Fixed(tx));

    let opens = utc_ms(2027, 6, 1, 1, 0, 0);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(dir.path().join("site.db"));
    cfg.clock = Clock::starting_at(opens - 2_000);
    let actions = lariat_site::actions(
        design.clone(),
        &ProvisioningConfig {
            asset_cache: None,
            asset_origin: None,
            bmc_max_in_flight: 16,
        },
    );
    let gate = DesignWindows::new();
    let engine = Engine::start_with(cfg, actions, Scheduling::of(gate.clone()))
        .await
        .unwrap();
    let _follow = gate.follow(design.clone() as Arc<dyn SiteDesign>, engine.clone());
    engine
        .register_workflow(&WORKFLOW.replace("IMAGE", &image), Format::Yaml)
        .await
        .unwrap();
    let run = engine
        .submit(
            NewRun {
                workflow: "campaign".into(),
                targets: order.clone(),
                ..Default::default()
            },
            Actor::system(),
        )
        .await
        .unwrap()
        .run_id;

    let row = lariat_engine::wait_for_status(
        &engine,
        run,
        &[RunStatus::Failed, RunStatus::Succeeded],
        Duration::from_secs(150),
    )
    .await
    .unwrap();
    assert_eq!(row.status, RunStatus::Failed, "{row:?}");
    let error = row.error.clone().unwrap_or_default();
    assert!(
        error.contains(&failing) && error.contains("Flash write failed"),
        "the run names the host that failed and why: {error}"
    );

    let view = engine.run_view(run).await.unwrap();
    let items = &view.step("upgrade").unwrap().items;
    let second = opens + 60_000;
    let mut per_opening = [0, 0];
    let mut spans: Vec<(String, i64, i64)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let host = &order[i];
        let r = &item.row;
        let started = r
            .started_at
            .unwrap_or_else(|| panic!("{host} never started: {r:?}"));
        let opening = if started < second { opens } else { second };
        assert!(
            started >= opening && started <= opening + OPEN_FOR_MS - CUTOFF_MS,
            "{host} started {} ms into its opening, past the cutoff",
            started - opening
        );
        per_opening[usize::from(opening == second)] += 1;
        spans.push((host[..2].to_string(), started, r.ended_at.unwrap()));
        if *host == failing {
            assert_eq!(r.status, StepStatus::Failed, "{r:?}");
            assert_eq!(bmcs[host].versions()["BMC"], "1.70");
        } else {
            assert_eq!(r.status, StepStatus::Succeeded, "{host}: {r:?}");
            assert_eq!(bmcs[host].versions()["BMC"], "1.80", "{host}");
            assert_eq!(bmcs[host].boots(), 1, "{host} was power cycled once");
            assert!(bmcs[host].powered_on(), "{host} is left on");
        }
    }
    assert!(
        per_opening[0] > 0 && per_opening[1] > 0,
        "the window closed mid-campaign and the rest started at its next opening: {per_opening:?}"
    );
    // One host per rack at a time, from update to check.
    for (rack, a_start, a_end) in &spans {
        let overlapping = spans
            .iter()
            .filter(|(r, s, e)| r == rack && s < a_end && e > a_start)
            .count();
        assert_eq!(
            overlapping, 1,
            "two hosts of rack {rack} upgraded at once: {spans:?}"
        );
    }
    println!(
        "campaign: {} hosts in the first opening, {} in the second",
        per_opening[0], per_opening[1]
    );
}
