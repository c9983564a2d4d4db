//! First-bytes sniffing: reads a TLS ClientHello (SNI and ALPN) or a Postgres SSLRequest
//! from the bytes a client has sent so far.
//!
//! Everything here is a pure function over a byte slice: no I/O, no clocks, no state kept
//! between calls. The caller reads into a buffer (capped at [`MAX_CLIENT_HELLO`]), calls
//! again after every read while the answer is `Ok(None)` / [`Probe::NeedMore`], and replays
//! the buffered bytes afterwards (see `l4::io::PrefixedIo`). Record and handshake framing is
//! checked here; the ClientHello body is decoded by `tls-parser`.

use std::borrow::Cow;

use tls_parser::{
    SNIType, TlsExtension, TlsMessage, TlsMessageHandshake, parse_tls_extension_alpn_content,
    parse_tls_extension_sni_content, parse_tls_message_handshake,
};

/// Most bytes the sniffer asks a caller to buffer. A ClientHello with a post-quantum key
/// share is about 2 KB; 32 KiB leaves room for a 16 KiB hello (a full record, RFC 8446 §5.1)
/// spread over several records, while bounding what one unauthenticated peer can make us hold.
pub const MAX_CLIENT_HELLO: usize = 32 * 1024;

/// The eight bytes of a Postgres SSLRequest: length 8, then the code 80877103
/// (PostgreSQL protocol docs, "SSL Session Encryption").
pub const PG_SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F];

/// TLS record content type `handshake` (RFC 8446 §5.1).
const CONTENT_TYPE_HANDSHAKE: u8 = 0x16;
/// An SSLv2-compatible ClientHello starts with a two-byte length whose top bit is set
/// (RFC 5246 appendix E.2); like Traefik, we count it as TLS and look no further.
const SSLV2_FIRST_BYTE: u8 = 0x80;
const RECORD_HEADER_LEN: usize = 5;
/// A plaintext record carries at most 2^14 bytes (RFC 8446 §5.1).
const MAX_RECORD_PAYLOAD: usize = 1 << 14;
const HANDSHAKE_HEADER_LEN: usize = 4;
const HANDSHAKE_TYPE_CLIENT_HELLO: u8 = 1;
/// Extension numbers from RFC 6066 §3 (server_name) and RFC 7301 §3.1 (ALPN).
const EXTENSION_SERVER_NAME: u16 = 0;
const EXTENSION_ALPN: u16 = 16;

/// What a ClientHello says about where the client wants to go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` server name, lower-cased and without a trailing dot; `None` when the
    /// client sent none (or an empty one).
    pub sni: Option<String>,
    /// The ALPN protocol names the client offered, in its order of preference.
    pub alpn: Vec<Vec<u8>>,
}

/// Why the bytes cannot be read as a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SniffError {
    #[error(
        "not TLS: the first byte is neither a handshake record (0x16) nor an SSLv2 hello (0x80)"
    )]
    NotTls,
    #[error("malformed TLS ClientHello: {0}")]
    Malformed(&'static str),
    #[error("TLS ClientHello larger than {MAX_CLIENT_HELLO} bytes")]
    TooLarge,
}

/// Whether a connection whose first byte is `first_byte` should be treated as TLS.
pub fn looks_like_tls(first_byte: u8) -> bool {
    matches!(first_byte, CONTENT_TYPE_HANDSHAKE | SSLV2_FIRST_BYTE)
}

/// Reads the ClientHello at the start of `buf`.
///
/// `Ok(None)` means every byte so far is consistent with a ClientHello and more are needed;
/// any strict prefix of a valid hello gives `Ok(None)`. Bytes after the hello are ignored.
pub fn client_hello(buf: &[u8]) -> Result<Option<ClientHello>, SniffError> {
    match buf.first() {
        None => return Ok(None),
        Some(&SSLV2_FIRST_BYTE) => return Ok(Some(ClientHello::default())),
        Some(&CONTENT_TYPE_HANDSHAKE) => {}
        Some(_) => return Err(SniffError::NotTls),
    }
    match first_handshake_message(buf)? {
        Some(message) => parse_client_hello(&message).map(Some),
        // Many tiny records can carry a small hello in a large buffer: stop waiting somewhere.
        None if buf.len() >= MAX_CLIENT_HELLO => Err(SniffError::TooLarge),
        None => Ok(None),
    }
}

