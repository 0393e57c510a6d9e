use std::vec::Vec;

use super::*;
use crate::options::{OptionList, Options};
use crate::wire::{encode_request, Mode, RequestKind};

const T0: Instant = Instant::ZERO;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn server() -> SocketAddr {
    addr("192.0.2.1:69")
}

fn tid() -> SocketAddr {
    addr("192.0.2.1:50000")
}

fn data(block: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0, DATA];
    d.extend_from_slice(&block.to_be_bytes());
    d.extend_from_slice(payload);
    d
}

fn oack(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut d = vec![0, OACK];
    for (n, v) in pairs {
        d.extend_from_slice(n.as_bytes());
        d.push(0);
        d.extend_from_slice(v.as_bytes());
        d.push(0);
    }
    d
}

fn ack_bytes(block: u16) -> [u8; 4] {
    let [hi, lo] = block.to_be_bytes();
    [0, ACK, hi, lo]
}

/// Every option asked: blksize 16, windowsize 4, timeout 2, tsize.
fn every() -> BootConfig {
    BootConfig {
        blksize: Some(16),
        windowsize: Some(4),
        timeout: Some(2),
        tsize: true,
        ..BootConfig::DEFAULT
    }
}

/// A started client and the output buffer.
struct Rig<'a> {
    c: BootClient<'a>,
    out: [u8; 600],
}

impl<'a> Rig<'a> {
    fn new(dest: &'a mut [u8], config: BootConfig) -> Self {
        let mut c = BootClient::new(server(), b"boot.img", dest, config);
        let mut out = [0u8; 600];
        c.start(T0, &mut out).unwrap();
        Rig { c, out }
    }

    /// Feeds `d` from the server's TID at time zero.
    fn feed(&mut self, d: &[u8]) -> Status {
        self.feed_from(tid(), d)
    }

    fn feed_from(&mut self, from: SocketAddr, d: &[u8]) -> Status {
        self.c.handle_datagram(T0, from, d, &mut self.out)
    }

    /// Feeds `d` and expects exactly an ACK of `block` to the server.
    fn expect_ack(&mut self, d: &[u8], block: u16) {
        assert_eq!(self.feed(d), Status::Send(4), "expected ACK {block}");
        assert_eq!(self.out[..4], ack_bytes(block));
    }

    /// Feeds `d` and expects an ERROR `code` to the server, and the transfer failed with `e`.
    fn expect_error(&mut self, d: &[u8], code: u8, e: BootError) {
        let Status::Send(n) = self.feed(d) else {
            panic!("expected ERROR {code}");
        };
        assert!(n >= 5);
        assert_eq!(self.out[..4], [0, ERROR, 0, code]);
        assert_eq!(self.out[n - 1], 0);
        assert_eq!(self.c.outcome(), Some(Err(e)));
        assert_eq!(self.c.poll_timeout(), None);
    }
}

fn engine_request(options: &Options) -> Vec<u8> {
    let mut buf = [0u8; 600];
    let n = encode_request(
        &mut buf,
        RequestKind::Read,
        b"boot.img",
        Mode::Octet,
        options,
        OptionList::EMPTY,
    )
    .unwrap();
    buf[..n].to_vec()
}

#[test]
fn request_matches_the_codec_with_every_option() {
    let mut dest = [0u8; 8];
    let mut c = BootClient::new(server(), b"boot.img", &mut dest, every());
    let mut out = [0u8; 600];
    let n = c.start(T0, &mut out).unwrap();
    let want = engine_request(&Options {
        blksize: Some(16),
        windowsize: Some(4),
        timeout: Some(2),
        tsize: Some(0),
        rollover: None,
    });
    assert_eq!(out[..n], want[..]);
    assert_eq!(
        &out[..n],
        b"\0\x01boot.img\0octet\0blksize\x0016\0timeout\x002\0tsize\x000\0windowsize\x004\0"
    );
    assert_eq!(c.poll_timeout(), Some(T0 + Duration::from_secs(1)));
    assert_eq!(c.outcome(), None);

    for config in [
        BootConfig::DEFAULT,
        BootConfig {
            blksize: Some(65464),
            windowsize: Some(65535),
            timeout: Some(255),
            ..BootConfig::DEFAULT
        },
        BootConfig {
            tsize: true,
            ..BootConfig::DEFAULT
        },
    ] {
        let mut dest = [0u8; 8];
        let mut c = BootClient::new(server(), b"boot.img", &mut dest, config);
        let n = c.start(T0, &mut out).unwrap();
        let options = Options {
            blksize: config.blksize,
            windowsize: config.windowsize,
            timeout: config.timeout,
            tsize: config.tsize.then_some(0),
            rollover: None,
        };
        assert_eq!(out[..n], engine_request(&options)[..], "{config:?}");
    }
}

