//! `stage_assets`: the boot profile's files into the site's asset cache.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use lariat_engine::{Action, Output, StepContext, StepError};
use lariat_workflows::design::Asset;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::Provisioning;

/// Downloads every asset named by the boot profiles of the run's hosts (or of its one
/// host, when fanned out) into the asset cache, and checks each against its sha256.
///
/// Safe to repeat: a file already in the cache with the right checksum is left alone; a
/// partial download (`NAME.part`) is resumed with a Range request; a cached file with the
/// wrong checksum is replaced. A file is renamed into place only once its checksum
/// matches, so the boot service never serves half a kernel.
pub struct StageAssets(pub Arc<Provisioning>);

#[async_trait]
impl Action for StageAssets {
    async fn run(&self, ctx: StepContext) -> Result<Output, StepError> {
        let Some(cache) = self.0.asset_cache.clone() else {
            return Ok(Output::done(json!({
                "skipped": true,
                "reason": "this agent has no boot asset cache (--boot-assets): nodes fetch assets from the site's boot_assets URL",
            })));
        };
        let hosts: Vec<String> = match &ctx.item {
            Some(Value::String(h)) => vec![h.clone()],
            _ => ctx.targets.iter().cloned().collect(),
        };
        // Every asset once, even when many hosts share a boot profile.
        let mut assets: BTreeMap<String, Asset> = BTreeMap::new();
        for name in &hosts {
            let current = self.0.for_host(name).await?;
            let design = &current.loaded.design;
            let host = design
                .resolved_host(name)
                .map_err(|e| StepError::fatal("design", format!("host '{name}': {e}")))?;
            let profile_name = host.boot_profile.as_deref().ok_or_else(|| {
                StepError::fatal("design", format!("host '{name}' has no boot profile"))
            })?;
            let profile = design.boot_profile(profile_name).ok_or_else(|| {
                StepError::fatal(
                    "design",
                    format!("host '{name}': boot profile '{profile_name}' is not in the design"),
                )
            })?;
            for a in &profile.spec.assets {
                assets.insert(a.path.clone(), a.clone());
            }
        }
        let mut staged = Vec::with_capacity(assets.len());
        for asset in assets.values() {
            if ctx.cancel.is_cancelled() {
                return Err(StepError::retryable("cancelled", "staging stopped"));
            }
            staged.push(self.stage(&cache, asset, &ctx).await?);
        }
        Ok(Output::done(json!({"cache": cache, "assets": staged})))
    }
}

