//! The socket calls on Unix: `recvmsg` and `sendmsg` with control messages (packet info on
//! every Unix that has it; on Linux also UDP GRO and GSO), `sendmmsg`, `SO_REUSEPORT` and a
//! `timerfd` on Linux. Where a Unix lacks a Linux fast path, the portable call stands in.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::prelude::rust_2021::*;
use std::time::Duration;

use nix::libc;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage};

use super::{DatagramSocket, Received};

/// What a [`DatagramSocket`] needs for the calls here: its file descriptor.
pub(crate) trait RawSocket: AsRawFd {}
impl<T: AsRawFd> RawSocket for T {}

/// Receives with the control messages: the destination address (packet info) and the
/// coalesced datagrams' size (GRO).
pub(crate) fn recv_ancillary(
    socket: &impl DatagramSocket,
    buf: &mut [u8],
    local: SocketAddr,
) -> io::Result<Received> {
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo, i32);
    let msg = loop {
        match recvmsg::<SockaddrStorage>(socket.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty()) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r.map_err(io::Error::from)?,
        }
    };
    let source = source_of(msg.address.as_ref())?;
    let mut got = Received {
        len: msg.bytes,
        source,
        destination: local,
        segment: None,
    };
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                #[cfg(any(
                    target_os = "linux",
                    target_os = "android",
                    target_os = "netbsd",
                    target_vendor = "apple"
                ))]
                ControlMessageOwned::Ipv4PacketInfo(info) => {
                    let ip = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                    // The kernel's reply address differs from the destination only when that is
                    // a broadcast or multicast address (e.g. 192.0.2.255, 127.255.255.255):
                    // report it as the broadcast address, which the table ignores (RFC 1123).
                    let spec = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
                    let ip = if ip != spec && !spec.is_unspecified() {
                        Ipv4Addr::BROADCAST
                    } else {
                        ip
                    };
                    got.destination = SocketAddr::new(IpAddr::V4(ip), local.port());
                }
                #[cfg(target_os = "freebsd")]
                ControlMessageOwned::Ipv4RecvDstAddr(addr) => {
                    let ip = Ipv4Addr::from(u32::from_be(addr.s_addr));
                    got.destination = SocketAddr::new(IpAddr::V4(ip), local.port());
                }
                ControlMessageOwned::Ipv6PacketInfo(info) => {
                    let ip = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                    // A link-local address means nothing without its interface: keep it as the
                    // scope, or the transfer's socket cannot be bound to it.
                    let scope = if ip.is_unicast_link_local() {
                        info.ipi6_ifindex
                    } else {
                        0
                    };
                    got.destination = SocketAddr::V6(SocketAddrV6::new(ip, local.port(), 0, scope));
                }
                #[cfg(target_os = "linux")]
                ControlMessageOwned::UdpGroSegments(size) => {
                    got.segment = usize::try_from(size).ok().filter(|&s| s > 0 && s < got.len);
                }
                _ => {}
            }
        }
    }
    Ok(got)
}

/// A received datagram's source address, from the kernel's form.
fn source_of(a: Option<&SockaddrStorage>) -> io::Result<SocketAddr> {
    a.and_then(|a| {
        a.as_sockaddr_in()
            .map(|v4| SocketAddr::from(SocketAddrV4::from(*v4)))
            .or_else(|| {
                a.as_sockaddr_in6()
                    .map(|v6| SocketAddr::from(SocketAddrV6::from(*v6)))
            })
    })
    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram without source"))
}

