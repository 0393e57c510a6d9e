//! `boot::BootClient` against the engine's octet download (`Transfer::client`, RRQ): each downloads the same file from
//! the crate's own server engine over the same kind of network (lossless, or dropping,
//! duplicating and reordering datagrams, with strangers butting in), in many random scenarios.
//!
//! Both must deliver the file byte for byte. On a lossless network, where no timer fires, both
//! must also send exactly the same datagrams (the same request, the same ACKs in the same
//! order). Under faults the ACKs may differ by design: `BootClient` has a fixed retransmission
//! interval (the engine's adapts), re-acknowledges a block repeated many times only once (the
//! engine each time), and does not dally after its final ACK (see the `boot` module docs).
// The simulated files are `Vec<u8>`, a `Storage` under the `std` feature.
#![cfg(feature = "std")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::Rng;
use proptest::prelude::*;
use tftp_proto::boot::{BootClient, BootConfig, Status};
use tftp_proto::engine::{ClientRequest, Config, ServerPolicy, Transfer, TransferMode, Transmit};
use tftp_proto::{Instant, Options, Packet, RequestKind};

const SERVER: &str = "192.0.2.1:69";
const TID: &str = "192.0.2.1:50001";
const ME: &str = "192.0.2.9:40000";
/// On another host: a stranger on the server's host answering before the server does would
/// be taken for the server (RFC 1350: the first answer from the server's address fixes its TID).
const STRANGER: &str = "192.0.2.77:50001";
/// Retries for the engine (and the server): a lossy scenario must not time out by bad luck.
const RETRIES: u8 = 16;
/// Retries for `BootClient`, whose interval stays 1 s: as patient as the engine, whose interval
/// backs off to 5 s (1 + 2 + 4 + 13 x 5 = 72 s), so that it outlasts the server's backed-off
/// retransmissions (a server does not answer a repeated ACK: only its timer resends a lost
/// block).
const BOOT_RETRIES: u8 = 80;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The two clients behind one interface: datagrams out as `(destination, bytes)`.
trait Client {
    fn start(&mut self, now: Instant) -> Vec<(SocketAddr, Vec<u8>)>;
    fn datagram(&mut self, now: Instant, from: SocketAddr, d: &[u8]) -> Vec<(SocketAddr, Vec<u8>)>;
    fn timeout(&mut self, now: Instant) -> Vec<(SocketAddr, Vec<u8>)>;
    fn deadline(&self) -> Option<Instant>;
    /// `Some(Ok(bytes))` once the download is over and nothing more needs sending.
    fn result(&self) -> Option<Result<usize, String>>;
}

struct Engine(Transfer<'static, Vec<u8>>);

impl Engine {
    fn drain(&mut self, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut buf = vec![0u8; 2048];
        let mut out = Vec::new();
        while let Some(Transmit { destination, len }) = self.0.poll_transmit(now, &mut buf) {
            out.push((destination, buf[..len].to_vec()));
        }
        while self.0.poll_event().is_some() {}
        out
    }
}

impl Client for Engine {
    fn start(&mut self, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
        self.drain(now)
    }
    fn datagram(&mut self, now: Instant, from: SocketAddr, d: &[u8]) -> Vec<(SocketAddr, Vec<u8>)> {
        self.0.handle_datagram(now, from, d);
        self.drain(now)
    }
    fn timeout(&mut self, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
        self.0.handle_timeout(now);
        self.drain(now)
    }
    fn deadline(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }
    fn result(&self) -> Option<Result<usize, String>> {
        if !self.0.is_finished() {
            return None;
        }
        Some(match self.0.outcome()? {
            Ok(n) => Ok(n as usize),
            Err(e) => Err(format!("{e}")),
        })
    }
}

struct Boot<'a> {
    c: BootClient<'a>,
    out: Vec<u8>,
}

impl Boot<'_> {
    fn sent(&self, from: SocketAddr, status: Status) -> Vec<(SocketAddr, Vec<u8>)> {
        match status {
            Status::Idle => vec![],
            Status::Send(n) => vec![(self.c.peer(), self.out[..n].to_vec())],
            Status::Reply(n) => vec![(from, self.out[..n].to_vec())],
        }
    }
}

