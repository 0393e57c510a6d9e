//! A board-style fetch over embassy-net: [`fetch`] is the task a firmware runs once its network
//! stack is up, downloading an image from a TFTP server into RAM with
//! [`EmbassyClient`](tftp_proto::embassy::EmbassyClient) (no heap, no std).
//!
//! It asks for every option a download can use (`blksize` 1468, the largest an Ethernet frame
//! carries unfragmented; `windowsize` 8; `timeout` 1; `tsize`, so an image that does not fit is
//! refused before any data flows) and accepts whatever subset the server grants.
//!
//! On a board, `main` is the HAL's: it brings up the MAC driver and the time driver, spawns
//! the stack's runner and this task. Here the board target (`thumbv7em-none-eabihf`) gets
//! stand-ins for both drivers that the optimiser cannot see through, so the image holds the
//! real client and stack code, which is what its size measures:
//!
//! ```text
//! cargo build --release --example embassy_fetch --target thumbv7em-none-eabihf \
//!     --no-default-features --features embassy-net
//! arm-none-eabi-size -A target/thumbv7em-none-eabihf/release/examples/embassy_fetch
//! ```
//!
//! `bash benches/embassy_size.sh` builds it three times: with `fetch` (the boot client), with
//! `fetch_with_engine` (the engine), and with a plain UDP exchange in their place, and prints
//! each client's share (the README's footprint table).
//!
//! It builds for the host too (`cargo build --example embassy_fetch --features embassy-net`),
//! where it only says so: the runnable host version of this code is `tests/embassy.rs`, which
//! joins the client and `EmbassyServer` over an in-memory Ethernet pair.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Ipv4Address, Stack};
use tftp_proto::embassy::{EmbassyClient, Error};
use tftp_proto::Options;

/// Datagrams each way the socket holds: a window of 8.
const WINDOW: usize = 8;
/// Largest datagram: `blksize` 1468 plus the 4-byte DATA header.
const DATAGRAM: usize = 1472;

/// The socket's buffers: a window of blocks in, two datagrams out (ACKs are small).
struct SocketBuffers {
    rx_meta: [PacketMetadata; WINDOW],
    tx_meta: [PacketMetadata; 2],
    rx: [u8; WINDOW * DATAGRAM],
    tx: [u8; 2 * DATAGRAM],
}

impl SocketBuffers {
    const fn new() -> Self {
        SocketBuffers {
            rx_meta: [PacketMetadata::EMPTY; WINDOW],
            tx_meta: [PacketMetadata::EMPTY; 2],
            rx: [0; WINDOW * DATAGRAM],
            tx: [0; 2 * DATAGRAM],
        }
    }

    fn socket<'a>(&'a mut self, stack: Stack<'a>) -> UdpSocket<'a> {
        UdpSocket::new(
            stack,
            &mut self.rx_meta,
            &mut self.rx,
            &mut self.tx_meta,
            &mut self.tx,
        )
    }
}

/// Every option a download can use: the largest unfragmented block, a window the socket
/// holds, a 1 s timeout, and the file's size up front.
const OPTIONS: Options = Options {
    blksize: Some((DATAGRAM - 4) as u16),
    windowsize: Some(WINDOW as u16),
    timeout: Some(1),
    tsize: Some(0),
    ..Options::NONE
};

/// Downloads `name` from the TFTP server at `server` into `image`, returning the file's length,
/// with the boot client (`boot_into`): the smallest download.
pub async fn fetch(
    stack: Stack<'_>,
    server: Ipv4Address,
    name: &[u8],
    image: &mut [u8],
) -> Result<usize, Error> {
    stack.wait_config_up().await;
    let mut buffers = SocketBuffers::new();
    let mut socket = buffers.socket(stack);
    let mut client = EmbassyClient::new(&mut socket, (server, 69)).options(OPTIONS);
    client.boot_into(name, image).await
}

/// [`fetch`] with the engine (`get_into`): an adaptive retransmission timer, netascii, a dally
/// after the final ACK, and `get`/`put` with any storage in the same code.
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
pub async fn fetch_with_engine(
    stack: Stack<'_>,
    server: Ipv4Address,
    name: &[u8],
    image: &mut [u8],
) -> Result<usize, Error> {
    stack.wait_config_up().await;
    let mut buffers = SocketBuffers::new();
    let mut socket = buffers.socket(stack);
    let mut client = EmbassyClient::new(&mut socket, (server, 69)).options(OPTIONS);
    client.get_into(name, image).await
}

