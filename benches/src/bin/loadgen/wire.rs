//! A minimal WebSocket client: TCP connect with socket options, the HTTP/1.1
//! upgrade, and a frame reader that parses in place.
//!
//! Why not a library on the receive path: a subscriber's frames are parsed
//! straight out of one read buffer, many per `read` syscall, with no copy and
//! no per-frame allocation or UTF-8 check (`--client fws` swaps in
//! fastwebsockets for comparison). Server frames are unmasked; client frames
//! are masked as RFC 6455 requires.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Largest frame loadgen accepts; the broker's default `max_message_bytes` is
/// 64 KiB and ticks are far smaller.
const MAX_FRAME_BYTES: usize = 16 << 20;
/// Largest HTTP upgrade response loadgen reads.
const MAX_RESPONSE_BYTES: usize = 16 << 10;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Where to connect: parsed once from `ws://host[:port]/path`.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    pub path: String,
}

impl Target {
    /// Parses a `ws://` URL and resolves its host once.
    ///
    /// # Errors
    /// Not `ws://`, or the host does not resolve.
    pub async fn resolve(url: &str) -> anyhow::Result<Self> {
        let Some(rest) = url.strip_prefix("ws://") else {
            bail!("only ws:// URLs are supported, got {url}");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .with_context(|| format!("resolving {with_port}"))?
            .next()
            .with_context(|| format!("{with_port} resolves to nothing"))?;
        Ok(Target {
            addr,
            host: authority.to_string(),
            path: path.to_string(),
        })
    }
}

/// Socket options applied before `connect`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketOpts {
    /// SO_RCVBUF in bytes; set before connect so the window scale is small.
    pub recv_buffer_bytes: Option<u32>,
    /// Local address to bind (spreads connections over 127.0.0.x when one
    /// source address runs out of ephemeral ports).
    pub bind: Option<SocketAddr>,
}