/// Turns packet info on: each receive reports the datagram's destination address.
pub(crate) fn enable_pktinfo(socket: &UdpSocket, v4: bool) -> io::Result<bool> {
    use nix::sys::socket::{setsockopt, sockopt};
    let r = if v4 {
        #[cfg(any(
            target_os = "linux",
            target_os = "android",
            target_os = "netbsd",
            target_vendor = "apple"
        ))]
        let r = setsockopt(socket, sockopt::Ipv4PacketInfo, &true);
        #[cfg(target_os = "freebsd")]
        let r = setsockopt(socket, sockopt::Ipv4RecvDstAddr, &true);
        #[cfg(not(any(
            target_os = "linux",
            target_os = "android",
            target_os = "netbsd",
            target_vendor = "apple",
            target_os = "freebsd"
        )))]
        let r: nix::Result<()> = Err(nix::errno::Errno::ENOPROTOOPT);
        r
    } else {
        setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true)
    };
    match r {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ENOPROTOOPT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Sends one datagram from a wildcard-bound socket with `source`'s address (and scope) as its
/// source: IPv4 by `IP_PKTINFO` (Linux, Android, NetBSD, Apple) or `IP_SENDSRCADDR` (FreeBSD),
/// IPv6 by `IPV6_PKTINFO`; elsewhere from the address the routing picks.
// Each platform returns from its own branch; the plain send at the end is the fallback.
#[allow(unreachable_code)]
pub(crate) fn send_from(
    socket: &impl DatagramSocket,
    data: &[u8],
    to: SocketAddr,
    source: SocketAddr,
) -> io::Result<()> {
    let iov = [io::IoSlice::new(data)];
    let dest = SockaddrStorage::from(to);
    let fd = socket.as_raw_fd();
    let send = |cmsgs: &[ControlMessage<'_>]| loop {
        match sendmsg(fd, &iov, cmsgs, MsgFlags::empty(), Some(&dest)) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.map(|_| ()).map_err(io::Error::from),
        }
    };
    match source {
        SocketAddr::V4(a) => {
            let addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            #[cfg(any(
                target_os = "linux",
                target_os = "android",
                target_os = "netbsd",
                target_vendor = "apple"
            ))]
            return send(&[ControlMessage::Ipv4PacketInfo(&libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: addr,
                ipi_addr: libc::in_addr { s_addr: 0 },
            })]);
            #[cfg(target_os = "freebsd")]
            return send(&[ControlMessage::Ipv4SendSrcAddr(&addr)]);
            let _ = addr;
        }
        SocketAddr::V6(a) => {
            #[cfg(any(
                target_os = "linux",
                target_os = "android",
                target_os = "netbsd",
                target_os = "freebsd",
                target_vendor = "apple"
            ))]
            return send(&[ControlMessage::Ipv6PacketInfo(&libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                // The interface of a link-local source (0, any, otherwise).
                ipi6_ifindex: a.scope_id(),
            })]);
            let _ = a;
        }
    }
    send(&[])
}

/// Whether an error is the system's "no buffer space" (a full queue: the datagram is lost).
pub(crate) fn is_no_buffer_space(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOBUFS)
}

/// `SO_REUSEPORT` with Linux's meaning: the sockets share the port and each datagram goes to
/// one of them, chosen by a hash of its source and destination (so a client's repeated request
/// reaches the same server). Other systems share a port without balancing, so it is refused.
pub(crate) fn set_reuse_port(socket: &socket2::Socket) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    return socket.set_reuse_port(true);
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "sharing a port between servers (SO_REUSEPORT load balancing) needs Linux",
        ))
    }
}

/// Raises a buffer past the sysctl cap (Linux, with `CAP_NET_ADMIN`); nothing elsewhere.
pub(crate) fn force_buffer(socket: &UdpSocket, bytes: usize, receive: bool) {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{setsockopt, sockopt};
        let v = bytes.min(i32::MAX as usize / 2);
        let _ = if receive {
            setsockopt(socket, sockopt::RcvBufForce, &v)
        } else {
            setsockopt(socket, sockopt::SndBufForce, &v)
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (socket, bytes, receive);
}

/// Turns coalesced receives on (Linux 5.0+).
pub(crate) fn enable_gro(socket: &UdpSocket) -> bool {
    #[cfg(target_os = "linux")]
    return nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::UdpGroSegment, &true).is_ok();
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        false
    }
}

