//! `options`: option negotiation, both ends, with arbitrary requests, policies and OACKs.
//!
//! Input layout (raw bytes, so seeds can be written by hand): one flag byte (bit 0: write
//! request; 1: `allow_timeout`; 2: `allow_tsize`; 3: `allow_rollover`; 4: the file size is known;
//! 5: a write size limit applies), `max_blksize` and `max_windowsize` (u16 big-endian), the file
//! size and the write size limit (u64 big-endian), then the request's raw option bytes, a 0xFF
//! byte, and the raw bytes of an OACK's option list (missing bytes read as zero).
//!
//! Invariants:
//! * `Options::parse_request` of any option list, then `server_negotiate` under any policy:
//!   the OACK holds only options the client requested; `blksize` and `windowsize` are never
//!   raised (above the request or the policy cap); `timeout` and `rollover` are echoed exactly;
//!   `tsize` is the file size on a read and the echo on a write, refused (ERROR 3) only over the
//!   write limit; the parameters match the OACK, with defaults for what it leaves out; the OACK
//!   encodes into a 516-byte buffer.
//! * The client accepts that OACK (encoded, then parsed) and ends up with the same parameters.
//! * `client_accept_oack` of arbitrary OACK bytes: when it accepts, every option in the OACK was
//!   requested and known, its `blksize`/`windowsize` are not above the request, `timeout` and
//!   `rollover` equal the request, and omitted options take their defaults (512, 1).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tftp_proto::engine::{client_accept_oack, server_negotiate, ServerPolicy};
use tftp_proto::options::{DEFAULT_BLKSIZE, MIN_BLKSIZE};
use tftp_proto::{encode_oack, ErrorCode, OptionList, OptionName, Options, RequestKind};

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader(data);
    let [flags] = r.bytes::<1>();
    let max_blksize = u16::from_be_bytes(r.bytes());
    let max_windowsize = u16::from_be_bytes(r.bytes());
    let file_size = u64::from_be_bytes(r.bytes());
    let max_write = u64::from_be_bytes(r.bytes());
    let rest = r.0;
    let (request_raw, oack_raw) = match rest.iter().position(|&b| b == 0xFF) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let kind = if flags & 1 != 0 {
        RequestKind::Write
    } else {
        RequestKind::Read
    };
    let policy = ServerPolicy {
        max_blksize,
        max_windowsize,
        allow_timeout: flags & 2 != 0,
        allow_tsize: flags & 4 != 0,
        allow_rollover: flags & 8 != 0,
        max_write_size: (flags & 32 != 0).then_some(max_write),
    };
    let file_size = (flags & 16 != 0).then_some(file_size);

    // ---- the server's side -------------------------------------------------------------
    if let Ok(list) = OptionList::parse(request_raw) {
        let requested = Options::parse_request(&list).options;
        check_server(kind, &requested, file_size, &policy);
    }

    // ---- the client's side, with arbitrary OACK bytes ------------------------------------
    // What the client asked: the known options of the request bytes, decoded leniently (a
    // client only ever asks valid values).
    let asked = OptionList::parse(request_raw)
        .map(|l| Options::parse_request(&l).options)
        .unwrap_or(Options::NONE);
    if let Ok(oack) = OptionList::parse(oack_raw) {
        if let Ok(p) = client_accept_oack(kind, &asked, &oack) {
            let got = Options::parse_strict(&oack).expect("accepted an invalid OACK");
            for o in oack.iter() {
                let name = OptionName::from_name(o.name).expect("accepted an unknown option");
                // Unrequested, an option may only restate its default (blksize 512, windowsize 1).
                let restates_default = match name {
                    OptionName::Blksize => got.blksize == Some(DEFAULT_BLKSIZE),
                    OptionName::Windowsize => got.windowsize == Some(1),
                    _ => false,
                };
                assert!(asked.has(name) || restates_default, "accepted unrequested {name}");
            }
            // A value in the OACK is never above the request; an omitted one takes its default
            // (512 even after asking for less: RFC 2347 says unacknowledged options do not apply).
            assert_eq!(p.blksize, got.blksize.unwrap_or(DEFAULT_BLKSIZE));
            assert!(
                got.blksize
                    .is_none_or(|g| asked.blksize.map_or(g == DEFAULT_BLKSIZE, |b| g <= b)),
                "blksize raised"
            );
            assert_eq!(p.windowsize, got.windowsize.unwrap_or(1));
            assert!(
                got.windowsize
                    .is_none_or(|g| asked.windowsize.map_or(g == 1, |w| g <= w)),
                "windowsize raised"
            );
            assert!(p.blksize >= MIN_BLKSIZE && p.windowsize >= 1);
            if got.timeout.is_some() {
                assert_eq!(p.timeout, asked.timeout, "timeout changed");
            }
            if got.rollover.is_some() {
                assert_eq!(p.rollover, asked.rollover, "rollover changed");
            }
            match kind {
                RequestKind::Read => assert_eq!(p.tsize, got.tsize),
                RequestKind::Write => assert_eq!(p.tsize, asked.tsize),
            }
        }
    }
});

