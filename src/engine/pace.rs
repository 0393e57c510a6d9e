//! Pacing for windowed sends: after a window loses blocks, the sender spaces its blocks out
//! at the rate the receiver showed it can absorb, instead of bursting whole windows.
//!
//! A windowed sender that bursts a whole window into a receiver whose socket buffer holds less
//! loses the rest of every window, and keeps doing so (RFC 7440 §4 asks senders to adapt).
//! The receiver acknowledges the last block it has in order, so the ACK that reports a gap
//! tells how many blocks of the window got through (`d`) and how long the receiver took for
//! them (`t`, the window's round trip less the path's smallest): the
//! receiver absorbs a block per `t / d`. From then on a token bucket spaces blocks that far
//! apart, in bursts of at most half of `d`. A further loss halves the burst (a burst longer
//! than the receiver's buffer loses blocks at any rate) or, once bursts are single blocks,
//! lengthens the spacing by at most a quarter (the receiver may still be draining earlier
//! windows, so one short window is weak evidence). Every window that arrives whole (without a
//! tail-loss probe) shortens the spacing by an eighth and allows one more block per burst, until
//! the sender is unpaced again. A sender that never loses a block is never paced. A paced
//! sender's tail-loss probe waits twice the usual delay of a window's ACK, not the
//! retransmission timeout's floor: its receiver has shown it loses blocks, so a late ACK is
//! more likely a lost tail than a pause (an unpaced sender's probe waits the floor: its
//! receiver may only be slow).
//!
//! ACKs that come after one of our timers fired (a retransmission timeout, a tail-loss probe)
//! are no delay samples: the receiver's timer may have fired too, and the ACK may answer
//! either. A receiver that repeats its ACK of the block before the window after its own
//! timeout ([`Pacer::on_stall`]) took none of it: bursts become single blocks.
//! Integer arithmetic only.

use crate::time::Instant;

/// Pacing state of one sender.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct Pacer {
    /// Microseconds between blocks; 0 when not pacing.
    interval_us: u32,
    /// Most blocks sent back to back (the bucket's size).
    burst: u16,
    /// Blocks that may leave now (the bucket's tokens), as of `refilled`.
    tokens: u16,
    /// When `tokens` was last brought up to date.
    refilled: Instant,
    /// When the current window's first block left.
    window_start: Option<Instant>,
    /// The current window follows a timeout: its ACK is no delay sample.
    after_timeout: bool,
    /// The current window's tail was probed: its ACK is no delay sample, nor a whole window.
    probed: bool,
}

impl Pacer {
    /// Whether the sender paces at all: only after the receiver lost blocks.
    pub(crate) fn is_pacing(&self) -> bool {
        self.interval_us != 0
    }

    /// Adds the tokens earned since the last refill.
    fn refill(&mut self, now: Instant) {
        if self.interval_us == 0 || self.tokens >= self.burst {
            self.refilled = now;
            return;
        }
        let interval = u64::from(self.interval_us);
        let earned = now.micros_since(self.refilled) / interval;
        if earned == 0 {
            return;
        }
        let room = u64::from(self.burst - self.tokens);
        if earned >= room {
            self.tokens = self.burst;
            self.refilled = now;
        } else {
            // `earned < room <= u16::MAX`
            self.tokens += earned as u16;
            self.refilled = self.refilled.add_micros(earned * interval);
        }
    }

    /// When the next block may leave, if it must wait.
    pub(crate) fn resume_at(&self) -> Option<Instant> {
        (self.interval_us != 0 && self.tokens == 0)
            .then(|| self.refilled.add_micros(u64::from(self.interval_us)))
    }

    /// Whether a block may leave at `now`.
    pub(crate) fn may_send(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.interval_us == 0 || self.tokens > 0
    }

    /// What [`may_send`](Self::may_send) would say at `now`, without taking the refill.
    pub(crate) fn would_send(&self, now: Instant) -> bool {
        if self.interval_us == 0 || self.tokens > 0 {
            return true;
        }
        self.tokens < self.burst && now.micros_since(self.refilled) >= u64::from(self.interval_us)
    }

