//! MySQL / MariaDB TLS negotiation (client/server protocol, "Connection Phase").
//!
//! A MySQL server speaks first: its HandshakeV10 packet carries its capabilities and the
//! authentication scramble. A client that wants TLS answers with a 32-byte SSLRequest
//! packet (its capabilities with `CLIENT_SSL`) and starts TLS at once; its login
//! (HandshakeResponse41) follows inside TLS.
//!
//! [`Front`]: the router synthesizes the greeting, advertising `CLIENT_SSL` and a
//! conservative set of capabilities every MySQL 5.7+ and MariaDB 10+ server has, reads
//! the SSLRequest and hands off; the bytes after it are the ClientHello. A client that
//! logs in without TLS gets an error packet.
//!
//! The scramble in the synthesized greeting is not the backend's, and the client mixes
//! it into its login. So the greeting names `caching_sha2_password` as the server's
//! plugin: a backend account with another plugin (`mysql_native_password`, `ed25519`…)
//! then asks the client to switch plugins, sending its own scramble, and the client
//! answers that; a MySQL 8 `caching_sha2_password` account fails the fast path and asks
//! for the full authentication, which a client in TLS answers with the password.
//!
//! [`Back`]: toward the backend the router reads the real greeting and checks that the
//! backend has what the client was promised. In passthrough mode it replays the client's
//! SSLRequest (there is no answer to wait for) so the client's TLS reaches a backend
//! ready for it. In termination mode the login comes out of the router's TLS and is
//! rewritten for the plaintext backend ([`backend_login`]): `CLIENT_SSL` cleared, the
//! sequence numbers shifted by the SSLRequest the backend never saw, and the auth data
//! emptied under a plugin name no server has, which forces the backend to ask for a
//! plugin switch with its own scramble ([`login_exchange_step`]).

use bytes::{Buf, Bytes, BytesMut};

use super::{BackError, BackStep, FrontError, FrontStep, Handoff, Mode};

/// Capability flags (MySQL `include/mysql_com.h`, MariaDB `include/mysql_com.h`).
pub const CLIENT_LONG_PASSWORD: u32 = 1;
pub const CLIENT_FOUND_ROWS: u32 = 1 << 1;
pub const CLIENT_LONG_FLAG: u32 = 1 << 2;
pub const CLIENT_CONNECT_WITH_DB: u32 = 1 << 3;
pub const CLIENT_LOCAL_FILES: u32 = 1 << 7;
pub const CLIENT_IGNORE_SPACE: u32 = 1 << 8;
pub const CLIENT_PROTOCOL_41: u32 = 1 << 9;
pub const CLIENT_INTERACTIVE: u32 = 1 << 10;
pub const CLIENT_SSL: u32 = 1 << 11;
pub const CLIENT_IGNORE_SIGPIPE: u32 = 1 << 12;
pub const CLIENT_TRANSACTIONS: u32 = 1 << 13;
pub const CLIENT_SECURE_CONNECTION: u32 = 1 << 15;
pub const CLIENT_MULTI_STATEMENTS: u32 = 1 << 16;
pub const CLIENT_MULTI_RESULTS: u32 = 1 << 17;
pub const CLIENT_PS_MULTI_RESULTS: u32 = 1 << 18;
pub const CLIENT_PLUGIN_AUTH: u32 = 1 << 19;
pub const CLIENT_CONNECT_ATTRS: u32 = 1 << 20;
pub const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;

/// What the synthesized greeting offers: long-standing capabilities only, so that any
/// backend has them (no compression, no session tracking, no EOF deprecation: a client
/// falls back to the older forms, which every server speaks). `CLIENT_LONG_PASSWORD`
/// is MariaDB's `CLIENT_MYSQL`: set, it keeps MariaDB clients from expecting MariaDB's
/// extended capabilities.
pub const ADVERTISED: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_LOCAL_FILES
    | CLIENT_IGNORE_SPACE
    | CLIENT_PROTOCOL_41
    | CLIENT_INTERACTIVE
    | CLIENT_SSL
    | CLIENT_IGNORE_SIGPIPE
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;

