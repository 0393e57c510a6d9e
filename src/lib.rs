//! # tftp-proto
//!
//! A TFTP implementation built as a pure, sans-IO core: no heap, no sockets, no clock.
//!
//! The core is `#![no_std]` and allocation-free. It parses datagrams into borrowed
//! [`Packet`]s, encodes packets into buffers the caller owns, and converts netascii as a
//! stream. Time is an [`Instant`] the caller passes in. Everything is deterministic, so any
//! event loop can drive it and every protocol edge case can be unit-tested and fuzzed.
//!
//! # Layers
//!
//! Each layer uses only the ones below it:
//!
//! ```text
//! adapter (std: sockets, files, mio, tokio)  client, mio_server, tokio_client, tokio_server, root
//! embassy (no_std, async: embassy-net)        EmbassyClient, EmbassyServer
//!   └─ server (no_std session table)           ServerTable, Incoming, SessionHandle
//!        └─ engine (no_std state machines)     Transfer, negotiation, RTO, pacing
//!             └─ wire · options · netascii · storage · time
//! ```
//!
//! [`boot`] sits beside the engine, on [`wire`] and [`options`]: a separate minimal client.
//!
//! # Which API do I use?
//!
//! * A boot loader that downloads one image into RAM and counts every byte of flash:
//!   [`boot::BootClient`] (octet downloads into a `&mut [u8]`, every option, about 3.6 KiB).
//! * A client or one transfer in your own event loop (an embedded stack, tokio, a simulator):
//!   [`engine::Transfer`], driven as its module documentation shows.
//! * A server in your own event loop, with or without a heap: [`server::ServerTable`].
//! * A std program that fetches or sends files: `adapter::client::Client` (feature `std`).
//! * A std server: `adapter::mio_server::Server` / `ServerThreads` (feature `std`), which is what
//!   the `tftp-proto serve` command (feature `cli`) runs.
//! * A tokio program: `adapter::tokio_client::AsyncClient` and `adapter::tokio_server::AsyncServer`
//!   (feature `tokio`), cancel-safe, on tokio's sockets and timers.
//! * Firmware on embassy-net: `embassy::EmbassyClient` (feature `embassy-net`): `boot_into`
//!   runs [`boot::BootClient`] (the smallest download), `get`/`get_into`/`put` run the engine
//!   with any storage; `embassy::EmbassyServer` serves files from one socket. No heap, async,
//!   cancel-safe (`examples/embassy_fetch.rs`).
//!
//! # Modules
//!
//! * [`wire`]: packets, parsing and encoding;
//! * [`options`]: RFC 2347 options and their negotiation-ready decoding;
//! * [`error_code`]: ERROR codes;
//! * [`netascii`]: the netascii stream converters;
//! * [`time`]: the caller-supplied clock value;
//! * [`storage`]: where file data comes from and goes to;
//! * [`engine`]: the transfer state machines and option negotiation;
//! * [`boot`]: a minimal download client for boot loaders, a fraction of the engine's code;
//! * `embassy` (feature `embassy-net`): the embassy-net client and server, `no_std`;
//! * [`server`]: the server's session table (handles, routing, deadlines, admission) over a
//!   fixed array or, with `alloc`, a growable `Vec`;
//! * `adapter` (feature `std`): the blocking client (`client`), the mio server (`mio_server`),
//!   the tokio client and server (`tokio_client`, `tokio_server`, feature `tokio`),
//!   the root-confined file policy (`root`), std storages (`std_storage`), name remapping
//!   (`remap`), the MTU lookup (`mtu`), the request log (`log`), and one internal module with
//!   every socket system call (Linux fast paths, a portable fallback).
//!
//! The protocol rules and the tests behind each are listed in `PROTOCOL.md` in the repository.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

#[cfg(any(feature = "std", test))]
#[macro_use]
extern crate std;

#[cfg(feature = "alloc")]
extern crate alloc;

#[macro_use]
mod trace;

#[cfg(feature = "std")]
pub mod adapter;
pub mod boot;
#[cfg(feature = "embassy-net")]
pub mod embassy;
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
