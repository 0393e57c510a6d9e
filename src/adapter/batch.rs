//! Batched UDP sends: a run of datagrams to one destination leaves in as few system calls as
//! the kernel allows.
//!
//! [`SendBatch`] collects datagrams back to back in one buffer. [`SendBatch::send`] then sends
//! a run with UDP generic segmentation offload (`UDP_SEGMENT`, Linux 4.18+: one `sendmsg`, one
//! trip through the stack, for up to 64 KiB of equal-sized datagrams) when the datagrams allow
//! it, else with one `sendmmsg`, else (other systems) one `send_to` each. A kernel or path that
//! refuses segmentation turns it off for that socket and the run is resent the portable way.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::prelude::rust_2021::*;

use super::MAX_DATAGRAM;

/// A UDP socket a batch can be sent from: the server's (mio) and the client's (std) sockets.
pub trait DatagramSocket: AsRawFd {
    /// One `sendto`.
    fn send_datagram(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize>;
}

impl DatagramSocket for mio::net::UdpSocket {
    fn send_datagram(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.send_to(datagram, to)
    }
}

impl DatagramSocket for std::net::UdpSocket {
    fn send_datagram(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.send_to(datagram, to)
    }
}

/// Most datagrams in one batch (the kernel's segment limit for one GSO send is 64).
pub const MAX_BATCH: usize = 64;

/// Bytes of datagrams one batch holds, beyond which it is sent.
const BATCH_BYTES: usize = 256 * 1024;

/// Largest UDP payload one segmented send may carry (IPv4's 65,535-byte packet limit minus
/// the IP and UDP headers).
const GSO_MAX_BYTES: usize = 65_507;

/// Datagrams waiting to be sent, stored back to back.
#[derive(Debug)]
pub struct SendBatch {
    buf: Vec<u8>,
    /// The length of each datagram, in order.
    lens: Vec<usize>,
    used: usize,
}

impl Default for SendBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl SendBatch {
    /// An empty batch.
    pub fn new() -> Self {
        SendBatch {
            buf: vec![0u8; BATCH_BYTES + MAX_DATAGRAM],
            lens: Vec::with_capacity(MAX_BATCH),
            used: 0,
        }
    }

    /// Whether another datagram of any size fits.
    pub fn has_room(&self) -> bool {
        self.lens.len() < MAX_BATCH && self.used <= BATCH_BYTES
    }

    /// Where the next datagram is written: room for any datagram (call [`has_room`] first).
    ///
    /// [`has_room`]: Self::has_room
    pub fn slot(&mut self) -> &mut [u8] {
        &mut self.buf[self.used..self.used + MAX_DATAGRAM]
    }

    /// Commits the `len` bytes just written into [`slot`](Self::slot).
    pub fn push(&mut self, len: usize) {
        self.lens.push(len);
        self.used += len;
    }

    /// Empties the batch without sending.
    pub fn clear(&mut self) {
        self.lens.clear();
        self.used = 0;
    }

    /// Sends every datagram to `to` from `socket` and empties the batch. `gso` says whether
    /// segmentation may be tried on this socket; it is cleared if the kernel refuses it.
    ///
    /// Errors a datagram socket reports for earlier traffic or momentary pressure (ICMP
    /// unreachable, a full buffer) mean datagrams are lost, which the protocol recovers from:
    /// they are not returned. Other errors are.
    pub fn send(&mut self, socket: &impl DatagramSocket, to: SocketAddr, gso: &mut bool) -> io::Result<()> {
        self.send_with(false, |buf, lens| send_run(socket, buf, lens, to, gso))
    }

    /// Like [`send`](Self::send) for all but the last datagram, which stays, alone, in the
    /// batch (it starts the next run, to another destination).
    pub fn send_all_but_last(
        &mut self,
        socket: &impl DatagramSocket,
        to: SocketAddr,
        gso: &mut bool,
    ) -> io::Result<()> {
        self.send_with(true, |buf, lens| send_run(socket, buf, lens, to, gso))
    }

