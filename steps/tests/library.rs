//! Every built-in workflow compiles against the built-in actions, and the templates'
//! parameters and fan-outs are what an operator reads in the YAML.

use lariat_engine::model::{ItemSource, compile};

fn actions() -> lariat_engine::Actions {
    let mut a = lariat_engine::Actions::new();
    lariat_steps::register_builtin(&mut a);
    a
}

#[test]
fn every_builtin_compiles() {
    let actions = actions();
    for b in lariat_workflows::LIBRARY {
        let (text, format) = b.definition().unwrap_or_else(|e| panic!("{}: {e}", b.name));
        let wf = compile(&text, format, 1, &actions).unwrap_or_else(|e| panic!("{}: {e}", b.name));
        assert_eq!(wf.name, b.name);
        wf.def
            .parameters()
            .unwrap_or_else(|e| panic!("{}: {e}", b.name));
    }
}

#[test]
fn provision_fans_out_per_host_after_the_shared_steps() {
    let b = lariat_workflows::LIBRARY
        .iter()
        .find(|b| b.name == "provision")
        .expect("provision is built in");
    let (text, format) = b.definition().unwrap();
    let wf = compile(&text, format, 1, &actions()).unwrap();
    let names: Vec<&str> = wf.def.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "validate_design",
            "stage_assets",
            "power_off",
            "set_pxe",
            "boot",
            "await_callback",
            "verify"
        ]
    );
    for s in &wf.def.steps {
        let per_host = s
            .for_each
            .as_ref()
            .is_some_and(|f| f.over == ItemSource::Targets && f.max_failures == 0);
        let shared = matches!(s.name.as_str(), "validate_design" | "stage_assets");
        assert_eq!(per_host, !shared, "{}", s.name);
    }
    let params = wf.def.parameters().unwrap();
    assert!(params.0["root_password"].sensitive);
    let filled = params.apply(&serde_json::json!({})).unwrap();
    assert_eq!(filled["callback_timeout"], "30m");
}

#[test]
fn firmware_upgrade_works_only_inside_its_window() {
    let b = lariat_workflows::LIBRARY
        .iter()
        .find(|b| b.name == "firmware_upgrade")
        .expect("firmware_upgrade is built in");
    let (text, format) = b.definition().unwrap();
    let wf = compile(&text, format, 1, &actions()).unwrap();
    for s in wf.def.steps.iter().filter(|s| s.name != "validate_design") {
        assert_eq!(
            s.window.as_ref().map(|w| w.name.as_str()),
            Some("firmware"),
            "{}",
            s.name
        );
    }
    let params = wf.def.parameters().unwrap();
    let err = params.apply(&serde_json::json!({})).unwrap_err();
    assert!(err.to_string().contains("'image_url' is required"), "{err}");
}
