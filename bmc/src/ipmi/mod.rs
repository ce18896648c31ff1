//! Native IPMI over LAN: RMCP+ (lanplus) sessions from ipmi-rs 0.6, with the chassis,
//! boot-option and session commands it lacks ([`commands`]).
//!
//! Each trait call is one session: open, Set Session Privilege Level (Administrator), the
//! commands, Close Session. ipmi-rs is blocking, so a session runs on a tokio blocking
//! thread, one at a time per BMC, and at most [`BmcPool::capacity`] at once.
//!
//! # Cipher suites
//!
//! ipmi-rs 0.6 always proposes cipher suite 3 (RAKP-HMAC-SHA1 authentication,
//! HMAC-SHA1-96 integrity, AES-CBC-128 confidentiality) and has no way to choose another;
//! its RAKP and integrity code has `todo!()` for the MD5 and SHA-256 algorithms. So this
//! driver speaks suite 3 only; IPMI 2.0 requires BMCs to support it. Measured against
//! ipmi_sim (OpenIPMI 2.0.33) with ipmitool 1.8.19, `-C N`:
//!
//! - 0 (no authentication), 1, 2 (no encryption), 3 and 6 (no encryption): work. Suites 0-2
//!   and 6 send commands without confidentiality (0 and 1 without integrity either): keep
//!   them disabled on real BMCs.
//! - 7, 8 (HMAC-MD5): the RAKP exchange passes, then Set Session Privilege Level fails and
//!   ipmitool's Close Session fails too, leaving a session open on the simulator.
//! - 11, 12 (MD5-128 integrity): ipmitool itself aborts (assertion in lanplus.c).
//! - 15, 16, 17 (HMAC-SHA256): ipmi_sim refuses the session. Suite 17 is what newer BMCs
//!   prefer and some allow nothing else; for such a host use the ipmitool backend until
//!   ipmi-rs grows SHA-256 (`cipher_suite: 17` in its [`IpmiConfig`]).
//!
//! IPMI 1.5 (`-I lan`, MD5) is not offered: ipmi-rs's v1.5 login failed against ipmi_sim
//! (see the crate notes).
//!
//! # What ipmi-rs 0.6 lacks, and what this module does about it
//!
//! - No chassis, boot-option or session commands: [`commands`] adds them on its
//!   `IpmiCommand` trait.
//! - No Close Session, and the session ID it needs is private: read from ipmi-rs's `Debug`
//!   output (the one place it shows), then Close Session is sent after every operation.
//!   Tests count the simulator's sessions afterwards (0).
//! - No retransmission and no matching of replies to requests: a request is sent again after
//!   each silent `command_timeout`, and replies to other commands are skipped.
//! - Blocking sockets: sessions run on blocking threads, bounded by the [`BmcPool`].
//! - Panics on malformed input (an index past the end of a short ASF pong, `unwrap` on a
//!   socket send error and on RAKP 4 decoding): caught with `catch_unwind` and returned as
//!   [`BmcError::Protocol`]; a test feeds it the short pong.

pub mod commands;
mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Mutex as AsyncMutex;

use self::commands::{
    ChassisControl, GetBootFlags, GetChassisStatus, GetSessionInfo, SetBootFlags,
};
use self::session::{Session, Target, with_session};
use crate::{
    Bmc, BmcError, BmcPool, BootOverride, BootSetting, FirmwareComponent, FirmwareUpdate,
    FirmwareUpdateOutcome, IpmiConfig, PowerState, SoftOffOutcome, soft_off_then_hard,
    wait_for_power,
};

/// The native IPMI-over-LAN driver.
pub struct IpmiLan {
    config: IpmiConfig,
    name: String,
    pool: BmcPool,
    lock: Arc<AsyncMutex<()>>,
}

impl IpmiLan {
    /// Checks the configuration; does not contact the BMC.
    pub fn new(config: IpmiConfig, pool: BmcPool) -> Result<Self, BmcError> {
        validate(&config)?;
        if config.cipher_suite != 3 {
            return Err(BmcError::Config(format!(
                "cipher suite {} for {}: the native IPMI driver speaks suite 3 only; \
                 use protocol \"ipmitool\" for this host",
                config.cipher_suite, config.address
            )));
        }
        let name = format!("{}:{}", config.address, config.port);
        let lock = pool.bmc_lock(&format!("ipmi://{name}"));
        Ok(IpmiLan {
            config,
            name,
            pool,
            lock,
        })
    }

