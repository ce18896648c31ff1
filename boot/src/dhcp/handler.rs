//! The packet handler: bytes in, a decision out. No sockets, no disk, no clock of its
//! own, so it runs the same under the server loop, in unit tests and under a fuzzer.
//!
//! It keeps the lease table in memory and runs ahead of the disk: an ACK is returned
//! inside a [`LeaseWrite`] that the server commits before it sends the reply. OFFERs
//! are not persisted (an offer that is lost costs the client one retry); the offered
//! address is held in memory for [`OFFER_HOLD`] seconds so no one else gets it.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

use super::config::{CompiledConfig, CompiledNetwork, MacAddr, Mode};
use super::stats::Stats;
use super::wire::{self, DropReason};

/// Seconds an offered address stays held for the client it was offered to.
pub const OFFER_HOLD: u64 = 30;
/// proxyDHCP boot-server port (PXE).
pub const PXE_PORT: u16 = 4011;
const CLIENT_PORT: u16 = 68;
/// The BOOTP `file` field is 128 bytes and needs its NUL.
const FILE_FIELD_MAX: usize = 127;

/// Where a datagram came from and on which local socket.
#[derive(Debug, Clone, Copy)]
pub struct RecvInfo {
    pub src: SocketAddrV4,
    /// The local port it arrived on (67, or 4011 in proxy mode).
    pub local_port: u16,
    /// Incoming interface (IP_PKTINFO), 0 when unknown.
    pub ifindex: u32,
    /// The server's address on the incoming interface (IP_PKTINFO `ipi_spec_dst`).
    pub local_addr: Ipv4Addr,
}

/// A reply ready for the wire.
#[derive(Debug, Clone)]
pub struct Reply {
    pub bytes: Vec<u8>,
    pub dest: SocketAddrV4,
    /// Interface to send a broadcast out of (0: let routing choose).
    pub ifindex: u32,
    pub kind: MessageType,
}

/// The state a lease row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Bound,
    Released,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Bound => "bound",
            LeaseState::Released => "released",
        }
    }
}

/// A lease as persisted: one row per MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    /// Unix seconds.
    pub expires_at: u64,
    pub state: LeaseState,
    pub hostname: Option<String>,
    pub network: String,
}

/// An unknown MAC seen in discovery mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredHost {
    pub mac: MacAddr,
    pub network: Option<String>,
    /// Unix seconds when first seen (kept on later sightings).
    pub first_seen: u64,
    pub vendor_class: Option<String>,
    pub arch: Option<u16>,
    pub hostname: Option<String>,
}

/// Rows to commit, and the reply that waits for the commit.
#[derive(Debug, Clone, Default)]
pub struct LeaseWrite {
    pub lease: Option<Lease>,
    pub discovered: Option<DiscoveredHost>,
    pub reply: Option<Reply>,
}

/// What to do with one datagram.
#[derive(Debug)]
pub enum Outcome {
    Drop(DropReason),
    /// Send now.
    Send(Reply),
    /// Send now, and record this in the background (a discovered host).
    SendAndRecord(Reply, LeaseWrite),
    /// Commit, then send the reply inside, if any.
    Commit(LeaseWrite),
}

/// What the handler needs that does not follow the design.
#[derive(Debug, Clone, Copy)]
pub struct HandlerOptions {
    pub server_id: Ipv4Addr,
    pub mode: Mode,
    /// Server port; replies to relays go to this port on giaddr.
    pub port: u16,
}

#[derive(Debug, Clone, Copy)]
struct Bound {
    ip: Ipv4Addr,
    expires_at: u64,
}

/// The DHCP state machine over an in-memory lease table.
pub struct Handler {
    opts: HandlerOptions,
    config: Arc<CompiledConfig>,
    stats: Arc<Stats>,
    leases: HashMap<MacAddr, Bound>,
    owners: HashMap<Ipv4Addr, MacAddr>,
    offers: HashMap<Ipv4Addr, (MacAddr, u64)>,
    offered_to: HashMap<MacAddr, Ipv4Addr>,
    declined: HashMap<Ipv4Addr, u64>,
    discovered: HashSet<MacAddr>,
    /// Next position to try in each network's ranges.
    cursors: Vec<u64>,
    packets: u64,
}

