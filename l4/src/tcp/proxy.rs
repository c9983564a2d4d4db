//! The byte relay between an accepted client connection and its backend connection.
//!
//! Each direction is a half-duplex pump: read from one side, write to the other, and on
//! end-of-stream shut down the write side of the other, so protocols that half-close (a client
//! that sends its request then `shutdown(SHUT_WR)`) keep receiving. A relay ends when both
//! directions have finished, on the first error, when nothing moved for `idle_timeout`, or when
//! one direction is still running `termination_delay` after the other finished.
//!
//! [`relay`] works on any byte stream (TLS-terminated ones included); [`relay_tcp`] is the fast
//! path for two raw sockets, which moves bytes with `splice(2)` on Linux. This module owns no
//! routing and no dialing: callers hand it two connected streams.

use std::future::poll_fn;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep, sleep};

use crate::retire::Retirement;

#[cfg(target_os = "linux")]
mod splice;

/// Bytes buffered per direction by [`relay`]: large enough that a bulk transfer costs few
/// syscalls, small enough that 10k idle connections stay near a gigabyte.
const BUFFER_SIZE: usize = 64 * 1024;

/// Limits on one relayed connection.
#[derive(Debug, Clone, Default)]
pub struct RelayOptions {
    /// After one direction has finished (end-of-stream read and passed on), how long the other
    /// may still run. `None` means no limit (Traefik's negative `terminationDelay`).
    pub termination_delay: Option<Duration>,
    /// How long the relay may go without moving a byte in either direction. `None` = no limit.
    pub idle_timeout: Option<Duration>,
    /// The route's retirement: once a reload has removed or changed the route and its
    /// drain time is over, the relay ends. `None`: only the limits above end it.
    pub retirement: Option<Retirement>,
}

/// Why a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Both directions reached end-of-stream and every byte was delivered.
    Closed,
    /// Reading from or writing to the client failed (reset, broken pipe...).
    ClientError(io::ErrorKind),
    /// Reading from or writing to the backend failed.
    BackendError(io::ErrorKind),
    /// Nothing moved in either direction for `idle_timeout`.
    IdleTimeout,
    /// One direction finished and the other outlived `termination_delay`.
    TerminationDelay,
    /// A reload removed or changed the route, and the drain time it gave is over.
    Retired,
}

/// What a relay moved, and why it stopped. Counts are bytes delivered to the receiving side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub client_to_backend: u64,
    pub backend_to_client: u64,
    pub outcome: Outcome,
}

/// Relays bytes between `client` and `backend` until the connection is over (see the module
/// docs), then drops both streams.
pub async fn relay<C, B>(mut client: C, mut backend: B, opts: &RelayOptions) -> Transfer
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut pump = Buffered {
        client: &mut client,
        backend: &mut backend,
        up: HalfDuplex::new(),
        down: HalfDuplex::new(),
    };
    let outcome = drive(&mut pump, opts).await;
    Transfer {
        client_to_backend: pump.up.transferred,
        backend_to_client: pump.down.transferred,
        outcome,
    }
}

/// Relays between two raw TCP sockets with the semantics of [`relay`]. On Linux the bytes
/// never enter user space (`splice(2)` through a pipe per direction); if pipes cannot be
/// created (descriptor limit), or on other systems, it falls back to [`relay`].
pub async fn relay_tcp(client: TcpStream, backend: TcpStream, opts: &RelayOptions) -> Transfer {
    #[cfg(target_os = "linux")]
    if SPLICE.load(std::sync::atomic::Ordering::Relaxed) {
        return relay_spliced(client, backend, opts).await;
    }
    relay(client, backend, opts).await
}

