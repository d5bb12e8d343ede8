//! Client frames off the wire (RFC 6455 5.2), with a buffer sized on demand.
//!
//! fastwebsockets 0.10 gives every connection a fixed 8 KiB read buffer for
//! its whole life; an idle dashboard sends a subscribe and a Pong now and
//! then, so that buffer was a third of an idle connection's memory
//! (docs/performance.md). Here each read lands in one per-thread scratch
//! buffer and only the bytes of frames not yet complete are kept by the
//! connection: an idle connection holds no read buffer at all.
//!
//! This layer checks what a frame header can get wrong: reserved bits,
//! opcodes, masking, the size and fragmentation of control frames, and the
//! size limit before any payload is read. The message layer above (the
//! reader) checks fragmentation across frames, UTF-8 and close payloads.

use std::cell::RefCell;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, ReadBuf};

/// Bytes one read may take; reads land here before they are copied out.
const SCRATCH_BYTES: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_u8(b: u8) -> Option<OpCode> {
        Some(match b {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// One frame, its payload unmasked; borrowed from the reader until the next call.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub fin: bool,
    pub opcode: OpCode,
    pub payload: &'a [u8],
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Close with 1002 and this reason.
    Protocol(&'static str),
    /// Close with 1009: the frame is over the size limit.
    TooBig,
    /// The stream ended (cleanly between frames or not) or failed.
    Eof,
}

/// Reads client frames from `S`.
#[derive(Debug)]
pub(crate) struct FrameReader<S> {
    stream: S,
    buf: Vec<u8>,
    /// Where the next frame begins: `buf[..start]` is frames already
    /// returned, dropped only before the next read (not once per frame).
    start: usize,
    max_payload: usize,
}

/// Where a complete frame sits in the buffer.
struct Parsed {
    fin: bool,
    opcode: OpCode,
    mask: [u8; 4],
    start: usize,
    end: usize,
}

impl<S: AsyncRead + Unpin> FrameReader<S> {
    /// `max_payload`: the largest payload accepted (larger is [`FrameError::TooBig`]).
    pub fn new(stream: S, max_payload: usize) -> FrameReader<S> {
        FrameReader {
            stream,
            buf: Vec::new(),
            start: 0,
            max_payload,
        }
    }

    /// Starts with `pending`: bytes that came before the reader existed (the
    /// client's first frames right behind its upgrade request).
    pub fn with_pending(mut self, pending: &[u8]) -> FrameReader<S> {
        self.buf.extend_from_slice(pending);
        self
    }

    /// The next frame. Cancel safe: bytes read stay buffered.
    pub async fn next(&mut self) -> Result<Frame<'_>, FrameError> {
        self.release_if_empty();
        let p = loop {
            if let Some(p) = self.parse()? {
                break p;
            }
            self.compact();
            if self.fill().await == 0 {
                return Err(FrameError::Eof);
            }
        };
        let (from, to) = (self.start + p.start, self.start + p.end);
        unmask(&mut self.buf[from..to], p.mask);
        self.start = to;
        Ok(Frame {
            fin: p.fin,
            opcode: p.opcode,
            payload: &self.buf[from..to],
        })
    }

    /// Whether [`FrameReader::next`] would return at once, without reading.
    pub fn frame_ready(&mut self) -> bool {
        self.release_if_empty();
        !matches!(self.parse(), Ok(None))
    }

    /// Everything returned: the buffer is given back (the next read lands in
    /// the scratch buffer first, so a connection between messages holds none).
    fn release_if_empty(&mut self) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    /// Before a read: drops the frames already returned, so the incomplete
    /// one starts the buffer.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// A complete frame at `start` (offsets relative to it), `None` if more
    /// bytes are needed.
    fn parse(&self) -> Result<Option<Parsed>, FrameError> {
        let b = &self.buf[self.start..];
        if b.len() < 2 {
            return Ok(None);
        }
        let fin = b[0] & 0x80 != 0;
        if b[0] & 0x70 != 0 {
            return Err(FrameError::Protocol("reserved bits set"));
        }
        let opcode = OpCode::from_u8(b[0] & 0x0F).ok_or(FrameError::Protocol("unknown opcode"))?;
        if b[1] & 0x80 == 0 {
            return Err(FrameError::Protocol("unmasked client frame"));
        }
        let (len, at) = match b[1] & 0x7F {
            126 => {
                if b.len() < 4 {
                    return Ok(None);
                }
                (u16::from_be_bytes([b[2], b[3]]) as u64, 4)
            }
            127 => {
                if b.len() < 10 {
                    return Ok(None);
                }
                let len = u64::from_be_bytes(b[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(FrameError::Protocol("frame length over 63 bits"));
                }
                (len, 10)
            }
            n => (n as u64, 2),
        };
        if opcode.is_control() {
            if !fin {
                return Err(FrameError::Protocol("fragmented control frame"));
            }
            if len > 125 {
                return Err(FrameError::Protocol("control frame over 125 bytes"));
            }
        }
        if len > self.max_payload as u64 {
            return Err(FrameError::TooBig);
        }
        let start = at + 4;
        let end = start + len as usize;
        if b.len() < end {
            return Ok(None);
        }
        let mask = b[at..start].try_into().expect("4 bytes");
        Ok(Some(Parsed {
            fin,
            opcode,
            mask,
            start,
            end,
        }))
    }

    /// Reads once, appending to the buffer; returns the bytes read (0 at the end).
    async fn fill(&mut self) -> usize {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Reads what the socket has now without waiting: `None` if it has nothing
    /// (the task is then woken when it has), else as [`FrameReader::fill`].
    pub async fn fill_now(&mut self) -> Option<usize> {
        self.compact();
        match std::future::poll_fn(|cx| Poll::Ready(self.poll_fill(cx))).await {
            Poll::Ready(n) => Some(n),
            Poll::Pending => None,
        }
    }

    fn poll_fill(&mut self, cx: &mut std::task::Context<'_>) -> Poll<usize> {
        let stream = &mut self.stream;
        let buf = &mut self.buf;
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut rb = ReadBuf::new(&mut scratch[..]);
            match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "read failed");
                    Poll::Ready(0)
                }
                Poll::Ready(Ok(())) => {
                    buf.extend_from_slice(rb.filled());
                    Poll::Ready(rb.filled().len())
                }
            }
        })
    }
}

