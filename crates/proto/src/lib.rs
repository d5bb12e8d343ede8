//! The tickwire wire protocol, version 1 (see `docs/protocol.md`): topics and
//! patterns, client messages parsed with simd-json, and server messages encoded
//! once into [`bytes::Bytes`]. No IO, no runtime.
//!
//! Entry points: [`Topic`], [`Pattern`], [`parse_client`], and the encoders in [`encode`].
//!
//! # Layout
//! * `topic`: [`Topic`] and [`Pattern`], validation and `*`/`>` matching
//! * `client`: [`ClientMsg`], parsed from one text frame; the publisher's `data`
//!   is located as a byte range so it can be passed on byte for byte
//! * `encode`: server-to-client frames (`tick`, `snapshot`, `subscribed`, ...)
//! * `scan`: a small JSON scanner that finds the raw bytes of a member

mod client;
pub mod encode;
mod scan;
mod topic;

pub use client::{
    ClientMsg, ErrorCode, Id, MAX_JSON_DEPTH, ParseError, Subscribe, parse_client, parse_publish,
};
pub use scan::depth_within as json_depth_within;
pub use topic::{MAX_TOPIC_BYTES, Pattern, Topic, TopicError};

/// Milliseconds since the Unix epoch, as the protocol's `ts` and `server_time`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
