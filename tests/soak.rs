//! Fault-injection soak: many concurrent downloads and uploads (mixed blksize, windowsize, tsize,
//! some netascii) against one std server, each through a UDP relay on loopback that loses,
//! duplicates, reorders and delays datagrams with seeded probabilities.
//!
//! Every transfer must end byte-identical or fail cleanly (the client with a timeout, the
//! server's report with a failure): never a corrupted file, never a committed partial upload,
//! never a partial local file. Afterwards the server holds no session, the root holds no upload
//! temporary file (`.*.tftp-upload-*`), and the process has exactly the file descriptors and
//! sockets it had before the transfers (the server still running) and before the server.
//!
//! The relay ([`Relay`], one per transfer) sits between one client and the server: the client
//! talks to the relay's front socket only, and the relay forwards from its back socket to the
//! server's listening port until the first answer from another server port teaches it the
//! transfer's TID; from then on it forwards to that TID. Every server answer reaches the client
//! from the same front socket, as the client locks onto the first answer's port. Datagrams from
//! other server ports (a session started by a late duplicate of the request) get ERROR 5 from the
//! back socket, as the client itself would answer them; ERRORs from the listening port after
//! that are dropped (never answered).
//!
//! Bounded in time: the default run (150 transfers, 8 at a time) takes well under a minute in a
//! debug build. Longer runs: `TFTP_SOAK_SECS=600 cargo test --release --test soak -- --nocapture`
//! keeps starting transfers for that many seconds; `TFTP_SOAK_TRANSFERS=N` changes the count of
//! the default run, `TFTP_SOAK_SEED=N` the seed (the run prints it). This file holds one test
//! only, so nothing else in the process opens descriptors meanwhile.
#![cfg(all(feature = "std", target_os = "linux"))]

#[path = "common/loopback.rs"]
mod loopback;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loopback::*;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use tftp_proto::adapter::client::{Client, ClientError};
use tftp_proto::engine::{Config, TransferError, TransferMode};
use tftp_proto::server::TransferResult;
use tftp_proto::{Options, RequestKind};

// ---- randomness -------------------------------------------------------------------------------

/// SplitMix64.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

// ---- the relay ----------------------------------------------------------------------------------

/// What the relay does to each datagram, independently per datagram and direction.
#[derive(Debug, Clone, Copy)]
struct Faults {
    loss: f64,
    duplicate: f64,
    reorder: f64,
    /// Largest hold-back of a reordered datagram (or of a duplicate's copy).
    max_delay: Duration,
    /// A straggler: held back far longer (a late duplicate of a request can then reach the
    /// server after its session ended and start a second one).
    straggle: f64,
    /// Largest hold-back of a straggler.
    straggle_delay: Duration,
    /// Chance that a request (a datagram to the listening port) gets a straggling copy: a late
    /// duplicate request, which may start a second session after the first one ended.
    late_request: f64,
    /// Datagrams held at most; beyond it arrivals are dropped (a router queue).
    queue: usize,
}

#[derive(Debug, Default, Clone, Copy)]
struct RelayStats {
    forwarded: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    straggled: u64,
    overflowed: u64,
    strays_answered: u64,
}