/// The server version the synthesized greeting announces. Clients pick SQL dialects by
/// version; 5.7 is the common ground of MySQL and MariaDB backends.
pub const SERVER_VERSION: &str = "5.7.99-Sallyport";

/// The plugin named in the synthesized greeting (see the module docs).
const GREETING_PLUGIN: &str = "caching_sha2_password";

/// The plugin named in a login rewritten for the backend: no server has it, so the
/// backend always asks the client to switch, with its own scramble.
const SWITCH_PLUGIN: &str = "sallyport_plugin_switch";

/// `utf8mb4_general_ci`: the client's own choice is in its login anyway.
const CHARSET: u8 = 45;
/// `SERVER_STATUS_AUTOCOMMIT`.
const STATUS_AUTOCOMMIT: u16 = 2;
/// Length of an SSLRequest payload (capabilities, max packet, charset, 23 filler bytes).
const SSL_REQUEST_LEN: usize = 32;
/// Most bytes of one packet read before TLS or during the login: greetings, logins and
/// auth exchanges are a few hundred bytes (connection attributes included).
pub const MAX_PACKET: usize = 64 * 1024;
/// The first byte of a TLS record: a client that starts TLS without an SSLRequest.
const TLS_HANDSHAKE: u8 = 0x16;

/// Packet markers in the login exchange.
const OK: u8 = 0x00;
const ERR: u8 = 0xFF;
const AUTH_MORE_DATA: u8 = 0x01;
/// `caching_sha2_password` fast authentication succeeded: an OK packet follows without
/// a client answer.
const FAST_AUTH_SUCCESS: u8 = 0x03;

/// The client's SSLRequest, replayed to a passthrough backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslRequest {
    payload: [u8; SSL_REQUEST_LEN],
}

impl SslRequest {
    pub fn capabilities(&self) -> u32 {
        let [a, b, c, d, ..] = self.payload;
        u32::from_le_bytes([a, b, c, d])
    }
}

/// Takes one packet (sequence number and payload) off `buf`. `Ok(None)`: incomplete.
pub fn take_packet(buf: &mut BytesMut, max: usize) -> Result<Option<(u8, Bytes)>, usize> {
    let [a, b, c, seq, ..] = buf[..] else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([a, b, c, 0]) as usize;
    if len > max {
        return Err(len);
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some((seq, buf.split_to(len).freeze())))
}

/// Frames `payload` as a packet with sequence number `seq`.
pub fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes();
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&[len[0], len[1], len[2], seq]);
    out.extend_from_slice(payload);
    out
}

/// An ERR packet (`ER_SECURE_TRANSPORT_REQUIRED`-like, SQLSTATE HY000).
fn error_packet(seq: u8, code: u16, message: &str) -> Vec<u8> {
    let mut payload = vec![ERR];
    payload.extend_from_slice(&code.to_le_bytes());
    payload.extend_from_slice(b"#HY000");
    payload.extend_from_slice(message.as_bytes());
    packet(seq, &payload)
}

/// The router as a MySQL server until the client's SSLRequest.
#[derive(Debug)]
pub struct Front {
    connection_id: u32,
    scramble: [u8; 20],
}

impl Front {
    /// `scramble`: 20 random bytes (made printable and non-zero here, as servers do).
    pub fn new(connection_id: u32, scramble: [u8; 20]) -> Front {
        Front {
            connection_id,
            scramble: scramble.map(|b| 0x21 + b % 0x5e),
        }
    }

