//! Redfish over HTTP(S) with reqwest: ComputerSystem.Reset (On / ForceOff /
//! GracefulShutdown), boot source override, UpdateService firmware inventory and
//! SimpleUpdate followed through its task.
//!
//! One HTTP request at a time per BMC (BMCs are small computers, and some answer 503 when
//! asked twice at once). Basic authentication on each request: no Redfish session is opened,
//! so none can be leaked. HTTPS needs this crate's `https` feature.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Mutex as AsyncMutex, OnceCell};

use crate::{
    Bmc, BmcError, BmcPool, BootDevice, BootMode, BootOverride, BootPersistence, BootSetting,
    FirmwareComponent, FirmwareUpdate, FirmwareUpdateOutcome, PowerState, RedfishConfig,
    SoftOffOutcome, soft_off_then_hard, wait_for_power,
};

/// The Redfish driver.
pub struct Redfish {
    config: RedfishConfig,
    base: String,
    client: reqwest::Client,
    system: OnceCell<String>,
    pool: BmcPool,
    lock: Arc<AsyncMutex<()>>,
}

/// One JSON answer: status, `Location` header, body (`Null` when empty).
struct Answer {
    status: StatusCode,
    location: Option<String>,
    body: Value,
}

impl Redfish {
    /// Checks the configuration and builds the HTTP client; does not contact the BMC.
    pub fn new(config: RedfishConfig, pool: BmcPool) -> Result<Self, BmcError> {
        let base = config.url.trim_end_matches('/').to_owned();
        let scheme_ok = base.starts_with("http://") || base.starts_with("https://");
        if !scheme_ok || base.len() <= "https://".len() {
            return Err(BmcError::Config(format!(
                "Redfish URL {:?} must start with http:// or https:// and name a host",
                config.url
            )));
        }
        if base.starts_with("https://") && !cfg!(feature = "https") {
            return Err(BmcError::Config(format!(
                "Redfish URL {base} is https, but lariat-bmc was built without its `https` feature"
            )));
        }
        let builder = reqwest::Client::builder()
            .timeout(config.timing.command_timeout)
            .connect_timeout(config.timing.command_timeout);
        #[cfg(feature = "https")]
        let builder = builder.danger_accept_invalid_certs(config.insecure_tls);
        let client = builder
            .build()
            .map_err(|e| BmcError::Config(format!("cannot build HTTP client for {base}: {e}")))?;
        let lock = pool.bmc_lock(&format!("redfish://{base}"));
        Ok(Redfish {
            config,
            base,
            client,
            system: OnceCell::new(),
            pool,
            lock,
        })
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    /// One request with basic auth, retried on connection failures (the request never
    /// reached the BMC) and, for GET only, on timeouts.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, BmcError> {
        let password = self.config.password.resolve()?;
        let url = self.url(path);
        let timing = &self.config.timing;
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            let sent = {
                let _turn = self.pool.turn(&self.lock).await;
                let mut req = self
                    .client
                    .request(method.clone(), &url)
                    .basic_auth(&self.config.username, Some(password.expose()))
                    .header("Accept", "application/json");
                if let Some(body) = body {
                    req = req.json(body);
                }
                match req.send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        let location = resp
                            .headers()
                            .get("Location")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        resp.bytes().await.map(|b| (status, location, b))
                    }
                    Err(e) => Err(e),
                }
            };
            match sent {
                Ok((status, location, bytes)) => {
                    let body = if bytes.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                            Value::String(String::from_utf8_lossy(&bytes).into_owned())
                        })
                    };
                    return Ok(Answer {
                        status,
                        location,
                        body,
                    });
                }
                Err(e) => {
                    let retry = e.is_connect() || (e.is_timeout() && method == Method::GET);
                    if retry && attempt < timing.retries {
                        attempt += 1;
                        tokio::time::sleep(timing.poll_interval.min(Duration::from_secs(1))).await;
                        continue;
                    }
                    let detail = format!("{method} {path}: {e} ({} attempts)", attempt + 1);
                    return Err(if e.is_timeout() {
                        BmcError::Timeout {
                            bmc: self.base.clone(),
                            after: start.elapsed(),
                            detail,
                        }
                    } else {
                        BmcError::Unreachable {
                            bmc: self.base.clone(),
                            detail,
                        }
                    });
                }
            }
        }
    }

    /// A request whose answer must be 2xx; other statuses become typed errors.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        operation: &'static str,
    ) -> Result<Answer, BmcError> {
        let answer = self.request(method.clone(), path, body).await?;
        if answer.status.is_success() {
            return Ok(answer);
        }
        let message = redfish_message(&answer.body);
        let detail = format!("{method} {path}: HTTP {}: {message}", answer.status);
        Err(match answer.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => BmcError::Auth {
                bmc: self.base.clone(),
                detail,
            },
            StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::NOT_IMPLEMENTED => BmcError::Unsupported {
                bmc: self.base.clone(),
                backend: "redfish",
                operation,
                detail,
            },
            _ => BmcError::Protocol {
                bmc: self.base.clone(),
                detail,
            },
        })
    }

    async fn get(&self, path: &str, operation: &'static str) -> Result<Value, BmcError> {
        Ok(self.call(Method::GET, path, None, operation).await?.body)
    }

    /// The ComputerSystem path, from the configuration or the only member of Systems.
    pub async fn system_path(&self) -> Result<String, BmcError> {
        self.system
            .get_or_try_init(|| async {
                if let Some(system) = &self.config.system {
                    return Ok(if system.starts_with('/') {
                        system.clone()
                    } else {
                        format!("/redfish/v1/Systems/{system}")
                    });
                }
                let systems = self.get("/redfish/v1/Systems", "list systems").await?;
                let members = members(&systems);
                match members.as_slice() {
                    [only] => Ok(only.clone()),
                    _ => Err(BmcError::Config(format!(
                        "{} lists {} systems ({}); set `system` in the BMC configuration",
                        self.base,
                        members.len(),
                        members.join(", ")
                    ))),
                }
            })
            .await
            .cloned()
    }

    async fn reset(&self, reset_type: &str) -> Result<(), BmcError> {
        let system = self.system_path().await?;
        let path = format!("{system}/Actions/ComputerSystem.Reset");
        self.call(
            Method::POST,
            &path,
            Some(&json!({ "ResetType": reset_type })),
            "ComputerSystem.Reset",
        )
        .await?;
        Ok(())
    }

    async fn power_to(&self, wanted: PowerState, reset_type: &str) -> Result<(), BmcError> {
        let start = Instant::now();
        if self.power_status().await? == wanted {
            return Ok(());
        }
        self.reset(reset_type).await?;
        let timing = &self.config.timing;
        wait_for_power(
            &self.base,
            wanted,
            timing.confirm_timeout.saturating_sub(start.elapsed()),
            timing.poll_interval,
            || self.power_status(),
        )
        .await
    }

    /// Follows a Task or TaskMonitor URI until the task ends or the task timeout passes.
    /// A task monitor answers 202 while running; a Task resource carries `TaskState`.
    pub async fn wait_task(&self, uri: &str) -> Result<FirmwareUpdateOutcome, BmcError> {
        let timing = &self.config.timing;
        let start = Instant::now();
        loop {
            let answer = self.request(Method::GET, uri, None).await?;
            let state = answer.body.get("TaskState").and_then(Value::as_str);
            let messages = task_messages(&answer.body);
            match (answer.status, state) {
                // 202: still running. 503: the BMC restarts while it applies the update,
                // as many do; the task goes on afterwards, so keep following it.
                (StatusCode::ACCEPTED | StatusCode::SERVICE_UNAVAILABLE, _) => {}
                (s, Some(state)) if s.is_success() => match state {
                    "Completed" => {
                        let status = answer.body.get("TaskStatus").and_then(Value::as_str);
                        if status == Some("Critical") {
                            return Err(self.task_failed(uri, "Completed/Critical", messages));
                        }
                        return Ok(FirmwareUpdateOutcome {
                            task: Some(uri.to_owned()),
                            state: state.to_owned(),
                            messages,
                        });
                    }
                    "Exception" | "Killed" | "Cancelled" | "Interrupted" => {
                        return Err(self.task_failed(uri, state, messages));
                    }
                    // New, Starting, Running, Pending, Suspended, Stopping, Cancelling, ...
                    _ => {}
                },
                // A task monitor that has finished answers with the operation's own result.
                (s, None) if s.is_success() => {
                    return Ok(FirmwareUpdateOutcome {
                        task: Some(uri.to_owned()),
                        state: "Completed".to_owned(),
                        messages,
                    });
                }
                (s, _) => {
                    return Err(BmcError::Protocol {
                        bmc: self.base.clone(),
                        detail: format!("task {uri}: HTTP {s}: {}", redfish_message(&answer.body)),
                    });
                }
            }
            if start.elapsed() >= timing.task_timeout {
                return Err(BmcError::Timeout {
                    bmc: self.base.clone(),
                    after: start.elapsed(),
                    detail: format!("task {uri} still {}", state.unwrap_or("running")),
                });
            }
            tokio::time::sleep(timing.poll_interval).await;
        }
    }

    fn task_failed(&self, uri: &str, state: &str, messages: Vec<String>) -> BmcError {
        BmcError::TaskFailed {
            bmc: self.base.clone(),
            task: uri.to_owned(),
            state: state.to_owned(),
            message: messages.join("; "),
        }
    }
}

