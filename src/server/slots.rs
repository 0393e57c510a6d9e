//! Where a [`ServerTable`](super::ServerTable) keeps its sessions, and the indexes it keeps over
//! them without a heap: the slots themselves (a fixed array, a caller's slice, or a growable
//! `Vec` with the `alloc` feature), the handles that name a slot, and the intrusive structures
//! threaded through the slots, so that every per-datagram and per-turn operation costs O(1) or
//! O(log n) whatever the number of sessions:
//!
//! * a hash index by peer address (chains whose heads live in the slots: bucket `b`'s head is
//!   in slot `b`), for requests and single-port datagrams;
//! * a binary min-heap of deadlines (the heap array is spread over the slots too), for the next
//!   timer and the sessions due;
//! * FIFO and LIFO lists (sessions with something to send, finished ones, ones whose storage
//!   has idle work due, free slots) and the age-ordered list of sessions whose peer has not
//!   answered yet, the candidates for displacement when the table is full.

use crate::time::Instant;

/// "No slot": the end of a list, an empty bucket, a session not in the heap.
pub(super) const NIL: u32 = u32::MAX;

/// A session's name in its table: the slot and the slot's generation, so a handle kept past
/// its session's end never reaches the session that reuses the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SessionHandle {
    pub(super) index: u32,
    pub(super) generation: u32,
}

impl SessionHandle {
    /// The slot's position, below the table's [`capacity`](super::ServerTable::capacity): a
    /// dense key for a driver's own per-session data (its socket, say). The slot is reused
    /// after the session is collected; compare whole handles to tell sessions apart.
    pub fn index(self) -> usize {
        self.index as usize
    }
}

/// The links of one slot in the table's intrusive structures.
#[derive(Debug, Clone, Copy)]
pub(super) struct Links {
    /// Bumped when the slot is freed.
    pub generation: u32,
    /// Head of the peer-index chain of bucket number `this slot's index`.
    pub bucket: u32,
    /// Next session in the same peer-index chain.
    pub peer_next: u32,
    /// Next in the transmit queue.
    pub ready_next: u32,
    /// Next in the finished queue, or in the free list for an empty slot.
    pub done_next: u32,
    /// Next in the list of sessions whose storage has idle work due.
    pub sent_next: u32,
    /// Neighbours in the list of sessions whose peer has not answered, oldest first.
    pub young_prev: u32,
    /// See `young_prev`.
    pub young_next: u32,
    /// The session at heap position `this slot's index`.
    pub heap: u32,
    /// This slot's session's position in the heap, or [`NIL`].
    pub heap_pos: u32,
    /// This slot's session's deadline while it is in the heap.
    pub due: Instant,
    /// Next in the list of sessions due in one `handle_timeout`.
    pub due_next: u32,
    /// In the transmit queue (kept with the slot, not the session: a slot freed while queued
    /// stays queued, and its entry is skipped or serves the slot's next session).
    pub queued: bool,
    /// In the idle-work list (same rule as `queued`).
    pub idle_due: bool,
}

impl Links {
    const EMPTY: Links = Links {
        generation: 0,
        bucket: NIL,
        peer_next: NIL,
        ready_next: NIL,
        done_next: NIL,
        sent_next: NIL,
        young_prev: NIL,
        young_next: NIL,
        heap: NIL,
        heap_pos: NIL,
        due: Instant::ZERO,
        due_next: NIL,
        queued: false,
        idle_due: false,
    };
}

/// One place for a session in a table's storage (opaque: create them with [`Slot::EMPTY`] or
/// [`Slot::new`]).
pub struct Slot<S> {
    pub(super) session: Option<super::Session<S>>,
    pub(super) links: Links,
}

impl<S> Slot<S> {
    /// An empty slot, for building arrays: `[Slot::EMPTY; 64]`.
    pub const EMPTY: Slot<S> = Slot {
        session: None,
        links: Links::EMPTY,
    };

    /// An empty slot.
    pub const fn new() -> Self {
        Self::EMPTY
    }
}

impl<S> Default for Slot<S> {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl<S> core::fmt::Debug for Slot<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Slot")
            .field("occupied", &self.session.is_some())
            .finish()
    }
}

