//! The datagram relay of one UDP entrypoint: one listening socket, a bounded
//! [`SessionTable`] keyed by client address, and per session a connected socket to the
//! backend chosen once (so the backend's answers find their client) with a small task
//! relaying its answers back. Datagram boundaries are kept both ways.
//!
//! Nothing here waits on a full socket buffer: a datagram that cannot be sent at once is
//! dropped and counted, as the network itself would. Datagrams move in batches both ways
//! ([`super::batch`]): every datagram waiting on the listener is read in one call, and a
//! backend's answers are read in one call and sent to their client in as few as GSO allows.
//! Buffers are a batch of 64 KiB buffers for the listener and one per worker thread for the
//! answers, not one per session.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{oneshot, watch};
use tracing::{debug, warn};

use super::batch::{Batching, RecvBuffers};
use super::local::{LocalQuic, addressed_to, later_quic_packet};
use super::migration::{ClientAddr, LearnedCids};
use super::pending::{DEFAULT_HELLO_DEADLINE, DEFAULT_MAX_PENDING, DropReason, Feed, PendingFlows};
use super::router::{UdpRoute, UdpRoutes};
use super::session::SessionTable;
use crate::observe::{CloseReason, ConnObserver, ConnRecord, Observer, Transport};
use crate::quic::{Classification, InitialHello, classify};
use crate::retire::Retirement;

/// The largest datagram carried: the UDP length field's limit.
pub const MAX_DATAGRAM: usize = 65_535;