    /// The HandshakeV10 packet, sequence number 0.
    pub fn greeting(&self) -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(SERVER_VERSION.as_bytes());
        p.push(0);
        p.extend_from_slice(&self.connection_id.to_le_bytes());
        p.extend_from_slice(&self.scramble[..8]);
        p.push(0);
        p.extend_from_slice(&(ADVERTISED as u16).to_le_bytes());
        p.push(CHARSET);
        p.extend_from_slice(&STATUS_AUTOCOMMIT.to_le_bytes());
        p.extend_from_slice(&((ADVERTISED >> 16) as u16).to_le_bytes());
        // Length of the whole scramble with its terminating zero.
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(&self.scramble[8..]);
        p.push(0);
        p.extend_from_slice(GREETING_PLUGIN.as_bytes());
        p.push(0);
        packet(0, &p)
    }

    pub fn receive(&mut self, buf: &mut BytesMut) -> FrontStep {
        if buf.first() == Some(&TLS_HANDSHAKE) {
            return close(Vec::new(), FrontError::TlsBeforeStarttls);
        }
        let (seq, payload) = match take_packet(buf, MAX_PACKET) {
            Ok(Some(p)) => p,
            Ok(None) => return FrontStep::NeedMore,
            Err(_) => return close(Vec::new(), FrontError::Malformed("MySQL packet (too long)")),
        };
        if seq != 1 || payload.len() < 4 {
            return close(Vec::new(), FrontError::Malformed("MySQL client packet"));
        }
        let caps = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
        if caps & CLIENT_SSL == 0 || payload.len() != SSL_REQUEST_LEN {
            return close(
                error_packet(2, 3159, "Connections must use TLS: connect with --ssl"),
                FrontError::NoTls("it logged in without an SSLRequest"),
            );
        }
        if caps & CLIENT_PROTOCOL_41 == 0 {
            return close(
                error_packet(2, 1251, "Client does not support the 4.1 protocol"),
                FrontError::Malformed("SSLRequest (no CLIENT_PROTOCOL_41)"),
            );
        }
        let mut request = [0u8; SSL_REQUEST_LEN];
        request.copy_from_slice(&payload);
        FrontStep::StartTls {
            reply: Vec::new(),
            handoff: Handoff::Mysql(SslRequest { payload: request }),
        }
    }
}

fn close(reply: Vec<u8>, reason: FrontError) -> FrontStep {
    FrontStep::Close { reply, reason }
}

/// The router as the MySQL client of the backend.
#[derive(Debug)]
pub struct Back {
    request: SslRequest,
    mode: Mode,
    greeted: bool,
}

impl Back {
    pub fn new(request: SslRequest, mode: Mode) -> Back {
        Back {
            request,
            mode,
            greeted: false,
        }
    }

    pub fn receive(&mut self, buf: &mut BytesMut) -> Result<BackStep, BackError> {
        if self.greeted {
            return if buf.is_empty() {
                Ok(BackStep::Ready)
            } else {
                Err(BackError::Unsolicited)
            };
        }
        let Some((_, greeting)) = take_packet(buf, MAX_PACKET).map_err(|_| BackError::TooLong)?
        else {
            return Ok(BackStep::NeedMore);
        };
        let caps = backend_capabilities(&greeting)?;
        let mut needed = self.request.capabilities() & ADVERTISED & !CLIENT_LONG_PASSWORD;
        if self.mode == Mode::Terminate {
            needed &= !CLIENT_SSL;
        }
        let missing = needed & !caps;
        if missing & CLIENT_SSL != 0 {
            return Err(BackError::Incompatible(
                "the MySQL server does not offer TLS (CLIENT_SSL)".into(),
            ));
        }
        if missing != 0 {
            return Err(BackError::Incompatible(format!(
                "the MySQL server lacks capabilities the client was offered: {missing:#x}"
            )));
        }
        self.greeted = true;
        match self.mode {
            Mode::Passthrough => Ok(BackStep::Send(packet(1, &self.request.payload))),
            Mode::Terminate => self.receive(buf),
        }
    }
}

