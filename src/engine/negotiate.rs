//! Option negotiation as pure functions: what a server acknowledges for a request under its
//! [`ServerPolicy`], and whether a client accepts the OACK it receives.
//!
//! Server rules: only requested options are acknowledged; `blksize` and `windowsize` are only ever
//! lowered (to the policy caps); `timeout` is echoed exactly; `tsize` is answered with the real size
//! on a read (when known) and echoed on a write unless it exceeds the size limit (ERROR 3);
//! `rollover` is echoed. An OACK is sent only when at least one option was accepted.
//!
//! Client rules: an OACK may only hold options the client asked for (anything else, including an
//! unknown name, is ERROR 8), may not raise `blksize` or `windowsize`, must echo `timeout` and
//! `rollover` exactly; options it leaves out fall back to their defaults. One exception: an
//! unrequested `blksize 512` or `windowsize 1` (the protocol's defaults, which some servers such
//! as tftpy's always add) changes nothing, so it is accepted and ignored.

use crate::error_code::ErrorCode;
use crate::options::{OptionError, OptionList, OptionName, Options, DEFAULT_BLKSIZE, MAX_BLKSIZE};
use crate::wire::RequestKind;

/// The parameters a transfer runs with once negotiation is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TransferParams {
    /// Payload bytes per DATA packet (512 unless negotiated).
    pub blksize: u16,
    /// DATA packets per acknowledgement (1 unless negotiated).
    pub windowsize: u16,
    /// Fixed retransmission interval in seconds, when the `timeout` option was negotiated.
    pub timeout: Option<u8>,
    /// Transfer size announced by the peer (or by us), when known.
    pub tsize: Option<u64>,
    /// Block number after 65535, when negotiated (0 otherwise).
    pub rollover: Option<u8>,
}

impl Default for TransferParams {
    fn default() -> Self {
        TransferParams {
            blksize: DEFAULT_BLKSIZE,
            windowsize: 1,
            timeout: None,
            tsize: None,
            rollover: None,
        }
    }
}

/// What a server accepts when negotiating options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ServerPolicy {
    /// Largest block size granted (operators lower it below the MTU for ROMs that cannot
    /// reassemble fragments). Default 65464.
    pub max_blksize: u16,
    /// Largest window granted. Default 64 (some old clients break above it).
    pub max_windowsize: u16,
    /// Whether the `timeout` option is honoured. Default true.
    pub allow_timeout: bool,
    /// Whether `tsize` is answered on reads and echoed on writes. Default true.
    pub allow_tsize: bool,
    /// Whether the `rollover` option is honoured. Default true.
    pub allow_rollover: bool,
    /// Largest file accepted by a write, checked against `tsize` up front and against the bytes
    /// received as they arrive. Default: no limit.
    pub max_write_size: Option<u64>,
}

impl Default for ServerPolicy {
    fn default() -> Self {
        ServerPolicy {
            max_blksize: MAX_BLKSIZE,
            max_windowsize: 64,
            allow_timeout: true,
            allow_tsize: true,
            allow_rollover: true,
            max_write_size: None,
        }
    }
}

/// A request the server refuses outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Refusal {
    /// The ERROR code to send.
    pub code: ErrorCode,
    /// The ERROR message to send.
    pub message: &'static str,
}

/// The server's answer to a request's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ServerNegotiation {
    /// The options to put in the OACK; empty means no OACK (answer with DATA 1 or ACK 0).
    pub oack: Options,
    /// The parameters the transfer runs with.
    pub params: TransferParams,
}

/// Decides the server's answer to `requested` (already decoded leniently from the request).
///
/// `file_size` is the size of the file being read, if known; it answers `tsize`.
///
/// ```
/// use tftp_proto::engine::{server_negotiate, ServerPolicy};
/// use tftp_proto::{Options, RequestKind};
/// let req = Options { blksize: Some(9000), windowsize: Some(256), tsize: Some(0), ..Options::NONE };
/// let policy = ServerPolicy { max_blksize: 1468, ..ServerPolicy::default() };
/// let n = server_negotiate(RequestKind::Read, &req, Some(1234), &policy).unwrap();
/// assert_eq!(n.oack.blksize, Some(1468));
/// assert_eq!(n.oack.windowsize, Some(64));
/// assert_eq!(n.oack.tsize, Some(1234));
/// assert_eq!(n.params.blksize, 1468);
/// ```
pub fn server_negotiate(
    kind: RequestKind,
    requested: &Options,
    file_size: Option<u64>,
    policy: &ServerPolicy,
) -> Result<ServerNegotiation, Refusal> {
    let mut oack = Options::NONE;
    let mut params = TransferParams::default();
    if let Some(b) = requested.blksize {
        let b = b.min(policy.max_blksize.max(crate::options::MIN_BLKSIZE));
        oack.blksize = Some(b);
        params.blksize = b;
    }
    if let Some(w) = requested.windowsize {
        let w = w.min(policy.max_windowsize.max(1));
        oack.windowsize = Some(w);
        params.windowsize = w;
    }
    if let Some(t) = requested.timeout.filter(|_| policy.allow_timeout) {
        oack.timeout = Some(t);
        params.timeout = Some(t);
    }
    if let Some(r) = requested.rollover.filter(|_| policy.allow_rollover) {
        oack.rollover = Some(r);
        params.rollover = Some(r);
    }
    if let Some(t) = requested.tsize.filter(|_| policy.allow_tsize) {
        match kind {
            RequestKind::Read => {
                oack.tsize = file_size;
                params.tsize = file_size;
            }
            RequestKind::Write => {
                if policy.max_write_size.is_some_and(|max| t > max) {
                    return Err(Refusal {
                        code: ErrorCode::DiskFull,
                        message: "File too large",
                    });
                }
                oack.tsize = Some(t);
                params.tsize = Some(t);
            }
        }
    }
    Ok(ServerNegotiation { oack, params })
}