/// What a request says about its sender.
struct Client {
    mac: MacAddr,
    pxe: bool,
    ipxe: bool,
    arch: Option<u16>,
    vendor_class: Option<Vec<u8>>,
    wants: Vec<u8>,
    hostname: Option<String>,
    machine_id: Option<Vec<u8>>,
}

impl Handler {
    /// A handler with leases and discovered hosts loaded from the store.
    pub fn new(
        opts: HandlerOptions,
        config: Arc<CompiledConfig>,
        stats: Arc<Stats>,
        leases: Vec<Lease>,
        discovered: Vec<MacAddr>,
    ) -> Self {
        let mut h = Handler {
            cursors: vec![0; config.networks.len()],
            opts,
            config,
            stats,
            leases: HashMap::new(),
            owners: HashMap::new(),
            offers: HashMap::new(),
            offered_to: HashMap::new(),
            declined: HashMap::new(),
            discovered: discovered.into_iter().collect(),
            packets: 0,
        };
        // Two rows may name one address (an expired lease whose address moved on):
        // the later expiry is the live one.
        let mut leases = leases;
        leases.sort_by_key(|l| l.expires_at);
        for l in leases {
            if l.state != LeaseState::Bound {
                continue;
            }
            if let Some(prev) = h.owners.insert(l.ip, l.mac)
                && prev != l.mac
            {
                h.leases.remove(&prev);
            }
            if let Some(old) = h.leases.insert(
                l.mac,
                Bound {
                    ip: l.ip,
                    expires_at: l.expires_at,
                },
            ) && old.ip != l.ip
                && h.owners.get(&old.ip) == Some(&l.mac)
            {
                h.owners.remove(&old.ip);
            }
        }
        h
    }

    /// Swap in a new design. Leases stay; allocation cursors restart.
    pub fn set_config(&mut self, config: Arc<CompiledConfig>) {
        self.cursors = vec![0; config.networks.len()];
        self.config = config;
    }

    /// The config in force.
    pub fn config(&self) -> &Arc<CompiledConfig> {
        &self.config
    }

    /// Handle one datagram received at `now` (unix seconds).
    pub fn handle(&mut self, buf: &[u8], info: &RecvInfo, now: u64) -> Outcome {
        self.packets += 1;
        if self.packets.is_multiple_of(4096) {
            self.sweep(now);
        }
        let outcome = self.decide(buf, info, now);
        if let Outcome::Drop(r) = &outcome {
            self.stats.dropped(*r);
        }
        outcome
    }

    fn decide(&mut self, buf: &[u8], info: &RecvInfo, now: u64) -> Outcome {
        if let Err(r) = wire::check(buf) {
            return Outcome::Drop(r);
        }
        let Ok(msg) = Message::decode(&mut Decoder::new(buf)) else {
            return Outcome::Drop(DropReason::Malformed);
        };
        if msg.opcode() != Opcode::BootRequest {
            return Outcome::Drop(DropReason::WrongOpCode);
        }
        if u8::from(msg.htype()) != 1 || msg.hlen() != 6 {
            return Outcome::Drop(DropReason::UnsupportedHardware);
        }
        let Some(kind) = msg.opts().msg_type() else {
            return Outcome::Drop(DropReason::BadMessageType);
        };
        self.stats.received(kind);
        let client = client_of(&msg);
        match self.opts.mode {
            Mode::Proxy => self.proxy(&msg, kind, &client, info, now),
            Mode::Server => match kind {
                MessageType::Discover => self.discover(&msg, &client, info, now),
                MessageType::Request => self.request(&msg, &client, info, now),
                MessageType::Release => self.release(&msg, &client, now),
                MessageType::Decline => self.decline(&msg, &client, now),
                MessageType::Inform => self.inform(&msg, &client, info, now),
                _ => Outcome::Drop(DropReason::BadMessageType),
            },
        }
    }

    // ---- server mode ----------------------------------------------------------------

