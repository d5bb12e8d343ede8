//! Direct writes of one read in one system call, through an io_uring per
//! thread.
//!
//! A publisher's tick goes to a topic's idle subscribers by direct writes
//! (`tickwire_engine::uncork`), one `send` each. With this, up to
//! [`MAX_BATCH`] of them are queued as `IORING_OP_SEND` entries and submitted
//! with one `io_uring_enter`: the sends are the same (non-blocking, done
//! before the call returns), the system calls fewer. Measured in
//! docs/performance.md ("Sends in one system call").
//!
//! Where the kernel refuses io_uring (old kernels, seccomp, the
//! `kernel.io_uring_disabled` sysctl) each direct write is its own `send`,
//! as with `limits.io_uring = 0`.

use std::cell::RefCell;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use io_uring::{IoUring, opcode, types};
use tickwire_engine::BatchSend;

use crate::Gateway;

/// Sends per submission: a topic's subscribers among the deferred outboxes
/// are locked from layout to result, so a batch stays short.
pub(crate) const MAX_BATCH: usize = 32;

/// One thread's ring and the buffer its sends point into.
pub(crate) struct Sender {
    ring: IoUring,
    buf: Vec<u8>,
    /// A submission failed in a way that leaves its outcome unknown: the
    /// ring is dropped after this batch and the thread sends one at a time.
    broken: bool,
}

thread_local! {
    static SENDER: RefCell<Option<Sender>> = RefCell::new(Sender::new());
}

impl Sender {
    pub(crate) fn new() -> Option<Sender> {
        // Twice the batch: a batch never fills the submission queue.
        let ring = IoUring::new(2 * MAX_BATCH as u32).and_then(|mut ring| {
            if nowait_sends(&mut ring)? {
                Ok(ring)
            } else {
                Err(io::Error::other(
                    "a MSG_DONTWAIT send to a full socket did not complete at once",
                ))
            }
        });
        match ring {
            Ok(ring) => Some(Sender {
                ring,
                buf: Vec::new(),
                broken: false,
            }),
            Err(e) => {
                tracing::info!(error = %e, "io_uring unusable: direct writes are one send each");
                None
            }
        }
    }

    /// Waits until the `queued` entries' completions are reaped into
    /// `written` (each `None` until its completion arrives); false if the
    /// ring failed first, leaving the rest unknown.
    fn reap(&mut self, queued: usize, written: &mut [Option<usize>]) -> bool {
        let mut done = 0;
        let mut failures = 0;
        while done < queued {
            if let Err(e) = self.ring.submit_and_wait(queued - done) {
                let again = e.kind() == io::ErrorKind::Interrupted
                    || matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY));
                failures += 1;
                if !again || failures > 100 {
                    tracing::error!(error = %e, "io_uring failed: back to one send each");
                    return false;
                }
            }
            for c in self.ring.completion() {
                if let Some(w) = written.get_mut(c.user_data() as usize) {
                    // A negative result is an error: nothing was written.
                    *w = Some(usize::try_from(c.result()).unwrap_or(0));
                }
                done += 1;
            }
        }
        true
    }
}

/// Whether a MSG_DONTWAIT send to a full socket completes at once with
/// EAGAIN (it must: a batch holds outbox locks until every send is done, so
/// a send that waited for room would hold up the thread and those
/// connections). Probed once per ring, on a full Unix socket pair.
#[allow(unsafe_code)]
fn nowait_sends(ring: &mut IoUring) -> io::Result<bool> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    static PROBE: [u8; 1] = [0];
    let (full, _peer) = std::os::unix::net::UnixStream::pair()?;
    full.set_nonblocking(true)?;
    let chunk = [0u8; 4096];
    loop {
        match (&full).write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    let entry = opcode::Send::new(types::Fd(full.as_raw_fd()), PROBE.as_ptr(), 1)
        .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        .build();
    // SAFETY: the entry points at a static, valid for as long as the kernel
    // may look at it, whatever becomes of the entry; the ring takes its own
    // reference to the socket.
    unsafe { ring.submission().push(&entry) }
        .map_err(|_| io::Error::other("io_uring submission queue full"))?;
    ring.submit()?;
    Ok(ring
        .completion()
        .next()
        .is_some_and(|c| c.result() == -libc::EAGAIN))
}

