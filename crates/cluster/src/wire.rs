//! The replication message: a compact binary header, then the publisher's
//! `data` byte for byte (never re-serialized). Pure: no IO.
//!
//! ```text
//! u8  version (1)
//! u8  epoch length E (1..=64), E bytes of epoch (A-Z a-z 0-9 _ -)
//! u8  node length N (0..=64), N bytes of node name (same alphabet)
//! u64 seq, big endian
//! u64 ts (ms since the Unix epoch), big endian
//! ... data: the JSON object as the publisher sent it
//! ```
//!
//! The topic is not in the payload: it is the last tokens of the NATS subject.

use bytes::{BufMut, Bytes, BytesMut};

/// The format version this node writes and reads.
pub const VERSION: u8 = 1;

/// Longest epoch or node name on the wire (a length byte, and what
/// `tickwire_proto::encode::valid_epoch` allows).
pub const MAX_NAME_BYTES: usize = 64;

/// A replicated tick as read from a message; borrows the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub epoch: &'a str,
    /// The node that accepted the tick (for logs).
    pub node: &'a str,
    pub seq: u64,
    pub ts: u64,
}

/// Why a message from a peer was refused. Cheap: no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is shorter than its header")]
    Truncated,
    #[error("unknown format version {0}")]
    Version(u8),
    #[error("epoch or node name is empty, too long or not [A-Za-z0-9_-]")]
    BadName,
    #[error("data is not a JSON object")]
    BadData,
}

/// True for names safe to splice into a JSON frame: `A-Z a-z 0-9 _ -`, at most
/// [`MAX_NAME_BYTES`]; an empty one only where `allow_empty`.
pub fn valid_name(s: &str, allow_empty: bool) -> bool {
    (allow_empty || !s.is_empty())
        && s.len() <= MAX_NAME_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Bytes the header of a tick takes.
pub fn header_len(epoch: &str, node: &str) -> usize {
    1 + 1 + epoch.len() + 1 + node.len() + 8 + 8
}

/// Appends the message for one tick to `buf`.
///
/// # Panics
/// If `epoch` or `node` is longer than [`MAX_NAME_BYTES`]: both are checked
/// when the cluster starts (the epoch is the engine's own).
pub fn encode_into(buf: &mut BytesMut, h: &Header<'_>, data: &[u8]) {
    assert!(
        h.epoch.len() <= MAX_NAME_BYTES && h.node.len() <= MAX_NAME_BYTES,
        "epoch and node name are checked at start"
    );
    buf.reserve(header_len(h.epoch, h.node) + data.len());
    buf.put_u8(VERSION);
    buf.put_u8(h.epoch.len() as u8);
    buf.put_slice(h.epoch.as_bytes());
    buf.put_u8(h.node.len() as u8);
    buf.put_slice(h.node.as_bytes());
    buf.put_u64(h.seq);
    buf.put_u64(h.ts);
    buf.put_slice(data);
}

/// The message for one tick.
pub fn encode(h: &Header<'_>, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(header_len(h.epoch, h.node) + data.len());
    encode_into(&mut b, h, data);
    b.freeze()
}

fn take<'a>(p: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if p.len() < n {
        return Err(DecodeError::Truncated);
    }
    let (a, b) = p.split_at(n);
    *p = b;
    Ok(a)
}

fn name<'a>(p: &mut &'a [u8], allow_empty: bool) -> Result<&'a str, DecodeError> {
    let n = take(p, 1)?[0] as usize;
    let s = std::str::from_utf8(take(p, n)?).map_err(|_| DecodeError::BadName)?;
    if valid_name(s, allow_empty) {
        Ok(s)
    } else {
        Err(DecodeError::BadName)
    }
}

fn u64_be(p: &mut &[u8]) -> Result<u64, DecodeError> {
    let b: [u8; 8] = take(p, 8)?.try_into().expect("take gave 8 bytes");
    Ok(u64::from_be_bytes(b))
}

/// Reads a message: its header and its `data`.
///
/// The epoch and node name are checked to be safe to splice into frames; `data`
/// only to look like a JSON object (`{` ... `}`): peers are trusted to pass on
/// what their gateway validated, and a full parse per tick per node would cost
/// more than the rest of the path.
///
/// # Errors
/// [`DecodeError`] for a message that is not a version-1 tick.
pub fn decode(payload: &[u8]) -> Result<(Header<'_>, &[u8]), DecodeError> {
    let mut p = payload;
    let v = take(&mut p, 1)?[0];
    if v != VERSION {
        return Err(DecodeError::Version(v));
    }
    let epoch = name(&mut p, false)?;
    let node = name(&mut p, true)?;
    let seq = u64_be(&mut p)?;
    let ts = u64_be(&mut p)?;
    if p.len() < 2 || p[0] != b'{' || p[p.len() - 1] != b'}' {
        return Err(DecodeError::BadData);
    }
    Ok((
        Header {
            epoch,
            node,
            seq,
            ts,
        },
        p,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Header<'static> = Header {
        epoch: "0123456789abcdef0123456789abcdef",
        node: "node-a",
        seq: 1041,
        ts: 1_764_131_520_150,
    };

    #[test]
    fn a_tick_round_trips_with_its_data_byte_for_byte() {
        let data = br#"{"price":64012.50,"big":123456789012345678901234567890}"#;
        let m = encode(&H, data);
        assert_eq!(m.len(), header_len(H.epoch, H.node) + data.len());
        let (h, d) = decode(&m).unwrap();
        assert_eq!(h, H);
        assert_eq!(d, data);
    }

    #[test]
    fn an_empty_node_name_is_allowed_an_empty_epoch_is_not() {
        let h = Header { node: "", ..H };
        assert_eq!(decode(&encode(&h, b"{}")).unwrap().0, h);
        let h = Header { epoch: "", ..H };
        assert_eq!(decode(&encode(&h, b"{}")), Err(DecodeError::BadName));
    }

    #[test]
    fn bad_messages_are_refused_not_panicked_on() {
        let good = encode(&H, b"{}");
        for n in 0..good.len() - 1 {
            assert!(decode(&good[..n]).is_err(), "truncated at {n}");
        }
        let mut v = good.to_vec();
        v[0] = 2;
        assert_eq!(decode(&v), Err(DecodeError::Version(2)));
        let h = Header {
            epoch: "has\"quote",
            ..H
        };
        assert_eq!(decode(&encode(&h, b"{}")), Err(DecodeError::BadName));
        assert_eq!(decode(&encode(&H, b"[1]")), Err(DecodeError::BadData));
        assert_eq!(decode(&encode(&H, b"")), Err(DecodeError::BadData));
        // A length byte past the end.
        assert_eq!(decode(&[1, 200, b'a']), Err(DecodeError::Truncated));
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("node-1_b", false));
        assert!(!valid_name("", false));
        assert!(valid_name("", true));
        assert!(!valid_name("a.b", false));
        assert!(!valid_name(&"x".repeat(65), false));
    }
}