    fn discover(&mut self, msg: &Message, c: &Client, info: &RecvInfo, now: u64) -> Outcome {
        let Some(net) = self.select_network(msg, info) else {
            return Outcome::Drop(DropReason::NoNetwork);
        };
        let config = self.config.clone();
        let (ip, hostname) = match config.reservation(&c.mac) {
            Some(r) => {
                if !config.networks[net].net.subnet.contains(r.ip) {
                    return Outcome::Drop(DropReason::WrongNetwork);
                }
                (r.ip, r.hostname.clone())
            }
            None if config.source.discovery => {
                let requested = ipv4_opt(msg, OptionCode::RequestedIpAddress);
                match self.allocate(net, c.mac, requested, now) {
                    Some(ip) => (ip, None),
                    None => return Outcome::Drop(DropReason::PoolExhausted),
                }
            }
            None => return Outcome::Drop(DropReason::UnknownMac),
        };
        if let Some(prev) = self.offered_to.insert(c.mac, ip)
            && prev != ip
        {
            self.offers.remove(&prev);
        }
        self.offers.insert(ip, (c.mac, now + OFFER_HOLD));
        let reply = match self.reply(msg, c, info, MessageType::Offer, ip, Some(net), hostname) {
            Ok(r) => r,
            Err(r) => return Outcome::Drop(r),
        };
        match self.newly_discovered(c, Some(net), now) {
            Some(d) => Outcome::SendAndRecord(
                reply,
                LeaseWrite {
                    discovered: Some(d),
                    ..LeaseWrite::default()
                },
            ),
            None => Outcome::Send(reply),
        }
    }

    fn request(&mut self, msg: &Message, c: &Client, info: &RecvInfo, now: u64) -> Outcome {
        let server_id = ipv4_opt(msg, OptionCode::ServerIdentifier);
        let requested = ipv4_opt(msg, OptionCode::RequestedIpAddress);
        let ciaddr = msg.ciaddr();
        let ip = match (server_id, requested) {
            (Some(sid), _) if sid != self.opts.server_id => {
                // The client chose another server's offer: free ours.
                if let Some(ip) = self.offered_to.remove(&c.mac) {
                    self.offers.remove(&ip);
                }
                return Outcome::Drop(DropReason::OtherServer);
            }
            (_, Some(ip)) => ip,
            (_, None) if !ciaddr.is_unspecified() => ciaddr,
            _ => return Outcome::Drop(DropReason::MissingField),
        };
        let Some(net) = self.select_network(msg, info) else {
            return Outcome::Drop(DropReason::NoNetwork);
        };
        let config = self.config.clone();
        let network = &config.networks[net];
        let hostname;
        let ok = match config.reservation(&c.mac) {
            Some(r) => {
                hostname = r.hostname.clone();
                r.ip == ip && network.net.subnet.contains(ip)
            }
            None if config.source.discovery => {
                hostname = None;
                network.net.subnet.contains(ip)
                    && in_ranges(network, ip)
                    && self.usable(net, ip, c.mac, now)
            }
            None => return Outcome::Drop(DropReason::UnknownMac),
        };
        if !ok {
            let nak = self.nak(msg, c, info);
            return match nak {
                Ok(r) => Outcome::Send(r),
                Err(r) => Outcome::Drop(r),
            };
        }
        let reply = match self.reply(
            msg,
            c,
            info,
            MessageType::Ack,
            ip,
            Some(net),
            hostname.clone(),
        ) {
            Ok(r) => r,
            Err(r) => return Outcome::Drop(r),
        };
        let expires_at = now + u64::from(network.lease_time);
        self.bind(c.mac, ip, expires_at);
        Outcome::Commit(LeaseWrite {
            lease: Some(Lease {
                mac: c.mac,
                ip,
                expires_at,
                state: LeaseState::Bound,
                hostname: hostname.or_else(|| c.hostname.clone()),
                network: network.net.name.clone(),
            }),
            discovered: self.newly_discovered(c, Some(net), now),
            reply: Some(reply),
        })
    }

    fn release(&mut self, msg: &Message, c: &Client, now: u64) -> Outcome {
        if let Some(sid) = ipv4_opt(msg, OptionCode::ServerIdentifier)
            && sid != self.opts.server_id
        {
            return Outcome::Drop(DropReason::OtherServer);
        }
        let ciaddr = msg.ciaddr();
        match self.leases.get(&c.mac) {
            Some(b) if b.ip == ciaddr => {
                let network = self
                    .config
                    .network_for(ciaddr)
                    .map(|i| self.config.networks[i].net.name.clone())
                    .unwrap_or_default();
                self.unbind(c.mac);
                Outcome::Commit(LeaseWrite {
                    lease: Some(Lease {
                        mac: c.mac,
                        ip: ciaddr,
                        expires_at: now,
                        state: LeaseState::Released,
                        hostname: None,
                        network,
                    }),
                    ..LeaseWrite::default()
                })
            }
            _ => Outcome::Drop(DropReason::MissingField),
        }
    }

