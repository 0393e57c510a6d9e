//! Every system call the adapter makes on a UDP socket, in one place: binding, buffer sizing,
//! one receive and one send of a run, plus the fine-grained poll timer.
//!
//! * [`recv`] yields one datagram with its source, the local address it was sent to (from the
//!   packet-info control message on a wildcard-bound socket) and, when the kernel coalesced
//!   several datagrams of one size into the receive (GRO), their size.
//! * [`send_run`] sends a run of datagrams to one peer, optionally from a chosen local address
//!   (a reply from the address a request arrived at).
//!
//! Behind them, `sys` holds the platform's calls: on Unix, `recvmsg`/`sendmsg` with control
//! messages (packet info), and on Linux the fast paths: UDP generic segmentation offload
//! (`UDP_SEGMENT`, one `sendmsg` for up to 64 datagrams), coalesced receives (`UDP_GRO`),
//! `sendmmsg`, `SO_REUSEPORT` load balancing, forced buffer sizes and a `timerfd`. Elsewhere
//! (Windows) the portable fallback uses the standard library's `send_to` and `recv_from` one
//! datagram at a time, and replies from a wildcard-bound socket leave from the address the
//! system's routing picks.

use super::batch::MAX_BATCH;
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::prelude::rust_2021::*;

#[cfg(unix)]
#[path = "socket/unix.rs"]
mod sys;

#[cfg(not(unix))]
#[path = "socket/portable.rs"]
mod sys;

pub(crate) use sys::PollTimer;