/// Reads a complete ClientHello handshake message (its 4-byte header included) that arrived
/// outside TLS records, as QUIC carries it in CRYPTO frames (RFC 9001 §4.1.3).
///
/// The caller frames the message: `message` must hold exactly one handshake message whose
/// length field matches the bytes given.
pub fn client_hello_message(message: &[u8]) -> Result<ClientHello, SniffError> {
    let [kind, a, b, c, body @ ..] = message else {
        return Err(SniffError::Malformed("truncated handshake header"));
    };
    if *kind != HANDSHAKE_TYPE_CLIENT_HELLO {
        return Err(SniffError::Malformed(
            "first handshake message is not a ClientHello",
        ));
    }
    if u32::from_be_bytes([0, *a, *b, *c]) as usize != body.len() {
        return Err(SniffError::Malformed(
            "handshake length does not match the message",
        ));
    }
    parse_client_hello(message)
}

/// Gathers the first handshake message, which may span several handshake records
/// (RFC 8446 §5.1). Borrows from `buf` when one record holds it all.
fn first_handshake_message(buf: &[u8]) -> Result<Option<Cow<'_, [u8]>>, SniffError> {
    let mut rest = buf;
    let mut message: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    loop {
        if rest.first().is_some_and(|&t| t != CONTENT_TYPE_HANDSHAKE) {
            return Err(SniffError::Malformed(
                "ClientHello continues in a record that is not a handshake record",
            ));
        }
        // The legacy record version is 3.x for every TLS version (RFC 8446 §5.1, appendix D).
        if rest.get(1).is_some_and(|&major| major != 3) {
            return Err(SniffError::Malformed("record version is not 3.x"));
        }
        let Some(header) = rest.get(..RECORD_HEADER_LEN) else {
            return Ok(None);
        };
        let record_len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if record_len == 0 {
            return Err(SniffError::Malformed("empty handshake record"));
        }
        if record_len > MAX_RECORD_PAYLOAD {
            return Err(SniffError::Malformed("record longer than 2^14 bytes"));
        }
        let after_header = &rest[RECORD_HEADER_LEN..];
        let fragment = &after_header[..record_len.min(after_header.len())];
        append(&mut message, fragment);

        // Judge the handshake header as soon as it is here, so that a bad peer is turned
        // away before we wait for (or buffer) the rest.
        if message
            .first()
            .is_some_and(|&t| t != HANDSHAKE_TYPE_CLIENT_HELLO)
        {
            return Err(SniffError::Malformed(
                "first handshake message is not a ClientHello",
            ));
        }
        if let [_, a, b, c, ..] = message[..] {
            let total = HANDSHAKE_HEADER_LEN + u32::from_be_bytes([0, a, b, c]) as usize;
            if total > MAX_CLIENT_HELLO {
                return Err(SniffError::TooLarge);
            }
            if message.len() >= total {
                truncate(&mut message, total);
                return Ok(Some(message));
            }
        }
        if fragment.len() < record_len {
            return Ok(None);
        }
        rest = &after_header[record_len..];
    }
}

fn append<'a>(message: &mut Cow<'a, [u8]>, fragment: &'a [u8]) {
    if message.is_empty() {
        *message = Cow::Borrowed(fragment);
    } else {
        message.to_mut().extend_from_slice(fragment);
    }
}

fn truncate(message: &mut Cow<'_, [u8]>, len: usize) {
    match message {
        Cow::Borrowed(bytes) => *bytes = &bytes[..len],
        Cow::Owned(bytes) => bytes.truncate(len),
    }
}

