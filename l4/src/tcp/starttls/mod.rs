//! STARTTLS: protocols in which a client asks for TLS inside the plaintext protocol, so
//! that its ClientHello (and SNI) only comes after a short dialogue.
//!
//! For the server-first protocols (SMTP, IMAP, POP3, MySQL) the router plays the server
//! until the client asks for TLS ([`Front`]), reads the ClientHello that follows, and
//! only then knows the router and its backend. Toward the backend it plays the client
//! ([`Back`]): it reads the backend's greeting and, in passthrough mode, replays the
//! request for TLS so that the client's TLS reaches a backend ready for it; in
//! termination mode it only checks the greeting (the client, now in TLS, starts the
//! protocol afresh, as RFC 3207, 3501 and 2595 require after STARTTLS).
//!
//! Each protocol is a sans-IO state machine over a byte buffer (no sockets, no clocks),
//! bounded in line and packet size and in the number of commands it answers; [`greet`]
//! and [`prepare_backend`] are the thin I/O shells that add the time bounds. Postgres,
//! whose client speaks first, is handled by the dispatch itself ([`crate::sniff`]);
//! it appears here as a [`Protocol`] a router may declare.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

pub mod imap;
pub mod line;
pub mod mysql;
pub mod pop3;
pub mod smtp;

/// A protocol with a STARTTLS step, as a TCP router declares it (`tls.starttls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// The client speaks first (an SSLRequest), so it is recognised, not greeted.
    Postgres,
    Smtp,
    Imap,
    Pop3,
    Mysql,
}

impl Protocol {
    /// Whether the router must speak first (greet) for the client to ask for TLS.
    pub fn server_first(self) -> bool {
        !matches!(self, Protocol::Postgres)
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::Smtp => "smtp",
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
            Protocol::Mysql => "mysql",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Protocol::Postgres,
            Protocol::Smtp,
            Protocol::Imap,
            Protocol::Pop3,
            Protocol::Mysql,
        ]
        .into_iter()
        .find(|p| p.name().eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            format!("unknown STARTTLS protocol {s:?} (use postgres, smtp, imap, pop3 or mysql)")
        })
    }
}

/// Most commands a client may send before asking for TLS: enough for EHLO, CAPABILITY,
/// NOOP and a few mistakes, few enough that nobody chats with the router for long.
pub const MAX_COMMANDS: usize = 16;

/// Most bytes of the backend's greeting and replies before TLS (an EHLO reply lists a
/// dozen extensions in well under 1 KiB).
pub const MAX_BACKEND_REPLY: usize = 8 * 1024;

/// How long a backend may take to greet and answer the replayed request for TLS.
pub const BACKEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What the router does next in the client-facing dialogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontStep {
    /// Nothing complete in the buffer yet: read more.
    NeedMore,
    /// Write this answer, then go on reading commands.
    Reply(Vec<u8>),
    /// Write this answer; the client's next bytes are its TLS ClientHello.
    StartTls { reply: Vec<u8>, handoff: Handoff },
    /// Write this answer (it may be empty) and close the connection.
    Close { reply: Vec<u8>, reason: FrontError },
}

/// What the client-facing dialogue learnt that the backend dialogue needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handoff {
    /// The name the client gave in EHLO (or HELO), replayed to the backend.
    Smtp {
        helo: String,
    },
    /// The tag of the client's STARTTLS command, reused toward the backend.
    Imap {
        tag: String,
    },
    Pop3,
    /// The client's SSLRequest packet, replayed to a passthrough backend.
    Mysql(mysql::SslRequest),
}

