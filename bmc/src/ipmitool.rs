//! IPMI over LAN through `ipmitool -I lanplus -C <suite, 3 by default>` processes, behind the same trait, for
//! BMCs the native driver cannot talk to. The password goes to ipmitool in the
//! `IPMI_PASSWORD` environment variable (`-E`), never on its command line, where any local
//! user could read it in `/proc`.
//!
//! ipmitool opens and closes one session per run. It runs with `-v` so its stderr says why
//! a session failed (`RAKP 2 HMAC is invalid` vs `Get Auth Capabilities error`); stdout stays
//! the command's own output.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::process::Command;
use tokio::sync::Mutex as AsyncMutex;

use crate::ipmi::commands::parse_boot_flags_response;
use crate::{
    Bmc, BmcError, BmcPool, BootDevice, BootMode, BootOverride, BootPersistence, BootSetting,
    FirmwareComponent, FirmwareUpdate, FirmwareUpdateOutcome, IpmiConfig, PowerState,
    SoftOffOutcome, completion_meaning, soft_off_then_hard, wait_for_power,
};

/// The ipmitool-process driver.
pub struct Ipmitool {
    config: IpmiConfig,
    name: String,
    program: String,
    pool: BmcPool,
    lock: Arc<AsyncMutex<()>>,
}

impl Ipmitool {
    /// Checks the configuration; does not run ipmitool.
    pub fn new(config: IpmiConfig, pool: BmcPool, program: String) -> Result<Self, BmcError> {
        crate::ipmi::validate(&config)?;
        let name = format!("{}:{}", config.address, config.port);
        // Same key as the native driver: both talk to the same BMC.
        let lock = pool.bmc_lock(&format!("ipmi://{name}"));
        Ok(Ipmitool {
            config,
            name,
            program,
            pool,
            lock,
        })
    }