impl BatchSend for Sender {
    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    // Queueing a send into the ring is `unsafe` (io_uring's entries are raw
    // pointers). Measured reason: 0.85x the broker's CPU at 500 ticks/s
    // against one `send` each (docs/performance.md).
    #[allow(unsafe_code)]
    fn send(&mut self, sends: &[(i32, Range<usize>)], written: &mut Vec<Option<usize>>) {
        written.clear();
        // Not queued (over the batch, a bad range, a broken ring): not sent.
        written.resize(sends.len(), Some(0));
        if self.broken {
            return;
        }
        let mut queued = 0;
        {
            let mut sq = self.ring.submission();
            for (i, (fd, range)) in sends.iter().enumerate().take(MAX_BATCH) {
                let Some(bytes) = self.buf.get(range.clone()) else {
                    continue;
                };
                let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                // MSG_DONTWAIT: a full socket completes at once with EAGAIN
                // (the connection's writer takes over), never waits in the
                // ring (`nowait_sends` checked that this kernel does so).
                let entry = opcode::Send::new(types::Fd(*fd), bytes.as_ptr(), len)
                    .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(i as u64);
                // SAFETY: the entry points into `self.buf`, which is neither
                // written, moved nor freed until the kernel is done with it:
                // `reap` below waits for every queued entry's completion
                // before this function returns, and if the ring fails first,
                // `broken` is set and the caller (`uncork`) leaks the whole
                // `Sender`, ring and buffer, so neither is used or freed
                // again. `fd` is the socket of an outbox the caller holds
                // locked, so it stays open (and the same socket) until then.
                if unsafe { sq.push(&entry) }.is_err() {
                    break;
                }
                written[i] = None;
                queued += 1;
            }
        }
        if !self.reap(queued, written) {
            self.broken = true;
        }
    }
}

/// Ends a cork: the direct writes go out through this thread's ring when
/// `limits.io_uring` is on and the kernel allows it, else one `send` each.
pub(crate) fn uncork(gw: &Gateway) {
    if gw.cfg.io_uring {
        let batches = SENDER.with(|s| {
            let mut s = s.borrow_mut();
            let sender = s.as_mut()?;
            let n = tickwire_engine::uncork_with(Some(sender));
            if sender.broken {
                // Entries of the failed batch may still point into its
                // buffer: never free or reuse either.
                std::mem::forget(s.take());
            } else if sender.buf.capacity() > 256 * 1024 {
                sender.buf = Vec::new();
            }
            Some(n)
        });
        if let Some(n) = batches {
            gw.metrics.direct_batches.inc_by(n as u64);
            return;
        }
    }
    tickwire_engine::uncork();
}

/// Whether the kernel lets this process set up an io_uring (when it does
/// not, `limits.io_uring` has no effect).
pub fn io_uring_supported() -> bool {
    IoUring::new(2)
        .and_then(|mut ring| nowait_sends(&mut ring))
        .unwrap_or(false)
}

/// [`tickwire_engine::cork`] until dropped, then [`uncork`].
#[must_use = "uncorks when dropped"]
pub(crate) struct Corked(Arc<Gateway>);

pub(crate) fn corked(gw: &Arc<Gateway>) -> Corked {
    tickwire_engine::cork();
    Corked(gw.clone())
}

