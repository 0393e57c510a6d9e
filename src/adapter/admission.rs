//! What a std server does with a new request, whatever its event loop (the mio server, the
//! tokio server): the application's hook, then the remap rules and the root pick the file or
//! the ERROR; the link's MTU caps the block size; the port range (or single-port mode) decides
//! where the transfer's socket is bound.

use std::borrow::Cow;
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::prelude::rust_2021::*;

use super::mio_server::{HookDecision, RequestHook, RequestInfo, ServerConfig};
use super::mtu::MtuCache;
use super::remap::{Remap, Remapped};
use super::root::{Root, ServedFile};
use super::socket::{self, bind_udp, size_buffers};
use crate::engine::ServerPolicy;
use crate::error_code::ErrorCode;
use crate::server::Incoming;
use crate::wire::RequestKind;

/// The ERROR text of a request refused for want of room.
pub(crate) const BUSY: &str = "Server busy, try again later";

/// Why a request is refused: the ERROR its client gets.
pub(crate) type Refused = (ErrorCode, Cow<'static, str>);

/// The server's request policy: everything that decides what a request gets.
#[derive(Debug)]
pub(crate) struct Admission {
    root: Root,
    mtu: Option<MtuCache>,
    remap: Option<Remap>,
    hook: Option<RequestHook>,
    ports: Ports,
}

/// A transfer's own socket (its TID), ready for the event loop.
pub(crate) struct BoundSocket {
    pub socket: StdUdpSocket,
    pub tid: SocketAddr,
    /// Whether coalesced receives (UDP GRO) are on.
    pub gro: bool,
}

impl Admission {
    /// The policy `config` describes; fails when the root cannot be opened.
    pub(crate) fn new(config: &ServerConfig, seed: u64) -> io::Result<Admission> {
        let root = Root::open(&config.root, config.allow_write, config.allow_overwrite)
            .map_err(|e| io::Error::new(e.kind(), format!("root {}: {e}", config.root.display())))?
            .with_ignore_case(config.ignore_case)
            .with_per_client_root(config.per_client_root);
        Ok(Admission {
            root,
            mtu: config.max_blksize_from_mtu.then(MtuCache::default),
            remap: config.remap.clone().filter(|r| !r.is_empty()),
            hook: config.hook.clone(),
            ports: Ports::new(config.single_port, config.port_range, seed),
        })
    }

    /// Whether transfers are served from the listening socket (single-port mode).
    pub(crate) fn single_port(&self) -> bool {
        matches!(self.ports, Ports::Listening)
    }

    /// The policy for `incoming` (the table's, with the block size capped to the link's MTU)
    /// and what it gets: the hook's storage, the remapped file beneath the root, or the ERROR
    /// refusing it.
    pub(crate) fn resolve(
        &mut self,
        table_policy: &ServerPolicy,
        incoming: &Incoming<'_>,
    ) -> Result<(ServerPolicy, ServedFile), Refused> {
        let mut policy = *table_policy;
        if let Some(cap) = self.mtu.as_mut().and_then(|m| m.blksize_cap(incoming.local.ip())) {
            policy.max_blksize = policy.max_blksize.min(cap);
        }
        // The application's hook first, then the remap rules and the root.
        let decision = self.hook.as_ref().map(|h| {
            (h.0)(&RequestInfo {
                peer: incoming.peer,
                local: incoming.local,
                kind: incoming.kind,
                filename: incoming.filename(),
                mode: incoming.mode(),
                options: incoming.options,
            })
        });
        let file = match decision {
            Some(HookDecision::Serve(storage)) => return Ok((policy, ServedFile::Custom(storage))),
            Some(HookDecision::Refuse { code, message }) => return Err((code, message.into())),
            Some(HookDecision::FallThrough) | None => {
                let remapped = self
                    .remap
                    .as_ref()
                    .map(|r| r.apply(incoming.filename(), incoming.kind, incoming.peer.ip()));
                let name = match remapped {
                    None => Cow::Borrowed(incoming.filename()),
                    Some(Remapped::Name(name)) => name,
                    Some(Remapped::Refused) => {
                        return Err((ErrorCode::AccessViolation, "Access violation".into()))
                    }
                };
                match incoming.kind {
                    RequestKind::Read => self.root.open_read_for(
                        Some(incoming.peer.ip()),
                        &name,
                        read_ahead(incoming, &policy),
                    ),
                    RequestKind::Write => self.root.create_upload(&name),
                }
            }
        };
        file.map(|f| (policy, f))
            .map_err(|e| (e.error_code(), e.message().into()))
    }

    /// A socket for the transfer `incoming` starts: on the address the request arrived on
    /// (keeping a link-local address's scope), a port of the range or any, with buffers for
    /// its window and coalesced receives on. Not in single-port mode.
    pub(crate) fn bind_session(
        &mut self,
        incoming: &Incoming<'_>,
        policy: &ServerPolicy,
    ) -> Result<BoundSocket, Refused> {
        let socket = self.ports.bind(incoming.local).map_err(|e| {
            let message = if e.kind() == io::ErrorKind::AddrInUse {
                "Server busy: no free port in its transfer port range, try again later"
            } else {
                "Server out of sockets"
            };
            (ErrorCode::NotDefined, Cow::Borrowed(message))
        })?;
        let (block, window) = block_and_window(incoming, policy);
        size_buffers(&socket, (window * (block + 64) * 2).max(64 * 1024));
        // Coalesced receives: an upload's window (sent with segmentation, as this crate's
        // client does) arrives in one system call; the event loop splits it.
        let gro = socket::enable_gro(&socket);
        let tid = socket
            .local_addr()
            .map_err(|_| (ErrorCode::NotDefined, Cow::Borrowed("Server out of sockets")))?;
        Ok(BoundSocket { socket, tid, gro })
    }

    /// Commits (a successful upload) or discards what a finished transfer leaves.
    pub(crate) fn finish(&self, file: ServedFile, success: bool) -> Result<(), crate::storage::StorageError> {
        self.root.finish(file, success)
    }
}

/// The listener a datagram from `local` leaves by: the one bound to exactly that address, else
/// the wildcard one of the same port and family (the request arrived there, addressed to `local`).
/// Several listeners may share a port (`127.0.0.1:69` and `10.0.0.1:69`, or `0.0.0.0:69` and
/// `[::]:69`), so the port alone does not tell. `addr` gives a listener's address and whether it
/// is a wildcard one.
pub(crate) fn listener_for<L>(
    listeners: &[L],
    local: SocketAddr,
    addr: impl Fn(&L) -> (SocketAddr, bool),
) -> Option<&L> {
    listeners.iter().find(|l| addr(l).0 == local).or_else(|| {
        listeners.iter().find(|l| {
            let (a, wildcard) = addr(l);
            wildcard && a.port() == local.port() && a.is_ipv4() == local.is_ipv4()
        })
    })
}

/// A per-process random key (the session table's peer index, where a port range starts).
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x7466_7470);
    h.finish()
}

