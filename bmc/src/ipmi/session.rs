//! One RMCP+ session on a blocking thread: open (ipmi-rs), raise the privilege to
//! Administrator, run commands with retransmits, close. ipmi-rs panics on some socket
//! errors (`unwrap` in its send and in RAKP 4 decoding), so every call into it runs under
//! `catch_unwind` and a panic becomes a [`BmcError::Protocol`].

use std::any::Any;
use std::io::ErrorKind;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use ipmi_rs::connection::{
    IpmiCommand, IpmiConnection, LogicalUnit, Message, Request, RequestTargetAddress, Response,
};
use ipmi_rs::rmcp::{
    ActivationError, RakpMessage2ParseError, RakpMessage4ParseError, Rmcp, RmcpIpmiError,
    RmcpIpmiReceiveError, RmcpIpmiSendError, V2_0ActivationError, V2_0WriteError,
};

use super::commands::{ADMINISTRATOR, CloseSession, GetSessionInfo, SetSessionPrivilege};
use crate::error::{command_specific_meaning, completion_meaning};
use crate::{BmcError, Secret};

/// Everything a blocking session needs, moved onto the worker thread.
pub(crate) struct Target {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: Secret,
    pub timeout: Duration,
    pub retries: u32,
}

/// An open, Administrator-level session.
pub(crate) struct Session {
    rmcp: Rmcp,
    name: String,
    retries: u32,
    timeout: Duration,
    session_id: Option<u32>,
}

/// Opens a session, runs `work`, and closes the session whatever `work` returned (or if it
/// panicked). A close that fails is logged: the session then stays open on the BMC until
/// the BMC's own inactivity timeout.
pub(crate) fn with_session<T>(
    target: &Target,
    work: impl FnOnce(&mut Session) -> Result<T, BmcError>,
) -> Result<T, BmcError> {
    let mut session = Session::open(target)?;
    let outcome = catch_unwind(AssertUnwindSafe(|| work(&mut session)));
    if let Err(e) = session.close() {
        tracing::warn!(bmc = %target.name, error = %e, "IPMI session not closed");
    }
    match outcome {
        Ok(result) => result,
        Err(panic) => Err(BmcError::Protocol {
            bmc: target.name.clone(),
            detail: format!("IPMI library panicked: {}", panic_text(&panic)),
        }),
    }
}

