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
        match IoUring::new(2 * MAX_BATCH as u32) {
            Ok(ring) => Some(Sender {
                ring,
                buf: Vec::new(),
                broken: false,
            }),
            Err(e) => {
                tracing::info!(error = %e, "io_uring unavailable: direct writes are one send each");
                None
            }
        }
    }

    /// Waits until `queued` completions are reaped into `written`; false if
    /// the ring failed first.
    fn reap(&mut self, queued: usize, written: &mut [usize]) -> bool {
        let mut done = 0;
        let mut failures = 0;
        while done < queued {
            if let Err(e) = self.ring.submit_and_wait(queued - done) {
                let again = e.kind() == io::ErrorKind::Interrupted
                    || matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY));
                failures += 1;
                if !again || failures > 100 {
                    tracing::error!(error = %e, "io_uring submission failed: back to one send each");
                    return false;
                }
            }
            for c in self.ring.completion() {
                let i = c.user_data() as usize;
                if let (Some(w), Ok(n)) = (written.get_mut(i), usize::try_from(c.result())) {
                    *w = n;
                }
                done += 1;
            }
        }
        true
    }
}

impl BatchSend for Sender {
    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    // The one `unsafe` of the broker: queueing a send into the ring
    // (io_uring's entries are raw pointers). Measured reason: 0.9x the CPU of
    // one `send` each at 500 ticks/s (docs/performance.md).
    #[allow(unsafe_code)]
    fn send(&mut self, sends: &[(i32, Range<usize>)], written: &mut Vec<usize>) {
        written.clear();
        written.resize(sends.len(), 0);
        let mut queued = 0;
        {
            let mut sq = self.ring.submission();
            for (i, (fd, range)) in sends.iter().enumerate().take(MAX_BATCH) {
                let Some(bytes) = self.buf.get(range.clone()) else {
                    continue;
                };
                let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                // MSG_DONTWAIT: a full socket completes at once with EAGAIN
                // (the connection's writer takes over), never waits in the ring.
                let entry = opcode::Send::new(types::Fd(*fd), bytes.as_ptr(), len)
                    .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(i as u64);
                // SAFETY: the entry points into `self.buf`, which is neither
                // written, moved nor freed until the kernel is done with it:
                // `reap` below waits for every queued entry's completion
                // before this function returns, and if the ring fails
                // first, the buffer is leaked, never freed. `fd` is the
                // socket of an outbox the caller holds locked, so it stays
                // open (and the same socket) throughout.
                if unsafe { sq.push(&entry) }.is_err() {
                    break;
                }
                queued += 1;
            }
        }
        if !self.reap(queued, written) {
            self.broken = true;
            std::mem::forget(std::mem::take(&mut self.buf));
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
                *s = None;
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
    IoUring::new(2).is_ok()
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
        assert_eq!(written, [6, 15, 1]);
        assert!(!s.broken);
        assert_eq!(read_n(&mut p[0].1, 6), b"first|");
        assert_eq!(read_n(&mut p[1].1, 15), b"second, longer|");
        assert_eq!(read_n(&mut p[2].1, 1), b"3");
    }

    /// A socket whose send buffer is full takes nothing (EAGAIN, at once)
    /// and one whose peer reset the connection errs; neither holds up or
    /// spoils the others in the same submission.
    #[test]
    fn a_full_or_reset_socket_takes_nothing_and_the_others_still_get_theirs() {
        let Some(mut s) = sender() else { return };
        let mut p = pairs(3).into_iter();
        let (full, mut full_client) = p.next().unwrap();
        let (ok, mut ok_client) = p.next().unwrap();
        let (reset, reset_client) = p.next().unwrap();
        // Fill the first socket: its client reads only at the end.
        let chunk = vec![b'f'; 64 * 1024];
        let mut filled = 0;
        loop {
            match (&full).write(&chunk) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        // Reset the third: its client closes with unread data pending, and
        // the RST has arrived once a read on the server end says so.
        (&reset).write_all(b"unread").unwrap();
        socket2::SockRef::from(&reset_client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(reset_client);
        reset.set_nonblocking(false).unwrap();
        reset
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut one = [0u8; 1];
        assert!(matches!((&reset).read(&mut one), Err(_) | Ok(0)));
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
        assert_eq!(written, [0, 2, 0]);
        assert!(!broken);
        assert_eq!(read_n(&mut ok_client, 2), b"ok");
        // The full socket got none of "full": only the filler arrives.
        let got = read_n(&mut full_client, filled);
        assert!(got.iter().all(|&b| b == b'f'));
        drop((full, ok, reset));
    }
}
