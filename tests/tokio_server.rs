//! The tokio server (feature `tokio`) on loopback: the blocking client and raw sockets against
//! it on both runtimes, IPv4 and IPv6; the request hook, the session cap with displacement,
//! single-port mode, the refusal log, and a shutdown in the middle of an upload.
#![cfg(feature = "tokio")]

#[path = "common/loopback.rs"]
mod loopback;

use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};

use loopback::{list, names, pattern, peer_code, rrq, socket, wrq, Pkt, TempDir, WAIT};
use tftp_proto::adapter::client::Client;
use tftp_proto::adapter::mio_server::{HookDecision, Refusal, ServerConfig};
use tftp_proto::adapter::tokio_server::AsyncServer;
use tftp_proto::server::{TransferReport, TransferResult};
use tftp_proto::{ErrorCode, Options, RequestKind};

/// A finished transfer as the server reported it.
#[derive(Debug, Clone)]
struct Report {
    kind: RequestKind,
    filename: Vec<u8>,
    result: TransferResult,
}

/// An `AsyncServer` running on its own runtime in a thread, until dropped or stopped.
struct Running {
    addrs: Vec<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    reports: mpsc::Receiver<Report>,
    refusals: Arc<Mutex<Vec<Refusal>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(config: ServerConfig, multi_thread: bool) -> Running {
        let (addr_tx, addr_rx) = mpsc::channel();
        let (report_tx, reports) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&refusals);
        let thread = std::thread::spawn(move || {
            let mut builder = if multi_thread {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(2);
                b
            } else {
                tokio::runtime::Builder::new_current_thread()
            };
            let rt = builder.enable_all().build().unwrap();
            rt.block_on(async move {
                let server = AsyncServer::bind(&config).expect("bind");
                addr_tx.send(server.local_addrs()).unwrap();
                server
                    .run_logged(
                        async {
                            let _ = stopped.await;
                        },
                        |r: &TransferReport<()>| {
                            let _ = report_tx.send(Report {
                                kind: r.kind,
                                filename: r.filename.to_vec(),
                                result: r.result.clone(),
                            });
                        },
                        |r: &Refusal| seen.lock().unwrap().push(r.clone()),
                    )
                    .await
                    .expect("server");
            });
        });
        let addrs = addr_rx.recv_timeout(WAIT).expect("the server started");
        Running {
            addrs,
            stop: Some(stop),
            reports,
            refusals,
            thread: Some(thread),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The report of a transfer of `name` (waiting for it).
    fn report_for(&self, kind: RequestKind, name: &[u8]) -> Report {
        loop {
            let r = self.reports.recv_timeout(WAIT).expect("a report");
            if r.kind == kind && r.filename == name {
                return r;
            }
        }
    }

    /// Stops the server and waits for it to end; returns the reports not read yet.
    fn stop(&mut self) -> Vec<Report> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread");
        }
        self.reports.try_iter().collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop();
        }
    }
}

fn config(root: &std::path::Path, binds: &[&str]) -> ServerConfig {
    ServerConfig {
        root: root.to_path_buf(),
        binds: binds.iter().map(|b| b.parse().unwrap()).collect(),
        allow_write: true,
        allow_overwrite: true,
        ..ServerConfig::default()
    }
}

