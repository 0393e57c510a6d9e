//! The tokio client (feature `tokio`): `get` and `put` on `tokio::net::UdpSocket` and
//! `tokio::time`, to and from any [`Storage`], files, `AsyncRead` and `AsyncWrite` streams and
//! memory, with every option of the blocking [`Client`].
//!
//! The protocol stays in the engine; this module only moves datagrams, through the same socket
//! code as the blocking adapter (a window leaves in one system call where the kernel allows,
//! coalesced receives are split). It runs on the current-thread and the multi-thread runtime.
//!
//! **Cancel-safe.** Dropping a transfer's future (a `select!` that lost, a timeout, an aborted
//! task) ends the transfer at once: the peer gets an ERROR ("Transfer cancelled") instead of
//! waiting for its timeouts, and a download to a file leaves no temporary file behind and the
//! target untouched.
//!
//! The engine's storage is synchronous: file reads and writes happen inline, buffered (256 KiB),
//! as in the blocking client. Streams are pumped asynchronously between turns: a download's
//! blocks reach the `AsyncWrite` before they are acknowledged, an upload reads ahead from the
//! `AsyncRead` what the next window needs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tftp_proto::adapter::client::ClientError> {
//! use tftp_proto::adapter::tokio_client::AsyncClient;
//! use tftp_proto::Options;
//!
//! let client = AsyncClient::new("127.0.0.1:69".parse().unwrap())
//!     .options(Options { blksize: Some(1468), windowsize: Some(16), ..Options::NONE });
//! let summary = client.get_file(b"boot.img", "boot.img".as_ref(), |_| {}).await?;
//! println!("{} bytes", summary.bytes);
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::prelude::rust_2021::*;

use ::tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use ::tokio::net::UdpSocket;

use super::client::{
    conclude, create_temp_beside, local_error, open_upload, Client, ClientError, Summary, TempGuard,
};
use super::socket::{self, is_transient, RECV_BUFFER};
use super::std_storage::{BufferedFile, ReadAheadFile, ReadStorage, WriteStorage};
use super::{size_buffers, DriveError, StdClock};
use crate::engine::{ClientRequest, Config, Event, Transfer, TransferError, TransferMode};
use crate::error_code::ErrorCode;
use crate::options::Options;
use crate::storage::{Storage, StorageError};
use crate::wire::RequestKind;

impl socket::DatagramSocket for UdpSocket {
    fn send_datagram(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
        // The system call itself: tokio's `try_send_to` answers `WouldBlock` without trying
        // until its reactor has seen the socket writable, which a new socket is not yet.
        socket2::SockRef::from(self).send_to(datagram, &to.into())
    }
    fn recv_datagram(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.try_recv_from(buf)
    }
}

/// A tokio TFTP client for one server: the blocking [`Client`]'s settings, async transfers.
#[derive(Debug, Clone)]
pub struct AsyncClient {
    settings: Client,
}

/// The ERROR text a cancelled transfer sends its peer.
const CANCELLED: &str = "Transfer cancelled";

impl AsyncClient {
    /// A client for `server` (address and port), octet mode, no options, default timing.
    pub fn new(server: SocketAddr) -> Self {
        AsyncClient {
            settings: Client::new(server),
        }
    }

    /// Options to request (`tsize`: any value asks for it).
    pub fn options(mut self, options: Options) -> Self {
        self.settings.options = options;
        self
    }

    /// The transfer mode.
    pub fn mode(mut self, mode: TransferMode) -> Self {
        self.settings.mode = mode;
        self
    }

    /// Timing and limits.
    pub fn config(mut self, config: Config) -> Self {
        self.settings.config = config;
        self
    }

    /// Downloads `remote` into `storage`.
    pub async fn get<S: Storage>(
        &self,
        remote: &[u8],
        storage: S,
        on_event: impl FnMut(&Event),
    ) -> Result<(S, Summary), ClientError> {
        self.run(RequestKind::Read, remote, storage, &mut NoPump, on_event)
            .await
    }

    /// Uploads `storage` as `remote`.
    pub async fn put<S: Storage>(
        &self,
        remote: &[u8],
        storage: S,
        on_event: impl FnMut(&Event),
    ) -> Result<(S, Summary), ClientError> {
        self.run(RequestKind::Write, remote, storage, &mut NoPump, on_event)
            .await
    }

