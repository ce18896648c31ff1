//! `stage_assets` against a real HTTP origin (axum + tower-http's ServeDir, which honours
//! Range requests): fresh downloads, a resumed partial download, a cached file with the
//! wrong checksum, an origin serving the wrong bytes, and assets nobody can fetch.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use lariat_engine::StepError;
use lariat_steps::provision::StageAssets;
use lariat_steps::{CurrentDesign, FixedDesign, Provisioning};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The requests the origin saw: path and Range header.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

async fn origin(dir: &Path) -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new()
        .fallback_service(tower_http::services::ServeDir::new(dir))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let log = log.clone();
                async move {
                    let range = req
                        .headers()
                        .get("range")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    log.lock()
                        .unwrap()
                        .push((req.uri().path().to_string(), range));
                    next.run(req).await
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A design with one host whose boot profile lists `assets` (YAML flow mappings).
fn design(assets: &[String]) -> Arc<FixedDesign> {
    let yaml = format!(
        "kind: BootProfile\nname: bp\nspec:\n  kernel: k/vmlinuz\n  assets:\n{}\n---\nkind: Host\nname: h1\nspec: {{boot_profile: bp}}\n",
        assets
            .iter()
            .map(|a| format!("    - {a}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let loaded = lariat_workflows::design::load_files(&[("d.yaml".into(), yaml)]);
    Arc::new(FixedDesign(CurrentDesign {
        revision: Some("test".into()),
        loaded: Arc::new(loaded),
    }))
}

async fn stage(p: Provisioning) -> Result<Value, StepError> {
    common::finished(
        &StageAssets(Arc::new(p)),
        common::attempt(None, &["h1"], Value::Null, 1),
    )
    .await
}

#[tokio::test]
async fn downloads_resumes_and_replaces_until_every_checksum_matches() {
    let served = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let kernel: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let initrd: Vec<u8> = (0..120_000u32).map(|i| (i % 13) as u8).collect();
    std::fs::create_dir_all(served.path().join("k")).unwrap();
    std::fs::write(served.path().join("k/vmlinuz"), &kernel).unwrap();
    std::fs::write(served.path().join("k/initrd.img"), &initrd).unwrap();
    let (addr, seen) = origin(served.path()).await;
    let assets = vec![
        // From the agent's origin, by path.
        format!("{{path: k/vmlinuz, sha256: {}}}", sha(&kernel)),
        // From its own URL.
        format!(
            "{{path: k/initrd.img, sha256: {}, url: 'http://{addr}/k/initrd.img'}}",
            sha(&initrd)
        ),
    ];
    let p = || {
        Provisioning::new(design(&assets))
            .with_asset_cache(cache.path().to_path_buf())
            .with_asset_origin(format!("http://{addr}/"))
    };

    // Fresh: both fetched, whole.
    let out = stage(p()).await.unwrap();
    let status: Vec<&str> = out["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["downloaded", "downloaded"], "{out}");
    assert_eq!(
        std::fs::read(cache.path().join("k/vmlinuz")).unwrap(),
        kernel
    );
    assert_eq!(
        std::fs::read(cache.path().join("k/initrd.img")).unwrap(),
        initrd
    );
    assert_eq!(seen.lock().unwrap().len(), 2);

    // Again: nothing to do, nothing fetched.
    let out = stage(p()).await.unwrap();
    assert_eq!(out["assets"][0]["status"], "present", "{out}");
    assert_eq!(out["assets"][1]["status"], "present", "{out}");
    assert_eq!(seen.lock().unwrap().len(), 2);

    // A download cut off halfway resumes with a Range request.
    std::fs::remove_file(cache.path().join("k/vmlinuz")).unwrap();
    std::fs::write(cache.path().join("k/vmlinuz.part"), &kernel[..100_000]).unwrap();
    let out = stage(p()).await.unwrap();
    assert_eq!(out["assets"][1]["status"], "resumed", "{out}");
    assert_eq!(out["assets"][1]["resumed_from"], 100_000);
    assert_eq!(
        seen.lock().unwrap().last().unwrap(),
        &("/k/vmlinuz".to_string(), Some("bytes=100000-".to_string()))
    );
    assert_eq!(
        std::fs::read(cache.path().join("k/vmlinuz")).unwrap(),
        kernel
    );
    assert!(!cache.path().join("k/vmlinuz.part").exists());

    // A cached file that went bad is fetched again.
    std::fs::write(cache.path().join("k/initrd.img"), b"bit rot").unwrap();
    let out = stage(p()).await.unwrap();
    assert_eq!(out["assets"][0]["status"], "replaced", "{out}");
    assert_eq!(
        std::fs::read(cache.path().join("k/initrd.img")).unwrap(),
        initrd
    );
}

#[tokio::test]
async fn wrong_bytes_and_missing_assets_fail_naming_the_asset() {
    let served = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    std::fs::write(served.path().join("vmlinuz"), b"not the kernel").unwrap();
    let (addr, _) = origin(served.path()).await;
    let want = sha(b"the kernel");

    // The origin serves other bytes: fatal, and nothing is left in the cache.
    let p = Provisioning::new(design(&[format!("{{path: vmlinuz, sha256: {want}}}")]))
        .with_asset_cache(cache.path().to_path_buf())
        .with_asset_origin(format!("http://{addr}"));
    let e = stage(p).await.unwrap_err();
    assert_eq!(
        (e.kind.as_str(), e.retryable),
        ("checksum_mismatch", false),
        "{e}"
    );
    assert!(
        e.message.contains("asset 'vmlinuz'") && e.message.contains(&want),
        "{e}"
    );
    assert!(std::fs::read_dir(cache.path()).unwrap().next().is_none());

    // Not on the origin.
    let p = Provisioning::new(design(&[format!("{{path: gone/vmlinuz, sha256: {want}}}")]))
        .with_asset_cache(cache.path().to_path_buf())
        .with_asset_origin(format!("http://{addr}"));
    let e = stage(p).await.unwrap_err();
    assert_eq!(e.kind, "asset_missing", "{e}");
    assert!(e.message.contains("404"), "{e}");

    // Nowhere to fetch it from.
    let p = Provisioning::new(design(&[format!("{{path: vmlinuz, sha256: {want}}}")]))
        .with_asset_cache(cache.path().to_path_buf());
    let e = stage(p).await.unwrap_err();
    assert_eq!(e.kind, "asset_missing", "{e}");
    assert!(e.message.contains("--asset-origin"), "{e}");

    // Without a cache there is nothing to stage: nodes fetch from the site's asset URL.
    let p = Provisioning::new(design(&[format!("{{path: vmlinuz, sha256: {want}}}")]));
    let out = stage(p).await.unwrap();
    assert_eq!(out["skipped"], true, "{out}");
}
