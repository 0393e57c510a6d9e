//! At least 1,000 concurrent 1 MiB downloads from one server process on loopback, all
//! byte-identical, with the server's peak memory and memory per session.
//!
//! * `library_server_thousand_concurrent_downloads`: one library [`Server`] on a thread, driven
//!   with [`Server::turn`] so its session count can be watched; 1,000 client threads released
//!   together by a barrier, each running the blocking [`Client::get`] into memory. Each client
//!   then holds at its first block until every client has one (a [`Gate`]), so the sessions
//!   overlap however fast one download is (at blksize 65464 one takes milliseconds). Asserts every
//!   download is byte-identical and that the server held at least 1,000 sessions at once (from
//!   [`Server::sessions`] and, independently, from the reports' start and end times). Prints the
//!   VmHWM of the test process, which includes the 1,000 client threads and their buffers.
//! * `cli_server_memory_per_session`: the same downloads from the `tftp-proto serve` binary in a
//!   child process, whose memory is then the server's alone: its VmRSS is sampled from
//!   `/proc/PID/status` before and during the run, the sessions it holds are counted from its open
//!   descriptors (a socket and a file each), and it prints peak RSS, VmHWM and
//!   `(peak RSS - idle RSS) / peak sessions`.
//!
//! Both are `#[ignore]`d (together ~1-2 minutes in release on 2 CPUs; CI runs ignored tests in
//! release): `cargo test --release --test concurrency -- --ignored --nocapture --test-threads=1`
//! or `bash benches/concurrency.sh`. `TFTP_CONCURRENCY` changes the number of clients (default
//! 1000), `TFTP_CONCURRENCY_BLKSIZE` the block size they ask for (default: none, 512) and
//! `TFTP_CONCURRENCY_FILE_LEN` the file's length (default 1 MiB), `TFTP_CONCURRENCY_SERVE_ARGS`
//! more arguments for the CLI server (`--runtime tokio`: the tokio server).
//! The soft `RLIMIT_NOFILE` is raised to the hard limit first (two descriptors per session in the
//! server, one per client).
#![cfg(all(feature = "std", target_os = "linux"))]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tftp_proto::adapter::client::Client;
use tftp_proto::adapter::mio_server::{Server, ServerConfig};
use tftp_proto::engine::{Config, Event};
use tftp_proto::server::TransferResult;
use tftp_proto::Options;