impl Client for Boot<'_> {
    fn start(&mut self, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
        let n = self.c.start(now, &mut self.out).unwrap();
        vec![(self.c.peer(), self.out[..n].to_vec())]
    }
    fn datagram(&mut self, now: Instant, from: SocketAddr, d: &[u8]) -> Vec<(SocketAddr, Vec<u8>)> {
        let s = self.c.handle_datagram(now, from, d, &mut self.out);
        self.sent(from, s)
    }
    fn timeout(&mut self, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
        let s = self.c.handle_timeout(now, &mut self.out);
        self.sent(self.c.peer(), s)
    }
    fn deadline(&self) -> Option<Instant> {
        self.c.poll_timeout()
    }
    fn result(&self) -> Option<Result<usize, String>> {
        Some(self.c.outcome()?.map_err(|e| format!("{e:?}")))
    }
}

/// The network's faults.
#[derive(Debug, Clone, Copy)]
struct Faults {
    loss: f64,
    dup: f64,
    reorder: bool,
    /// Chance that a stranger replays a datagram meant for the client.
    stranger: f64,
}

const CLEAN: Faults = Faults {
    loss: 0.0,
    dup: 0.0,
    reorder: false,
    stranger: 0.0,
};

/// What one simulated download did.
struct Run {
    result: Result<usize, String>,
    /// Every datagram the client sent to the server (its address or TID), in order.
    to_server: Vec<Vec<u8>>,
}

/// Downloads `file` with `client` from a server engine; `seed` drives the network.
fn simulate(
    client: &mut dyn Client,
    file: &'static [u8],
    policy: ServerPolicy,
    faults: Faults,
    seed: u64,
) -> Run {
    let mut rng = Rng::new(seed);
    let (server_addr, tid, me, stranger) = (addr(SERVER), addr(TID), addr(ME), addr(STRANGER));
    let mut now = Instant::ZERO;
    let mut server: Option<Transfer<'static, &'static [u8]>> = None;
    let mut to_server: Vec<Vec<u8>> = Vec::new();
    let mut to_client: Vec<Vec<u8>> = Vec::new();
    let mut log = Vec::new();
    let mut buf = vec![0u8; 70_000];

    let mut send = |out: Vec<(SocketAddr, Vec<u8>)>, to_server: &mut Vec<Vec<u8>>, rng: &mut Rng| {
        for (to, d) in out {
            if to == stranger {
                assert_eq!(
                    d.get(..4),
                    Some(&[0, 5, 0, 5][..]),
                    "only ERROR 5 goes to a stranger"
                );
                continue;
            }
            assert!(to == server_addr || to == tid, "datagram to {to}");
            log.push(d.clone());
            if rng.chance(faults.loss) {
                continue;
            }
            if rng.chance(faults.dup) {
                to_server.push(d.clone());
            }
            to_server.push(d);
        }
    };

    send(client.start(now), &mut to_server, &mut rng);
    for _ in 0..10_000_000u64 {
        if let Some(r) = client.result() {
            return Run {
                result: r,
                to_server: log,
            };
        }
        if to_server.is_empty() && to_client.is_empty() {
            // Nothing in flight: the earliest timer fires.
            let next = [client.deadline(), server.as_ref().and_then(|s| s.poll_timeout())]
                .into_iter()
                .flatten()
                .min()
                .expect("an unfinished client has a deadline");
            now = now.max(next);
            send(client.timeout(now), &mut to_server, &mut rng);
            if let Some(s) = server.as_mut() {
                s.handle_timeout(now);
            }
        } else {
            now += Duration::from_micros(rng.range(0, 2_000));
            if faults.reorder && to_server.len() > 1 {
                let i = rng.range(0, to_server.len() as u64 - 1) as usize;
                let d = to_server.remove(i);
                to_server.push(d);
            }
            for d in std::mem::take(&mut to_server) {
                match server.as_mut() {
                    Some(s) => s.handle_datagram(now, me, &d),
                    None => {
                        let Ok(Packet::Rrq(req)) = Packet::parse(&d) else {
                            panic!("first datagram is not an RRQ")
                        };
                        let config = Config {
                            max_retries: RETRIES,
                            ..Config::default()
                        };
                        server = Some(Transfer::server(
                            now,
                            me,
                            RequestKind::Read,
                            &req,
                            file,
                            &policy,
                            config,
                        ));
                    }
                }
            }
            if faults.reorder && to_client.len() > 1 {
                let i = rng.range(0, to_client.len() as u64 - 1) as usize;
                let d = to_client.remove(i);
                to_client.push(d);
            }
            for d in std::mem::take(&mut to_client) {
                if rng.chance(faults.stranger) {
                    let out = client.datagram(now, stranger, &d);
                    send(out, &mut to_server, &mut rng);
                }
                if rng.chance(faults.loss) {
                    continue;
                }
                let copies = if rng.chance(faults.dup) { 2 } else { 1 };
                for _ in 0..copies {
                    let out = client.datagram(now, tid, &d);
                    send(out, &mut to_server, &mut rng);
                }
            }
        }
        if let Some(s) = server.as_mut() {
            while let Some(t) = s.poll_transmit(now, &mut buf) {
                to_client.push(buf[..t.len].to_vec());
            }
            while s.poll_event().is_some() {}
        }
    }
    panic!("the download did not end");
}

