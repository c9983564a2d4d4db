//! PROXY protocol headers (HAProxy spec, versions 1 and 2): reading the header a trusted
//! load balancer puts in front of a connection, and writing one for a backend.
//!
//! Parsing is a pure function over the bytes received so far; deciding whether a peer is
//! trusted, reading from the socket and replaying what follows the header belong to the
//! caller. Framing (signature, length limits) is checked here; `ppp` decodes the header.

use std::net::{IpAddr, SocketAddr};

use ppp::v1;
use ppp::v2;

/// The twelve-byte signature that opens a version 2 header (spec §2.2).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2 header bytes before the variable part: signature, version/command,
/// family/protocol and a two-byte length (spec §2.2).
const V2_FIXED_LEN: usize = 16;
/// A version 1 header opens with this text (spec §2.1).
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The longest version 1 line, CRLF included (spec §2.1: "at most 107 characters").
const V1_MAX_LEN: usize = 107;

/// Most bytes a header may take. Addresses use at most 216 bytes (two Unix paths); the rest
/// are TLVs (cloud endpoint ids, TLS details), which senders keep small. 4 KiB bounds what a
/// peer makes us buffer before the connection even starts.
pub const MAX_HEADER: usize = 4096;

/// What a PROXY header says about the original connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client as the proxy saw it; `None` for LOCAL (v2), UNKNOWN (v1), or families
    /// without an IP address (Unix sockets, unspecified).
    pub source: Option<SocketAddr>,
    /// The address the client connected to, with the same `None` cases as `source`.
    pub destination: Option<SocketAddr>,
}

/// Which PROXY protocol version to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    V1,
    V2,
}

/// Why the bytes cannot be read as a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not a PROXY protocol header: the connection starts with other bytes")]
    NotProxy,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    #[error("PROXY protocol header longer than {MAX_HEADER} bytes")]
    TooLarge,
}

/// Reads the PROXY header (v1 or v2) at the start of `buf`.
///
/// `Ok(None)` means the bytes so far could still become a header and more are needed.
/// On success, the `usize` is the header's length: the client's own bytes start there.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if starts_like(buf, V2_SIGNATURE) {
        parse_v2(buf)
    } else if starts_like(buf, V1_PREFIX) {
        parse_v1(buf)
    } else {
        Err(ProxyError::NotProxy)
    }
}

