//! UDP sockets for DHCP: SO_BROADCAST, SO_REUSEADDR, SO_BINDTODEVICE (socket2) and
//! IP_PKTINFO (libc), which tells us the interface and local address a broadcast came
//! in on and lets a broadcast reply leave by that same interface.

use std::io;
use std::mem::{MaybeUninit, size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::config::Listen;
use super::handler::RecvInfo;

/// One bound DHCP socket (a std socket until it is given to the runtime).
#[derive(Debug)]
pub struct BoundSocket {
    pub(crate) socket: std::net::UdpSocket,
    pub(crate) port: u16,
}

/// Create a socket for `port` as `listen` says, in the network namespace of the
/// calling thread. The socket keeps that namespace wherever it is used afterwards, so a
/// caller may create it on a thread that has entered another namespace (tests do).
pub fn bind(listen: &Listen, port: u16) -> io::Result<BoundSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    // Bursts of DISCOVERs arrive faster than one task answers them; a deep queue turns a
    // burst into latency instead of drops. The kernel caps it at rmem_max.
    let _ = s.set_recv_buffer_size(4 << 20);
    if let Listen::Interface(name) = listen {
        s.bind_device(Some(name.as_bytes())).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot bind to interface '{name}': {e}"))
        })?;
    }
    let on: libc::c_int = 1;
    // SAFETY: a valid fd, a c_int option value and its size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    s.set_nonblocking(true)?;
    // Broadcasts only reach a socket bound to the wildcard address.
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    s.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind UDP port {port}: {e}")))?;
    Ok(BoundSocket {
        socket: s.into(),
        port,
    })
}

/// A socket registered with the runtime.
#[derive(Debug)]
pub struct DhcpSocket {
    udp: UdpSocket,
    port: u16,
}

impl DhcpSocket {
    pub fn new(b: BoundSocket) -> io::Result<Self> {
        Ok(DhcpSocket {
            udp: UdpSocket::from_std(b.socket)?,
            port: b.port,
        })
    }

    /// Receive one datagram with its incoming interface and local address.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, RecvInfo)> {
        let port = self.port;
        self.udp
            .async_io(Interest::READABLE, || {
                recv_pktinfo(self.udp.as_raw_fd(), buf, port)
            })
            .await
    }

    /// Send a datagram; `ifindex` (non-zero) picks the way out for a broadcast.
    pub async fn send(&self, bytes: &[u8], dest: SocketAddrV4, ifindex: u32) -> io::Result<usize> {
        self.udp
            .async_io(Interest::WRITABLE, || {
                send_pktinfo(self.udp.as_raw_fd(), bytes, dest, ifindex)
            })
            .await
    }
}

fn recv_pktinfo(fd: i32, buf: &mut [u8], port: u16) -> io::Result<(usize, RecvInfo)> {
    // SAFETY: all pointers refer to live locals sized as the kernel expects; the
    // control buffer is aligned for cmsghdr (u64 array) and large enough for one
    // in_pktinfo.
    unsafe {
        let mut src: libc::sockaddr_in = zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut cbuf = [0u64; 8];
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = (&mut src as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 8]>();
        let n = libc::recvmsg(fd, &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut info = RecvInfo {
            src: SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(src.sin_addr.s_addr)),
                u16::from_be(src.sin_port),
            ),
            local_port: port,
            ifindex: 0,
            local_addr: Ipv4Addr::UNSPECIFIED,
        };
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_PKTINFO {
                let mut pi = MaybeUninit::<libc::in_pktinfo>::uninit();
                std::ptr::copy_nonoverlapping(
                    libc::CMSG_DATA(c),
                    pi.as_mut_ptr().cast::<u8>(),
                    size_of::<libc::in_pktinfo>(),
                );
                let pi = pi.assume_init();
                info.ifindex = u32::try_from(pi.ipi_ifindex).unwrap_or(0);
                info.local_addr = Ipv4Addr::from(u32::from_be(pi.ipi_spec_dst.s_addr));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        // A datagram larger than the buffer is truncated by the kernel; report its
        // full size so the caller can tell (MSG_TRUNC).
        if msg.msg_flags & libc::MSG_TRUNC != 0 {
            return Ok((buf.len() + 1, info));
        }
        Ok((n as usize, info))
    }
}

fn send_pktinfo(fd: i32, bytes: &[u8], dest: SocketAddrV4, ifindex: u32) -> io::Result<usize> {
    // SAFETY: as in recv_pktinfo; the control message is written inside cbuf.
    unsafe {
        let mut dst: libc::sockaddr_in = zeroed();
        dst.sin_family = libc::AF_INET as libc::sa_family_t;
        dst.sin_port = dest.port().to_be();
        dst.sin_addr.s_addr = u32::from(*dest.ip()).to_be();
        let mut iov = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        let mut cbuf = [0u64; 8];
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = (&mut dst as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if ifindex != 0 {
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            if c.is_null() {
                return Err(io::Error::other("no room for IP_PKTINFO"));
            }
            (*c).cmsg_level = libc::IPPROTO_IP;
            (*c).cmsg_type = libc::IP_PKTINFO;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as usize;
            let mut pi: libc::in_pktinfo = zeroed();
            pi.ipi_ifindex = ifindex as libc::c_int;
            std::ptr::copy_nonoverlapping(
                (&pi as *const libc::in_pktinfo).cast::<u8>(),
                libc::CMSG_DATA(c),
                size_of::<libc::in_pktinfo>(),
            );
        }
        let n = libc::sendmsg(fd, &msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}