/// The capability flags of a backend's HandshakeV10, or why it is not one.
fn backend_capabilities(greeting: &[u8]) -> Result<u32, BackError> {
    match greeting.first() {
        Some(&10) => {}
        Some(&ERR) => {
            return Err(BackError::Unexpected {
                expected: "a MySQL greeting",
                got: super::excerpt(greeting.get(9..).unwrap_or_default()),
            });
        }
        _ => {
            return Err(BackError::Unexpected {
                expected: "a MySQL protocol 10 greeting",
                got: super::excerpt(greeting),
            });
        }
    }
    let malformed = || BackError::Malformed("MySQL greeting");
    let version_end = greeting[1..]
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(malformed)?;
    // Connection id (4), scramble part 1 (8), filler (1), then the lower flags.
    let at = 1 + version_end + 1 + 4 + 8 + 1;
    let lower = greeting.get(at..at + 2).ok_or_else(malformed)?;
    // Character set (1) and status (2) come before the upper flags.
    let upper = greeting.get(at + 5..at + 7).unwrap_or(&[0, 0]);
    Ok(u32::from_le_bytes([lower[0], lower[1], upper[0], upper[1]]))
}

/// Rewrites a client's login (HandshakeResponse41, read from the router's TLS in
/// termination mode) for the plaintext backend: sequence number 1 instead of 2 (the
/// backend saw no SSLRequest), `CLIENT_SSL` cleared, and the auth data emptied under
/// [`SWITCH_PLUGIN`], so that the backend asks for a plugin switch with its own scramble.
pub fn backend_login(seq: u8, payload: &[u8]) -> Result<Vec<u8>, FrontError> {
    let malformed = || FrontError::Malformed("MySQL login packet");
    if seq != 2 || payload.len() < SSL_REQUEST_LEN + 2 {
        return Err(malformed());
    }
    let caps = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
    if caps & CLIENT_PLUGIN_AUTH == 0 || caps & CLIENT_SECURE_CONNECTION == 0 {
        // Without plugin authentication the client cannot follow a plugin switch.
        return Err(FrontError::Malformed(
            "MySQL login without CLIENT_PLUGIN_AUTH (client too old)",
        ));
    }
    let mut rest = &payload[SSL_REQUEST_LEN..];
    let user = take_cstr(&mut rest).ok_or_else(malformed)?;
    let auth_len = if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        take_lenenc(&mut rest).ok_or_else(malformed)?
    } else {
        let (&len, tail) = rest.split_first().ok_or_else(malformed)?;
        rest = tail;
        u64::from(len)
    };
    let auth_len = usize::try_from(auth_len).map_err(|_| malformed())?;
    rest = rest.get(auth_len..).ok_or_else(malformed)?;
    let database = if caps & CLIENT_CONNECT_WITH_DB != 0 {
        Some(take_cstr(&mut rest).ok_or_else(malformed)?)
    } else {
        None
    };
    // The client's plugin name is replaced; what follows (connection attributes) is kept.
    take_cstr(&mut rest).ok_or_else(malformed)?;

    let mut out = Vec::with_capacity(payload.len() + SWITCH_PLUGIN.len());
    out.extend_from_slice(&(caps & !CLIENT_SSL).to_le_bytes());
    out.extend_from_slice(&payload[4..SSL_REQUEST_LEN]);
    out.extend_from_slice(user);
    out.push(0);
    out.push(0); // no auth data (a length of 0 in either encoding)
    if let Some(db) = database {
        out.extend_from_slice(db);
        out.push(0);
    }
    out.extend_from_slice(SWITCH_PLUGIN.as_bytes());
    out.push(0);
    out.extend_from_slice(rest);
    Ok(packet(1, &out))
}

fn take_cstr<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let end = rest.iter().position(|&b| b == 0)?;
    let s = &rest[..end];
    *rest = &rest[end + 1..];
    Some(s)
}

