//! The embassy-net adapter on the host, for real: two embassy-net stacks joined by an in-memory
//! Ethernet pair (`common/ethernet_pair.rs`: a device pair with seeded loss, duplication and
//! reordering), the `EmbassyClient` on one and the
//! `EmbassyServer` on the other, downloads and uploads byte-compared. Time is embassy-time's
//! mock clock, advanced by the test's executor only when nothing else can happen, so the
//! retransmission timers run in virtual time: the tests are deterministic and take no
//! wall-clock time waiting.
#![cfg(feature = "embassy-net")]

#[path = "common/ethernet_pair.rs"]
mod ethernet_pair;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::task::Poll;

use embassy_futures::join::join;
use embassy_futures::select::{select, select3, Either, Either3};
use embassy_net::{Ipv4Address, Stack, StackResources};
use embassy_time::{Duration, Timer};
use ethernet_pair::*;
use tftp_proto::embassy::{EmbassyClient, EmbassyServer, Error, Files};
use tftp_proto::engine::{Config, Refusal, ServerPolicy, TransferError, TransferMode};
use tftp_proto::server::{Incoming, TransferReport, TransferResult};
use tftp_proto::storage::{Storage, StorageError};
use tftp_proto::{ErrorCode, Options, RequestKind};

// ---------------------------------------------------------------------------------------------
// The server's files: named blobs to read, uploads kept in memory, every ending recorded.

#[derive(Debug)]
enum MemFile {
    Read(Rc<[u8]>),
    Write(Vec<u8>),
}

impl Storage for MemFile {
    fn size(&mut self) -> Option<u64> {
        match self {
            MemFile::Read(d) => Some(d.len() as u64),
            MemFile::Write(d) => Some(d.len() as u64),
        }
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, StorageError> {
        let MemFile::Read(d) = self else {
            return Err(StorageError::AccessDenied);
        };
        let start = (offset as usize).min(d.len());
        let n = buf.len().min(d.len() - start);
        buf[..n].copy_from_slice(&d[start..start + n]);
        Ok(n)
    }
    fn write_at(&mut self, _offset: u64, data: &[u8]) -> Result<(), StorageError> {
        let MemFile::Write(d) = self else {
            return Err(StorageError::AccessDenied);
        };
        d.extend_from_slice(data);
        Ok(())
    }
}

#[derive(Default)]
struct TestFiles {
    files: HashMap<Vec<u8>, Rc<[u8]>>,
    /// Every transfer that ended: how, and its storage.
    ended: Vec<(TransferReport<()>, MemFile)>,
}

impl TestFiles {
    fn with(files: &[(&[u8], &[u8])]) -> Self {
        TestFiles {
            files: files.iter().map(|(n, d)| (n.to_vec(), Rc::from(*d))).collect(),
            ended: Vec::new(),
        }
    }
}

impl Files for TestFiles {
    type Storage = MemFile;
    fn open(&mut self, request: &Incoming<'_>) -> Result<MemFile, Refusal> {
        match request.kind {
            RequestKind::Read => self
                .files
                .get(request.filename())
                .map(|d| MemFile::Read(d.clone()))
                .ok_or(Refusal {
                    code: ErrorCode::FileNotFound,
                    message: "No such file",
                }),
            RequestKind::Write => Ok(MemFile::Write(Vec::new())),
        }
    }
    fn finished(&mut self, report: TransferReport<MemFile>) {
        self.ended.push(report.into_parts());
    }
}

// ---------------------------------------------------------------------------------------------
// A scenario: the two stacks, the server on port 69 of the server's stack, and the client
// side's body on the client's stack; it ends when the body does.

struct Scenario {
    faults_to_server: Option<Faults>,
    faults_to_client: Option<Faults>,
    /// The server's socket: datagrams each way, bytes each.
    server_socket: (usize, usize),
    /// The server's transmit buffer.
    server_buf: usize,
    policy: ServerPolicy,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            faults_to_server: None,
            faults_to_client: None,
            server_socket: (16, 1472),
            server_buf: 1472,
            policy: ServerPolicy::default(),
        }
    }
}