/// The read-ahead of a download, from the block size and window the request asks for (the
/// policy's caps applied): four windows' worth, from 1 KiB to 32 KiB (a block larger than
/// that is read ahead alone, as `ReadAheadFile` does). 2 KiB at blksize 512 in lock-step, so
/// memory follows what a session needs, not a fixed 32 KiB.
fn read_ahead(incoming: &Incoming<'_>, policy: &ServerPolicy) -> usize {
    let (block, window) = block_and_window(incoming, policy);
    block
        .saturating_mul(window)
        .saturating_mul(4)
        .clamp(1024, 32 * 1024)
}

/// The block size and window a request asks for, with the policy's caps applied.
fn block_and_window(incoming: &Incoming<'_>, policy: &ServerPolicy) -> (usize, usize) {
    let block = incoming.options.blksize.unwrap_or(512).min(policy.max_blksize);
    let window = incoming
        .options
        .windowsize
        .unwrap_or(1)
        .min(policy.max_windowsize);
    (usize::from(block), usize::from(window))
}

/// Where a server binds its transfers' sockets.
#[derive(Debug)]
enum Ports {
    /// Nowhere: single-port mode serves every transfer from the listening socket.
    Listening,
    /// Any port the system picks.
    Any,
    /// A port of `low..=high`, tried in turn from `next`.
    Range { low: u16, high: u16, next: u16 },
}

impl Ports {
    /// Most ports of a range tried for one request: a request never costs more than this many
    /// `bind` calls, even when the range is exhausted.
    const TRIES: u32 = 512;

    /// The ports of a server in single-port mode or not, with a port range or not; `seed`
    /// picks where in the range it starts (threads and restarts start at different places).
    fn new(single_port: bool, range: Option<(u16, u16)>, seed: u64) -> Ports {
        match (single_port, range) {
            (true, _) => Ports::Listening,
            (false, None) => Ports::Any,
            (false, Some((low, high))) => {
                let (low, high) = (low.max(1), high.max(low.max(1)));
                let span = u32::from(high - low) + 1;
                Ports::Range {
                    low,
                    high,
                    next: low + (seed % u64::from(span)) as u16,
                }
            }
        }
    }

    /// A socket on `local`'s address and a port of the range (or any port); `AddrInUse` when
    /// no port of the range was free among those tried.
    fn bind(&mut self, local: SocketAddr) -> io::Result<StdUdpSocket> {
        let mut addr = local;
        match self {
            Ports::Listening | Ports::Any => {
                addr.set_port(0);
                bind_udp(addr, false)
            }
            Ports::Range { low, high, next } => {
                let span = u32::from(*high - *low) + 1;
                for _ in 0..span.min(Self::TRIES) {
                    let port = *next;
                    *next = if *next >= *high { *low } else { *next + 1 };
                    addr.set_port(port);
                    match bind_udp(addr, false) {
                        Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                        r => return r,
                    }
                }
                Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("no free port in {low}:{high}"),
                ))
            }
        }
    }
}