/// Passed-through QUIC sessions end after at least this long without traffic (or
/// `udp.timeout` if longer): QUIC endpoints commonly agree on a 30 s idle timeout, and a
/// connection quiet for a few seconds must not lose its session (its packets would then go
/// to another router).
pub const QUIC_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long resolving a backend's host name may take before the datagram is dropped.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of a UDP entrypoint.
#[derive(Debug, Clone)]
pub struct UdpSettings {
    pub name: Arc<str>,
    /// `udp.timeout` (Traefik: 3 s).
    pub idle_timeout: Duration,
    /// Most sessions at once (extension `udp.maxSessions`).
    pub max_sessions: usize,
    /// How long sessions may go on after shutdown starts (`transport.lifeCycle.graceTimeOut`).
    pub grace: Duration,
    /// Told about every session when it ends.
    pub observer: Option<Observer>,
    /// Set before `stop` when another process took the socket over (a binary upgrade):
    /// from then on this relay no longer reads it, so every datagram reaches the new
    /// process, while the sessions open here keep relaying their servers' answers until
    /// they end or the grace period does.
    pub handed_over: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// What a UDP entrypoint did, for logs, metrics and tests.
#[derive(Debug, Default)]
pub struct UdpStats {
    /// Sessions open now.
    pub sessions: AtomicUsize,
    pub sessions_opened: AtomicU64,
    /// New clients refused because the session table was full.
    pub sessions_refused: AtomicU64,
    /// Datagrams dropped: no router or server for the client, a full send buffer, a
    /// backend that could not be reached, or shutdown under way.
    pub datagrams_dropped: AtomicU64,
    /// QUIC flows dropped before any backend saw them: unreadable Initials, a ClientHello
    /// that never completed, or too many flows waiting for theirs.
    pub quic_flows_dropped: AtomicU64,
    /// Datagrams handed to the local QUIC endpoint (HTTP/3 on the same socket).
    pub datagrams_local: AtomicU64,
}

/// One session's side of the table: the socket to its backend, and the sender whose drop
/// stops the task relaying the backend's answers.
struct Session {
    upstream: Arc<UdpSocket>,
    counters: Arc<Counters>,
    _stop_replies: oneshot::Sender<()>,
}

/// What one session moved, for its record when it ends.
#[derive(Default)]
struct Counters {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    datagrams_in: AtomicU64,
    datagrams_out: AtomicU64,
}

/// A session's side toward its backend, as the forwarding path uses it.
type Upstream = (Arc<UdpSocket>, Arc<Counters>);

/// What a session's record says besides its counters.
struct SessionInfo {
    observer: Arc<dyn ConnObserver>,
    entrypoint: Arc<str>,
    sni: Option<Arc<str>>,
    router: Arc<str>,
    service: Arc<str>,
    backend: String,
    started: (Instant, SystemTime),
}

type Table = Arc<Mutex<SessionTable<Session>>>;

fn lock(table: &Table) -> std::sync::MutexGuard<'_, SessionTable<Session>> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

type Cids = Arc<Mutex<LearnedCids>>;

fn lock_cids(cids: &Cids) -> std::sync::MutexGuard<'_, LearnedCids> {
    cids.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Publishes the number of open sessions (read where the table is locked anyway).
fn gauge(stats: &UdpStats, table: &SessionTable<Session>) {
    stats.sessions.store(table.len(), Ordering::Relaxed);
}

/// Datagrams read per call on the listener: quinn-udp's batch, 32 on Linux. 32 × 64 KiB of
/// buffers per entrypoint, committed only as large datagrams fill them.
const LISTENER_BATCH: usize = super::batch::MAX_BATCH;

/// Answers read per call on a session's socket. Fewer than the listener's: the buffers are
/// per worker thread, and one backend's answers to one client rarely queue deeper between
/// two wake-ups (with GRO, a burst of them shares a buffer anyway).
const ANSWER_BATCH: usize = 8;

/// The buffers answers are read into and sent from, one set per worker thread: reading and
/// sending happen without an await in between.
struct ReplyBuffers {
    received: RecvBuffers,
    /// Where a run of answers is laid out for one GSO send.
    gso: Vec<u8>,
}

thread_local! {
    static REPLY_BUFFERS: RefCell<ReplyBuffers> = RefCell::new(ReplyBuffers {
        received: RecvBuffers::new(ANSWER_BATCH),
        gso: Vec::new(),
    });
}

/// Relays datagrams on `socket` until `stop` turns true, then lets the open sessions go on
/// (refusing new ones) until they end or `grace` passes. `routes` gives the routers current
/// at the moment a session starts; a session keeps its backend across reloads.
///
/// With a `local` QUIC endpoint on the same socket, QUIC packets for its connections and
/// new QUIC flows that no passthrough router takes are handed to it, and after stop the
/// relay goes on reading for it until it is no longer busy (at most a second `grace`).
///
/// Returns how many sessions were still open when the grace ran out (and were closed).
pub async fn serve(
    socket: Arc<UdpSocket>,
    settings: UdpSettings,
    routes: impl Fn() -> Arc<UdpRoutes>,
    stats: Arc<UdpStats>,
    mut stop: watch::Receiver<bool>,
    local: Option<Arc<dyn LocalQuic>>,
) -> usize {
    let table: Table = Arc::new(Mutex::new(SessionTable::new(
        settings.max_sessions,
        settings.idle_timeout,
    )));
    let cids: Cids = Arc::new(Mutex::new(LearnedCids::new(settings.max_sessions)));
    let mut sweep = tokio::time::interval(lock(&table).sweep_interval());
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let batching = Arc::new(Batching::new(&socket).unwrap_or_else(|e| {
        warn!(entrypoint = %settings.name, error = %e, "UDP batching unavailable: one datagram per system call");
        Batching::single()
    }));
    let mut received = RecvBuffers::new(LISTENER_BATCH);
    let mut pending = PendingFlows::new(DEFAULT_MAX_PENDING, DEFAULT_HELLO_DEADLINE);
    let mut stop_by: Option<Instant> = None;
    let mut wake_at: Option<Instant> = None;
    let mut last_full_warning: Option<Instant> = None;
    let mut reading = true;
    loop {
        tokio::select! {
            datagrams = batching.recv(&socket, &mut received), if reading => match datagrams {
                Ok(datagrams) => {
                    let relay = Relay { socket: &socket, batching: &batching, settings: &settings, table: &table, stats: &stats, routes: &routes, local: local.as_deref(), cids: &cids };
                    for (client, datagram) in datagrams {
                        if !relay.forward(datagram, client, stop_by.is_some(), &mut pending).await {
                            continue;
                        }
                        // A new session was refused because the table is full.
                        let now = Instant::now();
                        if last_full_warning.is_none_or(|at| now - at >= Duration::from_secs(1)) {
                            last_full_warning = Some(now);
                            warn!(entrypoint = %settings.name, max_sessions = settings.max_sessions,
                                refused = stats.sessions_refused.load(Ordering::Relaxed),
                                "UDP session table full: new clients are refused until sessions expire");
                        }
                    }
                }
                // ICMP errors from earlier sends surface here on some systems; the socket
                // itself is fine.
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset) => {}
                Err(e) => {
                    warn!(entrypoint = %settings.name, error = %e, "UDP receive failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = sweep.tick() => {
                let now = Instant::now();
                let ended = {
                    let mut table = lock(&table);
                    let ended = table.expire(now);
                    gauge(&stats, &table);
                    ended
                };
                drop(ended);
                lock_cids(&cids).forget_ended();
                let late = pending.expire(now);
                if late > 0 {
                    stats.quic_flows_dropped.fetch_add(late as u64, Ordering::Relaxed);
                    debug!(entrypoint = %settings.name, flows = late, "QUIC flows dropped: no complete ClientHello in time");
                }
            }
            _ = stop_requested(&mut stop), if stop_by.is_none() => {
                reading = !settings.handed_over.as_ref().is_some_and(|h| h.load(Ordering::SeqCst));
                stop_by = Some(Instant::now() + settings.grace);
                wake_at = stop_by;
            }
            _ = sleep_until(wake_at), if wake_at.is_some() => {}
        }
        if let Some(deadline) = stop_by {
            let now = Instant::now();
            let sessions_done = now >= deadline || lock(&table).is_empty();
            let local_deadline = deadline + settings.grace;
            // Without reading, local QUIC connections get no more packets: no use waiting.
            let local_done =
                !reading || local.as_ref().is_none_or(|l| !l.busy()) || now >= local_deadline;
            if sessions_done && local_done {
                break;
            }
            // Woken at each deadline still ahead; between them the sweep ticks look again.
            wake_at = [deadline, local_deadline].into_iter().find(|at| *at > now);
        }
    }
    let ended = lock(&table).drain();
    stats.sessions.store(0, Ordering::Relaxed);
    ended.len()
}

/// Resolves at `deadline` (never when there is none).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Resolves once `stop` is true (or its sender is gone). The guard `wait_for` returns is
/// dropped here, so the future stays `Send`.
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// What forwarding one datagram needs.
struct Relay<'a, R> {
    socket: &'a Arc<UdpSocket>,
    /// How `socket`, and every session's socket, is read and written.
    batching: &'a Arc<Batching>,
    settings: &'a UdpSettings,
    table: &'a Table,
    stats: &'a Arc<UdpStats>,
    routes: &'a R,
    local: Option<&'a dyn LocalQuic>,
    cids: &'a Cids,
}

/// Why a datagram from a new client started no session.
enum Refusal {
    /// The session table is full of active sessions.
    Full,
    /// No router, no server, or no socket to the backend: dropped and counted.
    Dropped,
}

impl<R: Fn() -> Arc<UdpRoutes>> Relay<'_, R> {
    /// Sends a client's datagram to its session's backend, starting the session if needed.
    /// Returns true when a new session was refused because the table is full.
    async fn forward(
        &self,
        datagram: &[u8],
        client: SocketAddr,
        stopping: bool,
        pending: &mut PendingFlows,
    ) -> bool {
        let now = Instant::now();
        let upstream = {
            let mut table = lock(self.table);
            let found = table
                .touch(&client, now)
                .map(|(session, _)| (session.upstream.clone(), session.counters.clone()));
            if found.is_none() {
                // `touch` ends a session it finds expired.
                gauge(self.stats, &table);
            }
            found
        };
        if let Some(upstream) = upstream.or_else(|| self.migrated(datagram, client, now)) {
            self.send_up(&upstream, datagram, client);
            return false;
        }
        if let Some(local) = self.local
            && addressed_to(local, datagram)
        {
            self.to_local(local, client, datagram);
            return false;
        }
        if stopping {
            self.stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let routes = (self.routes)();
        // A QUIC flow waits for its ClientHello when some router passes QUIC through by name;
        // without such a router, a new flow goes straight to the local endpoint if there is
        // one; anything else is routed at once.
        let waiting = pending.contains(&client);
        let initial = !waiting && matches!(classify(datagram), Classification::Initial { .. });
        if initial
            && !routes.has_quic()
            && let Some(local) = self.local
        {
            self.to_local(local, client, datagram);
            return false;
        }
        if waiting || (initial && routes.has_quic()) {
            let (hello, datagrams) = match pending.feed(client, datagram, now) {
                Feed::Wait => return false,
                Feed::Hello(hello, datagrams) => (hello, datagrams),
                Feed::Dropped(why) => {
                    self.stats
                        .quic_flows_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    self.stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
                    match why {
                        DropReason::Unreadable(e) => {
                            debug!(entrypoint = %self.settings.name, %client, error = %e, "QUIC flow dropped")
                        }
                        DropReason::TooManyWaiting => {
                            debug!(entrypoint = %self.settings.name, %client, "QUIC flow dropped: too many flows wait for their ClientHello")
                        }
                    }
                    return false;
                }
            };
            let route = routes.select(client.ip(), Some(&hello));
            // QUIC that no passthrough router takes is the local endpoint's, when there is one.
            if let Some(local) = self.local
                && !route.is_some_and(|route| route.quic)
            {
                for datagram in &datagrams {
                    self.to_local(local, client, datagram);
                }
                return false;
            }
            return match self.open(client, now, route, Some(&hello)).await {
                Ok(upstream) => {
                    for datagram in &datagrams {
                        self.send_up(&upstream, datagram, client);
                    }
                    false
                }
                Err(Refusal::Full) => true,
                Err(Refusal::Dropped) => false,
            };
        }
        let route = routes.select(client.ip(), None);
        if route.is_none()
            && let Some(local) = self.local
            && later_quic_packet(datagram)
            && local.foreign(client, datagram)
        {
            // Counted as the local endpoint's: an HTTP/3 endpoint of this router (the previous
            // process's) takes it.
            self.stats.datagrams_local.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match self.open(client, now, route, None).await {
            Ok(upstream) => {
                self.send_up(&upstream, datagram, client);
                false
            }
            Err(Refusal::Full) => true,
            Err(Refusal::Dropped) => false,
        }
    }

    /// The session of a passed-through QUIC connection whose client now sends from `client`
    /// (recognized by the backend's connection ID), moved to that address.
    fn migrated(&self, datagram: &[u8], client: SocketAddr, now: Instant) -> Option<Upstream> {
        let session = lock_cids(self.cids).find(datagram)?.clone();
        let from = session.get();
        let mut table = lock(self.table);
        table.rekey(&from, client, now)?;
        session.set(client);
        debug!(entrypoint = %self.settings.name, %from, to = %client, "QUIC session follows its client to a new address");
        table
            .touch(&client, now)
            .map(|(s, _)| (s.upstream.clone(), s.counters.clone()))
    }

    /// Hands a datagram to the local QUIC endpoint, counting it or its drop.
    fn to_local(&self, local: &dyn LocalQuic, client: SocketAddr, datagram: &[u8]) {
        let counter = if local.deliver(client, datagram) {
            &self.stats.datagrams_local
        } else {
            &self.stats.datagrams_dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A raw non-blocking send: a full buffer drops the datagram instead of stalling every
    /// other client behind it.
    fn send_up(&self, upstream: &Upstream, datagram: &[u8], client: SocketAddr) {
        match SockRef::from(&*upstream.0).send(datagram) {
            Ok(sent) => {
                upstream
                    .1
                    .bytes_in
                    .fetch_add(sent as u64, Ordering::Relaxed);
                upstream.1.datagrams_in.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
                debug!(entrypoint = %self.settings.name, %client, error = %e, "datagram to the backend dropped");
            }
        }
    }

    /// Starts a session for `client`: router, backend, socket, and the answers' task.
    async fn open(
        &self,
        client: SocketAddr,
        now: Instant,
        route: Option<&UdpRoute>,
        hello: Option<&InitialHello>,
    ) -> Result<Upstream, Refusal> {
        let dropped = |why: &dyn std::fmt::Display| {
            self.stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            debug!(entrypoint = %self.settings.name, %client, "UDP datagram dropped: {why}");
            Refusal::Dropped
        };
        let refused = || {
            self.stats.sessions_refused.fetch_add(1, Ordering::Relaxed);
            self.stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            Refusal::Full
        };
        {
            // Checked before opening a socket in vain; the insert below checks again.
            let mut table = lock(self.table);
            if table.len() >= table.capacity() {
                table.sweep_if_due(now);
                gauge(self.stats, &table);
                if table.len() >= table.capacity() {
                    return Err(refused());
                }
            }
        }
        let Some(route) = route else {
            return Err(dropped(&"no UDP router takes this client"));
        };
        let Some(server) = route.service.pick(client.ip()) else {
            return Err(dropped(&format_args!(
                "service of router {} has no server",
                route.name
            )));
        };
        let backend = resolve(&server)
            .await
            .map_err(|e| dropped(&format_args!("cannot resolve {server}: {e}")))?;
        let upstream = connect(backend)
            .map_err(|e| dropped(&format_args!("cannot open a socket to {backend}: {e}")))?;
        let (stop_replies, stopped) = oneshot::channel();
        let counters = Arc::new(Counters::default());
        let session = Session {
            upstream: upstream.clone(),
            counters: counters.clone(),
            _stop_replies: stop_replies,
        };
        let id = {
            let mut table = lock(self.table);
            let idle = match hello {
                Some(_) => QUIC_IDLE_TIMEOUT,
                None => table.idle_timeout(),
            };
            let id = table.insert_idle(client, session, now, idle);
            gauge(self.stats, &table);
            id.map_err(|_| refused())?
        };
        self.stats.sessions_opened.fetch_add(1, Ordering::Relaxed);
        let sni = hello.and_then(|h| h.sni.as_deref());
        debug!(entrypoint = %self.settings.name, %client, router = %route.name, %backend, sni, "UDP session opened");
        let info = self.settings.observer.as_ref().map(|o| {
            o.0.opened(
                Transport::Udp,
                &self.settings.name,
                &route.name,
                &route.service_name,
            );
            SessionInfo {
                observer: o.0.clone(),
                entrypoint: self.settings.name.clone(),
                sni: sni.map(Arc::from),
                router: route.name.clone(),
                service: route.service_name.clone(),
                backend: backend.to_string(),
                started: (Instant::now(), SystemTime::now()),
            }
        });
        tokio::spawn(relay_answers(
            Answers {
                upstream: upstream.clone(),
                listener: self.socket.clone(),
                batching: self.batching.clone(),
                client: ClientAddr::new(client),
                id,
                table: self.table.clone(),
                stats: self.stats.clone(),
                // A passed-through QUIC flow can be followed to a new client address.
                cids: hello.map(|_| self.cids.clone()),
                counters: counters.clone(),
                info,
                retirement: route.retirement.clone(),
            },
            stopped,
        ));
        Ok((upstream, counters))
    }
}

/// The backend address of a server as written: an IP address and port, or a host name
/// resolved now (bounded by [`RESOLVE_TIMEOUT`]).
async fn resolve(server: &str) -> io::Result<SocketAddr> {
    if let Ok(addr) = server.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(server))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "resolution timed out"))??;
    found
        .into_iter()
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
}

/// A socket of its own for one session, connected to `backend`: the kernel then delivers
/// only that backend's answers to it.
fn connect(backend: SocketAddr) -> io::Result<Arc<UdpSocket>> {
    let local = match backend.ip() {
        IpAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        IpAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = std::net::UdpSocket::bind(local)?;
    socket.connect(backend)?;
    socket.set_nonblocking(true)?;
    Ok(Arc::new(UdpSocket::from_std(socket)?))
}

/// What the task relaying one session's answers holds.
struct Answers {
    upstream: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    batching: Arc<Batching>,
    /// Where answers go: the client's address, moved when a QUIC client migrates.
    client: Arc<ClientAddr>,
    id: u64,
    table: Table,
    stats: Arc<UdpStats>,
    /// Where a QUIC session teaches the backend's connection ID, until it is learned.
    cids: Option<Cids>,
    counters: Arc<Counters>,
    /// For the record told to the observer when the session ends.
    info: Option<SessionInfo>,
    /// The router's: the session ends when a reload has retired it and the drain is over.
    retirement: Retirement,
}

/// Sends the backend's datagrams to the client from the entrypoint's socket, until the
/// session ends (its state dropped from the table: `stopped` resolves) or the backend's
/// socket fails (an ICMP "port unreachable", say), which ends the session so that the
/// client's next datagram starts a new one, possibly with another server.
async fn relay_answers(mut a: Answers, stopped: oneshot::Receiver<()>) {
    let reason = relay_answers_until_over(&mut a, stopped).await;
    if let Some(info) = &a.info {
        info.observer.closed(&ConnRecord {
            transport: Transport::Udp,
            entrypoint: info.entrypoint.clone(),
            client: a.client.get(),
            sni: info.sni.clone(),
            alpn: None,
            router: Some(info.router.clone()),
            service: Some(info.service.clone()),
            backend: Some(info.backend.clone()),
            bytes_in: a.counters.bytes_in.load(Ordering::Relaxed),
            bytes_out: a.counters.bytes_out.load(Ordering::Relaxed),
            datagrams_in: a.counters.datagrams_in.load(Ordering::Relaxed),
            datagrams_out: a.counters.datagrams_out.load(Ordering::Relaxed),
            started: info.started.1,
            duration: info.started.0.elapsed(),
            reason,
        });
    }
}

/// The body of [`relay_answers`]; returns why the session ended.
async fn relay_answers_until_over(
    a: &mut Answers,
    mut stopped: oneshot::Receiver<()>,
) -> CloseReason {
    // Read through the listener's batching (GRO lets a burst of answers share one buffer).
    a.batching.adopt(&a.upstream);
    let mut retired = std::pin::pin!(a.retirement.closing());
    let reason = loop {
        tokio::select! {
            // The session left the table: it idled out, or the relay stopped.
            _ = &mut stopped => return CloseReason::IdleTimeout,
            // A reload removed or changed the router, and the drain time is over.
            _ = &mut retired => {
                debug!(client = %a.client.get(), "UDP session closed: its router was retired by a reload");
                break CloseReason::Retired;
            }
            // ERROR too: an ICMP "port unreachable" raises only that, and must end the session.
            ready = a.upstream.ready(Interest::READABLE | Interest::ERROR) => match ready {
                // tokio's receive would see only "not readable" and never the error: read
                // it from the socket, and end the session.
                Ok(ready) if ready.is_error() => {
                    let error = a.upstream.take_error().ok().flatten();
                    debug!(client = %a.client.get(), error = ?error, "UDP backend socket failed; the session ends");
                    break CloseReason::BackendError(error.map_or(io::ErrorKind::Other, |e| e.kind()));
                }
                Ok(_) => {}
                Err(e) => break CloseReason::BackendError(e.kind()),
            },
        }
        let client = a.client.get();
        let relayed = REPLY_BUFFERS.with_borrow_mut(|buffers| {
            // A connected socket: every datagram is from the backend.
            let answers = a.batching.try_recv(&a.upstream, &mut buffers.received)?;
            let mut cids = a.cids.take();
            let counters = &a.counters;
            let answers = answers.map(|(_, answer)| {
                counters
                    .bytes_out
                    .fetch_add(answer.len() as u64, Ordering::Relaxed);
                counters.datagrams_out.fetch_add(1, Ordering::Relaxed);
                // A QUIC session learns the backend's connection ID from its first long header.
                if let Some(learning) = &cids
                    && lock_cids(learning).learn(answer, &a.client)
                {
                    cids = None;
                }
                answer
            });
            let sent = a
                .batching
                .send_to(&a.listener, client, answers, &mut buffers.gso);
            a.cids = cids;
            Ok::<_, io::Error>(sent)
        });
        match relayed {
            Ok(sent) => {
                if sent.dropped > 0 {
                    a.stats
                        .datagrams_dropped
                        .fetch_add(sent.dropped as u64, Ordering::Relaxed);
                }
                if !lock(&a.table).touch_id(&client, a.id, Instant::now()) {
                    return CloseReason::IdleTimeout;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                debug!(%client, error = %e, "UDP backend socket failed; the session ends");
                break CloseReason::BackendError(e.kind());
            }
        }
    };
    let mut table = lock(&a.table);
    if table.remove(&a.client.get(), a.id).is_some() {
        gauge(&a.stats, &table);
    }
    reason
}