    fn decline(&mut self, msg: &Message, c: &Client, now: u64) -> Outcome {
        if let Some(sid) = ipv4_opt(msg, OptionCode::ServerIdentifier)
            && sid != self.opts.server_id
        {
            return Outcome::Drop(DropReason::OtherServer);
        }
        let Some(ip) = ipv4_opt(msg, OptionCode::RequestedIpAddress) else {
            return Outcome::Drop(DropReason::MissingField);
        };
        let hold = u64::from(self.config.source.decline_hold);
        self.declined.insert(ip, now + hold);
        tracing::warn!(mac = %c.mac, %ip, "client declined the address (in use?); held out of the pool");
        match self.leases.get(&c.mac) {
            Some(b) if b.ip == ip => {
                let network = self
                    .config
                    .network_for(ip)
                    .map(|i| self.config.networks[i].net.name.clone())
                    .unwrap_or_default();
                self.unbind(c.mac);
                Outcome::Commit(LeaseWrite {
                    lease: Some(Lease {
                        mac: c.mac,
                        ip,
                        expires_at: now,
                        state: LeaseState::Released,
                        hostname: None,
                        network,
                    }),
                    ..LeaseWrite::default()
                })
            }
            _ => Outcome::Commit(LeaseWrite::default()),
        }
    }

    fn inform(&mut self, msg: &Message, c: &Client, info: &RecvInfo, _now: u64) -> Outcome {
        if self.config.reservation(&c.mac).is_none() && !self.config.source.discovery {
            return Outcome::Drop(DropReason::UnknownMac);
        }
        if msg.ciaddr().is_unspecified() {
            return Outcome::Drop(DropReason::MissingField);
        }
        let net = self
            .select_network(msg, info)
            .or_else(|| self.config.network_for(msg.ciaddr()));
        let Some(net) = net else {
            return Outcome::Drop(DropReason::NoNetwork);
        };
        match self.reply(
            msg,
            c,
            info,
            MessageType::Ack,
            Ipv4Addr::UNSPECIFIED,
            Some(net),
            None,
        ) {
            Ok(r) => Outcome::Send(r),
            Err(r) => Outcome::Drop(r),
        }
    }

    // ---- proxy mode -----------------------------------------------------------------

    fn proxy(
        &mut self,
        msg: &Message,
        kind: MessageType,
        c: &Client,
        info: &RecvInfo,
        now: u64,
    ) -> Outcome {
        if !c.pxe {
            return Outcome::Drop(DropReason::NotForProxy);
        }
        let known = self.config.reservation(&c.mac).is_some();
        if !known && !self.config.source.discovery {
            return Outcome::Drop(DropReason::UnknownMac);
        }
        let reply_kind = match (kind, info.local_port == PXE_PORT) {
            (MessageType::Discover, false) => MessageType::Offer,
            (MessageType::Request | MessageType::Inform, true) => MessageType::Ack,
            _ => return Outcome::Drop(DropReason::NotForProxy),
        };
        let reply = match self.reply(msg, c, info, reply_kind, Ipv4Addr::UNSPECIFIED, None, None) {
            Ok(r) => r,
            Err(r) => return Outcome::Drop(r),
        };
        let net = self.select_network(msg, info);
        match (!known)
            .then(|| self.newly_discovered(c, net, now))
            .flatten()
        {
            Some(d) => Outcome::SendAndRecord(
                reply,
                LeaseWrite {
                    discovered: Some(d),
                    ..LeaseWrite::default()
                },
            ),
            None => Outcome::Send(reply),
        }
    }

    // ---- leases -----------------------------------------------------------------------

