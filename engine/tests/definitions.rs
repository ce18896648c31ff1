//! Definitions: parsing, validation with petgraph, and versioning.
mod common;

use common::Harness;
use lariat_engine::{EngineError, Format, Problem};

async fn reject(h: &Harness, text: &str, format: Format) -> Vec<Problem> {
    match h.engine.register_workflow(text, format).await {
        Err(EngineError::Definition(d)) => d.problems,
        other => panic!("expected a definition error, got {other:?}"),
    }
}

#[tokio::test]
async fn valid_yaml_and_json_register() {
    let h = Harness::new().await;
    let yaml = r#"
name: provision
steps:
  - name: validate
    action: noop
  - name: stage
    action: noop
    needs: [validate]
    retry: {max_attempts: 5, initial_backoff: 100ms, multiplier: 1.5, max_backoff: 2s, jitter: 0.2, retry_on: [transient]}
    timeout: 30s
  - name: power_off
    action: record
    needs: [stage]
    for_each: {over: targets, max_parallel: 4, max_failures: 1}
    window: fw
    compensation: {action: noop, input: {state: on}}
"#;
    let r = h
        .engine
        .register_workflow(yaml, Format::Yaml)
        .await
        .unwrap();
    assert_eq!(
        (r.name.as_str(), r.version, r.created),
        ("provision", 1, true)
    );
    let json = r#"{"name": "j", "steps": [{"name": "a", "action": "noop"}]}"#;
    let r = h
        .engine
        .register_workflow(json, Format::Json)
        .await
        .unwrap();
    assert_eq!(r.version, 1);
    let wf = h.engine.workflow("provision", None).await.unwrap();
    assert_eq!(wf.topo.len(), 3);
    assert_eq!(wf.def.steps[1].retry.max_attempts, 5);
}

#[tokio::test]
async fn same_definition_keeps_version_and_change_makes_new_one() {
    let h = Harness::new().await;
    let v1 = "name: w\nsteps:\n  - {name: a, action: noop}\n";
    let same_in_other_words = "name: w\nsteps:\n  - action: noop\n    name: a\n";
    let v2 =
        "name: w\nsteps:\n  - {name: a, action: noop}\n  - {name: b, action: noop, needs: [a]}\n";
    let r1 = h.engine.register_workflow(v1, Format::Yaml).await.unwrap();
    let r1b = h
        .engine
        .register_workflow(same_in_other_words, Format::Yaml)
        .await
        .unwrap();
    assert_eq!((r1b.version, r1b.created), (1, false));
    let r2 = h.engine.register_workflow(v2, Format::Yaml).await.unwrap();
    assert_eq!((r1.version, r2.version, r2.created), (1, 2, true));
    let versions = h.engine.workflow_versions("w").await.unwrap();
    assert_eq!(versions.len(), 2);
}

