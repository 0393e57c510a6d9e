//! The TFTP wire format: parsing any datagram into a borrowed [`Packet`] and encoding packets
//! into caller-owned buffers.
//!
//! Parsing is total and zero-copy: it never panics, never reads past the datagram and never
//! allocates; every rejection is a [`ParseError`] whose [`message`](ParseError::message) can go
//! straight into an ERROR 4 packet. Encoding writes into a `&mut [u8]`, returns the length
//! written, and on failure names the size needed and leaves the buffer untouched.
//!
//! ```
//! use tftp_proto::{Packet, Mode, ErrorCode};
//!
//! let pkt = Packet::parse(b"\x00\x01pxelinux.0\x00OCTET\x00tsize\x000\x00").unwrap();
//! let Packet::Rrq(req) = pkt else { unreachable!() };
//! assert_eq!(req.filename, b"pxelinux.0");
//! assert_eq!(req.mode, Mode::Octet);
//! assert_eq!(req.options.get(b"tsize"), Some(&b"0"[..]));
//!
//! let mut buf = [0u8; 32];
//! let n = Packet::Error { code: ErrorCode::FileNotFound, message: b"nope" }.encode(&mut buf).unwrap();
//! assert_eq!(&buf[..n], b"\x00\x05\x00\x01nope\x00");
//! ```

use crate::error_code::ErrorCode;
use crate::options::{OptionList, Options};

/// Largest request (RRQ/WRQ) RFC 2347 allows, in octets.
pub const MAX_REQUEST_LEN: usize = 512;
/// Length of a DATA header (opcode + block number).
pub const DATA_HEADER_LEN: usize = 4;
/// Length of an ACK packet.
pub const ACK_LEN: usize = 4;

/// Packet opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Opcode {
    /// 1: read request.
    Rrq = 1,
    /// 2: write request.
    Wrq = 2,
    /// 3: data.
    Data = 3,
    /// 4: acknowledgement.
    Ack = 4,
    /// 5: error.
    Error = 5,
    /// 6: option acknowledgement (RFC 2347).
    Oack = 6,
}

impl Opcode {
    /// The opcode for a wire value.
    pub const fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Opcode::Rrq,
            2 => Opcode::Wrq,
            3 => Opcode::Data,
            4 => Opcode::Ack,
            5 => Opcode::Error,
            6 => Opcode::Oack,
            _ => return None,
        })
    }
}

/// Transfer mode of a request; matched case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Mode<'a> {
    /// `octet`: raw bytes.
    Octet,
    /// `netascii`: text with CR LF line ends on the wire.
    Netascii,
    /// `mail`: obsolete; RFC 1123 says not to support it.
    Mail,
    /// Anything else, as sent (never holds a NUL).
    Unknown(&'a [u8]),
}

impl<'a> Mode<'a> {
    /// Classifies a mode string.
    pub fn from_bytes(mode: &'a [u8]) -> Self {
        if mode.eq_ignore_ascii_case(b"octet") {
            Mode::Octet
        } else if mode.eq_ignore_ascii_case(b"netascii") {
            Mode::Netascii
        } else if mode.eq_ignore_ascii_case(b"mail") {
            Mode::Mail
        } else {
            Mode::Unknown(mode)
        }
    }

    /// The bytes written on the wire (canonical lower case for known modes).
    pub const fn as_bytes(&self) -> &'a [u8] {
        match self {
            Mode::Octet => b"octet",
            Mode::Netascii => b"netascii",
            Mode::Mail => b"mail",
            Mode::Unknown(m) => m,
        }
    }
}

/// The body of an RRQ or WRQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Request<'a> {
    /// The file name, as bytes (not necessarily UTF-8; never holds a NUL).
    pub filename: &'a [u8],
    /// The transfer mode.
    pub mode: Mode<'a>,
    /// The options after the mode (RFC 2347), possibly empty.
    pub options: OptionList<'a>,
    /// The name of an option left without a value at the end of the request, which was
    /// ignored (see [`OptionList::parse_request`]); empty when there was none. Never encoded.
    pub ignored_option: &'a [u8],
}