impl RelayStats {
    fn add(&mut self, o: &RelayStats) {
        self.forwarded += o.forwarded;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.straggled += o.straggled;
        self.overflowed += o.overflowed;
        self.strays_answered += o.strays_answered;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dir {
    ToServer,
    ToClient,
}

/// A lossy, duplicating, reordering relay between one client and the server.
struct Relay {
    /// Where the client sends its request.
    front: SocketAddr,
    /// The relay's address as the server sees it (the client's TID, for the server).
    back: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<RelayStats>>>,
}

const FRONT: Token = Token(0);
const BACK: Token = Token(1);

impl Relay {
    fn start(server: SocketAddr, seed: u64, faults: Faults) -> io::Result<Relay> {
        let mut front = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
        let mut back = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
        let (front_addr, back_addr) = (front.local_addr()?, back.local_addr()?);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut poll = Poll::new()?;
            poll.registry().register(&mut front, FRONT, Interest::READABLE)?;
            poll.registry().register(&mut back, BACK, Interest::READABLE)?;
            let mut r = RelayState {
                server,
                client: None,
                tid: None,
                rng: Rng(seed),
                faults,
                queue: BinaryHeap::new(),
                seq: 0,
                stats: RelayStats::default(),
            };
            let mut events = Events::with_capacity(16);
            let mut buf = vec![0u8; 65536];
            while !flag.load(Ordering::SeqCst) {
                let now = Instant::now();
                let wait = r
                    .queue
                    .peek()
                    .map_or(Duration::from_millis(10), |Reverse((at, ..))| {
                        at.saturating_duration_since(now)
                    })
                    .min(Duration::from_millis(10));
                match poll.poll(&mut events, Some(wait)) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => other?,
                }
                // Drain both sockets whatever the events said (edge-triggered).
                loop {
                    match front.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            if *r.client.get_or_insert(from) == from {
                                r.enqueue(Dir::ToServer, &buf[..n]);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => {} // ICMP errors for earlier datagrams
                    }
                }
                loop {
                    match back.recv_from(&mut buf) {
                        Ok((n, from)) => r.on_server_datagram(&back, from, &buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => {}
                    }
                }
                r.release(&front, &back);
            }
            // Whatever is still held is lost with the relay.
            Ok(r.stats)
        });
        Ok(Relay {
            front: front_addr,
            back: back_addr,
            stop,
            thread: Some(thread),
        })
    }

    fn stop(mut self) -> RelayStats {
        self.stop.store(true, Ordering::SeqCst);
        let t = self.thread.take().expect("running");
        t.join().expect("relay panicked").expect("relay failed")
    }
}

/// Relays whose client is done, kept for a while (stragglers still held reach their peer).
struct Lingering {
    relays: Vec<(Instant, Relay)>,
    linger: Duration,
    totals: Arc<Mutex<RelayStats>>,
}

impl Lingering {
    fn new(longest_hold: Duration, totals: Arc<Mutex<RelayStats>>) -> Self {
        Lingering {
            relays: Vec::new(),
            linger: longest_hold + Duration::from_millis(100),
            totals,
        }
    }

    fn push(&mut self, relay: Relay) {
        self.relays.push((Instant::now() + self.linger, relay));
    }