/// A UDP socket the adapter sends from and receives on: the server's (mio) and the client's
/// (std) sockets. On Unix the platform calls need its file descriptor.
pub(crate) trait DatagramSocket: sys::RawSocket {
    /// One `sendto`.
    fn send_datagram(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize>;
    /// One `recvfrom`.
    fn recv_datagram(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
}

impl DatagramSocket for mio::net::UdpSocket {
    fn send_datagram(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.send_to(datagram, to)
    }
    fn recv_datagram(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.recv_from(buf)
    }
}

impl DatagramSocket for StdUdpSocket {
    fn send_datagram(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.send_to(datagram, to)
    }
    fn recv_datagram(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.recv_from(buf)
    }
}

/// Size of receive buffers: any UDP payload fits whole, so a datagram longer than any valid
/// packet (a DATA past blksize 65464) is judged by its real length, never cut to a valid one.
pub(crate) const RECV_BUFFER: usize = 65536;

/// Largest UDP payload one segmented send may carry (IPv4's 65,535-byte packet limit minus
/// the IP and UDP headers).
const GSO_MAX_BYTES: usize = 65_507;

/// One receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    /// Bytes received (several datagrams when `segment` is set).
    pub len: usize,
    /// Where they came from.
    pub source: SocketAddr,
    /// The local address they were sent to: the socket's own address, with the IP address the
    /// packet-info control message reports when [`enable_pktinfo`] is on (the broadcast address
    /// when the datagram was broadcast or multicast).
    pub destination: SocketAddr,
    /// The size of each coalesced datagram (the last may be shorter), when the kernel
    /// delivered more than one ([`enable_gro`]).
    pub segment: Option<usize>,
}

/// Receives one datagram (or a coalesced run) on `socket`, bound to `local`. `ancillary` says
/// whether packet info or coalescing is on for the socket (then the control messages are read).
pub(crate) fn recv(
    socket: &impl DatagramSocket,
    buf: &mut [u8],
    local: SocketAddr,
    ancillary: bool,
) -> io::Result<Received> {
    if ancillary {
        sys::recv_ancillary(socket, buf, local)
    } else {
        recv_plain(socket, buf, local)
    }
}

/// One `recvfrom`: no control messages, so the destination is the socket's own address.
fn recv_plain(socket: &impl DatagramSocket, buf: &mut [u8], local: SocketAddr) -> io::Result<Received> {
    let (len, source) = socket.recv_datagram(buf)?;
    Ok(Received {
        len,
        source,
        destination: local,
        segment: None,
    })
}

/// Turns coalesced receives on (Linux 5.0+), if the kernel has them: the kernel may then
/// deliver several datagrams of one size from one sender in one [`recv`].
pub(crate) fn enable_gro(socket: &StdUdpSocket) -> bool {
    sys::enable_gro(socket)
}

/// Asks the kernel to report each datagram's destination address ([`Received::destination`]),
/// so a wildcard-bound server can answer from the address a request was sent to. Returns
/// whether it will (false where the platform has no such option, e.g. Windows).
pub(crate) fn enable_pktinfo(socket: &StdUdpSocket, v4: bool) -> io::Result<bool> {
    sys::enable_pktinfo(socket, v4)
}

/// Whether segmented sends may be tried on a new socket: where the platform has them.
pub(crate) const GSO_AVAILABLE: bool = cfg!(target_os = "linux");

/// Sends the datagrams of `lens`, stored back to back in `buf`, to `to` from `socket`.
///
/// With `source` (an address of a wildcard-bound socket), each datagram leaves from that
/// address, one `sendmsg` each (where the platform can choose; elsewhere from the address the
/// routing picks). Otherwise the run leaves with segmentation where `gso` allows it and the
/// lengths do (`gso` is cleared if the kernel refuses), else with `sendmmsg`, else one `send_to`
/// each.
///
/// Errors a datagram socket reports for earlier traffic or momentary pressure (ICMP
/// unreachable, a full buffer) mean datagrams are lost, which the protocol recovers from: they
/// are not returned. Other errors are.
pub(crate) fn send_run(
    socket: &impl DatagramSocket,
    buf: &[u8],
    lens: &[usize],
    to: SocketAddr,
    source: Option<SocketAddr>,
    gso: &mut bool,
) -> io::Result<()> {
    if let Some(source) = source.filter(|s| !s.ip().is_unspecified()) {
        let mut at = 0;
        for &len in lens {
            transient_ok(sys::send_from(socket, &buf[at..at + len], to, source))?;
            at += len;
        }
        return Ok(());
    }
    let count = lens.len();
    let mut start = 0; // index of the first datagram not sent yet
    let mut offset = 0; // its byte offset
    let r = (|| {
        while start < count {
            let run = if *gso { segment_run(&lens[start..]) } else { 1 };
            if run > 1 {
                let bytes: usize = lens[start..start + run].iter().sum();
                match sys::send_segmented(socket, &buf[offset..offset + bytes], lens[start], to) {
                    Ok(()) => {
                        start += run;
                        offset += bytes;
                        continue;
                    }
                    Err(e) if sys::refuses_segmentation(&e) => *gso = false,
                    Err(e) => return Err(e),
                }
            }
            // The portable way for the rest (or until the next segmentable run).
            let n = send_each(socket, to, buf, &lens[start..], offset, *gso)?;
            offset += lens[start..start + n].iter().sum::<usize>();
            start += n;
        }
        Ok(())
    })();
    transient_ok(r)
}

/// Sends datagrams of `lens` (the first at byte `offset` of `buf`) one message each, returning
/// how many went: all of them, or (when segmentation may be used) up to the next run worth
/// segmenting.
fn send_each(
    socket: &impl DatagramSocket,
    to: SocketAddr,
    buf: &[u8],
    lens: &[usize],
    offset: usize,
    gso: bool,
) -> io::Result<usize> {
    let mut end = 1;
    while end < lens.len() && !(gso && segment_run(&lens[end..]) > 1) {
        end += 1;
    }
    let mut slices = Vec::with_capacity(end);
    let mut at = offset;
    for &len in &lens[..end] {
        slices.push(&buf[at..at + len]);
        at += len;
    }
    if let [one] = slices[..] {
        send_one(socket, one, to)?;
    } else {
        sys::send_many(socket, &slices, to)?;
    }
    Ok(end)
}

/// How many datagrams of `lens` (from its start) can go as one segmented send: equal lengths,
/// the last possibly shorter, within the kernel's limits.
fn segment_run(lens: &[usize]) -> usize {
    let Some(&size) = lens.first() else {
        return 0;
    };
    let mut total = 0;
    let mut n = 0;
    for &len in lens {
        if len > size || total + len > GSO_MAX_BYTES || n == MAX_BATCH {
            break;
        }
        total += len;
        n += 1;
        if len < size {
            break;
        }
    }
    n
}

/// One `send_to`, repeated when interrupted.
fn send_one(socket: &impl DatagramSocket, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
    loop {
        match socket.send_datagram(datagram, to) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

fn transient_ok(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if is_transient(&e) => Ok(()),
        other => other,
    }
}

/// Errors a UDP socket reports for earlier datagrams (ICMP) or momentary pressure.
pub(crate) fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset | io::ErrorKind::WouldBlock
    ) || sys::is_no_buffer_space(e)
}