/// Decodes a complete ClientHello handshake message (header included).
fn parse_client_hello(message: &[u8]) -> Result<ClientHello, SniffError> {
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)))) =
        parse_tls_message_handshake(message)
    else {
        return Err(SniffError::Malformed("ClientHello body does not parse"));
    };
    let mut out = ClientHello::default();
    // A hello without an extensions block (pre-TLS 1.2 clients) has no SNI and no ALPN.
    let mut extensions = hello.ext.unwrap_or_default();
    let (mut seen_sni, mut seen_alpn) = (false, false);
    // Extension framing (RFC 8446 §4.2) is walked here rather than with tls-parser's list
    // parser, which stops silently at the first extension it cannot decode.
    while !extensions.is_empty() {
        let [t0, t1, l0, l1, rest @ ..] = extensions else {
            return Err(SniffError::Malformed("truncated extension header"));
        };
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let Some(data) = rest.get(..len) else {
            return Err(SniffError::Malformed(
                "extension runs past the extensions block",
            ));
        };
        extensions = &rest[len..];
        // Two of the same extension are forbidden (RFC 8446 §4.2); for SNI it would also
        // make routing ambiguous.
        match u16::from_be_bytes([*t0, *t1]) {
            EXTENSION_SERVER_NAME if seen_sni => {
                return Err(SniffError::Malformed("duplicate server_name extension"));
            }
            EXTENSION_SERVER_NAME => {
                seen_sni = true;
                out.sni = server_name(data)?;
            }
            EXTENSION_ALPN if seen_alpn => {
                return Err(SniffError::Malformed("duplicate ALPN extension"));
            }
            EXTENSION_ALPN => {
                seen_alpn = true;
                out.alpn = alpn_protocols(data)?;
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The `host_name` entry of a server_name extension (RFC 6066 §3), normalised the way
/// `HostSNI` compares names: lower case, no trailing dot.
fn server_name(data: &[u8]) -> Result<Option<String>, SniffError> {
    let Ok((_, TlsExtension::SNI(names))) = parse_tls_extension_sni_content(data) else {
        return Err(SniffError::Malformed(
            "server_name extension does not parse",
        ));
    };
    let Some((_, name)) = names.iter().find(|(kind, _)| *kind == SNIType::HostName) else {
        return Ok(None);
    };
    if !name.is_ascii() {
        return Err(SniffError::Malformed("server name is not ASCII"));
    }
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        name.to_ascii_lowercase()
            .into_iter()
            .map(char::from)
            .collect(),
    ))
}

/// The protocol names of an ALPN extension (RFC 7301 §3.1).
fn alpn_protocols(data: &[u8]) -> Result<Vec<Vec<u8>>, SniffError> {
    let Ok((_, TlsExtension::ALPN(names))) = parse_tls_extension_alpn_content(data) else {
        return Err(SniffError::Malformed("ALPN extension does not parse"));
    };
    Ok(names.into_iter().map(<[u8]>::to_vec).collect())
}

/// Result of comparing the bytes seen so far against a fixed preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Match,
    NeedMore,
    NoMatch,
}