    /// Stops the relays whose time is up (all of them with `all`, after waiting for the last).
    fn reap(&mut self, all: bool) {
        if all {
            if let Some(last) = self.relays.iter().map(|(t, _)| *t).max() {
                std::thread::sleep(last.saturating_duration_since(Instant::now()));
            }
        }
        let now = Instant::now();
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.relays)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        self.relays = keep;
        for (_, relay) in done {
            let stats = relay.stop();
            self.totals.lock().unwrap().add(&stats);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A datagram held back: (release time, sequence, direction, destination, bytes).
type Held = Reverse<(Instant, u64, Dir, SocketAddr, Vec<u8>)>;

struct RelayState {
    server: SocketAddr,
    client: Option<SocketAddr>,
    tid: Option<SocketAddr>,
    rng: Rng,
    faults: Faults,
    queue: BinaryHeap<Held>,
    seq: u64,
    stats: RelayStats,
}

impl RelayState {
    /// Holds `d` until `at`. Its destination is decided now, as the network would have: a
    /// request goes to the listening port even when it arrives after the TID is known.
    fn hold(&mut self, at: Instant, dir: Dir, d: &[u8]) {
        if self.queue.len() >= self.faults.queue {
            self.stats.overflowed += 1;
            return;
        }
        let to = match dir {
            Dir::ToServer => self.tid.unwrap_or(self.server),
            Dir::ToClient => match self.client {
                Some(c) => c,
                None => return,
            },
        };
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, dir, to, d.to_vec())));
    }

    fn enqueue(&mut self, dir: Dir, d: &[u8]) {
        if dir == Dir::ToServer && self.tid.is_none() && self.rng.chance(self.faults.late_request) {
            self.stats.straggled += 1;
            let late = self.faults.straggle_delay.as_micros() as u64 + 1;
            let at = Instant::now() + Duration::from_micros(self.rng.below(late));
            self.hold(at, dir, d);
        }
        if self.rng.chance(self.faults.loss) {
            self.stats.lost += 1;
            return;
        }
        let now = Instant::now();
        let max = self.faults.max_delay.as_micros() as u64 + 1;
        let long = self.faults.straggle_delay.as_micros() as u64 + 1;
        let straggle = self.faults.straggle;
        let delay = |rng: &mut Rng, stats: &mut RelayStats| {
            if rng.chance(straggle) {
                stats.straggled += 1;
                Duration::from_micros(rng.below(long))
            } else {
                Duration::from_micros(rng.below(max))
            }
        };
        let mut at = now;
        if self.rng.chance(self.faults.reorder) {
            self.stats.reordered += 1;
            at += delay(&mut self.rng, &mut self.stats);
        }
        self.hold(at, dir, d);
        if self.rng.chance(self.faults.duplicate) {
            self.stats.duplicated += 1;
            let later = now + delay(&mut self.rng, &mut self.stats);
            self.hold(later, dir, d);
        }
    }

    fn on_server_datagram(&mut self, back: &UdpSocket, from: SocketAddr, d: &[u8]) {
        if from.ip() != self.server.ip() {
            return;
        }
        match self.tid {
            Some(tid) if from == tid => self.enqueue(Dir::ToClient, d),
            // Before the TID is known, refusals from the listening port go through.
            None if from == self.server => self.enqueue(Dir::ToClient, d),
            None => {
                self.tid = Some(from);
                self.enqueue(Dir::ToClient, d);
            }
            // Another port: a stranger to this transfer. ERROR 5, as the client would answer,
            // unless it is an ERROR (never answered) or comes from the listening port.
            Some(_) => {
                if from != self.server && d.get(..2) != Some(&[0, 5]) {
                    self.stats.strays_answered += 1;
                    let _ = back.send_to(b"\x00\x05\x00\x05Unknown transfer ID\x00", from);
                }
            }
        }
    }

    fn release(&mut self, front: &UdpSocket, back: &UdpSocket) {
        let now = Instant::now();
        while self.queue.peek().is_some_and(|Reverse((at, ..))| *at <= now) {
            let Reverse((_, _, dir, to, d)) = self.queue.pop().expect("peeked");
            let sock = if dir == Dir::ToServer { back } else { front };
            // A full socket buffer is one more loss.
            if sock.send_to(&d, to).is_ok() {
                self.stats.forwarded += 1;
            }
        }
    }
}

// ---- the transfers ------------------------------------------------------------------------------

/// The files served, by name, and the texts (netascii) among them.
fn files(seed: u64) -> Vec<(String, Vec<u8>, bool)> {
    let mut out = Vec::new();
    for (i, len) in [0usize, 1, 511, 512, 513, 1468, 4096, 20_000, 70_001, 150_000]
        .iter()
        .enumerate()
    {
        out.push((format!("bin-{len}.bin"), pattern(*len, seed ^ i as u64), false));
    }
    // Text full of the netascii specials: LF, CR, CR LF, NUL, at block edges too.
    let mut rng = Rng(seed ^ 0x7e47);
    for len in [0usize, 511, 513, 9_000, 40_000] {
        let text: Vec<u8> = (0..len)
            .map(|_| match rng.below(10) {
                0 => b'\n',
                1 => b'\r',
                2 => 0,
                _ => b'a' + rng.below(26) as u8,
            })
            .collect();
        out.push((format!("text-{len}.txt"), text, true));
    }
    out
}