/// Why the client-facing dialogue ended without TLS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrontError {
    #[error("command line longer than {0} bytes")]
    LineTooLong(usize),
    #[error(
        "the client started TLS without asking for it first (implicit TLS on a STARTTLS port?)"
    )]
    TlsBeforeStarttls,
    #[error("the client sent more data after {0} before its answer")]
    Pipelined(&'static str),
    #[error("{MAX_COMMANDS} commands without asking for TLS")]
    TooManyCommands,
    #[error("the client quit before asking for TLS")]
    Quit,
    #[error("the client did not ask for TLS: {0}")]
    NoTls(&'static str),
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// The client-facing half of a server-first STARTTLS dialogue.
#[derive(Debug)]
pub enum Front {
    Smtp(smtp::Front),
    Imap(imap::Front),
    Pop3(pop3::Front),
    Mysql(mysql::Front),
}

impl Front {
    /// The dialogue for `protocol` (`None` for Postgres, whose client speaks first).
    /// `local` is the address the client reached, named in greetings that want a host;
    /// `connection_id` and `scramble` (random bytes) go into the MySQL greeting.
    pub fn new(
        protocol: Protocol,
        local: IpAddr,
        connection_id: u32,
        scramble: [u8; 20],
    ) -> Option<Front> {
        Some(match protocol {
            Protocol::Postgres => return None,
            Protocol::Smtp => Front::Smtp(smtp::Front::new(local)),
            Protocol::Imap => Front::Imap(imap::Front::new()),
            Protocol::Pop3 => Front::Pop3(pop3::Front::new()),
            Protocol::Mysql => Front::Mysql(mysql::Front::new(connection_id, scramble)),
        })
    }

    /// What the router says as soon as the client is connected.
    pub fn greeting(&self) -> Vec<u8> {
        match self {
            Front::Smtp(f) => f.greeting(),
            Front::Imap(f) => f.greeting(),
            Front::Pop3(f) => f.greeting(),
            Front::Mysql(f) => f.greeting(),
        }
    }

    /// Consumes at most one command (or packet) from `buf`.
    pub fn receive(&mut self, buf: &mut BytesMut) -> FrontStep {
        match self {
            Front::Smtp(f) => f.receive(buf),
            Front::Imap(f) => f.receive(buf),
            Front::Pop3(f) => f.receive(buf),
            Front::Mysql(f) => f.receive(buf),
        }
    }
}

/// How the chosen router handles TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The backend terminates the client's TLS: ask it for TLS the way the client did.
    Passthrough,
    /// The router terminates TLS and speaks plaintext to the backend.
    Terminate,
}

/// What the router does next in the backend dialogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackStep {
    NeedMore,
    /// Write these bytes to the backend, then go on reading.
    Send(Vec<u8>),
    /// The backend is where the client expects it: relay from now on.
    Ready,
}

/// Why a backend dialogue failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackError {
    #[error("reply longer than {MAX_BACKEND_REPLY} bytes")]
    TooLong,
    #[error("expected {expected}, got {got:?}")]
    Unexpected { expected: &'static str, got: String },
    #[error("the server does not offer STARTTLS")]
    NoStarttls,
    #[error("the server sent data before it was asked anything")]
    Unsolicited,
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("{0}")]
    Incompatible(String),
}

/// The router as the client of the backend, up to the point where the client's bytes
/// can be relayed.
#[derive(Debug)]
pub enum Back {
    Smtp(smtp::Back),
    Imap(imap::Back),
    Pop3(pop3::Back),
    Mysql(mysql::Back),
}

impl Back {
    pub fn new(handoff: &Handoff, mode: Mode) -> Back {
        match handoff {
            Handoff::Smtp { helo } => Back::Smtp(smtp::Back::new(helo, mode)),
            Handoff::Imap { tag } => Back::Imap(imap::Back::new(tag, mode)),
            Handoff::Pop3 => Back::Pop3(pop3::Back::new(mode)),
            Handoff::Mysql(request) => Back::Mysql(mysql::Back::new(request.clone(), mode)),
        }
    }

    /// Consumes at most one reply (or packet) from `buf`.
    pub fn receive(&mut self, buf: &mut BytesMut) -> Result<BackStep, BackError> {
        match self {
            Back::Smtp(b) => b.receive(buf),
            Back::Imap(b) => b.receive(buf),
            Back::Pop3(b) => b.receive(buf),
            Back::Mysql(b) => b.receive(buf),
        }
    }
}

