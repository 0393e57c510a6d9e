//! The tokio client (feature `tokio`) against the crate's std server on loopback: files, memory
//! and streams, every option, both runtimes; and cancellation: a dropped transfer's peer hears
//! an ERROR at once and nothing is left behind.
#![cfg(feature = "tokio")]

#[path = "common/loopback.rs"]
mod loopback;

use std::time::Duration;

use loopback::{config, list, names, pattern, Harness, TempDir};
use tftp_proto::adapter::client::ClientError;
use tftp_proto::adapter::tokio_client::AsyncClient;
use tftp_proto::engine::{Event, TransferError, TransferMode};
use tftp_proto::server::TransferResult;
use tftp_proto::storage::StorageError;
use tftp_proto::{Options, RequestKind};

fn runtimes() -> [(&'static str, tokio::runtime::Runtime); 2] {
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    [("current-thread", current), ("multi-thread", multi)]
}

fn option_sets() -> Vec<Options> {
    let with = |blksize, windowsize, tsize: bool| Options {
        blksize,
        windowsize,
        tsize: tsize.then_some(0),
        ..Options::NONE
    };
    vec![
        Options::NONE,
        with(Some(8), Some(8), true),
        with(Some(1468), Some(16), true),
        with(Some(65464), Some(4), false),
        Options {
            timeout: Some(2),
            ..with(Some(1024), Some(2), true)
        },
    ]
}

#[test]
fn gets_and_puts_files_memory_and_streams_on_both_runtimes() {
    let root = TempDir::new("tokio-client-root");
    let local = TempDir::new("tokio-client-local");
    // Past one window of 64 KiB blocks, and a tail.
    let content = pattern(300_001, 7);
    std::fs::write(root.join("f.bin"), &content).unwrap();
    let mut c = config(root.path(), "127.0.0.1:0");
    c.allow_write = true;
    c.allow_overwrite = true;
    let server = Harness::start(&c);
    let mut n = 0;
    for (rt_name, rt) in runtimes() {
        for options in option_sets() {
            n += 1;
            let what = format!("{rt_name} {options:?}");
            let client = AsyncClient::new(server.addr()).options(options);
            rt.block_on(async {
                // A file, atomically.
                let path = local.join(format!("get-{n}.bin"));
                let s = client.get_file(b"f.bin", &path, |_| {}).await.expect(&what);
                assert_eq!(s.bytes, content.len() as u64, "{what}");
                assert_eq!(std::fs::read(&path).unwrap(), content, "{what}");
                // Memory.
                let (got, _) = client.get(b"f.bin", Vec::new(), |_| {}).await.expect(&what);
                assert_eq!(got, content, "{what}");
                // An AsyncWrite.
                let (got, _) = client
                    .get_to_writer(b"f.bin", Vec::new(), |_| {})
                    .await
                    .expect(&what);
                assert_eq!(got, content, "{what}");
                // Uploads: a file, memory, an AsyncRead.
                let up = format!("put-file-{n}.bin");
                client.put_file(&path, up.as_bytes(), |_| {}).await.expect(&what);
                server.report_for(RequestKind::Write, up.as_bytes());
                assert_eq!(std::fs::read(root.join(&up)).unwrap(), content, "{what}");
                let up = format!("put-mem-{n}.bin");
                client
                    .put(up.as_bytes(), &content[..], |_| {})
                    .await
                    .expect(&what);
                server.report_for(RequestKind::Write, up.as_bytes());
                assert_eq!(std::fs::read(root.join(&up)).unwrap(), content, "{what}");
                let up = format!("put-stream-{n}.bin");
                client
                    .put_from_reader(&content[..], up.as_bytes(), |_| {})
                    .await
                    .expect(&what);
                server.report_for(RequestKind::Write, up.as_bytes());
                assert_eq!(std::fs::read(root.join(&up)).unwrap(), content, "{what}");
            });
        }
    }
    // Netascii both ways: CR LF on the wire, the local text unchanged.
    let text = b"line one\nline two\r\nbare\rcr\0nul\n".repeat(100);
    std::fs::write(root.join("t.txt"), &text).unwrap();
    let client = AsyncClient::new(server.addr()).mode(TransferMode::Netascii);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (got, _) = client.get(b"t.txt", Vec::new(), |_| {}).await.unwrap();
        assert_eq!(got, text);
        client.put(b"t2.txt", &text[..], |_| {}).await.unwrap();
    });
    server.report_for(RequestKind::Write, b"t2.txt");
    assert_eq!(std::fs::read(root.join("t2.txt")).unwrap(), text);
    // Nothing temporary left on either side.
    let local_names: Vec<_> = list(local.path()).into_iter().collect();
    assert!(
        local_names
            .iter()
            .all(|n| n.to_string_lossy().starts_with("get-")),
        "{local_names:?}"
    );
}