#[derive(Debug, Clone)]
struct Plan {
    index: usize,
    upload: bool,
    /// Remote name.
    name: String,
    /// Index into the file set (the content downloaded or uploaded).
    file: usize,
    options: Options,
    netascii: bool,
    /// Download to a local file (atomic rename) rather than into memory.
    to_file: bool,
    /// Upload over an existing file (`allow_overwrite`).
    overwrite: bool,
}

impl Plan {
    /// The transfer mode it asks for.
    fn mode(&self) -> TransferMode {
        if self.netascii {
            TransferMode::Netascii
        } else {
            TransferMode::Octet
        }
    }
}

fn plan(index: usize, rng: &mut Rng, files: &[(String, Vec<u8>, bool)]) -> Plan {
    let upload = rng.chance(0.4);
    let file = rng.below(files.len() as u64) as usize;
    let netascii = files[file].2 && rng.chance(0.7);
    let small = files[file].1.len() <= 4096;
    let blksize = if small {
        rng.pick(&[None, Some(8), Some(64), Some(512), Some(1468)])
    } else {
        rng.pick(&[None, Some(512), Some(1024), Some(1468), Some(8192)])
    };
    let options = Options {
        blksize,
        windowsize: rng.pick(&[None, Some(1), Some(4), Some(16)]),
        tsize: rng.chance(0.5).then_some(0),
        ..Options::NONE
    };
    let overwrite = upload && rng.chance(0.3);
    let name = if upload {
        format!("up-{index}.bin")
    } else {
        files[file].0.clone()
    };
    Plan {
        index,
        upload,
        name,
        file,
        options,
        netascii,
        to_file: !upload && rng.chance(0.3),
        overwrite,
    }
}

/// The original content of an upload target that exists before the upload.
fn original(index: usize) -> Vec<u8> {
    pattern(777 + index, 0x0816 ^ index as u64)
}

#[derive(Debug)]
enum Outcome {
    Ok,
    /// A clean failure: a timeout on our side or the server's.
    CleanFailure(String),
}

/// Timeouts are the only clean way for a transfer to fail on this network.
fn is_clean(e: &ClientError) -> bool {
    match e {
        ClientError::Transfer(TransferError::TimedOut | TransferError::Idle) => true,
        ClientError::Transfer(TransferError::Peer(p)) => {
            p.code.as_u16() == 0 && matches!(p.message(), b"Timed out" | b"Idle timeout")
        }
        _ => false,
    }
}

fn engine_config() -> Config {
    Config {
        initial_rto: Duration::from_millis(200),
        min_rto: Duration::from_millis(20),
        max_rto: Duration::from_millis(800),
        max_retries: 8,
        idle_timeout: Duration::from_secs(20),
        max_dally: Duration::from_millis(500),
        ..Config::default()
    }
}

struct Run {
    server: SocketAddr,
    root: std::path::PathBuf,
    local: std::path::PathBuf,
    files: Vec<(String, Vec<u8>, bool)>,
    faults: Faults,
    seed: u64,
}

/// Runs one planned transfer through a relay of its own; returns the relay's back address (the
/// peer the server saw), what happened, and the relay's counters.
/// The peer the server saw and how the transfer ended, or what went wrong.
type TransferRun = Result<(SocketAddr, Outcome), String>;

