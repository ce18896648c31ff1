//! The simulator as operators and scripts run it: one process, a configuration file,
//! one JSON line per BMC on stdout.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

struct Sim(std::process::Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn one_process_serves_every_bmc_of_its_configuration() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/rack.example.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lariat-redfish-sim"))
        .args(["--config", config])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let _sim = Sim(child);
    let mut lines = BufReader::new(out).lines();
    let http = reqwest::Client::new();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let line = lines.next().expect("a line per BMC").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let url = v["url"].as_str().unwrap();
        let system: serde_json::Value = http
            .get(format!("{url}/redfish/v1/Systems/1"))
            .basic_auth("admin", Some("admin"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(system["Name"], v["name"], "{system}");
        // Every link of the service root resolves, and the root is the same each time.
        let root = || async {
            http.get(format!("{url}/redfish/v1"))
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        };
        let first = root().await;
        assert_eq!(first, root().await, "the service root is stable");
        for link in ["Systems", "UpdateService", "TaskService"] {
            let path = first[link]["@odata.id"].as_str().unwrap();
            let r = http
                .get(format!("{url}{path}"))
                .basic_auth("admin", Some("admin"))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
        }
        seen.push((
            v["name"].as_str().unwrap().to_string(),
            system["PowerState"].clone(),
        ));
    }
    assert_eq!(
        seen,
        vec![
            ("ams1-a01".to_string(), serde_json::json!("On")),
            ("ams1-a02".to_string(), serde_json::json!("On")),
            ("ams1-b01".to_string(), serde_json::json!("Off")),
        ]
    );
}

#[test]
fn a_bad_configuration_is_refused_with_the_field_named() {
    let dir = std::env::temp_dir().join(format!("redfish-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"bmcs": [{"name": "x", "apply_time": "Later"}]}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lariat-redfish-sim"))
        .args(["--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Later") && err.contains("Immediate"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
