//! A tokio TFTP server: serves a folder, plus one generated file (`hello.txt`, made per
//! request) through the request hook; uploads are accepted. Stops on Ctrl-C.
//!
//! ```text
//! cargo run --example tokio_server --features tokio -- ./srv 127.0.0.1:6969
//! tftp-proto get 127.0.0.1:6969 hello.txt -          # the generated file
//! tftp-proto put 127.0.0.1:6969 ./image.bin          # into ./srv
//! ```

use std::net::SocketAddr;

use tftp_proto::adapter::mio_server::{HookDecision, ServerConfig};
use tftp_proto::adapter::tokio_server::AsyncServer;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let root = args.next().unwrap_or_else(|| ".".into());
    let bind: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:6969".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bind address: {e}")))?;
    let config = ServerConfig {
        root: root.clone().into(),
        binds: vec![bind],
        allow_write: true,
        ..ServerConfig::default()
    }
    .with_request_hook(|req| {
        if req.filename == b"hello.txt" {
            let text = format!("hello {}, you asked on {}\n", req.peer, req.local);
            HookDecision::Serve(Box::new(text.into_bytes()))
        } else {
            HookDecision::FallThrough
        }
    });
    let server = AsyncServer::bind(&config)?;
    println!(
        "serving {root} and hello.txt on {:?} (Ctrl-C stops)",
        server.local_addrs()
    );
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    server
        .run_logged(
            ctrl_c,
            |report| println!("{}", tftp_proto::adapter::mio_server::format_report(report)),
            |refusal| println!("{}", tftp_proto::adapter::log::format_refusal(refusal)),
        )
        .await
}