/// Whether [`relay_tcp`] uses `splice(2)` (the default) or buffered copies. A process-wide
/// switch so that both can be measured side by side (`SALLYPORT_SPLICE=0`).
static SPLICE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns the `splice(2)` fast path of [`relay_tcp`] on or off for the whole process.
pub fn set_splice(enabled: bool) {
    SPLICE.store(enabled, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(target_os = "linux")]
async fn relay_spliced(client: TcpStream, backend: TcpStream, opts: &RelayOptions) -> Transfer {
    match splice::Spliced::new(&client, &backend) {
        Ok(mut pump) => {
            let outcome = drive(&mut pump, opts).await;
            return Transfer {
                client_to_backend: pump.transferred(Direction::ClientToBackend),
                backend_to_client: pump.transferred(Direction::BackendToClient),
                outcome,
            };
        }
        Err(error) => {
            tracing::debug!(%error, "cannot create splice pipes; relaying through buffers");
        }
    }
    relay(client, backend, opts).await
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    ClientToBackend,
    BackendToClient,
}

/// A direction stopped on an I/O error, on its reading or its writing side.
#[derive(Debug)]
enum CopyError {
    Read(io::ErrorKind),
    Write(io::ErrorKind),
}

impl CopyError {
    /// Turns "the read side failed" into "the client failed" for the given direction.
    fn blame(self, direction: Direction) -> Outcome {
        match (direction, self) {
            (Direction::ClientToBackend, CopyError::Read(kind))
            | (Direction::BackendToClient, CopyError::Write(kind)) => Outcome::ClientError(kind),
            (Direction::ClientToBackend, CopyError::Write(kind))
            | (Direction::BackendToClient, CopyError::Read(kind)) => Outcome::BackendError(kind),
        }
    }
}

/// The two directions of one connection, however the bytes are moved.
trait Pump {
    /// Moves bytes in `direction` until it would block (`Pending`), has delivered everything
    /// and half-closed the receiver (`Ready(Ok)`), or failed.
    fn poll_direction(
        &mut self,
        cx: &mut Context<'_>,
        direction: Direction,
    ) -> Poll<Result<(), CopyError>>;
    fn transferred(&self, direction: Direction) -> u64;
}

/// Runs both directions of `pump` together with the relay's timers.
async fn drive<P: Pump>(pump: &mut P, opts: &RelayOptions) -> Outcome {
    let directions = [Direction::ClientToBackend, Direction::BackendToClient];
    let mut finished = [false; 2];
    let mut termination: Pin<&mut Option<Sleep>> = pin!(None);
    let mut idle: Pin<&mut Option<Sleep>> = pin!(opts.idle_timeout.map(sleep));
    let mut retired = pin!(opts.retirement.as_ref().map(Retirement::closing));
    let mut moved = 0;
    poll_fn(|cx| {
        for (done, direction) in finished.iter_mut().zip(directions) {
            if !*done {
                match pump.poll_direction(cx, direction) {
                    Poll::Ready(Ok(())) => *done = true,
                    Poll::Ready(Err(error)) => return Poll::Ready(error.blame(direction)),
                    Poll::Pending => {}
                }
            }
        }
        if finished == [true, true] {
            return Poll::Ready(Outcome::Closed);
        }
        if finished.contains(&true)
            && termination.is_none()
            && let Some(delay) = opts.termination_delay
        {
            termination.set(Some(sleep(delay)));
        }
        if let Some(timer) = termination.as_mut().as_pin_mut()
            && timer.poll(cx).is_ready()
        {
            return Poll::Ready(Outcome::TerminationDelay);
        }
        if let (Some(limit), Some(mut timer)) = (opts.idle_timeout, idle.as_mut().as_pin_mut()) {
            let now_moved = pump.transferred(directions[0]) + pump.transferred(directions[1]);
            if now_moved != moved {
                moved = now_moved;
                timer.as_mut().reset(Instant::now() + limit);
            }
            if timer.poll(cx).is_ready() {
                return Poll::Ready(Outcome::IdleTimeout);
            }
        }
        if let Some(closing) = retired.as_mut().as_pin_mut()
            && closing.poll(cx).is_ready()
        {
            return Poll::Ready(Outcome::Retired);
        }
        Poll::Pending
    })
    .await
}

/// [`relay`]'s pump: one buffer per direction over generic streams.
struct Buffered<'a, C, B> {
    client: &'a mut C,
    backend: &'a mut B,
    up: HalfDuplex,
    down: HalfDuplex,
}