impl StageAssets {
    async fn stage(
        &self,
        cache: &Path,
        asset: &Asset,
        ctx: &StepContext,
    ) -> Result<Value, StepError> {
        let dest = cache_path(cache, &asset.path)?;
        let lock = {
            let mut map = self.0.staging.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(map.entry(dest.clone()).or_default())
        };
        let _one_at_a_time = lock.lock().await;
        let want = asset.sha256.0.as_str();
        let mut replaced = false;
        if dest.exists() {
            if sha256_file(&dest).await? == want {
                return Ok(json!({"path": asset.path, "status": "present"}));
            }
            tracing::warn!(path = %dest.display(), "cached asset has the wrong checksum; fetching it again");
            remove(&dest).await?;
            replaced = true;
        }
        let url = match (&asset.url, &self.0.asset_origin) {
            (Some(u), _) => u.clone(),
            (None, Some(origin)) => format!("{origin}/{}", asset.path.trim_start_matches('/')),
            (None, None) => {
                return Err(StepError::fatal(
                    "asset_missing",
                    format!(
                        "asset '{}' is not in the cache ({}) and has no url to fetch it from: give it a url in the boot profile, or start the agent with --asset-origin",
                        asset.path,
                        dest.display()
                    ),
                ));
            }
        };
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io_error(dir, e))?;
        }
        let part = dest.with_file_name(format!(
            "{}.part",
            dest.file_name().and_then(|n| n.to_str()).unwrap_or("asset")
        ));
        let resumed_from = self.download(&url, &part, ctx).await?;
        let got = sha256_file(&part).await?;
        if got != want {
            remove(&part).await?;
            let msg = format!(
                "asset '{}' from {url}: sha256 {got}, the boot profile says {want}",
                asset.path
            );
            // A resumed file may have been spliced from two versions: start over once.
            return Err(if resumed_from > 0 {
                StepError::retryable("checksum_mismatch", msg)
            } else {
                StepError::fatal("checksum_mismatch", msg)
            });
        }
        tokio::fs::rename(&part, &dest)
            .await
            .map_err(|e| io_error(&dest, e))?;
        let status = match (resumed_from > 0, replaced) {
            (true, _) => "resumed",
            (false, true) => "replaced",
            (false, false) => "downloaded",
        };
        Ok(json!({"path": asset.path, "status": status, "url": url, "resumed_from": resumed_from}))
    }

    /// Fetches `url` into `part`, continuing from its current length. Returns that length.
    async fn download(&self, url: &str, part: &Path, ctx: &StepContext) -> Result<u64, StepError> {
        let have = tokio::fs::metadata(part)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let mut req = self.0.http.get(url);
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let fetch_err = |e: reqwest::Error| StepError::retryable("download", format!("{url}: {e}"));
        let mut resp = req.send().await.map_err(fetch_err)?;
        let status = resp.status();
        let (mut file, from) = match status.as_u16() {
            206 => (open(part, true).await?, have),
            200 => (open(part, false).await?, 0),
            // The partial file is already whole; the checksum decides.
            416 if have > 0 => return Ok(have),
            404 | 410 => {
                return Err(StepError::fatal(
                    "asset_missing",
                    format!("{url}: HTTP {status}"),
                ));
            }
            _ => {
                return Err(StepError::retryable(
                    "download",
                    format!("{url}: HTTP {status}"),
                ));
            }
        };
        loop {
            let chunk = tokio::select! {
                c = resp.chunk() => c.map_err(fetch_err)?,
                _ = ctx.cancel.cancelled() => {
                    // What arrived stays in the .part file for the next attempt.
                    let _ = file.flush().await;
                    return Err(StepError::retryable("cancelled", format!("{url}: download stopped")));
                }
            };
            let Some(chunk) = chunk else { break };
            file.write_all(&chunk)
                .await
                .map_err(|e| io_error(part, e))?;
        }
        file.flush().await.map_err(|e| io_error(part, e))?;
        file.sync_all().await.map_err(|e| io_error(part, e))?;
        Ok(from)
    }
}

/// `cache/path`, refusing paths that would leave the cache.
fn cache_path(cache: &Path, path: &str) -> Result<PathBuf, StepError> {
    let rel = Path::new(path.trim_start_matches('/'));
    if path.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(StepError::fatal(
            "bad_asset_path",
            format!("asset path '{path}' must be relative to the asset base, without '..'"),
        ));
    }
    Ok(cache.join(rel))
}

async fn open(path: &Path, append: bool) -> Result<tokio::fs::File, StepError> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
        .await
        .map_err(|e| io_error(path, e))
}

async fn remove(path: &Path) -> Result<(), StepError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(path, e)),
    }
}

async fn sha256_file(path: &Path) -> Result<String, StepError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&p)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok::<_, std::io::Error>(
            h.finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        )
    })
    .await
    .map_err(|e| StepError::retryable("io", format!("checksum of {}: {e}", path.display())))?
    .map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, e: std::io::Error) -> StepError {
    StepError::retryable("io", format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_paths_stay_inside_the_cache() {
        let c = Path::new("/srv/assets");
        assert_eq!(
            cache_path(c, "node/vmlinuz").unwrap(),
            Path::new("/srv/assets/node/vmlinuz")
        );
        assert_eq!(
            cache_path(c, "/node/vmlinuz").unwrap(),
            Path::new("/srv/assets/node/vmlinuz")
        );
        for bad in ["../etc/passwd", "node/../../x", "", "./x"] {
            let e = cache_path(c, bad).unwrap_err();
            assert_eq!(e.kind, "bad_asset_path", "{bad}");
        }
    }
}
