//! Linux zero-copy pump for [`super::relay_tcp`]: `splice(2)` moves bytes from the source
//! socket into a pipe and from the pipe into the destination socket without copying them
//! through user space. The unsafe code is the three syscalls, each wrapped once below.
//!
//! The bookkeeping that keeps readiness honest: a non-blocking splice returns `EAGAIN` both
//! when the socket has nothing and when the pipe is full. We only splice *into* the pipe when
//! it is empty, and only splice *out of* it when it holds bytes, so `EAGAIN` always means "the
//! socket is not ready" and clearing the socket's readiness is correct.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;
use std::task::{Context, Poll, ready};

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::{CopyError, Direction, Pump};

/// Requested pipe capacity. The kernel may refuse it (per-user pipe limits); that only makes
/// each splice move less, so the result of the request is ignored. 256 KiB measured best on
/// loopback among 64 KiB, 256 KiB and 1 MiB (bench/RESULTS.md).
const PIPE_SIZE: libc::c_int = 1 << 18;

/// Most bytes asked of one splice into the pipe; the kernel caps it at what the pipe holds.
const SPLICE_LEN: usize = 1 << 18;

/// Empty pipes kept for reuse. Creating, resizing and freeing two pipes per connection
/// cost about an eighth of the proxy's CPU in a new-connections benchmark; a small pool
/// removes that. Bounded, so idle pipes hold at most `2 * POOL_MAX` descriptors.
const POOL_MAX: usize = 64;

static POOL: std::sync::Mutex<Vec<(OwnedFd, OwnedFd)>> = std::sync::Mutex::new(Vec::new());

/// Both directions of one connection, borrowing the two sockets.
pub(super) struct Spliced<'a> {
    client: &'a TcpStream,
    backend: &'a TcpStream,
    up: Pipe,
    down: Pipe,
}

impl<'a> Spliced<'a> {
    pub(super) fn new(client: &'a TcpStream, backend: &'a TcpStream) -> io::Result<Self> {
        Ok(Self {
            client,
            backend,
            up: Pipe::new()?,
            down: Pipe::new()?,
        })
    }
}

impl Pump for Spliced<'_> {
    fn poll_direction(
        &mut self,
        cx: &mut Context<'_>,
        direction: Direction,
    ) -> Poll<Result<(), CopyError>> {
        match direction {
            Direction::ClientToBackend => self.up.poll_copy(cx, self.client, self.backend),
            Direction::BackendToClient => self.down.poll_copy(cx, self.backend, self.client),
        }
    }

    fn transferred(&self, direction: Direction) -> u64 {
        match direction {
            Direction::ClientToBackend => self.up.transferred,
            Direction::BackendToClient => self.down.transferred,
        }
    }
}

/// One direction: a pipe and how many bytes sit in it.
struct Pipe {
    /// (read end, write end); `None` only while being dropped.
    ends: Option<(OwnedFd, OwnedFd)>,
    in_pipe: usize,
    read_eof: bool,
    transferred: u64,
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // Only a pipe known to be empty may serve another connection.
        if self.in_pipe != 0 {
            return;
        }
        let Some(ends) = self.ends.take() else { return };
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(ends);
        }
    }
}

impl Pipe {
    fn new() -> io::Result<Self> {
        let pooled = POOL.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let ends = match pooled {
            Some(pair) => pair,
            None => Self::create()?,
        };
        Ok(Self {
            ends: Some(ends),
            in_pipe: 0,
            read_eof: false,
            transferred: 0,
        })
    }

    fn create() -> io::Result<(OwnedFd, OwnedFd)> {
        let mut fds: [libc::c_int; 2] = [-1; 2];
        // SAFETY: `fds` is a writable array of two ints, which is what pipe2 fills.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and nothing else owns them.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ takes an int and only resizes the pipe we own.
        unsafe { libc::fcntl(write_end.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        Ok((read_end, write_end))
    }

    fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        src: &TcpStream,
        dst: &TcpStream,
    ) -> Poll<Result<(), CopyError>> {
        let read_error = |e: io::Error| CopyError::Read(e.kind());
        let write_error = |e: io::Error| CopyError::Write(e.kind());
        loop {
            if self.in_pipe == 0 {
                if self.read_eof {
                    // Everything read has been delivered: pass the end of stream on.
                    SockRef::from(dst)
                        .shutdown(Shutdown::Write)
                        .map_err(write_error)?;
                    return Poll::Ready(Ok(()));
                }
                ready!(src.poll_read_ready(cx)).map_err(read_error)?;
                let Some((_, write_end)) = &self.ends else {
                    return Poll::Ready(Err(CopyError::Read(io::ErrorKind::BrokenPipe)));
                };
                let pipe = write_end.as_fd();
                match src.try_io(Interest::READABLE, || splice(src.as_fd(), pipe, SPLICE_LEN)) {
                    Ok(0) => self.read_eof = true,
                    Ok(n) => self.in_pipe = n,
                    // try_io cleared the readiness; the next poll_read_ready registers us.
                    Err(e) if is_retry(&e) => {}
                    Err(e) => return Poll::Ready(Err(read_error(e))),
                }
            }
            while self.in_pipe > 0 {
                ready!(dst.poll_write_ready(cx)).map_err(write_error)?;
                let Some((read_end, _)) = &self.ends else {
                    return Poll::Ready(Err(CopyError::Write(io::ErrorKind::BrokenPipe)));
                };
                let pipe = read_end.as_fd();
                match dst.try_io(Interest::WRITABLE, || {
                    splice(pipe, dst.as_fd(), self.in_pipe)
                }) {
                    Ok(0) => return Poll::Ready(Err(CopyError::Write(io::ErrorKind::WriteZero))),
                    Ok(n) => {
                        self.in_pipe -= n;
                        self.transferred += n as u64;
                    }
                    Err(e) if is_retry(&e) => {}
                    Err(e) => return Poll::Ready(Err(write_error(e))),
                }
            }
        }
    }
}

fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Moves up to `len` bytes from `from` to `to`, one of which must be a pipe.
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are borrowed, so open for the whole call; null offsets are
    // required for sockets and pipes (use and advance the stream position). No memory of
    // ours is passed to the kernel.
    let moved = unsafe {
        libc::splice(
            from.as_raw_fd(),
            ptr::null_mut(),
            to.as_raw_fd(),
            ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    // A negative return is the only failure; anything else fits in usize.
    usize::try_from(moved).map_err(|_| io::Error::last_os_error())
}
