//! Embassy-net on the host, for tests: two Ethernet NICs joined back to back (a device pair
//! implementing `embassy_net::driver::Driver`, with seeded loss, duplication and reordering of
//! UDP frames), the stacks on them, socket buffers, and a one-future executor that runs
//! embassy-time's mock clock in virtual time (it advances only when nothing else can happen).
//! Used by `tests/embassy.rs`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use embassy_net::driver::{Capabilities, Driver, HardwareAddress, LinkState, RxToken, TxToken};
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Ipv4Address, Ipv4Cidr, Runner, Stack, StackResources, StaticConfigV4};
use embassy_time::{Duration, MockDriver};

// ---------------------------------------------------------------------------------------------
// The executor: polls one future; when nothing woke it, advances the mock clock by 1 ms.

/// The mock clock is global: one scenario at a time.
pub static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Longest a scenario may run in virtual time before it counts as hung.
pub const VIRTUAL_LIMIT: Duration = Duration::from_secs(600);

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Runs `fut` to completion on this thread.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let flag = Arc::new(Flag(AtomicBool::new(true)));
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = Box::pin(fut);
    let clock = MockDriver::get();
    let start = embassy_time::Instant::now();
    let mut busy = 0u32;
    loop {
        flag.0.store(false, Ordering::SeqCst);
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        busy += 1;
        // Time moves when nothing can happen before it does, and also while something keeps
        // waking itself for work that waits on time (smoltcp's poll of a due timer), as a real
        // clock would.
        if !flag.0.load(Ordering::SeqCst) || busy >= 64 {
            busy = 0;
            clock.advance(Duration::from_millis(1));
            assert!(
                embassy_time::Instant::now() - start < VIRTUAL_LIMIT,
                "the scenario did not end within {} virtual seconds",
                VIRTUAL_LIMIT.as_secs()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The wire: two Ethernet NICs joined back to back, dropping UDP frames by a seeded pattern.

/// What a direction does to UDP frames: loses `lose` percent of them, delivers `duplicate`
/// percent twice and `reorder` percent ahead of the frame before them, each drawn from a
/// fixed-seed generator (the same frames on every run).
#[derive(Clone, Copy)]
pub struct Faults {
    lose: u32,
    duplicate: u32,
    reorder: u32,
    state: u64,
}

impl Faults {
    /// Loss only.
    pub fn loss(percent: u32, seed: u64) -> Faults {
        Faults::new(percent, 0, 0, seed)
    }

    pub fn new(lose: u32, duplicate: u32, reorder: u32, seed: u64) -> Faults {
        Faults {
            lose,
            duplicate,
            reorder,
            state: seed | 1,
        }
    }

    /// Whether an event of `percent` happens to the next frame.
    fn draw(&mut self, percent: u32) -> bool {
        // xorshift64
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state % 100) < u64::from(percent)
    }
}

#[derive(Default)]
pub struct Link {
    /// Frames waiting for side 0 (the client's) and side 1 (the server's).
    pub queues: [VecDeque<Vec<u8>>; 2],
    pub wakers: [Option<Waker>; 2],
    /// UDP frames sent by each side, and how many of them the wire lost, duplicated and
    /// reordered.
    pub udp_sent: [u64; 2],
    pub udp_lost: [u64; 2],
    pub udp_duplicated: [u64; 2],
    pub udp_reordered: [u64; 2],
    pub faults: [Option<Faults>; 2],
}

impl Link {
    fn carry(&mut self, from: usize, frame: Vec<u8>) {
        // EtherType IPv4 and IP protocol UDP: the frames loss applies to (ARP always passes).
        let udp = frame.len() > 23 && frame[12..14] == [0x08, 0x00] && frame[23] == 17;
        let to = 1 - from;
        let (mut duplicate, mut reorder) = (false, false);
        if udp {
            self.udp_sent[from] += 1;
            if let Some(f) = self.faults[from].as_mut() {
                if f.draw(f.lose) {
                    self.udp_lost[from] += 1;
                    return;
                }
                duplicate = f.draw(f.duplicate);
                reorder = f.draw(f.reorder) && !self.queues[to].is_empty();
            }
        }
        if duplicate {
            self.udp_duplicated[from] += 1;
            self.queues[to].push_back(frame.clone());
        }
        if reorder {
            self.udp_reordered[from] += 1;
            let before = self.queues[to].len() - 1;
            self.queues[to].insert(before, frame);
        } else {
            self.queues[to].push_back(frame);
        }
        if let Some(w) = self.wakers[to].take() {
            w.wake();
        }
    }
}

pub struct Nic {
    pub link: Rc<RefCell<Link>>,
    pub side: usize,
}

pub struct Rx(Vec<u8>);

pub struct Tx {
    link: Rc<RefCell<Link>>,
    side: usize,
}

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(mut self, f: F) -> R {
        f(&mut self.0)
    }
}

impl TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let r = f(&mut frame);
        self.link.borrow_mut().carry(self.side, frame);
        r
    }
}