/// What the wire did: UDP frames sent, lost, duplicated and reordered, client to server and
/// back.
#[derive(Debug, Clone, Copy)]
struct WireStats {
    sent: [u64; 2],
    lost: [u64; 2],
    duplicated: [u64; 2],
    reordered: [u64; 2],
}

impl Scenario {
    fn run<R>(self, files: &mut TestFiles, body: impl AsyncFnOnce(Stack<'_>) -> R) -> (R, WireStats) {
        let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let link = Rc::new(RefCell::new(Link {
            faults: [self.faults_to_server, self.faults_to_client],
            ..Link::default()
        }));
        let mut client_resources = Box::new(StackResources::<4>::new());
        let mut server_resources = Box::new(StackResources::<4>::new());
        let nic = |side| Nic {
            link: link.clone(),
            side,
        };
        let (client_stack, mut client_runner) = stack(nic(0), CLIENT_IP, &mut client_resources);
        let (server_stack, mut server_runner) = stack(nic(1), SERVER_IP, &mut server_resources);
        let mut server_buffers = SocketBuffers::new(self.server_socket.0, self.server_socket.1);
        let mut server_socket = server_buffers.socket(server_stack);
        server_socket.bind(69).unwrap();
        let mut server: Box<EmbassyServer<MemFile, 4>> =
            Box::new(EmbassyServer::new(self.policy, Config::default()));
        let mut buf = vec![0u8; self.server_buf];
        let result = block_on(async {
            let serve = server.run(&mut server_socket, files, &mut buf);
            match select3(
                client_runner.run(),
                server_runner.run(),
                select(serve, body(client_stack)),
            )
            .await
            {
                Either3::Third(Either::Second(r)) => r,
                Either3::Third(Either::First(e)) => panic!("the server stopped: {e}"),
                Either3::First(never) | Either3::Second(never) => match never {},
            }
        });
        let l = link.borrow();
        (
            result,
            WireStats {
                sent: l.udp_sent,
                lost: l.udp_lost,
                duplicated: l.udp_duplicated,
                reordered: l.udp_reordered,
            },
        )
    }
}

fn server_endpoint() -> (Ipv4Address, u16) {
    let [a, b, c, d] = SERVER_IP;
    (Ipv4Address::new(a, b, c, d), 69)
}

/// Bytes that differ at every offset of a period longer than any block.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(u32::from(seed) % 32) as u8
                ^ seed
        })
        .collect()
}

/// Gives the server time to finish what the client's end left it (the final ACK's dally, a
/// cancellation's ERROR).
async fn settle() {
    Timer::after(Duration::from_secs(3)).await;
}

// ---------------------------------------------------------------------------------------------

#[test]
fn embassy_client_downloads_from_the_embassy_server_with_every_option() {
    let image = pattern(200_000, 1);
    let mut files = TestFiles::with(&[(b"boot.img", &image)]);
    let options = Options {
        blksize: Some(1468),
        windowsize: Some(8),
        timeout: Some(1),
        tsize: Some(0),
        ..Options::NONE
    };
    let ((got, summary), wire) = Scenario::default().run(&mut files, async |stack| {
        let mut bufs = SocketBuffers::new(16, 1472);
        let mut socket = bufs.socket(stack);
        let mut dest = vec![0u8; 300_000];
        let mut client = EmbassyClient::new(&mut socket, server_endpoint()).options(options);
        let (w, summary) = client
            .get(b"boot.img", tftp_proto::storage::SliceWriter::new(&mut dest))
            .await
            .expect("download");
        let n = w.len();
        settle().await;
        (dest[..n].to_vec(), summary)
    });
    assert_eq!(got, image, "the download differs from the file");
    assert_eq!(summary.bytes, image.len() as u64);
    assert_eq!(summary.params.blksize, 1468);
    assert_eq!(summary.params.windowsize, 8);
    assert_eq!(summary.params.timeout, Some(1));
    assert_eq!(summary.params.tsize, Some(image.len() as u64));
    assert_eq!(
        summary.stats.retransmissions, 0,
        "a clean link needs no retransmission"
    );
    assert_eq!(wire.lost, [0, 0]);
    // 137 DATA of 1468 bytes in windows of 8: 18 ACKs, plus the request and the OACK's ACK.
    assert_eq!(wire.sent[0], 1 + 1 + image.len().div_ceil(1468 * 8) as u64);
    let (report, _) = &files.ended[0];
    assert_eq!(report.result, TransferResult::Completed(image.len() as u64));
}