/// A TFTP packet borrowed from a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Packet<'a> {
    /// Read request (opcode 1).
    Rrq(Request<'a>),
    /// Write request (opcode 2).
    Wrq(Request<'a>),
    /// Data block (opcode 3).
    Data {
        /// Block number (wraps past 65535).
        block: u16,
        /// The payload; its length is not checked against any block size here.
        payload: &'a [u8],
    },
    /// Acknowledgement (opcode 4).
    Ack {
        /// The block acknowledged (0 acknowledges a WRQ or an OACK).
        block: u16,
    },
    /// Error (opcode 5).
    Error {
        /// The error code.
        code: ErrorCode,
        /// The message text without its NUL (not necessarily UTF-8; never holds a NUL).
        message: &'a [u8],
    },
    /// Option acknowledgement (opcode 6).
    Oack {
        /// The acknowledged options.
        options: OptionList<'a>,
    },
}

/// Which string field of a packet an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Field {
    /// The file name of a request.
    Filename,
    /// The mode of a request.
    Mode,
    /// An option name.
    OptionName,
    /// An option value.
    OptionValue,
    /// The message of an ERROR.
    ErrorMessage,
}

impl Field {
    const fn as_str(self) -> &'static str {
        match self {
            Field::Filename => "filename",
            Field::Mode => "mode",
            Field::OptionName => "option name",
            Field::OptionValue => "option value",
            Field::ErrorMessage => "error message",
        }
    }
}

/// Why a datagram is not a valid TFTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ParseError {
    /// Shorter than the fixed part of its packet type (or than an opcode).
    TooShort,
    /// The opcode is not 1-6.
    UnknownOpcode(u16),
    /// A string field runs to the end of the datagram without its terminating NUL.
    MissingNul(Field),
    /// A request longer than the 512 octets RFC 2347 allows.
    RequestTooLong {
        /// The datagram's length.
        len: usize,
    },
    /// An option with an empty name.
    EmptyOptionName,
    /// An option name with no value after it.
    OptionWithoutValue,
}

impl ParseError {
    /// A short static text suitable for an ERROR 4 (illegal operation) message.
    pub const fn message(&self) -> &'static str {
        match self {
            ParseError::TooShort => "packet too short",
            ParseError::UnknownOpcode(_) => "unknown opcode",
            ParseError::MissingNul(Field::Filename) => "filename not terminated",
            ParseError::MissingNul(Field::Mode) => "mode not terminated",
            ParseError::MissingNul(Field::OptionName) => "option name not terminated",
            ParseError::MissingNul(Field::OptionValue) => "option value not terminated",
            ParseError::MissingNul(Field::ErrorMessage) => "error message not terminated",
            ParseError::RequestTooLong { .. } => "request longer than 512 octets",
            ParseError::EmptyOptionName => "empty option name",
            ParseError::OptionWithoutValue => "option without value",
        }
    }
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ParseError::UnknownOpcode(op) => write!(f, "unknown opcode {op}"),
            ParseError::RequestTooLong { len } => {
                write!(f, "request of {len} octets exceeds {MAX_REQUEST_LEN}")
            }
            other => f.write_str(other.message()),
        }
    }
}

impl core::error::Error for ParseError {}

/// Why a packet could not be encoded. The buffer is left untouched in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EncodeError {
    /// The buffer is shorter than the packet.
    BufferTooSmall {
        /// Bytes the packet needs.
        needed: usize,
    },
    /// The request would exceed the 512 octets RFC 2347 allows.
    RequestTooLong {
        /// Bytes the request would take.
        len: usize,
    },
    /// A string field contains a NUL byte (or a known field is empty where it may not be).
    InvalidField(Field),
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EncodeError::BufferTooSmall { needed } => {
                write!(f, "buffer too small: {needed} bytes needed")
            }
            EncodeError::RequestTooLong { len } => {
                write!(f, "request of {len} octets exceeds {MAX_REQUEST_LEN}")
            }
            EncodeError::InvalidField(field) => write!(f, "{} contains a NUL byte", field.as_str()),
        }
    }
}

impl core::error::Error for EncodeError {}