fn check_server(kind: RequestKind, requested: &Options, file_size: Option<u64>, policy: &ServerPolicy) {
    let n = match server_negotiate(kind, requested, file_size, policy) {
        Ok(n) => n,
        Err(refusal) => {
            assert_eq!(refusal.code, ErrorCode::DiskFull);
            assert_eq!(kind, RequestKind::Write);
            let (t, max) = (requested.tsize, policy.max_write_size);
            assert!(
                policy.allow_tsize && t.zip(max).is_some_and(|(t, m)| t > m),
                "refused {requested:?}"
            );
            return;
        }
    };
    let (oack, params) = (n.oack, n.params);
    for name in OptionName::ALL {
        if oack.has(name) {
            assert!(requested.has(name), "acknowledged unrequested {name}");
        }
    }
    if let Some(b) = oack.blksize {
        assert!(b <= requested.blksize.expect("requested"), "blksize raised");
        assert!(b <= policy.max_blksize.max(MIN_BLKSIZE), "blksize above the cap");
        assert!(b >= MIN_BLKSIZE);
    }
    if let Some(w) = oack.windowsize {
        assert!(w <= requested.windowsize.expect("requested"), "windowsize raised");
        assert!(
            w <= policy.max_windowsize.max(1) && w >= 1,
            "windowsize above the cap"
        );
    }
    assert_eq!(oack.timeout, requested.timeout.filter(|_| policy.allow_timeout));
    assert_eq!(
        oack.rollover,
        requested.rollover.filter(|_| policy.allow_rollover)
    );
    let tsize_expected = match (requested.tsize.filter(|_| policy.allow_tsize), kind) {
        (None, _) => None,
        (Some(_), RequestKind::Read) => file_size,
        (Some(t), RequestKind::Write) => Some(t),
    };
    assert_eq!(oack.tsize, tsize_expected);
    assert_eq!(params.blksize, oack.blksize.unwrap_or(DEFAULT_BLKSIZE));
    assert_eq!(params.windowsize, oack.windowsize.unwrap_or(1));
    assert_eq!(params.timeout, oack.timeout);
    assert_eq!(params.rollover, oack.rollover);
    assert_eq!(params.tsize, oack.tsize);

    // The OACK fits the buffer any transfer has (512 + 4), whatever the values.
    let mut buf = [0u8; 516];
    let len = encode_oack(&mut buf, &oack, OptionList::EMPTY).expect("the OACK fits 516 bytes");
    if oack.is_empty() {
        return;
    }
    // And the client that asked accepts it, with the same parameters.
    let list = OptionList::parse(&buf[2..len]).expect("the OACK parses");
    let p = client_accept_oack(kind, requested, &list)
        .unwrap_or_else(|e| panic!("the client rejects the server's own OACK {oack:?}: {e}"));
    assert_eq!(
        (p.blksize, p.windowsize, p.timeout, p.rollover),
        (params.blksize, params.windowsize, params.timeout, params.rollover)
    );
    match kind {
        RequestKind::Read => assert_eq!(p.tsize, params.tsize),
        // The client keeps the size it announced, acknowledged or not.
        RequestKind::Write => assert_eq!(p.tsize, requested.tsize),
    }
}