#[test]
fn a_request_that_cannot_be_written_fails_cleanly() {
    let mut dest = [0u8; 8];
    // The buffer is one byte short, whatever its length.
    let full = b"\0\x01boot.img\0octet\0blksize\x0016\0timeout\x002\0tsize\x000\0windowsize\x004\0".len();
    for len in 0..full {
        let mut out = vec![0xEEu8; len];
        let mut c = BootClient::new(server(), b"boot.img", &mut dest, every());
        assert_eq!(c.start(T0, &mut out), Err(BootError::Request), "buffer of {len}");
        assert_eq!(c.outcome(), Some(Err(BootError::Request)));
        assert_eq!(c.poll_timeout(), None);
    }
    let mut out = [0u8; 2048];
    // A NUL in the name, a request over 512 octets, an invalid block size.
    let long = [b'a'; 500];
    for (name, config) in [
        (&b"a\0b"[..], BootConfig::DEFAULT),
        (&long[..], every()),
        (
            &b"x"[..],
            BootConfig {
                blksize: Some(7),
                ..BootConfig::DEFAULT
            },
        ),
        (
            &b"x"[..],
            BootConfig {
                blksize: Some(65465),
                ..BootConfig::DEFAULT
            },
        ),
    ] {
        let mut c = BootClient::new(server(), name, &mut dest, config);
        assert_eq!(c.start(T0, &mut out), Err(BootError::Request));
        assert_eq!(
            c.handle_datagram(T0, tid(), &data(1, b"x"), &mut out),
            Status::Idle
        );
        assert_eq!(c.outcome(), Some(Err(BootError::Request)));
    }
    // 500 bytes of name fit without options.
    let mut c = BootClient::new(server(), &long, &mut dest, BootConfig::DEFAULT);
    assert_eq!(c.start(T0, &mut out), Ok(2 + 500 + 1 + 6));
}

#[test]
fn oack_with_every_option_is_acknowledged_with_ack_0() {
    let mut dest = [0u8; 100];
    let mut r = Rig::new(&mut dest, every());
    let d = oack(&[
        ("blksize", "16"),
        ("timeout", "2"),
        ("tsize", "100"),
        ("windowsize", "4"),
    ]);
    r.expect_ack(&d, 0);
    assert_eq!((r.c.blksize(), r.c.windowsize()), (16, 4));
    assert_eq!(r.c.peer(), tid());
    // The negotiated timeout is the retransmission interval.
    assert_eq!(r.c.poll_timeout(), Some(T0 + Duration::from_secs(2)));
    // A second OACK is dropped.
    assert_eq!(r.feed(&d), Status::Idle);
    assert_eq!(r.c.outcome(), None);
}

#[test]
fn oack_may_grant_any_subset_and_lower_sizes() {
    type Pairs = &'static [(&'static str, &'static str)];
    let cases: &[(Pairs, u16, u16)] = &[
        (&[], 512, 1),
        (&[("tsize", "5")], 512, 1),
        (&[("blksize", "8")], 8, 1),
        (&[("windowsize", "1")], 512, 1),
        (&[("BlkSize", "0012"), ("WINDOWSIZE", "3")], 12, 3),
        (&[("windowsize", "2"), ("timeout", "2")], 512, 2),
    ];
    for &(pairs, blksize, windowsize) in cases {
        let mut dest = [0u8; 100];
        let mut r = Rig::new(&mut dest, every());
        r.expect_ack(&oack(pairs), 0);
        assert_eq!(
            (r.c.blksize(), r.c.windowsize()),
            (blksize, windowsize),
            "{pairs:?}"
        );
        let interval = if pairs.iter().any(|p| p.0 == "timeout") {
            2
        } else {
            1
        };
        assert_eq!(r.c.poll_timeout(), Some(T0 + Duration::from_secs(interval)));
    }
    // Padding NULs after the last option are tolerated.
    let mut dest = [0u8; 100];
    let mut r = Rig::new(&mut dest, every());
    let mut d = oack(&[("blksize", "10")]);
    d.extend_from_slice(&[0, 0]);
    r.expect_ack(&d, 0);
    assert_eq!(r.c.blksize(), 10);
}

