//! Protocol logging through the `log` crate (feature `log`): an integrator debugging a stuck
//! transfer sees the options asked and granted, each retransmission and why, each datagram
//! dropped and why, and how the transfer ended.
#![cfg(all(feature = "log", feature = "std"))]

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tftp_proto::engine::{ClientRequest, Config, ServerPolicy, Transfer, TransferMode};
use tftp_proto::server::{ArrayTable, Datagram, ServerTable};
use tftp_proto::{Instant, Options, Packet, RequestKind};

/// Every record logged, as "LEVEL target: message".
static RECORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        RECORDS.lock().unwrap().push(format!(
            "{} {}: {}",
            record.level(),
            record.target(),
            record.args()
        ));
    }
    fn flush(&self) {}
}

fn install() {
    static LOGGER: Capture = Capture;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Trace);
}

/// The records mentioning `who` that contain every one of `words`.
fn records_with(who: &str, words: &[&str]) -> Vec<String> {
    RECORDS
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.contains(who) && words.iter().all(|w| r.contains(w)))
        .cloned()
        .collect()
}

fn at(us: u64) -> Instant {
    Instant::ZERO + Duration::from_micros(us)
}

#[test]
fn a_lossy_download_tells_its_story() {
    install();
    let server_addr: SocketAddr = "192.0.2.1:69".parse().unwrap();
    let tid: SocketAddr = "192.0.2.1:50001".parse().unwrap();
    let client_addr: SocketAddr = "192.0.2.20:40000".parse().unwrap();
    let stranger: SocketAddr = "192.0.2.66:40000".parse().unwrap();
    let file: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let options = Options {
        blksize: Some(1024),
        tsize: Some(0),
        ..Options::NONE
    };
    let request = ClientRequest {
        kind: RequestKind::Read,
        filename: b"image.bin",
        mode: TransferMode::Octet,
        options,
    };
    let mut client = Transfer::client(at(0), server_addr, request, Vec::new(), Config::default()).unwrap();
    let mut buf = vec![0u8; client.max_datagram_len()];
    let tx = client.poll_transmit(at(0), &mut buf).expect("request");
    let Ok(Packet::Rrq(req)) = Packet::parse(&buf[..tx.len]) else {
        panic!("an RRQ")
    };
    let mut server = Transfer::server(
        at(0),
        client_addr,
        RequestKind::Read,
        &req,
        file.clone(),
        &ServerPolicy::default(),
        Config::default(),
    );
    let mut now = 0;
    let mut dropped_one = false;
    for _ in 0..200 {
        // Server to client; the first DATA 2 is lost.
        let mut sbuf = vec![0u8; server.max_datagram_len()];
        while let Some(tx) = server.poll_transmit(at(now), &mut sbuf) {
            let d = &sbuf[..tx.len];
            if !dropped_one && d[..4] == [0, 3, 0, 2] {
                dropped_one = true;
                continue;
            }
            client.handle_datagram(at(now), tid, d);
        }
        while let Some(tx) = client.poll_transmit(at(now), &mut buf) {
            // (The stranger's ERROR 5 goes to the stranger.)
            if tx.destination == server_addr || tx.destination == tid {
                server.handle_datagram(at(now), client_addr, &buf[..tx.len]);
            }
        }
        if client.is_finished() && server.is_finished() {
            break;
        }
        // A stranger and a malformed datagram on the client's port, once.
        if now == 0 {
            client.handle_datagram(at(now), stranger, &[0, 4, 0, 1]);
            client.handle_datagram(at(now), tid, &[0, 9, 1]);
        }
        let next = [client.poll_timeout(), server.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .expect("a deadline");
        now = now.max((next - Instant::ZERO).as_micros() as u64);
        client.handle_timeout(at(now));
        server.handle_timeout(at(now));
    }
    assert_eq!(
        client.outcome().map(|r| r.ok()),
        Some(Some(3000)),
        "{:#?}",
        RECORDS.lock().unwrap()
    );
    assert_eq!(client.storage(), &file);
    let server_tag = "192.0.2.20:40000";
    let client_tag = "192.0.2.1:50001";
    // Options asked and granted, on both sides.
    assert!(!records_with(server_tag, &["DEBUG", "asked", "blksize: Some(1024)", "granted"]).is_empty());
    // (The client names the server by its well-known port until the OACK fixes its TID.)
    assert!(!records_with(
        "tftp 192.0.2.1:69",
        &["DEBUG", "asked", "granted", "tsize: Some(3000)"]
    )
    .is_empty());
    // The retransmission after the loss, and why.
    assert!(
        !records_with(server_tag, &["timeout 1 of", "resending"]).is_empty(),
        "{:#?}",
        RECORDS.lock().unwrap()
    );
    // Drops, and why.
    assert!(!records_with("192.0.2.66:40000", &["stranger", "ERROR 5"]).is_empty());
    assert!(!records_with(client_tag, &["malformed", "3 bytes"]).is_empty());
    // How it ended.
    assert!(!records_with(server_tag, &["ended", "Finished", "3000 bytes"]).is_empty());
    assert!(!records_with(client_tag, &["ended", "Finished", "3000 bytes"]).is_empty());
    // Every record is the crate's.
    assert!(RECORDS
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.contains(" tftp_proto: ")));
}

#[test]
fn the_server_table_tells_what_it_refuses() {
    install();
    let mut table: ArrayTable<&'static [u8], 1> =
        ServerTable::new(ServerPolicy::default(), Config::default());
    let listen: SocketAddr = "192.0.2.1:69".parse().unwrap();
    let peer: SocketAddr = "192.0.2.30:41000".parse().unwrap();
    // A mode no transfer runs.
    let mail = b"\x00\x01f\x00mail\x00";
    assert!(matches!(
        table.handle_datagram(at(0), listen, peer, true, mail),
        Datagram::Refused(_)
    ));
    assert!(!records_with("192.0.2.30:41000", &["WARN", "refused", "Mail"]).is_empty());
    // A request the application refuses.
    let rrq = b"\x00\x01f\x00octet\x00";
    let Datagram::Request(incoming) = table.handle_datagram(at(0), listen, peer, true, rrq) else {
        panic!("a request")
    };
    assert!(!records_with("192.0.2.30:41000", &["DEBUG", "Read request"]).is_empty());
    table.refuse(&incoming, tftp_proto::ErrorCode::FileNotFound, "no such file");
    assert!(!records_with("192.0.2.30:41000", &["WARN", "FileNotFound", "no such file"]).is_empty());
}