    fn bind(&mut self, mac: MacAddr, ip: Ipv4Addr, expires_at: u64) {
        if let Some(old) = self.leases.insert(mac, Bound { ip, expires_at })
            && old.ip != ip
            && self.owners.get(&old.ip) == Some(&mac)
        {
            self.owners.remove(&old.ip);
        }
        if let Some(prev) = self.owners.insert(ip, mac)
            && prev != mac
        {
            self.leases.remove(&prev);
        }
        if self.offered_to.remove(&mac).is_some() {
            self.offers.remove(&ip);
        }
        if let Some((m, _)) = self.offers.get(&ip)
            && *m == mac
        {
            self.offers.remove(&ip);
        }
    }

    fn unbind(&mut self, mac: MacAddr) {
        if let Some(b) = self.leases.remove(&mac)
            && self.owners.get(&b.ip) == Some(&mac)
        {
            self.owners.remove(&b.ip);
        }
    }

    /// May `mac` have `ip` from network `net`'s dynamic pool?
    fn usable(&self, net: usize, ip: Ipv4Addr, mac: MacAddr, now: u64) -> bool {
        let n = &self.config.networks[net];
        if ip == n.net.subnet.broadcast()
            || u32::from(ip) == u32::from(n.net.subnet.addr) & u32::from(n.net.subnet.mask())
            || ip == self.opts.server_id
            || n.net.routers.contains(&ip)
            || self.config.reserved_ips.contains(&ip)
        {
            return false;
        }
        if self.declined.get(&ip).is_some_and(|until| *until > now) {
            return false;
        }
        if let Some(owner) = self.owners.get(&ip)
            && *owner != mac
            && self.leases.get(owner).is_some_and(|b| b.expires_at > now)
        {
            return false;
        }
        if let Some((m, until)) = self.offers.get(&ip)
            && *m != mac
            && *until > now
        {
            return false;
        }
        true
    }

    fn allocate(
        &mut self,
        net: usize,
        mac: MacAddr,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Option<Ipv4Addr> {
        let config = self.config.clone();
        let n = &config.networks[net];
        let previous = self
            .leases
            .get(&mac)
            .map(|b| b.ip)
            .into_iter()
            .chain(self.offered_to.get(&mac).copied());
        for ip in previous.chain(requested) {
            if n.net.subnet.contains(ip) && in_ranges(n, ip) && self.usable(net, ip, mac, now) {
                return Some(ip);
            }
        }
        let total: u64 = n.ranges.iter().map(|(s, e)| u64::from(e - s) + 1).sum();
        if total == 0 {
            return None;
        }
        let mut pos = self.cursors[net] % total;
        for _ in 0..total {
            let ip = position_ip(n, pos);
            pos = (pos + 1) % total;
            if let Some(ip) = ip
                && self.usable(net, ip, mac, now)
            {
                self.cursors[net] = pos;
                return Some(ip);
            }
        }
        None
    }

    fn newly_discovered(
        &mut self,
        c: &Client,
        net: Option<usize>,
        now: u64,
    ) -> Option<DiscoveredHost> {
        if !self.config.source.discovery
            || self.config.reservation(&c.mac).is_some()
            || !self.discovered.insert(c.mac)
        {
            return None;
        }
        Some(DiscoveredHost {
            mac: c.mac,
            network: net.map(|i| self.config.networks[i].net.name.clone()),
            first_seen: now,
            vendor_class: c
                .vendor_class
                .as_ref()
                .map(|v| String::from_utf8_lossy(v).into_owned()),
            arch: c.arch,
            hostname: c.hostname.clone(),
        })
    }

    /// Forget expired offers and declines, so the maps do not grow with lost clients.
    fn sweep(&mut self, now: u64) {
        self.offers.retain(|_, (_, until)| *until > now);
        let offers = &self.offers;
        self.offered_to
            .retain(|mac, ip| offers.get(ip).is_some_and(|(m, _)| m == mac));
        self.declined.retain(|_, until| *until > now);
    }

    /// The network a request belongs to: giaddr (relayed), else the address of the
    /// interface it came in on, else ciaddr.
    fn select_network(&self, msg: &Message, info: &RecvInfo) -> Option<usize> {
        let giaddr = msg.giaddr();
        if !giaddr.is_unspecified() {
            return self.config.network_for(giaddr);
        }
        if !info.local_addr.is_unspecified()
            && let Some(n) = self.config.network_for(info.local_addr)
        {
            return Some(n);
        }
        if !msg.ciaddr().is_unspecified() {
            return self.config.network_for(msg.ciaddr());
        }
        None
    }

    // ---- replies ----------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn reply(
        &self,
        req: &Message,
        c: &Client,
        info: &RecvInfo,
        kind: MessageType,
        yiaddr: Ipv4Addr,
        net: Option<usize>,
        hostname: Option<String>,
    ) -> Result<Reply, DropReason> {
        let mut m = base_reply(req);
        m.set_yiaddr(yiaddr);
        if kind == MessageType::Ack && req.opts().has_msg_type(MessageType::Inform)
            || info.local_port == PXE_PORT
        {
            m.set_ciaddr(req.ciaddr());
        }
        let opts = m.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        opts.insert(DhcpOption::ServerIdentifier(self.opts.server_id));
        if let Some(i) = net {
            let n: &CompiledNetwork = &self.config.networks[i];
            for o in &n.options {
                opts.insert(o.clone());
            }
            if !yiaddr.is_unspecified() {
                let t = n.lease_time;
                opts.insert(DhcpOption::AddressLeaseTime(t));
                opts.insert(DhcpOption::Renewal(t / 2));
                opts.insert(DhcpOption::Rebinding(t / 8 * 7));
            }
        }
        if let Some(h) = hostname {
            opts.insert(DhcpOption::Hostname(h));
        }
        self.add_boot(&mut m, c, info)?;
        let bytes = m.to_vec().map_err(|e| {
            tracing::error!(error = %e, "could not encode a DHCP reply");
            DropReason::Malformed
        })?;
        Ok(Reply {
            bytes,
            dest: self.destination(req, info, kind),
            ifindex: info.ifindex,
            kind,
        })
    }

