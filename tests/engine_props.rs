//! Property tests of whole transfers in the simulated network: for any file size (empty, exact
//! multiples of the block size, past 65535 blocks), block size, window size 1..=64 and network
//! losing, duplicating and reordering up to 30 % of datagrams, in both directions, a transfer
//! ends byte-identical or fails cleanly with a timeout; it never panics, never exceeds its step
//! budget, and the simulator's audit never sees DATA sent in answer to a duplicate ACK (nor any
//! other standing rule broken).
// The simulated files are `Vec<u8>`, a `Storage` under the `std` feature.
#![cfg(feature = "std")]

mod common;

use common::{Ending, Scenario, ScenarioFailure};
use proptest::prelude::*;

fn impairment() -> impl Strategy<Value = f64> {
    prop_oneof![1 => Just(0.0), 4 => 0.0..0.3f64]
}

/// Sizes around the interesting points for `blksize`.
fn size(blksize: usize, max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0),
        1..blksize,
        (1..8usize).prop_map(move |k| k * blksize),
        (1..8usize).prop_map(move |k| k * blksize - 1),
        (1..8usize).prop_map(move |k| k * blksize + 1),
        0..max,
    ]
}

prop_compose! {
    fn scenario(max_size: usize)(
        write in any::<bool>(),
        netascii in prop::bool::weighted(0.2),
        blksize in prop_oneof![Just(None), (8u16..=64).prop_map(Some), (65u16..=1468).prop_map(Some)],
        windowsize in prop_oneof![Just(None), (1u16..=64).prop_map(Some)],
        tsize in any::<bool>(),
        rollover in prop_oneof![Just(None), Just(Some(0)), Just(Some(1))],
        loss in impairment(),
        duplicate in impairment(),
        reorder in impairment(),
        max_retries in 5u8..=12,
        seed in any::<u64>(),
    )(
        size in size(usize::from(blksize.unwrap_or(512)), max_size),
        write in Just(write), netascii in Just(netascii), blksize in Just(blksize),
        windowsize in Just(windowsize), tsize in Just(tsize), rollover in Just(rollover),
        loss in Just(loss), duplicate in Just(duplicate), reorder in Just(reorder),
        max_retries in Just(max_retries), seed in Just(seed),
    ) -> Scenario {
        Scenario {
            write, size, netascii, blksize, windowsize, tsize, rollover, timeout: None,
            loss, duplicate, reorder, max_retries, seed,
        }
    }
}

/// Runs a scenario; any corruption, hang, unclean failure or rule violation fails the case.
fn check(s: &Scenario) -> Result<Ending, TestCaseError> {
    s.run()
        .map(|report| report.ending)
        .map_err(|f: ScenarioFailure| TestCaseError::fail(format!("{f:?}")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any size, options and impairment: byte-identical or a clean timeout.
    #[test]
    fn transfer_is_exact_or_times_out_cleanly(s in scenario(20_000)) {
        check(&s)?;
    }

    /// Without loss nothing may time out: duplication and reordering alone never prevent
    /// completion, and the sender hears the final ACK.
    #[test]
    fn transfer_without_loss_completes(mut s in scenario(20_000)) {
        s.loss = 0.0;
        s.max_retries = 12;
        prop_assert_eq!(check(&s)?, Ending::Complete, "{:?}", s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    /// Past 65535 blocks (small blocks keep it fast), both rollover conventions, light loss.
    #[test]
    fn transfer_past_65535_blocks(
        write in any::<bool>(),
        blksize in 8u16..=32,
        extra in 0usize..100,
        windowsize in 16u16..=64,
        rollover in prop_oneof![Just(None), Just(Some(1))],
        seed in any::<u64>(),
    ) {
        let s = Scenario {
            write,
            size: 65_536 * usize::from(blksize) + extra,
            netascii: false,
            blksize: Some(blksize),
            windowsize: Some(windowsize),
            tsize: true,
            rollover,
            timeout: None,
            loss: 0.002,
            duplicate: 0.002,
            reorder: 0.002,
            max_retries: 30,
            seed,
        };
        prop_assert_eq!(check(&s)?, Ending::Complete, "{:?}", s);
    }
}