/// Which of the client's downloads a test runs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Download {
    /// `get_into`: the engine.
    Engine,
    /// `boot_into`: the boot client.
    Boot,
}

/// Downloads 120,000 bytes through a link losing 10 % of the UDP frames each way, and checks
/// the copy byte for byte, the loss, and the server's record of the transfer.
fn lossy_download(download: Download, blksize: Option<u16>, windowsize: Option<u16>, seed: u64) {
    let what = format!("{download:?} {blksize:?}x{windowsize:?}");
    let image = pattern(120_000, seed as u8);
    let mut files = TestFiles::with(&[(b"kernel", &image)]);
    let scenario = Scenario {
        faults_to_server: Some(Faults::loss(10, seed)),
        faults_to_client: Some(Faults::loss(10, seed * 31)),
        ..Scenario::default()
    };
    let (result, wire) = scenario.run(&mut files, async |stack| {
        let mut bufs = SocketBuffers::new(16, 1472);
        let mut socket = bufs.socket(stack);
        let mut dest = vec![0u8; 120_000];
        let options = Options {
            blksize,
            windowsize,
            timeout: (download == Download::Boot).then_some(1),
            tsize: Some(0),
            ..Options::NONE
        };
        let mut client = EmbassyClient::new(&mut socket, server_endpoint()).options(options);
        let n = match download {
            Download::Engine => client.get_into(b"kernel", &mut dest).await,
            Download::Boot => client.boot_into(b"kernel", &mut dest).await,
        };
        settle().await;
        n.map(|n| dest[..n].to_vec())
    });
    let got = result.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(got, image, "{what}: the download differs from the file");
    assert!(
        wire.lost[0] > 0 && wire.lost[1] > 0,
        "{what}: no loss injected: {wire:?}"
    );
    let (report, _) = &files.ended[0];
    assert_eq!(
        report.result,
        TransferResult::Completed(image.len() as u64),
        "{what}"
    );
    assert_eq!(report.params.blksize, blksize.unwrap_or(512), "{what}");
    assert_eq!(report.params.windowsize, windowsize.unwrap_or(1), "{what}");
    assert!(
        report.stats.retransmissions > 0,
        "{what}: the server recovered losses by resending"
    );
}

#[test]
fn embassy_client_downloads_through_a_lossy_link_byte_for_byte() {
    lossy_download(Download::Engine, None, None, 3);
    lossy_download(Download::Engine, Some(1024), Some(4), 5);
    lossy_download(Download::Engine, Some(1468), Some(16), 7);
}

