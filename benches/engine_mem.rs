//! A 1 GiB transfer between a client and a server engine in memory (no sockets), at blksize 1468
//! and 65464, reported in GB/s next to a plain memcpy of the same bytes measured in the same run.
//!
//! Run: `cargo bench --bench engine_mem` (set `TFTP_BENCH_BYTES` to change the size).
//! The sender reads each block straight into the datagram buffer (one copy) and the receiver
//! writes it straight to storage (one copy): two copies per byte against memcpy's one.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant as WallInstant};

use tftp_proto::engine::{ClientRequest, Config, ServerPolicy, Transfer, TransferMode};
use tftp_proto::storage::{Storage, StorageError};
use tftp_proto::{Instant, Options, Packet, RequestKind};

const CHUNK: usize = 64 << 20;

/// A virtual file of `len` bytes that repeats a 64 MiB pattern.
struct Source<'a> {
    pattern: &'a [u8],
    len: u64,
}

impl Storage for Source<'_> {
    fn size(&mut self) -> Option<u64> {
        Some(self.len)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, StorageError> {
        let n = (self.len.saturating_sub(offset)).min(buf.len() as u64) as usize;
        let start = (offset % CHUNK as u64) as usize;
        let first = n.min(CHUNK - start);
        buf[..first].copy_from_slice(&self.pattern[start..start + first]);
        buf[first..n].copy_from_slice(&self.pattern[..n - first]);
        Ok(n)
    }
}

/// Writes into a reused 64 MiB buffer (like a page cache), checking order.
struct Sink<'a> {
    mem: &'a mut [u8],
    written: u64,
}

impl Storage for Sink<'_> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        assert_eq!(offset, self.written);
        let start = (offset % CHUNK as u64) as usize;
        let first = data.len().min(CHUNK - start);
        self.mem[start..start + first].copy_from_slice(&data[..first]);
        self.mem[..data.len() - first].copy_from_slice(&data[first..]);
        self.written += data.len() as u64;
        Ok(())
    }
}

fn transfer(pattern: &[u8], sink_mem: &mut [u8], len: u64, blksize: u16, windowsize: u16) -> Duration {
    let client_addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let server_addr: SocketAddr = "127.0.0.1:69".parse().unwrap();
    let tid: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let now = Instant::ZERO;
    let request = ClientRequest {
        kind: RequestKind::Read,
        filename: b"bench.bin",
        mode: TransferMode::Octet,
        options: Options {
            blksize: Some(blksize),
            windowsize: Some(windowsize),
            ..Options::NONE
        },
    };
    let sink = Sink {
        mem: sink_mem,
        written: 0,
    };
    let mut client = Transfer::client(now, server_addr, request, sink, Config::default()).unwrap();
    let mut cbuf = vec![0u8; 65536];
    let mut sbuf = vec![0u8; 65536];
    let tx = client.poll_transmit(now, &mut cbuf).unwrap();
    let Ok(Packet::Rrq(req)) = Packet::parse(&cbuf[..tx.len]) else {
        panic!()
    };
    let policy = ServerPolicy {
        max_windowsize: windowsize,
        ..ServerPolicy::default()
    };
    let source = Source { pattern, len };
    let mut server = Transfer::server(
        now,
        client_addr,
        RequestKind::Read,
        &req,
        source,
        &policy,
        Config::default(),
    );
    let start = WallInstant::now();
    loop {
        let mut moved = false;
        while let Some(tx) = server.poll_transmit(now, &mut sbuf) {
            client.handle_datagram(now, tid, &sbuf[..tx.len]);
            moved = true;
        }
        while let Some(tx) = client.poll_transmit(now, &mut cbuf) {
            server.handle_datagram(now, client_addr, &cbuf[..tx.len]);
            moved = true;
        }
        while client.poll_event().is_some() {}
        while server.poll_event().is_some() {}
        if !moved {
            break;
        }
    }
    let took = start.elapsed();
    assert_eq!(client.outcome(), Some(Ok(len)), "transfer incomplete");
    took
}

fn memcpy(pattern: &[u8], dst: &mut [u8], len: u64) -> Duration {
    let start = WallInstant::now();
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        dst[..n].copy_from_slice(&pattern[..n]);
        black_box(&mut *dst);
        left -= n as u64;
    }
    start.elapsed()
}

fn gbps(len: u64, d: Duration) -> f64 {
    len as f64 / d.as_secs_f64() / 1e9
}

fn main() {
    let len: u64 = std::env::var("TFTP_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let pattern: Vec<u8> = (0..CHUNK)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut sink = vec![0u8; CHUNK];
    let best = |f: &mut dyn FnMut() -> Duration| (0..3).map(|_| f()).min().unwrap();
    let m = best(&mut || memcpy(&pattern, &mut sink, len));
    println!("engine_mem: {} MiB in memory, best of 3", len >> 20);
    println!("  memcpy                      {:6.2} GB/s", gbps(len, m));
    for (bs, ws) in [(1468u16, 1u16), (1468, 16), (65464, 1), (65464, 64)] {
        let d = best(&mut || transfer(&pattern, &mut sink, len, bs, ws));
        println!(
            "  engine blksize {bs:5} win {ws:2}  {:6.2} GB/s  ({:.0} % of memcpy)",
            gbps(len, d),
            100.0 * m.as_secs_f64() / d.as_secs_f64()
        );
    }
}
