//! TFTP options (RFC 2347): the raw option list of a request or OACK, the known options
//! (`blksize` RFC 2348, `timeout` and `tsize` RFC 2349, `windowsize` RFC 7440, `rollover`),
//! their ranges, and their decoding and encoding.
//!
//! # Decoding policy
//!
//! The codec reports every problem precisely ([`OptionError`]); what to do about it is a policy
//! the caller picks with one of two functions:
//!
//! * [`Options::parse_request`] is for the server reading a request. RFC 2347 lets a server ignore
//!   any option it does not accept, so a malformed or out-of-range value simply leaves that option
//!   unrequested (it falls back to its default and is not acknowledged), a repeated option keeps
//!   its first occurrence, and `blksize`/`windowsize` values above the maximum are lowered to the
//!   maximum (the server may only lower them anyway). The first problem is still reported so it
//!   can be logged. Nothing here ever justifies refusing the transfer.
//! * [`Options::parse_strict`] is for the client reading an OACK. The server must answer only
//!   with valid values, once each, so any problem is an error the engine answers with ERROR 8.
//!
//! Names and values are compared case-insensitively; names must match exactly (`xblksizex` is an
//! unknown option, not `blksize`). Unknown options are never an error: they stay visible in the
//! [`OptionList`] for the application.

use crate::wire::{EncodeError, Field, ParseError};

/// Smallest valid `blksize` (RFC 2348).
pub const MIN_BLKSIZE: u16 = 8;
/// Largest valid `blksize` (RFC 2348).
pub const MAX_BLKSIZE: u16 = 65464;
/// Block size when none is negotiated (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// Smallest valid `timeout`, in seconds (RFC 2349).
pub const MIN_TIMEOUT: u8 = 1;
/// Smallest valid `windowsize` (RFC 7440).
pub const MIN_WINDOWSIZE: u16 = 1;
/// Largest valid `windowsize` (RFC 7440).
pub const MAX_WINDOWSIZE: u16 = 65535;

/// A validated list of raw option name/value pairs, borrowed from a datagram.
///
/// Every pair is `name NUL value NUL` with a non-empty name. The list may hold unknown options
/// and repeated names; see [`Options`] for the typed view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OptionList<'a> {
    raw: &'a [u8],
}

impl<'a> OptionList<'a> {
    /// The empty list.
    pub const EMPTY: OptionList<'static> = OptionList { raw: &[] };

    /// Validates `raw` as a sequence of `name NUL value NUL` pairs.
    ///
    /// Trailing NUL bytes after the last complete pair are padding some clients add; they are
    /// accepted and excluded from the list.
    ///
    /// ```
    /// use tftp_proto::OptionList;
    /// let list = OptionList::parse(b"blksize\x001468\x00tsize\x000\x00").unwrap();
    /// assert_eq!(list.len(), 2);
    /// assert_eq!(list.get(b"TSIZE"), Some(&b"0"[..]));
    /// assert!(OptionList::parse(b"blksize\x001468").is_err()); // value without its NUL
    /// ```
    pub fn parse(raw: &'a [u8]) -> Result<Self, ParseError> {
        let mut rest = raw;
        let mut end = 0;
        loop {
            if rest.iter().all(|&b| b == 0) {
                break;
            }
            let (name, after_name) = split_nul(rest).ok_or(ParseError::MissingNul(Field::OptionName))?;
            if name.is_empty() {
                return Err(ParseError::EmptyOptionName);
            }
            if after_name.is_empty() {
                return Err(ParseError::OptionWithoutValue);
            }
            let (_, after_value) = split_nul(after_name).ok_or(ParseError::MissingNul(Field::OptionValue))?;
            end = raw.len() - after_value.len();
            rest = after_value;
        }
        Ok(OptionList { raw: &raw[..end] })
    }