fn run_one(run: &Run, p: &Plan, lingering: &mut Lingering) -> TransferRun {
    let relay = Relay::start(
        run.server,
        run.seed ^ (p.index as u64).wrapping_mul(0x51),
        run.faults,
    )
    .map_err(|e| format!("relay: {e}"))?;
    let peer = relay.back;
    let content = &run.files[p.file].1;
    let client = Client::new(relay.front)
        .options(p.options)
        .mode(p.mode())
        .config(engine_config());
    let what = format!("{p:?}");
    let result: Result<(), ClientError> = if p.upload {
        client.put(p.name.as_bytes(), &content[..], |_| {}).map(|_| ())
    } else if p.to_file {
        let target = run.local.join(format!("dl-{}", p.index));
        let r = client.get_file(p.name.as_bytes(), &target, |_| {}).map(|_| ());
        match &r {
            Ok(()) => {
                let got = fs::read(&target).map_err(|e| format!("{what}: {e}"))?;
                if got != *content {
                    return Err(format!("CORRUPTION: {what}: local file differs"));
                }
                fs::remove_file(&target).map_err(|e| e.to_string())?;
            }
            Err(_) if target.exists() => return Err(format!("{what}: a failed get left {target:?}")),
            Err(_) => {}
        }
        r
    } else {
        client
            .get(p.name.as_bytes(), Vec::new(), |_| {})
            .and_then(|(got, _)| {
                if got != *content {
                    return Err(ClientError::Local {
                        path: "CORRUPTION".into(),
                        error: io::Error::other(format!("{} bytes received", got.len())),
                    });
                }
                Ok(())
            })
    };
    // The relay stays a while, for late duplicates and stragglers still held.
    lingering.push(relay);
    let outcome = match result {
        Ok(()) => Outcome::Ok,
        Err(e) if is_clean(&e) => Outcome::CleanFailure(e.to_string()),
        Err(e) => return Err(format!("UNCLEAN: {what}: {e:?}")),
    };
    if p.upload {
        // Whatever the client heard, the target is the whole upload or untouched.
        let path = run.root.join(&p.name);
        let now = fs::read(&path).ok();
        let before = p.overwrite.then(|| original(p.index));
        match (&outcome, now) {
            (Outcome::Ok, Some(f)) if f == *content => {}
            (Outcome::CleanFailure(_), Some(f)) if f == *content || Some(&f) == before.as_ref() => {}
            (Outcome::CleanFailure(_), None) if before.is_none() => {}
            (o, f) => {
                return Err(format!(
                    "CORRUPTION: {what}: {o:?}, the target holds {:?} bytes",
                    f.map(|f| f.len())
                ))
            }
        }
    }
    Ok((peer, outcome))
}