/// The file's length: 1 MiB, or `TFTP_CONCURRENCY_FILE_LEN` bytes (a smaller file lets tens of
/// thousands of clients finish in minutes; the sessions still overlap, see [`Gate`]).
fn file_len() -> usize {
    std::env::var("TFTP_CONCURRENCY_FILE_LEN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 20)
}
const FILE_NAME: &str = "one-mib.bin";

/// The two tests each run 1,000 transfers: never at the same time.
static SERIAL: Mutex<()> = Mutex::new(());

fn clients() -> usize {
    std::env::var("TFTP_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Event-loop threads of the CLI server (`TFTP_CONCURRENCY_THREADS`, default 1).
fn threads() -> u16 {
    std::env::var("TFTP_CONCURRENCY_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn options() -> Options {
    let blksize = std::env::var("TFTP_CONCURRENCY_BLKSIZE")
        .ok()
        .and_then(|v| v.parse().ok());
    Options {
        blksize,
        ..Options::NONE
    }
}

/// Deterministic, non-repeating-looking content (xorshift).
fn content() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..file_len())
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[path = "common/tempdir.rs"]
mod tempdir;
use tempdir::TempDir;

/// Raises the soft descriptor limit to the hard one; returns the new soft limit.
fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
    getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit").0
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One client's result: when it started and ended, and whether its bytes were right.
struct Outcome {
    start: Instant,
    end: Instant,
    error: Option<String>,
}

/// Holds each client at its first block until all `n` clients have one, or for [`Gate::LIMIT`]
/// at most: well inside the server's retransmission budget (1 s, doubling, six tries), so a held
/// session is never given up, and bounded, so a lost client cannot hang the test (the overlap
/// assertions then fail instead).
struct Gate {
    arrived: Mutex<usize>,
    all: Condvar,
    n: usize,
}

impl Gate {
    const LIMIT: Duration = Duration::from_secs(8);

    fn new(n: usize) -> Gate {
        Gate {
            arrived: Mutex::new(0),
            all: Condvar::new(),
            n,
        }
    }

    fn arrive(&self) {
        let mut arrived = self.arrived.lock().unwrap_or_else(|e| e.into_inner());
        *arrived += 1;
        if *arrived >= self.n {
            // Only the last arrival wakes the others: no thundering herd on every arrival.
            self.all.notify_all();
        }
        let deadline = Instant::now() + Self::LIMIT;
        while *arrived < self.n {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            arrived = self
                .all
                .wait_timeout(arrived, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Runs `n` downloads of the test file from `server` at once (a barrier releases them all, a
/// [`Gate`] keeps them all open together).
fn download_all(server: SocketAddr, n: usize, expected: &Arc<Vec<u8>>) -> Vec<Outcome> {
    let barrier = Arc::new(Barrier::new(n));
    let gate = Arc::new(Gate::new(n));
    let options = options();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            let gate = Arc::clone(&gate);
            let expected = Arc::clone(expected);
            thread::Builder::new()
                .stack_size(512 << 10)
                .spawn(move || {
                    // Generous: 1,000 transfers share two CPUs, and a lost request must not fail.
                    let config = Config {
                        max_retries: 10,
                        ..Config::default()
                    };
                    let client = Client::new(server).options(options).config(config);
                    barrier.wait();
                    let start = Instant::now();
                    let mut held = false;
                    let hold = |e: &Event| {
                        if matches!(e, Event::Progress { .. }) && !std::mem::replace(&mut held, true) {
                            gate.arrive();
                        }
                    };
                    let result = client.get(FILE_NAME.as_bytes(), Vec::with_capacity(file_len()), hold);
                    let end = Instant::now();
                    let error = match result {
                        Ok((data, _)) if data == *expected => None,
                        Ok((data, _)) => Some(format!("{} bytes, not the file's", data.len())),
                        Err(e) => Some(e.to_string()),
                    };
                    Outcome { start, end, error }
                })
                .expect("spawn client thread")
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect()
}

/// The largest number of `[start, end)` intervals open at once.
fn peak_overlap(intervals: impl Iterator<Item = (u64, u64)>) -> usize {
    let mut edges: Vec<(u64, i32)> = intervals.flat_map(|(s, e)| [(s, 1), (e, -1)]).collect();
    // Ends before starts at the same instant.
    edges.sort_unstable();
    let (mut open, mut peak) = (0i32, 0i32);
    for (_, d) in edges {
        open += d;
        peak = peak.max(open);
    }
    peak as usize
}

fn check_outcomes(outcomes: &[Outcome]) {
    let failed: Vec<&String> = outcomes.iter().filter_map(|o| o.error.as_ref()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} downloads failed or differ, e.g. {:?}",
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(5)]
    );
}

fn wall(outcomes: &[Outcome]) -> Duration {
    let first = outcomes.iter().map(|o| o.start).min().unwrap();
    let last = outcomes.iter().map(|o| o.end).max().unwrap();
    last - first
}

#[test]
#[ignore = "1,000 concurrent 1 MiB downloads: run in release with --ignored"]
fn library_server_thousand_concurrent_downloads() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = clients();
    let nofile = raise_nofile();
    assert!(
        nofile >= 3 * n as u64 + 64,
        "RLIMIT_NOFILE hard limit {nofile} is too low for {n} sessions"
    );
    let dir = TempDir::new("lib");
    let data = Arc::new(content());
    std::fs::write(dir.join(FILE_NAME), &*data).unwrap();

    let config = ServerConfig {
        root: dir.path().to_path_buf(),
        binds: vec!["127.0.0.1:0".parse().unwrap()],
        max_sessions: n + 100,
        ..ServerConfig::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (addr_tx, addr_rx) = mpsc::channel();
    let server = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut server = Server::bind(&config).expect("bind server");
            addr_tx.send(server.local_addrs()[0]).unwrap();
            let mut events = mio::Events::with_capacity(1024);
            let mut peak = 0;
            let mut spans = Vec::new();
            let mut failed = Vec::new();
            let mut on_report = |r: &tftp_proto::server::TransferReport<()>| {
                spans.push((r.stats.started.as_micros(), r.ended.as_micros()));
                if !matches!(r.result, TransferResult::Completed(_)) {
                    failed.push(format!("{:?}", r.result));
                }
            };
            while !stop.load(Ordering::Relaxed) {
                server
                    .turn(&mut events, Duration::from_millis(50), &mut on_report)
                    .expect("server turn");
                peak = peak.max(server.sessions());
            }
            (peak, spans, failed)
        })
    };
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server address");

    let outcomes = download_all(addr, n, &data);
    // Let the server see the last final ACKs.
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (peak, spans, failed) = server.join().expect("server thread");

    check_outcomes(&outcomes);
    assert!(
        failed.is_empty(),
        "server-side failures: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert_eq!(spans.len(), n, "server reports");
    let overlap = peak_overlap(spans.iter().copied());
    let hwm = status_kib("self", "VmHWM").unwrap_or(0);
    println!(
        "library server: {n} x 1 MiB downloads ({:?}) in {:.2} s, all byte-identical; peak sessions \
         {peak} (Server::sessions), {overlap} (report start/end overlap); test process VmHWM {:.1} MiB \
         (server + {n} client threads and their buffers)",
        options().blksize.unwrap_or(512),
        wall(&outcomes).as_secs_f64(),
        hwm as f64 / 1024.0
    );
    assert!(peak >= n, "peak concurrent sessions {peak} < {n}");
    assert!(overlap >= n, "peak overlapping sessions {overlap} < {n}");
}

/// The `tftp-proto serve` child, killed when dropped.
#[cfg(feature = "cli")]
struct Serve(std::process::Child);

#[cfg(feature = "cli")]
impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User+system CPU seconds process `pid` has used (clock ticks of 1/100 s, as on Linux).
#[cfg(feature = "cli")]
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

/// Descriptors open in process `pid`.
#[cfg(feature = "cli")]
fn fds(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[cfg(feature = "cli")]
fn spawn_serve(root: &std::path::Path, max_sessions: usize) -> (Serve, SocketAddr) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_tftp-proto"))
        .args(["serve", "--bind", "127.0.0.1:0", "--max-sessions"])
        .arg(max_sessions.to_string())
        .args(["--threads", &threads().to_string()])
        // `TFTP_CONCURRENCY_SERVE_ARGS`: more `serve` arguments (`--runtime tokio`).
        .args(
            std::env::var("TFTP_CONCURRENCY_SERVE_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .arg("--root")
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tftp-proto serve");
    let stderr = child.stderr.take().unwrap();
    let serve = Serve(child);
    let (tx, rx) = mpsc::channel();
    // Reads the "serving ROOT on ADDR (...)" line, then drains the per-transfer log lines.
    thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if !sent && line.contains("serving ") {
                let addr = line
                    .rsplit(" on ")
                    .next()
                    .and_then(|r| r.split(' ').next())
                    .and_then(|a| a.trim_end_matches(',').parse::<SocketAddr>().ok());
                let _ = tx.send(addr);
                sent = true;
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the serving line")
        .expect("an address in the serving line");
    (serve, addr)
}

#[cfg(feature = "cli")]
#[test]
#[ignore = "1,000 concurrent 1 MiB downloads: run in release with --ignored"]
fn cli_server_memory_per_session() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = clients();
    let nofile = raise_nofile(); // inherited by the server child (two per session; ours one)
    assert!(
        nofile >= 2 * n as u64 + 64,
        "RLIMIT_NOFILE hard limit {nofile} is too low for {n} sessions"
    );
    let dir = TempDir::new("cli");
    let data = Arc::new(content());
    std::fs::write(dir.join(FILE_NAME), &*data).unwrap();
    let (serve, addr) = spawn_serve(dir.path(), n + 100);
    let pid = serve.0.id().to_string();

    // Idle: after one transfer, so lazily touched memory (buffers, the file path) is counted.
    let warm = Client::new(addr)
        .get(FILE_NAME.as_bytes(), Vec::new(), |_| {})
        .expect("warm-up download");
    assert_eq!(warm.0, *data);
    thread::sleep(Duration::from_millis(300));
    let idle_rss = status_kib(&pid, "VmRSS").expect("server VmRSS");
    let idle_fds = fds(&pid);

    // Sample the server's RSS and descriptors while the clients run.
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (stop, pid) = (Arc::clone(&stop), pid.clone());
        thread::spawn(move || {
            let (mut peak_rss, mut peak_fds, mut rss_at_peak_fds) = (0u64, 0usize, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let rss = status_kib(&pid, "VmRSS").unwrap_or(0);
                let f = fds(&pid);
                peak_rss = peak_rss.max(rss);
                if f > peak_fds {
                    peak_fds = f;
                    rss_at_peak_fds = rss;
                }
                thread::sleep(Duration::from_millis(10));
            }
            (peak_rss, peak_fds, rss_at_peak_fds)
        })
    };
    let outcomes = download_all(addr, n, &data);
    stop.store(true, Ordering::Relaxed);
    let (peak_rss, peak_fds, rss_at_peak_fds) = monitor.join().unwrap();
    let hwm = status_kib(&pid, "VmHWM").expect("server VmHWM");
    let cpu = cpu_seconds(&pid);
    drop(serve);

    check_outcomes(&outcomes);
    // Each session holds its socket and its file open.
    let peak_sessions = peak_fds.saturating_sub(idle_fds) / 2;
    let base = outcomes.iter().map(|o| o.start).min().unwrap();
    let client_overlap = peak_overlap(outcomes.iter().map(|o| {
        (
            o.start.duration_since(base).as_micros() as u64,
            o.end.duration_since(base).as_micros() as u64,
        )
    }));
    let per_session = (peak_rss.max(hwm).saturating_sub(idle_rss)) as f64 / peak_sessions.max(1) as f64;
    println!(
        "cli server (pid {pid}, {} thread(s)): {n} x {} B downloads in {:.2} s, all byte-identical; peak sessions \
         {peak_sessions} (open descriptors {idle_fds} idle -> {peak_fds}), {client_overlap} clients \
         overlapping; server RSS idle {:.1} MiB, peak sampled {:.1} MiB (at the most sessions {:.1} \
         MiB), VmHWM {:.1} MiB; memory per session {:.2} KiB ((peak - idle) / peak sessions); \
         server CPU {cpu:.2} s (user+sys, whole life)",
        threads(),
        file_len(),
        wall(&outcomes).as_secs_f64(),
        idle_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        rss_at_peak_fds as f64 / 1024.0,
        hwm as f64 / 1024.0,
        per_session
    );
    assert!(
        peak_sessions >= n,
        "peak concurrent sessions {peak_sessions} < {n}"
    );
}