fn be16(d: &[u8], at: usize) -> Option<u16> {
    match d.get(at..at + 2)? {
        [a, b] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

fn split_nul(bytes: &[u8], field: Field) -> Result<(&[u8], &[u8]), ParseError> {
    let pos = bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or(ParseError::MissingNul(field))?;
    Ok((&bytes[..pos], &bytes[pos + 1..]))
}

impl<'a> Packet<'a> {
    /// Parses a datagram. Never panics, never copies.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, ParseError> {
        let op = be16(datagram, 0).ok_or(ParseError::TooShort)?;
        let op = Opcode::from_u16(op).ok_or(ParseError::UnknownOpcode(op))?;
        match op {
            Opcode::Rrq | Opcode::Wrq => {
                if datagram.len() > MAX_REQUEST_LEN {
                    return Err(ParseError::RequestTooLong { len: datagram.len() });
                }
                let (filename, rest) = split_nul(&datagram[2..], Field::Filename)?;
                let (mut mode, mut rest) = split_nul(rest, Field::Mode)?;
                // A junk NUL after the file name (some old PXE ROMs send one): an empty mode
                // followed by a real one is read as that mode.
                if mode.is_empty() {
                    if let Ok((next, after)) = split_nul(rest, Field::Mode) {
                        if !matches!(Mode::from_bytes(next), Mode::Unknown(_)) {
                            (mode, rest) = (next, after);
                        }
                    }
                }
                let (options, ignored_option) = OptionList::parse_request(rest)?;
                let req = Request {
                    filename,
                    mode: Mode::from_bytes(mode),
                    options,
                    ignored_option,
                };
                Ok(if op == Opcode::Rrq {
                    Packet::Rrq(req)
                } else {
                    Packet::Wrq(req)
                })
            }
            _ => Self::parse_answer(op, datagram),
        }
    }

    /// Parses a datagram that a running transfer may accept: anything but a request. `None` for a
    /// request or a malformed datagram, which a transfer only drops. Kept apart from
    /// [`Packet::parse`] so that a build without a server has no request parser.
    pub(crate) fn parse_in_transfer(datagram: &'a [u8]) -> Option<Self> {
        let op = Opcode::from_u16(be16(datagram, 0)?)?;
        match op {
            Opcode::Rrq | Opcode::Wrq => None,
            _ => Self::parse_answer(op, datagram).ok(),
        }
    }

    /// Parses the packets other than requests, whose opcode `op` was read from `datagram`.
    fn parse_answer(op: Opcode, datagram: &'a [u8]) -> Result<Self, ParseError> {
        let body = &datagram[2..];
        match op {
            // Requests are parsed by `parse`.
            Opcode::Rrq | Opcode::Wrq => Err(ParseError::UnknownOpcode(op as u16)),
            Opcode::Data => Ok(Packet::Data {
                block: be16(datagram, 2).ok_or(ParseError::TooShort)?,
                payload: &datagram[DATA_HEADER_LEN..],
            }),
            // Trailing bytes after a complete ACK are tolerated (some devices pad ACKs).
            Opcode::Ack => Ok(Packet::Ack {
                block: be16(datagram, 2).ok_or(ParseError::TooShort)?,
            }),
            Opcode::Error => {
                let code = be16(datagram, 2).ok_or(ParseError::TooShort)?;
                let text = &datagram[4..];
                // A missing final NUL is tolerated: the message runs to the end of the datagram.
                let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
                Ok(Packet::Error {
                    code: ErrorCode::from_u16(code),
                    message: &text[..end],
                })
            }
            Opcode::Oack => Ok(Packet::Oack {
                options: OptionList::parse(body)?,
            }),
        }
    }

    /// The packet's opcode.
    pub const fn opcode(&self) -> Opcode {
        match self {
            Packet::Rrq(_) => Opcode::Rrq,
            Packet::Wrq(_) => Opcode::Wrq,
            Packet::Data { .. } => Opcode::Data,
            Packet::Ack { .. } => Opcode::Ack,
            Packet::Error { .. } => Opcode::Error,
            Packet::Oack { .. } => Opcode::Oack,
        }
    }

    /// Bytes [`Packet::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Packet::Rrq(r) | Packet::Wrq(r) => {
                2 + r.filename.len() + 1 + r.mode.as_bytes().len() + 1 + r.options.as_bytes().len()
            }
            Packet::Data { payload, .. } => DATA_HEADER_LEN + payload.len(),
            Packet::Ack { .. } => ACK_LEN,
            Packet::Error { message, .. } => 4 + message.len() + 1,
            Packet::Oack { options } => 2 + options.as_bytes().len(),
        }
    }

    /// Encodes into `buf`, returning the length written. On error `buf` is untouched.
    ///
    /// Requests are held to the 512-octet limit; string fields may not contain NUL.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        self.validate()?;
        let len = self.encoded_len();
        if buf.len() < len {
            return Err(EncodeError::BufferTooSmall { needed: len });
        }
        let mut w = Writer { buf, pos: 0 };
        w.u16(self.opcode() as u16);
        match self {
            Packet::Rrq(r) | Packet::Wrq(r) => {
                w.cstr(r.filename);
                w.cstr(r.mode.as_bytes());
                w.bytes(r.options.as_bytes());
            }
            Packet::Data { block, payload } => {
                w.u16(*block);
                w.bytes(payload);
            }
            Packet::Ack { block } => w.u16(*block),
            Packet::Error { code, message } => {
                w.u16(code.as_u16());
                w.cstr(message);
            }
            Packet::Oack { options } => w.bytes(options.as_bytes()),
        }
        Ok(w.pos)
    }

    fn validate(&self) -> Result<(), EncodeError> {
        match self {
            Packet::Rrq(r) | Packet::Wrq(r) => {
                if has_nul(r.filename) {
                    return Err(EncodeError::InvalidField(Field::Filename));
                }
                if has_nul(r.mode.as_bytes()) {
                    return Err(EncodeError::InvalidField(Field::Mode));
                }
                let len = self.encoded_len();
                if len > MAX_REQUEST_LEN {
                    return Err(EncodeError::RequestTooLong { len });
                }
            }
            Packet::Error { message, .. } if has_nul(message) => {
                return Err(EncodeError::InvalidField(Field::ErrorMessage));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Sequential writer over a buffer already checked to be long enough.
struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }
    fn cstr(&mut self, b: &[u8]) {
        self.bytes(b);
        self.bytes(&[0]);
    }
}

/// Request kind for [`encode_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum RequestKind {
    /// Read request: the requester downloads.
    Read,
    /// Write request: the requester uploads.
    Write,
}