#[test]
fn embassy_client_uploads_to_the_embassy_server_through_a_lossy_link() {
    for (blksize, windowsize, seed) in [(None, None, 11), (Some(1468), Some(8), 13)] {
        let upload = pattern(90_000, seed as u8);
        let mut files = TestFiles::default();
        let scenario = Scenario {
            faults_to_server: Some(Faults::loss(10, seed)),
            faults_to_client: Some(Faults::loss(10, seed * 17)),
            ..Scenario::default()
        };
        let (result, wire) = scenario.run(&mut files, async |stack| {
            let mut bufs = SocketBuffers::new(16, 1472);
            let mut socket = bufs.socket(stack);
            let options = Options {
                blksize,
                windowsize,
                tsize: Some(0),
                ..Options::NONE
            };
            let mut client = EmbassyClient::new(&mut socket, server_endpoint()).options(options);
            let r = client.put(b"upload.bin", &upload[..]).await.map(|(_, s)| s);
            settle().await;
            r
        });
        let summary = result.unwrap_or_else(|e| panic!("{blksize:?}x{windowsize:?}: {e}"));
        assert_eq!(summary.bytes, upload.len() as u64);
        assert_eq!(
            summary.params.tsize,
            Some(upload.len() as u64),
            "tsize sent as the upload's size"
        );
        assert!(
            summary.stats.retransmissions > 0,
            "the client recovered losses by resending"
        );
        assert!(wire.lost[0] > 0 && wire.lost[1] > 0, "no loss injected: {wire:?}");
        let (report, storage) = &files.ended[0];
        assert_eq!(report.filename, b"upload.bin"[..]);
        assert_eq!(report.result, TransferResult::Completed(upload.len() as u64));
        let MemFile::Write(received) = storage else {
            panic!("an upload's storage is a write")
        };
        assert_eq!(
            received, &upload,
            "{blksize:?}x{windowsize:?}: the server's copy differs"
        );
    }
}

/// A download's storage that raises a flag once `at` bytes were written.
struct Tripwire<'a> {
    inner: tftp_proto::storage::SliceWriter<'a>,
    at: usize,
    tripped: &'a Cell<bool>,
}

impl Storage for Tripwire<'_> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        self.inner.write_at(offset, data)?;
        if self.inner.len() >= self.at {
            self.tripped.set(true);
        }
        Ok(())
    }
}