/// An OACK that adds an option not asked for, but only restating its protocol default
/// (`blksize 512`, `windowsize 1`: tftpy's server always adds `blksize`), changes nothing and is
/// accepted; anything else not asked for stays an error (below).
#[test]
fn unrequested_option_at_its_default_value_is_accepted() {
    for pairs in [
        &[("blksize", "512")][..],
        &[("windowsize", "1")],
        &[("BLKSIZE", "512"), ("windowsize", "1")],
    ] {
        let mut dest = [0u8; 100];
        let mut r = Rig::new(&mut dest, BootConfig::DEFAULT);
        r.expect_ack(&oack(pairs), 0);
        assert_eq!((r.c.blksize(), r.c.windowsize()), (512, 1), "{pairs:?}");
        r.expect_ack(&data(1, &[7; 10]), 1);
        assert_eq!(r.c.outcome(), Some(Ok(10)));
    }
}

#[test]
fn a_bad_oack_gets_error_8_and_fails_the_transfer() {
    let bad: &[&[(&str, &str)]] = &[
        &[("blksize", "17")],                    // raised
        &[("blksize", "7")],                     // below the minimum
        &[("blksize", "")],                      // not a number
        &[("blksize", "1x")],                    // not a number
        &[("windowsize", "5")],                  // raised
        &[("windowsize", "0")],                  // below the minimum
        &[("timeout", "3")],                     // changed
        &[("timeout", "1")],                     // changed
        &[("tsize", "-1")],                      // not a number
        &[("tsize", "99999999999999999999999")], // above u64
        &[("rollover", "0")],                    // not asked for
        &[("foo", "1")],                         // unknown
        &[("blksize", "8"), ("blksize", "8")],   // twice
        &[("tsize", "1"), ("TSIZE", "1")],       // twice
        &[("blksizex", "8")],                    // not a known name
    ];
    for pairs in bad {
        let mut dest = [0u8; 100];
        let mut r = Rig::new(&mut dest, every());
        r.expect_error(&oack(pairs), 8, BootError::Options);
        // Nothing more happens.
        assert_eq!(r.feed(&data(1, &[1; 16])), Status::Idle);
        assert_eq!(
            r.c.handle_timeout(T0 + Duration::from_secs(100), &mut r.out),
            Status::Idle
        );
        assert_eq!(r.c.outcome(), Some(Err(BootError::Options)));
    }
    // Options not asked for (other than the defaults, below).
    for pairs in [
        [("blksize", "8")],
        [("blksize", "511")],
        [("blksize", "1468")],
        [("windowsize", "2")],
        [("timeout", "2")],
        [("tsize", "0")],
    ] {
        let mut dest = [0u8; 100];
        let mut r = Rig::new(&mut dest, BootConfig::DEFAULT);
        r.expect_error(&oack(&pairs), 8, BootError::Options);
    }
    // Malformed OACKs: a missing NUL, an empty name, a name without value.
    for d in [
        &b"\0\x06blksize\x008"[..],
        b"\0\x06blksize",
        b"\0\x06\0\x008\0",
        b"\0\x06blksize\0",
        b"\0\x06tsize\x001\0x",
    ] {
        let mut dest = [0u8; 100];
        let mut r = Rig::new(&mut dest, every());
        r.expect_error(d, 8, BootError::Options);
    }
}

#[test]
fn tsize_larger_than_the_destination_gets_error_3() {
    let mut dest = [0u8; 100];
    let mut r = Rig::new(&mut dest, every());
    r.expect_error(&oack(&[("tsize", "101")]), 3, BootError::TooLarge);
    let mut dest = [0u8; 100];
    let mut r = Rig::new(&mut dest, every());
    r.expect_ack(&oack(&[("tsize", "100")]), 0);
}