    /// Validates a request's option bytes as [`parse`](Self::parse) does, except that an
    /// option name left without its value at the very end (`blksize NUL` and nothing after,
    /// as some clients send) is ignored rather than an error, as RFC 2347's rule to ignore what
    /// is not understood suggests (tftpd-hpa does the same). Returns the list and the ignored
    /// name (empty when nothing was ignored).
    ///
    /// ```
    /// use tftp_proto::OptionList;
    /// let (list, ignored) = OptionList::parse_request(b"tsize\x000\x00blksize\x00").unwrap();
    /// assert_eq!((list.len(), ignored), (1, &b"blksize"[..]));
    /// assert!(OptionList::parse_request(b"blksize\x001468").is_err()); // value without its NUL
    /// ```
    pub fn parse_request(raw: &'a [u8]) -> Result<(Self, &'a [u8]), ParseError> {
        match Self::parse(raw) {
            Err(ParseError::OptionWithoutValue) => {
                // Everything before the last name parses (the error is only raised at the end),
                // so cut that name off and parse the rest.
                let head = &raw[..raw.len() - 1];
                let start = head.iter().rposition(|&b| b == 0).map_or(0, |p| p + 1);
                Self::parse(&raw[..start]).map(|list| (list, &head[start..]))
            }
            other => other.map(|list| (list, &raw[..0])),
        }
    }

    /// The validated bytes, without any trailing padding.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// Whether there is no option at all.
    pub const fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// The pairs in wire order.
    pub fn iter(&self) -> OptionIter<'a> {
        OptionIter { rest: self.raw }
    }

    /// The value of the first option named `name` (case-insensitive).
    pub fn get(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.iter()
            .find(|o| o.name.eq_ignore_ascii_case(name))
            .map(|o| o.value)
    }
}

impl<'a> IntoIterator for OptionList<'a> {
    type Item = RawOption<'a>;
    type IntoIter = OptionIter<'a>;
    fn into_iter(self) -> OptionIter<'a> {
        self.iter()
    }
}

/// Splits `bytes` at its first NUL: what comes before, and after it.
pub(crate) fn split_nul(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let pos = bytes.iter().position(|&b| b == 0)?;
    Some((&bytes[..pos], &bytes[pos + 1..]))
}

/// Iterator over the pairs of an [`OptionList`].
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = RawOption<'a>;
    fn next(&mut self) -> Option<RawOption<'a>> {
        // The list was validated, so every split succeeds; stop quietly if it somehow does not.
        let (name, rest) = split_nul(self.rest)?;
        let (value, rest) = split_nul(rest)?;
        self.rest = rest;
        Some(RawOption { name, value })
    }
}

/// One option as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RawOption<'a> {
    /// The name, as sent (any case).
    pub name: &'a [u8],
    /// The value, as sent.
    pub value: &'a [u8],
}

impl<'a> RawOption<'a> {
    /// Decodes this pair exactly: known names get their value checked against its range.
    pub fn decode(&self) -> Result<TftpOption<'a>, OptionError> {
        let Some(name) = OptionName::from_name(self.name) else {
            return Ok(TftpOption::Unknown(*self));
        };
        let value = name.decode_value(self.value)?;
        // The `as` casts below are exact: `decode_value` checked the range of each.
        Ok(match name {
            OptionName::Blksize => TftpOption::Blksize(value as u16),
            OptionName::Timeout => TftpOption::Timeout(value as u8),
            OptionName::Tsize => TftpOption::Tsize(value),
            OptionName::Windowsize => TftpOption::Windowsize(value as u16),
            OptionName::Rollover => TftpOption::Rollover(value as u8),
        })
    }
}

/// Parses ASCII decimal digits. `None`: not a number (empty, or a non-digit);
/// `Some(None)`: a number too large for `u64`.
pub(crate) fn parse_decimal(value: &[u8]) -> Option<Option<u64>> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    }))
}

/// A decoded option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TftpOption<'a> {
    /// `blksize`, 8..=65464 (RFC 2348).
    Blksize(u16),
    /// `timeout` in seconds, 1..=255 (RFC 2349).
    Timeout(u8),
    /// `tsize` in bytes (RFC 2349).
    Tsize(u64),
    /// `windowsize`, 1..=65535 (RFC 7440).
    Windowsize(u16),
    /// `rollover`, 0 or 1: the block number that follows 65535.
    Rollover(u8),
    /// Any other option, kept raw.
    Unknown(RawOption<'a>),
}

