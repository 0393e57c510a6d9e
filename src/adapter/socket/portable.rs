//! The socket calls where the system offers no Unix socket API (Windows): the standard
//! library's `send_to` and `recv_from`, one datagram at a time. No packet info (a reply from a
//! wildcard-bound socket leaves from the address the routing picks), no segmentation offload,
//! no coalesced receives, no `SO_REUSEPORT` load balancing, no fine poll timer.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::prelude::rust_2021::*;
use std::time::Duration;

use super::{DatagramSocket, Received};

/// What a [`DatagramSocket`] needs for the calls here: nothing beyond its methods.
pub(crate) trait RawSocket {}
impl<T> RawSocket for T {}

/// A plain receive: the destination is the socket's own address.
pub(crate) fn recv_ancillary(
    socket: &impl DatagramSocket,
    buf: &mut [u8],
    local: SocketAddr,
) -> io::Result<Received> {
    super::recv_plain(socket, buf, local)
}

/// No packet info here.
pub(crate) fn enable_pktinfo(_: &UdpSocket, _v4: bool) -> io::Result<bool> {
    Ok(false)
}

/// A plain send: the routing picks the source address.
pub(crate) fn send_from(
    socket: &impl DatagramSocket,
    data: &[u8],
    to: SocketAddr,
    _source: SocketAddr,
) -> io::Result<()> {
    super::send_one(socket, data, to)
}

/// Windows' `WSAENOBUFS`.
pub(crate) fn is_no_buffer_space(e: &io::Error) -> bool {
    e.raw_os_error() == Some(10055)
}

/// No load-balanced port sharing here.
pub(crate) fn set_reuse_port(_: &socket2::Socket) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "sharing a port between servers (SO_REUSEPORT load balancing) needs Linux",
    ))
}

/// Buffers cannot pass the system's cap here.
pub(crate) fn force_buffer(_: &UdpSocket, _bytes: usize, _receive: bool) {}

/// No coalesced receives here.
pub(crate) fn enable_gro(_: &UdpSocket) -> bool {
    false
}

/// No segmentation offload here.
pub(crate) fn send_segmented(_: &impl DatagramSocket, _: &[u8], _: usize, _: SocketAddr) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Only [`send_segmented`]'s refusal.
pub(crate) fn refuses_segmentation(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
}

/// One `send_to` each.
pub(crate) fn send_many(socket: &impl DatagramSocket, datagrams: &[&[u8]], to: SocketAddr) -> io::Result<()> {
    datagrams.iter().try_for_each(|d| super::send_one(socket, d, to))
}

/// No fine timer here: the poll's own timeout is used.
pub(crate) struct PollTimer;

impl PollTimer {
    /// None here.
    pub(crate) fn new(_: &mio::Poll, _: mio::Token) -> Option<PollTimer> {
        None
    }

    /// The wait as it is.
    pub(crate) fn arm(&self, wait: Duration) -> Duration {
        wait
    }

    /// Nothing to consume.
    pub(crate) fn clear(&self) {}
}
