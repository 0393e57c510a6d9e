//! The embassy-net adapter (feature `embassy-net`): a `no_std`, allocation-free async client
//! ([`EmbassyClient`]) and a small single-port server ([`EmbassyServer`]) on
//! [`embassy_net::udp::UdpSocket`], with `embassy-time` for deadlines.
//!
//! The protocol stays in the [`engine`](crate::engine) and the [`server`](crate::server) table;
//! this module only moves datagrams between them and a socket and sleeps until the next
//! deadline. Nothing is copied on the way: a received datagram is handed to the engine straight
//! from the socket's buffer (`recv_from_with`), and the engine writes each datagram it sends
//! straight into the socket's buffer (`send_to_with`, sized by
//! [`Transfer::peek_transmit`](crate::engine::Transfer::peek_transmit)).
//!
//! # Socket buffers
//!
//! A socket carries whole datagrams, so its buffers bound the block size. A transfer needs a
//! receive and a transmit payload buffer of at least `4 + blksize` bytes (516 without the
//! `blksize` option); an Ethernet MTU carries blocks of up to 1468 bytes unfragmented. A
//! `windowsize` of `n` needs room for `n` datagrams in the sender's transmit buffer (or it
//! waits for the driver to drain it) and the receiver's receive buffer (or blocks are lost
//! and sent again). The client and the server check the buffers before a transfer starts and
//! fail with [`Error::SocketBufferTooSmall`] instead of sending what the socket cannot hold.
//!
//! # Addresses
//!
//! IPv4 always; IPv6 peers with the feature `embassy-net-ipv6` (which turns on embassy-net's
//! `proto-ipv6`). The feature also turns on embassy-net's `udp` and `medium-ethernet`.
//!
//! # Time
//!
//! The engine's [`Instant`] is embassy-time's clock in microseconds, whatever its tick rate.

mod client;
mod server;

use core::net::{IpAddr, SocketAddr};

use embassy_net::{IpAddress, IpEndpoint};

pub use client::EmbassyClient;
pub use server::{EmbassyServer, Files};

use crate::engine::TransferError;
use crate::time::Instant;
use crate::wire::EncodeError;

/// Why an embassy-net transfer (or the server) stopped.
///
/// Under `defmt` it implements `defmt::Format` without needing embassy-net's own `defmt`
/// feature (which makes smoltcp log through defmt too: enable it in your firmware if you want
/// that).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The request cannot be sent: a file name holding a NUL, or a request over 512 octets.
    Request(EncodeError),
    /// The transfer failed; the peer was told (an ERROR) where the protocol allows.
    Transfer(TransferError),
    /// A [`boot_into`](EmbassyClient::boot_into) download failed.
    Boot(crate::boot::BootError),
    /// The socket could not be bound (it was open elsewhere, or no route).
    Bind(embassy_net::udp::BindError),
    /// The socket refused a datagram: no route to the peer, or the socket is not bound.
    Send(embassy_net::udp::SendError),
    /// The socket's buffers cannot hold the datagrams this transfer needs.
    SocketBufferTooSmall {
        /// Bytes per datagram the transfer needs (`4 + blksize`).
        needed: usize,
        /// The smaller of the socket's receive and transmit payload capacities.
        capacity: usize,
    },
    /// The peer's address family is not enabled (an IPv6 peer without `embassy-net-ipv6`).
    Unaddressable,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Request(e) => write!(f, "request cannot be sent: {e:?}"),
            Error::Transfer(e) => write!(f, "{e}"),
            Error::Boot(e) => write!(f, "boot download failed: {e:?}"),
            Error::Bind(e) => write!(f, "cannot bind the socket: {e:?}"),
            Error::Send(e) => write!(f, "cannot send: {e:?}"),
            Error::SocketBufferTooSmall { needed, capacity } => write!(
                f,
                "socket buffers hold {capacity} bytes per datagram, the transfer needs {needed}"
            ),
            Error::Unaddressable => f.write_str("address family not enabled"),
        }
    }
}

impl core::error::Error for Error {}

#[cfg(feature = "defmt")]
impl defmt::Format for Error {
    fn format(&self, f: defmt::Formatter<'_>) {
        match self {
            Error::Request(e) => defmt::write!(f, "Request({})", e),
            Error::Transfer(e) => defmt::write!(f, "Transfer({})", e),
            Error::Boot(e) => defmt::write!(f, "Boot({})", e),
            Error::Bind(e) => defmt::write!(f, "Bind({})", defmt::Debug2Format(e)),
            Error::Send(e) => defmt::write!(f, "Send({})", defmt::Debug2Format(e)),
            Error::SocketBufferTooSmall { needed, capacity } => {
                defmt::write!(
                    f,
                    "SocketBufferTooSmall {{ needed: {}, capacity: {} }}",
                    needed,
                    capacity
                )
            }
            Error::Unaddressable => defmt::write!(f, "Unaddressable"),
        }
    }
}

/// The engine's clock: embassy-time's, in microseconds.
fn now() -> Instant {
    Instant::from_micros(embassy_time::Instant::now().as_micros())
}

/// An engine deadline on embassy-time's clock (rounded up to its tick).
fn at(deadline: Instant) -> embassy_time::Instant {
    let micros = deadline.as_micros();
    let t = embassy_time::Instant::from_micros(micros);
    if t.as_micros() < micros {
        t + embassy_time::Duration::from_ticks(1)
    } else {
        t
    }
}

/// The engine's address for an embassy-net endpoint.
fn socket_addr(endpoint: IpEndpoint) -> SocketAddr {
    endpoint.into()
}

/// The embassy-net endpoint of an engine address; `None` for IPv6 without `embassy-net-ipv6`.
fn endpoint(addr: SocketAddr) -> Option<IpEndpoint> {
    ip_address(addr.ip()).map(|ip| IpEndpoint::new(ip, addr.port()))
}

/// The embassy-net address of an engine address: the one place that knows which families this
/// adapter was built with (`None` for IPv6 without `embassy-net-ipv6`).
fn ip_address(ip: IpAddr) -> Option<IpAddress> {
    match ip {
        IpAddr::V4(v4) => Some(v4.into()),
        #[cfg(feature = "embassy-net-ipv6")]
        IpAddr::V6(v6) => Some(v6.into()),
        #[cfg(not(feature = "embassy-net-ipv6"))]
        IpAddr::V6(_) => None,
    }
}

/// A socket's room for one datagram: the smaller of its receive and transmit payload buffers.
fn datagram_capacity(socket: &embassy_net::udp::UdpSocket<'_>) -> usize {
    socket.payload_recv_capacity().min(socket.payload_send_capacity())
}