/// The options this crate understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum OptionName {
    /// `blksize`
    Blksize,
    /// `timeout`
    Timeout,
    /// `tsize`
    Tsize,
    /// `windowsize`
    Windowsize,
    /// `rollover`
    Rollover,
}

impl OptionName {
    /// Every known option, in the order this crate encodes them.
    pub const ALL: [OptionName; 5] = [
        OptionName::Blksize,
        OptionName::Timeout,
        OptionName::Tsize,
        OptionName::Windowsize,
        OptionName::Rollover,
    ];

    /// The option named exactly `name` (case-insensitive), if it is a known one.
    pub fn from_name(name: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|o| o.as_str().as_bytes().eq_ignore_ascii_case(name))
    }

    /// The smallest and largest valid value.
    const fn range(self) -> (u64, u64) {
        match self {
            OptionName::Blksize => (MIN_BLKSIZE as u64, MAX_BLKSIZE as u64),
            OptionName::Timeout => (MIN_TIMEOUT as u64, u8::MAX as u64),
            OptionName::Tsize => (0, u64::MAX),
            OptionName::Windowsize => (MIN_WINDOWSIZE as u64, MAX_WINDOWSIZE as u64),
            OptionName::Rollover => (0, 1),
        }
    }

    /// Decodes a value of this option exactly: a decimal number within [`Self::range`].
    pub(crate) fn decode_value(self, value: &[u8]) -> Result<u64, OptionError> {
        let err = |kind| OptionError { option: self, kind };
        let value = parse_decimal(value).ok_or(err(OptionErrorKind::NotANumber))?;
        let (lo, hi) = self.range();
        value
            .filter(|v| (lo..=hi).contains(v))
            .ok_or(err(OptionErrorKind::OutOfRange))
    }

    /// Decodes a value of this option under the strict policy, `seen` telling whether the
    /// option already appeared: a malformed or out-of-range value, or a second occurrence, is an
    /// error.
    pub(crate) fn decode_strict(self, seen: bool, value: &[u8]) -> Result<u64, OptionError> {
        if seen {
            return Err(OptionError {
                option: self,
                kind: OptionErrorKind::Duplicate,
            });
        }
        self.decode_value(value)
    }

    /// The canonical (lower-case) name.
    pub const fn as_str(self) -> &'static str {
        match self {
            OptionName::Blksize => "blksize",
            OptionName::Timeout => "timeout",
            OptionName::Tsize => "tsize",
            OptionName::Windowsize => "windowsize",
            OptionName::Rollover => "rollover",
        }
    }
}

impl core::fmt::Display for OptionName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is wrong with a known option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum OptionErrorKind {
    /// The value is not a plain decimal number.
    NotANumber,
    /// The value is a number outside the option's range.
    OutOfRange,
    /// The option appears more than once.
    Duplicate,
}

/// A problem with one known option, precise enough to log or to put in an ERROR 8 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OptionError {
    /// Which option.
    pub option: OptionName,
    /// What is wrong with it.
    pub kind: OptionErrorKind,
}

impl OptionError {
    /// A short static text for an ERROR 8 message.
    pub const fn message(&self) -> &'static str {
        match (self.option, self.kind) {
            (OptionName::Blksize, OptionErrorKind::OutOfRange) => "blksize out of range",
            (OptionName::Timeout, OptionErrorKind::OutOfRange) => "timeout out of range",
            (OptionName::Tsize, OptionErrorKind::OutOfRange) => "tsize out of range",
            (OptionName::Windowsize, OptionErrorKind::OutOfRange) => "windowsize out of range",
            (OptionName::Rollover, OptionErrorKind::OutOfRange) => "rollover out of range",
            (_, OptionErrorKind::NotANumber) => "option value is not a number",
            (_, OptionErrorKind::Duplicate) => "option given twice",
        }
    }
}

