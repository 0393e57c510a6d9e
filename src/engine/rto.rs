//! Retransmission timing: an adaptive timeout (RFC 6298-style RTT estimate, Karn's rule,
//! exponential backoff; RFC 1123 §4.2.3.2), or the fixed interval a negotiated `timeout` option sets.
//!
//! # Why the floor is 250 ms
//!
//! The timeout is the smoothed round trip plus four times its variation (RFC 6298), never
//! below [`Config::min_rto`] (250 ms by default) and never above [`Config::max_rto`]. On a LAN or
//! loopback the round trip is tens to hundreds of microseconds, so the floor is what decides,
//! and it must cover what a round-trip sample cannot see: a peer (or this process) that is
//! descheduled or busy for a while. Measured before this floor, with a 50 ms one:
//!
//! * 200 atftp clients downloading at once from our server on a 2-CPU machine saw from 6 to
//!   2,329 out-of-order or repeated blocks per run over 14 runs, and captures showed the
//!   client's ACK already on the wire 50-197 ms before the server resent the block; tftpd-hpa
//!   and atftpd (timers of a second or more) caused none with the same clients;
//! * firmware in lock-step under load (iPXE, U-Boot, OVMF) got 1-3 duplicate blocks per boot;
//! * a receiver that read a first window and acknowledged it 150 ms later got 7 duplicates.
//!
//! 250 ms is above all of these (and above a 200 ms stall, which the engine's tests play),
//! like Linux TCP's 200 ms minimum plus its delayed ACK, and well under the second that RFC
//! 6298 and tftpd-hpa use, so a real loss on a LAN still costs a quarter of a second at most
//! in lock-step. Windowed transfers recover most losses sooner, at the receiver's first gap
//! report. The tail-loss probe waits at least the same floor, for the same reason: it resends
//! a block, which a live receiver would get twice.
//!
//! With it (2026-12-04, same machine): the 200 atftp clients got no block out of order or twice
//! in three runs (the 50 ms build: 66, 28 and 40), our server resent nothing in any firmware
//! boot, and nothing on clean loopback in any `benches/peers.sh` set (65464x64 into atftp's
//! small receive buffer loses blocks for real: about 920 resent per GiB, as fast as before).
//!
//! How long a transfer keeps trying is a matter of time, not of the number of retries at
//! whatever the current interval is: see [`Config::total_timeout`].

#[cfg(test)]
use core::time::Duration;

use super::Config;
use crate::time::duration_micros;

/// Retransmission timer state of one transfer.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct Rto {
    srtt_us: u32,
    /// The smallest sample: the path's round trip without queueing.
    min_rtt_us: u32,
    rttvar_us: u32,
    has_sample: bool,
    backoff: u8,
    /// Seconds, when the `timeout` option fixed the interval.
    fixed: Option<u8>,
    /// The [`Config`] bounds in microseconds, converted once.
    initial_us: u64,
    min_us: u64,
    max_us: u64,
}

impl Rto {
    pub(crate) fn new(config: &Config) -> Self {
        let min_us = duration_micros(config.min_rto);
        Rto {
            srtt_us: 0,
            min_rtt_us: u32::MAX,
            rttvar_us: 0,
            has_sample: false,
            backoff: 0,
            fixed: None,
            initial_us: duration_micros(config.initial_rto),
            min_us,
            max_us: duration_micros(config.max_rto).max(min_us),
        }
    }

    /// Uses exactly `secs` seconds between retransmissions (the `timeout` option).
    pub(crate) fn set_fixed(&mut self, secs: u8) {
        self.fixed = Some(secs);
    }

    /// The floor of the adaptive timeout, in microseconds.
    pub(crate) fn min_micros(&self) -> u64 {
        self.min_us
    }

    /// The smallest round trip measured, in microseconds (0 before any).
    pub(crate) fn min_rtt_micros(&self) -> u64 {
        if self.has_sample {
            u64::from(self.min_rtt_us)
        } else {
            0
        }
    }

    /// Records a round-trip sample from a packet that was not retransmitted (Karn's rule).
    pub(crate) fn sample(&mut self, rtt_micros: u64) {
        let r = u32::try_from(rtt_micros).unwrap_or(u32::MAX);
        self.min_rtt_us = self.min_rtt_us.min(r);
        if self.has_sample {
            let diff = self.srtt_us.abs_diff(r);
            self.rttvar_us = self.rttvar_us - self.rttvar_us / 4 + diff / 4;
            self.srtt_us = self.srtt_us - self.srtt_us / 8 + r / 8;
        } else {
            self.srtt_us = r;
            self.rttvar_us = r / 2;
            self.has_sample = true;
        }
    }

    /// Progress was made: the backoff is forgotten.
    pub(crate) fn reset_backoff(&mut self) {
        self.backoff = 0;
    }

    /// A retransmission happened: the next interval doubles (up to the maximum).
    pub(crate) fn back_off(&mut self) {
        self.backoff = self.backoff.saturating_add(1).min(16);
    }

    /// The current interval.
    #[cfg(test)]
    pub(crate) fn current(&self) -> Duration {
        Duration::from_micros(self.current_micros())
    }

    /// The current interval in microseconds (integer arithmetic only: cheap on small MCUs).
    pub(crate) fn current_micros(&self) -> u64 {
        if let Some(secs) = self.fixed {
            return u64::from(secs) * 1_000_000;
        }
        let (min, max) = (self.min_us, self.max_us);
        let base = if self.has_sample {
            u64::from(self.srtt_us) + 4 * u64::from(self.rttvar_us)
        } else {
            self.initial_us
        };
        // Doubled once per backoff step, up to `max`: `base * 2^backoff` capped, without a
        // 64-bit shift or multiplication.
        // `clamp` without its `min <= max` assertion: `new` ensures it.
        let mut rto = base.max(min).min(max);
        for _ in 0..self.backoff {
            rto = rto.saturating_add(rto).min(max);
        }
        rto
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapts_backs_off_and_clamps() {
        let cfg = Config::default();
        let mut rto = Rto::new(&cfg);
        assert_eq!(rto.current(), cfg.initial_rto);
        rto.sample(100_000);
        let first = rto.current();
        assert!(
            first >= Duration::from_millis(200) && first <= Duration::from_millis(400),
            "{first:?}"
        );
        rto.back_off();
        assert_eq!(rto.current(), (first * 2).min(cfg.max_rto));
        for _ in 0..20 {
            rto.back_off();
        }
        assert_eq!(rto.current(), cfg.max_rto);
        rto.reset_backoff();
        for _ in 0..50 {
            rto.sample(50);
        }
        assert_eq!(rto.current(), cfg.min_rto, "tiny RTTs clamp to the minimum");
        rto.set_fixed(3);
        assert_eq!(rto.current(), Duration::from_secs(3));
    }
}