/// For `benches/embassy_size.sh`: the same stack and socket exchanging one datagram without
/// TFTP (what any UDP user of the stack links), so the difference between the builds is the
/// client's code.
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
async fn baseline(stack: Stack<'_>, server: Ipv4Address, image: &mut [u8]) -> Result<usize, Error> {
    stack.wait_config_up().await;
    let mut buffers = SocketBuffers::new();
    let mut socket = buffers.socket(stack);
    socket.bind(0).map_err(Error::Bind)?;
    socket.send_to(b"x", (server, 69)).await.map_err(Error::Send)?;
    let (n, _) = socket.recv_from(image).await.map_err(|_| Error::Unaddressable)?;
    Ok(n)
}

#[cfg(target_os = "none")]
mod board {
    use core::hint::black_box;
    use core::sync::atomic::{AtomicU32, Ordering};
    use core::task::{Context, Waker};

    use embassy_futures::select::select;
    use embassy_net::driver::{Capabilities, Driver, HardwareAddress, LinkState, RxToken, TxToken};
    use embassy_net::{Ipv4Address, Ipv4Cidr, StackResources, StaticConfigV4};

    use super::{baseline, fetch, fetch_with_engine};

    /// Stand-in for the MAC driver: its frames are the DMA memory the optimiser knows nothing
    /// about.
    struct StubMac;

    struct Frame;

    impl RxToken for Frame {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
            f(black_box::<&mut [u8]>(&mut []))
        }
    }

    impl TxToken for Frame {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
            black_box(len);
            f(black_box::<&mut [u8]>(&mut []))
        }
    }

    impl Driver for StubMac {
        type RxToken<'a> = Frame;
        type TxToken<'a> = Frame;
        fn receive(&mut self, _cx: &mut Context) -> Option<(Frame, Frame)> {
            black_box(true).then_some((Frame, Frame))
        }
        fn transmit(&mut self, _cx: &mut Context) -> Option<Frame> {
            black_box(true).then_some(Frame)
        }
        fn link_state(&mut self, _cx: &mut Context) -> LinkState {
            if black_box(true) {
                LinkState::Up
            } else {
                LinkState::Down
            }
        }
        fn capabilities(&self) -> Capabilities {
            let mut caps = Capabilities::default();
            caps.max_transmission_unit = 1514;
            caps
        }
        fn hardware_address(&self) -> HardwareAddress {
            HardwareAddress::Ethernet([0x02, 0, 0, 0, 0, 1])
        }
    }

    /// Stand-in for the board's time driver (a hardware timer and its alarm).
    struct StubTimer(AtomicU32);

    impl embassy_time_driver::Driver for StubTimer {
        fn now(&self) -> u64 {
            u64::from(black_box(self.0.fetch_add(1, Ordering::Relaxed)))
        }
        fn schedule_wake(&self, at: u64, waker: &Waker) {
            black_box((at, waker));
        }
    }

    embassy_time_driver::time_driver_impl!(static TIMER: StubTimer = StubTimer(AtomicU32::new(0)));

    #[no_mangle]
    pub extern "C" fn _start() -> ! {
        // The RAM the image goes to, as the linker script would place it.
        let image: &mut [u8] = black_box::<&mut [u8]>(&mut []);
        let mut resources = StackResources::<2>::new();
        let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
            address: Ipv4Cidr::new(Ipv4Address::new(192, 0, 2, 10), 24),
            gateway: None,
            dns_servers: Default::default(),
        });
        let (stack, mut runner) = embassy_net::new(StubMac, config, &mut resources, black_box(0x5eed));
        let server = Ipv4Address::new(192, 0, 2, 1);
        // A board's executor sleeps between wake-ups; this one polls.
        let name = b"firmware.bin";
        // benches/embassy_size.sh builds each variant; a board runs `fetch`.
        match option_env!("EMBASSY_FETCH_VARIANT") {
            Some("baseline") => {
                black_box(embassy_futures::block_on(select(
                    runner.run(),
                    baseline(stack, server, image),
                )));
            }
            Some("engine") => {
                let download = fetch_with_engine(stack, server, name, image);
                black_box(embassy_futures::block_on(select(runner.run(), download)));
            }
            _ => {
                black_box(embassy_futures::block_on(select(
                    runner.run(),
                    fetch(stack, server, name, image),
                )));
            }
        }
        loop {}
    }

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!(
        "embassy_fetch is a board example: build it for thumbv7em-none-eabihf (see its docs). \
         Its host counterpart runs in tests/embassy.rs: cargo test --features embassy-net --test embassy"
    );
}
