//! The IPMI commands ipmi-rs 0.6 does not have, as its `IpmiCommand` message types:
//! chassis status and control, system boot options parameter 5, and the session commands
//! (privilege level, close, info). Byte layouts follow IPMI 2.0 sections 22 and 28.

use ipmi_rs::connection::{IpmiCommand, Message, NetFn};

use crate::{BootDevice, BootMode, BootOverride, BootPersistence, BootSetting, PowerState};

/// A response too short or otherwise not what the command defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

fn need(data: &[u8], len: usize, what: &str) -> Result<(), ParseError> {
    if data.len() < len {
        return Err(ParseError(format!(
            "{what}: response has {} data bytes, expected at least {len}",
            data.len()
        )));
    }
    Ok(())
}

/// Get Chassis Status (chassis 0x01).
pub struct GetChassisStatus;

/// What Get Chassis Status reports about power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChassisStatus {
    pub power_on: bool,
    pub power_overload: bool,
    pub power_fault: bool,
    pub power_control_fault: bool,
}

impl ChassisStatus {
    pub fn power(&self) -> PowerState {
        if self.power_on {
            PowerState::On
        } else {
            PowerState::Off
        }
    }
}

impl From<GetChassisStatus> for Message {
    fn from(_: GetChassisStatus) -> Message {
        Message::new_request(NetFn::Chassis, 0x01, Vec::new())
    }
}

impl IpmiCommand for GetChassisStatus {
    type Output = ChassisStatus;
    type Error = ParseError;

    fn parse_success_response(data: &[u8]) -> Result<ChassisStatus, ParseError> {
        need(data, 3, "Get Chassis Status")?;
        let power = data[0];
        Ok(ChassisStatus {
            power_on: power & 0x01 != 0,
            power_overload: power & 0x02 != 0,
            power_fault: power & 0x08 != 0,
            power_control_fault: power & 0x10 != 0,
        })
    }
}

/// Chassis Control (chassis 0x02) actions. Power cycle and hard reset are left out on
/// purpose: the trait's cycle is off, confirm, on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChassisControl {
    PowerDown = 0x00,
    PowerUp = 0x01,
    /// ACPI soft shutdown request to the OS.
    SoftShutdown = 0x05,
}

impl From<ChassisControl> for Message {
    fn from(action: ChassisControl) -> Message {
        Message::new_request(NetFn::Chassis, 0x02, vec![action as u8])
    }
}

impl IpmiCommand for ChassisControl {
    type Output = ();
    type Error = ParseError;

    fn parse_success_response(_: &[u8]) -> Result<(), ParseError> {
        Ok(())
    }
}

/// Set System Boot Options (chassis 0x08), parameter 5 (boot flags).
pub struct SetBootFlags(pub BootOverride);

/// The 5 data bytes of boot-flags parameter 5 for an override.
pub fn boot_flags(boot: BootOverride) -> [u8; 5] {
    // Byte 1: bit 7 flags valid, bit 6 persistent, bit 5 EFI.
    let mut first = 0x80;
    if boot.persistence == BootPersistence::Persistent {
        first |= 0x40;
    }
    if boot.mode == BootMode::Uefi {
        first |= 0x20;
    }
    // Byte 2 bits 5..2: boot device selector.
    let selector: u8 = match boot.device {
        BootDevice::Pxe => 0x1,
        BootDevice::Disk => 0x2,
        BootDevice::Bios => 0x6,
    };
    [first, selector << 2, 0, 0, 0]
}

impl From<SetBootFlags> for Message {
    fn from(cmd: SetBootFlags) -> Message {
        let mut data = vec![0x05];
        data.extend_from_slice(&boot_flags(cmd.0));
        Message::new_request(NetFn::Chassis, 0x08, data)
    }
}

impl IpmiCommand for SetBootFlags {
    type Output = ();
    type Error = ParseError;

    fn parse_success_response(_: &[u8]) -> Result<(), ParseError> {
        Ok(())
    }
}

/// Get System Boot Options (chassis 0x09), parameter 5, set 0, block 0.
pub struct GetBootFlags;

impl From<GetBootFlags> for Message {
    fn from(_: GetBootFlags) -> Message {
        Message::new_request(NetFn::Chassis, 0x09, vec![0x05, 0x00, 0x00])
    }
}

impl IpmiCommand for GetBootFlags {
    type Output = BootSetting;
    type Error = ParseError;

    fn parse_success_response(data: &[u8]) -> Result<BootSetting, ParseError> {
        parse_boot_flags_response(data)
    }
}

/// Parses a Get System Boot Options response for parameter 5 (after the completion code):
/// parameter version, parameter selector, then the 5 boot-flag bytes.
pub fn parse_boot_flags_response(data: &[u8]) -> Result<BootSetting, ParseError> {
    need(data, 7, "Get System Boot Options")?;
    if data[1] & 0x7F != 0x05 {
        return Err(ParseError(format!(
            "Get System Boot Options: asked for parameter 5, got {}",
            data[1] & 0x7F
        )));
    }
    let flags = &data[2..7];
    let valid = flags[0] & 0x80 != 0;
    let device = match (flags[1] >> 2) & 0x0F {
        0x1 => Some(BootDevice::Pxe),
        0x2 | 0x3 => Some(BootDevice::Disk),
        0x6 => Some(BootDevice::Bios),
        _ => None,
    };
    // Only a valid flag set says anything about persistence and mode: a BMC that reports
    // the device alone (ipmi_sim) leaves the first byte zero.
    let (persistence, mode) = if valid {
        (
            Some(if flags[0] & 0x40 != 0 {
                BootPersistence::Persistent
            } else {
                BootPersistence::Once
            }),
            Some(if flags[0] & 0x20 != 0 {
                BootMode::Uefi
            } else {
                BootMode::Legacy
            }),
        )
    } else {
        (None, None)
    };
    Ok(BootSetting {
        device,
        persistence,
        mode,
        raw: format!(
            "boot flags {:02x} {:02x} {:02x} {:02x} {:02x}",
            flags[0], flags[1], flags[2], flags[3], flags[4]
        ),
    })
}

