//! Protocol logging for integrators: what the engine and the server table decide, at three
//! levels (`trace!`, `debug!`, `warn!`), routed to the `log` crate (feature `log`), to `defmt`
//! (feature `defmt`, when `log` is off), or nowhere. With neither feature the macros expand to
//! nothing (their arguments are only borrowed), so a firmware build carries no logging code.
//!
//! What is said: the options a request asked for and what was granted (`debug`); every
//! retransmission and why (`debug`); every datagram dropped and why, a stranger's, a malformed
//! one, a stale or unexpected block (`debug` for strangers and malformed datagrams, `trace` for
//! the routine repeats of a lossy link); how each transfer ended (`debug` on success, `warn` on
//! failure); requests the server table refused, displaced or could not fit (`warn`).
//!
//! Arguments are formatted with `{}` (numbers, addresses) or `{:?}` (the crate's types, which
//! implement `Debug`, and `defmt::Format` under `defmt`), so one call site serves both back ends.

/// Logs at `trace` level (see the [module documentation](self)).
#[cfg(feature = "log")]
macro_rules! trace {
    ($($t:tt)*) => { ::log::trace!(target: "tftp_proto", $($t)*) };
}

/// Logs at `debug` level (see the [module documentation](self)).
#[cfg(feature = "log")]
macro_rules! debug {
    ($($t:tt)*) => { ::log::debug!(target: "tftp_proto", $($t)*) };
}

/// Logs at `warn` level (see the [module documentation](self)).
#[cfg(feature = "log")]
macro_rules! warn {
    ($($t:tt)*) => { ::log::warn!(target: "tftp_proto", $($t)*) };
}

#[cfg(all(feature = "defmt", not(feature = "log")))]
macro_rules! trace {
    ($($t:tt)*) => { ::defmt::trace!($($t)*) };
}

#[cfg(all(feature = "defmt", not(feature = "log")))]
macro_rules! debug {
    ($($t:tt)*) => { ::defmt::debug!($($t)*) };
}

#[cfg(all(feature = "defmt", not(feature = "log")))]
macro_rules! warn {
    ($($t:tt)*) => { ::defmt::warn!($($t)*) };
}

#[cfg(not(any(feature = "log", feature = "defmt")))]
macro_rules! trace {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{ $( let _ = &$arg; )* }};
}

#[cfg(not(any(feature = "log", feature = "defmt")))]
macro_rules! debug {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{ $( let _ = &$arg; )* }};
}

#[cfg(not(any(feature = "log", feature = "defmt")))]
macro_rules! warn {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{ $( let _ = &$arg; )* }};
}