impl<C, B> Pump for Buffered<'_, C, B>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_direction(
        &mut self,
        cx: &mut Context<'_>,
        direction: Direction,
    ) -> Poll<Result<(), CopyError>> {
        match direction {
            Direction::ClientToBackend => self.up.poll_copy(
                cx,
                Pin::new(&mut *self.client),
                Pin::new(&mut *self.backend),
            ),
            Direction::BackendToClient => self.down.poll_copy(
                cx,
                Pin::new(&mut *self.backend),
                Pin::new(&mut *self.client),
            ),
        }
    }

    fn transferred(&self, direction: Direction) -> u64 {
        match direction {
            Direction::ClientToBackend => self.up.transferred,
            Direction::BackendToClient => self.down.transferred,
        }
    }
}

/// One direction of [`relay`]: `buf[start..end]` is read but not yet written.
struct HalfDuplex {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    read_eof: bool,
    /// Bytes were written since the last flush: a TLS writer may still hold them.
    need_flush: bool,
    transferred: u64,
}

impl HalfDuplex {
    fn new() -> Self {
        Self {
            buf: vec![0; BUFFER_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
            read_eof: false,
            need_flush: false,
            transferred: 0,
        }
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<Result<(), CopyError>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        let write_error = |e: io::Error| CopyError::Write(e.kind());
        loop {
            if self.start == self.end && !self.read_eof {
                let mut buf = ReadBuf::new(&mut self.buf);
                match reader.as_mut().poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) if buf.filled().is_empty() => self.read_eof = true,
                    Poll::Ready(Ok(())) => {
                        self.end = buf.filled().len();
                        self.start = 0;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(CopyError::Read(e.kind()))),
                    Poll::Pending => {
                        // Nothing more to read for now: push out whatever the writer holds
                        // (a partly filled TLS record) before sleeping.
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx)).map_err(write_error)?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.start < self.end {
                let written = ready!(
                    writer
                        .as_mut()
                        .poll_write(cx, &self.buf[self.start..self.end])
                )
                .map_err(write_error)?;
                if written == 0 {
                    return Poll::Ready(Err(CopyError::Write(io::ErrorKind::WriteZero)));
                }
                self.start += written;
                self.transferred += written as u64;
                self.need_flush = true;
            }
            if self.read_eof {
                // Shutdown flushes first; on TLS it also sends close_notify.
                ready!(writer.as_mut().poll_shutdown(cx)).map_err(write_error)?;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::SockRef;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;
    use tokio::time::timeout;

    /// Every wait in these tests is bounded by this.
    const LIMIT: Duration = Duration::from_secs(20);

    #[derive(Debug, Clone, Copy)]
    enum Mode {
        Buffered,
        Spliced,
    }

    const MODES: [Mode; 2] = [Mode::Buffered, Mode::Spliced];

    /// Two ends of one loopback TCP connection.
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (connected.unwrap(), accepted.unwrap().0)
    }

    /// A running relay: `client` and `backend` are the applications' ends.
    struct Setup {
        client: TcpStream,
        backend: TcpStream,
        relay: JoinHandle<Transfer>,
    }

    async fn start(mode: Mode, opts: RelayOptions) -> Setup {
        let (client, proxy_client) = socket_pair().await;
        let (proxy_backend, backend) = socket_pair().await;
        let relay = tokio::spawn(async move {
            match mode {
                Mode::Buffered => relay(proxy_client, proxy_backend, &opts).await,
                Mode::Spliced => relay_tcp(proxy_client, proxy_backend, &opts).await,
            }
        });
        Setup {
            client,
            backend,
            relay,
        }
    }

    async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        timeout(LIMIT, stream.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }

    async fn finish(relay: JoinHandle<Transfer>) -> Transfer {
        timeout(LIMIT, relay).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn echoes_both_ways_and_counts_bytes() {
        for mode in MODES {
            let mut s = start(mode, RelayOptions::default()).await;
            s.client.write_all(b"hello").await.unwrap();
            let mut buf = [0; 5];
            timeout(LIMIT, s.backend.read_exact(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf, b"hello");
            s.backend.write_all(b"world!").await.unwrap();
            let mut buf = [0; 6];
            timeout(LIMIT, s.client.read_exact(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf, b"world!");

            s.client.shutdown().await.unwrap();
            assert!(read_to_end(&mut s.backend).await.is_empty());
            s.backend.shutdown().await.unwrap();
            assert!(read_to_end(&mut s.client).await.is_empty());
            let transfer = finish(s.relay).await;
            assert_eq!(
                transfer,
                Transfer {
                    client_to_backend: 5,
                    backend_to_client: 6,
                    outcome: Outcome::Closed
                },
                "{mode:?}"
            );
        }
    }

    #[tokio::test]
    async fn client_half_close_still_receives_the_response() {
        for mode in MODES {
            let mut s = start(mode, RelayOptions::default()).await;
            s.client.write_all(b"request").await.unwrap();
            s.client.shutdown().await.unwrap();
            assert_eq!(read_to_end(&mut s.backend).await, b"request");
            // The backend answers after it saw the end of the request.
            let response = vec![7u8; 300_000];
            s.backend.write_all(&response).await.unwrap();
            s.backend.shutdown().await.unwrap();
            assert_eq!(read_to_end(&mut s.client).await, response, "{mode:?}");
            let transfer = finish(s.relay).await;
            assert_eq!(transfer.client_to_backend, 7);
            assert_eq!(transfer.backend_to_client, 300_000);
            assert_eq!(transfer.outcome, Outcome::Closed);
        }
    }

    #[tokio::test]
    async fn backend_half_close_lets_the_client_keep_sending() {
        for mode in MODES {
            let mut s = start(mode, RelayOptions::default()).await;
            s.backend.write_all(b"banner").await.unwrap();
            s.backend.shutdown().await.unwrap();
            assert_eq!(read_to_end(&mut s.client).await, b"banner");
            s.client.write_all(b"still talking").await.unwrap();
            s.client.shutdown().await.unwrap();
            assert_eq!(read_to_end(&mut s.backend).await, b"still talking");
            let transfer = finish(s.relay).await;
            assert_eq!(
                (transfer.client_to_backend, transfer.backend_to_client),
                (13, 6)
            );
            assert_eq!(transfer.outcome, Outcome::Closed, "{mode:?}");
        }
    }

    #[tokio::test]
    async fn backend_reset_ends_the_relay_and_closes_the_client() {
        for mode in MODES {
            let mut s = start(mode, RelayOptions::default()).await;
            s.client.write_all(b"ping").await.unwrap();
            let mut buf = [0; 4];
            timeout(LIMIT, s.backend.read_exact(&mut buf))
                .await
                .unwrap()
                .unwrap();
            // A zero linger turns close() into a reset.
            SockRef::from(&s.backend)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s.backend);
            let transfer = finish(s.relay).await;
            assert_eq!(
                transfer.outcome,
                Outcome::BackendError(io::ErrorKind::ConnectionReset),
                "{mode:?}"
            );
            assert_eq!(transfer.client_to_backend, 4);
            // The relay dropped the client side: the client sees the end of the stream.
            let mut rest = Vec::new();
            let _ = timeout(LIMIT, s.client.read_to_end(&mut rest))
                .await
                .unwrap();
            assert!(rest.is_empty());
        }
    }

    #[tokio::test]
    async fn termination_delay_cuts_the_other_direction() {
        for mode in MODES {
            let opts = RelayOptions {
                termination_delay: Some(Duration::from_millis(50)),
                idle_timeout: None,
                retirement: None,
            };
            let mut s = start(mode, opts).await;
            s.client.write_all(b"bye").await.unwrap();
            s.client.shutdown().await.unwrap();
            assert_eq!(read_to_end(&mut s.backend).await, b"bye");
            // The backend never closes its side: the delay ends the relay.
            let transfer = finish(s.relay).await;
            assert_eq!(transfer.outcome, Outcome::TerminationDelay, "{mode:?}");
            assert!(read_to_end(&mut s.client).await.is_empty());
        }
    }

    #[tokio::test]
    async fn without_termination_delay_a_late_response_still_arrives() {
        for mode in MODES {
            let mut s = start(mode, RelayOptions::default()).await;
            s.client.shutdown().await.unwrap();
            assert!(read_to_end(&mut s.backend).await.is_empty());
            tokio::time::sleep(Duration::from_millis(150)).await;
            s.backend.write_all(b"late").await.unwrap();
            s.backend.shutdown().await.unwrap();
            assert_eq!(read_to_end(&mut s.client).await, b"late", "{mode:?}");
            assert_eq!(finish(s.relay).await.outcome, Outcome::Closed);
        }
    }

    #[tokio::test]
    async fn idle_timeout_ends_a_silent_connection_but_not_a_busy_one() {
        for mode in MODES {
            let opts = RelayOptions {
                termination_delay: None,
                idle_timeout: Some(Duration::from_millis(200)),
                retirement: None,
            };
            let mut s = start(mode, opts).await;
            // Traffic every 50 ms for 500 ms keeps it open.
            for _ in 0..10 {
                s.client.write_all(b"x").await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(!s.relay.is_finished(), "{mode:?}");
            let transfer = finish(s.relay).await;
            assert_eq!(transfer.outcome, Outcome::IdleTimeout, "{mode:?}");
            assert_eq!(transfer.client_to_backend, 10);
            assert!(read_to_end(&mut s.client).await.is_empty());
        }
    }

    #[tokio::test]
    async fn a_retired_route_ends_its_relays_after_the_drain_time() {
        for mode in MODES {
            let route = Retirement::new();
            let opts = RelayOptions {
                retirement: Some(route.clone()),
                ..RelayOptions::default()
            };
            let mut s = start(mode, opts).await;
            route.retire(Duration::from_millis(300));
            // Within the drain time the connection still works both ways.
            s.client.write_all(b"still").await.unwrap();
            let mut got = [0u8; 5];
            timeout(LIMIT, s.backend.read_exact(&mut got))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&got, b"still");
            s.backend.write_all(b"here").await.unwrap();
            let mut got = [0u8; 4];
            timeout(LIMIT, s.client.read_exact(&mut got))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&got, b"here");
            assert!(!s.relay.is_finished(), "{mode:?}");
            let transfer = finish(s.relay).await;
            assert_eq!(transfer.outcome, Outcome::Retired, "{mode:?}");
            assert!(read_to_end(&mut s.client).await.is_empty());
            assert!(read_to_end(&mut s.backend).await.is_empty());
        }
    }

    /// Deterministic bytes (xorshift) that a receiver can regenerate to check what it got.
    struct Pattern(u64);

    impl Pattern {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                *b = self.0 as u8;
            }
        }
    }

    async fn send_pattern(mut w: tokio::net::tcp::OwnedWriteHalf, seed: u64, total: usize) {
        let mut pattern = Pattern(seed);
        let mut buf = vec![0; 50_000];
        let mut sent = 0;
        while sent < total {
            let n = buf.len().min(total - sent);
            pattern.fill(&mut buf[..n]);
            w.write_all(&buf[..n]).await.unwrap();
            sent += n;
        }
        w.shutdown().await.unwrap();
    }

    async fn check_pattern(mut r: tokio::net::tcp::OwnedReadHalf, seed: u64) -> usize {
        let mut pattern = Pattern(seed);
        let mut buf = vec![0; 70_000];
        let mut expected = vec![0; 70_000];
        let mut received = 0;
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                return received;
            }
            pattern.fill(&mut expected[..n]);
            assert!(buf[..n] == expected[..n], "corrupt data at byte {received}");
            received += n;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_transfers_both_ways_arrive_intact() {
        const UP: usize = 24 << 20;
        const DOWN: usize = 40 << 20;
        for mode in MODES {
            let s = start(mode, RelayOptions::default()).await;
            let (client_r, client_w) = s.client.into_split();
            let (backend_r, backend_w) = s.backend.into_split();
            let work = async {
                tokio::join!(
                    send_pattern(client_w, 1, UP),
                    check_pattern(backend_r, 1),
                    send_pattern(backend_w, 2, DOWN),
                    check_pattern(client_r, 2),
                )
            };
            let ((), up, (), down) = timeout(LIMIT, work).await.unwrap();
            assert_eq!((up, down), (UP, DOWN), "{mode:?}");
            let transfer = finish(s.relay).await;
            assert_eq!(
                transfer,
                Transfer {
                    client_to_backend: UP as u64,
                    backend_to_client: DOWN as u64,
                    outcome: Outcome::Closed
                }
            );
        }
    }

    /// CPU time of the calling thread, to see what the relay itself costs.
    fn thread_cpu() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec, which `ts` is.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// Throughput and relay CPU cost of each mode over loopback, one direction. The
    /// applications run on their own blocking threads; the relay alone runs on the test's
    /// single-threaded runtime, so its thread CPU time is the relay's cost:
    /// `cargo test -p sallyport-l4 relay_throughput -- --ignored --nocapture`
    #[tokio::test]
    #[ignore = "benchmark"]
    async fn relay_throughput() {
        const TOTAL: usize = 8 << 30;
        for mode in [Mode::Buffered, Mode::Spliced, Mode::Buffered, Mode::Spliced] {
            let (client, proxy_client) = socket_pair().await;
            let (proxy_backend, backend) = socket_pair().await;
            let client = client.into_std().unwrap();
            let backend = backend.into_std().unwrap();
            client.set_nonblocking(false).unwrap();
            backend.set_nonblocking(false).unwrap();
            let began = std::time::Instant::now();
            let sender = std::thread::spawn(move || {
                use std::io::Write;
                let mut client = client;
                let buf = vec![1u8; 256 << 10];
                let mut sent = 0;
                while sent < TOTAL {
                    client.write_all(&buf).unwrap();
                    sent += buf.len();
                }
                client.shutdown(std::net::Shutdown::Write).unwrap();
                client
            });
            let receiver = std::thread::spawn(move || {
                use std::io::Read;
                let mut backend = backend;
                let mut buf = vec![0u8; 256 << 10];
                while backend.read(&mut buf).unwrap() > 0 {}
                backend
            });
            let cpu = thread_cpu();
            // The relay ends as soon as the client's stream has been passed on.
            let opts = RelayOptions {
                termination_delay: Some(Duration::ZERO),
                idle_timeout: None,
                retirement: None,
            };
            let transfer = match mode {
                Mode::Buffered => relay(proxy_client, proxy_backend, &opts).await,
                Mode::Spliced => relay_tcp(proxy_client, proxy_backend, &opts).await,
            };
            let cpu = thread_cpu() - cpu;
            let secs = began.elapsed().as_secs_f64();
            drop(sender.join().unwrap());
            drop(receiver.join().unwrap());
            println!(
                "{mode:?}: {:.2} Gbit/s, relay CPU {:.2} s for {} GiB",
                TOTAL as f64 * 8.0 / secs / 1e9,
                cpu.as_secs_f64(),
                TOTAL >> 30,
            );
            assert_eq!(transfer.client_to_backend, TOTAL as u64);
        }
    }
}