/// A length-encoded integer (`int<lenenc>`).
fn take_lenenc(rest: &mut &[u8]) -> Option<u64> {
    let (&first, tail) = rest.split_first()?;
    let width = match first {
        0..=0xFA => {
            *rest = tail;
            return Some(u64::from(first));
        }
        0xFC => 2,
        0xFD => 3,
        0xFE => 8,
        _ => return None,
    };
    let bytes = tail.get(..width)?;
    *rest = &tail[width..];
    let mut value = [0u8; 8];
    value[..width].copy_from_slice(bytes);
    Some(u64::from_le_bytes(value))
}

/// What comes after a backend packet in the login exchange (termination mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginStep {
    /// The client answers this packet: relay one client packet to the backend.
    ClientAnswers,
    /// The backend speaks again (fast authentication succeeded: its OK follows).
    BackendAgain,
    /// OK or ERR: the login is over; relay bytes untouched from now on.
    Done,
}

/// Judges a backend packet of the login exchange.
pub fn login_exchange_step(payload: &[u8]) -> LoginStep {
    match payload {
        [OK, ..] | [ERR, ..] => LoginStep::Done,
        [AUTH_MORE_DATA, FAST_AUTH_SUCCESS] => LoginStep::BackendAgain,
        _ => LoginStep::ClientAnswers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAMBLE: [u8; 20] = *b"abcdefghijklmnopqrst";

    /// The SSLRequest of the `mariadb` 10.11 client (Connector/C 3.3), as captured.
    fn mariadb_ssl_request() -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&0x00bf_aa85u32.to_le_bytes());
        p.extend_from_slice(&0x0010_0000u32.to_le_bytes());
        p.push(33);
        p.extend_from_slice(&[0; 23]);
        packet(1, &p)
    }

    /// MariaDB 10.11's greeting (Debian 12), as captured: capabilities 0x81fffffe (MariaDB
    /// clears CLIENT_MYSQL, bit 0), then MariaDB's extended capabilities.
    fn mariadb_greeting() -> Vec<u8> {
        b"d\x00\x00\x00\n5.5.5-10.11.19-MariaDB-0+deb12u1\x00\x04\x00\x00\x001C;=bWk4\x00\xfe\xff\
          \x08\x02\x00\xff\x81\x15\x00\x00\x00\x00\x00\x00\x1d\x00\x00\x00aku*pv~74>|x\x00\
          mysql_native_password\x00"
            .to_vec()
    }

    #[test]
    fn the_greeting_offers_tls_and_names_the_plugin() {
        let greeting = Front::new(7, SCRAMBLE).greeting();
        let mut buf = BytesMut::from(&greeting[..]);
        let (seq, payload) = take_packet(&mut buf, MAX_PACKET).unwrap().unwrap();
        assert_eq!(seq, 0);
        assert!(buf.is_empty());
        assert_eq!(backend_capabilities(&payload), Ok(ADVERTISED));
        assert!(payload.starts_with(b"\x0a5.7.99-Sallyport\0\x07\0\0\0"));
        assert!(payload.ends_with(b"\0caching_sha2_password\0"));
        // The scramble is printable and never zero, in both parts.
        let scramble: Vec<u8> = payload[22..30]
            .iter()
            .chain(&payload[payload.len() - 35..payload.len() - 23])
            .copied()
            .collect();
        assert!(
            scramble.iter().all(|b| b.is_ascii_graphic()),
            "{scramble:?}"
        );
    }

    #[test]
    fn the_ssl_request_hands_off_and_keeps_the_client_hello() {
        let mut front = Front::new(1, SCRAMBLE);
        let mut buf = BytesMut::from(&mariadb_ssl_request()[..]);
        buf.extend_from_slice(&[0x16, 3, 1]);
        let FrontStep::StartTls { reply, handoff } = front.receive(&mut buf) else {
            panic!("no hand-off");
        };
        assert!(reply.is_empty(), "MySQL does not answer an SSLRequest");
        assert!(matches!(&handoff, Handoff::Mysql(r) if r.capabilities() == 0x00bf_aa85));
        assert_eq!(&buf[..], [0x16, 3, 1]);
    }

    #[test]
    fn a_login_without_tls_gets_an_error_packet() {
        let mut front = Front::new(1, SCRAMBLE);
        let mut login = vec![0x85, 0xa2, 0xbf, 0];
        login.extend_from_slice(&[0; 28]);
        login.extend_from_slice(b"bob\0\0");
        let mut buf = BytesMut::from(&packet(1, &login)[..]);
        let FrontStep::Close { reply, reason } = front.receive(&mut buf) else {
            panic!("not closed");
        };
        assert!(matches!(reason, FrontError::NoTls(_)));
        assert_eq!(&reply[3..5], [2, ERR]);
        assert!(String::from_utf8_lossy(&reply).contains("must use TLS"));
    }

    #[test]
    fn bad_first_packets_close() {
        for input in [
            vec![0x16, 3, 1, 0, 0x40],
            packet(0, &[0; 32]),
            vec![0xff, 0xff, 0xff, 1],
        ] {
            let mut buf = BytesMut::from(&input[..]);
            assert!(
                matches!(
                    Front::new(1, SCRAMBLE).receive(&mut buf),
                    FrontStep::Close { .. }
                ),
                "{input:?}"
            );
        }
        let mut buf = BytesMut::from(&mariadb_ssl_request()[..20]);
        assert_eq!(
            Front::new(1, SCRAMBLE).receive(&mut buf),
            FrontStep::NeedMore
        );
    }

    fn request() -> SslRequest {
        let Handoff::Mysql(r) = (match Front::new(1, SCRAMBLE)
            .receive(&mut BytesMut::from(&mariadb_ssl_request()[..]))
        {
            FrontStep::StartTls { handoff, .. } => handoff,
            other => panic!("{other:?}"),
        }) else {
            panic!("not MySQL")
        };
        r
    }

    #[test]
    fn passthrough_replays_the_ssl_request_after_the_real_greeting() {
        let mut back = Back::new(request(), Mode::Passthrough);
        let mut buf = BytesMut::from(&mariadb_greeting()[..10]);
        assert_eq!(back.receive(&mut buf), Ok(BackStep::NeedMore));
        buf = BytesMut::from(&mariadb_greeting()[..]);
        assert_eq!(
            back.receive(&mut buf),
            Ok(BackStep::Send(mariadb_ssl_request()))
        );
        assert_eq!(back.receive(&mut buf), Ok(BackStep::Ready));
    }

    #[test]
    fn backends_without_tls_or_with_errors_are_refused() {
        // A greeting like MariaDB's with CLIENT_SSL cleared (have_ssl = DISABLED).
        let mut greeting = mariadb_greeting();
        let at = 4 + 1 + 33 + 4 + 9;
        greeting[at + 1] &= !((CLIENT_SSL >> 8) as u8);
        let mut back = Back::new(request(), Mode::Passthrough);
        let err = back.receive(&mut BytesMut::from(&greeting[..]));
        assert_eq!(
            err,
            Err(BackError::Incompatible(
                "the MySQL server does not offer TLS (CLIENT_SSL)".into()
            ))
        );
        // ...which a terminating router does not need.
        let mut back = Back::new(request(), Mode::Terminate);
        assert_eq!(
            back.receive(&mut BytesMut::from(&greeting[..])),
            Ok(BackStep::Ready)
        );

        let blocked = error_packet(0, 1129, "Host '10.0.0.9' is blocked");
        let mut back = Back::new(request(), Mode::Terminate);
        let err = back.receive(&mut BytesMut::from(&blocked[..])).unwrap_err();
        assert!(err.to_string().contains("is blocked"), "{err}");

        let mut back = Back::new(request(), Mode::Terminate);
        let err = back.receive(&mut BytesMut::from(&b"SSH-2.0-OpenSSH\r\n"[..]));
        assert!(err.is_err());
    }

    /// A login of the `mariadb` client in the form Connector/C 3.3 sends it.
    fn mariadb_login(db: Option<&str>) -> Vec<u8> {
        let mut caps = 0x00bf_aa85u32;
        if db.is_some() {
            caps |= CLIENT_CONNECT_WITH_DB;
        }
        let mut p = caps.to_le_bytes().to_vec();
        p.extend_from_slice(&0x0010_0000u32.to_le_bytes());
        p.push(33);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(b"bob\0");
        p.push(32);
        p.extend_from_slice(&[0xAA; 32]);
        if let Some(db) = db {
            p.extend_from_slice(db.as_bytes());
            p.push(0);
        }
        p.extend_from_slice(b"caching_sha2_password\0");
        p.extend_from_slice(b"\x0c\x0c_client_name\x00");
        p
    }

    #[test]
    fn a_terminated_login_is_rewritten_to_force_a_plugin_switch() {
        let out = backend_login(2, &mariadb_login(Some("shop"))).unwrap();
        let mut buf = BytesMut::from(&out[..]);
        let (seq, payload) = take_packet(&mut buf, MAX_PACKET).unwrap().unwrap();
        assert_eq!(seq, 1);
        let caps = u32::from_le_bytes(payload[..4].try_into().unwrap());
        assert_eq!(caps & CLIENT_SSL, 0);
        assert_eq!(caps | CLIENT_SSL, 0x00bf_aa85 | CLIENT_CONNECT_WITH_DB);
        assert_eq!(
            &payload[32..],
            b"bob\0\0shop\0sallyport_plugin_switch\0\x0c\x0c_client_name\x00"
        );
        let out = backend_login(2, &mariadb_login(None)).unwrap();
        assert!(out.ends_with(b"bob\0\0sallyport_plugin_switch\0\x0c\x0c_client_name\x00"));
    }

    #[test]
    fn malformed_logins_are_refused() {
        let login = mariadb_login(None);
        assert!(backend_login(1, &login).is_err(), "wrong sequence number");
        assert!(backend_login(2, &login[..40]).is_err(), "truncated");
        let mut old = login.clone();
        old[2] &= !((CLIENT_PLUGIN_AUTH >> 16) as u8);
        assert!(backend_login(2, &old).is_err(), "no plugin auth");
        let mut lying = login;
        lying[36] = 0xFB;
        assert!(backend_login(2, &lying).is_err(), "bad length");
    }

    #[test]
    fn the_login_exchange_ends_at_ok_or_err() {
        assert_eq!(login_exchange_step(&[OK, 0, 0, 2, 0]), LoginStep::Done);
        assert_eq!(login_exchange_step(&[ERR, 0x15, 0x04]), LoginStep::Done);
        assert_eq!(
            login_exchange_step(b"\xfemysql_native_password\0scramble"),
            LoginStep::ClientAnswers
        );
        assert_eq!(
            login_exchange_step(&[AUTH_MORE_DATA, FAST_AUTH_SUCCESS]),
            LoginStep::BackendAgain
        );
        assert_eq!(
            login_exchange_step(&[AUTH_MORE_DATA, 4]),
            LoginStep::ClientAnswers
        );
    }

    #[test]
    fn length_encoded_integers() {
        let mut rest: &[u8] = &[0xFC, 0x10, 0x01, 9];
        assert_eq!(take_lenenc(&mut rest), Some(0x110));
        assert_eq!(rest, [9]);
        let mut rest: &[u8] = &[0xFB];
        assert_eq!(take_lenenc(&mut rest), None);
        let mut rest: &[u8] = &[0xFD, 1];
        assert_eq!(take_lenenc(&mut rest), None);
    }
}