/// XORs the client's mask into `payload` (RFC 6455 5.3), 8 bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().expect("8 bytes")) ^ wide;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    // Chunks are whole multiples of the mask, so the rest starts at mask[0].
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A masked client frame.
    fn frame(b0: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = vec![b0];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65_536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[test]
    fn unmask_matches_bytewise_xor_at_every_length() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for n in 0..40 {
            let plain: Vec<u8> = (0..n as u8).collect();
            let mut b: Vec<u8> = plain
                .iter()
                .enumerate()
                .map(|(i, x)| x ^ mask[i % 4])
                .collect();
            unmask(&mut b, mask);
            assert_eq!(b, plain, "length {n}");
        }
    }

    #[tokio::test]
    async fn frames_split_at_every_byte_come_out_whole() {
        let big = vec![b'x'; 70_000];
        let mut wire = frame(0x81, b"hello", [1, 2, 3, 4]);
        wire.extend(frame(0x89, b"ping", [9, 8, 7, 6]));
        wire.extend(frame(0x01, &big[..300], [5, 5, 5, 5]));
        wire.extend(frame(0x80, &big, [0xff, 0, 0xff, 0]));
        let (mut tx, rx) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for b in wire {
                tx.write_all(&[b]).await.unwrap();
            }
        });
        let mut r = FrameReader::new(rx, 100_000);
        let f = r.next().await.unwrap();
        assert_eq!(
            (f.fin, f.opcode, f.payload),
            (true, OpCode::Text, &b"hello"[..])
        );
        let f = r.next().await.unwrap();
        assert_eq!(
            (f.fin, f.opcode, f.payload),
            (true, OpCode::Ping, &b"ping"[..])
        );
        let f = r.next().await.unwrap();
        assert_eq!(
            (f.fin, f.opcode, f.payload),
            (false, OpCode::Text, &big[..300])
        );
        let f = r.next().await.unwrap();
        assert_eq!((f.fin, f.opcode), (true, OpCode::Continuation));
        assert_eq!(f.payload, &big[..]);
        writer.await.unwrap();
        assert_eq!(r.next().await.unwrap_err(), FrameError::Eof);
        assert_eq!(r.buf.capacity(), 0, "nothing kept after a large frame");
    }

    #[tokio::test]
    async fn many_frames_in_one_read_come_out_in_order() {
        let mut wire = Vec::new();
        for i in 0..300u32 {
            wire.extend(frame(0x81, format!("msg {i}").as_bytes(), i.to_be_bytes()));
        }
        let mut r = FrameReader::new(&wire[..], 100);
        for i in 0..300u32 {
            if i > 0 {
                assert!(r.frame_ready(), "frame {i} is already buffered");
            }
            let f = r.next().await.unwrap();
            assert_eq!(f.payload, format!("msg {i}").as_bytes());
        }
        assert!(!r.frame_ready());
        assert_eq!(r.next().await.unwrap_err(), FrameError::Eof);
    }

    async fn first_error(wire: Vec<u8>, max: usize) -> FrameError {
        let mut r = FrameReader::new(&wire[..], max);
        loop {
            if let Err(e) = r.next().await {
                return e;
            }
        }
    }

    #[tokio::test]
    async fn bad_headers_are_refused() {
        let m = [1, 2, 3, 4];
        let p = |r| FrameError::Protocol(r);
        assert_eq!(
            first_error(frame(0xC1, b"x", m), 10).await,
            p("reserved bits set")
        );
        assert_eq!(
            first_error(frame(0x83, b"x", m), 10).await,
            p("unknown opcode")
        );
        assert_eq!(
            first_error(frame(0x8B, b"", m), 10).await,
            p("unknown opcode")
        );
        assert_eq!(
            first_error(vec![0x81, 0x01, b'x'], 10).await,
            p("unmasked client frame")
        );
        assert_eq!(
            first_error(frame(0x09, b"", m), 10).await,
            p("fragmented control frame")
        );
        assert_eq!(
            first_error(frame(0x89, &[0; 126], m), 1000).await,
            p("control frame over 125 bytes")
        );
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        huge.extend_from_slice(&m);
        assert_eq!(first_error(huge, 10).await, p("frame length over 63 bits"));
        // Over the limit: refused from the header, before the payload arrives.
        let mut big = frame(0x82, &[0; 11], m);
        big.truncate(6);
        assert_eq!(first_error(big, 10).await, FrameError::TooBig);
        assert_eq!(
            first_error(frame(0x82, &[0; 10], m), 10).await,
            FrameError::Eof
        );
        // A frame cut short by the end of the stream.
        let mut cut = frame(0x81, b"hello", m);
        cut.pop();
        assert_eq!(first_error(cut, 10).await, FrameError::Eof);
    }
}