    /// Runs one ipmitool command; returns its stdout.
    async fn exec(&self, what: &'static str, args: &[&str]) -> Result<String, BmcError> {
        let _turn = self.pool.turn(&self.lock).await;
        let password = self.config.password.resolve()?;
        let timing = &self.config.timing;
        let per_try = timing.command_timeout.as_secs().max(1);
        let port = self.config.port.to_string();
        let per_try_s = per_try.to_string();
        let suite = self.config.cipher_suite.to_string();
        // ipmitool's -R counts tries, not retries, and takes 0 to mean its default (4).
        let retries = (timing.retries + 1).to_string();
        let mut cmd = Command::new(&self.program);
        cmd.args([
            "-v",
            "-I",
            "lanplus",
            "-C",
            &suite,
            "-H",
            &self.config.address,
        ])
        .args(["-p", &port, "-U", &self.config.username, "-E"])
        .args(["-N", &per_try_s, "-R", &retries])
        .args(args)
        .env("IPMI_PASSWORD", password.expose())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        // ipmitool's own retries bound each exchange; a session is a handful of them.
        let limit = Duration::from_secs(per_try * (u64::from(timing.retries) + 1) * 6 + 5);
        let start = Instant::now();
        let child = cmd.spawn().map_err(|e| {
            BmcError::Config(format!(
                "cannot run {} for {}: {e}",
                self.program, self.name
            ))
        })?;
        let output = match tokio::time::timeout(limit, child.wait_with_output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                return Err(BmcError::Protocol {
                    bmc: self.name.clone(),
                    detail: format!("waiting for ipmitool ({what}): {e}"),
                });
            }
            Err(_) => {
                return Err(BmcError::Timeout {
                    bmc: self.name.clone(),
                    after: start.elapsed(),
                    detail: format!("ipmitool ({what}) did not finish; killed"),
                });
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(classify(&self.name, what, start.elapsed(), &stderr))
    }

    async fn status(&self) -> Result<PowerState, BmcError> {
        let out = self
            .exec("chassis power status", &["chassis", "power", "status"])
            .await?;
        parse_power(&out).ok_or_else(|| BmcError::Protocol {
            bmc: self.name.clone(),
            detail: format!("unexpected `chassis power status` output: {}", out.trim()),
        })
    }

    async fn power_to(&self, wanted: PowerState) -> Result<(), BmcError> {
        let start = Instant::now();
        if self.status().await? == wanted {
            return Ok(());
        }
        let verb = if wanted == PowerState::On {
            "on"
        } else {
            "off"
        };
        self.exec("chassis power", &["chassis", "power", verb])
            .await?;
        let timing = &self.config.timing;
        wait_for_power(
            &self.name,
            wanted,
            timing.confirm_timeout.saturating_sub(start.elapsed()),
            timing.poll_interval,
            || self.status(),
        )
        .await
    }
}

fn parse_power(out: &str) -> Option<PowerState> {
    let line = out.lines().find(|l| l.contains("Chassis Power is"))?;
    match line.rsplit(' ').next()?.trim() {
        "on" => Some(PowerState::On),
        "off" => Some(PowerState::Off),
        _ => None,
    }
}

/// Bytes of a `raw` command's output (hex pairs separated by spaces and newlines).
fn parse_hex(out: &str) -> Option<Vec<u8>> {
    out.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect()
}

/// Turns ipmitool's stderr into an error kind.
fn classify(bmc: &str, what: &str, after: Duration, stderr: &str) -> BmcError {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("Loading IANA")
                && !l.starts_with("Running Get VSO")
                && !l.starts_with("Invalid completion code received: Invalid command")
        })
        .collect();
    let text = lines.join("; ");
    let has = |needle: &str| stderr.contains(needle);
    if has("RAKP 2 HMAC is invalid")
        || has("unauthorized name")
        || has("RAKP 4 message has invalid integrity check")
        || has("invalid user name")
        || has("RAKP 2 message indicates an error")
    {
        return BmcError::Auth {
            bmc: bmc.to_owned(),
            detail: text,
        };
    }
    if has("Get Auth Capabilities error") || has("No response from remote controller") {
        return BmcError::Timeout {
            bmc: bmc.to_owned(),
            after,
            detail: format!("ipmitool ({what}): {text}"),
        };
    }
    // `raw` failures carry the completion code: "... rsp=0xcc): Invalid data field".
    if let Some(pos) = stderr.find("rsp=0x") {
        let hex: String = stderr[pos + 6..].chars().take(2).collect();
        if let Ok(code) = u8::from_str_radix(&hex, 16) {
            return BmcError::Completion {
                bmc: bmc.to_owned(),
                command: "ipmitool raw",
                code,
                meaning: completion_meaning(code),
            };
        }
    }
    if has("Insufficient privilege level") {
        return BmcError::Completion {
            bmc: bmc.to_owned(),
            command: "ipmitool",
            code: 0xD4,
            meaning: completion_meaning(0xD4),
        };
    }
    BmcError::Protocol {
        bmc: bmc.to_owned(),
        detail: format!("ipmitool ({what}) failed: {text}"),
    }
}

#[async_trait]
impl Bmc for Ipmitool {
    fn describe(&self) -> String {
        format!("ipmitool://{}", self.name)
    }

    async fn power_status(&self) -> Result<PowerState, BmcError> {
        self.status().await
    }

    async fn power_on(&self) -> Result<(), BmcError> {
        self.power_to(PowerState::On).await
    }

    async fn power_off(&self) -> Result<(), BmcError> {
        self.power_to(PowerState::Off).await
    }

    async fn soft_off(&self, grace: Duration) -> Result<SoftOffOutcome, BmcError> {
        soft_off_then_hard(self, grace, self.config.timing.poll_interval, || async {
            self.exec("chassis power soft", &["chassis", "power", "soft"])
                .await
                .map(|_| ())
        })
        .await
    }