    /// Hands the datagrams (all but the last when `keep_last`) to `send`, back to back with
    /// their lengths, then keeps only that last one (or none). Nothing is handed over when
    /// there is nothing to send.
    pub fn send_with(
        &mut self,
        keep_last: bool,
        send: impl FnOnce(&[u8], &[usize]) -> io::Result<()>,
    ) -> io::Result<()> {
        let count = self.lens.len() - usize::from(keep_last && !self.lens.is_empty());
        let bytes: usize = self.lens[..count].iter().sum();
        let r = if count == 0 {
            Ok(())
        } else {
            send(&self.buf[..bytes], &self.lens[..count])
        };
        self.buf.copy_within(bytes..self.used, 0);
        self.lens.drain(..count);
        self.used -= bytes;
        r
    }
}

/// Sends the datagrams of `lens`, stored back to back in `buf`, to `to` from `socket`: with
/// segmentation where `gso` allows it and the lengths do (cleared if the kernel refuses), else
/// with `sendmmsg`. Errors that only mean lost datagrams (see [`SendBatch::send`]) are not
/// returned.
pub fn send_run(
    socket: &impl DatagramSocket,
    buf: &[u8],
    lens: &[usize],
    to: SocketAddr,
    gso: &mut bool,
) -> io::Result<()> {
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
    sys::send_many(socket, &slices, to)?;
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

fn transient_ok(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if super::is_transient(&e) => Ok(()),
        other => other,
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use std::io;
    use std::io::IoSlice;
    use std::net::SocketAddr;

    use std::prelude::rust_2021::*;

    use super::DatagramSocket;
    use nix::sys::socket::{sendmmsg, sendmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};

    /// One `sendmsg` with `UDP_SEGMENT`: `data` leaves as datagrams of `size` bytes (the last
    /// one possibly shorter).
    pub fn send_segmented(
        socket: &impl DatagramSocket,
        data: &[u8],
        size: usize,
        to: SocketAddr,
    ) -> io::Result<()> {
        let size = u16::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let iov = [IoSlice::new(data)];
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

    /// Whether a segmented send failed because segmentation is unavailable (old kernel, no
    /// checksum offload on the route, a segment larger than the path MTU), not for the network.
    pub fn refuses_segmentation(e: &io::Error) -> bool {
        use nix::libc;
        matches!(
            e.raw_os_error(),
            Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP | libc::EMSGSIZE)
        )
    }

    /// One `sendmmsg` for all of `datagrams` (repeated for what a partial send left).
    pub fn send_many(socket: &impl DatagramSocket, datagrams: &[&[u8]], to: SocketAddr) -> io::Result<()> {
        if let [one] = datagrams {
            return super::send_one(socket, one, to);
        }
        let dest = SockaddrStorage::from(to);
        let iovs: Vec<[IoSlice<'_>; 1]> = datagrams.iter().map(|d| [IoSlice::new(d)]).collect();
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

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;
    use std::net::SocketAddr;

    use super::DatagramSocket;

    pub fn send_segmented(_: &impl DatagramSocket, _: &[u8], _: usize, _: SocketAddr) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    pub fn refuses_segmentation(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::Unsupported
    }

    pub fn send_many(socket: &impl DatagramSocket, datagrams: &[&[u8]], to: SocketAddr) -> io::Result<()> {
        datagrams.iter().try_for_each(|d| super::send_one(socket, d, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::{Transport, UdpTransport};
    use mio::net::UdpSocket;
    use std::time::Duration;

    fn datagram(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
    }

    /// Sends datagrams of `lens` through a batch (with segmentation allowed or not) and
    /// receives them on a plain socket and on a `UdpTransport` (coalesced receives on).
    fn round_trip(lens: &[usize], gso_allowed: bool) {
        let sender = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        plain.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut transport = UdpTransport::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
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
            batch.send(&sender, to, &mut gso).unwrap();
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
        let mut transport = UdpTransport::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        let to = transport.socket().local_addr().unwrap();
        let lens = [1472, 1472, 1472, 1472, 1000];
        let mut batch = SendBatch::new();
        for _ in 0..2 {
            for (i, &len) in lens.iter().enumerate() {
                batch.slot()[..len].copy_from_slice(&datagram(i, len));
                batch.push(len);
            }
            batch.send(&sender, to, &mut true).unwrap();
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
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
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
        batch
            .send_all_but_last(&sender, a.local_addr().unwrap(), &mut gso)
            .unwrap();
        batch.send(&sender, b.local_addr().unwrap(), &mut gso).unwrap();
        let mut buf = [0u8; 1000];
        for i in 0..2 {
            let (n, _) = a.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &datagram(i, 600)[..]);
        }
        let (n, _) = b.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &datagram(2, 600)[..]);
    }

    #[test]
    fn batches_hold_a_bounded_run() {
        let mut batch = SendBatch::new();
        let mut n = 0;
        while batch.has_room() {
            batch.slot();
            batch.push(65468);
            n += 1;
        }
        assert!((4..=MAX_BATCH).contains(&n), "{n} large datagrams");
        batch.clear();
        n = 0;
        while batch.has_room() {
            batch.push(516);
            n += 1;
        }
        assert_eq!(n, MAX_BATCH);
    }
}