impl core::fmt::Display for OptionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let what = match self.kind {
            OptionErrorKind::NotANumber => "value is not a number",
            OptionErrorKind::OutOfRange => "value out of range",
            OptionErrorKind::Duplicate => "given more than once",
        };
        write!(f, "option {}: {}", self.option, what)
    }
}

impl core::error::Error for OptionError {}

/// The known options of a request or OACK; `None` means not present.
///
/// ```
/// use tftp_proto::{OptionList, Options};
/// let list = OptionList::parse(b"BlkSize\x001468\x00windowsize\x0016\x00x\x00y\x00").unwrap();
/// let parsed = Options::parse_request(&list);
/// assert_eq!(parsed.options.blksize, Some(1468));
/// assert_eq!(parsed.options.windowsize, Some(16));
/// assert_eq!(parsed.unknown, 1);
/// assert!(parsed.first_error.is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Options {
    /// `blksize`: bytes of payload per DATA packet.
    pub blksize: Option<u16>,
    /// `timeout`: retransmission timeout in seconds.
    pub timeout: Option<u8>,
    /// `tsize`: transfer size in bytes (0 in a read request).
    pub tsize: Option<u64>,
    /// `windowsize`: blocks sent per acknowledgement.
    pub windowsize: Option<u16>,
    /// `rollover`: block number after 65535 (0 or 1).
    pub rollover: Option<u8>,
}

/// Result of [`Options::parse_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ParsedOptions {
    /// The usable known options.
    pub options: Options,
    /// The first problem met, for logging; the option concerned was handled per the lenient policy.
    pub first_error: Option<OptionError>,
    /// How many options had unknown names.
    pub unknown: usize,
}

impl Options {
    /// No option at all.
    pub const NONE: Options = Options {
        blksize: None,
        timeout: None,
        tsize: None,
        windowsize: None,
        rollover: None,
    };

    /// Whether no option is present.
    pub fn is_empty(&self) -> bool {
        *self == Options::NONE
    }