    async fn set_boot_device(&self, boot: BootOverride) -> Result<(), BmcError> {
        let device = match boot.device {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
            BootDevice::Bios => "bios",
        };
        let mut options = Vec::new();
        if boot.persistence == BootPersistence::Persistent {
            options.push("persistent");
        }
        if boot.mode == BootMode::Uefi {
            options.push("efiboot");
        }
        let options = format!("options={}", options.join(","));
        let mut args = vec!["chassis", "bootdev", device];
        if options != "options=" {
            args.push(&options);
        }
        let out = self.exec("chassis bootdev", &args).await?;
        if !out.contains("Set Boot Device to") {
            return Err(BmcError::Protocol {
                bmc: self.name.clone(),
                detail: format!("unexpected `chassis bootdev` output: {}", out.trim()),
            });
        }
        Ok(())
    }

    async fn boot_device(&self) -> Result<BootSetting, BmcError> {
        // raw rather than `chassis bootparam get 5`, whose wording changes between ipmitool
        // versions; the bytes are the same ones the native driver parses.
        let out = self
            .exec(
                "Get System Boot Options",
                &["raw", "0x00", "0x09", "0x05", "0x00", "0x00"],
            )
            .await?;
        let bytes = parse_hex(&out).ok_or_else(|| BmcError::Protocol {
            bmc: self.name.clone(),
            detail: format!("ipmitool raw output is not hex: {}", out.trim()),
        })?;
        parse_boot_flags_response(&bytes).map_err(|e| BmcError::Protocol {
            bmc: self.name.clone(),
            detail: e.0,
        })
    }

    async fn firmware_inventory(&self) -> Result<Vec<FirmwareComponent>, BmcError> {
        let out = self.exec("Get Device ID", &["raw", "0x06", "0x01"]).await?;
        let bytes = parse_hex(&out).unwrap_or_default();
        let id = ipmi_rs::app::DeviceId::from_data(&bytes).ok_or_else(|| BmcError::Protocol {
            bmc: self.name.clone(),
            detail: format!("cannot parse Get Device ID: {}", out.trim()),
        })?;
        Ok(vec![FirmwareComponent {
            id: "bmc".to_owned(),
            name: format!(
                "BMC (manufacturer {}, product {:#06x}, IPMI {}.{})",
                id.manufacturer_id, id.product_id, id.major_version, id.minor_version
            ),
            version: format!("{}.{:02}", id.major_fw_revision, id.minor_fw_revision),
            updateable: None,
        }])
    }

    async fn firmware_update(
        &self,
        _update: &FirmwareUpdate,
    ) -> Result<FirmwareUpdateOutcome, BmcError> {
        Err(BmcError::Unsupported {
            bmc: self.name.clone(),
            backend: "ipmitool",
            operation: "firmware update",
            detail:
                "IPMI has no standard firmware update over LAN; use this host's Redfish service"
                    .to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_lines() {
        assert_eq!(parse_power("Chassis Power is on\n"), Some(PowerState::On));
        assert_eq!(parse_power("Chassis Power is off\n"), Some(PowerState::Off));
        assert_eq!(parse_power("garbage"), None);
    }

    #[test]
    fn hex_output() {
        assert_eq!(
            parse_hex(" 01 05 00 04 00 00 00\n"),
            Some(vec![1, 5, 0, 4, 0, 0, 0])
        );
        assert_eq!(parse_hex("Error"), None);
    }

    #[test]
    fn stderr_classes() {
        let d = Duration::from_secs(1);
        let auth = classify(
            "b",
            "x",
            d,
            "Loading IANA PEN Registry...\n> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session\n",
        );
        assert!(matches!(auth, BmcError::Auth { .. }), "{auth}");
        let gone = classify(
            "b",
            "x",
            d,
            "Get Auth Capabilities error\nError issuing Get Channel Authentication Capabilities request\n",
        );
        assert!(matches!(gone, BmcError::Timeout { .. }), "{gone}");
        let cc = classify(
            "b",
            "x",
            d,
            "Unable to send RAW command (channel=0x0 netfn=0x0 lun=0x0 cmd=0x9 rsp=0xcc): Invalid data field in request\n",
        );
        assert!(
            matches!(cc, BmcError::Completion { code: 0xCC, .. }),
            "{cc}"
        );
    }
}
