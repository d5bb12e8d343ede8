//! A client's byte stream after the upgrade, plain TCP or TLS over TCP, and
//! its split into the reader's half and the writer's half.
//!
//! The reader and writer are generic over the halves, so each kind of stream
//! gets its own monomorphized copy: plain TCP keeps tokio's lock-free
//! `into_split`, TLS goes through `tokio::io::split` (one short lock per poll,
//! since one rustls session holds both directions).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::Arc;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tickwire_engine::{BatchSink, DirectSink, DirectWritten, Entry};
use tokio::io::{AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio_rustls::server::TlsStream;

/// An upgraded connection's stream.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The writer's half of a connection: bytes out, and an abortive close.
pub(crate) trait WireWrite: AsyncWrite + Unpin + Send {
    /// Makes the socket's final close a reset (SO_LINGER 0) instead of a FIN,
    /// so no socket lingers in FIN_WAIT for a dead or stuck peer.
    fn reset(&self);
}

/// The plain-TCP write half, shared by the writer task and the outbox's
/// direct path ([`TcpSink`]); the outbox's writer-idle flag keeps them from
/// writing at the same time.
#[derive(Debug, Clone)]
pub(crate) struct TcpWrite(pub Arc<OwnedWriteHalf>);

impl WireWrite for TcpWrite {
    fn reset(&self) {
        let _ = socket2::SockRef::from(self.0.as_ref().as_ref()).set_linger(Some(Duration::ZERO));
    }
}

impl AsyncWrite for TcpWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let s: &TcpStream = self.0.as_ref().as_ref();
        loop {
            std::task::ready!(s.poll_write_ready(cx))?;
            match s.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let s: &TcpStream = self.0.as_ref().as_ref();
        Poll::Ready(socket2::SockRef::from(s).shutdown(std::net::Shutdown::Write))
    }
}

/// Direct writes of one frame from the publishing task (plain TCP only).
#[derive(Debug)]
pub(crate) struct TcpSink {
    pub w: Arc<OwnedWriteHalf>,
    /// `w`'s descriptor, kept here: reaching it through `w` is three
    /// pointers, a cache miss per delivery in a batch (1.8% of the broker's
    /// CPU at 500 ticks/s in `perf`).
    pub fd: i32,
    pub frames_out: Counter,
    pub bytes_out: Counter,
    pub direct_writes: Counter,
}

thread_local! {
    /// Where a direct write's frames are laid out, headers included.
    static SEND_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl DirectSink for TcpSink {
    fn try_write(&self, entries: &[Entry]) -> DirectWritten {
        SEND_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            self.layout(entries, &mut buf);
            // Would block or failed: the writer task finds out and handles it.
            let n = self.w.try_write(&buf).unwrap_or_default();
            let w = self.wrote(entries, &buf, n);
            // A large batch does not keep its buffer.
            if buf.capacity() > 64 * 1024 {
                *buf = Vec::new();
            }
            w
        })
    }

    fn batch(&self) -> Option<&dyn BatchSink> {
        Some(self)
    }
}

impl BatchSink for TcpSink {
    fn fd(&self) -> i32 {
        self.fd
    }

    fn layout(&self, entries: &[Entry], buf: &mut Vec<u8>) {
        for e in entries {
            if e.is_raw() {
                buf.extend_from_slice(&e.frame);
            } else if !e.frame.is_empty() {
                crate::writer::put_header(buf, crate::writer::OP_TEXT, e.frame.len());
                buf.extend_from_slice(&e.frame);
            }
        }
    }

    fn wrote(&self, entries: &[Entry], buf: &[u8], n: usize) -> DirectWritten {
        let mut w = DirectWritten::default();
        if n == 0 {
            return w;
        }
        self.bytes_out.inc_by(n as u64);
        self.direct_writes.inc();
        let mut start = 0;
        let mut frames = 0;
        for e in entries {
            if start >= n {
                break;
            }
            let end = start + if e.frame.is_empty() { 0 } else { e.wire_len() };
            w.entries += 1;
            if !e.is_raw() && end > start {
                frames += 1;
            }
            if end > n {
                w.rest = Some(Bytes::copy_from_slice(&buf[n..end]));
                break;
            }
            start = end;
        }
        self.frames_out.inc_by(frames);
        w
    }
}

/// A TLS write half, with a duplicate of the socket's descriptor: the rustls
/// stream hides the socket, and once split neither half can reach it.
/// Socket options belong to the socket, not the descriptor, so SO_LINGER set
/// through the duplicate applies when the last descriptor closes.
pub(crate) struct TlsWrite {
    half: WriteHalf<TlsStream<TcpStream>>,
    socket: socket2::Socket,
}

impl WireWrite for TlsWrite {
    fn reset(&self) {
        let _ = self.socket.set_linger(Some(Duration::ZERO));
    }
}

impl AsyncWrite for TlsWrite {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.half).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.half).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.half).poll_shutdown(cx)
    }
}

/// The reader's half of a TLS connection.
pub(crate) type TlsRead = ReadHalf<TlsStream<TcpStream>>;

/// Splits a TLS stream.
///
/// # Errors
/// The descriptor could not be duplicated (out of file descriptors).
pub(crate) fn split_tls(s: TlsStream<TcpStream>) -> io::Result<(TlsRead, TlsWrite)> {
    let socket = socket2::SockRef::from(s.get_ref().0).try_clone()?;
    let (r, w) = tokio::io::split(s);
    Ok((r, TlsWrite { half: w, socket }))
}

/// Writes to a stream of either kind (the refused-upgrade path needs no split).
impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
