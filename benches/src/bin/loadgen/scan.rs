//! Cheap field extraction from the broker's JSON frames.
//!
//! The receive path must cost far less than the broker's send path, so frames
//! are never parsed as JSON: a field is found by a SIMD substring search for
//! its key (`"seq":`) and its value read in place. This relies on the keys
//! loadgen looks for (`type`, `topic`, `seq`, `id`, `ts_send`) appearing only
//! once per frame, which holds because loadgen writes the `data` objects itself
//! and puts none of those keys in them except `ts_send`.

use memchr::memmem::Finder;

/// Precompiled searchers for the keys loadgen reads.
pub struct Keys {
    ty: Finder<'static>,
    topic: Finder<'static>,
    seq: Finder<'static>,
    id: Finder<'static>,
    ts_send: Finder<'static>,
    code: Finder<'static>,
    publisher: Finder<'static>,
}

/// The message types the receive path tells apart.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MsgType {
    Tick,
    Ack,
    Error,
    Welcome,
    Subscribed,
    Other,
}

impl Keys {
    pub fn new() -> Self {
        Keys {
            ty: Finder::new(b"\"type\":\""),
            topic: Finder::new(b"\"topic\":\""),
            seq: Finder::new(b"\"seq\":"),
            id: Finder::new(b"\"id\":"),
            ts_send: Finder::new(b"\"ts_send\":"),
            code: Finder::new(b"\"code\":\""),
            publisher: Finder::new(b"\"pub\":"),
        }
    }

    /// The `type` of a server message.
    pub fn msg_type(&self, frame: &[u8]) -> MsgType {
        // The broker writes `type` first; check that before searching.
        const TICK: &[u8] = b"{\"type\":\"tick\"";
        if frame.starts_with(TICK) {
            return MsgType::Tick;
        }
        match str_after(&self.ty, frame) {
            Some(b"tick") => MsgType::Tick,
            Some(b"ack") => MsgType::Ack,
            Some(b"error") => MsgType::Error,
            Some(b"welcome") => MsgType::Welcome,
            Some(b"subscribed") => MsgType::Subscribed,
            _ => MsgType::Other,
        }
    }

    /// The string value of `topic`, raw (loadgen's topics need no escapes).
    pub fn topic<'a>(&self, frame: &'a [u8]) -> Option<&'a [u8]> {
        str_after(&self.topic, frame)
    }

    pub fn seq(&self, frame: &[u8]) -> Option<u64> {
        u64_after(&self.seq, frame)
    }

    pub fn id(&self, frame: &[u8]) -> Option<u64> {
        u64_after(&self.id, frame)
    }

    pub fn ts_send(&self, frame: &[u8]) -> Option<u64> {
        u64_after(&self.ts_send, frame)
    }

    /// The `pub` field loadgen puts in NATS payloads: which publisher sent it.
    pub fn publisher(&self, frame: &[u8]) -> Option<u64> {
        u64_after(&self.publisher, frame)
    }

    /// The `code` of an `error` message.
    pub fn code<'a>(&self, frame: &'a [u8]) -> Option<&'a [u8]> {
        str_after(&self.code, frame)
    }
}

/// The bytes of a JSON string value whose key (with `:"`) `finder` matches.
fn str_after<'a>(finder: &Finder<'_>, frame: &'a [u8]) -> Option<&'a [u8]> {
    let start = finder.find(frame)? + finder.needle().len();
    let rest = &frame[start..];
    let end = memchr::memchr(b'"', rest)?;
    Some(&rest[..end])
}

/// The unsigned integer after the key `finder` matches (spaces allowed).
fn u64_after(finder: &Finder<'_>, frame: &[u8]) -> Option<u64> {
    let start = finder.find(frame)? + finder.needle().len();
    parse_u64(&frame[start..])
}

/// Parses the leading decimal digits of `bytes`, after optional spaces.
pub fn parse_u64(bytes: &[u8]) -> Option<u64> {
    let mut i = 0;
    while i < bytes.len() && bytes[i] == b' ' {
        i += 1;
    }
    let mut value: u64 = 0;
    let start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(bytes[i] - b'0'))?;
        i += 1;
    }
    (i > start).then_some(value)
}

/// Appends `n` in decimal to `out`, without going through `fmt`.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: &[u8] = br#"{"type":"tick","topic":"lg.t17","seq":1042,"ts":1764131520150,"data":{"ts_send":1764131520150123456,"price":1.0}}"#;

    #[test]
    fn reads_every_field_of_a_tick() {
        let k = Keys::new();
        assert_eq!(k.msg_type(TICK), MsgType::Tick);
        assert_eq!(k.topic(TICK), Some(&b"lg.t17"[..]));
        assert_eq!(k.seq(TICK), Some(1042));
        assert_eq!(k.ts_send(TICK), Some(1_764_131_520_150_123_456));
    }

    #[test]
    fn finds_type_when_it_is_not_first() {
        let k = Keys::new();
        let ack = br#"{"id":7,"type":"ack","topic":"lg.t1","seq":3}"#;
        assert_eq!(k.msg_type(ack), MsgType::Ack);
        assert_eq!(k.id(ack), Some(7));
        let err = br#"{"type":"error","id":9,"code":"forbidden","message":"no"}"#;
        assert_eq!(k.msg_type(err), MsgType::Error);
        assert_eq!(k.code(err), Some(&b"forbidden"[..]));
    }

    #[test]
    fn number_edge_cases() {
        assert_eq!(parse_u64(b" 12,"), Some(12));
        assert_eq!(parse_u64(b"x"), None);
        assert_eq!(parse_u64(b"99999999999999999999999"), None);
        let mut v = Vec::new();
        push_u64(&mut v, 0);
        v.push(b' ');
        push_u64(&mut v, u64::MAX);
        assert_eq!(v, b"0 18446744073709551615");
    }
}