    /// Downloads `remote` into the file `local`, atomically: a temporary file beside it is
    /// renamed into place on success and removed on failure or cancellation.
    pub async fn get_file(
        &self,
        remote: &[u8],
        local: &Path,
        on_event: impl FnMut(&Event),
    ) -> Result<Summary, ClientError> {
        let local_err = local_error(local);
        let (tmp_path, file) = create_temp_beside(local).map_err(local_err)?;
        // Removes the temporary file if this future is dropped or the download fails.
        let guard = TempGuard(Some(tmp_path.clone()));
        let (file, summary) = self
            .get(remote, BufferedFile::new(file, 256 * 1024), on_event)
            .await?;
        drop(file);
        std::fs::rename(&tmp_path, local).map_err(local_err)?;
        guard.disarm();
        Ok(summary)
    }

    /// Uploads the file `local` as `remote`.
    pub async fn put_file(
        &self,
        local: &Path,
        remote: &[u8],
        on_event: impl FnMut(&Event),
    ) -> Result<Summary, ClientError> {
        let file = open_upload(local)?;
        self.put(remote, ReadAheadFile::new(file, 256 * 1024), on_event)
            .await
            .map(|(_, s)| s)
    }

    /// Downloads `remote` into an `AsyncWrite`: each block reaches the writer before it is
    /// acknowledged, so a writer that fails makes the server hear ERROR 3, not success.
    pub async fn get_to_writer<W: AsyncWrite + Unpin>(
        &self,
        remote: &[u8],
        writer: W,
        on_event: impl FnMut(&Event),
    ) -> Result<(W, Summary), ClientError> {
        let mut pump = WritePump { writer };
        let (_, summary) = self
            .run(
                RequestKind::Read,
                remote,
                WriteStorage::new(Vec::new()),
                &mut pump,
                on_event,
            )
            .await?;
        Ok((pump.writer, summary))
    }

    /// Uploads from an `AsyncRead`; only the bytes the next window and its resends need are
    /// kept in memory. `tsize` is not sent (the size is unknown up front).
    pub async fn put_from_reader<R: AsyncRead + Unpin>(
        &self,
        reader: R,
        remote: &[u8],
        on_event: impl FnMut(&Event),
    ) -> Result<Summary, ClientError> {
        let window = usize::from(self.settings.options.windowsize.unwrap_or(1)) + 1;
        let keep = window * usize::from(self.settings.options.blksize.unwrap_or(512).max(512));
        let mut client = self.clone();
        client.settings.options.tsize = None;
        let mut pump = ReadPump {
            reader,
            chunk: vec![0; 64 * 1024],
        };
        let storage = ReadStorage::new(Queue::default(), keep);
        client
            .run(RequestKind::Write, remote, storage, &mut pump, on_event)
            .await
            .map(|(_, s)| s)
    }

    /// One transfer, start to end.
    async fn run<S: Storage, P: Pump<S>>(
        &self,
        kind: RequestKind,
        remote: &[u8],
        storage: S,
        pump: &mut P,
        mut on_event: impl FnMut(&Event),
    ) -> Result<(S, Summary), ClientError> {
        let c = &self.settings;
        let window = usize::from(c.options.windowsize.unwrap_or(1));
        let block = usize::from(c.options.blksize.unwrap_or(512)) + 32;
        let driver =
            AsyncDriver::bind(c.server, (window * block * 2).max(256 * 1024)).map_err(ClientError::Io)?;
        let start = std::time::Instant::now();
        let request = ClientRequest {
            kind,
            filename: remote,
            mode: c.mode,
            options: c.options,
        };
        let transfer = Transfer::client(driver.clock.now(), c.server, request, storage, c.config)
            .map_err(ClientError::Request)?;
        let mut session = Session {
            driver,
            transfer: Some(transfer),
        };
        let result = session.drive(pump, &mut on_event).await;
        let transfer = session.transfer.take().expect("the transfer is kept until here");
        conclude(transfer, start, result)
    }
}

/// A transfer with its socket. Dropped while the transfer runs (the future was cancelled), it
/// aborts the transfer and sends the peer its ERROR, without waiting.
struct Session<'r, S: Storage> {
    driver: AsyncDriver,
    /// Always `Some` until the owner takes it after driving.
    transfer: Option<Transfer<'r, S>>,
}

