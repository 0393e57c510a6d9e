//! The TFTP-shaped UDP ceiling on loopback: a minimal sender and receiver with no protocol and no
//! file I/O — `payload + 4`-byte datagrams, a 4-byte reply after every window, 4 MiB socket
//! buffers, sender and receiver pinned to different CPUs. It is what any TFTP implementation could
//! reach at best with the same option set; `benches/peers.sh` prints our throughput as a share of it.
//!
//! Run: `cargo bench --bench udp_ceiling`. Environment:
//!
//! * `TFTP_BENCH_BYTES`: bytes per option set (default 256 MiB);
//! * `TFTP_BENCH_SETS`: the option sets, comma-separated `BLKSIZExWINDOWSIZE[:BYTES]`
//!   (default `512x1,1468x1,1468x16,65464x1,65464x64`, each `TFTP_BENCH_BYTES`);
//! * `TFTP_BENCH_CPUS`: `SENDER,RECEIVER` CPUs (default `0,1`, as `benches/peers.sh` pins the
//!   server and the client).
//!
//! Each set prints one machine-readable line:
//! `ceiling blksize=B windowsize=W bytes=N seconds=S mbps=X stalls=K sender_cpu=C receiver_cpu=C
//! sender_s_per_gib=T receiver_s_per_gib=T` (`mbps` is 10^6 bytes per second; `sender_cpu` and
//! `receiver_cpu` name the CPUs; `*_s_per_gib` is each side's user+system CPU time per GiB moved,
//! from `getrusage(RUSAGE_THREAD)`: the least CPU a server or client that sleeps between windows
//! can spend on this option set). A lost datagram would stall a window: the receiver then
//! re-requests it after 20 ms, and the number of such stalls is reported.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let r = socket2::SockRef::from(&s);
    let _ = r.set_recv_buffer_size(4 << 20);
    let _ = r.set_send_buffer_size(4 << 20);
    s
}

/// The calling thread's user+system CPU time so far, in seconds.
fn thread_cpu() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_THREAD)
        .map(|u| {
            let t = |v: nix::sys::time::TimeVal| v.tv_sec() as f64 + v.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(f64::NAN)
}

/// What one option set measured.
struct Outcome {
    seconds: f64,
    stalls: u64,
    /// CPU seconds of the sending thread.
    sender_cpu: f64,
    /// CPU seconds of the receiving thread.
    receiver_cpu: f64,
}

/// Moves `total` bytes as `blksize` blocks in windows of `window`.
fn run(total: u64, blksize: usize, window: u64, cpus: (usize, usize)) -> Outcome {
    let rx = socket();
    let tx = socket();
    let rx_addr = rx.local_addr().unwrap();
    let tx_addr = tx.local_addr().unwrap();
    let blocks = total.div_ceil(blksize as u64);
    let receiver = std::thread::spawn(move || {
        pin(cpus.1);
        let cpu0 = thread_cpu();
        rx.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut buf = vec![0u8; blksize + 4];
        let mut next = 1u64;
        let mut stalls = 0;
        while next <= blocks {
            match rx.recv_from(&mut buf) {
                Ok((n, _)) if n >= 4 => {
                    let b = u64::from(u16::from_be_bytes([buf[2], buf[3]]));
                    if b == next % 65536 {
                        next += 1;
                        if (next - 1).is_multiple_of(window) || next > blocks {
                            let ack = ((next - 1) % 65536) as u16;
                            let _ = rx.send_to(&[0, 4, (ack >> 8) as u8, ack as u8], tx_addr);
                        }
                    }
                }
                _ => {
                    stalls += 1;
                    let ack = ((next - 1) % 65536) as u16;
                    let _ = rx.send_to(&[0, 4, (ack >> 8) as u8, ack as u8], tx_addr);
                }
            }
        }
        (stalls, thread_cpu() - cpu0)
    });
    pin(cpus.0);
    let cpu0 = thread_cpu();
    tx.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut pkt = vec![0xA5u8; blksize + 4];
    pkt[..2].copy_from_slice(&[0, 3]);
    let mut acked = 0u64;
    let mut ack = [0u8; 4];
    let start = Instant::now();
    while acked < blocks {
        let end = (acked + window).min(blocks);
        for b in acked + 1..=end {
            pkt[2..4].copy_from_slice(&((b % 65536) as u16).to_be_bytes());
            let _ = tx.send_to(&pkt, rx_addr);
        }
        while let Ok((n, _)) = tx.recv_from(&mut ack) {
            if n != 4 {
                continue;
            }
            let a = u64::from(u16::from_be_bytes([ack[2], ack[3]]));
            // Resolve the 16-bit number near what was sent.
            let mut full = (acked & !0xffff) | a;
            if full < acked {
                full += 65536;
            }
            if full > acked && full <= end {
                acked = full;
                break;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let sender_cpu = thread_cpu() - cpu0;
    let (stalls, receiver_cpu) = receiver.join().unwrap();
    Outcome {
        seconds,
        stalls,
        sender_cpu,
        receiver_cpu,
    }
}

/// Parses `BLKSIZExWINDOWSIZE[:BYTES]`.
fn parse_set(s: &str, default_bytes: u64) -> Option<(usize, u64, u64)> {
    let (set, bytes) = match s.split_once(':') {
        Some((set, bytes)) => (set, bytes.trim().parse().ok()?),
        None => (s, default_bytes),
    };
    let (bs, win) = set.trim().split_once('x')?;
    let (bs, win): (usize, u64) = (bs.parse().ok()?, win.parse().ok()?);
    (bs > 0 && win > 0 && bytes > 0).then_some((bs, win, bytes))
}

fn main() {
    let total: u64 = std::env::var("TFTP_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256 << 20);
    let sets =
        std::env::var("TFTP_BENCH_SETS").unwrap_or_else(|_| "512x1,1468x1,1468x16,65464x1,65464x64".into());
    let sets: Vec<(usize, u64, u64)> = sets
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_set(s, total).unwrap_or_else(|| panic!("bad TFTP_BENCH_SETS entry {s:?}")))
        .collect();
    let cpus = std::env::var("TFTP_BENCH_CPUS").unwrap_or_else(|_| "0,1".into());
    let cpus = cpus
        .split_once(',')
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
        .expect("TFTP_BENCH_CPUS is SENDER,RECEIVER");
    println!(
        "# udp_ceiling: sender CPU {}, receiver CPU {}; one line per option set",
        cpus.0, cpus.1
    );
    for (bs, win, bytes) in sets {
        let o = run(bytes, bs, win, cpus);
        let per_gib = |cpu: f64| cpu * (1u64 << 30) as f64 / bytes as f64;
        println!(
            "ceiling blksize={bs} windowsize={win} bytes={bytes} seconds={:.3} mbps={:.1} stalls={} sender_cpu={} receiver_cpu={} sender_s_per_gib={:.2} receiver_s_per_gib={:.2}",
            o.seconds,
            bytes as f64 / o.seconds / 1e6,
            o.stalls,
            cpus.0,
            cpus.1,
            per_gib(o.sender_cpu),
            per_gib(o.receiver_cpu)
        );
    }
}