/// Why a dialogue (client or backend side) did not get to TLS.
#[derive(Debug, thiserror::Error)]
pub enum DialogueError {
    #[error(transparent)]
    Client(#[from] FrontError),
    #[error("backend: {0}")]
    Backend(#[from] BackError),
    #[error("the peer closed the connection")]
    Closed,
    #[error("timed out")]
    Timeout,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Greets the client and answers it until it asks for TLS. On success `buf` holds what
/// the client sent after its request for TLS (the start of its ClientHello, for MySQL;
/// nothing for the line protocols, which refuse pipelining there).
pub async fn greet<S>(
    client: &mut S,
    buf: &mut BytesMut,
    front: &mut Front,
    deadline: Instant,
) -> Result<Handoff, DialogueError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within(deadline, client.write_all(&front.greeting())).await??;
    loop {
        match front.receive(buf) {
            FrontStep::NeedMore => read_more(client, buf, deadline).await?,
            FrontStep::Reply(reply) => within(deadline, client.write_all(&reply)).await??,
            FrontStep::StartTls { reply, handoff } => {
                within(deadline, client.write_all(&reply)).await??;
                return Ok(handoff);
            }
            FrontStep::Close { reply, reason } => {
                // The answer is a courtesy: the reason is what gets logged.
                let _ = within(deadline, client.write_all(&reply)).await;
                return Err(reason.into());
            }
        }
    }
}

/// Runs the backend dialogue of `back` on a freshly dialled backend, within
/// [`BACKEND_TIMEOUT`].
pub async fn prepare_backend<S>(backend: &mut S, back: &mut Back) -> Result<(), DialogueError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Instant::now() + BACKEND_TIMEOUT;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        match back.receive(&mut buf)? {
            BackStep::NeedMore => {
                if buf.len() > MAX_BACKEND_REPLY {
                    return Err(BackError::TooLong.into());
                }
                read_more(backend, &mut buf, deadline).await?
            }
            BackStep::Send(bytes) => within(deadline, backend.write_all(&bytes)).await??,
            BackStep::Ready => return Ok(()),
        }
    }
}

/// Most packets of a MySQL login exchange (plugin switch, more data, answers): real
/// exchanges take two to four.
const MAX_LOGIN_PACKETS: usize = 16;

/// Termination mode, MySQL: reads the client's login from the router's TLS, rewrites it
/// for the plaintext backend ([`mysql::backend_login`]) and relays the login exchange,
/// shifting sequence numbers by one each way, until the backend's OK or ERR. Within
/// [`BACKEND_TIMEOUT`].
pub async fn mysql_login<C, B>(client: &mut C, backend: &mut B) -> Result<(), DialogueError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Instant::now() + BACKEND_TIMEOUT;
    let (mut from_client, mut from_backend) = (BytesMut::new(), BytesMut::new());
    let (seq, login) = client_packet(client, &mut from_client, deadline).await?;
    let login = mysql::backend_login(seq, &login)?;
    within(deadline, backend.write_all(&login)).await??;
    let mut packets = 0;
    while packets < MAX_LOGIN_PACKETS {
        packets += 1;
        let (seq, payload) = loop {
            match mysql::take_packet(&mut from_backend, mysql::MAX_PACKET) {
                Ok(Some(p)) => break p,
                Ok(None) => read_more(backend, &mut from_backend, deadline).await?,
                Err(_) => return Err(BackError::TooLong.into()),
            }
        };
        let reply = mysql::packet(seq.wrapping_add(1), &payload);
        within(deadline, client.write_all(&reply)).await??;
        match mysql::login_exchange_step(&payload) {
            mysql::LoginStep::Done => {
                // Whatever either side sent beyond the login belongs to the relay.
                within(deadline, client.write_all(&from_backend)).await??;
                within(deadline, backend.write_all(&from_client)).await??;
                return Ok(());
            }
            mysql::LoginStep::BackendAgain => {}
            mysql::LoginStep::ClientAnswers => {
                let (seq, answer) = client_packet(client, &mut from_client, deadline).await?;
                let answer = mysql::packet(seq.wrapping_sub(1), &answer);
                within(deadline, backend.write_all(&answer)).await??;
            }
        }
    }
    Err(BackError::Malformed("MySQL login exchange (too many packets)").into())
}