#[test]
fn serves_downloads_and_uploads_on_both_runtimes_and_families() {
    let root = TempDir::new("tokio-server-root");
    let content = pattern(200_001, 9);
    std::fs::write(root.join("f.bin"), &content).unwrap();
    for multi in [false, true] {
        let server = Running::start(config(root.path(), &["127.0.0.1:0", "[::1]:0"]), multi);
        for (i, &addr) in server.addrs.iter().enumerate() {
            for (j, options) in [
                Options::NONE,
                Options {
                    blksize: Some(1468),
                    windowsize: Some(16),
                    tsize: Some(0),
                    ..Options::NONE
                },
                Options {
                    blksize: Some(65464),
                    windowsize: Some(4),
                    ..Options::NONE
                },
            ]
            .into_iter()
            .enumerate()
            {
                let what = format!("multi {multi}, {addr}, {options:?}");
                let client = Client::new(addr).options(options);
                let (got, _) = client.get(b"f.bin", Vec::new(), |_| {}).expect(&what);
                assert_eq!(got, content, "{what}");
                assert!(server.report_for(RequestKind::Read, b"f.bin").result.is_success());
                let name = format!("up-{multi}-{i}-{j}.bin");
                client.put(name.as_bytes(), &content[..], |_| {}).expect(&what);
                assert!(server
                    .report_for(RequestKind::Write, name.as_bytes())
                    .result
                    .is_success());
                assert_eq!(std::fs::read(root.join(&name)).unwrap(), content, "{what}");
            }
        }
        // A missing file: ERROR 1, and the refusal is logged.
        let e = Client::new(server.addr())
            .get(b"nope", Vec::new(), |_| {})
            .unwrap_err();
        assert_eq!(peer_code(&e), 1);
        // Logged right after the ERROR left: wait for it (bounded).
        let logged = || {
            let refused = server.refusals.lock().unwrap();
            refused
                .iter()
                .any(|r| r.filename == b"nope" && r.code == ErrorCode::FileNotFound)
        };
        let start = std::time::Instant::now();
        while !logged() && start.elapsed() < WAIT {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(logged(), "{:?}", server.refusals.lock().unwrap());
    }
}

#[test]
fn the_request_hook_serves_refuses_or_falls_through() {
    let root = TempDir::new("tokio-hook-root");
    std::fs::write(root.join("plain.txt"), b"from the root").unwrap();
    let c = config(root.path(), &["127.0.0.1:0"]).with_request_hook(|req| match req.filename {
        b"hello.txt" => HookDecision::Serve(Box::new(format!("hello {}\n", req.peer.ip()).into_bytes())),
        b"secret" => HookDecision::Refuse {
            code: ErrorCode::AccessViolation,
            message: "not for you".into(),
        },
        _ => HookDecision::FallThrough,
    });
    let server = Running::start(c, false);
    let client = Client::new(server.addr());
    let (got, _) = client.get(b"hello.txt", Vec::new(), |_| {}).unwrap();
    assert_eq!(got, b"hello 127.0.0.1\n");
    let e = client.get(b"secret", Vec::new(), |_| {}).unwrap_err();
    assert_eq!(peer_code(&e), 2);
    let (got, _) = client.get(b"plain.txt", Vec::new(), |_| {}).unwrap();
    assert_eq!(got, b"from the root");
}

/// At the cap, a silent client's session makes room for a real one (its client hears ERROR 0).
#[test]
fn at_the_cap_a_silent_session_is_displaced() {
    let root = TempDir::new("tokio-cap-root");
    std::fs::write(root.join("f.bin"), pattern(3000, 1)).unwrap();
    let mut c = config(root.path(), &["127.0.0.1:0"]);
    c.max_sessions = 1;
    let server = Running::start(c, false);
    let silent = socket("127.0.0.1:0");
    silent.send_to(&rrq(b"f.bin"), server.addr()).unwrap();
    let (first, _) = loopback::recv(&silent);
    assert!(matches!(first, Pkt::Data(1, _)), "{first:?}");
    // Never answered: a real client still gets the file.
    let (got, _) = Client::new(server.addr())
        .get(b"f.bin", Vec::new(), |_| {})
        .unwrap();
    assert_eq!(got, pattern(3000, 1));
    let displaced = loop {
        let (p, _) = loopback::recv(&silent);
        if let Pkt::Error(code, text) = p {
            break (code, text);
        }
    };
    assert_eq!(displaced.0, 0, "{displaced:?}");
}

/// Single-port mode: every transfer is served from the listening port.
#[test]
fn single_port_mode_answers_from_the_listening_port() {
    let root = TempDir::new("tokio-single-root");
    let content = pattern(2000, 4);
    std::fs::write(root.join("f.bin"), &content).unwrap();
    let mut c = config(root.path(), &["127.0.0.1:0"]);
    c.single_port = true;
    let server = Running::start(c, true);
    let s = socket("127.0.0.1:0");
    s.send_to(&rrq(b"f.bin"), server.addr()).unwrap();
    let mut got = Vec::new();
    for block in 1u16.. {
        let (p, from) = loopback::recv(&s);
        assert_eq!(from, server.addr(), "DATA {block} from another port");
        let Pkt::Data(n, payload) = p else { panic!("{p:?}") };
        assert_eq!(n, block);
        got.extend_from_slice(&payload);
        s.send_to(&[0, 4, (n >> 8) as u8, n as u8], from).unwrap();
        if payload.len() < 512 {
            break;
        }
    }
    assert_eq!(got, content);
    // And the blocking client, through the same port.
    let (again, _) = Client::new(server.addr())
        .get(b"f.bin", Vec::new(), |_| {})
        .unwrap();
    assert_eq!(again, content);
}

/// A shutdown in the middle of an upload aborts it: the client hears why, nothing is left.
#[test]
fn a_shutdown_mid_upload_leaves_nothing() {
    let root = TempDir::new("tokio-shutdown-root");
    let mut server = Running::start(config(root.path(), &["127.0.0.1:0"]), false);
    let s = socket("127.0.0.1:0");
    s.send_to(&wrq(b"up.bin"), server.addr()).unwrap();
    let (ack0, tid) = loopback::recv(&s);
    assert_eq!(ack0, Pkt::Ack(0));
    s.send_to(&[&[0u8, 3, 0, 1][..], &[7u8; 512]].concat(), tid)
        .unwrap();
    assert_eq!(loopback::recv(&s).0, Pkt::Ack(1));
    let rest = server.stop();
    assert!(
        rest.iter()
            .any(|r| r.filename == b"up.bin" && !r.result.is_success()),
        "{rest:?}"
    );
    let (told, _) = loopback::recv(&s);
    assert!(
        matches!(&told, Pkt::Error(0, text) if text == "Server shutting down"),
        "{told:?}"
    );
    assert_eq!(list(root.path()), names(&[]));
}

/// Every transfer is reported, however requests and ends interleave (a request arriving while a
/// finished transfer waits to be collected must not swallow that transfer's report).
#[test]
fn every_transfer_is_reported_however_they_interleave() {
    let root = TempDir::new("tokio-reports-root");
    std::fs::write(root.join("tiny.bin"), b"x").unwrap();
    let mut server = Running::start(config(root.path(), &["127.0.0.1:0"]), true);
    let addr = server.addr();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let (got, _) = Client::new(addr).get(b"tiny.bin", Vec::new(), |_| {}).unwrap();
                    assert_eq!(got, b"x");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let reports = server.stop();
    let done = reports
        .iter()
        .filter(|r| r.kind == RequestKind::Read && r.result.is_success())
        .count();
    assert_eq!(done, 80, "{reports:?}");
}
