//! A boot-loader style TFTP client: [`BootClient`](tftp_proto::boot::BootClient) driven through
//! a stub network interface, with no std, no heap and no allocator: the firmware case.
//!
//! It downloads in octet mode into the RAM the image goes to, asking for every option a
//! download can use (`blksize` 1428, `windowsize` 8, `timeout` 1, `tsize`), and accepts any
//! subset of them a server grants; block numbers roll over past 65535. `BootClient` is the
//! crate's minimal download client (a fixed retransmission interval, no event queue, 16-bit
//! block arithmetic); the general engine's `Transfer::client` does the same with an adaptive
//! timer, pacing and events, in about twice the code (6,760 B `.text` + 540 B `.rodata` in
//! this example before it moved to `BootClient`, with the engine narrowed to octet downloads).
//!
//! Build it for a Cortex-M4F and measure it:
//!
//! ```text
//! cargo build --release --example firmware_client --target thumbv7em-none-eabihf --no-default-features
//! arm-none-eabi-size -A target/thumbv7em-none-eabihf/release/examples/firmware_client
//! ```
//!
//! With the `.cargo/config.toml` settings for that target (opt-level `z`, one codegen unit, fat
//! LTO) and rustc 1.95: 3,446 B `.text` + 152 B `.rodata` = 3,598 B (lwIP's option-less client
//! is ~1.8 KiB: 1.95x), of which 742 B are compiler-builtins' `memcpy`, which a C firmware
//! takes from its libc; no panic or formatting code is linked. The client state is 96 bytes on
//! the target (`BootClient`, 112 on x86-64). The datagram buffers (516 + 1,432 bytes) are the
//! driver's, and the image's RAM is the platform's: the stub hands out slices the optimiser
//! knows nothing about, so no buffer is zeroed or copied here.
//!
//! On the host (`cargo run --example firmware_client`) the same `fetch` function downloads a
//! file from an in-memory server engine, checks it, and prints the client's RAM use.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use core::net::SocketAddr;

use tftp_proto::boot::{BootClient, BootConfig, Status};
use tftp_proto::Instant;

/// Largest block the firmware asks for: fits an Ethernet frame without IP fragmentation.
pub const BLKSIZE: u16 = 1428;

/// What the firmware's network stack provides. The datagram buffers are the driver's own, as
/// with most MAC drivers (DMA descriptors): nothing is copied between them and the client.
pub trait Nic {
    /// The transmit buffer: at least 516 bytes, as a receiver's requests, ACKs and ERRORs
    /// fit in them.
    fn tx_buffer(&mut self) -> &mut [u8];
    /// The transmit buffer, and a received datagram (up to `4 + BLKSIZE` bytes) if one is
    /// waiting: the client answers a datagram straight into the transmit buffer.
    fn poll(&mut self) -> (&mut [u8], Option<(&[u8], SocketAddr)>);
    /// Sends the first `len` bytes of the transmit buffer as one UDP datagram.
    fn send(&mut self, to: SocketAddr, len: usize);
    /// The current time.
    fn now(&mut self) -> Instant;
}

/// Downloads `name` from `server` into `dest`, returning the file's length.
pub fn fetch<N: Nic>(nic: &mut N, server: SocketAddr, name: &[u8], dest: &mut [u8]) -> Option<usize> {
    // Every option a download can use: large blocks, windows of 8, a 1 s timeout, and the
    // file's size up front (refused at once if the image does not fit).
    let config = BootConfig {
        blksize: Some(BLKSIZE),
        windowsize: Some(8),
        timeout: Some(1),
        tsize: true,
        ..BootConfig::DEFAULT
    };
    let mut client = BootClient::new(server, name, dest, config);
    let now = nic.now();
    let len = client.start(now, nic.tx_buffer()).ok()?;
    nic.send(server, len);
    loop {
        if let Some(outcome) = client.outcome() {
            return outcome.ok();
        }
        let now = nic.now();
        let (tx, rx) = nic.poll();
        let (status, from) = match rx {
            Some((datagram, from)) => (client.handle_datagram(now, from, datagram, tx), from),
            None => (client.handle_timeout(now, tx), client.peer()),
        };
        match status {
            Status::Send(len) => nic.send(client.peer(), len),
            Status::Reply(len) => nic.send(from, len),
            Status::Idle => {}
        }
    }
}

#[cfg(target_os = "none")]
mod target {
    use core::hint::black_box;
    use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

