//! # tftp-proto
//!
//! A TFTP implementation built as a pure, sans-IO core: no heap, no sockets, no clock.
//!
//! The core is `#![no_std]` and allocation-free. It parses datagrams into borrowed
//! [`Packet`]s, encodes packets into buffers the caller owns, and converts netascii as a
//! stream. Time is an [`Instant`] the caller passes in. Everything is deterministic, so any
//! event loop can drive it and every protocol edge case can be unit-tested and fuzzed.
//!
//! Modules:
//! * [`wire`]: packets, parsing and encoding;
//! * [`options`]: RFC 2347 options and their negotiation-ready decoding;
//! * [`error_code`]: ERROR codes;
//! * [`netascii`]: the netascii stream converters;
//! * [`time`]: the caller-supplied clock value;
//! * [`storage`]: where file data comes from and goes to;
//! * [`engine`]: the transfer state machines and option negotiation;
//! * [`boot`]: a minimal download client for boot loaders, a fraction of the engine's code;
//! * [`server`]: the server's session table (handles, routing, deadlines, admission) over a
//!   fixed array or, with `alloc`, a growable `Vec`;
//! * `adapter` (feature `std`): UDP sockets, the blocking client, the multi-session server, the
//!   file policy, name remapping, the MTU lookup and the request log.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

#[cfg(any(feature = "std", test))]
#[macro_use]
extern crate std;

#[cfg(feature = "alloc")]
extern crate alloc;

#[cfg(feature = "std")]
pub mod adapter;
pub mod boot;
pub mod engine;
pub mod error_code;
pub mod netascii;
pub mod options;
pub mod server;
pub mod storage;
pub mod time;
pub mod wire;

pub use error_code::ErrorCode;
pub use netascii::{NetasciiDecoder, NetasciiEncoder};
pub use options::{
    OptionError, OptionErrorKind, OptionList, OptionName, Options, ParsedOptions, RawOption, TftpOption,
};
pub use time::Instant;
pub use wire::{
    data_payload_slot, encode_ack, encode_error_lossy, encode_oack, encode_request, EncodeError, Field, Mode,
    Opcode, Packet, ParseError, Request, RequestKind, ACK_LEN, DATA_HEADER_LEN, MAX_REQUEST_LEN,
};