    /// A block left at `now` (after [`may_send`](Self::may_send) allowed it); `first` when it
    /// opens a window.
    pub(crate) fn on_send(&mut self, now: Instant, first: bool) {
        if first {
            self.window_start = Some(now);
        }
        if self.interval_us != 0 {
            self.tokens = self.tokens.saturating_sub(1);
        }
    }

    /// The window's ACK arrived at `now`: `delivered` of the `sent` blocks of the window got
    /// through (fewer when the receiver saw a gap), out of a negotiated window of `windowsize`,
    /// on a path whose bare round trip is `base_rtt_us`.
    /// `max_wait_us` (a retransmission interval) bounds the time a measurement may count (a
    /// receiver that only answered on its own timer says nothing about its speed) and the time
    /// a paced window may take.
    ///
    /// An ACK that came after one of our timers fired (a timeout, or a tail-loss probe) is no
    /// delay sample: the receiver's timer may have fired too, and it may answer either. A short
    /// window then paces at one block per bare round trip (lock-step's pace) instead.
    pub(crate) fn on_ack(
        &mut self,
        now: Instant,
        delivered: u64,
        sent: u64,
        windowsize: u16,
        base_rtt_us: u64,
        max_wait_us: u64,
    ) {
        let start = self.window_start.take();
        let after_timeout = core::mem::take(&mut self.after_timeout);
        let timed = core::mem::take(&mut self.probed);
        let start = start.filter(|_| !after_timeout && !timed);
        if windowsize <= 1 {
            return;
        }
        if delivered >= sent && !timed {
            // The window arrived whole (its end without a probe): speed up.
            if self.interval_us != 0 {
                self.interval_us -= (self.interval_us / 8).max(1);
                self.burst = self.burst.saturating_add(1).min(windowsize);
                if self.interval_us == 0 {
                    self.burst = 0;
                    self.tokens = 0;
                }
            }
            return;
        }
        let delivered = u16::try_from(delivered).unwrap_or(u16::MAX).max(1);
        let per_block = match start {
            Some(start) => {
                // The time the receiver spent on the blocks: the window's round trip less the
                // path's.
                let took = now
                    .micros_since(start)
                    .min(max_wait_us)
                    .saturating_sub(base_rtt_us);
                // A whole window never takes longer than `max_wait` to send.
                (took / u64::from(delivered)).min(max_wait_us / u64::from(windowsize))
            }
            None => base_rtt_us.min(max_wait_us / u64::from(windowsize)),
        };
        let per_block = u32::try_from(per_block).unwrap_or(u32::MAX).max(1);
        if self.interval_us == 0 {
            self.interval_us = per_block;
            self.burst = (delivered.min(windowsize) / 2).max(1);
        } else if self.burst > 1 {
            // Already paced: bursts too long for the receiver's buffer lose blocks even at the
            // right rate, so they shrink first.
            self.burst /= 2;
        } else {
            // Single blocks still get lost: slow down. The receiver may still be draining
            // earlier windows, so one short window says little: by a quarter at most.
            let i = self.interval_us;
            self.interval_us = per_block.clamp(i, i.saturating_add(i / 4).max(i + 1));
        }
        // The window restarts now, with a full bucket.
        self.tokens = self.burst;
        self.refilled = now;
    }
}

impl Pacer {
    /// A tail-loss probe left: the window's ACK answers a timer of ours.
    pub(crate) fn on_probe(&mut self) {
        self.probed = true;
    }

    /// Our retransmission timer fired: the next window's ACK is not measured. A paced sender's bursts also halve: the receiver took none of the last one.
    pub(crate) fn on_timeout(&mut self) {
        self.after_timeout = true;
        // The window restarts: a probe of the old one no longer concerns it.
        self.probed = false;
        if self.interval_us != 0 {
            self.burst = (self.burst / 2).max(1);
        }
    }