/// One scenario, both clients; checks the files and, on a clean network, the datagrams.
fn both(file: &'static [u8], options: Options, policy: ServerPolicy, faults: Faults, seed: u64) {
    let server = addr(SERVER);
    let config = Config {
        max_retries: RETRIES,
        ..Config::default()
    };
    let mut engine = Engine(
        Transfer::client(
            Instant::ZERO,
            server,
            ClientRequest {
                kind: RequestKind::Read,
                filename: b"image.bin",
                mode: TransferMode::Octet,
                options,
            },
            Vec::new(),
            config,
        )
        .unwrap(),
    );
    let e = simulate(&mut engine, file, policy, faults, seed);

    let mut dest = vec![0xA5u8; file.len() + 100];
    let boot_config = BootConfig {
        blksize: options.blksize,
        windowsize: options.windowsize,
        timeout: options.timeout,
        tsize: options.tsize.is_some(),
        retransmit: Duration::from_secs(1),
        max_retries: BOOT_RETRIES,
    };
    let mut boot = Boot {
        c: BootClient::new(server, b"image.bin", &mut dest[..file.len() + 50], boot_config),
        out: vec![0u8; 600],
    };
    let b = simulate(&mut boot, file, policy, faults, seed);
    drop(boot);

    let label = format!("{} bytes, {options:?}, {faults:?}, seed {seed}", file.len());
    assert_eq!(e.result, Ok(file.len()), "engine: {label}");
    assert_eq!(b.result, Ok(file.len()), "boot: {label}");
    assert!(
        engine.0.storage()[..] == file[..],
        "engine's file differs: {label}"
    );
    assert!(dest[..file.len()] == file[..], "boot's file differs: {label}");
    assert!(
        dest[file.len()..].iter().all(|&x| x == 0xA5),
        "boot wrote past the file: {label}"
    );
    if faults.loss == 0.0 && faults.dup == 0.0 && !faults.reorder {
        // The same request, then the same ACKs (block numbers) in the same order.
        assert_eq!(
            e.to_server.len(),
            b.to_server.len(),
            "datagram counts differ: {label}"
        );
        for (i, (x, y)) in e.to_server.iter().zip(&b.to_server).enumerate() {
            assert_eq!(x, y, "datagram {i} differs: {label}");
        }
        assert!(b.to_server.len() >= 2, "{label}");
    }
}

/// A file of `len` pseudo-random bytes, leaked for the server engine.
fn file(len: usize, seed: u64) -> &'static [u8] {
    Rng::new(seed).bytes(len).leak()
}