/// Ends once `flag` is raised. Polled in the same task as the download that raises it, it sees
/// the flag in the pass that raised it.
async fn raised(flag: &Cell<bool>) {
    poll_fn(|_| {
        if flag.get() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Runs `fut` for at most `polls` polls: its output, or `None` when it was cut off there (and
/// dropped, which cancels a transfer). A download handles at most one datagram per poll.
async fn cut_off_after<F: Future>(fut: F, polls: u32) -> Option<F::Output> {
    let mut fut = core::pin::pin!(fut);
    let mut count = 0u32;
    poll_fn(|cx| {
        count += 1;
        match fut.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending if count >= polls => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[test]
fn a_cancelled_download_tells_the_server_at_once() {
    let image = pattern(500_000, 21);
    let mut files = TestFiles::with(&[(b"big", &image)]);
    let (finished, _) = Scenario::default().run(&mut files, async |stack| {
        let mut bufs = SocketBuffers::new(16, 1472);
        let mut socket = bufs.socket(stack);
        let mut dest = vec![0u8; 500_000];
        let tripped = Cell::new(false);
        let storage = Tripwire {
            inner: tftp_proto::storage::SliceWriter::new(&mut dest),
            at: 64 * 1024,
            tripped: &tripped,
        };
        let mut client = EmbassyClient::new(&mut socket, server_endpoint()).options(Options {
            blksize: Some(1024),
            windowsize: Some(4),
            ..Options::NONE
        });
        let finished = match select(client.get(b"big", storage), raised(&tripped)).await {
            Either::First(r) => Some(r.map(|(_, s)| s.bytes)),
            Either::Second(()) => None,
        };
        // Well inside the server's first retransmission timeout (1 s).
        Timer::after(Duration::from_millis(200)).await;
        finished
    });
    assert!(
        finished.is_none(),
        "the download ended before the cancellation: {finished:?}"
    );
    assert_eq!(files.ended.len(), 1, "the server's transfer did not end at once");
    let (report, _) = &files.ended[0];
    match &report.result {
        TransferResult::Failed(TransferError::Peer(e)) => {
            assert_eq!(e.code, ErrorCode::NotDefined);
            assert_eq!(e.message(), b"Transfer cancelled");
        }
        other => panic!("the server's transfer ended with {other:?}, not the client's ERROR"),
    }
    assert!(report.stats.bytes >= 64 * 1024 && report.stats.bytes < image.len() as u64);
}

#[test]
fn a_missing_file_is_the_servers_error_to_the_client() {
    let mut files = TestFiles::with(&[(b"present", b"x")]);
    let (result, _) = Scenario::default().run(&mut files, async |stack| {
        let mut bufs = SocketBuffers::new(4, 1472);
        let mut socket = bufs.socket(stack);
        let mut dest = [0u8; 16];
        EmbassyClient::new(&mut socket, server_endpoint())
            .get_into(b"absent", &mut dest)
            .await
    });
    match result {
        Err(Error::Transfer(TransferError::Peer(e))) => {
            assert_eq!(e.code, ErrorCode::FileNotFound);
            assert_eq!(e.message(), b"No such file");
        }
        other => panic!("expected the server's ERROR 1, got {other:?}"),
    }
}

#[test]
fn the_server_grants_no_block_larger_than_its_buffers() {
    let image = pattern(50_000, 31);
    let mut files = TestFiles::with(&[(b"f", &image)]);
    let scenario = Scenario {
        server_buf: 1000,
        ..Scenario::default()
    };
    let (result, _) = scenario.run(&mut files, async |stack| {
        let mut bufs = SocketBuffers::new(16, 1472);
        let mut socket = bufs.socket(stack);
        let mut dest = vec![0u8; 60_000];
        let mut client = EmbassyClient::new(&mut socket, server_endpoint()).options(Options {
            blksize: Some(1468),
            ..Options::NONE
        });
        let r = client
            .get(b"f", tftp_proto::storage::SliceWriter::new(&mut dest))
            .await
            .map(|(w, s)| (w.len(), s));
        let r = r.map(|(n, s)| (dest[..n].to_vec(), s));
        settle().await;
        r
    });
    let (got, summary) = result.expect("download");
    assert_eq!(
        summary.params.blksize, 996,
        "the block the server's 1000-byte buffer holds"
    );
    assert_eq!(got, image);
}

#[test]
fn a_client_whose_socket_cannot_hold_a_block_sends_nothing() {
    let mut files = TestFiles::with(&[(b"f", b"data")]);
    let (result, wire) = Scenario::default().run(&mut files, async |stack| {
        let mut bufs = SocketBuffers::new(4, 250); // 1,000 bytes each way
        let mut socket = bufs.socket(stack);
        let mut dest = [0u8; 64];
        EmbassyClient::new(&mut socket, server_endpoint())
            .options(Options {
                blksize: Some(1468),
                ..Options::NONE
            })
            .get_into(b"f", &mut dest)
            .await
    });
    assert_eq!(
        result,
        Err(Error::SocketBufferTooSmall {
            needed: 1472,
            capacity: 1000
        })
    );
    assert_eq!(wire.sent[0], 0, "the request went out anyway");
    assert!(files.ended.is_empty());
}

#[test]
fn two_clients_at_once_share_the_single_port_server() {
    let a = pattern(80_000, 41);
    let b = pattern(60_000, 43);
    let mut files = TestFiles::with(&[(b"a", &a), (b"b", &b)]);
    let scenario = Scenario {
        faults_to_server: Some(Faults::loss(5, 41)),
        faults_to_client: Some(Faults::loss(5, 43)),
        ..Scenario::default()
    };
    let ((got_a, got_b), _) = scenario.run(&mut files, async |stack| {
        let (mut bufs_a, mut bufs_b) = (SocketBuffers::new(8, 1472), SocketBuffers::new(8, 1472));
        let (mut socket_a, mut socket_b) = (bufs_a.socket(stack), bufs_b.socket(stack));
        let (mut dest_a, mut dest_b) = (vec![0u8; 80_000], vec![0u8; 60_000]);
        let opts = Options {
            blksize: Some(1024),
            windowsize: Some(4),
            ..Options::NONE
        };
        let mut client_a = EmbassyClient::new(&mut socket_a, server_endpoint()).options(opts);
        let mut client_b = EmbassyClient::new(&mut socket_b, server_endpoint()).options(opts);
        let (na, nb) = join(
            client_a.get_into(b"a", &mut dest_a),
            client_b.get_into(b"b", &mut dest_b),
        )
        .await;
        settle().await;
        (
            dest_a[..na.expect("a")].to_vec(),
            dest_b[..nb.expect("b")].to_vec(),
        )
    });
    assert_eq!(got_a, a);
    assert_eq!(got_b, b);
    assert_eq!(files.ended.len(), 2);
    assert!(files.ended.iter().all(|(r, _)| r.result.is_success()));
    // Both transfers ran on the server's one port, told apart by the clients' ports.
    assert!(files.ended.iter().all(|(r, _)| r.local.port() == 69));
    assert_ne!(files.ended[0].0.peer, files.ended[1].0.peer);
}

#[test]
fn netascii_round_trips_line_ends() {
    let text = b"line one\nline two\r\nbare \r carriage\n".repeat(200);
    let mut files = TestFiles::with(&[(b"motd", &text)]);
    let (result, _) = Scenario::default().run(&mut files, async |stack| {
        let mut bufs = SocketBuffers::new(4, 1472);
        let mut socket = bufs.socket(stack);
        let mut dest = vec![0u8; 16_000];
        let mut client = EmbassyClient::new(&mut socket, server_endpoint()).mode(TransferMode::Netascii);
        let n = client.get_into(b"motd", &mut dest).await;
        settle().await;
        n.map(|n| dest[..n].to_vec())
    });
    assert_eq!(result.expect("download"), text);
    let (report, _) = &files.ended[0];
    // On the wire each "\n" became "\r\n" and each "\r" became "\r\0": the text was converted,
    // not sent as it is.
    let wire_len = text.len() + text.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
    assert_eq!(
        report.result,
        TransferResult::Completed(wire_len as u64),
        "the server counts wire bytes"
    );
}

#[test]
fn stopping_the_server_ends_its_transfers_and_reports_them() {
    let image = pattern(400_000, 51);
    let mut files = TestFiles::with(&[(b"big", &image)]);
    // The client's side ends the scenario, and with it the server, at 64 KiB into a download.
    let (finished, _) = Scenario::default().run(&mut files, async |stack| {
        let mut bufs = SocketBuffers::new(16, 1472);
        let mut socket = bufs.socket(stack);
        let mut dest = vec![0u8; 400_000];
        let tripped = Cell::new(false);
        let storage = Tripwire {
            inner: tftp_proto::storage::SliceWriter::new(&mut dest),
            at: 64 * 1024,
            tripped: &tripped,
        };
        let mut client = EmbassyClient::new(&mut socket, server_endpoint());
        match select(client.get(b"big", storage), raised(&tripped)).await {
            Either::First(r) => Some(r.map(|(_, s)| s.bytes)),
            Either::Second(()) => None,
        }
    });
    assert!(
        finished.is_none(),
        "the download ended before the server stopped: {finished:?}"
    );
    // The dropped server ended its transfer and handed it to the files, storage and all.
    assert_eq!(files.ended.len(), 1);
    let (report, storage) = &files.ended[0];
    assert_eq!(report.result, TransferResult::Failed(TransferError::Aborted));
    // The block that crossed 64 KiB was written but not yet acknowledged.
    assert!(
        report.stats.bytes >= 60 * 1024 && report.stats.bytes < image.len() as u64,
        "{}",
        report.stats.bytes
    );
    assert!(matches!(storage, MemFile::Read(_)));
}

#[test]
fn boot_into_downloads_through_a_lossy_link_byte_for_byte() {
    lossy_download(Download::Boot, None, None, 61);
    lossy_download(Download::Boot, Some(1468), Some(8), 67);
}

#[test]
fn boot_into_refuses_an_image_larger_than_its_destination_before_any_data() {
    let image = pattern(10_000, 71);
    let mut files = TestFiles::with(&[(b"big", &image)]);
    let (result, _) = Scenario::default().run(&mut files, async |stack| {
        let mut bufs = SocketBuffers::new(4, 1472);
        let mut socket = bufs.socket(stack);
        let mut dest = vec![0u8; 4_000];
        let mut client = EmbassyClient::new(&mut socket, server_endpoint()).options(Options {
            tsize: Some(0),
            ..Options::NONE
        });
        let r = client.boot_into(b"big", &mut dest).await;
        settle().await;
        r
    });
    assert_eq!(result, Err(Error::Boot(tftp_proto::boot::BootError::TooLarge)));
    let (report, _) = &files.ended[0];
    assert_eq!(report.stats.bytes, 0, "data flowed before the refusal");
    match &report.result {
        TransferResult::Failed(TransferError::Peer(e)) => assert_eq!(e.code, ErrorCode::DiskFull),
        other => panic!("the server's transfer ended with {other:?}, not ERROR 3"),
    }
}

#[test]
fn a_cancelled_boot_download_tells_the_server_at_once() {
    let image = pattern(300_000, 73);
    let mut files = TestFiles::with(&[(b"big", &image)]);
    let (finished, _) = Scenario::default().run(&mut files, async |stack| {
        let mut bufs = SocketBuffers::new(16, 1472);
        let mut socket = bufs.socket(stack);
        let mut dest = vec![0u8; 300_000];
        let mut client = EmbassyClient::new(&mut socket, server_endpoint());
        // The destination is a plain buffer, so the download is cancelled by count: after its
        // 50th poll (each handles at most one datagram), well inside its 586 blocks.
        let finished = cut_off_after(client.boot_into(b"big", &mut dest), 50).await;
        Timer::after(Duration::from_millis(200)).await;
        finished
    });
    assert!(
        finished.is_none(),
        "the download ended before the cancellation: {finished:?}"
    );
    assert_eq!(files.ended.len(), 1, "the server's transfer did not end at once");
    let (report, _) = &files.ended[0];
    assert!(report.stats.bytes > 0, "cancelled before any data");
    match &report.result {
        TransferResult::Failed(TransferError::Peer(e)) => assert_eq!(e.message(), b"Transfer cancelled"),
        other => panic!("the server's transfer ended with {other:?}, not the client's ERROR"),
    }
}

#[cfg(feature = "embassy-net-ipv6")]
#[test]
fn ipv6_download_and_upload() {
    let image = pattern(70_000, 81);
    let upload = pattern(50_000, 83);
    let mut files = TestFiles::with(&[(b"v6.img", &image)]);
    let ((got, put), _) = Scenario::default().run(&mut files, async |stack| {
        let mut bufs = SocketBuffers::new(16, 1472);
        let mut socket = bufs.socket(stack);
        let mut dest = vec![0u8; 70_000];
        let server = (ipv6(SERVER_IP[3]), 69);
        let options = Options {
            blksize: Some(1428),
            windowsize: Some(4),
            ..Options::NONE
        };
        let mut client = EmbassyClient::new(&mut socket, server).options(options);
        let n = client
            .get_into(b"v6.img", &mut dest)
            .await
            .expect("download over IPv6");
        let put = client.put(b"v6-up.bin", &upload[..]).await.map(|(_, s)| s.bytes);
        settle().await;
        (dest[..n].to_vec(), put)
    });
    assert_eq!(got, image);
    assert_eq!(put, Ok(upload.len() as u64));
    assert_eq!(files.ended.len(), 2);
    for (report, _) in &files.ended {
        assert!(report.peer.is_ipv6() && report.local.is_ipv6(), "{report:?}");
        assert!(report.result.is_success());
    }
    let MemFile::Write(received) = &files.ended[1].1 else {
        panic!("the upload's storage")
    };
    assert_eq!(received, &upload);
}

#[test]
fn transfers_survive_a_link_that_loses_duplicates_and_reorders() {
    let image = pattern(100_000, 91);
    let upload = pattern(70_000, 93);
    for (blksize, windowsize, seed) in [(None, None, 91), (Some(1024), Some(8), 97)] {
        let what = format!("{blksize:?}x{windowsize:?}");
        let mut files = TestFiles::with(&[(b"img", &image)]);
        let scenario = Scenario {
            faults_to_server: Some(Faults::new(5, 10, 10, seed)),
            faults_to_client: Some(Faults::new(5, 10, 10, seed * 7)),
            ..Scenario::default()
        };
        let ((engine, boot, put), wire) = scenario.run(&mut files, async |stack| {
            let mut bufs = SocketBuffers::new(16, 1472);
            let mut socket = bufs.socket(stack);
            let mut dest = vec![0u8; 100_000];
            let options = Options {
                blksize,
                windowsize,
                tsize: Some(0),
                ..Options::NONE
            };
            let mut client = EmbassyClient::new(&mut socket, server_endpoint()).options(options);
            let engine = client
                .get_into(b"img", &mut dest)
                .await
                .map(|n| dest[..n].to_vec());
            dest.fill(0);
            let boot = client
                .boot_into(b"img", &mut dest)
                .await
                .map(|n| dest[..n].to_vec());
            let put = client.put(b"up", &upload[..]).await.map(|(_, s)| s.bytes);
            settle().await;
            (engine, boot, put)
        });
        assert_eq!(
            engine.unwrap_or_else(|e| panic!("{what}: get_into: {e}")),
            image,
            "{what}"
        );
        assert_eq!(
            boot.unwrap_or_else(|e| panic!("{what}: boot_into: {e}")),
            image,
            "{what}"
        );
        assert_eq!(put, Ok(upload.len() as u64), "{what}");
        for (i, direction) in ["to the server", "to the client"].iter().enumerate() {
            assert!(
                wire.lost[i] > 0 && wire.duplicated[i] > 0 && wire.reordered[i] > 0,
                "{what}: the link {direction} did not misbehave: {wire:?}"
            );
        }
        assert_eq!(files.ended.len(), 3, "{what}");
        assert!(files.ended.iter().all(|(r, _)| r.result.is_success()), "{what}");
        let MemFile::Write(received) = &files.ended[2].1 else {
            panic!("the upload's storage")
        };
        assert_eq!(received, &upload, "{what}: the server's copy differs");
    }
}

#[test]
fn a_cancelled_downloads_error_leaves_before_the_next_transfer_rebinds_the_socket() {
    let image = pattern(300_000, 101);
    let small = pattern(3_000, 103);
    let mut files = TestFiles::with(&[(b"big", &image), (b"small", &small)]);
    let (second, _) = Scenario::default().run(&mut files, async |stack| {
        let mut bufs = SocketBuffers::new(16, 1472);
        let mut socket = bufs.socket(stack);
        let mut dest = vec![0u8; 300_000];
        let mut client = EmbassyClient::new(&mut socket, server_endpoint());
        // Cancelled by count, after its 50th poll, with no pause before the next transfer.
        let first = cut_off_after(client.get_into(b"big", &mut dest), 50).await;
        assert!(
            first.is_none(),
            "the first download ended before the cancellation"
        );
        let second = client
            .get_into(b"small", &mut dest)
            .await
            .map(|n| dest[..n].to_vec());
        settle().await;
        second
    });
    assert_eq!(second.expect("the next download"), small);
    assert_eq!(files.ended.len(), 2);
    let (first, _) = &files.ended[0];
    assert_eq!(first.filename, b"big"[..]);
    match &first.result {
        TransferResult::Failed(TransferError::Peer(e)) => assert_eq!(e.message(), b"Transfer cancelled"),
        other => panic!("the cancelled transfer ended with {other:?}, not the client's ERROR"),
    }
    assert!(files.ended[1].0.result.is_success());
}