    use super::{fetch, Nic};
    use tftp_proto::Instant;

    /// A stand-in for the MAC/IP driver: opaque to the optimiser, so the engine is kept whole.
    /// Its buffers stand for the driver's DMA memory: slices the optimiser knows nothing about.
    struct StubNic {
        clock: u64,
    }

    impl Nic for StubNic {
        fn tx_buffer(&mut self) -> &mut [u8] {
            black_box::<&mut [u8]>(&mut [])
        }
        fn poll(&mut self) -> (&mut [u8], Option<(&[u8], SocketAddr)>) {
            let datagram = black_box::<&[u8]>(&[]);
            let from = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), black_box(69)));
            let rx = black_box(!datagram.is_empty()).then_some((datagram, from));
            (black_box::<&mut [u8]>(&mut []), rx)
        }
        fn send(&mut self, to: SocketAddr, len: usize) {
            black_box((to, len));
        }
        fn now(&mut self) -> Instant {
            self.clock += black_box(1000);
            Instant::from_micros(self.clock)
        }
    }

    #[no_mangle]
    pub extern "C" fn _start() -> ! {
        // The RAM the image goes to, as the linker script would place it.
        let image: &mut [u8] = black_box::<&mut [u8]>(&mut []);
        let server = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 69));
        let got = fetch(&mut StubNic { clock: 0 }, server, b"firmware.bin", image);
        black_box(got);
        loop {}
    }

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    use std::collections::VecDeque;
    use tftp_proto::engine::{Config, ServerPolicy, Transfer};
    use tftp_proto::{Packet, RequestKind as Kind};

    /// The host stand-in: an in-memory server engine at the other end of the wire.
    struct SimNic {
        clock: u64,
        file: Vec<u8>,
        server: Option<Transfer<'static, &'static [u8]>>,
        to_client: VecDeque<Vec<u8>>,
        tx: Vec<u8>,
        rx: Vec<u8>,
        tid: SocketAddr,
        me: SocketAddr,
    }

    impl Nic for SimNic {
        fn tx_buffer(&mut self) -> &mut [u8] {
            &mut self.tx
        }
        fn send(&mut self, _to: SocketAddr, len: usize) {
            let now = Instant::from_micros(self.clock);
            let datagram = &self.tx[..len];
            if self.server.is_none() {
                let Ok(Packet::Rrq(req)) = Packet::parse(datagram) else {
                    return;
                };
                let file: &'static [u8] = Box::leak(self.file.clone().into_boxed_slice());
                let policy = ServerPolicy::default();
                self.server = Some(Transfer::server(
                    now,
                    self.me,
                    Kind::Read,
                    &req,
                    file,
                    &policy,
                    Config::default(),
                ));
            } else if let Some(s) = self.server.as_mut() {
                s.handle_datagram(now, self.me, datagram);
            }
            let mut buf = [0u8; 65536];
            if let Some(s) = self.server.as_mut() {
                while let Some(t) = s.poll_transmit(now, &mut buf) {
                    self.to_client.push_back(buf[..t.len].to_vec());
                }
            }
        }
        fn poll(&mut self) -> (&mut [u8], Option<(&[u8], SocketAddr)>) {
            let rx = self.to_client.pop_front().map(|d| {
                self.rx = d;
                (&self.rx[..], self.tid)
            });
            (&mut self.tx, rx)
        }
        fn now(&mut self) -> Instant {
            self.clock += 10;
            Instant::from_micros(self.clock)
        }
    }

    let file: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut nic = SimNic {
        clock: 0,
        file: file.clone(),
        server: None,
        to_client: VecDeque::new(),
        tx: vec![0; 516],
        rx: Vec::new(),
        tid: "192.0.2.1:50123".parse().unwrap(),
        me: "192.0.2.50:2000".parse().unwrap(),
    };
    let mut image = vec![0u8; 128 * 1024];
    let n = fetch(
        &mut nic,
        "192.0.2.1:69".parse().unwrap(),
        b"firmware.bin",
        &mut image,
    )
    .expect("download");
    assert_eq!(&image[..n], &file[..]);
    println!(
        "fetched {n} bytes; client state {} bytes (BootClient); \
         the driver's datagram buffers: {} bytes",
        core::mem::size_of::<BootClient<'static>>(),
        516 + 4 + BLKSIZE as usize
    );
}