    /// Lenient decoding for a request (see the module documentation).
    pub fn parse_request(list: &OptionList<'_>) -> ParsedOptions {
        let mut out = ParsedOptions {
            options: Options::NONE,
            first_error: None,
            unknown: 0,
        };
        let mut seen = [false; 5];
        for raw in list.iter() {
            let Some(name) = OptionName::from_name(raw.name) else {
                out.unknown += 1;
                continue;
            };
            let mut note = |e: OptionError| {
                out.first_error.get_or_insert(e);
            };
            if core::mem::replace(&mut seen[name as usize], true) {
                note(OptionError {
                    option: name,
                    kind: OptionErrorKind::Duplicate,
                });
                continue;
            }
            match name.decode_value(raw.value) {
                Ok(v) => out.options.set(name, v),
                Err(e) => {
                    note(e);
                    // Too-large sizes are lowered to the maximum: the server may only lower them.
                    if e.kind == OptionErrorKind::OutOfRange {
                        match name {
                            OptionName::Blksize if exceeds(raw.value, MAX_BLKSIZE) => {
                                out.options.blksize = Some(MAX_BLKSIZE)
                            }
                            OptionName::Windowsize if exceeds(raw.value, MAX_WINDOWSIZE) => {
                                out.options.windowsize = Some(MAX_WINDOWSIZE)
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        out
    }

    /// Strict decoding for an OACK: any malformed, out-of-range or repeated known option is an
    /// error. Unknown options are skipped here; whether they were requested is the caller's check.
    pub fn parse_strict(list: &OptionList<'_>) -> Result<Options, OptionError> {
        let mut out = Options::NONE;
        for raw in list.iter() {
            if let Some(name) = OptionName::from_name(raw.name) {
                out.set(name, name.decode_strict(out.has(name), raw.value)?);
            }
        }
        Ok(out)
    }

    /// Sets `name` to `v`, which [`OptionName::decode_value`] checked (so the casts are exact).
    fn set(&mut self, name: OptionName, v: u64) {
        match name {
            OptionName::Blksize => self.blksize = Some(v as u16),
            OptionName::Timeout => self.timeout = Some(v as u8),
            OptionName::Tsize => self.tsize = Some(v),
            OptionName::Windowsize => self.windowsize = Some(v as u16),
            OptionName::Rollover => self.rollover = Some(v as u8),
        }
    }

    /// Whether `name` is present.
    pub fn has(&self, name: OptionName) -> bool {
        self.value(name).is_some()
    }

    /// The value of `name` as a number, if present.
    pub fn value(&self, name: OptionName) -> Option<u64> {
        match name {
            OptionName::Blksize => self.blksize.map(u64::from),
            OptionName::Timeout => self.timeout.map(u64::from),
            OptionName::Tsize => self.tsize,
            OptionName::Windowsize => self.windowsize.map(u64::from),
            OptionName::Rollover => self.rollover.map(u64::from),
        }
    }

    /// Bytes [`Options::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        self.emit(&mut [])
    }

    /// Writes the present options as `name NUL value NUL` pairs, in [`OptionName::ALL`] order.
    /// Returns the length written; on error `buf` is untouched.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let needed = self.encoded_len();
        if buf.len() < needed {
            return Err(EncodeError::BufferTooSmall { needed });
        }
        Ok(self.write(buf))
    }

    /// Writes the options as [`Options::encode`] does, into a `buf` the caller checked holds
    /// [`Options::encoded_len`] bytes.
    pub(crate) fn write(&self, buf: &mut [u8]) -> usize {
        self.emit(buf)
    }

    /// The length of the encoded options, written into `buf` unless it is empty (one loop for
    /// measuring and writing).
    fn emit(&self, buf: &mut [u8]) -> usize {
        let mut pos = 0;
        for name in OptionName::ALL {
            if let Some(v) = self.value(name) {
                let n = name.as_str().as_bytes();
                let digits = decimal_len(v);
                if !buf.is_empty() {
                    let at = pos + n.len() + 1;
                    buf[pos..at - 1].copy_from_slice(n);
                    buf[at - 1] = 0;
                    write_decimal(v, &mut buf[at..at + digits]);
                    buf[at + digits] = 0;
                }
                pos += n.len() + digits + 2;
            }
        }
        pos
    }
}

/// Whether a digit string is a number above `max` (including one too large for `u64`).
fn exceeds(value: &[u8], max: u16) -> bool {
    match parse_decimal(value) {
        Some(Some(v)) => v > u64::from(max),
        Some(None) => true,
        None => false,
    }
}

/// Number of decimal digits of `v`.
pub(crate) fn decimal_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 10 {
        v = div10(v).0;
        n += 1;
    }
    n
}

/// Writes `v` in decimal into `out`, which is [`decimal_len`] bytes long.
pub(crate) fn write_decimal(mut v: u64, out: &mut [u8]) {
    for slot in out.iter_mut().rev() {
        let (q, r) = div10(v);
        *slot = b'0' + r;
        v = q;
    }
}

/// `(v / 10, v % 10)` with 32-bit divisions only (64-bit division is a library routine of
/// about 1 KiB on small MCUs, and a table of powers of ten takes 160 bytes): the high word
/// directly, then the low word as two 16-bit digits of a long division.
fn div10(v: u64) -> (u64, u8) {
    let (hi, lo) = ((v >> 32) as u32, v as u32);
    let d1 = ((hi % 10) << 16) | (lo >> 16);
    let d2 = ((d1 % 10) << 16) | (lo & 0xffff);
    let q = (u64::from(hi / 10) << 32) | u64::from(((d1 / 10) << 16) | (d2 / 10));
    (q, (d2 % 10) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_formatting_matches_std() {
        let mut buf = [0u8; 20];
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut check = |v: u64| {
            let n = decimal_len(v);
            write_decimal(v, &mut buf[..n]);
            assert_eq!(core::str::from_utf8(&buf[..n]).unwrap(), std::format!("{v}"));
        };
        for v in [
            0,
            1,
            9,
            10,
            99,
            100,
            65535,
            65536,
            999_999_999_999,
            u64::MAX,
            u64::MAX - 1,
            10u64.pow(19),
        ] {
            check(v);
        }
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            check(x);
            check(x >> 33);
        }
    }
}