/// Whether the available bytes agree with `prefix` as far as both go.
fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let seen = buf.len().min(prefix.len());
    buf[..seen] == prefix[..seen]
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if buf.len() >= V1_MAX_LEN {
            Err(ProxyError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let Some(&after_cr) = buf.get(cr + 1) else {
        return Ok(None);
    };
    if after_cr != b'\n' {
        return Err(ProxyError::Malformed(
            "v1 line ends in CR without LF".into(),
        ));
    }
    let len = cr + 2;
    if len > V1_MAX_LEN {
        return Err(ProxyError::TooLarge);
    }
    let header = v1::Header::try_from(&buf[..len]).map_err(|e| malformed("v1", e))?;
    let (source, destination) = match header.addresses {
        v1::Addresses::Tcp4(a) => (
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        ),
        v1::Addresses::Tcp6(a) => (
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        ),
        v1::Addresses::Unknown => return Ok(Some((ProxyHeader::unknown(), len))),
    };
    Ok(Some((ProxyHeader::new(source, destination), len)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let Some(fixed) = buf.get(..V2_FIXED_LEN) else {
        return Ok(None);
    };
    let len = V2_FIXED_LEN + usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > MAX_HEADER {
        return Err(ProxyError::TooLarge);
    }
    let Some(bytes) = buf.get(..len) else {
        return Ok(None);
    };
    let header = v2::Header::try_from(bytes).map_err(|e| malformed("v2", e))?;
    if header.command == v2::Command::Local {
        // LOCAL: the proxy's own connection (health checks); its addresses mean nothing.
        return Ok(Some((ProxyHeader::unknown(), len)));
    }
    let (source, destination) = match header.addresses {
        v2::Addresses::IPv4(a) => (
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        ),
        v2::Addresses::IPv6(a) => (
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        ),
        v2::Addresses::Unix(_) | v2::Addresses::Unspecified => {
            return Ok(Some((ProxyHeader::unknown(), len)));
        }
    };
    Ok(Some((ProxyHeader::new(source, destination), len)))
}

fn malformed(version: &str, error: impl std::fmt::Display) -> ProxyError {
    ProxyError::Malformed(format!("{version}: {error}"))
}

impl ProxyHeader {
    fn unknown() -> Self {
        ProxyHeader {
            source: None,
            destination: None,
        }
    }

    /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are reported as the IPv4 address they
    /// stand for, so that `ClientIP` rules and logs see one form.
    fn new(source: SocketAddr, destination: SocketAddr) -> Self {
        ProxyHeader {
            source: Some(canonical(source)),
            destination: Some(canonical(destination)),
        }
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Writes a PROXY header announcing a TCP connection from `source` to `destination`.
///
/// When one address is IPv4 and the other IPv6, both are written in IPv6 form (the IPv4 one
/// as `::ffff:a.b.c.d`), because a header has one address family.
pub fn encode(version: ProxyVersion, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (source, destination) = match (source.ip(), destination.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => (source, destination),
        _ => (as_v6(source), as_v6(destination)),
    };
    match version {
        ProxyVersion::V1 => encode_v1(source, destination),
        ProxyVersion::V2 => encode_v2(source, destination),
    }
}

fn as_v6(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), addr.port()),
        IpAddr::V6(_) => addr,
    }
}

fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    /// Version 2, command PROXY (spec §2.2).
    const VERSION_COMMAND_PROXY: u8 = 0x21;
    /// Family INET / INET6 with protocol STREAM (spec §2.2).
    const TCP_OVER_IPV4: u8 = 0x11;
    const TCP_OVER_IPV6: u8 = 0x21;

    let mut out = Vec::with_capacity(V2_FIXED_LEN + 36);
    out.extend_from_slice(V2_SIGNATURE);
    out.push(VERSION_COMMAND_PROXY);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            out.push(TCP_OVER_IPV4);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        (source_ip, destination_ip) => {
            out.push(TCP_OVER_IPV6);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&ipv6_octets(source_ip));
            out.extend_from_slice(&ipv6_octets(destination_ip));
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

fn ipv6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        IpAddr::V6(ip) => ip.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn header(source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader {
            source: Some(addr(source)),
            destination: Some(addr(destination)),
        }
    }

    #[test]
    fn v1_tcp4_header_and_following_bytes() {
        let bytes = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
        let (parsed, len) = parse(bytes).unwrap().unwrap();
        assert_eq!(parsed, header("192.0.2.1:56324", "198.51.100.2:443"));
        assert_eq!(&bytes[len..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn v1_tcp6_header() {
        let bytes = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n";
        assert_eq!(
            parse(bytes),
            Ok(Some((
                header("[2001:db8::1]:4000", "[2001:db8::2]:443"),
                bytes.len()
            )))
        );
    }

    #[test]
    fn v1_unknown_has_no_addresses() {
        let bytes = b"PROXY UNKNOWN\r\n";
        assert_eq!(
            parse(bytes),
            Ok(Some((ProxyHeader::unknown(), bytes.len())))
        );
    }

    #[test]
    fn v2_local_has_no_addresses() {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&bytes), Ok(Some((ProxyHeader::unknown(), 16))));
    }

    #[test]
    fn v2_header_with_tlvs_reports_its_full_length() {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend_from_slice(&[0x21, 0x11, 0, 12 + 7]);
        bytes.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 2]);
        bytes.extend_from_slice(&[0xdc, 0x04, 0x01, 0xbb]);
        // PP2_TYPE_AUTHORITY "a.test"
        bytes.extend_from_slice(&[0x02, 0, 4, b'a', b'.', b't', b'e']);
        bytes.extend_from_slice(b"client bytes");
        let (parsed, len) = parse(&bytes).unwrap().unwrap();
        assert_eq!(parsed, header("192.0.2.1:56324", "198.51.100.2:443"));
        assert_eq!(&bytes[len..], b"client bytes");
    }

    #[test]
    fn ipv4_mapped_addresses_are_reported_as_ipv4() {
        let bytes = b"PROXY TCP6 ::ffff:192.0.2.1 ::ffff:198.51.100.2 1000 443\r\n";
        let (parsed, _) = parse(bytes).unwrap().unwrap();
        assert_eq!(parsed, header("192.0.2.1:1000", "198.51.100.2:443"));
    }

    #[test]
    fn every_strict_prefix_needs_more() {
        let v4 = (addr("192.0.2.1:56324"), addr("198.51.100.2:443"));
        let v6 = (addr("[2001:db8::1]:4000"), addr("[2001:db8::2]:443"));
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            for (source, destination) in [v4, v6] {
                let bytes = encode(version, source, destination);
                for cut in 0..bytes.len() {
                    assert_eq!(parse(&bytes[..cut]), Ok(None), "{version:?} cut at {cut}");
                }
            }
        }
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let pairs = [
            ("192.0.2.1:56324", "198.51.100.2:443"),
            ("[2001:db8::1]:4000", "[2001:db8::2]:443"),
            ("[::ffff:192.0.2.1]:1", "[2001:db8::2]:65535"),
        ];
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            for (source, destination) in pairs {
                let bytes = encode(version, addr(source), addr(destination));
                let expected = ProxyHeader::new(addr(source), addr(destination));
                assert_eq!(
                    parse(&bytes),
                    Ok(Some((expected, bytes.len()))),
                    "{version:?}"
                );
            }
        }
    }

    #[test]
    fn mixed_families_are_written_as_ipv6() {
        let source = addr("192.0.2.1:1000");
        let destination = addr("[2001:db8::2]:443");
        let v1 = encode(ProxyVersion::V1, source, destination);
        assert_eq!(v1, b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1000 443\r\n");
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            let bytes = encode(version, source, destination);
            assert_eq!(
                parse(&bytes),
                Ok(Some((ProxyHeader::new(source, destination), bytes.len())))
            );
        }
    }

    #[test]
    fn encoded_v2_is_what_ppp_reads() {
        let bytes = encode(
            ProxyVersion::V2,
            addr("192.0.2.1:56324"),
            addr("198.51.100.2:443"),
        );
        let parsed = v2::Header::try_from(bytes.as_slice()).unwrap();
        assert_eq!(parsed.command, v2::Command::Proxy);
        assert_eq!(parsed.protocol, v2::Protocol::Stream);
        assert_eq!(parsed.len(), bytes.len());
    }

    #[test]
    fn other_protocols_are_not_proxy() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NotProxy));
        assert_eq!(parse(&[0x16, 3, 1]), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"PROXX"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"\r\n\r\n\0\r\nQUIX"), Err(ProxyError::NotProxy));
    }

    #[test]
    fn bad_v1_lines_are_malformed() {
        for bytes in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n"[..],
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 99999\r\n",
            b"PROXY TCP5 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\rX",
        ] {
            assert!(
                matches!(parse(bytes), Err(ProxyError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn v1_line_without_end_is_too_large() {
        let mut bytes = b"PROXY TCP4 ".to_vec();
        bytes.resize(V1_MAX_LEN, b'1');
        assert_eq!(parse(&bytes[..V1_MAX_LEN - 1]), Ok(None));
        assert_eq!(parse(&bytes), Err(ProxyError::TooLarge));
    }

    #[test]
    fn bad_v2_headers_are_malformed() {
        // Version 1 in the binary form, then an address length too short for IPv4.
        for fixed in [[0x11, 0x11, 0, 12], [0x21, 0x11, 0, 4]] {
            let mut bytes = V2_SIGNATURE.to_vec();
            bytes.extend_from_slice(&fixed);
            bytes.resize(V2_FIXED_LEN + 12, 0);
            assert!(matches!(parse(&bytes), Err(ProxyError::Malformed(_))));
        }
    }

    #[test]
    fn v2_header_over_the_limit_is_too_large() {
        let mut bytes = V2_SIGNATURE.to_vec();
        let declared = (MAX_HEADER - V2_FIXED_LEN + 1) as u16;
        bytes.extend_from_slice(&[0x21, 0x11]);
        bytes.extend_from_slice(&declared.to_be_bytes());
        assert_eq!(parse(&bytes), Err(ProxyError::TooLarge));
    }
}