impl<S: Storage> Session<'_, S> {
    async fn drive<P: Pump<S>>(
        &mut self,
        pump: &mut P,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<u64, DriveError> {
        let (d, t) = (&mut self.driver, self.transfer.as_mut().expect("driving"));
        loop {
            // The pump's errors are the local reader's or writer's (a full disk, a closed
            // pipe): storage errors, as with the blocking client, and the peer hears of them.
            if let Err(e) = pump.before_transmit(t).await {
                let e = StorageError::from(e);
                t.abort(e.error_code(), e.message());
                let _ = d.send(t).await;
                return Err(DriveError::Transfer(TransferError::Storage(e)));
            }
            let sent = d.send(t).await.map_err(DriveError::Io)?;
            while let Some(ev) = t.poll_event() {
                on_event(&ev);
            }
            if t.is_finished() {
                break;
            }
            if !d.wait(t, sent).await.map_err(DriveError::Io)? {
                break;
            }
        }
        pump.after(t)
            .await
            .map_err(|e| DriveError::Transfer(TransferError::Storage(StorageError::from(e))))?;
        match t.outcome() {
            Some(Ok(bytes)) => Ok(bytes),
            Some(Err(e)) => Err(DriveError::Transfer(e.clone())),
            None => Err(DriveError::Transfer(TransferError::Aborted)),
        }
    }
}

impl<S: Storage> Drop for Session<'_, S> {
    fn drop(&mut self) {
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        if t.outcome().is_none() {
            t.abort(ErrorCode::NotDefined, CANCELLED);
        }
        // Whatever is owed now (the ERROR) leaves without waiting: best effort.
        let now = self.driver.clock.now();
        let mut buf = [0u8; 600];
        while let Some(tx) = t.poll_transmit(now, &mut buf) {
            let _ = self.driver.socket.try_send_to(&buf[..tx.len], tx.destination);
        }
    }
}

/// The socket side of one transfer: sends what the engine emits, waits for a datagram or the
/// next deadline.
pub(crate) struct AsyncDriver {
    pub(crate) socket: UdpSocket,
    local: SocketAddr,
    /// Whether coalesced receives are on.
    gro: bool,
    /// Whether segmented sends may be tried.
    gso: bool,
    pub(crate) clock: StdClock,
    batch: Vec<u8>,
    lens: Vec<usize>,
    rx: Vec<u8>,
}

impl AsyncDriver {
    /// A socket of the family of `peer`, on any port, with `buffers` bytes of socket buffers.
    fn bind(peer: SocketAddr, buffers: usize) -> io::Result<AsyncDriver> {
        let any: SocketAddr = if peer.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let std_socket = std::net::UdpSocket::bind(any)?;
        size_buffers(&std_socket, buffers);
        let gro = socket::enable_gro(&std_socket);
        std_socket.set_nonblocking(true)?;
        let local = std_socket.local_addr()?;
        Ok(AsyncDriver {
            socket: UdpSocket::from_std(std_socket)?,
            local,
            gro,
            gso: socket::GSO_AVAILABLE,
            clock: StdClock::new(),
            batch: vec![0; 64 * 1024 + 2 * crate::adapter::MAX_DATAGRAM],
            lens: vec![0; 64],
            rx: vec![0; RECV_BUFFER],
        })
    }

    /// Sends everything the transfer has to send now; whether there was anything.
    async fn send<S: Storage>(&mut self, t: &mut Transfer<'_, S>) -> io::Result<bool> {
        let now = self.clock.now();
        let mut sent = false;
        // A window at a time: as many datagrams as the batch buffer holds, to one peer.
        let room = self.batch.len().min(t.max_datagram_len() * self.lens.len());
        while let Some(b) = t.poll_transmit_batch(now, &mut self.batch[..room], &mut self.lens) {
            sent = true;
            self.socket.writable().await?;
            // A full socket buffer loses datagrams, which the protocol recovers from.
            socket::send_run(
                &self.socket,
                &self.batch[..b.len],
                &self.lens[..b.count],
                b.destination,
                None,
                &mut self.gso,
            )?;
        }
        Ok(sent)
    }