/// Set Session Privilege Level (app 0x3B). A RMCP+ session starts at User level whatever
/// was negotiated; chassis control and boot options need more.
pub struct SetSessionPrivilege(pub u8);

/// The Administrator privilege level.
pub const ADMINISTRATOR: u8 = 0x04;

impl From<SetSessionPrivilege> for Message {
    fn from(cmd: SetSessionPrivilege) -> Message {
        Message::new_request(NetFn::App, 0x3B, vec![cmd.0])
    }
}

impl IpmiCommand for SetSessionPrivilege {
    type Output = u8;
    type Error = ParseError;

    fn parse_success_response(data: &[u8]) -> Result<u8, ParseError> {
        need(data, 1, "Set Session Privilege Level")?;
        Ok(data[0] & 0x0F)
    }
}

/// Close Session (app 0x3C). A session ID of 0 means "the handle in the next byte"
/// (IPMI 2.0 22.19), for when the ID is not known.
pub struct CloseSession {
    pub session_id: u32,
    pub handle: Option<u8>,
}

impl From<CloseSession> for Message {
    fn from(cmd: CloseSession) -> Message {
        let mut data = cmd.session_id.to_le_bytes().to_vec();
        if let Some(handle) = cmd.handle {
            data.push(handle);
        }
        Message::new_request(NetFn::App, 0x3C, data)
    }
}

impl IpmiCommand for CloseSession {
    type Output = ();
    type Error = ParseError;

    fn parse_success_response(_: &[u8]) -> Result<(), ParseError> {
        Ok(())
    }
}

/// Get Session Info (app 0x3D) for the session the request arrives on.
pub struct GetSessionInfo;

/// Session counts from Get Session Info.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    /// Handle of the asking session.
    pub handle: u8,
    /// Slots the BMC has.
    pub slots: u8,
    /// Sessions active now, the asking one included.
    pub active: u8,
}

impl From<GetSessionInfo> for Message {
    fn from(_: GetSessionInfo) -> Message {
        Message::new_request(NetFn::App, 0x3D, vec![0x00])
    }
}

impl IpmiCommand for GetSessionInfo {
    type Output = SessionInfo;
    type Error = ParseError;

    fn parse_success_response(data: &[u8]) -> Result<SessionInfo, ParseError> {
        need(data, 3, "Get Session Info")?;
        Ok(SessionInfo {
            handle: data[0],
            slots: data[1] & 0x3F,
            active: data[2] & 0x3F,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pxe_once_uefi_flags() {
        assert_eq!(boot_flags(BootOverride::pxe_once()), [0xA0, 0x04, 0, 0, 0]);
        let disk = BootOverride {
            device: BootDevice::Disk,
            persistence: BootPersistence::Persistent,
            mode: BootMode::Legacy,
        };
        assert_eq!(boot_flags(disk), [0xC0, 0x08, 0, 0, 0]);
    }

    #[test]
    fn boot_flags_round_trip() {
        for device in [BootDevice::Pxe, BootDevice::Disk, BootDevice::Bios] {
            for persistence in [BootPersistence::Once, BootPersistence::Persistent] {
                for mode in [BootMode::Uefi, BootMode::Legacy] {
                    let b = BootOverride {
                        device,
                        persistence,
                        mode,
                    };
                    let mut resp = vec![0x01, 0x05];
                    resp.extend_from_slice(&boot_flags(b));
                    let got = parse_boot_flags_response(&resp).expect("parse");
                    assert_eq!(got.device, Some(device));
                    assert_eq!(got.persistence, Some(persistence));
                    assert_eq!(got.mode, Some(mode));
                }
            }
        }
    }

    #[test]
    fn device_only_report_as_ipmi_sim_sends_it() {
        let got = parse_boot_flags_response(&[0x01, 0x05, 0x00, 0x04, 0, 0, 0]).expect("parse");
        assert_eq!(got.device, Some(BootDevice::Pxe));
        assert_eq!(got.persistence, None);
        assert_eq!(got.raw, "boot flags 00 04 00 00 00");
    }

    #[test]
    fn short_or_wrong_parameter_is_an_error() {
        assert!(parse_boot_flags_response(&[0x01, 0x05, 0x00]).is_err());
        assert!(parse_boot_flags_response(&[0x01, 0x03, 0, 0, 0, 0, 0]).is_err());
        assert!(GetChassisStatus::parse_success_response(&[0x01]).is_err());
        assert_eq!(
            GetChassisStatus::parse_success_response(&[0x01, 0, 0])
                .expect("parse")
                .power(),
            PowerState::On
        );
    }
}