/// The tests of this file run one at a time: the soak counts the process's descriptors and
/// sockets, which another test's relays would change.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn soak_through_a_lossy_duplicating_reordering_relay() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seed: u64 = std::env::var("TFTP_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x50a4);
    let secs: Option<u64> = std::env::var("TFTP_SOAK_SECS").ok().and_then(|s| s.parse().ok());
    let count: usize = std::env::var("TFTP_SOAK_TRANSFERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    const WORKERS: usize = 8;
    let faults = Faults {
        loss: 0.05,
        duplicate: 0.03,
        reorder: 0.08,
        max_delay: Duration::from_millis(30),
        straggle: 0.05,
        straggle_delay: Duration::from_millis(1500),
        late_request: 0.2,
        queue: 128,
    };
    let started = Instant::now();

    let root = TempDir::new("soak-root");
    let local = TempDir::new("soak-local");
    let files = files(seed);
    for (name, content, _) in &files {
        fs::write(root.join(name), content).unwrap();
    }
    let fds_before_server = fd_count();
    let sockets_before_server = socket_count();
    let mut c = config(root.path(), "127.0.0.1:0");
    c.engine = engine_config();
    c.allow_write = true;
    c.allow_overwrite = true;
    let mut server = Harness::start(&c);
    // Let the server thread reach its loop before counting.
    assert!(server.wait_idle(WAIT));
    let fds_idle = fd_count();
    let sockets_idle = socket_count();

    let run = Arc::new(Run {
        server: server.addr(),
        root: root.path().to_path_buf(),
        local: local.path().to_path_buf(),
        files,
        faults,
        seed,
    });
    // Plans are drawn up front (deterministic for a seed); with TFTP_SOAK_SECS more are drawn
    // as long as time remains.
    let next = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<(Plan, TransferRun)>>> = Arc::new(Mutex::new(Vec::new()));
    let totals = Arc::new(Mutex::new(RelayStats::default()));
    let deadline = secs.map(|s| started + Duration::from_secs(s));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (run, next, results) = (Arc::clone(&run), Arc::clone(&next), Arc::clone(&results));
            let totals = Arc::clone(&totals);
            let mut lingering = Lingering::new(run.faults.straggle_delay, totals);
            std::thread::spawn(move || loop {
                lingering.reap(false);
                let i = next.fetch_add(1, Ordering::SeqCst);
                let more = match deadline {
                    Some(d) => Instant::now() < d,
                    None => i < count,
                };
                if !more {
                    lingering.reap(true);
                    return;
                }
                let mut rng = Rng(run.seed ^ (i as u64).wrapping_mul(0x9E37_79B9));
                let p = plan(i, &mut rng, &run.files);
                if p.upload && p.overwrite {
                    fs::write(run.root.join(&p.name), original(i)).unwrap();
                }
                let r = run_one(&run, &p, &mut lingering);
                results.lock().unwrap().push((p, r));
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker panicked");
    }
    let results = std::mem::take(&mut *results.lock().unwrap());

    // The server ends every session: silent peers time out.
    assert!(server.wait_idle(WAIT), "{} sessions left", server.sessions());
    let reports = server.drain_reports();
    let mut problems: Vec<String> = Vec::new();
    let totals = *totals.lock().unwrap();
    let (mut ok, mut clean, mut downloads, mut uploads) = (0, 0, 0, 0);
    let mut by_peer: BTreeMap<SocketAddr, &Plan> = BTreeMap::new();
    for (p, r) in &results {
        if p.upload {
            uploads += 1;
        } else {
            downloads += 1;
        }
        match r {
            Ok((peer, outcome)) => {
                by_peer.insert(*peer, p);
                match outcome {
                    Outcome::Ok => ok += 1,
                    Outcome::CleanFailure(e) => {
                        clean += 1;
                        let server_side: Vec<_> = reports
                            .iter()
                            .filter(|r| r.peer == *peer)
                            .map(|r| &r.result)
                            .collect();
                        eprintln!("clean failure: {e}: {p:?}; server: {server_side:?}");
                    }
                }
            }
            Err(e) => problems.push(e.clone()),
        }
    }
    // Server side: a completed upload is the whole file; a failed one left nothing behind.
    let mut server_completed = 0;
    let mut server_failed = 0;
    for r in &reports {
        match &r.result {
            TransferResult::Completed(_) => server_completed += 1,
            TransferResult::Failed(_) | TransferResult::Declined | TransferResult::Displaced => {
                server_failed += 1
            }
        }
        if r.kind == RequestKind::Write && r.result.is_success() {
            let Some(p) = results
                .iter()
                .map(|(p, _)| p)
                .find(|p| p.name.as_bytes() == r.filename)
            else {
                problems.push(format!("a report for an upload nobody made: {r:?}"));
                continue;
            };
            if fs::read(root.join(&p.name)).ok().as_ref() != Some(&run.files[p.file].1) {
                problems.push(format!("CORRUPTION: completed upload {} differs", p.name));
            }
        }
    }
    // Every upload target, now that late duplicates have come and gone: the whole upload, or
    // untouched (absent, or its original content).
    for (p, r) in &results {
        if !p.upload {
            continue;
        }
        let now = fs::read(root.join(&p.name)).ok();
        let whole = now.as_ref() == Some(&run.files[p.file].1);
        let untouched = now == p.overwrite.then(|| original(p.index));
        let succeeded = matches!(r, Ok((_, Outcome::Ok)));
        if !(whole || (!succeeded && untouched)) {
            problems.push(format!(
                "CORRUPTION at the end: {p:?} holds {:?} bytes",
                now.map(|f| f.len())
            ));
        }
    }
    let temps = temp_files(root.path());
    if !temps.is_empty() {
        problems.push(format!("temporary files left: {temps:?}"));
    }
    let leftovers: Vec<_> = fs::read_dir(local.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    if !leftovers.is_empty() {
        problems.push(format!("local files left: {leftovers:?}"));
    }
    // Descriptors with the server still running, then without it.
    let (fds_after, sockets_after) = (fd_count(), socket_count());
    let stopped = server.stop();
    assert_eq!(stopped.sessions(), 0);
    drop(stopped);
    drop(server);
    let (fds_end, sockets_end) = (fd_count(), socket_count());

    let elapsed = started.elapsed();
    let summary = format!(
        "soak (seed {seed:#x}): {} transfers ({downloads} downloads, {uploads} uploads), {ok} byte-identical, \
         {clean} clean failures, {} problems (corruptions included); server reports: {server_completed} completed, \
         {server_failed} failed; relay: {} forwarded, {} lost, {} duplicated, {} reordered ({} stragglers), {} overflowed, \
         {} strays answered; fds {fds_idle} -> {fds_after} (server running), {fds_before_server} -> {fds_end} \
         (server gone); sockets {sockets_idle} -> {sockets_after}, {sockets_before_server} -> {sockets_end}; \
         temp files {}; {:.1} s",
        results.len(),
        problems.len(),
        totals.forwarded,
        totals.lost,
        totals.duplicated,
        totals.reordered,
        totals.straggled,
        totals.overflowed,
        totals.strays_answered,
        temps.len(),
        elapsed.as_secs_f64(),
    );
    println!("{summary}");
    eprintln!("{summary}");
    assert!(problems.is_empty(), "{summary}\n{}", problems.join("\n"));
    assert_eq!(
        (fds_after, sockets_after),
        (fds_idle, sockets_idle),
        "descriptors leaked while serving"
    );
    assert_eq!(
        (fds_end, sockets_end),
        (fds_before_server, sockets_before_server),
        "descriptors leaked by the server"
    );
    assert!(ok > results.len() / 2, "too few transfers succeeded: {summary}");
    assert!(
        totals.lost > 0 && totals.duplicated > 0 && totals.reordered > 0,
        "{summary}"
    );
    // Every transfer's server session was reported (a late duplicate request may add more).
    for peer in by_peer.keys() {
        if !reports.iter().any(|r| r.peer == *peer) {
            problems.push(format!("no server report for {:?}", by_peer[peer]));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The tokio adapter through the same lossy, duplicating, reordering relay: `AsyncClient`
/// transfers (downloads to memory and to files, uploads, every option, octet and netascii),
/// eight at a time on a multi-thread runtime, against `AsyncServer`. Every transfer ends
/// byte-identical or fails cleanly; every upload target is whole or untouched; nothing
/// temporary is left on either side.
#[cfg(feature = "tokio")]
#[test]
fn tokio_client_and_server_through_the_lossy_relay() {
    use tftp_proto::adapter::tokio_client::AsyncClient;
    use tftp_proto::adapter::tokio_server::AsyncServer;

    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seed: u64 = 0x70c1;
    let count = 48;
    let faults = Faults {
        loss: 0.05,
        duplicate: 0.03,
        reorder: 0.08,
        max_delay: Duration::from_millis(30),
        straggle: 0.02,
        straggle_delay: Duration::from_millis(500),
        late_request: 0.1,
        queue: 128,
    };
    let root = TempDir::new("soak-tokio-root");
    let local = TempDir::new("soak-tokio-local");
    let files = files(seed);
    for (name, content, _) in &files {
        fs::write(root.join(name), content).unwrap();
    }
    let mut c = config(root.path(), "127.0.0.1:0");
    c.engine = engine_config();
    c.allow_write = true;
    c.allow_overwrite = true;
    // The server on a runtime of its own, until told to stop.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = AsyncServer::bind(&c).expect("bind");
            addr_tx.send(server.local_addrs()[0]).unwrap();
            let mut reports = Vec::new();
            server
                .run(
                    async {
                        let _ = stop_rx.await;
                    },
                    |r| reports.push((r.kind, r.filename.to_vec(), r.result.clone())),
                )
                .await
                .expect("server");
            reports
        })
    });
    let server_addr = addr_rx.recv_timeout(WAIT).unwrap();
    let plans: Vec<Plan> = (0..count)
        .map(|i| plan(i, &mut Rng(seed ^ (i as u64).wrapping_mul(0x9E37_79B9)), &files))
        .collect();
    for p in plans.iter().filter(|p| p.upload && p.overwrite) {
        fs::write(root.join(&p.name), original(p.index)).unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let files = Arc::new(files);
    let local_dir = local.path().to_path_buf();
    let outcomes: Vec<(Plan, Result<bool, String>)> = rt.block_on(async {
        let gate = Arc::new(tokio::sync::Semaphore::new(8));
        let mut tasks = Vec::new();
        for p in plans.clone() {
            let (gate, files, local_dir) = (Arc::clone(&gate), Arc::clone(&files), local_dir.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                let relay = Relay::start(server_addr, seed ^ (p.index as u64).wrapping_mul(0x51), faults)
                    .expect("relay");
                let content = &files[p.file].1;
                let client = AsyncClient::new(relay.front)
                    .options(p.options)
                    .mode(p.mode())
                    .config(engine_config());
                let r: Result<(), ClientError> = if p.upload {
                    client
                        .put(p.name.as_bytes(), &content[..], |_| {})
                        .await
                        .map(|_| ())
                } else if p.to_file {
                    let target = local_dir.join(format!("dl-{}", p.index));
                    let r = client
                        .get_file(p.name.as_bytes(), &target, |_| {})
                        .await
                        .map(|_| ());
                    if r.is_ok() && fs::read(&target).ok().as_ref() != Some(content) {
                        return (p, Err("CORRUPTION: the local file differs".to_string()));
                    }
                    r
                } else {
                    match client.get(p.name.as_bytes(), Vec::new(), |_| {}).await {
                        Ok((got, _)) if got != *content => {
                            return (p, Err(format!("CORRUPTION: {} bytes received", got.len())))
                        }
                        other => other.map(|_| ()),
                    }
                };
                // Late duplicates and stragglers may still be held: let them out.
                tokio::time::sleep(faults.straggle_delay).await;
                tokio::task::spawn_blocking(move || relay.stop())
                    .await
                    .expect("relay");
                let outcome = match r {
                    Ok(()) => Ok(true),
                    Err(e) if is_clean(&e) => Ok(false),
                    Err(e) => Err(format!("UNCLEAN: {e:?}")),
                };
                (p, outcome)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("transfer task"));
        }
        out
    });
    let _ = stop_tx.send(());
    let reports = server.join().expect("server thread");
    let mut problems = Vec::new();
    let mut ok = 0;
    for (p, r) in &outcomes {
        match r {
            Ok(true) => ok += 1,
            Ok(false) => {}
            Err(e) => problems.push(format!("{e}: {p:?}")),
        }
        if p.upload {
            let now = fs::read(root.join(&p.name)).ok();
            let whole = now.as_ref() == Some(&files[p.file].1);
            let untouched = now == p.overwrite.then(|| original(p.index));
            if !(whole || (!matches!(r, Ok(true)) && untouched)) {
                problems.push(format!(
                    "CORRUPTION: upload target {} is neither whole nor untouched",
                    p.name
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(ok * 10 >= count * 8, "only {ok} of {count} transfers succeeded");
    // The server completed at least what the clients saw complete.
    let completed = reports.iter().filter(|(_, _, r)| r.is_success()).count();
    assert!(
        completed >= ok,
        "{completed} completed on the server, {ok} at the clients"
    );
    assert!(
        temp_files(root.path()).is_empty(),
        "{:?}",
        temp_files(root.path())
    );
    assert!(
        temp_files(local.path()).is_empty(),
        "{:?}",
        temp_files(local.path())
    );
}