/// Encodes an RRQ or WRQ with typed options followed by `extra` raw options.
///
/// The whole request must fit in 512 octets (RFC 2347).
///
/// ```
/// use tftp_proto::{encode_request, Mode, OptionList, Options, Packet, RequestKind};
/// let opts = Options { blksize: Some(1468), tsize: Some(0), ..Options::NONE };
/// let mut buf = [0u8; 512];
/// let n = encode_request(&mut buf, RequestKind::Read, b"boot.img", Mode::Octet, &opts, OptionList::EMPTY).unwrap();
/// assert_eq!(&buf[..n], b"\x00\x01boot.img\x00octet\x00blksize\x001468\x00tsize\x000\x00");
/// ```
pub fn encode_request(
    buf: &mut [u8],
    kind: RequestKind,
    filename: &[u8],
    mode: Mode<'_>,
    options: &Options,
    extra: OptionList<'_>,
) -> Result<usize, EncodeError> {
    encode_request_raw(buf, kind, filename, mode.as_bytes(), options, extra)
}

/// [`encode_request`] with the mode as written on the wire: callers that know their mode
/// leave the other modes' names out of their build.
pub(crate) fn encode_request_raw(
    buf: &mut [u8],
    kind: RequestKind,
    filename: &[u8],
    mode: &[u8],
    options: &Options,
    extra: OptionList<'_>,
) -> Result<usize, EncodeError> {
    if has_nul(filename) {
        return Err(EncodeError::InvalidField(Field::Filename));
    }
    if has_nul(mode) {
        return Err(EncodeError::InvalidField(Field::Mode));
    }
    let len = 2 + filename.len() + 1 + mode.len() + 1 + options.encoded_len() + extra.as_bytes().len();
    if len > MAX_REQUEST_LEN {
        return Err(EncodeError::RequestTooLong { len });
    }
    if buf.len() < len {
        return Err(EncodeError::BufferTooSmall { needed: len });
    }
    let op = match kind {
        RequestKind::Read => Opcode::Rrq,
        RequestKind::Write => Opcode::Wrq,
    };
    let mut w = Writer { buf, pos: 0 };
    w.u16(op as u16);
    w.cstr(filename);
    w.cstr(mode);
    let pos = w.pos;
    w.pos += options.write(&mut w.buf[pos..]);
    w.bytes(extra.as_bytes());
    Ok(w.pos)
}