#[test]
fn plain_data_1_means_the_server_ignored_the_options() {
    let mut dest = [0u8; 2000];
    let mut r = Rig::new(&mut dest, every());
    // Any other block is not an answer to the request.
    assert_eq!(r.feed(&data(2, &[1; 512])), Status::Idle);
    assert_eq!(r.feed(&data(0, &[1; 512])), Status::Idle);
    assert_eq!(r.feed(b"\0\x04\0\0"), Status::Idle);
    r.expect_ack(&data(1, &[1; 512]), 1);
    assert_eq!((r.c.blksize(), r.c.windowsize()), (512, 1));
    assert_eq!(r.c.peer(), tid());
    // No OACK after the data started.
    assert_eq!(r.feed(&oack(&[("blksize", "16")])), Status::Idle);
    r.expect_ack(&data(2, &[2; 512]), 2);
    r.expect_ack(&data(3, &[3; 100]), 3);
    assert_eq!(r.c.outcome(), Some(Ok(1124)));
    assert!(dest[..512].iter().all(|&b| b == 1));
    assert!(dest[1024..1124].iter().all(|&b| b == 3));
    assert!(dest[1124..].iter().all(|&b| b == 0));
}

#[test]
fn the_first_answer_fixes_the_tid_and_strangers_get_error_5() {
    let mut dest = [0u8; 100];
    let mut r = Rig::new(&mut dest, every());
    // Before the first answer, another host is ignored.
    assert_eq!(r.feed_from(addr("192.0.2.7:50000"), &oack(&[])), Status::Idle);
    assert_eq!(r.c.peer(), server());
    r.expect_ack(&oack(&[("blksize", "16"), ("windowsize", "2")]), 0);
    let strangers = [
        addr("192.0.2.1:50001"),
        addr("192.0.2.1:69"),
        addr("192.0.2.7:50000"),
        addr("[2001:db8::1]:50000"),
    ];
    for s in strangers {
        for d in [data(1, &[9; 16]), data(2, &[9; 16]), oack(&[]), vec![1], vec![]] {
            let Status::Reply(n) = r.feed_from(s, &d) else {
                panic!("no ERROR 5 for {s}");
            };
            assert_eq!(&r.out[..n], b"\0\x05\0\x05Unknown transfer ID\0");
        }
        // An ERROR is never answered, and does not end the transfer.
        assert_eq!(r.feed_from(s, b"\0\x05\0\x01nope\0"), Status::Idle);
        assert_eq!(r.c.outcome(), None);
    }
    // The transfer carries on undisturbed: the strangers' block 1 was not taken.
    assert_eq!(r.feed(&data(1, &[1; 16])), Status::Idle);
    r.expect_ack(&data(2, &[2; 16]), 2);
    r.expect_ack(&data(3, &[3; 1]), 3);
    assert_eq!(r.c.outcome(), Some(Ok(33)));
    // A stranger after the end still hears ERROR 5; a short output buffer gets a cut message.
    let mut out = [0u8; 7];
    let d = data(3, &[3; 1]);
    assert_eq!(
        r.c.handle_datagram(T0, strangers[0], &d, &mut out),
        Status::Reply(7)
    );
    assert_eq!(&out, b"\0\x05\0\x05Un\0");
    assert_eq!(
        r.c.handle_datagram(T0, strangers[0], &d, &mut out[..4]),
        Status::Idle
    );
    assert_eq!(
        dest[..33],
        [[1u8; 16], [2u8; 16]]
            .concat()
            .into_iter()
            .chain([3])
            .collect::<Vec<_>>()[..]
    );
}

#[test]
fn windows_are_acknowledged_at_their_end_at_the_last_block_and_after_a_gap() {
    let mut dest = [0u8; 1000];
    let mut r = Rig::new(&mut dest, every());
    r.expect_ack(&oack(&[("blksize", "16"), ("windowsize", "4")]), 0);
    for b in 1..=3 {
        assert_eq!(r.feed(&data(b, &[b as u8; 16])), Status::Idle);
    }
    r.expect_ack(&data(4, &[4; 16]), 4);
    // A gap (6 lost): ACK 5, once.
    assert_eq!(r.feed(&data(5, &[5; 16])), Status::Idle);
    r.expect_ack(&data(7, &[7; 16]), 5);
    assert_eq!(r.feed(&data(8, &[8; 16])), Status::Idle);
    // The server restarts after 5: a new window.
    for b in 6..=8 {
        assert_eq!(r.feed(&data(b, &[b as u8; 16])), Status::Idle);
    }
    r.expect_ack(&data(9, &[9; 16]), 9);
    // The last block ends the window early.
    assert_eq!(r.feed(&data(10, &[10; 16])), Status::Idle);
    r.expect_ack(&data(11, &[11; 3]), 11);
    assert_eq!(r.c.outcome(), Some(Ok(163)));
    for b in 1..=10u8 {
        let at = usize::from(b - 1) * 16;
        assert!(dest[at..at + 16].iter().all(|&x| x == b), "block {b}");
    }
    assert_eq!(dest[160..164], [11, 11, 11, 0]);
}

