//! `boot`: a `BootClient` fed arbitrary datagrams (raw bytes, or well-formed DATA, OACK and
//! ERROR packets with arbitrary fields) from the server or from strangers, and arbitrary waits
//! and timer ticks, with arbitrary options, destination and output buffer sizes.
//!
//! The same input runs twice, over a destination filled with 0x00 and then with 0xFF, each
//! inside a larger buffer whose tail is a guard. Invariants:
//! * nothing panics; every datagram written fits the output buffer;
//! * both runs do the same (same statuses, same outcome);
//! * nothing is written past the destination (the guard is intact), and within it exactly the
//!   first `bytes()` bytes are written (they agree between the runs, the rest kept its fill);
//! * a finished transfer's count is `bytes()`; once known, the outcome never changes.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tftp_proto::boot::{BootClient, BootConfig, Status};
use tftp_proto::Instant;

const SERVER: &str = "10.0.0.2:69";
/// Who sends a datagram: the server's well-known port, its TID, strangers.
const SENDERS: [&str; 4] = [
    "10.0.0.2:50000",
    "10.0.0.2:69",
    "10.0.0.2:50001",
    "10.0.0.9:50000",
];
const GUARD: usize = 64;

#[derive(Debug, Arbitrary)]
struct Input {
    blksize: Option<u16>,
    windowsize: Option<u16>,
    timeout: Option<u8>,
    tsize: bool,
    retransmit_ms: u16,
    max_retries: u8,
    dest_len: u16,
    out_len: u16,
    steps: Vec<Step>,
}

#[derive(Debug, Arbitrary)]
enum Step {
    Raw {
        from: u8,
        bytes: Vec<u8>,
    },
    Data {
        from: u8,
        block: u16,
        len: u16,
        fill: u8,
    },
    Oack {
        from: u8,
        pairs: Vec<(u8, u64)>,
    },
    Error {
        from: u8,
        code: u16,
    },
    Wait {
        millis: u16,
    },
    Timeout,
}

const NAMES: [&[u8]; 6] = [
    b"blksize",
    b"timeout",
    b"tsize",
    b"windowsize",
    b"rollover",
    b"BlkSize",
];

fn build(step: &Step) -> Option<(usize, Vec<u8>)> {
    Some(match step {
        Step::Raw { from, bytes } => (usize::from(*from), bytes.clone()),
        Step::Data {
            from,
            block,
            len,
            fill,
        } => {
            let mut d = vec![0, 3];
            d.extend_from_slice(&block.to_be_bytes());
            d.extend(std::iter::repeat_n(*fill, usize::from(*len % 1500)));
            (usize::from(*from), d)
        }
        Step::Oack { from, pairs } => {
            let mut d = vec![0, 6];
            for (name, value) in pairs {
                d.extend_from_slice(NAMES[usize::from(*name) % NAMES.len()]);
                d.push(0);
                d.extend_from_slice(value.to_string().as_bytes());
                d.push(0);
            }
            (usize::from(*from), d)
        }
        Step::Error { from, code } => {
            let mut d = vec![0, 5];
            d.extend_from_slice(&code.to_be_bytes());
            d.extend_from_slice(b"no\0");
            (usize::from(*from), d)
        }
        Step::Wait { .. } | Step::Timeout => return None,
    })
}

/// One run over a destination filled with `fill`: the statuses, the outcome, the memory.
fn run(
    input: &Input,
    fill: u8,
) -> (
    Vec<Status>,
    Option<Result<usize, tftp_proto::boot::BootError>>,
    usize,
    Vec<u8>,
) {
    let dest_len = usize::from(input.dest_len % 8192);
    let mut mem = vec![fill; dest_len + GUARD];
    mem[dest_len..].fill(0x5A);
    let config = BootConfig {
        blksize: input.blksize,
        windowsize: input.windowsize,
        timeout: input.timeout,
        tsize: input.tsize,
        retransmit: Duration::from_millis(u64::from(input.retransmit_ms)),
        max_retries: input.max_retries % 8,
    };
    let server: SocketAddr = SERVER.parse().unwrap();
    let senders: Vec<SocketAddr> = SENDERS.iter().map(|s| s.parse().unwrap()).collect();
    let mut out = vec![0u8; usize::from(input.out_len % 700)];
    let (dest, _) = mem.split_at_mut(dest_len);
    let mut c = BootClient::new(server, b"image.bin", dest, config);
    let mut now = Instant::ZERO;
    let mut statuses = Vec::new();
    let check = |s: Status, out: &[u8]| match s {
        Status::Idle => {}
        Status::Send(n) | Status::Reply(n) => assert!(n >= 4 && n <= out.len(), "{s:?} of {}", out.len()),
    };
    let mut last_outcome = None;
    match c.start(now, &mut out) {
        Ok(n) => assert!(n <= out.len() && n <= 512),
        Err(_) => assert!(c.outcome().is_some()),
    }
    for step in &input.steps {
        let s = match step {
            Step::Wait { millis } => {
                now += Duration::from_millis(u64::from(*millis));
                c.handle_timeout(now, &mut out)
            }
            Step::Timeout => {
                if let Some(d) = c.poll_timeout() {
                    now = now.max(d);
                }
                c.handle_timeout(now, &mut out)
            }
            _ => {
                let (from, d) = build(step).unwrap();
                c.handle_datagram(now, senders[from % senders.len()], &d, &mut out)
            }
        };
        check(s, &out);
        statuses.push(s);
        if let Some(o) = last_outcome {
            assert_eq!(c.outcome(), Some(o), "the outcome changed");
        }
        last_outcome = c.outcome();
        if let Some(Ok(n)) = c.outcome() {
            assert_eq!(n, c.bytes());
        }
        assert!(c.bytes() <= dest_len);
    }
    let (outcome, bytes) = (c.outcome(), c.bytes());
    drop(c);
    assert!(
        mem[dest_len..].iter().all(|&b| b == 0x5A),
        "written past the destination"
    );
    mem.truncate(dest_len);
    (statuses, outcome, bytes, mem)
}

fuzz_target!(|input: Input| {
    let (s0, o0, n0, m0) = run(&input, 0x00);
    let (s1, o1, n1, m1) = run(&input, 0xFF);
    assert_eq!(s0, s1);
    assert_eq!(o0, o1);
    assert_eq!(n0, n1);
    // Exactly the first `n` bytes were written.
    assert_eq!(m0[..n0], m1[..n0], "the received bytes differ");
    assert!(m0[n0..].iter().all(|&b| b == 0x00), "written past the count");
    assert!(m1[n0..].iter().all(|&b| b == 0xFF), "written past the count");
});