impl Session {
    fn open(target: &Target) -> Result<Session, BmcError> {
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            match Session::open_once(target) {
                Ok(session) => return Ok(session),
                // Only silence is worth another try: a refused password stays refused, and
                // repeating it locks accounts on real BMCs.
                Err(BmcError::Timeout { detail, .. }) if attempt < target.retries => {
                    tracing::debug!(bmc = %target.name, attempt, %detail, "session open timed out, retrying");
                    attempt += 1;
                }
                Err(BmcError::Timeout { detail, .. }) => {
                    return Err(BmcError::Timeout {
                        bmc: target.name.clone(),
                        after: start.elapsed(),
                        detail: format!("{detail} ({} attempts)", attempt + 1),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn open_once(target: &Target) -> Result<Session, BmcError> {
        let name = &target.name;
        let mut rmcp =
            Rmcp::new((target.host.as_str(), target.port), target.timeout).map_err(|e| {
                BmcError::Unreachable {
                    bmc: name.clone(),
                    detail: format!("cannot resolve address: {e}"),
                }
            })?;
        let activated = catch_unwind(AssertUnwindSafe(|| {
            rmcp.activate(
                true,
                Some(&target.username),
                Some(target.password.expose().as_bytes()),
            )
        }));
        match activated {
            Err(panic) => {
                return Err(BmcError::Protocol {
                    bmc: name.clone(),
                    detail: format!(
                        "IPMI library panicked while opening the session: {}",
                        panic_text(&panic)
                    ),
                });
            }
            Ok(Err(e)) => return Err(activation_error(name, target.timeout, e)),
            Ok(Ok(())) => {}
        }
        let mut session = Session {
            session_id: managed_session_id(&rmcp),
            rmcp,
            name: name.clone(),
            retries: target.retries,
            timeout: target.timeout,
        };
        // RMCP+ sessions start at User level whatever the RAKP exchange asked for; chassis
        // control and boot options answer "insufficient privilege" below Operator.
        if let Err(e) = session.call(
            "Set Session Privilege Level",
            SetSessionPrivilege(ADMINISTRATOR),
        ) {
            if let Err(close) = session.close() {
                tracing::warn!(bmc = %name, error = %close, "IPMI session not closed");
            }
            return Err(e);
        }
        Ok(session)
    }

    /// Sends one command and waits for its answer, sending it again after each silent
    /// `timeout`, up to `retries` more times. Answers to other commands (late replies to an
    /// earlier retransmit) are skipped.
    pub(crate) fn call<C>(&mut self, command: &'static str, cmd: C) -> Result<C::Output, BmcError>
    where
        C: IpmiCommand,
        C::Error: std::fmt::Debug,
    {
        let message: Message = cmd.into();
        let (netfn, code) = (message.netfn(), message.cmd());
        let start = Instant::now();
        for _attempt in 0..=self.retries {
            let mut request = Request::new(
                message.clone(),
                RequestTargetAddress::Bmc(LogicalUnit::Zero),
            );
            let sent = catch_unwind(AssertUnwindSafe(|| self.rmcp.send(&mut request)));
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(self.send_error(command, e)),
                Err(panic) => {
                    return Err(BmcError::Protocol {
                        bmc: self.name.clone(),
                        detail: format!(
                            "IPMI library panicked sending {command} (socket error): {}",
                            panic_text(&panic)
                        ),
                    });
                }
            }
            // A handful of stray packets at most; a flood must not keep us here forever.
            for _ in 0..16 {
                match self.receive(command)? {
                    Some(resp) if resp.netfn() == netfn && resp.cmd() == code => {
                        return self.finish::<C>(command, netfn.request_value(), code, &resp);
                    }
                    Some(other) => {
                        tracing::debug!(bmc = %self.name, netfn = ?other.netfn(), cmd = other.cmd(), "skipping stray IPMI reply");
                    }
                    None => break,
                }
            }
        }
        Err(BmcError::Timeout {
            bmc: self.name.clone(),
            after: start.elapsed(),
            detail: format!(
                "no answer to {command} after {} tries of {:?}",
                self.retries + 1,
                self.timeout
            ),
        })
    }

    /// One datagram: `Some(reply)`, `None` on timeout; packets that do not decode are
    /// returned as stray replies would be (skipped by the caller).
    fn receive(&mut self, command: &'static str) -> Result<Option<Response>, BmcError> {
        let received = catch_unwind(AssertUnwindSafe(|| self.rmcp.recv()));
        match received {
            Ok(Ok(resp)) => Ok(Some(resp)),
            Ok(Err(RmcpIpmiError::Receive(RmcpIpmiReceiveError::Io(e)))) => match e.kind() {
                ErrorKind::WouldBlock | ErrorKind::TimedOut => Ok(None),
                _ => Err(io_error(&self.name, self.timeout, command, &e)),
            },
            Ok(Err(other)) => {
                tracing::debug!(bmc = %self.name, error = ?other, "undecodable IPMI packet skipped");
                Ok(Some(stray()))
            }
            Err(panic) => Err(BmcError::Protocol {
                bmc: self.name.clone(),
                detail: format!(
                    "IPMI library panicked receiving {command}: {}",
                    panic_text(&panic)
                ),
            }),
        }
    }

    fn finish<C>(
        &self,
        command: &'static str,
        netfn: u8,
        code: u8,
        resp: &Response,
    ) -> Result<C::Output, BmcError>
    where
        C: IpmiCommand,
        C::Error: std::fmt::Debug,
    {
        let cc = resp.cc();
        if cc != 0 {
            return Err(BmcError::Completion {
                bmc: self.name.clone(),
                command,
                code: cc,
                meaning: command_specific_meaning(netfn, code, cc)
                    .unwrap_or_else(|| completion_meaning(cc)),
            });
        }
        C::parse_success_response(resp.data()).map_err(|e| BmcError::Protocol {
            bmc: self.name.clone(),
            detail: format!("cannot parse the answer to {command}: {e:?}"),
        })
    }

    fn send_error(&self, command: &'static str, e: RmcpIpmiError) -> BmcError {
        match e {
            RmcpIpmiError::Send(RmcpIpmiSendError::V2_0(V2_0WriteError::Io(io))) => {
                io_error(&self.name, self.timeout, command, &io)
            }
            other => BmcError::Protocol {
                bmc: self.name.clone(),
                detail: format!("cannot send {command}: {other:?}"),
            },
        }
    }

    /// Closes the session (Close Session with our own session ID). One retry only: if the
    /// first answer was lost the session is already gone and a second try goes unanswered.
    fn close(&mut self) -> Result<(), BmcError> {
        self.retries = self.retries.min(1);
        let cmd = match self.session_id {
            Some(session_id) => CloseSession {
                session_id,
                handle: None,
            },
            // The ID is unknown: IPMI 2.0 lets the handle stand in for it (ID 0). Not every
            // BMC accepts this form (ipmi_sim does not), hence the ID first.
            None => {
                let info = self.call("Get Session Info", GetSessionInfo)?;
                CloseSession {
                    session_id: 0,
                    handle: Some(info.handle),
                }
            }
        };
        self.call("Close Session", cmd)
    }
}

fn stray() -> Response {
    // A reply no command matches (reserved netfn), so `call` skips it.
    Response::new(Message::new_raw(0x3F, 0xFF, vec![0xFF]), 0)
        .expect("a one-byte response is valid")
}

/// ipmi-rs keeps the managed-system session ID private, and Close Session needs it (ipmi_sim
/// accepts no other form). Its `Debug` output is the one place it shows (keys and password
/// print redacted there), so read it from there.
fn managed_session_id(rmcp: &Rmcp) -> Option<u32> {
    let text = format!("{rmcp:?}");
    let state = text.find("V2_0(State")?;
    let rest = &text[state..];
    let field = rest.find("session_id: ")? + "session_id: ".len();
    let digits: String = rest[field..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|id| *id != 0)
}

fn panic_text(panic: &Box<dyn Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

fn io_error(bmc: &str, timeout: Duration, what: &str, e: &std::io::Error) -> BmcError {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => BmcError::Timeout {
            bmc: bmc.to_owned(),
            after: timeout,
            detail: format!("no answer to {what}"),
        },
        _ => BmcError::Unreachable {
            bmc: bmc.to_owned(),
            detail: format!("{what}: {e}"),
        },
    }
}

fn activation_error(bmc: &str, timeout: Duration, e: ActivationError) -> BmcError {
    let io = |what: &str, e: &std::io::Error| io_error(bmc, timeout, what, e);
    let recv = |what: &str, e: &RmcpIpmiReceiveError| match e {
        RmcpIpmiReceiveError::Io(io_e) => io(what, io_e),
        other => BmcError::Protocol {
            bmc: bmc.to_owned(),
            detail: format!("{what}: {other:?}"),
        },
    };
    let auth = |detail: String| BmcError::Auth {
        bmc: bmc.to_owned(),
        detail,
    };
    match e {
        ActivationError::PingSend(e) => io("RMCP ping", &e),
        ActivationError::PongReceive(e) => io("RMCP ping", &e),
        ActivationError::GetChannelAuthenticationCapabilities(ipmi_rs::IpmiError::Connection(
            RmcpIpmiError::Receive(r),
        )) => recv("Get Channel Authentication Capabilities", &r),
        ActivationError::V2_0(v2) => match v2 {
            V2_0ActivationError::Io(e) => io("RMCP+ session open", &e),
            V2_0ActivationError::OpenSessionRequestSend(V2_0WriteError::Io(e))
            | V2_0ActivationError::SendRakpMessage1(V2_0WriteError::Io(e))
            | V2_0ActivationError::RakpMessage3Send(V2_0WriteError::Io(e)) => {
                io("RMCP+ session open", &e)
            }
            V2_0ActivationError::OpenSessionResponseReceive(r) => {
                recv("RMCP+ Open Session Response", &r)
            }
            V2_0ActivationError::RakpMessage2Receive(r) => recv("RAKP message 2", &r),
            V2_0ActivationError::RakpMessage4Receive(r) => recv("RAKP message 4", &r),
            V2_0ActivationError::RakpMessage2Parse(
                status @ (RakpMessage2ParseError::ErrorStatusCode(_)
                | RakpMessage2ParseError::UnknownErrorStatusCode(_)),
            ) => auth(format!(
                "the BMC refused the user in RAKP message 2: {status:?}"
            )),
            V2_0ActivationError::ServerAuthenticationFailed => auth(
                "RAKP message 2 carries the wrong key exchange code: wrong password".to_owned(),
            ),
            V2_0ActivationError::RakpMessage4Parse(
                status @ (RakpMessage4ParseError::ErrorStatusCode(_)
                | RakpMessage4ParseError::UnknownErrorStatusCode(_)),
            ) => auth(format!("the BMC refused RAKP message 3: {status:?}")),
            V2_0ActivationError::RakpMessage4InvalidIntegrityCheckValue => {
                auth("RAKP message 4 integrity check failed".to_owned())
            }
            V2_0ActivationError::OpenSessionResponseParse(status) => BmcError::Protocol {
                bmc: bmc.to_owned(),
                detail: format!(
                    "the BMC refused the RMCP+ session (ipmi-rs offers only cipher suite 3): {status:?}"
                ),
            },
            other => BmcError::Protocol {
                bmc: bmc.to_owned(),
                detail: format!("RMCP+ session open failed: {other:?}"),
            },
        },
        other => BmcError::Protocol {
            bmc: bmc.to_owned(),
            detail: format!("RMCP session open failed: {other:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inactive_connection_has_no_session_id() {
        let rmcp = Rmcp::new(("127.0.0.1", 9), Duration::from_millis(10)).expect("rmcp");
        assert_eq!(managed_session_id(&rmcp), None);
    }

    #[test]
    fn stray_reply_matches_no_command() {
        let r = stray();
        assert_eq!(r.cmd(), 0xFF);
    }
}