#[test]
fn duplicates_and_old_blocks_are_not_acknowledged_one_by_one() {
    let mut dest = [0u8; 1000];
    let mut r = Rig::new(&mut dest, every());
    r.expect_ack(&oack(&[("blksize", "16"), ("windowsize", "4")]), 0);
    for b in 1..=2 {
        assert_eq!(r.feed(&data(b, &[b as u8; 16])), Status::Idle);
    }
    // Duplicates within a window: nothing.
    for b in [2, 1, 2, 2, 1] {
        assert_eq!(r.feed(&data(b, &[0xAA; 16])), Status::Idle);
    }
    assert_eq!(r.feed(&data(3, &[3; 16])), Status::Idle);
    r.expect_ack(&data(4, &[4; 16]), 4);
    // Our ACK 4 was lost: the server repeats its window 1..=4 (it timed out). We hold all of
    // it: its first block is acknowledged at once, the rest of the run is ignored.
    r.expect_ack(&data(1, &[0xAA; 16]), 4);
    for b in [2, 3, 4, 4] {
        assert_eq!(r.feed(&data(b, &[0xAA; 16])), Status::Idle, "block {b}");
    }
    // A run that starts in the middle of what we hold: the held blocks count towards its
    // window (3, 4, 5, 6), acknowledged at its end.
    assert_eq!(r.feed(&data(3, &[0xAA; 16])), Status::Idle);
    assert_eq!(r.feed(&data(4, &[0xAA; 16])), Status::Idle);
    // Blocks "before" the first one are dropped.
    assert_eq!(r.feed(&data(65535, &[0xAA; 16])), Status::Idle);
    assert_eq!(r.feed(&data(0, &[0xAA; 16])), Status::Idle);
    assert_eq!(r.feed(&data(5, &[5; 16])), Status::Idle);
    r.expect_ack(&data(6, &[6; 16]), 6);
    for b in 7..=9 {
        assert_eq!(r.feed(&data(b, &[b as u8; 16])), Status::Idle);
    }
    r.expect_ack(&data(10, &[10; 16]), 10);
    // The block last acknowledged, alone (the server's tail probe): re-acknowledged once;
    // further copies are ignored (our timer resends the ACK if needed).
    r.expect_ack(&data(10, &[0xAA; 16]), 10);
    assert_eq!(r.feed(&data(10, &[0xAA; 16])), Status::Idle);
    assert_eq!(r.feed(&data(10, &[0xAA; 16])), Status::Idle);
    r.expect_ack(&data(11, &[11; 2]), 11);
    assert_eq!(r.c.outcome(), Some(Ok(10 * 16 + 2)));
    // After the end, the final block again is re-acknowledged (our final ACK was lost).
    r.expect_ack(&data(11, &[11; 2]), 11);
    assert_eq!(r.feed(&data(10, &[10; 16])), Status::Idle);
    assert_eq!(r.feed(&data(12, &[12; 2])), Status::Idle);
    assert_eq!(r.c.outcome(), Some(Ok(10 * 16 + 2)));
    assert_eq!(r.c.poll_timeout(), None);
    assert!(!dest.contains(&0xAA));
}

#[test]
fn windowsize_1_reacknowledges_a_repeated_block_once() {
    let mut dest = [0u8; 1000];
    let mut r = Rig::new(&mut dest, BootConfig::DEFAULT);
    r.expect_ack(&data(1, &[1; 512][..]), 1);
    r.expect_ack(&data(1, &[1; 512][..]), 1);
    assert_eq!(r.feed(&data(1, &[1; 512][..])), Status::Idle);
    // The timer resends the ACK.
    let at = r.c.poll_timeout().unwrap();
    assert_eq!(r.c.handle_timeout(at, &mut r.out), Status::Send(4));
    assert_eq!(r.out[..4], ack_bytes(1));
}