/// The memory a [`ServerTable`](super::ServerTable) keeps its slots in: a fixed array
/// `[Slot<S>; N]` (inline, `no_std`), a caller's `&mut [Slot<S>]` (a `static`, say), or, with
/// the `alloc` feature, a `Vec<Slot<S>>` that grows as sessions arrive (up to the session
/// limit) and never shrinks below its peak.
pub trait SlotStorage<S> {
    /// The slots.
    fn slots(&self) -> &[Slot<S>];
    /// The slots, mutably.
    fn slots_mut(&mut self) -> &mut [Slot<S>];
    /// Adds empty slots at the end, to at most `max` in all; whether any were added. Fixed
    /// storage never grows.
    fn grow(&mut self, max: usize) -> bool {
        let _ = max;
        false
    }
    /// The most slots this storage can ever hold.
    fn max_len(&self) -> usize {
        self.slots().len()
    }
}

impl<S, const N: usize> SlotStorage<S> for [Slot<S>; N] {
    fn slots(&self) -> &[Slot<S>] {
        self
    }
    fn slots_mut(&mut self) -> &mut [Slot<S>] {
        self
    }
}

impl<S> SlotStorage<S> for &mut [Slot<S>] {
    fn slots(&self) -> &[Slot<S>] {
        self
    }
    fn slots_mut(&mut self) -> &mut [Slot<S>] {
        self
    }
}

#[cfg(feature = "alloc")]
impl<S> SlotStorage<S> for alloc::vec::Vec<Slot<S>> {
    fn slots(&self) -> &[Slot<S>] {
        self
    }
    fn slots_mut(&mut self) -> &mut [Slot<S>] {
        self
    }
    /// Grows by half (from 16), up to `max` and to the largest index a handle can hold: new
    /// slots are written (so resident) at once, and half keeps the unused ones few.
    fn grow(&mut self, max: usize) -> bool {
        let cap = max.min(NIL as usize);
        let len = self.len();
        if len >= cap {
            return false;
        }
        let new_len = len.saturating_add(len / 2).clamp(16, cap);
        self.resize_with(new_len, Slot::new);
        true
    }
    fn max_len(&self) -> usize {
        NIL as usize
    }
}

/// Which `u32` link of a slot a singly linked list runs through.
pub(super) type Field = fn(&mut Links) -> &mut u32;

pub(super) fn ready_link(l: &mut Links) -> &mut u32 {
    &mut l.ready_next
}
pub(super) fn done_link(l: &mut Links) -> &mut u32 {
    &mut l.done_next
}
pub(super) fn sent_link(l: &mut Links) -> &mut u32 {
    &mut l.sent_next
}
pub(super) fn due_link(l: &mut Links) -> &mut u32 {
    &mut l.due_next
}

/// A singly linked FIFO threaded through one link field of the slots.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fifo {
    head: u32,
    tail: u32,
}

impl Fifo {
    pub const EMPTY: Fifo = Fifo { head: NIL, tail: NIL };

    pub fn is_empty(&self) -> bool {
        self.head == NIL
    }

    pub fn push_back<S>(&mut self, slots: &mut [Slot<S>], field: Field, i: u32) {
        *field(&mut slots[i as usize].links) = NIL;
        if self.tail == NIL {
            self.head = i;
        } else {
            *field(&mut slots[self.tail as usize].links) = i;
        }
        self.tail = i;
    }

    pub fn push_front<S>(&mut self, slots: &mut [Slot<S>], field: Field, i: u32) {
        *field(&mut slots[i as usize].links) = self.head;
        if self.head == NIL {
            self.tail = i;
        }
        self.head = i;
    }

    pub fn pop_front<S>(&mut self, slots: &mut [Slot<S>], field: Field) -> Option<u32> {
        let i = self.head;
        if i == NIL {
            return None;
        }
        self.head = *field(&mut slots[i as usize].links);
        if self.head == NIL {
            self.tail = NIL;
        }
        Some(i)
    }
}

/// The sessions whose peer has not answered yet, oldest first (doubly linked: a session leaves
/// from anywhere when its peer answers).
#[derive(Debug, Clone, Copy)]
pub(super) struct AgeList {
    head: u32,
    tail: u32,
    len: usize,
}