/// One `sendmsg` with `UDP_SEGMENT` (Linux 4.18+): `data` leaves as datagrams of `size` bytes
/// (the last one possibly shorter).
pub(crate) fn send_segmented(
    socket: &impl DatagramSocket,
    data: &[u8],
    size: usize,
    to: SocketAddr,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let size = u16::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let iov = [io::IoSlice::new(data)];
        let dest = SockaddrStorage::from(to);
        loop {
            match sendmsg(
                socket.as_raw_fd(),
                &iov,
                &[ControlMessage::UdpGsoSegments(&size)],
                MsgFlags::empty(),
                Some(&dest),
            ) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, data, size, to);
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

/// Whether a segmented send failed because segmentation is unavailable (old kernel, no
/// checksum offload on the route, a segment larger than the path MTU), not for the network.
pub(crate) fn refuses_segmentation(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || matches!(
            e.raw_os_error(),
            Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP | libc::EMSGSIZE)
        )
}

/// One `sendmmsg` for all of `datagrams` (repeated for what a partial send left) on Linux; one
/// `send_to` each elsewhere.
pub(crate) fn send_many(socket: &impl DatagramSocket, datagrams: &[&[u8]], to: SocketAddr) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{sendmmsg, MultiHeaders};
        let dest = SockaddrStorage::from(to);
        let iovs: Vec<[io::IoSlice<'_>; 1]> = datagrams.iter().map(|d| [io::IoSlice::new(d)]).collect();
        let addrs = vec![Some(dest); datagrams.len()];
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(datagrams.len(), None);
        let mut sent = 0;
        while sent < datagrams.len() {
            match sendmmsg(
                socket.as_raw_fd(),
                &mut headers,
                &iovs[sent..],
                &addrs[sent..],
                [],
                MsgFlags::empty(),
            ) {
                Ok(r) => match r.count() {
                    // Nothing sent (cannot happen for a non-empty batch): avoid spinning.
                    0 => return super::send_one(socket, datagrams[sent], to),
                    n => sent += n,
                },
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    datagrams.iter().try_for_each(|d| super::send_one(socket, d, to))
}

/// A `timerfd` in the server's poll: `epoll_wait` counts in milliseconds, too coarse for paced
/// sends and sub-millisecond retransmission deadlines on fast links. Linux only; elsewhere
/// [`PollTimer::new`] gives `None` and the poll's own timeout is used.
pub(crate) struct PollTimer {
    #[cfg(target_os = "linux")]
    fd: nix::sys::timerfd::TimerFd,
}

impl PollTimer {
    /// Waits shorter than this use the timer.
    #[cfg(target_os = "linux")]
    const BELOW: Duration = Duration::from_millis(5);

    /// A timer registered in `poll` under `token`, where the system has one.
    pub(crate) fn new(poll: &mio::Poll, token: mio::Token) -> Option<PollTimer> {
        #[cfg(target_os = "linux")]
        {
            use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
            use std::os::fd::AsFd;
            let fd = TimerFd::new(
                ClockId::CLOCK_MONOTONIC,
                TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
            )
            .ok()?;
            poll.registry()
                .register(
                    &mut mio::unix::SourceFd(&fd.as_fd().as_raw_fd()),
                    token,
                    mio::Interest::READABLE,
                )
                .ok()?;
            Some(PollTimer { fd })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (poll, token);
            None
        }
    }

    /// Arms the timer for a wait shorter than the poll can express, returning the poll timeout
    /// to use (a backstop a millisecond later).
    pub(crate) fn arm(&self, wait: Duration) -> Duration {
        #[cfg(target_os = "linux")]
        if !wait.is_zero() && wait < Self::BELOW {
            use nix::sys::time::TimeSpec;
            use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
            let when = Expiration::OneShot(TimeSpec::from_duration(wait));
            if self.fd.set(when, TimerSetTimeFlags::empty()).is_ok() {
                return wait + Duration::from_millis(1);
            }
        }
        wait
    }

    /// Consumes an expiry.
    pub(crate) fn clear(&self) {
        #[cfg(target_os = "linux")]
        let _ = self.fd.wait();
    }
}
