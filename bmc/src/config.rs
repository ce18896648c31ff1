//! Per-host BMC configuration and the connector that turns it into a driver.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ipmi::IpmiLan;
use crate::ipmitool::Ipmitool;
use crate::redfish::Redfish;
use crate::{Bmc, BmcError, BmcPool, CredentialRef};

/// How to reach one host's BMC. Chosen per host in the design:
/// `{"protocol": "ipmi", "address": "10.0.0.5", "username": "admin", "password": {"env": "BMC_PW"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "snake_case")]
pub enum BmcConfig {
    /// IPMI over LAN, RMCP+ (lanplus), cipher suite 3, native (ipmi-rs + our commands).
    Ipmi(IpmiConfig),
    /// IPMI over LAN through `ipmitool -I lanplus -C 3` processes, for BMCs the native
    /// driver cannot talk to.
    Ipmitool(IpmiConfig),
    /// Redfish over HTTP(S).
    Redfish(RedfishConfig),
}

/// An IPMI-over-LAN BMC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpmiConfig {
    /// Host name or IP address.
    pub address: String,
    /// UDP port (623 unless a simulator says otherwise).
    #[serde(default = "default_ipmi_port")]
    pub port: u16,
    pub username: String,
    pub password: CredentialRef,
    /// RMCP+ cipher suite. The native driver speaks 3 only (ipmi-rs 0.6); the ipmitool
    /// backend passes it as `-C` (17 for BMCs that allow only SHA-256).
    #[serde(default = "default_cipher_suite")]
    pub cipher_suite: u8,
    #[serde(default)]
    pub timing: Timing,
}

fn default_ipmi_port() -> u16 {
    623
}

fn default_cipher_suite() -> u8 {
    3
}

/// A Redfish service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedfishConfig {
    /// Base URL of the service, e.g. `https://10.0.0.5` (the path `/redfish/v1` is added).
    pub url: String,
    /// The ComputerSystem to drive: its `@odata.id` path or its `Id`. When absent, the
    /// service must list exactly one system.
    #[serde(default)]
    pub system: Option<String>,
    pub username: String,
    pub password: CredentialRef,
    /// Accept self-signed BMC certificates (most BMCs ship one). Needs the `https` feature.
    #[serde(default)]
    pub insecure_tls: bool,
    #[serde(default)]
    pub timing: Timing,
}

/// Timeouts and retries. Serialized in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timing {
    /// How long to wait for one answer (one UDP reply, one HTTP response).
    #[serde(with = "millis", rename = "command_timeout_ms")]
    pub command_timeout: Duration,
    /// How many times a request is sent again after no answer (IPMI) or a connection
    /// failure (HTTP). Authentication failures are never retried.
    pub retries: u32,
    /// How long power on/off wait for the BMC to report the new state.
    #[serde(with = "millis", rename = "confirm_timeout_ms")]
    pub confirm_timeout: Duration,
    /// Interval between power-state polls.
    #[serde(with = "millis", rename = "poll_interval_ms")]
    pub poll_interval: Duration,
    /// How long a firmware update task may run.
    #[serde(with = "millis", rename = "task_timeout_ms")]
    pub task_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            command_timeout: Duration::from_secs(2),
            retries: 3,
            confirm_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            task_timeout: Duration::from_secs(1800),
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Builds drivers. Every handle it makes shares its [`BmcPool`] and HTTP client.
#[derive(Clone, Debug)]
pub struct Connector {
    pool: BmcPool,
    ipmitool_program: String,
}

impl Connector {
    /// A connector whose handles run at most `max_in_flight` operations at once.
    pub fn new(max_in_flight: usize) -> Self {
        Connector {
            pool: BmcPool::new(max_in_flight),
            ipmitool_program: "ipmitool".to_owned(),
        }
    }

    /// Uses another ipmitool binary (a path, or a wrapper) for the ipmitool backend.
    pub fn with_ipmitool_program(mut self, program: impl Into<String>) -> Self {
        self.ipmitool_program = program.into();
        self
    }

    /// The shared limits.
    pub fn pool(&self) -> &BmcPool {
        &self.pool
    }

    /// A driver for one host. Checks the configuration; does not contact the BMC.
    pub fn connect(&self, config: &BmcConfig) -> Result<Box<dyn Bmc>, BmcError> {
        Ok(match config {
            BmcConfig::Ipmi(c) => Box::new(IpmiLan::new(c.clone(), self.pool.clone())?),
            BmcConfig::Ipmitool(c) => Box::new(Ipmitool::new(
                c.clone(),
                self.pool.clone(),
                self.ipmitool_program.clone(),
            )?),
            BmcConfig::Redfish(c) => Box::new(Redfish::new(c.clone(), self.pool.clone())?),
        })
    }
}

impl Default for Connector {
    fn default() -> Self {
        Connector::new(64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_json_with_defaults() {
        let c: BmcConfig = serde_json::from_str(
            r#"{"protocol":"ipmi","address":"10.0.0.5","username":"admin",
                "password":{"env":"BMC_PW"},"timing":{"retries":1}}"#,
        )
        .expect("parse");
        let BmcConfig::Ipmi(ipmi) = c else {
            panic!("wrong variant: {c:?}")
        };
        assert_eq!(ipmi.port, 623);
        assert_eq!(ipmi.cipher_suite, 3);
        assert_eq!(ipmi.timing.retries, 1);
        assert_eq!(ipmi.timing.command_timeout, Duration::from_secs(2));
    }

    #[test]
    fn unknown_protocol_is_an_error_naming_it() {
        let e = serde_json::from_str::<BmcConfig>(
            r#"{"protocol":"telnet","address":"x","username":"u","password":{"env":"P"}}"#,
        )
        .expect_err("must fail");
        assert!(e.to_string().contains("telnet"), "{e}");
    }
}