impl AgeList {
    pub const EMPTY: AgeList = AgeList {
        head: NIL,
        tail: NIL,
        len: 0,
    };

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn front(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    pub fn push_back<S>(&mut self, slots: &mut [Slot<S>], i: u32) {
        let l = &mut slots[i as usize].links;
        l.young_prev = self.tail;
        l.young_next = NIL;
        if self.tail == NIL {
            self.head = i;
        } else {
            slots[self.tail as usize].links.young_next = i;
        }
        self.tail = i;
        self.len += 1;
    }

    pub fn remove<S>(&mut self, slots: &mut [Slot<S>], i: u32) {
        let Links {
            young_prev: prev,
            young_next: next,
            ..
        } = slots[i as usize].links;
        if prev == NIL {
            self.head = next;
        } else {
            slots[prev as usize].links.young_next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            slots[next as usize].links.young_prev = prev;
        }
        let l = &mut slots[i as usize].links;
        l.young_prev = NIL;
        l.young_next = NIL;
        self.len -= 1;
    }
}

/// A binary min-heap of session deadlines: position `p`'s session is in slot `p`'s `heap`
/// link, and each session knows its position (so a deadline moves or leaves in O(log n)).
#[derive(Debug, Clone, Copy)]
pub(super) struct DeadlineHeap {
    len: u32,
}

impl DeadlineHeap {
    pub const EMPTY: DeadlineHeap = DeadlineHeap { len: 0 };

    /// The session with the earliest deadline, and the deadline.
    pub fn peek<S>(&self, slots: &[Slot<S>]) -> Option<(u32, Instant)> {
        if self.len == 0 {
            return None;
        }
        let i = slots[0].links.heap;
        Some((i, slots[i as usize].links.due))
    }

    /// Puts session `i` in the heap with deadline `due`, or moves it there; `None` takes it
    /// out.
    pub fn set<S>(&mut self, slots: &mut [Slot<S>], i: u32, due: Option<Instant>) {
        let pos = slots[i as usize].links.heap_pos;
        match (pos, due) {
            (NIL, None) => {}
            (NIL, Some(due)) => {
                let p = self.len;
                self.len += 1;
                slots[i as usize].links.due = due;
                self.place(slots, p, i);
                self.sift_up(slots, p);
            }
            (p, None) => {
                self.len -= 1;
                let last = self.len;
                slots[i as usize].links.heap_pos = NIL;
                if p != last {
                    let moved = slots[last as usize].links.heap;
                    self.place(slots, p, moved);
                    self.sift_up(slots, p);
                    let p = slots[moved as usize].links.heap_pos;
                    self.sift_down(slots, p);
                }
                slots[last as usize].links.heap = NIL;
            }
            (p, Some(due)) => {
                let old = slots[i as usize].links.due;
                slots[i as usize].links.due = due;
                if due < old {
                    self.sift_up(slots, p);
                } else if due > old {
                    self.sift_down(slots, p);
                }
            }
        }
    }

    fn place<S>(&self, slots: &mut [Slot<S>], p: u32, i: u32) {
        slots[p as usize].links.heap = i;
        slots[i as usize].links.heap_pos = p;
    }

    fn due_at<S>(slots: &[Slot<S>], p: u32) -> Instant {
        slots[slots[p as usize].links.heap as usize].links.due
    }

    fn sift_up<S>(&self, slots: &mut [Slot<S>], mut p: u32) {
        while p > 0 {
            let parent = (p - 1) / 2;
            if Self::due_at(slots, parent) <= Self::due_at(slots, p) {
                break;
            }
            self.swap(slots, p, parent);
            p = parent;
        }
    }

    fn sift_down<S>(&self, slots: &mut [Slot<S>], mut p: u32) {
        loop {
            let (l, r) = (2 * p + 1, 2 * p + 2);
            let mut least = p;
            if l < self.len && Self::due_at(slots, l) < Self::due_at(slots, least) {
                least = l;
            }
            if r < self.len && Self::due_at(slots, r) < Self::due_at(slots, least) {
                least = r;
            }
            if least == p {
                break;
            }
            self.swap(slots, p, least);
            p = least;
        }
    }

    fn swap<S>(&self, slots: &mut [Slot<S>], a: u32, b: u32) {
        let (ia, ib) = (slots[a as usize].links.heap, slots[b as usize].links.heap);
        self.place(slots, a, ib);
        self.place(slots, b, ia);
    }
}

/// The peer-address hash of `peer` under `seed`.
pub(super) fn peer_hash(seed: u64, peer: &core::net::SocketAddr) -> u64 {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    match peer {
        core::net::SocketAddr::V4(a) => eat(&a.ip().octets()),
        core::net::SocketAddr::V6(a) => eat(&a.ip().octets()),
    }
    eat(&peer.port().to_be_bytes());
    // Mix the high bits down: the bucket is taken modulo the slot count.
    h ^= h >> 31;
    h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 29)
}

/// The bucket of `hash` among `len` slots.
pub(super) fn bucket_of(hash: u64, len: usize) -> usize {
    (hash % len as u64) as usize
}