/// Opens a TCP connection with `opts` applied.
///
/// # Errors
/// Socket creation, option or connect failures.
pub async fn connect_tcp(target: &Target, opts: SocketOpts) -> io::Result<TcpStream> {
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(bytes) = opts.recv_buffer_bytes {
        socket.set_recv_buffer_size(bytes)?;
    }
    if let Some(bind) = opts.bind {
        socket.bind(bind)?;
    }
    let stream = socket.connect(target.addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The upgrade request, with an optional bearer token.
pub fn upgrade_request(target: &Target, bearer: Option<&str>, key_seed: u64) -> Vec<u8> {
    let key = base64_16(&splitmix_bytes(key_seed));
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        target.path, target.host
    );
    if let Some(token) = bearer {
        req.push_str("Authorization: Bearer ");
        req.push_str(token);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// One client WebSocket over a plain TCP stream.
pub struct WsConn {
    pub stream: TcpStream,
    pub frames: FrameReader,
    mask_state: u64,
}

impl WsConn {
    /// Connects and upgrades. Bytes the server sent right after its 101
    /// response (the `welcome`) stay in the frame reader.
    ///
    /// # Errors
    /// Connect failures, a non-101 status (the message says which), or a
    /// closed connection during the upgrade.
    pub async fn connect(
        target: &Target,
        opts: SocketOpts,
        bearer: Option<&str>,
        read_buffer_bytes: usize,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let mut stream = connect_tcp(target, opts).await?;
        stream
            .write_all(&upgrade_request(target, bearer, seed))
            .await?;
        let mut frames = FrameReader::new(read_buffer_bytes);
        let leftover = read_upgrade_response(&mut stream, &mut frames.buf).await?;
        frames.start = leftover;
        frames.end = frames.buf.len();
        frames
            .buf
            .resize(frames.buf.capacity().max(read_buffer_bytes), 0);
        Ok(WsConn {
            stream,
            frames,
            mask_state: seed ^ 0x9E37_79B9_7F4A_7C15,
        })
    }

    /// A fresh masking key per frame.
    pub fn next_mask(&mut self) -> [u8; 4] {
        (splitmix(&mut self.mask_state) as u32).to_ne_bytes()
    }

    /// Reads once from the socket into the frame buffer.
    ///
    /// # Errors
    /// I/O errors; `UnexpectedEof` when the peer closed.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled read consumed no bytes.
    pub async fn fill(&mut self) -> io::Result<usize> {
        self.frames.fill(&mut self.stream).await
    }

    /// Sends one masked frame.
    ///
    /// # Errors
    /// I/O errors.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        let mask = self.next_mask();
        push_frame(&mut out, opcode, payload, mask);
        self.stream.write_all(&out).await
    }

    /// The stream with the bytes already buffered in front of it, for handing
    /// the connection to another WebSocket implementation.
    pub fn into_primed(self) -> Primed {
        let pre = self.frames.buf[self.frames.start..self.frames.end].to_vec();
        Primed {
            pre,
            pos: 0,
            inner: self.stream,
        }
    }

    /// Sends a Close frame with `code`, ignoring errors (the peer may be gone).
    pub async fn send_close(&mut self, code: u16) {
        let _ = self.send(OP_CLOSE, &code.to_be_bytes()).await;
    }
}

/// A TCP stream that first yields bytes read ahead of it.
pub struct Primed {
    pre: Vec<u8>,
    pos: usize,
    inner: TcpStream,
}

impl tokio::io::AsyncRead for Primed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.pre.len() {
            let n = (self.pre.len() - self.pos).min(buf.remaining());
            let from = self.pos;
            buf.put_slice(&self.pre[from..from + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Primed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads the HTTP response to the upgrade into `buf` and returns the offset
/// where the WebSocket stream starts.
async fn read_upgrade_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<usize> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed during the upgrade");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]);
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0);
            if status != 101 {
                let body = String::from_utf8_lossy(&buf[end + 4..]);
                bail!("upgrade refused: HTTP {status} {}", body.trim());
            }
            return Ok(end + 4);
        }
        if buf.len() > MAX_RESPONSE_BYTES {
            bail!("upgrade response too large");
        }
    }
}

/// Appends one masked client frame to `out`.
pub fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// Appends a masked text frame whose payload is built by `write` directly in
/// `out` (no intermediate buffer). The payload must stay under 64 KiB.
pub fn push_text_with(out: &mut Vec<u8>, mask: [u8; 4], write: impl FnOnce(&mut Vec<u8>)) {
    out.push(0x80 | OP_TEXT);
    let len_at = out.len();
    // Reserve the 16-bit length form, fixed up below.
    out.extend_from_slice(&[0x80 | 126, 0, 0]);
    out.extend_from_slice(&mask);
    let start = out.len();
    write(out);
    let len = out.len() - start;
    assert!(
        len <= usize::from(u16::MAX),
        "payload built by push_text_with is under 64 KiB"
    );
    if len < 126 {
        // Short form: drop the two length bytes.
        out[len_at] = 0x80 | len as u8;
        out.drain(len_at + 1..len_at + 3);
        apply_mask(&mut out[start - 2..], mask);
    } else {
        out[len_at + 1..len_at + 3].copy_from_slice(&(len as u16).to_be_bytes());
        apply_mask(&mut out[start..], mask);
    }
}

fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// A frame as the reader hands it out. Payloads borrow the read buffer.
#[derive(Debug)]
pub enum Frame<'a> {
    /// A complete text or binary message (fragments already joined).
    Data(&'a [u8]),
    Ping(&'a [u8]),
    Pong,
    /// Close with its code (1005 when the frame carried none).
    Close(u16),
}

/// Protocol faults in what the server sent.
#[derive(Debug)]
pub enum FrameError {
    TooLarge,
    BadOpcode(u8),
    UnexpectedContinuation,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge => write!(f, "frame over {MAX_FRAME_BYTES} bytes"),
            FrameError::BadOpcode(op) => write!(f, "bad opcode {op}"),
            FrameError::UnexpectedContinuation => write!(f, "continuation without a start"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Buffered frame parser: `fill` reads as much as the socket has, `next`
/// hands out complete frames from the buffer.
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Fragments of a message in progress (rare: the broker sends whole frames).
    partial: Vec<u8>,
    in_fragmented: bool,
    /// The last fragmented message, handed out by `next`.
    joined: Vec<u8>,
}

impl FrameReader {
    pub fn new(capacity: usize) -> Self {
        FrameReader {
            buf: vec![0; capacity.max(256)],
            start: 0,
            end: 0,
            partial: Vec::new(),
            in_fragmented: false,
            joined: Vec::new(),
        }
    }

    /// Reads once; compacts or grows the buffer first if it is full.
    ///
    /// # Errors
    /// I/O errors; `UnexpectedEof` on a closed stream.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn fill<R: AsyncReadExt + Unpin>(&mut self, stream: &mut R) -> io::Result<usize> {
        // Move a partial frame to the front once free space runs low, so
        // reads stay large; grow only if a partial frame fills everything.
        if self.start > 0 && self.buf.len() - self.end < self.buf.len() / 4 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let len = self.buf.len() * 2;
            self.buf.resize(len, 0);
        }
        let n = stream.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.end += n;
        Ok(n)
    }

    /// The next complete frame in the buffer, if any.
    ///
    /// # Errors
    /// Server protocol violations.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        loop {
            let avail = &self.buf[self.start..self.end];
            if avail.len() < 2 {
                return Ok(None);
            }
            let fin = avail[0] & 0x80 != 0;
            let opcode = avail[0] & 0x0F;
            let masked = avail[1] & 0x80 != 0;
            let (len, mut header) = match avail[1] & 0x7F {
                126 if avail.len() >= 4 => {
                    (usize::from(u16::from_be_bytes([avail[2], avail[3]])), 4)
                }
                127 if avail.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&avail[2..10]);
                    let len = u64::from_be_bytes(b);
                    (usize::try_from(len).unwrap_or(usize::MAX), 10)
                }
                126 | 127 => return Ok(None),
                n => (usize::from(n), 2),
            };
            if len > MAX_FRAME_BYTES {
                return Err(FrameError::TooLarge);
            }
            let mask = if masked {
                if avail.len() < header + 4 {
                    return Ok(None);
                }
                let m = [
                    avail[header],
                    avail[header + 1],
                    avail[header + 2],
                    avail[header + 3],
                ];
                header += 4;
                Some(m)
            } else {
                None
            };
            if avail.len() < header + len {
                // Make sure a big frame fits once the buffer is compacted.
                if header + len > self.buf.len() {
                    let mut grown = vec![0; (header + len).next_power_of_two()];
                    grown[..avail.len()].copy_from_slice(avail);
                    self.end = avail.len();
                    self.start = 0;
                    self.buf = grown;
                }
                return Ok(None);
            }
            let from = self.start + header;
            let to = from + len;
            self.start = to;
            if let Some(m) = mask {
                // Servers must not mask, but tolerate it.
                apply_mask(&mut self.buf[from..to], m);
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
            match opcode {
                OP_TEXT | OP_BINARY if fin && !self.in_fragmented => {
                    return Ok(Some(Frame::Data(&self.buf[from..to])));
                }
                OP_TEXT | OP_BINARY => {
                    self.partial.clear();
                    self.partial.extend_from_slice(&self.buf[from..to]);
                    self.in_fragmented = true;
                }
                OP_CONT => {
                    if !self.in_fragmented {
                        return Err(FrameError::UnexpectedContinuation);
                    }
                    self.partial.extend_from_slice(&self.buf[from..to]);
                    if fin {
                        self.in_fragmented = false;
                        std::mem::swap(&mut self.joined, &mut self.partial);
                        return Ok(Some(Frame::Data(&self.joined)));
                    }
                }
                OP_PING => return Ok(Some(Frame::Ping(&self.buf[from..to]))),
                OP_PONG => return Ok(Some(Frame::Pong)),
                OP_CLOSE => {
                    let p = &self.buf[from..to];
                    let code = if p.len() >= 2 {
                        u16::from_be_bytes([p[0], p[1]])
                    } else {
                        1005
                    };
                    return Ok(Some(Frame::Close(code)));
                }
                op => return Err(FrameError::BadOpcode(op)),
            }
        }
    }
}