/// Whether `b` holds a NUL byte: a plain loop rather than `contains`, whose word-at-a-time
/// search is larger code for what are short fields.
#[allow(clippy::manual_contains)]
fn has_nul(b: &[u8]) -> bool {
    b.iter().any(|&c| c == 0)
}

/// Encodes an OACK holding typed options followed by `extra` raw options.
pub fn encode_oack(buf: &mut [u8], options: &Options, extra: OptionList<'_>) -> Result<usize, EncodeError> {
    let len = 2 + options.encoded_len() + extra.as_bytes().len();
    if buf.len() < len {
        return Err(EncodeError::BufferTooSmall { needed: len });
    }
    buf[..2].copy_from_slice(&(Opcode::Oack as u16).to_be_bytes());
    let n = options.write(&mut buf[2..]);
    buf[2 + n..len].copy_from_slice(extra.as_bytes());
    Ok(len)
}

/// Encodes an ACK.
pub fn encode_ack(buf: &mut [u8], block: u16) -> Result<usize, EncodeError> {
    let Some(out) = buf.get_mut(..ACK_LEN) else {
        return Err(EncodeError::BufferTooSmall { needed: ACK_LEN });
    };
    let mut w = Writer { buf: out, pos: 0 };
    w.u16(Opcode::Ack as u16);
    w.u16(block);
    Ok(ACK_LEN)
}

/// Encodes an ERROR, shortening `message` (at a NUL, or to fit `buf`) rather than failing.
///
/// Fails only if `buf` cannot hold an ERROR with an empty message (5 bytes).
pub fn encode_error_lossy(buf: &mut [u8], code: ErrorCode, message: &[u8]) -> Result<usize, EncodeError> {
    let room = buf
        .len()
        .checked_sub(5)
        .ok_or(EncodeError::BufferTooSmall { needed: 5 })?;
    let end = message
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(message.len())
        .min(room);
    // Written directly rather than through `Packet::encode`: the message is already cut before
    // any NUL and to the room left, so nothing can fail.
    let message = message.get(..end).unwrap_or_default();
    let mut w = Writer { buf, pos: 0 };
    w.u16(Opcode::Error as u16);
    w.u16(code.as_u16());
    w.cstr(message);
    Ok(w.pos)
}

/// Writes a DATA header for `block` into `buf` and returns the payload slot after it, so a
/// sender can read file bytes straight into the outgoing datagram (zero copy). The datagram
/// to send is `buf[..DATA_HEADER_LEN + n]` for `n` payload bytes written.
///
/// ```
/// use tftp_proto::{data_payload_slot, DATA_HEADER_LEN};
/// let mut buf = [0u8; 4 + 512];
/// let slot = data_payload_slot(&mut buf, 7).unwrap();
/// slot[..5].copy_from_slice(b"hello");
/// assert_eq!(&buf[..DATA_HEADER_LEN + 5], b"\x00\x03\x00\x07hello");
/// ```
pub fn data_payload_slot(buf: &mut [u8], block: u16) -> Result<&mut [u8], EncodeError> {
    if buf.len() < DATA_HEADER_LEN {
        return Err(EncodeError::BufferTooSmall {
            needed: DATA_HEADER_LEN,
        });
    }
    let (header, payload) = buf.split_at_mut(DATA_HEADER_LEN);
    header[..2].copy_from_slice(&(Opcode::Data as u16).to_be_bytes());
    header[2..].copy_from_slice(&block.to_be_bytes());
    Ok(payload)
}