#[test]
fn block_numbers_roll_over_to_0_past_65535() {
    let blocks = 70_000u32;
    let mut dest = vec![0u8; blocks as usize * 8 + 8];
    let mut r = Rig::new(
        &mut dest,
        BootConfig {
            blksize: Some(8),
            windowsize: Some(16),
            ..BootConfig::DEFAULT
        },
    );
    r.expect_ack(&oack(&[("blksize", "8"), ("windowsize", "16")]), 0);
    let mut acks = 0;
    for i in 1..=blocks {
        let payload = i.to_le_bytes().repeat(2);
        match r.feed(&data(i as u16, &payload)) {
            Status::Send(4) => {
                assert_eq!(i % 16, 0, "ACK after block {i}");
                assert_eq!(r.out[..4], ack_bytes(i as u16));
                acks += 1;
            }
            s => assert_eq!(s, Status::Idle, "block {i}"),
        }
    }
    assert_eq!(acks, blocks / 16);
    // Old blocks from before the wrap are repeats, not new blocks: the server went back to
    // block 65535, and we hold a whole window from there on.
    r.expect_ack(&data(65535, &[0xAA; 8]), blocks as u16);
    r.expect_ack(&data((blocks + 1) as u16, &[7; 5]), (blocks + 1) as u16);
    assert_eq!(r.c.outcome(), Some(Ok(blocks as usize * 8 + 5)));
    for i in 1..=blocks {
        let at = (i as usize - 1) * 8;
        assert_eq!(dest[at..at + 8], i.to_le_bytes().repeat(2)[..], "block {i}");
    }
}

#[test]
fn data_beyond_the_destination_gets_error_3_and_nothing_past_it_is_written() {
    let mut mem = [0x55u8; 64];
    {
        let (dest, _) = mem.split_at_mut(40);
        let mut r = Rig::new(
            dest,
            BootConfig {
                blksize: Some(16),
                ..BootConfig::DEFAULT
            },
        );
        r.expect_ack(&oack(&[("blksize", "16")]), 0);
        r.expect_ack(&data(1, &[1; 16]), 1);
        r.expect_ack(&data(2, &[2; 16]), 2);
        // 32 + 16 > 40: refused whole.
        r.expect_error(&data(3, &[3; 16]), 3, BootError::TooLarge);
        assert_eq!(r.c.bytes(), 32);
    }
    assert!(mem[32..].iter().all(|&b| b == 0x55));

    // A file exactly as long as the destination fits, ending with an empty block.
    let mut dest = [0u8; 32];
    let mut r = Rig::new(
        &mut dest,
        BootConfig {
            blksize: Some(16),
            tsize: true,
            ..BootConfig::DEFAULT
        },
    );
    r.expect_ack(&oack(&[("blksize", "16"), ("tsize", "32")]), 0);
    r.expect_ack(&data(1, &[1; 16]), 1);
    r.expect_ack(&data(2, &[2; 16]), 2);
    r.expect_ack(&data(3, &[]), 3);
    assert_eq!(r.c.outcome(), Some(Ok(32)));
}

#[test]
fn data_longer_than_the_block_size_gets_error_4() {
    let mut dest = [0u8; 100];
    let mut r = Rig::new(&mut dest, every());
    r.expect_ack(&oack(&[("blksize", "16")]), 0);
    r.expect_error(&data(1, &[1; 17]), 4, BootError::Protocol);
    assert_eq!(r.c.bytes(), 0);
}

