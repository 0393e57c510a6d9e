//! The TFTP-shaped UDP ceiling on loopback: a minimal sender and receiver with no protocol and no
//! file I/O — `payload + 4`-byte datagrams, a 4-byte reply after every window, 4 MiB socket
//! buffers, sender and receiver pinned to different CPUs. It is what any TFTP implementation could
//! reach at best with the same option set; `benches/peers.sh` prints our throughput as a share of it.
//!
//! Run: `cargo bench --bench udp_ceiling` (env `TFTP_BENCH_BYTES`, default 256 MiB per set).
//! A lost datagram would stall a window: the receiver then re-requests it after 20 ms, and the
//! number of such stalls is reported.

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

/// Moves `total` bytes as `blksize` blocks in windows of `window`; returns (seconds, stalls).
fn run(total: u64, blksize: usize, window: u64) -> (f64, u64) {
    let rx = socket();
    let tx = socket();
    let rx_addr = rx.local_addr().unwrap();
    let tx_addr = tx.local_addr().unwrap();
    let blocks = total.div_ceil(blksize as u64);
    let receiver = std::thread::spawn(move || {
        pin(1);
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
        stalls
    });
    pin(0);
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
    let secs = start.elapsed().as_secs_f64();
    let stalls = receiver.join().unwrap();
    (secs, stalls)
}

fn main() {
    let total: u64 = std::env::var("TFTP_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256 << 20);
    println!(
        "udp_ceiling: {} MiB per option set, sender CPU 0, receiver CPU 1",
        total >> 20
    );
    for (bs, win) in [(512usize, 1u64), (1468, 1), (1468, 16), (65464, 1), (65464, 64)] {
        let (secs, stalls) = run(total, bs, win);
        println!(
            "ceiling {bs}x{win}: {:.1} MB/s ({stalls} stalls)",
            total as f64 / secs / 1e6
        );
    }
}