    fn nak(&self, req: &Message, _c: &Client, info: &RecvInfo) -> Result<Reply, DropReason> {
        let mut m = base_reply(req);
        let opts = m.opts_mut();
        opts.insert(DhcpOption::MessageType(MessageType::Nak));
        opts.insert(DhcpOption::ServerIdentifier(self.opts.server_id));
        opts.insert(DhcpOption::Message("requested address is not yours".into()));
        if !req.giaddr().is_unspecified() {
            // A relay broadcasts a NAK on the client's link only if told to.
            m.set_flags(Flags::default().set_broadcast());
        }
        let bytes = m.to_vec().map_err(|_| DropReason::Malformed)?;
        Ok(Reply {
            bytes,
            dest: self.destination(req, info, MessageType::Nak),
            ifindex: info.ifindex,
            kind: MessageType::Nak,
        })
    }

    /// RFC 2131 §4.1: to the relay if relayed; NAKs broadcast; to ciaddr if the client
    /// has one; otherwise broadcast. (Unicasting to yiaddr before the client has it
    /// would need an ARP entry made by hand; broadcasting is allowed and every client
    /// takes it.) proxyDHCP answers on 4011 go back where the request came from.
    fn destination(&self, req: &Message, info: &RecvInfo, kind: MessageType) -> SocketAddrV4 {
        if info.local_port == PXE_PORT {
            return info.src;
        }
        let giaddr = req.giaddr();
        if !giaddr.is_unspecified() {
            return SocketAddrV4::new(giaddr, self.opts.port);
        }
        if kind != MessageType::Nak && !req.ciaddr().is_unspecified() {
            return SocketAddrV4::new(req.ciaddr(), CLIENT_PORT);
        }
        SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
    }

    /// The boot file for this client, if it is a PXE or iPXE client.
    fn boot_file(&self, c: &Client) -> Option<String> {
        let boot = &self.config.source.boot;
        if c.ipxe
            && let Some(url) = &boot.ipxe_script_url
        {
            return Some(url.replace("{mac}", &c.mac.to_string()));
        }
        if !(c.pxe || c.ipxe || c.arch.is_some()) {
            return None;
        }
        let arch = c.arch.unwrap_or(0);
        if let Some(f) = boot.files_by_arch.get(&arch) {
            return Some(f.clone());
        }
        match arch {
            0 => Some(boot.bios_file.clone()),
            7 | 9 => Some(boot.uefi_x64_file.clone()),
            _ => None,
        }
    }