#[tokio::test]
async fn cycle_names_every_step_in_it() {
    let h = Harness::new().await;
    let yaml = r#"
name: loop
steps:
  - {name: start, action: noop}
  - {name: a, action: noop, needs: [start, c]}
  - {name: b, action: noop, needs: [a]}
  - {name: c, action: noop, needs: [b]}
  - {name: self, action: noop, needs: [self]}
"#;
    let problems = reject(&h, yaml, Format::Yaml).await;
    let cycles: Vec<Vec<String>> = problems
        .iter()
        .filter_map(|p| match p {
            Problem::Cycle { steps } => Some(steps.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(cycles.len(), 2, "{problems:?}");
    let big = cycles
        .iter()
        .find(|c| c.len() == 4)
        .expect("a -> b -> c -> a");
    for s in ["a", "b", "c"] {
        assert!(big.contains(&s.to_string()), "{big:?} names {s}");
    }
    assert_eq!(
        big.first(),
        big.last(),
        "the path closes on itself: {big:?}"
    );
    assert!(!big.contains(&"start".to_string()));
    assert!(cycles.iter().any(|c| c == &["self", "self"]));
    let text = EngineError::Definition(lariat_engine::DefinitionError { problems }).to_string();
    assert!(
        text.contains("a -> b -> c -> a")
            || text.contains("b -> c -> a -> b")
            || text.contains("c -> a -> b -> c"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_dependency_duplicate_and_unknown_action_name_the_step() {
    let h = Harness::new().await;
    let yaml = r#"
name: bad
steps:
  - {name: a, action: noop}
  - {name: a, action: noop}
  - {name: b, action: noop, needs: [ghost]}
  - {name: c, action: teleport}
  - {name: d, action: noop, compensation: {action: unpower}}
"#;
    let problems = reject(&h, yaml, Format::Yaml).await;
    assert!(
        problems.contains(&Problem::DuplicateStep { step: "a".into() }),
        "{problems:?}"
    );
    assert!(problems.contains(&Problem::UnknownDependency {
        step: "b".into(),
        needs: "ghost".into()
    }));
    assert!(problems.contains(&Problem::UnknownAction {
        step: "c".into(),
        action: "teleport".into()
    }));
    assert!(problems.contains(&Problem::UnknownAction {
        step: "d".into(),
        action: "unpower".into()
    }));
}

#[tokio::test]
async fn bad_retry_values_are_rejected_per_step() {
    let h = Harness::new().await;
    let yaml = r#"
name: retries
steps:
  - {name: zero, action: noop, retry: {max_attempts: 0}}
  - {name: huge, action: noop, retry: {max_attempts: 1000}}
  - {name: shrink, action: noop, retry: {multiplier: 0.5}}
  - {name: jitter, action: noop, retry: {jitter: 2}}
  - {name: backwards, action: noop, retry: {initial_backoff: 10s, max_backoff: 1s}}
  - {name: dur, action: noop, retry: {initial_backoff: soon}}
"#;
    let problems = reject(&h, yaml, Format::Yaml).await;
    let steps: Vec<String> = problems
        .iter()
        .map(|p| match p {
            Problem::InvalidRetry { step, .. } => step.clone(),
            Problem::Field { step, .. } => step.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    for s in ["zero", "huge", "shrink", "jitter", "backwards", "'dur'"] {
        assert!(
            steps.iter().any(|x| x == s),
            "{s} missing from {problems:?}"
        );
    }
    let dur = problems
        .iter()
        .find(|p| matches!(p, Problem::Field { .. }))
        .unwrap();
    assert!(dur.to_string().contains("invalid duration 'soon'"), "{dur}");
}

#[tokio::test]
async fn unknown_fields_and_malformed_text() {
    let h = Harness::new().await;
    let typo = "name: t\nsteps:\n  - {name: a, action: noop, retires: 3}\n";
    let problems = reject(&h, typo, Format::Yaml).await;
    let msg = problems[0].to_string();
    assert!(
        msg.contains("'a'") && msg.contains("unknown field `retires`"),
        "{msg}"
    );

    let top = "name: t\nsteps: []\nowner: me\n";
    let problems = reject(&h, top, Format::Yaml).await;
    assert!(
        problems[0].to_string().contains("unknown field `owner`"),
        "{problems:?}"
    );

    let problems = reject(&h, "name: [unclosed", Format::Yaml).await;
    assert!(matches!(&problems[0], Problem::Syntax { format, .. } if format == "YAML"));
    let problems = reject(&h, "{\"name\": ", Format::Json).await;
    assert!(matches!(&problems[0], Problem::Syntax { format, .. } if format == "JSON"));
    let problems = reject(&h, "- just\n- a list\n", Format::Yaml).await;
    assert!(problems[0].to_string().contains("must be a mapping"));
    let problems = reject(&h, "name: t\nsteps: []\n", Format::Yaml).await;
    assert!(problems[0].to_string().contains("has no steps"));
    let problems = reject(
        &h,
        "name: 'bad name!'\nsteps: [{name: a, action: noop}]\n",
        Format::Yaml,
    )
    .await;
    assert!(problems[0].to_string().contains("may only contain"));

    // Nothing was stored by any of the rejected definitions.
    assert!(h.engine.workflows().await.unwrap().is_empty());
}

#[tokio::test]
async fn fan_out_and_window_fields_are_checked() {
    let h = Harness::new().await;
    let yaml = r#"
name: f
steps:
  - {name: a, action: noop, for_each: {over: somewhere}}
  - {name: b, action: noop, for_each: {over: targets, max_parallel: 0}}
  - {name: c, action: noop, window: "has space"}
  - {name: d, action: noop, timeout: 0s}
  - {name: e, action: noop, window: {name: fw, cutoff: 45 minutes please}}
  - {name: f, action: noop, window: {name: fw, cutoff: 2h}, timeout: 1h}
  - {name: g, action: noop, window: 5}
  - {name: h, action: noop, for_each: {over: targets, max_per: {rack: 0}}}
  - {name: i, action: noop, for_each: {over: targets, max_per: {" ": 1}}}
"#;
    let problems = reject(&h, yaml, Format::Yaml).await;
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("'a'") && t.contains("for_each.over")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("step 'b'") && t.contains("max_parallel")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("step 'h'") && t.contains("max_per.rack must be at least 1")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("step 'i'") && t.contains("max_per has an empty key")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("step 'c'") && t.contains("window name")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("step 'd'") && t.contains("timeout")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("'e'") && t.contains("45 minutes please")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("step 'f'") && t.contains("window.cutoff (2h) is longer")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("'g'") && t.contains("window must be a name")),
        "{text:?}"
    );
}

/// A bare window name keeps its text: definitions written before cutoffs keep their
/// version when registered again.
#[tokio::test]
async fn a_window_without_cutoff_is_written_back_as_a_name() {
    let h = Harness::new().await;
    let yaml = "name: w\nsteps:\n  - {name: a, action: noop, window: fw}\n  - {name: b, action: noop, window: {name: fw, cutoff: 5m}}\n";
    let v1 = h
        .engine
        .register_workflow(yaml, Format::Yaml)
        .await
        .unwrap();
    let stored = h.engine.workflow("w", Some(v1.version)).await.unwrap();
    let def = serde_json::to_value(&stored.def).unwrap();
    assert_eq!(def["steps"][0]["window"], "fw", "{def}");
    assert_eq!(def["steps"][1]["window"]["cutoff"], "5m", "{def}");
    let v2 = h
        .engine
        .register_workflow(yaml, Format::Yaml)
        .await
        .unwrap();
    assert_eq!((v2.version, v2.created), (v1.version, false));
}

#[tokio::test]
async fn latest_version_is_compiled_once_and_shared() {
    let h = Harness::new().await;
    h.register("name: w\nsteps:\n  - {name: a, action: noop}\n")
        .await;
    let a = h.engine.workflow("w", None).await.unwrap();
    let b = h.engine.workflow("w", None).await.unwrap();
    let c = h.engine.workflow("w", Some(1)).await.unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b) && std::sync::Arc::ptr_eq(&a, &c));
    h.register("name: w\nsteps:\n  - {name: a, action: noop}\n  - {name: b, action: noop}\n")
        .await;
    let d = h.engine.workflow("w", None).await.unwrap();
    assert_eq!(
        (d.version, d.def.steps.len()),
        (2, 2),
        "a new version is picked up"
    );
    let err = h.engine.workflow("nope", None).await.unwrap_err();
    assert!(err.to_string().contains("unknown workflow 'nope'"), "{err}");
}