impl Drop for Corked {
    fn drop(&mut self) {
        uncork(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// `n` connected pairs over 127.0.0.1: (the server's non-blocking end, the client's end).
    fn pairs(n: usize) -> Vec<(TcpStream, TcpStream)> {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        (0..n)
            .map(|_| {
                let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
                let (s, _) = l.accept().unwrap();
                s.set_nonblocking(true).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                (s, c)
            })
            .collect()
    }

    fn read_n(c: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        c.read_exact(&mut got).unwrap();
        got
    }

    /// Runs `f` on a thread, failing if it does not finish within 10 s: a
    /// send that waited in the ring instead of completing at once would hang.
    fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()).unwrap());
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the batch returned")
    }

    /// `Sender::new`, or None where the kernel refuses io_uring (then
    /// `io_uring_supported` must say so).
    fn sender() -> Option<Sender> {
        let s = Sender::new();
        assert_eq!(s.is_some(), io_uring_supported());
        s
    }

    #[test]
    fn one_submission_sends_each_socket_its_own_bytes() {
        let Some(mut s) = sender() else { return };
        let mut p = pairs(3);
        let fds: Vec<i32> = p.iter().map(|(s, _)| s.as_raw_fd()).collect();
        s.buf().extend_from_slice(b"first|second, longer|3");
        let sends = vec![(fds[0], 0..6), (fds[1], 6..21), (fds[2], 21..22)];
        let mut written = Vec::new();
        s.send(&sends, &mut written);
        assert_eq!(written, [Some(6), Some(15), Some(1)]);
        assert!(!s.broken);
        assert_eq!(read_n(&mut p[0].1, 6), b"first|");
        assert_eq!(read_n(&mut p[1].1, 15), b"second, longer|");
        assert_eq!(read_n(&mut p[2].1, 1), b"3");
    }

    /// A socket with no room takes nothing, or what room appeared since it
    /// was filled, at once (a send that waited would hang the test); one
    /// whose peer reset the connection errs. Either way the count is
    /// exact, and the other sockets in the submission get their bytes.
    #[test]
    fn a_full_or_reset_socket_does_not_hold_up_or_spoil_the_others() {
        let Some(mut s) = sender() else { return };
        let mut p = pairs(3).into_iter();
        let (full, mut full_client) = p.next().unwrap();
        let (ok, mut ok_client) = p.next().unwrap();
        let (reset, reset_client) = p.next().unwrap();
        socket2::SockRef::from(&full)
            .set_send_buffer_size(4096)
            .unwrap();
        let chunk = vec![b'f'; 4096];
        let mut filled = 0;
        loop {
            match (&full).write(&chunk) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        // Reset the third: its client closes with unread data pending; on
        // loopback the RST is in before `drop` returns.
        (&reset).write_all(b"unread").unwrap();
        socket2::SockRef::from(&reset_client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(reset_client);
        let mut one = [0u8; 1];
        let err = (&reset).read(&mut one).expect_err("reset");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        let fds = [full.as_raw_fd(), ok.as_raw_fd(), reset.as_raw_fd()];
        let (written, broken) = within_10s(move || {
            s.buf().extend_from_slice(b"fullokgone");
            let mut written = Vec::new();
            s.send(
                &[(fds[0], 0..4), (fds[1], 4..6), (fds[2], 6..10)],
                &mut written,
            );
            (written, s.broken)
        });
        assert!(!broken);
        assert_eq!(written[1..], [Some(2), Some(0)]);
        let took = written[0].expect("known");
        assert!(took <= 4);
        assert_eq!(read_n(&mut ok_client, 2), b"ok");
        // Every byte the full socket ever took: the filler, then exactly
        // `took` bytes of "full".
        drop(full);
        let mut got = Vec::new();
        full_client.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), filled + took);
        assert!(got[..filled].iter().all(|&b| b == b'f'));
        assert_eq!(&got[filled..], &b"full"[..took]);
        drop((ok, reset));
    }

    /// A ring that fails sends nothing more: a `broken` sender reports
    /// every send as not made, and queues none.
    #[test]
    fn a_broken_sender_sends_nothing() {
        let Some(mut s) = sender() else { return };
        let mut p = pairs(1);
        s.broken = true;
        s.buf().extend_from_slice(b"never");
        let mut written = Vec::new();
        s.send(&[(p[0].0.as_raw_fd(), 0..5)], &mut written);
        assert_eq!(written, [Some(0)]);
        (&p[0].0).write_all(b"x").unwrap();
        assert_eq!(read_n(&mut p[0].1, 1), b"x", "nothing came before it");
    }

    /// The probe: on this kernel a MSG_DONTWAIT send to a full socket
    /// completes at once (or io_uring is refused altogether).
    #[test]
    fn the_probe_agrees_with_the_sender() {
        assert_eq!(Sender::new().is_some(), io_uring_supported());
    }
}