#[test]
fn a_missing_file_is_the_servers_error_and_leaves_nothing() {
    let root = TempDir::new("tokio-missing-root");
    let local = TempDir::new("tokio-missing-local");
    let server = Harness::start(&config(root.path(), "127.0.0.1:0"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = AsyncClient::new(server.addr());
    let e = rt
        .block_on(client.get_file(b"nope.bin", &local.join("nope.bin"), |_| {}))
        .expect_err("no such file");
    assert!(
        matches!(&e, ClientError::Transfer(TransferError::Peer(p)) if p.code.as_u16() == 1),
        "{e:?}"
    );
    assert!(list(local.path()).is_empty());
}

/// An event callback that fires the returned receiver once a transfer has moved `bytes`.
fn cancel_at(bytes: u64) -> (impl FnMut(&Event), tokio::sync::oneshot::Receiver<()>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    let on_event = move |e: &Event| {
        if matches!(e, Event::Progress { bytes: b } if *b >= bytes) {
            if let Some(tx) = tx.take() {
                let _ = tx.send(());
            }
        }
    };
    (on_event, rx)
}

/// Downloads (to a file) and uploads cancelled mid-way: the server hears "Transfer cancelled"
/// at once, and neither side keeps anything of the transfer.
#[test]
fn a_cancelled_transfer_tells_the_server_and_leaves_nothing() {
    let root = TempDir::new("tokio-cancel-root");
    let local = TempDir::new("tokio-cancel-local");
    let content = pattern(8 << 20, 3);
    std::fs::write(root.join("big.bin"), &content).unwrap();
    std::fs::write(local.join("up.bin"), &content).unwrap();
    let mut c = config(root.path(), "127.0.0.1:0");
    c.allow_write = true;
    let server = Harness::start(&c);
    for (rt_name, rt) in runtimes() {
        let client = AsyncClient::new(server.addr()).options(Options {
            blksize: Some(512),
            ..Options::NONE
        });
        let target = local.join("big.bin");
        rt.block_on(async {
            // Cancelled once 64 KiB of the 8 MiB are in: it cannot have ended by then.
            let (on_event, underway) = cancel_at(64 * 1024);
            tokio::select! {
                r = client.get_file(b"big.bin", &target, on_event) => panic!("{rt_name}: ended: {r:?}"),
                _ = underway => {}
            }
        });
        let report = server.report_for(RequestKind::Read, b"big.bin");
        match &report.result {
            TransferResult::Failed(TransferError::Peer(p)) => {
                assert_eq!(p.message(), b"Transfer cancelled", "{rt_name}")
            }
            other => panic!("{rt_name}: the server's download ended {other:?}"),
        }
        assert!(!target.exists(), "{rt_name}: the target was created");
        assert_eq!(
            list(local.path()),
            names(&["up.bin"]),
            "{rt_name}: a temporary file was left"
        );
        // An upload, cancelled: the server discards it.
        rt.block_on(async {
            let source = local.join("up.bin");
            let (on_event, underway) = cancel_at(64 * 1024);
            tokio::select! {
                r = client.put_file(&source, b"up.bin", on_event) => panic!("{rt_name}: ended: {r:?}"),
                _ = underway => {}
            }
        });
        let report = server.report_for(RequestKind::Write, b"up.bin");
        assert!(
            matches!(&report.result, TransferResult::Failed(TransferError::Peer(p)) if p.message() == b"Transfer cancelled"),
            "{rt_name}: {:?}",
            report.result
        );
        assert_eq!(
            list(root.path()),
            names(&["big.bin"]),
            "{rt_name}: the upload left something"
        );
    }
    assert!(server.wait_idle(Duration::from_secs(30)));
}

/// An `AsyncWrite` that fails as a full disk does: the server hears ERROR 3 before the block is
/// acknowledged, and the client reports a storage error (as the blocking client does), not a
/// network one.
#[test]
fn a_failing_writer_is_the_servers_error_3() {
    #[derive(Debug)]
    struct Broken;
    impl tokio::io::AsyncWrite for Broken {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Err(std::io::Error::from(std::io::ErrorKind::StorageFull)))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }
    let root = TempDir::new("tokio-broken-root");
    std::fs::write(root.join("f.bin"), pattern(5000, 1)).unwrap();
    let server = Harness::start(&config(root.path(), "127.0.0.1:0"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(AsyncClient::new(server.addr()).get_to_writer(b"f.bin", Broken, |_| {}))
        .expect_err("the writer fails");
    assert!(
        matches!(
            e,
            ClientError::Transfer(TransferError::Storage(StorageError::DiskFull))
        ),
        "{e:?}"
    );
    let report = server.report_for(RequestKind::Read, b"f.bin");
    assert!(
        matches!(&report.result, TransferResult::Failed(TransferError::Peer(p)) if p.code.as_u16() == 3),
        "{:?}",
        report.result
    );
}