    /// The receiver repeated its ACK of the block before the window after its own timeout: it
    /// took none of the window. A receiver that keeps one datagram at a time (U-Boot's e1000
    /// driver) loses every block of a burst after the first one or two, the first of them
    /// included when it is still busy. The first time, bursts become single blocks one bare
    /// round trip of the path apart (`base_rtt_us`: lock-step's pace); later, a paced sender
    /// halves its bursts, or spaces single blocks a quarter further apart. Whole windows speed
    /// it up again as usual. The time the receiver took is no sample: it includes its timeout.
    /// `max_wait_us` (a retransmission interval) bounds the time a paced window may take.
    pub(crate) fn on_stall(&mut self, now: Instant, windowsize: u16, base_rtt_us: u64, max_wait_us: u64) {
        self.window_start = None;
        self.probed = false;
        if windowsize <= 1 {
            return;
        }
        let cap = u32::try_from(max_wait_us / u64::from(windowsize))
            .unwrap_or(u32::MAX)
            .max(1);
        if self.interval_us == 0 {
            self.interval_us = u32::try_from(base_rtt_us).unwrap_or(u32::MAX).clamp(1, cap);
            self.burst = 1;
        } else if self.burst > 1 {
            self.burst /= 2;
        } else {
            let i = self.interval_us;
            self.interval_us = i.saturating_add((i / 4).max(1)).min(cap.max(i));
        }
        self.tokens = self.burst;
        self.refilled = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(us: u64) -> Instant {
        Instant::from_micros(us)
    }

    #[test]
    fn whole_windows_are_never_paced() {
        let mut p = Pacer::default();
        for w in 0..10u64 {
            for b in 0..16 {
                assert!(p.may_send(at(w * 1000 + b)));
                p.on_send(at(w * 1000 + b), b == 0);
            }
            p.on_ack(at(w * 1000 + 500), 16, 16, 16, 0, 1_000_000);
            assert!(!p.is_pacing());
            assert_eq!(p.resume_at(), None);
        }
    }

    #[test]
    fn a_short_window_paces_then_recovers() {
        let mut p = Pacer::default();
        for b in 0..64 {
            p.on_send(at(b), b == 0);
        }
        // Only 8 of 64 got through, in 800 µs: one block per 100 µs, bursts of 4.
        p.on_ack(at(800), 8, 64, 64, 0, 1_000_000);
        assert!(p.is_pacing());
        for _ in 0..4 {
            assert!(p.may_send(at(800)));
            p.on_send(at(800), false);
        }
        assert!(!p.may_send(at(800)));
        assert_eq!(p.resume_at(), Some(at(900)));
        assert!(!p.may_send(at(899)));
        assert!(p.may_send(at(900)));
        p.on_send(at(900), false);
        // Idle for long: the bucket holds at most a burst.
        let mut n = 0;
        while p.may_send(at(10_000)) {
            p.on_send(at(10_000), false);
            n += 1;
        }
        assert_eq!(n, 4);
        // Whole windows speed it up until it is unpaced again.
        let mut windows = 0;
        while p.is_pacing() {
            p.on_send(at(20_000), true);
            p.on_ack(at(20_100), 64, 64, 64, 0, 1_000_000);
            windows += 1;
            assert!(windows < 100, "the pace recovers");
        }
        assert!(windows > 10);
        assert!(p.may_send(at(20_100)));
    }

    #[test]
    fn a_long_path_alone_does_not_slow_the_pace() {
        // A random loss on a 100 ms path: the window's round trip is the path's, the receiver
        // took no time of its own, so blocks are spaced by the minimum.
        let mut p = Pacer::default();
        p.on_send(at(0), true);
        p.on_ack(at(100_500), 4, 16, 16, 100_000, 1_000_000);
        assert!(p.is_pacing());
        for _ in 0..2 {
            assert!(p.may_send(at(200_000)));
            p.on_send(at(200_000), false);
        }
        assert_eq!(p.resume_at(), Some(at(200_125)));
    }

    #[test]
    fn measurements_are_bounded_and_windowsize_one_is_exempt() {
        let mut p = Pacer::default();
        p.on_send(at(0), true);
        // 10 s for one block: a window of 8 is spread over the 50 ms bound at most.
        p.on_ack(at(10_000_000), 1, 8, 8, 0, 50_000);
        assert!(p.is_pacing());
        assert!(p.may_send(at(20_000_000)));
        p.on_send(at(20_000_000), true);
        assert_eq!(p.resume_at(), Some(at(20_006_250)));

        let mut q = Pacer::default();
        q.on_send(at(0), true);
        q.on_ack(at(100), 0, 1, 1, 0, 50_000);
        assert!(!q.is_pacing());
    }
}
