//! Block numbering: mapping 64-bit block indexes (1, 2, ... counted from the start of the file)
//! to the 16-bit block numbers on the wire and back, for both rollover conventions.

/// Which block number follows 65535 (the `rollover` option; 0 when not negotiated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct Numbering {
    rollover_to_one: bool,
}

impl Numbering {
    pub(crate) const fn new(rollover: Option<u8>) -> Self {
        Numbering {
            rollover_to_one: matches!(rollover, Some(1)),
        }
    }

    /// The wire number of block `index` (index 0 is the handshake: ACK 0).
    pub(crate) fn wire(self, index: u64) -> u16 {
        if index == 0 {
            0
        } else if self.rollover_to_one {
            (mod_65535(index - 1) + 1) as u16
        } else {
            index as u16 // the low 16 bits: index mod 65536
        }
    }

    /// Resolves a wire number relative to `base` (a block index already known): the index `i`
    /// with `wire(i) == block` nearest to `base` within half a cycle either way. `None` when the
    /// number cannot occur (0 under rollover 1 past the start).
    pub(crate) fn resolve(self, base: u64, block: u16) -> Option<u64> {
        if base == 0 && block == 0 {
            return Some(0);
        }
        if self.rollover_to_one && block == 0 {
            return None;
        }
        let base = base.max(1);
        // Positions in the numbering cycle (1..=65535 under rollover 1, 0..=65535 otherwise) and
        // its length, all below 2^17: 32-bit arithmetic, with 64 bits only for the index.
        let one = u32::from(self.rollover_to_one);
        let len = 65536 - one;
        let want = u32::from(block) - one;
        let have = u32::from(self.wire(base)) - one;
        // `want` and `have` are below `len`, so one conditional subtraction reduces the sum.
        let forward = want + len - have;
        let forward = if forward >= len { forward - len } else { forward };
        if forward < len / 2 {
            Some(base + u64::from(forward))
        } else {
            let back = u64::from(len - forward);
            base.checked_sub(back)
                .filter(|&i| i > 0)
                .or(if block == 0 { Some(0) } else { None })
        }
    }
}

/// `x % 65535` without a division (64-bit division is a library call on small MCUs):
/// 65536 is 1 modulo 65535, so the sum of the 16-bit digits keeps the remainder.
fn mod_65535(x: u64) -> u64 {
    let mut s = (x & 0xffff) + ((x >> 16) & 0xffff) + ((x >> 32) & 0xffff) + (x >> 48);
    while s >= 65535 {
        s = (s & 0xffff) + (s >> 16);
        if s == 65535 {
            s = 0;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_to_zero_by_default_and_to_one_with_rollover() {
        let zero = Numbering::new(None);
        assert_eq!(zero.wire(65535), 65535);
        assert_eq!(zero.wire(65536), 0);
        assert_eq!(zero.wire(65537), 1);
        assert_eq!(zero.wire(131072), 0);
        let one = Numbering::new(Some(1));
        assert_eq!(one.wire(65535), 65535);
        assert_eq!(one.wire(65536), 1);
        assert_eq!(one.wire(131070), 65535);
        assert_eq!(one.wire(131071), 1);
        assert_eq!(Numbering::new(Some(0)), zero);
    }

    #[test]
    fn mod_65535_matches_division() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for v in [
            0,
            1,
            65534,
            65535,
            65536,
            131070,
            131071,
            u64::MAX,
            u64::MAX - 1,
            1 << 48,
            (1 << 48) - 1,
        ] {
            assert_eq!(mod_65535(v), v % 65535, "{v}");
        }
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            assert_eq!(mod_65535(x), x % 65535, "{x}");
            assert_eq!(mod_65535(x >> 20), (x >> 20) % 65535);
        }
    }

    #[test]
    fn resolve_inverts_wire_near_base() {
        for n in [Numbering::new(None), Numbering::new(Some(1))] {
            for base in [1u64, 2, 100, 65534, 65535, 65536, 65537, 131071, 131072, 1 << 33] {
                for delta in [-100i64, -1, 0, 1, 2, 64, 1000] {
                    let Some(i) = base.checked_add_signed(delta).filter(|&i| i > 0) else {
                        continue;
                    };
                    assert_eq!(n.resolve(base, n.wire(i)), Some(i), "{n:?} base {base} i {i}");
                }
            }
        }
        assert_eq!(Numbering::new(None).resolve(0, 0), Some(0));
        assert_eq!(Numbering::new(None).resolve(1, 0), Some(0));
        assert_eq!(Numbering::new(Some(1)).resolve(70000, 0), None);
    }
}