/// Why a client rejects an OACK (it answers ERROR 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum OackError {
    /// A known option is malformed, out of range or repeated.
    Invalid(OptionError),
    /// The OACK holds an option the client did not request (or an unknown one).
    Unrequested(Option<OptionName>),
    /// The OACK raises `blksize` or `windowsize` above the requested value.
    Raised(OptionName),
    /// The OACK changes a value that must be echoed (`timeout`, `rollover`).
    Changed(OptionName),
}

impl OackError {
    /// The ERROR 8 message.
    pub const fn message(&self) -> &'static str {
        match self {
            OackError::Invalid(e) => e.message(),
            OackError::Unrequested(_) => "unrequested option in OACK",
            OackError::Raised(_) => "OACK raised an option value",
            OackError::Changed(_) => "OACK changed an option value",
        }
    }
}

impl core::fmt::Display for OackError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OackError::Invalid(e) => write!(f, "invalid OACK: {e}"),
            OackError::Unrequested(Some(n)) => write!(f, "OACK holds unrequested option {n}"),
            OackError::Unrequested(None) => f.write_str("OACK holds an unknown option"),
            OackError::Raised(n) => write!(f, "OACK raised {n}"),
            OackError::Changed(n) => write!(f, "OACK changed {n}"),
        }
    }
}

impl core::error::Error for OackError {}

/// Whether `value` is exactly the value the transfer uses when option `n` is not negotiated:
/// `blksize 512` (RFC 1350) and `windowsize 1` (lock-step). The other options have no such value.
fn is_default_value(n: OptionName, value: &[u8]) -> bool {
    let default = match n {
        OptionName::Blksize => u64::from(DEFAULT_BLKSIZE),
        OptionName::Windowsize => 1,
        OptionName::Timeout | OptionName::Tsize | OptionName::Rollover => return false,
    };
    n.decode_value(value) == Ok(default)
}

/// Checks an OACK against what the client requested and returns the parameters to use.
///
/// ```
/// use tftp_proto::engine::client_accept_oack;
/// use tftp_proto::{OptionList, Options, RequestKind};
/// let asked = Options { blksize: Some(1468), tsize: Some(0), ..Options::NONE };
/// let oack = OptionList::parse(b"tsize\x004096\x00").unwrap();
/// let p = client_accept_oack(RequestKind::Read, &asked, &oack).unwrap();
/// assert_eq!((p.blksize, p.tsize), (512, Some(4096))); // omitted blksize: default applies
/// let bad = OptionList::parse(b"blksize\x009000\x00").unwrap();
/// assert!(client_accept_oack(RequestKind::Read, &asked, &bad).is_err());
/// ```
pub fn client_accept_oack(
    kind: RequestKind,
    requested: &Options,
    oack: &OptionList<'_>,
) -> Result<TransferParams, OackError> {
    // One pass: an option the client did not ask for is reported before any invalid value,
    // wherever it stands in the list. Values are kept by option, in `OptionName` order.
    let mut got = [None::<u64>; 5];
    let mut invalid = None;
    for raw in oack.iter() {
        match OptionName::from_name(raw.name) {
            None => return Err(OackError::Unrequested(None)),
            // An unrequested option that only restates the protocol default changes nothing: it
            // is checked like the others (a repeat is invalid) and applies its default.
            Some(n) if !requested.has(n) && !is_default_value(n, raw.value) => {
                return Err(OackError::Unrequested(Some(n)))
            }
            Some(n) if invalid.is_none() => {
                let slot = &mut got[n as usize];
                match n.decode_strict(slot.is_some(), raw.value) {
                    Ok(v) => *slot = Some(v),
                    Err(e) => invalid = Some(e),
                }
            }
            Some(_) => {}
        }
    }
    if let Some(e) = invalid {
        return Err(OackError::Invalid(e));
    }
    // `blksize` and `windowsize` may be lowered, `timeout` and `rollover` must be echoed; the
    // first violation in this order is reported.
    for n in [
        OptionName::Blksize,
        OptionName::Windowsize,
        OptionName::Timeout,
        OptionName::Rollover,
    ] {
        let (Some(v), asked) = (got[n as usize], requested.value(n)) else {
            continue;
        };
        match n {
            OptionName::Blksize | OptionName::Windowsize if asked.is_some_and(|r| v > r) => {
                return Err(OackError::Raised(n))
            }
            OptionName::Timeout | OptionName::Rollover if asked != Some(v) => {
                return Err(OackError::Changed(n))
            }
            _ => {}
        }
    }
    // The `as` casts are exact: `decode_strict` checked each value's range.
    let get = |n: OptionName| got[n as usize];
    let mut params = TransferParams::default();
    if let Some(b) = get(OptionName::Blksize) {
        params.blksize = b as u16;
    }
    if let Some(w) = get(OptionName::Windowsize) {
        params.windowsize = w as u16;
    }
    params.timeout = get(OptionName::Timeout).map(|t| t as u8);
    params.rollover = get(OptionName::Rollover).map(|r| r as u8);
    params.tsize = match kind {
        RequestKind::Read => get(OptionName::Tsize),
        RequestKind::Write => requested.tsize,
    };
    Ok(params)
}