/// Whether `buf` starts with a Postgres SSLRequest, judging only the bytes available.
pub fn postgres_ssl_request(buf: &[u8]) -> Probe {
    let seen = buf.len().min(PG_SSL_REQUEST.len());
    if buf[..seen] != PG_SSL_REQUEST[..seen] {
        Probe::NoMatch
    } else if seen < PG_SSL_REQUEST.len() {
        Probe::NeedMore
    } else {
        Probe::Match
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROMIUM: &[u8] = include_bytes!("../testdata/tls/chromium-156-tcp-clienthello.bin");
    const CHROMIUM_3READS: &[u8] =
        include_bytes!("../testdata/tls/chromium-156-tcp-clienthello-3reads.bin");
    const FIREFOX: &[u8] = include_bytes!("../testdata/tls/firefox-esr-153-tcp-clienthello.bin");
    const CURL: &[u8] =
        include_bytes!("../testdata/tls/curl-7.88.1-openssl-3.0.22-tcp-clienthello.bin");
    const S_CLIENT: &[u8] =
        include_bytes!("../testdata/tls/openssl-3.0.22-s_client-tcp-clienthello.bin");
    const S_CLIENT_2RECORDS: &[u8] =
        include_bytes!("../testdata/tls/openssl-3.0.22-s_client-tcp-clienthello-2records.bin");
    const PYTHON: &[u8] =
        include_bytes!("../testdata/tls/python-3.11.7-ssl-openssl-3.0.22-tcp-clienthello.bin");

    const VECTORS: [(&str, &[u8]); 7] = [
        ("chromium", CHROMIUM),
        ("chromium-3reads", CHROMIUM_3READS),
        ("firefox", FIREFOX),
        ("curl", CURL),
        ("s_client", S_CLIENT),
        ("s_client-2records", S_CLIENT_2RECORDS),
        ("python", PYTHON),
    ];

    fn a_test() -> ClientHello {
        ClientHello {
            sni: Some("a.test".to_owned()),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }

    /// A one-record ClientHello (TLS 1.2 layout) carrying the given extensions block.
    fn hello_with_extensions(extensions: &[u8]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]); // random
        body.push(0); // no session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(extensions);
        let mut message = vec![HANDSHAKE_TYPE_CLIENT_HELLO];
        message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend_from_slice(&body);
        let mut record = vec![CONTENT_TYPE_HANDSHAKE, 3, 1];
        record.extend_from_slice(&(message.len() as u16).to_be_bytes());
        record.extend_from_slice(&message);
        record
    }

    fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        out
    }

    fn sni_extension(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![0];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name);
        let mut list = (entry.len() as u16).to_be_bytes().to_vec();
        list.extend_from_slice(&entry);
        extension(EXTENSION_SERVER_NAME, &list)
    }

    #[test]
    fn every_captured_hello_yields_sni_and_alpn() {
        for (name, bytes) in VECTORS {
            assert_eq!(client_hello(bytes), Ok(Some(a_test())), "{name}");
        }
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        for (name, bytes) in VECTORS {
            for len in 0..bytes.len() {
                assert_eq!(client_hello(&bytes[..len]), Ok(None), "{name} cut at {len}");
            }
        }
    }

    #[test]
    fn mtu_sized_segments_are_incomplete_until_the_last() {
        for (name, bytes) in VECTORS {
            for cut in (1448..bytes.len()).step_by(1448) {
                assert_eq!(client_hello(&bytes[..cut]), Ok(None), "{name} cut at {cut}");
            }
        }
    }

    #[test]
    fn chromium_read_boundaries_are_incomplete_until_the_last() {
        assert_eq!(CHROMIUM_3READS.len(), 1152 + 576 + 282);
        assert_eq!(client_hello(&CHROMIUM_3READS[..1152]), Ok(None));
        assert_eq!(client_hello(&CHROMIUM_3READS[..1152 + 576]), Ok(None));
        assert_eq!(client_hello(CHROMIUM_3READS), Ok(Some(a_test())));
    }

    #[test]
    fn hello_split_across_records_matches_the_single_record_hello() {
        assert_eq!(client_hello(S_CLIENT_2RECORDS), client_hello(S_CLIENT));
        // The cut falls inside the host name: the first record alone must not yield "a.".
        assert_eq!(client_hello(&S_CLIENT_2RECORDS[..5 + 150]), Ok(None));
    }

    #[test]
    fn bytes_after_the_hello_are_ignored() {
        let mut bytes = CURL.to_vec();
        bytes.extend_from_slice(&[0x17, 3, 3, 0, 1, 0xff]);
        assert_eq!(client_hello(&bytes), Ok(Some(a_test())));
    }

    #[test]
    fn sni_is_lower_cased_without_trailing_dot() {
        let hello = hello_with_extensions(&sni_extension(b"API.Example.COM."));
        let parsed = client_hello(&hello).unwrap().unwrap();
        assert_eq!(parsed.sni.as_deref(), Some("api.example.com"));
        assert!(parsed.alpn.is_empty());
    }

    #[test]
    fn hello_without_extensions_has_no_sni() {
        let hello = hello_with_extensions(&[]);
        assert_eq!(client_hello(&hello), Ok(Some(ClientHello::default())));
    }

    #[test]
    fn non_ascii_server_name_is_malformed() {
        let hello = hello_with_extensions(&sni_extension("é.test".as_bytes()));
        assert!(matches!(
            client_hello(&hello),
            Err(SniffError::Malformed(_))
        ));
    }

    #[test]
    fn duplicate_server_name_is_malformed() {
        let mut extensions = sni_extension(b"a.test");
        extensions.extend_from_slice(&sni_extension(b"b.test"));
        let hello = hello_with_extensions(&extensions);
        assert!(matches!(
            client_hello(&hello),
            Err(SniffError::Malformed(_))
        ));
    }

    #[test]
    fn truncated_extension_block_is_malformed() {
        let mut extensions = sni_extension(b"a.test");
        extensions.extend_from_slice(&[0, 16, 0]);
        let hello = hello_with_extensions(&extensions);
        assert!(matches!(
            client_hello(&hello),
            Err(SniffError::Malformed(_))
        ));
    }

    #[test]
    fn plaintext_protocols_are_not_tls() {
        assert_eq!(client_hello(b"GET / HTTP/1.1\r\n"), Err(SniffError::NotTls));
        assert_eq!(
            client_hello(b"SSH-2.0-OpenSSH_9.2\r\n"),
            Err(SniffError::NotTls)
        );
        assert_eq!(client_hello(&PG_SSL_REQUEST), Err(SniffError::NotTls));
        assert!(!looks_like_tls(b'G'));
        assert!(looks_like_tls(0x16));
        assert!(looks_like_tls(0x80));
    }

    #[test]
    fn sslv2_hello_counts_as_tls_without_sni() {
        let sslv2 = [0x80, 0x2e, 0x01, 0x03, 0x01];
        assert_eq!(client_hello(&sslv2), Ok(Some(ClientHello::default())));
    }

    #[test]
    fn garbage_after_a_handshake_byte_is_malformed() {
        assert_eq!(
            client_hello(&[0x16, 0x47, 0x45, 0x54]),
            Err(SniffError::Malformed("record version is not 3.x"))
        );
        // A complete handshake header and body that is not a ClientHello body.
        let garbage = [0x16, 3, 1, 0, 8, 1, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef];
        assert!(matches!(
            client_hello(&garbage),
            Err(SniffError::Malformed(_))
        ));
    }

    #[test]
    fn server_hello_is_not_a_client_hello() {
        assert_eq!(
            client_hello(&[0x16, 3, 3, 0, 4, 2, 0]),
            Err(SniffError::Malformed(
                "first handshake message is not a ClientHello"
            ))
        );
    }

    #[test]
    fn second_record_of_another_type_is_malformed() {
        let mut bytes = S_CLIENT_2RECORDS[..5 + 150].to_vec();
        bytes.extend_from_slice(&[0x17, 3, 1, 0, 1, 0]);
        assert!(matches!(
            client_hello(&bytes),
            Err(SniffError::Malformed(_))
        ));
    }

    #[test]
    fn empty_or_oversized_records_are_malformed() {
        assert!(matches!(
            client_hello(&[0x16, 3, 1, 0, 0]),
            Err(SniffError::Malformed(_))
        ));
        assert!(matches!(
            client_hello(&[0x16, 3, 1, 0x40, 1]),
            Err(SniffError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_hello_is_refused_from_its_header() {
        let declared = (MAX_CLIENT_HELLO as u32).to_be_bytes();
        let header = [0x16, 3, 1, 0, 4, 1, declared[1], declared[2], declared[3]];
        assert_eq!(client_hello(&header), Err(SniffError::TooLarge));
    }

    #[test]
    fn hello_in_tiny_records_is_refused_past_the_buffer_limit() {
        let message_len = 16 * 1024 - HANDSHAKE_HEADER_LEN;
        let mut message = vec![HANDSHAKE_TYPE_CLIENT_HELLO];
        message.extend_from_slice(&(message_len as u32).to_be_bytes()[1..]);
        message.resize(HANDSHAKE_HEADER_LEN + message_len, 0);
        let mut bytes = Vec::new();
        for byte in message {
            bytes.extend_from_slice(&[CONTENT_TYPE_HANDSHAKE, 3, 1, 0, 1, byte]);
        }
        assert_eq!(client_hello(&bytes[..MAX_CLIENT_HELLO - 1]), Ok(None));
        assert_eq!(
            client_hello(&bytes[..MAX_CLIENT_HELLO]),
            Err(SniffError::TooLarge)
        );
    }

    #[test]
    fn bare_handshake_message_reads_like_its_record() {
        let message = &S_CLIENT[RECORD_HEADER_LEN..];
        assert_eq!(client_hello_message(message), Ok(a_test()));
        assert!(matches!(
            client_hello_message(&message[..message.len() - 1]),
            Err(SniffError::Malformed(_))
        ));
        let mut longer = message.to_vec();
        longer.push(0);
        assert!(matches!(
            client_hello_message(&longer),
            Err(SniffError::Malformed(_))
        ));
        let mut server_hello = message.to_vec();
        server_hello[0] = 2;
        assert!(matches!(
            client_hello_message(&server_hello),
            Err(SniffError::Malformed(_))
        ));
        assert!(matches!(
            client_hello_message(&message[..3]),
            Err(SniffError::Malformed(_))
        ));
    }

    #[test]
    fn postgres_ssl_request_is_judged_on_available_bytes() {
        assert_eq!(postgres_ssl_request(&[]), Probe::NeedMore);
        assert_eq!(postgres_ssl_request(&PG_SSL_REQUEST[..5]), Probe::NeedMore);
        assert_eq!(postgres_ssl_request(&PG_SSL_REQUEST), Probe::Match);
        let mut with_more = PG_SSL_REQUEST.to_vec();
        with_more.extend_from_slice(CURL);
        assert_eq!(postgres_ssl_request(&with_more), Probe::Match);
        assert_eq!(postgres_ssl_request(&[0, 0, 1]), Probe::NoMatch);
        assert_eq!(postgres_ssl_request(CURL), Probe::NoMatch);
        // A StartupMessage (protocol 3.0) differs in its code.
        assert_eq!(
            postgres_ssl_request(&[0, 0, 0, 8, 0, 3, 0, 0]),
            Probe::NoMatch
        );
    }
}
