//! A request hook in the std server: an iPXE script generated per machine on request, uploads
//! of boot logs received into memory, a refusal with the server's own ERROR, and everything
//! else served from a folder.
//!
//! ```sh
//! cargo run --example request_hook
//! ```
//!
//! It starts the server on a free loopback port, fetches one generated script, uploads a log
//! and asks for a refused name with the crate's client, prints what happened, and stops.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tftp_proto::adapter::client::Client;
use tftp_proto::adapter::mio_server::{HookDecision, ServerConfig, ServerThreads};
use tftp_proto::storage::{Storage, StorageError};
use tftp_proto::{ErrorCode, RequestKind};

/// Logs received: (name, content).
type Logs = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An upload kept in memory; handed to `sink` once the last block is in.
struct LogUpload {
    name: String,
    data: Vec<u8>,
    sink: Logs,
}

impl Storage for LogUpload {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        let end = offset as usize + data.len();
        if end > 1 << 20 {
            return Err(StorageError::DiskFull);
        }
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
    fn finish(&mut self) -> Result<(), StorageError> {
        let log = (self.name.clone(), std::mem::take(&mut self.data));
        self.sink.lock().unwrap().push(log);
        Ok(())
    }
}

/// `boot/52-54-00-12-34-56.ipxe` -> the machine's MAC address, if the name is one of those.
fn mac_of(name: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(name).ok()?;
    let mac = name.strip_prefix("boot/")?.strip_suffix(".ipxe")?;
    let ok = mac.len() == 17
        && mac
            .split('-')
            .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok());
    ok.then(|| mac.replace('-', ":"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::temp_dir().join(format!("tftp-hook-example-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("undionly.kpxe"), b"(a boot loader)")?;
    let logs: Logs = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&logs);
    let config = ServerConfig {
        root: root.clone(),
        binds: vec!["127.0.0.1:0".parse()?],
        ..ServerConfig::default()
    }
    .with_request_hook(move |req| {
        if req.kind == RequestKind::Read {
            if let Some(mac) = mac_of(req.filename) {
                let script = format!(
                    "#!ipxe\necho Booting {mac} (asked from {})\nchain http://boot.example/{mac}/kernel\n",
                    req.peer.ip()
                );
                return HookDecision::Serve(Box::new(script.into_bytes()));
            }
        }
        if req.kind == RequestKind::Write && req.filename.starts_with(b"logs/") {
            return HookDecision::Serve(Box::new(LogUpload {
                name: String::from_utf8_lossy(req.filename).into_owned(),
                data: Vec::new(),
                sink: Arc::clone(&sink),
            }));
        }
        if req.filename.starts_with(b"secret") {
            return HookDecision::Refuse {
                code: ErrorCode::AccessViolation,
                message: "secrets are not served here".into(),
            };
        }
        HookDecision::FallThrough
    });
    let servers = ServerThreads::bind(&config, 1)?;
    let addr: SocketAddr = servers.local_addrs()[0];
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let server = std::thread::spawn(move || {
        servers.run(&flag, |r| {
            println!("server: {}", tftp_proto::adapter::mio_server::format_report(r))
        })
    });

    let client = Client::new(addr);
    let (script, _) = client.get(b"boot/52-54-00-12-34-56.ipxe", Vec::new(), |_| {})?;
    print!("generated script:\n{}", String::from_utf8_lossy(&script));
    let (loader, _) = client.get(b"undionly.kpxe", Vec::new(), |_| {})?;
    println!("from the folder: {}", String::from_utf8_lossy(&loader));
    client.put(b"logs/52-54-00-12-34-56.txt", &b"kernel booted\n"[..], |_| {})?;
    match client.get(b"secret.key", Vec::new(), |_| {}) {
        Err(e) => println!("refused: {e}"),
        Ok(_) => return Err("the secret was served".into()),
    }

    stop.store(true, Ordering::Relaxed);
    server.join().expect("server thread")?;
    for (name, data) in logs.lock().unwrap().iter() {
        println!(
            "log received: {name}: {}",
            String::from_utf8_lossy(data).trim_end()
        );
    }
    std::fs::remove_dir_all(&root)?;
    Ok(())
}
