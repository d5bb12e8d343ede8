//! A raw WebSocket client: the handshake by hand, then frames exactly as the
//! test writes them (unmasked, fragmented, invalid), and the server's frames
//! as they arrive. It never answers a Ping by itself.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::WAIT;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A server frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a Close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == OP_CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// One client frame as bytes; `masked: false` breaks RFC 6455 on purpose.
pub fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![(fin as u8) << 7 | opcode];
    let m = if masked { 0x80 } else { 0 };
    if payload.len() < 126 {
        f.push(m | payload.len() as u8);
    } else if payload.len() < 65_536 {
        f.push(m | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        f.push(m | 127);
        f.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    if masked {
        let key = [0x12u8, 0x34, 0x56, 0x78];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    /// Connects and completes the upgrade; panics on a refused upgrade.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let (c, status) = Self::try_connect(addr, &[]).await;
        assert_eq!(status, 101, "upgrade refused");
        c
    }

    /// Connects and sends the upgrade with extra headers; returns the status code.
    pub async fn try_connect(addr: SocketAddr, headers: &[(&str, &str)]) -> (RawClient, u16) {
        Self::try_connect_sending(addr, headers, &[]).await
    }

    /// Like [`RawClient::try_connect`], with `behind` (frames) sent in the same
    /// write as the upgrade request, before the server has answered it.
    pub async fn try_connect_sending(
        addr: SocketAddr,
        headers: &[(&str, &str)],
        behind: &[u8],
    ) -> (RawClient, u16) {
        let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let mut req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut out = req.into_bytes();
        out.extend_from_slice(behind);
        stream.write_all(&out).await.expect("write");
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                .await
                .expect("response in time")
                .expect("read");
            assert!(n > 0, "connection closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        buf.drain(..head_end);
        (RawClient { stream, buf }, status)
    }

    /// Sends one frame; `masked: false` breaks RFC 6455 on purpose.
    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool) {
        let f = frame(fin, opcode, payload, masked);
        // The peer may have closed already; the test reads what it said.
        let _ = self.stream.write_all(&f).await;
    }

    /// Sends frames made with [`frame`] in one write, so the server reads
    /// them together.
    pub async fn send_frames(&mut self, frames: &[Vec<u8>]) {
        let _ = self.stream.write_all(&frames.concat()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(true, OP_TEXT, text.as_bytes(), true).await
    }

    async fn fill(&mut self, n: usize, limit: Duration) -> bool {
        while self.buf.len() < n {
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout(limit, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return false,
                Ok(Ok(k)) => self.buf.extend_from_slice(&chunk[..k]),
                Err(_) => panic!("no frame within {limit:?}"),
            }
        }
        true
    }

    /// The next frame, or `None` when the stream ends. Panics after `limit`.
    pub async fn read_frame(&mut self, limit: Duration) -> Option<RawFrame> {
        if !self.fill(2, limit).await {
            return None;
        }
        let fin = self.buf[0] & 0x80 != 0;
        let opcode = self.buf[0] & 0x0f;
        let (len, head) = match self.buf[1] & 0x7f {
            126 => {
                if !self.fill(4, limit).await {
                    return None;
                }
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                if !self.fill(10, limit).await {
                    return None;
                }
                (
                    u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                    10,
                )
            }
            n => (n as usize, 2),
        };
        if !self.fill(head + len, limit).await {
            return None;
        }
        let payload = self.buf[head..head + len].to_vec();
        self.buf.drain(..head + len);
        Some(RawFrame {
            fin,
            opcode,
            payload,
        })
    }

    /// Reads until a Close frame (its code) or the end of the stream (`None`).
    pub async fn close_code(&mut self, limit: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let f = self.read_frame(left).await?;
            if f.opcode == OP_CLOSE {
                return f.close_code();
            }
        }
    }
}