impl Driver for Nic {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, cx: &mut Context) -> Option<(Rx, Tx)> {
        let mut link = self.link.borrow_mut();
        match link.queues[self.side].pop_front() {
            Some(frame) => Some((
                Rx(frame),
                Tx {
                    link: self.link.clone(),
                    side: self.side,
                },
            )),
            None => {
                link.wakers[self.side] = Some(cx.waker().clone());
                None
            }
        }
    }

    fn transmit(&mut self, _cx: &mut Context) -> Option<Tx> {
        Some(Tx {
            link: self.link.clone(),
            side: self.side,
        })
    }

    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = 1514;
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet([0x02, 0, 0, 0, 0, self.side as u8 + 1])
    }
}

pub const CLIENT_IP: [u8; 4] = [10, 0, 0, 1];
pub const SERVER_IP: [u8; 4] = [10, 0, 0, 2];

/// A stack at `10.0.0.<d>/24` (and, with `embassy-net-ipv6`, `fd00::<d>/64`).
pub fn stack<'d>(
    nic: Nic,
    ip: [u8; 4],
    resources: &'d mut StackResources<4>,
) -> (Stack<'d>, Runner<'d, Nic>) {
    let [a, b, c, d] = ip;
    #[allow(unused_mut)]
    let mut config = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(Ipv4Address::new(a, b, c, d), 24),
        gateway: None,
        dns_servers: Default::default(),
    });
    #[cfg(feature = "embassy-net-ipv6")]
    {
        config.ipv6 = embassy_net::ConfigV6::Static(embassy_net::StaticConfigV6 {
            address: embassy_net::Ipv6Cidr::new(ipv6(d), 64),
            gateway: None,
            dns_servers: Default::default(),
        });
    }
    embassy_net::new(nic, config, resources, u64::from(d) * 7919)
}

#[cfg(feature = "embassy-net-ipv6")]
pub fn ipv6(last: u8) -> embassy_net::Ipv6Address {
    embassy_net::Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(last))
}

/// A socket's buffers: `datagrams` of up to `size` bytes each way.
pub struct SocketBuffers {
    rx_meta: Vec<PacketMetadata>,
    rx: Vec<u8>,
    tx_meta: Vec<PacketMetadata>,
    tx: Vec<u8>,
}

impl SocketBuffers {
    pub fn new(datagrams: usize, size: usize) -> Self {
        SocketBuffers {
            rx_meta: vec![PacketMetadata::EMPTY; datagrams],
            rx: vec![0; datagrams * size],
            tx_meta: vec![PacketMetadata::EMPTY; datagrams],
            tx: vec![0; datagrams * size],
        }
    }

    pub fn socket<'a>(&'a mut self, stack: Stack<'a>) -> UdpSocket<'a> {
        UdpSocket::new(
            stack,
            &mut self.rx_meta,
            &mut self.rx,
            &mut self.tx_meta,
            &mut self.tx,
        )
    }
}