/// splitmix64: a tiny deterministic generator for masks, keys and topics.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn splitmix_bytes(seed: u64) -> [u8; 16] {
    let mut s = seed;
    let a = splitmix(&mut s).to_le_bytes();
    let b = splitmix(&mut s).to_le_bytes();
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a);
    out[8..].copy_from_slice(&b);
    out
}

fn base64_16(bytes: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Waits until `conn` has read a whole frame for which `want` returns true,
/// skipping others; answers pings on the way. Used during setup only.
///
/// # Errors
/// I/O errors, a close frame, protocol faults, or `timeout` elapsing.
pub async fn wait_for(
    conn: &mut WsConn,
    timeout: Duration,
    mut want: impl FnMut(&[u8]) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut pong = None;
        while let Some(frame) = conn.frames.next()? {
            match frame {
                Frame::Data(p) => {
                    if want(p)? {
                        return Ok(());
                    }
                }
                Frame::Ping(p) => pong = Some(p.to_vec()),
                Frame::Pong => {}
                Frame::Close(code) => bail!("closed by the server with {code}"),
            }
        }
        if let Some(p) = pong {
            conn.send(OP_PONG, &p).await?;
        }
        tokio::time::timeout_at(deadline, conn.fill())
            .await
            .context("timed out waiting for the server")??;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_example() {
        assert_eq!(base64_16(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn text_frame_built_in_place_equals_push_frame() {
        let mask = [1, 2, 3, 4];
        for len in [0usize, 5, 125, 126, 300] {
            let payload = vec![b'x'; len];
            let mut a = Vec::new();
            push_frame(&mut a, OP_TEXT, &payload, mask);
            let mut b = vec![9u8];
            push_text_with(&mut b, mask, |out| out.extend_from_slice(&payload));
            assert_eq!(&b[1..], &a[..], "len {len}");
        }
    }

    fn server_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        if payload.len() < 126 {
            out.push(payload.len() as u8);
        } else {
            out.push(126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn reader_splits_frames_and_joins_fragments() {
        let mut bytes = server_frame(OP_TEXT, true, b"one");
        bytes.extend(server_frame(OP_TEXT, false, b"tw"));
        bytes.extend(server_frame(OP_PING, true, b"p"));
        bytes.extend(server_frame(OP_CONT, true, b"o"));
        bytes.extend(server_frame(OP_CLOSE, true, &4001u16.to_be_bytes()));
        let big = vec![b'y'; 1000];
        bytes.extend(server_frame(OP_TEXT, true, &big));
        let mut r = FrameReader::new(256);
        r.buf[..256].copy_from_slice(&bytes[..256]);
        r.end = 256;
        assert!(matches!(r.next().unwrap(), Some(Frame::Data(b"one"))));
        assert!(matches!(r.next().unwrap(), Some(Frame::Ping(b"p"))));
        assert!(matches!(r.next().unwrap(), Some(Frame::Data(b"two"))));
        assert!(matches!(r.next().unwrap(), Some(Frame::Close(4001))));
        assert!(r.next().unwrap().is_none());
        // The big frame grew the buffer; feed the rest by hand.
        let rest = &bytes[256..];
        r.buf[r.end..r.end + rest.len()].copy_from_slice(rest);
        r.end += rest.len();
        match r.next().unwrap() {
            Some(Frame::Data(p)) => assert_eq!(p.len(), 1000),
            other => panic!("{other:?}"),
        }
    }
}