/// Runs a blocking receive until it yields a datagram (`Some`), times out (`None`) or fails
/// for real: interruptions and errors left by earlier datagrams (ICMP) are retried.
pub(crate) fn recv_retrying<T>(mut recv: impl FnMut() -> io::Result<T>) -> io::Result<Option<T>> {
    loop {
        match recv() {
            Ok(got) => return Ok(Some(got)),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Ok(None)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted || is_transient(&e) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Binds a UDP socket (IPv6 sockets are v6-only so `[::]` and `0.0.0.0` can both be bound),
/// non-blocking, for mio; with `SO_REUSEPORT` load balancing when `reuse_port`.
pub(crate) fn bind_udp(addr: SocketAddr, reuse_port: bool) -> io::Result<StdUdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        sys::set_reuse_port(&socket)?;
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Sets a socket's receive and send buffers to at least `bytes` (best effort). The kernel caps
/// the request at `net.core.rmem_max` / `wmem_max`; a process allowed to (Linux, `CAP_NET_ADMIN`,
/// e.g. a server running as root) goes past the cap, so a large window fits whatever the sysctl.
pub fn size_buffers(socket: &StdUdpSocket, bytes: usize) {
    let s = socket2::SockRef::from(socket);
    let bytes = bytes.min(64 << 20);
    if s.recv_buffer_size().is_ok_and(|cur| cur < bytes) {
        let _ = s.set_recv_buffer_size(bytes);
        if s.recv_buffer_size().is_ok_and(|cur| cur < bytes) {
            sys::force_buffer(socket, bytes, true);
        }
    }
    if s.send_buffer_size().is_ok_and(|cur| cur < bytes) {
        let _ = s.set_send_buffer_size(bytes);
        if s.send_buffer_size().is_ok_and(|cur| cur < bytes) {
            sys::force_buffer(socket, bytes, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::batch::SendBatch;
    use crate::adapter::{Transport, UdpTransport};
    use mio::net::UdpSocket;
    use std::time::Duration;

    fn datagram(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
    }

    /// Sends the batch's datagrams to `to` from `socket` and empties it.
    fn send(batch: &mut SendBatch, socket: &UdpSocket, to: SocketAddr, gso: &mut bool) {
        batch
            .send_with(false, |d, lens| send_run(socket, d, lens, to, None, gso))
            .unwrap();
    }

    /// Sends datagrams of `lens` through a batch (with segmentation allowed or not) and
    /// receives them on a plain socket and on a `UdpTransport` (coalesced receives on).
    fn round_trip(lens: &[usize], gso_allowed: bool) {
        let sender = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let plain = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        plain.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut transport = UdpTransport::new(StdUdpSocket::bind("127.0.0.1:0").unwrap());
        let mut batch = SendBatch::new();
        for to in [
            plain.local_addr().unwrap(),
            transport.socket().local_addr().unwrap(),
        ] {
            for (i, &len) in lens.iter().enumerate() {
                assert!(batch.has_room());
                batch.slot()[..len].copy_from_slice(&datagram(i, len));
                batch.push(len);
            }
            let mut gso = gso_allowed;
            send(&mut batch, &sender, to, &mut gso);
        }
        let mut buf = vec![0u8; 65536];
        for (i, &len) in lens.iter().enumerate() {
            let (n, _) = plain.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &datagram(i, len)[..], "datagram {i} (plain)");
        }
        expect_datagrams(&mut transport, lens, &mut buf);
        // Nothing more: every datagram went exactly once.
        assert!(transport
            .recv_from(&mut buf, Some(Duration::from_millis(50)))
            .unwrap()
            .is_none());
    }

    /// Receives the datagrams `round_trip` and friends send, of `lens`, in order, into `buf`.
    fn expect_datagrams(transport: &mut UdpTransport, lens: &[usize], buf: &mut [u8]) {
        for (i, &len) in lens.iter().enumerate() {
            let (n, _) = transport
                .recv_from(buf, Some(Duration::from_secs(5)))
                .unwrap()
                .expect("a datagram");
            assert_eq!(&buf[..n], &datagram(i, len)[..], "datagram {i} (transport)");
        }
    }

    #[test]
    fn a_window_arrives_datagram_by_datagram() {
        for gso in [true, false] {
            round_trip(&[1472; 16], gso);
            round_trip(&[1472, 1472, 1472, 300], gso);
            // Not segmentable as one run: a longer one after a shorter one.
            round_trip(&[516, 516, 100, 516, 516], gso);
            round_trip(&[65468, 65468, 20], gso);
            round_trip(&[4], gso);
        }
    }

    #[test]
    fn a_window_reaches_a_small_receive_buffer_whole() {
        let sender = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut transport = UdpTransport::new(StdUdpSocket::bind("127.0.0.1:0").unwrap());
        let to = transport.socket().local_addr().unwrap();
        let lens = [1472, 1472, 1472, 1472, 1000];
        let mut batch = SendBatch::new();
        for _ in 0..2 {
            for (i, &len) in lens.iter().enumerate() {
                batch.slot()[..len].copy_from_slice(&datagram(i, len));
                batch.push(len);
            }
            send(&mut batch, &sender, to, &mut true);
        }
        // Twice, so the second window lands in the buffer the first one left behind.
        let mut buf = [0u8; 1500];
        for _ in 0..2 {
            expect_datagrams(&mut transport, &lens, &mut buf);
        }
        assert!(transport
            .recv_from(&mut buf, Some(Duration::from_millis(50)))
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_run_to_another_peer_keeps_its_first_datagram() {
        let sender = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let a = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        let b = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        let mut batch = SendBatch::new();
        for i in 0..3 {
            batch.slot()[..600].copy_from_slice(&datagram(i, 600));
            batch.push(600);
        }
        // The third belongs to `b`'s run.
        let mut gso = true;
        let to_a = a.local_addr().unwrap();
        batch
            .send_with(true, |d, lens| send_run(&sender, d, lens, to_a, None, &mut gso))
            .unwrap();
        send(&mut batch, &sender, b.local_addr().unwrap(), &mut gso);
        let mut buf = [0u8; 1000];
        for i in 0..2 {
            let (n, _) = a.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &datagram(i, 600)[..]);
        }
        let (n, _) = b.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &datagram(2, 600)[..]);
    }

    /// A wildcard-bound socket with packet info learns each datagram's destination address and
    /// answers from it (Unix; elsewhere the destination stays the wildcard address).
    #[test]
    fn a_wildcard_socket_answers_from_the_destination_address() {
        let listener = bind_udp("0.0.0.0:0".parse().unwrap(), false).unwrap();
        let reports = enable_pktinfo(&listener, true).unwrap();
        let local = listener.local_addr().unwrap();
        let listener = UdpSocket::from_std(listener);
        let client = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // 127.0.0.2 is a loopback address too: the reply must come from it, not 127.0.0.1.
        let to = SocketAddr::new("127.0.0.2".parse().unwrap(), local.port());
        client.send_to(b"ping", to).unwrap();
        let mut buf = [0u8; 64];
        let got = (0..500)
            .find_map(|_| match recv(&listener, &mut buf, local, reports) {
                Ok(r) => Some(r),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                    None
                }
                Err(e) => std::panic!("{e}"),
            })
            .expect("the datagram");
        assert_eq!(&buf[..got.len], b"ping");
        assert_eq!(got.source, client.local_addr().unwrap());
        assert_eq!(got.segment, None);
        if cfg!(unix) {
            assert!(reports);
            assert_eq!(got.destination, to);
        }
        send_run(
            &listener,
            b"pong",
            &[4],
            got.source,
            Some(got.destination),
            &mut false,
        )
        .unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"pong");
        if cfg!(unix) {
            assert_eq!(from, to);
        }
    }
}