async fn client_packet<C: AsyncRead + Unpin>(
    client: &mut C,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<(u8, bytes::Bytes), DialogueError> {
    loop {
        match mysql::take_packet(buf, mysql::MAX_PACKET) {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => read_more(client, buf, deadline).await?,
            Err(_) => return Err(FrontError::Malformed("MySQL packet (too long)").into()),
        }
    }
}

async fn within<F: std::future::Future>(
    deadline: Instant,
    f: F,
) -> Result<F::Output, DialogueError> {
    tokio::time::timeout_at(deadline, f)
        .await
        .map_err(|_| DialogueError::Timeout)
}

async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<(), DialogueError> {
    buf.reserve(1024);
    match within(deadline, stream.read_buf(buf)).await?? {
        0 => Err(DialogueError::Closed),
        _ => Ok(()),
    }
}

/// A short, printable excerpt of peer bytes for a log line.
fn excerpt(bytes: &[u8]) -> String {
    const MAX: usize = 80;
    let mut out: String = bytes
        .iter()
        .take(MAX)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.len() > MAX {
        out.push('…');
    }
    out
}

/// Feeds `input` to a client dialogue until it stops answering with replies: what it said,
/// and the step it stopped at (the text protocols' unit tests).
#[cfg(test)]
fn replies_to(
    input: &[u8],
    mut receive: impl FnMut(&mut BytesMut) -> FrontStep,
) -> (String, FrontStep) {
    let mut buf = BytesMut::from(input);
    let mut said = String::new();
    loop {
        match receive(&mut buf) {
            FrontStep::Reply(r) => said.push_str(&String::from_utf8_lossy(&r)),
            other => return (said, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_case_insensitively_and_only_postgres_is_client_first() {
        assert_eq!("SMTP".parse::<Protocol>(), Ok(Protocol::Smtp));
        assert_eq!("mysql".parse::<Protocol>(), Ok(Protocol::Mysql));
        assert!("ldap".parse::<Protocol>().is_err());
        assert!(!Protocol::Postgres.server_first());
        assert!(Protocol::Pop3.server_first());
        assert!(Front::new(Protocol::Postgres, [127, 0, 0, 1].into(), 1, [0; 20]).is_none());
    }

    #[test]
    fn excerpts_are_short_and_printable() {
        assert_eq!(excerpt(b"250 OK\r\n"), "250 OK\\r\\n");
        let long = excerpt(&[b'a'; 200]);
        assert!(long.ends_with('…') && long.len() < 90);
    }

    #[tokio::test]
    async fn greet_answers_until_the_client_asks_for_tls() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let mut front = Front::new(Protocol::Pop3, [127, 0, 0, 1].into(), 1, [0; 20]).unwrap();
        let talk = async {
            let mut buf = BytesMut::new();
            let deadline = Instant::now() + Duration::from_secs(5);
            greet(&mut server, &mut buf, &mut front, deadline).await
        };
        let peer = async {
            client.write_all(b"CAPA\r\nSTLS\r\n").await.unwrap();
            let mut seen = Vec::new();
            while !seen.ends_with(b"Begin TLS negotiation\r\n") {
                let mut chunk = [0u8; 256];
                let n = client.read(&mut chunk).await.unwrap();
                assert!(n > 0);
                seen.extend_from_slice(&chunk[..n]);
            }
            String::from_utf8(seen).unwrap()
        };
        let (handoff, seen) = tokio::join!(talk, peer);
        assert_eq!(handoff.unwrap(), Handoff::Pop3);
        assert!(seen.starts_with("+OK"), "{seen}");
        assert!(seen.contains("\r\nSTLS\r\n.\r\n"), "{seen}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_times_out() {
        let (_client, mut server) = tokio::io::duplex(4096);
        let mut front = Front::new(Protocol::Smtp, [127, 0, 0, 1].into(), 1, [0; 20]).unwrap();
        let mut buf = BytesMut::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = greet(&mut server, &mut buf, &mut front, deadline)
            .await
            .unwrap_err();
        assert!(matches!(err, DialogueError::Timeout), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_that_never_greets_times_out() {
        let (_peer, mut backend) = tokio::io::duplex(4096);
        let handoff = Handoff::Pop3;
        let mut back = Back::new(&handoff, Mode::Passthrough);
        let err = prepare_backend(&mut backend, &mut back).await.unwrap_err();
        assert!(matches!(err, DialogueError::Timeout), "{err}");
    }

    #[tokio::test]
    async fn a_backend_that_closes_is_reported() {
        let (peer, mut backend) = tokio::io::duplex(4096);
        drop(peer);
        let mut back = Back::new(&Handoff::Pop3, Mode::Terminate);
        let err = prepare_backend(&mut backend, &mut back).await.unwrap_err();
        assert!(matches!(err, DialogueError::Closed), "{err}");
    }
}