#[test]
fn timeouts_retransmit_the_last_packet_then_give_up() {
    let mut dest = [0u8; 100];
    let config = BootConfig {
        retransmit: Duration::from_millis(300),
        max_retries: 3,
        ..every()
    };
    let mut r = Rig::new(&mut dest, config);
    let request = r.out[..70].to_vec();
    let step = Duration::from_millis(300);
    // Early: nothing.
    assert_eq!(r.c.handle_timeout(T0 + step / 2, &mut r.out), Status::Idle);
    // The request again, three times, then failure.
    for _ in 0..3 {
        let now = r.c.poll_timeout().unwrap();
        assert_eq!(now, now.max(T0 + step));
        let Status::Send(n) = r.c.handle_timeout(now, &mut r.out) else {
            panic!("no retransmission");
        };
        assert_eq!(r.out[..n], request[..n]);
        assert_eq!(r.c.poll_timeout(), Some(now + step));
    }
    let now = r.c.poll_timeout().unwrap();
    assert_eq!(r.c.handle_timeout(now, &mut r.out), Status::Idle);
    assert_eq!(r.c.outcome(), Some(Err(BootError::TimedOut)));
    assert_eq!(r.c.poll_timeout(), None);

    // After the OACK: ACK 0 again, then the last ACK; progress resets the count.
    let mut dest = [0u8; 100];
    let mut r = Rig::new(&mut dest, config);
    r.expect_ack(
        &oack(&[("blksize", "16"), ("windowsize", "2"), ("timeout", "2")]),
        0,
    );
    let step = Duration::from_secs(2);
    assert_eq!(r.c.poll_timeout(), Some(T0 + step));
    for _ in 0..3 {
        let now = r.c.poll_timeout().unwrap();
        assert_eq!(r.c.handle_timeout(now, &mut r.out), Status::Send(4));
        assert_eq!(r.out[..4], ack_bytes(0));
    }
    let now = r.c.poll_timeout().unwrap();
    assert_eq!(
        r.c.handle_datagram(now, tid(), &data(1, &[1; 16]), &mut r.out),
        Status::Idle
    );
    assert_eq!(r.c.poll_timeout(), Some(now + step));
    for _ in 0..3 {
        let now = r.c.poll_timeout().unwrap();
        assert_eq!(r.c.handle_timeout(now, &mut r.out), Status::Send(4));
        assert_eq!(r.out[..4], ack_bytes(1));
    }
    let now = r.c.poll_timeout().unwrap();
    assert_eq!(r.c.handle_timeout(now, &mut r.out), Status::Idle);
    assert_eq!(r.c.outcome(), Some(Err(BootError::TimedOut)));
}

#[test]
fn an_error_from_the_server_fails_the_transfer_with_its_code() {
    let mut dest = [0u8; 100];
    let mut r = Rig::new(&mut dest, every());
    assert_eq!(r.feed(b"\0\x05\0\x01File not found\0"), Status::Idle);
    assert_eq!(r.c.outcome(), Some(Err(BootError::Peer(ErrorCode::FileNotFound))));
    assert_eq!(r.c.poll_timeout(), None);

    let mut dest = [0u8; 100];
    let mut r = Rig::new(&mut dest, every());
    r.expect_ack(&oack(&[]), 0);
    // Without its message's NUL, or any message.
    assert_eq!(r.feed(b"\0\x05\x01\x02"), Status::Idle);
    assert_eq!(r.c.outcome(), Some(Err(BootError::Peer(ErrorCode::Other(258)))));
}

#[test]
fn garbage_is_dropped_without_effect() {
    let mut dest = [0u8; 100];
    let mut r = Rig::new(&mut dest, every());
    r.expect_ack(&oack(&[("blksize", "16"), ("windowsize", "2")]), 0);
    assert_eq!(r.feed(&data(1, &[1; 16])), Status::Idle);
    let deadline = r.c.poll_timeout();
    for d in [
        &b""[..],
        b"\0",
        b"\x01\x03\0\x02",
        b"\0\x03\0",
        b"\0\x05\0",
        b"\0\x04\0\x01",
        b"\0\x01file\0octet\0",
        b"\0\x02file\0octet\0",
        b"\0\x07\0\x02abc",
        b"\xff\xff\xff\xff",
        b"\0\x06blksize\x008\0",
    ] {
        assert_eq!(r.feed(d), Status::Idle, "{d:?}");
        assert_eq!(r.c.outcome(), None);
        assert_eq!(r.c.bytes(), 16);
        assert_eq!(r.c.poll_timeout(), deadline);
    }
    r.expect_ack(&data(2, &[2; 16]), 2);
}

#[test]
fn a_short_output_buffer_never_panics() {
    let mut dest = [0u8; 100];
    let mut r = Rig::new(&mut dest, every());
    let d = oack(&[("blksize", "16")]);
    assert_eq!(r.c.handle_datagram(T0, tid(), &d, &mut [0u8; 3]), Status::Idle);
    assert_eq!(r.c.outcome(), None);
    assert_eq!(
        r.c.handle_datagram(T0, tid(), &data(1, &[1; 17]), &mut []),
        Status::Idle
    );
    assert_eq!(r.c.outcome(), Some(Err(BootError::Protocol)));
}