    /// Waits for a datagram or the transfer's next deadline and feeds it to the transfer;
    /// `false` when the transfer has no deadline left (nothing more will happen).
    async fn wait<S: Storage>(&mut self, t: &mut Transfer<'_, S>, sent: bool) -> io::Result<bool> {
        let Some(deadline) = t.poll_timeout() else {
            return Ok(false);
        };
        let now = self.clock.now();
        if deadline <= now {
            t.handle_timeout(now);
            return Ok(true);
        }
        // Everything is sent: file work for the next turn now overlaps the round trip.
        if sent {
            t.storage_mut().idle();
        }
        let until = ::tokio::time::Instant::now() + (deadline - now);
        let Self {
            socket: sock,
            rx,
            local,
            gro,
            clock,
            ..
        } = self;
        loop {
            let recv = sock.async_io(Interest::READABLE, || socket::recv(&*sock, rx, *local, *gro));
            let got = match ::tokio::time::timeout_at(until, recv).await {
                Ok(Ok(got)) => got,
                // An ICMP error for an earlier datagram, an interruption: wait on.
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted || is_transient(&e) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_elapsed) => {
                    t.handle_timeout(clock.now());
                    return Ok(true);
                }
            };
            // A coalesced receive holds several datagrams of `segment` bytes.
            let size = got.segment.filter(|&s| s > 0).unwrap_or(got.len).max(1);
            let mut at = 0;
            while at < got.len {
                let end = got.len.min(at + size);
                t.handle_datagram(clock.now(), got.source, &rx[at..end]);
                at = end;
            }
            return Ok(true);
        }
    }
}

/// Stream work between a transfer's turns: what the storage buffered goes to the writer, or
/// what the next window needs comes from the reader.
trait Pump<S> {
    /// Before the transfer's datagrams of this turn are polled.
    async fn before_transmit(&mut self, t: &mut Transfer<'_, S>) -> io::Result<()>;
    /// Once the transfer is over.
    async fn after(&mut self, t: &mut Transfer<'_, S>) -> io::Result<()>;
}

/// No streams: the storage does its own I/O.
struct NoPump;

impl<S: Storage> Pump<S> for NoPump {
    async fn before_transmit(&mut self, _: &mut Transfer<'_, S>) -> io::Result<()> {
        Ok(())
    }
    async fn after(&mut self, _: &mut Transfer<'_, S>) -> io::Result<()> {
        Ok(())
    }
}

/// A download into an `AsyncWrite`: the blocks the engine wrote into memory since the last turn
/// are written out before this turn's ACK leaves.
struct WritePump<W> {
    writer: W,
}

impl<W: AsyncWrite + Unpin> Pump<WriteStorage<Vec<u8>>> for WritePump<W> {
    async fn before_transmit(&mut self, t: &mut Transfer<'_, WriteStorage<Vec<u8>>>) -> io::Result<()> {
        let pending = t.storage_mut().get_mut();
        if !pending.is_empty() {
            self.writer.write_all(pending).await?;
            pending.clear();
        }
        Ok(())
    }
    async fn after(&mut self, t: &mut Transfer<'_, WriteStorage<Vec<u8>>>) -> io::Result<()> {
        self.before_transmit(t).await?;
        self.writer.flush().await
    }
}

/// An upload from an `AsyncRead`: before each turn, reads what the next window can need (the
/// acknowledged bytes plus a window and a block) into the queue the storage reads from.
struct ReadPump<R> {
    reader: R,
    chunk: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Pump<ReadStorage<Queue>> for ReadPump<R> {
    async fn before_transmit(&mut self, t: &mut Transfer<'_, ReadStorage<Queue>>) -> io::Result<()> {
        let p = t.params();
        let block = u64::from(p.blksize.max(512));
        let target = t.stats().bytes + (u64::from(p.windowsize) + 1) * block;
        let q = t.storage_mut().get_mut();
        while !q.eof && q.total < target {
            let n = self.reader.read(&mut self.chunk).await?;
            q.eof = n == 0;
            q.data.extend(&self.chunk[..n]);
            q.total += n as u64;
        }
        Ok(())
    }
    async fn after(&mut self, _: &mut Transfer<'_, ReadStorage<Queue>>) -> io::Result<()> {
        Ok(())
    }
}

/// Bytes read from an `AsyncRead` and not yet taken by the storage. Empty means the end of
/// the stream: [`ReadPump`] keeps it filled past anything the engine reads before then.
#[derive(Debug, Default)]
struct Queue {
    data: VecDeque<u8>,
    eof: bool,
    /// Bytes read from the stream so far.
    total: u64,
}

impl io::Read for Queue {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.data.len());
        for (slot, byte) in buf.iter_mut().zip(self.data.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}