fn members(collection: &Value) -> Vec<String> {
    collection
        .get("Members")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|e| e.get("@odata.id").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn task_messages(task: &Value) -> Vec<String> {
    task.get("Messages")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|e| e.get("Message").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The human part of a Redfish error body (`error.message`, or the first extended info).
fn redfish_message(body: &Value) -> String {
    let error = body.get("error");
    error
        .and_then(|e| e.get("@Message.ExtendedInfo"))
        .and_then(Value::as_array)
        .and_then(|infos| infos.iter().find_map(|i| i.get("Message")?.as_str()))
        .or_else(|| error.and_then(|e| e.get("message")).and_then(Value::as_str))
        .map(str::to_owned)
        .unwrap_or_else(|| match body {
            Value::Null => "(empty body)".to_owned(),
            Value::String(s) => s.chars().take(200).collect(),
            other => other.to_string().chars().take(200).collect(),
        })
}

fn parse_power(system: &Value) -> Option<PowerState> {
    match system.get("PowerState")?.as_str()? {
        "On" => Some(PowerState::On),
        "Off" => Some(PowerState::Off),
        "PoweringOn" | "PoweringOff" | "Paused" => Some(PowerState::Transitioning),
        _ => None,
    }
}

fn parse_boot(system: &Value) -> BootSetting {
    let boot = system.get("Boot");
    let field = |name: &str| {
        boot.and_then(|b| b.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let target = field("BootSourceOverrideTarget");
    let enabled = field("BootSourceOverrideEnabled");
    let mode = field("BootSourceOverrideMode");
    let device = match (enabled.as_deref(), target.as_deref()) {
        (Some("Disabled"), _) => None,
        (_, Some("Pxe")) => Some(BootDevice::Pxe),
        (_, Some("Hdd")) => Some(BootDevice::Disk),
        (_, Some("BiosSetup")) => Some(BootDevice::Bios),
        _ => None,
    };
    BootSetting {
        device,
        persistence: match enabled.as_deref() {
            Some("Once") => Some(BootPersistence::Once),
            Some("Continuous") => Some(BootPersistence::Persistent),
            _ => None,
        },
        mode: match mode.as_deref() {
            Some("UEFI") => Some(BootMode::Uefi),
            Some("Legacy") => Some(BootMode::Legacy),
            _ => None,
        },
        raw: format!(
            "{}/{}/{}",
            target.as_deref().unwrap_or("-"),
            enabled.as_deref().unwrap_or("-"),
            mode.as_deref().unwrap_or("-")
        ),
    }
}

#[async_trait]
impl Bmc for Redfish {
    fn describe(&self) -> String {
        format!(
            "redfish:{}",
            self.base
                .split_once("://")
                .map_or(self.base.as_str(), |(_, h)| h)
        )
    }

    async fn power_status(&self) -> Result<PowerState, BmcError> {
        let system = self.system_path().await?;
        let body = self.get(&system, "read power state").await?;
        parse_power(&body).ok_or_else(|| BmcError::Protocol {
            bmc: self.base.clone(),
            detail: format!(
                "{system}: PowerState is {}",
                body.get("PowerState")
                    .map_or("missing".to_owned(), Value::to_string)
            ),
        })
    }

    async fn power_on(&self) -> Result<(), BmcError> {
        self.power_to(PowerState::On, "On").await
    }

    async fn power_off(&self) -> Result<(), BmcError> {
        self.power_to(PowerState::Off, "ForceOff").await
    }

    async fn soft_off(&self, grace: Duration) -> Result<SoftOffOutcome, BmcError> {
        soft_off_then_hard(self, grace, self.config.timing.poll_interval, || {
            self.reset("GracefulShutdown")
        })
        .await
    }

    async fn set_boot_device(&self, boot: BootOverride) -> Result<(), BmcError> {
        let system = self.system_path().await?;
        let target = match boot.device {
            BootDevice::Pxe => "Pxe",
            BootDevice::Disk => "Hdd",
            BootDevice::Bios => "BiosSetup",
        };
        let enabled = match boot.persistence {
            BootPersistence::Once => "Once",
            BootPersistence::Persistent => "Continuous",
        };
        let mode = match boot.mode {
            BootMode::Uefi => "UEFI",
            BootMode::Legacy => "Legacy",
        };
        let body = json!({ "Boot": {
            "BootSourceOverrideTarget": target,
            "BootSourceOverrideEnabled": enabled,
            "BootSourceOverrideMode": mode,
        }});
        self.call(Method::PATCH, &system, Some(&body), "boot override")
            .await?;
        Ok(())
    }

    async fn boot_device(&self) -> Result<BootSetting, BmcError> {
        let system = self.system_path().await?;
        Ok(parse_boot(&self.get(&system, "read boot override").await?))
    }

    async fn firmware_inventory(&self) -> Result<Vec<FirmwareComponent>, BmcError> {
        let service = self
            .get("/redfish/v1/UpdateService", "firmware inventory")
            .await?;
        let path = service
            .get("FirmwareInventory")
            .and_then(|f| f.get("@odata.id"))
            .and_then(Value::as_str)
            .ok_or_else(|| BmcError::Unsupported {
                bmc: self.base.clone(),
                backend: "redfish",
                operation: "firmware inventory",
                detail: "UpdateService has no FirmwareInventory".to_owned(),
            })?
            .to_owned();
        let collection = self.get(&path, "firmware inventory").await?;
        let mut components = Vec::new();
        for member in members(&collection) {
            let item = self.get(&member, "firmware inventory").await?;
            let text = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_owned);
            components.push(FirmwareComponent {
                id: text("Id").unwrap_or_else(|| member.clone()),
                name: text("Name").unwrap_or_default(),
                version: text("Version").unwrap_or_default(),
                updateable: item.get("Updateable").and_then(Value::as_bool),
            });
        }
        Ok(components)
    }

    async fn firmware_update(
        &self,
        update: &FirmwareUpdate,
    ) -> Result<FirmwareUpdateOutcome, BmcError> {
        let service = self
            .get("/redfish/v1/UpdateService", "firmware update")
            .await?;
        let target = service
            .pointer("/Actions/#UpdateService.SimpleUpdate/target")
            .and_then(Value::as_str)
            .unwrap_or("/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate")
            .to_owned();
        let mut body = json!({ "ImageURI": update.image_uri });
        if let Some(protocol) = &update.transfer_protocol {
            body["TransferProtocol"] = json!(protocol);
        }
        if !update.targets.is_empty() {
            body["Targets"] = json!(update.targets);
        }
        let answer = self
            .call(Method::POST, &target, Some(&body), "SimpleUpdate")
            .await?;
        let task = answer.location.clone().or_else(|| {
            answer
                .body
                .get("TaskState")
                .and(answer.body.get("@odata.id"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        match task {
            Some(task) => self.wait_task(&task).await,
            None => Ok(FirmwareUpdateOutcome {
                task: None,
                state: "accepted".to_owned(),
                messages: task_messages(&answer.body),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_fields() {
        let s = json!({"Boot": {"BootSourceOverrideTarget": "Pxe",
            "BootSourceOverrideEnabled": "Once", "BootSourceOverrideMode": "UEFI"}});
        let b = parse_boot(&s);
        assert_eq!(b.device, Some(BootDevice::Pxe));
        assert_eq!(b.persistence, Some(BootPersistence::Once));
        assert_eq!(b.mode, Some(BootMode::Uefi));
        let off = json!({"Boot": {"BootSourceOverrideTarget": "Pxe",
            "BootSourceOverrideEnabled": "Disabled"}});
        assert_eq!(parse_boot(&off).device, None);
    }

    #[test]
    fn error_message_prefers_extended_info() {
        let body = json!({"error": {"message": "general",
            "@Message.ExtendedInfo": [{"Message": "specific"}]}});
        assert_eq!(redfish_message(&body), "specific");
        assert_eq!(redfish_message(&json!({"error": {"message": "m"}})), "m");
        assert_eq!(redfish_message(&Value::Null), "(empty body)");
    }

    #[test]
    fn bad_urls_are_config_errors() {
        let cfg = |url: &str| RedfishConfig {
            url: url.to_owned(),
            system: None,
            username: "u".to_owned(),
            password: crate::CredentialRef::Env("X".to_owned()),
            insecure_tls: false,
            timing: Default::default(),
        };
        assert!(matches!(
            Redfish::new(cfg("ftp://x"), BmcPool::new(1)),
            Err(BmcError::Config(_))
        ));
        assert!(Redfish::new(cfg("http://10.0.0.5/"), BmcPool::new(1)).is_ok());
    }
}
