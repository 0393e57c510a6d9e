//! Admission under a flood: `tftp-proto serve --max-sessions 256` on loopback receives 10,000
//! requests from 1,000 source addresses and ports that never acknowledge anything (what a
//! spoofed flood looks like to the server), evenly spread over two seconds (5,000 requests a
//! second), and real clients ask for a 1 MB file in the middle of it, one after the other.
//! Reports, for each real client, whether it was served at its first request (no ERROR, no
//! retry), how long its download took and the flood's progress then; then the server's log
//! counts (sessions displaced, transfers completed).
//!
//!     cargo bench --bench flood [-- REQUESTS CAP CLIENTS MILLIS]
//!
//! (`TFTP_PROTO_BIN=path` runs another `tftp-proto` binary; `benches/device_bundle.sh` packs
//! this benchmark's binary with it for a machine without cargo.)
//!
//! Defaults: 10,000 requests, cap 256, 5 real clients started at 20 %, 35 %, 50 %, 65 % and 80 %
//! of the flood, 2,000 ms for the flood (0: as fast as the sender can). A flood faster than the
//! server can read overflows its socket's receive buffer, and the kernel then drops requests,
//! real ones included, before the server sees them. Not a timed test: the figures depend on
//! the machine.
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tftp_proto::adapter::client::Client;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let requests = args.first().copied().unwrap_or(10_000);
    let cap = args.get(1).copied().unwrap_or(256);
    let clients = args.get(2).copied().unwrap_or(5);
    let millis = args.get(3).copied().unwrap_or(2000) as u64;
    let root = std::env::temp_dir().join(format!("tftp-flood-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let content: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 512) as u8).collect();
    std::fs::write(root.join("boot.img"), &content).unwrap();

    // The server binary: this build's, or `TFTP_PROTO_BIN` (a bundle on another machine).
    let bin = std::env::var_os("TFTP_PROTO_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_tftp-proto").into());
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--max-sessions",
            &cap.to_string(),
        ])
        .arg("--root")
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tftp-proto serve (build it first: cargo build --release)");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let log = Arc::new(Mutex::new((0usize, 0usize, 0usize)));
    let counts = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("serving ") {
                let addr = line
                    .rsplit(" on ")
                    .next()
                    .and_then(|r| r.split(' ').next())
                    .and_then(|a| a.trim_end_matches(',').parse::<SocketAddr>().ok());
                let _ = tx.send(addr);
            }
            if !line.contains("displaced") && std::env::var_os("FLOOD_VERBOSE").is_some() {
                eprintln!("server: {line}");
            }
            let mut c = counts.lock().unwrap();
            c.0 += usize::from(line.contains("displaced"));
            c.1 += usize::from(line.contains(" ok"));
            c.2 += 1;
        }
    });
    let server = rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();

    // 1,000 flood sources: 10 loopback addresses x 100 ports.
    let sources: Vec<UdpSocket> = (0..1000)
        .map(|i| {
            let s = UdpSocket::bind(format!("127.0.{}.{}:0", 10 + i / 100, 2 + i % 100)).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let sent = Arc::new(AtomicUsize::new(0));
    let flood_sent = Arc::clone(&sent);
    let started = Instant::now();
    let flood_end = Arc::new(Mutex::new(None));
    let end = Arc::clone(&flood_end);
    let flood = std::thread::spawn(move || {
        let mut rx = vec![0u8; 2048];
        for n in 0..requests {
            // Another block size each round: a port's next request is a new request, not a
            // repeat of its last one.
            let mut req = b"\0\x01boot.img\0octet\0".to_vec();
            req.extend_from_slice(format!("blksize\0{}\0", 512 + n / sources.len()).as_bytes());
            let s = &sources[n % sources.len()];
            // Evenly spread: request n leaves at n/requests of the flood's time.
            let due = started + Duration::from_micros(millis * 1000 * n as u64 / requests as u64);
            let wait = due.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            let _ = s.send_to(&req, server);
            flood_sent.store(n + 1, Ordering::Relaxed);
            // Read and drop what the server sends (never acknowledged).
            while s.recv_from(&mut rx).is_ok() {}
        }
        *end.lock().unwrap() = Some(started.elapsed());
        sources
    });
    let mut results = Vec::new();
    for k in 0..clients {
        let at = requests * (20 + 15 * k) / 100;
        while sent.load(Ordering::Relaxed) < at && !flood.is_finished() {
            std::thread::sleep(Duration::from_micros(200));
        }
        let t = Instant::now();
        let got = Client::new(server).get(b"boot.img", Vec::new(), |_| {});
        let took = t.elapsed();
        let during = sent.load(Ordering::Relaxed);
        let ok = matches!(&got, Ok((g, _)) if *g == content);
        println!(
            "real client {k}: started after {at} flood requests: {} in {:.1} ms (flood at {during} when it finished){}",
            if ok { "served at its first request" } else { "NOT served at its first request" },
            took.as_secs_f64() * 1e3,
            match &got {
                Err(e) => format!(": {e}"),
                Ok((_, s)) => format!(", {} retransmissions", s.stats.retransmissions),
            }
        );
        results.push(ok);
    }
    let _sources = flood.join().unwrap();
    let flood_time = flood_end.lock().unwrap().unwrap_or(started.elapsed());
    std::thread::sleep(Duration::from_millis(500));
    let _ = child.kill();
    let _ = child.wait();
    let (displaced, ok, lines) = *log.lock().unwrap();
    println!(
        "flood: {requests} requests in {:.2} s ({:.0}/s) against --max-sessions {cap}; server log: {displaced} sessions displaced, {ok} completed, {lines} lines",
        flood_time.as_secs_f64(),
        requests as f64 / flood_time.as_secs_f64()
    );
    println!(
        "real clients served at their first request: {}/{}",
        results.iter().filter(|&&ok| ok).count(),
        results.len()
    );
    let _ = std::fs::remove_dir_all(&root);
}