fn options_strategy() -> impl Strategy<Value = Options> {
    (
        prop::option::of(prop::sample::select(vec![8u16, 9, 16, 100, 512, 1000, 1428])),
        prop::option::of(prop::sample::select(vec![1u16, 2, 3, 4, 8, 16, 64])),
        prop::option::of(1u8..=3),
        any::<bool>(),
    )
        .prop_map(|(blksize, windowsize, timeout, tsize)| Options {
            blksize,
            windowsize,
            timeout,
            tsize: tsize.then_some(0),
            rollover: None,
        })
}

fn policy_strategy() -> impl Strategy<Value = ServerPolicy> {
    (
        prop::sample::select(vec![65464u16, 600, 16, 8]),
        prop::sample::select(vec![64u16, 4, 1]),
        any::<bool>(),
    )
        .prop_map(|(max_blksize, max_windowsize, allow)| ServerPolicy {
            max_blksize,
            max_windowsize,
            allow_timeout: allow,
            allow_tsize: allow,
            ..ServerPolicy::default()
        })
}

fn faults_strategy() -> impl Strategy<Value = Faults> {
    prop_oneof![
        2 => Just(CLEAN),
        1 => (prop::sample::select(vec![0.0, 0.02, 0.1]), prop::sample::select(vec![0.0, 0.05, 0.2]), any::<bool>(), prop::sample::select(vec![0.0, 0.02]))
            .prop_map(|(loss, dup, reorder, stranger)| Faults { loss, dup, reorder, stranger }),
    ]
}

/// The block size a server under `policy` grants for `options` (what the file sizes straddle).
fn granted(options: &Options, policy: &ServerPolicy) -> (usize, usize) {
    let bs = options.blksize.map_or(512, |b| b.min(policy.max_blksize.max(8)));
    let ws = options
        .windowsize
        .map_or(1, |w| w.min(policy.max_windowsize.max(1)));
    (usize::from(bs), usize::from(ws))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Files around block and window boundaries, every option, any network.
    #[test]
    fn boot_client_matches_the_engine(
        options in options_strategy(),
        policy in policy_strategy(),
        faults in faults_strategy(),
        windows in 0usize..6,
        extra in 0usize..3,
        delta in -1isize..=1,
        seed in any::<u64>(),
    ) {
        let (bs, ws) = granted(&options, &policy);
        let len = ((windows * ws + extra) * bs).saturating_add_signed(delta);
        both(file(len, seed), options, policy, faults, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Past 65,535 blocks: the block number rolls over to 0.
    #[test]
    fn boot_client_matches_the_engine_past_65535_blocks(
        windowsize in prop::sample::select(vec![1u16, 4, 16, 64]),
        faults in faults_strategy(),
        blocks in 65_530usize..66_200,
        delta in -1isize..=1,
        seed in any::<u64>(),
    ) {
        let options = Options { blksize: Some(8), windowsize: Some(windowsize), tsize: Some(0), ..Options::NONE };
        let len = (blocks * 8).saturating_add_signed(delta);
        both(file(len, seed), options, ServerPolicy::default(), faults, seed);
    }
}

#[test]
fn fixed_scenarios() {
    let every = Options {
        blksize: Some(1000),
        windowsize: Some(4),
        timeout: Some(1),
        tsize: Some(0),
        rollover: None,
    };
    let lossy = Faults {
        loss: 0.1,
        dup: 0.1,
        reorder: true,
        stranger: 0.02,
    };
    for (i, (len, options, faults)) in [
        (0, Options::NONE, CLEAN),
        (511, Options::NONE, CLEAN),
        (512, Options::NONE, CLEAN),
        (70_000, every, CLEAN),
        (70_000, every, lossy),
        (4000, every, CLEAN),
        (
            65_536 * 8,
            Options {
                blksize: Some(8),
                windowsize: Some(16),
                ..Options::NONE
            },
            CLEAN,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        both(
            file(len, i as u64),
            options,
            ServerPolicy::default(),
            faults,
            i as u64,
        );
    }
}