    /// Runs `work` in one session on a blocking thread.
    async fn run<T, F>(&self, work: F) -> Result<T, BmcError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Session) -> Result<T, BmcError> + Send + 'static,
    {
        let _turn = self.pool.turn(&self.lock).await;
        let target = Target {
            name: self.name.clone(),
            host: self.config.address.clone(),
            port: self.config.port,
            username: self.config.username.clone(),
            password: self.config.password.resolve()?,
            timeout: self.config.timing.command_timeout,
            retries: self.config.timing.retries,
        };
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || with_session(&target, work))
            .await
            .map_err(|e| BmcError::Protocol {
                bmc: name,
                detail: format!("IPMI worker thread failed: {e}"),
            })?
    }

    /// Sessions open on the BMC besides the one asking (Get Session Info). Leaked sessions
    /// show up here; a BMC at rest should report 0.
    pub async fn open_sessions(&self) -> Result<u8, BmcError> {
        self.run(|s| {
            let info = s.call("Get Session Info", GetSessionInfo)?;
            Ok(info.active.saturating_sub(1))
        })
        .await
    }

    /// Sets power in one session: read, act only if needed, read again. `Ok(true)` when the
    /// BMC already reports the wanted state.
    async fn set_power(&self, wanted: PowerState) -> Result<bool, BmcError> {
        let action = match wanted {
            PowerState::On => ChassisControl::PowerUp,
            _ => ChassisControl::PowerDown,
        };
        self.run(move |s| {
            if s.call("Get Chassis Status", GetChassisStatus)?.power() == wanted {
                return Ok(true);
            }
            s.call("Chassis Control", action)?;
            Ok(s.call("Get Chassis Status", GetChassisStatus)?.power() == wanted)
        })
        .await
    }

    async fn power_to(&self, wanted: PowerState) -> Result<(), BmcError> {
        let start = Instant::now();
        if self.set_power(wanted).await? {
            return Ok(());
        }
        let timing = &self.config.timing;
        wait_for_power(
            &self.name,
            wanted,
            timing.confirm_timeout.saturating_sub(start.elapsed()),
            timing.poll_interval,
            || self.power_status(),
        )
        .await
    }
}

pub(crate) fn validate(config: &IpmiConfig) -> Result<(), BmcError> {
    if config.address.trim().is_empty() {
        return Err(BmcError::Config("IPMI address is empty".to_owned()));
    }
    if config.port == 0 {
        return Err(BmcError::Config(format!(
            "IPMI port 0 for {} is not a port",
            config.address
        )));
    }
    // RMCP+ carries the user name in a 16-byte field.
    if config.username.len() > 16 {
        return Err(BmcError::Config(format!(
            "IPMI user name for {} is {} bytes; the protocol allows 16",
            config.address,
            config.username.len()
        )));
    }
    if config.cipher_suite > 17 {
        return Err(BmcError::Config(format!(
            "cipher suite {} for {} does not exist (IPMI 2.0 defines 0-17)",
            config.cipher_suite, config.address
        )));
    }
    if config.timing.command_timeout < Duration::from_millis(10) {
        return Err(BmcError::Config(format!(
            "command timeout {:?} for {} is too short",
            config.timing.command_timeout, config.address
        )));
    }
    Ok(())
}

#[async_trait]
impl Bmc for IpmiLan {
    fn describe(&self) -> String {
        format!("ipmi://{}", self.name)
    }

    async fn power_status(&self) -> Result<PowerState, BmcError> {
        self.run(|s| Ok(s.call("Get Chassis Status", GetChassisStatus)?.power()))
            .await
    }

    async fn power_on(&self) -> Result<(), BmcError> {
        self.power_to(PowerState::On).await
    }

    async fn power_off(&self) -> Result<(), BmcError> {
        self.power_to(PowerState::Off).await
    }

    async fn soft_off(&self, grace: Duration) -> Result<SoftOffOutcome, BmcError> {
        soft_off_then_hard(self, grace, self.config.timing.poll_interval, || {
            self.run(|s| {
                s.call(
                    "Chassis Control (soft shutdown)",
                    ChassisControl::SoftShutdown,
                )
            })
        })
        .await
    }

    async fn set_boot_device(&self, boot: BootOverride) -> Result<(), BmcError> {
        self.run(move |s| s.call("Set System Boot Options", SetBootFlags(boot)))
            .await
    }

    async fn boot_device(&self) -> Result<BootSetting, BmcError> {
        self.run(|s| s.call("Get System Boot Options", GetBootFlags))
            .await
    }

    async fn firmware_inventory(&self) -> Result<Vec<FirmwareComponent>, BmcError> {
        let id = self
            .run(|s| s.call("Get Device ID", ipmi_rs::app::GetDeviceId))
            .await?;
        let mut version = format!("{}.{:02}", id.major_fw_revision, id.minor_fw_revision);
        if let Some(aux) = id.aux_revision.filter(|aux| aux.iter().any(|b| *b != 0)) {
            version.push_str(&format!(
                " (aux {:02x}{:02x}{:02x}{:02x})",
                aux[0], aux[1], aux[2], aux[3]
            ));
        }
        Ok(vec![FirmwareComponent {
            id: "bmc".to_owned(),
            name: format!(
                "BMC (manufacturer {}, product {:#06x}, IPMI {}.{})",
                id.manufacturer_id, id.product_id, id.major_version, id.minor_version
            ),
            version,
            updateable: None,
        }])
    }

    async fn firmware_update(
        &self,
        _update: &FirmwareUpdate,
    ) -> Result<FirmwareUpdateOutcome, BmcError> {
        Err(BmcError::Unsupported {
            bmc: self.name.clone(),
            backend: "ipmi",
            operation: "firmware update",
            detail:
                "IPMI has no standard firmware update over LAN; use this host's Redfish service"
                    .to_owned(),
        })
    }
}