    fn add_boot(&self, m: &mut Message, c: &Client, _info: &RecvInfo) -> Result<(), DropReason> {
        let Some(file) = self.boot_file(c) else {
            return Ok(());
        };
        let boot = &self.config.source.boot;
        let next = boot.next_server.unwrap_or(self.opts.server_id);
        m.set_siaddr(next);
        // set_fname panics past 128 bytes; a long URL goes in option 67 only.
        let fits = file.len() <= FILE_FIELD_MAX;
        if fits {
            m.set_fname(file.as_bytes());
        }
        let opts = m.opts_mut();
        if c.pxe {
            // Tells iPXE and PXE ROMs that no separate proxyDHCP offer is coming.
            opts.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
        }
        if c.wants.contains(&66) {
            opts.insert(DhcpOption::TFTPServerName(next.to_string().into_bytes()));
        }
        if c.wants.contains(&67) || !fits {
            opts.insert(DhcpOption::BootfileName(file.into_bytes()));
        }
        // PXE discovery control: boot the file named here, no menu, no discovery. A PXE
        // firmware (EDK2/OVMF, measured) refuses an offer with option 60 `PXEClient` but
        // without option 43 ("PXE-E16: No valid offer received"): it takes such an offer
        // for one that needs a boot-server discovery on port 4011. iPXE needs neither.
        if self.opts.mode == Mode::Proxy || (c.pxe && !c.ipxe) {
            opts.insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
        }
        if self.opts.mode == Mode::Proxy
            && let Some(id) = &c.machine_id
        {
            opts.insert(DhcpOption::ClientMachineIdentifier(id.clone()));
        }
        Ok(())
    }
}

fn base_reply(req: &Message) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply)
        .set_htype(req.htype())
        .set_xid(req.xid())
        .set_flags(req.flags())
        .set_giaddr(req.giaddr())
        .set_chaddr(req.chaddr());
    m.opts_mut().clear();
    m
}

fn client_of(msg: &Message) -> Client {
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&msg.chaddr()[..6]);
    let opts = msg.opts();
    let vendor_class = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) => Some(v.clone()),
        _ => None,
    };
    let pxe = vendor_class
        .as_ref()
        .is_some_and(|v| v.starts_with(b"PXEClient"));
    let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(u16::from(*a)),
        _ => vendor_class.as_deref().and_then(arch_from_vendor_class),
    };
    let ipxe = match opts.get(OptionCode::UserClass) {
        Some(DhcpOption::UserClass(u)) => u.windows(4).any(|w| w == b"iPXE"),
        _ => false,
    };
    let wants = match opts.get(OptionCode::ParameterRequestList) {
        Some(DhcpOption::ParameterRequestList(l)) => l.iter().map(|c| u8::from(*c)).collect(),
        _ => vec![],
    };
    let hostname = match opts.get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) => Some(h.clone()),
        _ => None,
    };
    let machine_id = match opts.get(OptionCode::ClientMachineIdentifier) {
        Some(DhcpOption::ClientMachineIdentifier(id)) => Some(id.clone()),
        _ => None,
    };
    Client {
        mac: MacAddr(mac),
        pxe,
        ipxe,
        arch,
        vendor_class,
        wants,
        hostname,
        machine_id,
    }
}

/// `PXEClient:Arch:00007:UNDI:003016` -> 7.
fn arch_from_vendor_class(v: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(v).ok()?;
    let rest = s.strip_prefix("PXEClient:Arch:")?;
    rest.get(..5)?.parse().ok()
}

fn ipv4_opt(msg: &Message, code: OptionCode) -> Option<Ipv4Addr> {
    match msg.opts().get(code)? {
        DhcpOption::RequestedIpAddress(ip) | DhcpOption::ServerIdentifier(ip) => Some(*ip),
        _ => None,
    }
}

fn in_ranges(n: &CompiledNetwork, ip: Ipv4Addr) -> bool {
    let v = u32::from(ip);
    n.ranges.iter().any(|(s, e)| *s <= v && v <= *e)
}

fn position_ip(n: &CompiledNetwork, mut pos: u64) -> Option<Ipv4Addr> {
    for (s, e) in &n.ranges {
        let size = u64::from(e - s) + 1;
        if pos < size {
            return Some(Ipv4Addr::from(s + pos as u32));
        }
        pos -= size;
    }
    None
}
