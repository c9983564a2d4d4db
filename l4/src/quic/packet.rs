//! QUIC packet framing: long headers of versions 1 (RFC 9000 §17.2) and 2 (RFC 9369 §3),
//! the version-independent invariants (RFC 8999) used to classify a datagram, and the
//! variable-length integers (RFC 9000 §16) everything else is built from.
//!
//! Nothing here decrypts: a parsed Initial still has its header protection on, so its packet
//! number length and packet number are unknown until `protection` removes it.

use std::fmt;

use super::QuicError;

/// Longest connection ID in QUIC versions 1 and 2 (RFC 9000 §17.2).
pub const MAX_CID_LEN: usize = 20;

/// Header form bit: set for long headers (RFC 9000 §17.2).
const LONG_HEADER: u8 = 0x80;
/// The fixed bit, set in every v1/v2 packet unless the peers agreed to grease it (RFC 9287).
const FIXED_BIT: u8 = 0x40;
/// Bytes before the connection IDs: first byte and version.
const VERSION_END: usize = 5;

/// A QUIC version whose Initial packets this module can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// QUIC version 1, `0x00000001` (RFC 9000, RFC 9001).
    V1,
    /// QUIC version 2, `0x6b3343cf` (RFC 9369).
    V2,
}

impl Version {
    const V1_WIRE: u32 = 0x0000_0001;
    const V2_WIRE: u32 = 0x6b33_43cf;

    /// The version for the 32-bit value in a long header, if it is one we read.
    pub const fn from_wire(version: u32) -> Option<Self> {
        match version {
            Self::V1_WIRE => Some(Self::V1),
            Self::V2_WIRE => Some(Self::V2),
            _ => None,
        }
    }

    /// The 32-bit value this version puts in long headers.
    pub const fn wire(self) -> u32 {
        match self {
            Self::V1 => Self::V1_WIRE,
            Self::V2 => Self::V2_WIRE,
        }
    }

    /// The type of a long-header packet from its first byte. Version 2 permutes the type
    /// bits so that middleboxes cannot ossify on version 1's values (RFC 9369 §3.2).
    fn packet_type(self, first_byte: u8) -> LongType {
        let bits = (first_byte >> 4) & 0b11;
        let bits = match self {
            Self::V1 => bits,
            // v2 numbers Retry 0, Initial 1, 0-RTT 2, Handshake 3: rotate onto v1's order.
            Self::V2 => (bits + 3) % 4,
        };
        match bits {
            0 => LongType::Initial,
            1 => LongType::ZeroRtt,
            2 => LongType::Handshake,
            _ => LongType::Retry,
        }
    }

    pub(crate) fn rustls(self) -> rustls::quic::Version {
        match self {
            Self::V1 => rustls::quic::Version::V1,
            Self::V2 => rustls::quic::Version::V2,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V1 => f.write_str("QUIC v1"),
            Self::V2 => f.write_str("QUIC v2"),
        }
    }
}

/// A connection ID of QUIC version 1 or 2: at most [`MAX_CID_LEN`] bytes, possibly empty.
/// Stored inline so that a flow table keyed by it does not allocate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId {
    len: u8,
    bytes: [u8; MAX_CID_LEN],
}

impl ConnectionId {
    /// The connection ID made of `bytes`, or `None` if it is longer than [`MAX_CID_LEN`].
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let len = u8::try_from(bytes.len()).ok()?;
        let mut out = Self {
            len,
            bytes: [0; MAX_CID_LEN],
        };
        out.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(out)
    }

    /// The connection ID's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConnectionId(")?;
        for byte in self.as_bytes() {
            write!(f, "{byte:02x}")?;
        }
        f.write_str(")")
    }
}

/// What the first packet of a datagram looks like, judged from its unprotected header only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification<'a> {
    /// A client Initial of version 1 or 2: feed the datagram to an
    /// [`InitialReader`](super::InitialReader) to learn its SNI and ALPN.
    Initial {
        version: Version,
        dcid: &'a [u8],
        scid: &'a [u8],
    },
    /// Another long-header packet: 0-RTT, Handshake or Retry of version 1 or 2, or any packet
    /// of another version (0 is Version Negotiation). Only the RFC 8999 invariants were
    /// checked, so connection IDs of an unknown version may be up to 255 bytes long.
    OtherLong {
        version: u32,
        dcid: &'a [u8],
        scid: &'a [u8],
    },
    /// A short-header (1-RTT) packet, or random bytes that look like one: short headers carry
    /// no version and a connection ID of a length only the endpoints know, so only a flow
    /// already learned (by client address or connection ID) can claim them.
    MaybeShort,
    /// Not QUIC as far as the header can tell.
    NotQuic,
}

/// Whether a datagram starting with `first_byte` could be a QUIC short-header packet: header
/// form 0 and fixed bit 1 (RFC 9000 §17.3). Random traffic passes this one time in four.
pub fn looks_like_quic_short(first_byte: u8) -> bool {
    first_byte & (LONG_HEADER | FIXED_BIT) == FIXED_BIT
}

/// Classifies a datagram by its first packet's header, without decrypting anything. The
/// datagram's size and the packet's protection are the reader's to check.
#[must_use]
pub fn classify(datagram: &[u8]) -> Classification<'_> {
    let Some(&first) = datagram.first() else {
        return Classification::NotQuic;
    };
    if first & LONG_HEADER == 0 {
        return if looks_like_quic_short(first) {
            Classification::MaybeShort
        } else {
            Classification::NotQuic
        };
    }
    let Ok(header) = invariant_header(datagram) else {
        return Classification::NotQuic;
    };
    match Version::from_wire(header.version) {
        Some(version)
            if header.dcid.len() <= MAX_CID_LEN
                && header.scid.len() <= MAX_CID_LEN
                && version.packet_type(first) == LongType::Initial =>
        {
            Classification::Initial {
                version,
                dcid: header.dcid,
                scid: header.scid,
            }
        }
        Some(_) if header.dcid.len() > MAX_CID_LEN || header.scid.len() > MAX_CID_LEN => {
            Classification::NotQuic
        }
        _ => Classification::OtherLong {
            version: header.version,
            dcid: header.dcid,
            scid: header.scid,
        },
    }
}

/// Long-header packet types, in version 1's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LongType {
    Initial,
    ZeroRtt,
    Handshake,
    Retry,
}

/// The version-independent part of a long header (RFC 8999 §5.1).
struct InvariantHeader<'a> {
    version: u32,
    dcid: &'a [u8],
    scid: &'a [u8],
    /// Offset of the first byte after the Source Connection ID.
    end: usize,
}

fn invariant_header(packet: &[u8]) -> Result<InvariantHeader<'_>, QuicError> {
    let Some(&[_, v0, v1, v2, v3]) = packet.get(..VERSION_END) else {
        return Err(QuicError::Truncated("long header"));
    };
    let mut reader = Reader::new(&packet[VERSION_END..]);
    let dcid = reader.length_prefixed_u8("Destination Connection ID")?;
    let scid = reader.length_prefixed_u8("Source Connection ID")?;
    Ok(InvariantHeader {
        version: u32::from_be_bytes([v0, v1, v2, v3]),
        dcid,
        scid,
        end: packet.len() - reader.remaining(),
    })
}

/// A client Initial packet of version 1 or 2 whose header and Length field parsed, still
/// under header protection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InitialPacket<'a> {
    pub(crate) version: Version,
    pub(crate) dcid: ConnectionId,
    pub(crate) scid: ConnectionId,
    /// The whole packet, from its first byte to the end its Length field gives.
    pub(crate) bytes: &'a [u8],
    /// Where the (protected) packet number starts in `bytes`.
    pub(crate) pn_offset: usize,
}

/// One packet cut from a datagram.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Packet<'a> {
    Initial(InitialPacket<'a>),
    /// A v1/v2 long-header packet that is not an Initial (0-RTT or Handshake from a client).
    OtherLong {
        dcid: ConnectionId,
    },
}

/// Reads the long-header packet at the start of `buf`, returning it and the number of bytes
/// it occupies. Only versions 1 and 2 are read: other versions have no known Length field,
/// and Retry packets are sent by servers only.
pub(crate) fn parse_long(buf: &[u8]) -> Result<(Packet<'_>, usize), QuicError> {
    let Some(&first) = buf.first() else {
        return Err(QuicError::Truncated("long header"));
    };
    if first & LONG_HEADER == 0 {
        return Err(QuicError::NotLongHeader);
    }
    let header = invariant_header(buf)?;
    let version =
        Version::from_wire(header.version).ok_or(QuicError::UnsupportedVersion(header.version))?;
    let (Some(dcid), Some(scid)) = (
        ConnectionId::new(header.dcid),
        ConnectionId::new(header.scid),
    ) else {
        return Err(QuicError::Malformed("connection ID longer than 20 bytes"));
    };
    let packet_type = version.packet_type(first);
    let mut reader = Reader::new(&buf[header.end..]);
    match packet_type {
        LongType::Initial => {
            reader.length_prefixed_varint("Initial token")?;
        }
        LongType::ZeroRtt | LongType::Handshake => {}
        LongType::Retry => return Err(QuicError::Malformed("Retry packet from a client")),
    }
    let length = reader.varint("Length field")?;
    let pn_offset = buf.len() - reader.remaining();
    let end = usize::try_from(length)
        .ok()
        .and_then(|length| pn_offset.checked_add(length))
        .filter(|&end| end <= buf.len())
        .ok_or(QuicError::Truncated("packet shorter than its Length field"))?;
    let packet = match packet_type {
        LongType::Initial => Packet::Initial(InitialPacket {
            version,
            dcid,
            scid,
            bytes: &buf[..end],
            pn_offset,
        }),
        _ => Packet::OtherLong { dcid },
    };
    Ok((packet, end))
}

/// A cursor over bytes that reads QUIC's encodings and never reads past the end.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub(crate) fn bytes(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], QuicError> {
        if len > self.rest.len() {
            return Err(QuicError::Truncated(what));
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    /// A variable-length integer (RFC 9000 §16): the top two bits of the first byte give
    /// its length, 1, 2, 4 or 8 bytes.
    pub(crate) fn varint(&mut self, what: &'static str) -> Result<u64, QuicError> {
        let Some(&first) = self.rest.first() else {
            return Err(QuicError::Truncated(what));
        };
        let len = 1usize << (first >> 6);
        let bytes = self.bytes(len, what)?;
        Ok(bytes[1..]
            .iter()
            .fold(u64::from(first & 0x3f), |value, &byte| {
                value << 8 | u64::from(byte)
            }))
    }

    /// Bytes preceded by a one-byte length (connection IDs).
    fn length_prefixed_u8(&mut self, what: &'static str) -> Result<&'a [u8], QuicError> {
        let len = self.bytes(1, what)?[0];
        self.bytes(usize::from(len), what)
    }

    /// Bytes preceded by a variable-length integer length.
    pub(crate) fn length_prefixed_varint(
        &mut self,
        what: &'static str,
    ) -> Result<&'a [u8], QuicError> {
        let len = self.varint(what)?;
        let len = usize::try_from(len).map_err(|_| QuicError::Truncated(what))?;
        self.bytes(len, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(bytes: &[u8]) -> Result<u64, QuicError> {
        Reader::new(bytes).varint("test")
    }

    #[test]
    fn varints_decode_rfc_9000_examples() {
        // RFC 9000 Appendix A.1.
        assert_eq!(
            varint(&[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c]),
            Ok(151_288_809_941_952_652)
        );
        assert_eq!(varint(&[0x9d, 0x7f, 0x3e, 0x7d]), Ok(494_878_333));
        assert_eq!(varint(&[0x7b, 0xbd]), Ok(15_293));
        assert_eq!(varint(&[0x25]), Ok(37));
        assert_eq!(varint(&[0x40, 0x25]), Ok(37));
        assert_eq!(varint(&[0x7b]), Err(QuicError::Truncated("test")));
        assert_eq!(varint(&[]), Err(QuicError::Truncated("test")));
    }

    #[test]
    fn version_two_permutes_long_header_types() {
        assert_eq!(Version::V1.packet_type(0xc0), LongType::Initial);
        assert_eq!(Version::V1.packet_type(0xd0), LongType::ZeroRtt);
        assert_eq!(Version::V1.packet_type(0xe0), LongType::Handshake);
        assert_eq!(Version::V1.packet_type(0xf0), LongType::Retry);
        assert_eq!(Version::V2.packet_type(0xd0), LongType::Initial);
        assert_eq!(Version::V2.packet_type(0xe0), LongType::ZeroRtt);
        assert_eq!(Version::V2.packet_type(0xf0), LongType::Handshake);
        assert_eq!(Version::V2.packet_type(0xc0), LongType::Retry);
    }

    #[test]
    fn versions_round_trip_their_wire_values() {
        for version in [Version::V1, Version::V2] {
            assert_eq!(Version::from_wire(version.wire()), Some(version));
        }
        assert_eq!(Version::from_wire(0), None);
        assert_eq!(Version::from_wire(0xff00_001d), None);
    }

    #[test]
    fn classify_reads_the_first_packet_header() {
        let v1_initial = [0xc3, 0, 0, 0, 1, 2, 0xaa, 0xbb, 1, 0xcc, 0, 0x41];
        assert_eq!(
            classify(&v1_initial),
            Classification::Initial {
                version: Version::V1,
                dcid: &[0xaa, 0xbb],
                scid: &[0xcc],
            }
        );
        let v2_initial = [0xd0, 0x6b, 0x33, 0x43, 0xcf, 0, 0];
        assert_eq!(
            classify(&v2_initial),
            Classification::Initial {
                version: Version::V2,
                dcid: &[],
                scid: &[],
            }
        );
        // A v1 Initial's type bits mean Retry in version 2, and v2's Initial bits are 0-RTT
        // in version 1.
        let v2_retry = [0xc0, 0x6b, 0x33, 0x43, 0xcf, 0, 0];
        assert!(matches!(
            classify(&v2_retry),
            Classification::OtherLong {
                version: 0x6b33_43cf,
                ..
            }
        ));
        let v1_zero_rtt = [0xd0, 0, 0, 0, 1, 0, 0];
        assert!(matches!(
            classify(&v1_zero_rtt),
            Classification::OtherLong { version: 1, .. }
        ));
        let negotiation = [0x80, 0, 0, 0, 0, 1, 9, 0];
        assert_eq!(
            classify(&negotiation),
            Classification::OtherLong {
                version: 0,
                dcid: &[9],
                scid: &[],
            }
        );
    }

    #[test]
    fn classify_rejects_what_breaks_the_invariants() {
        assert_eq!(classify(&[]), Classification::NotQuic);
        assert_eq!(classify(&[0x00, 1, 2]), Classification::NotQuic);
        assert_eq!(classify(&[0x40, 1, 2]), Classification::MaybeShort);
        // Truncated version, truncated connection IDs.
        assert_eq!(classify(&[0xc0, 0, 0, 1]), Classification::NotQuic);
        assert_eq!(
            classify(&[0xc0, 0, 0, 0, 1, 4, 1, 2]),
            Classification::NotQuic
        );
        assert_eq!(classify(&[0xc0, 0, 0, 0, 1, 0]), Classification::NotQuic);
        // Version 1 limits connection IDs to 20 bytes; unknown versions may use 255.
        let mut long_cid = vec![0xc0, 0, 0, 0, 1, 21];
        long_cid.extend_from_slice(&[7; 21]);
        long_cid.push(0);
        assert_eq!(classify(&long_cid), Classification::NotQuic);
        long_cid[4] = 0x2a;
        assert!(matches!(
            classify(&long_cid),
            Classification::OtherLong { version: 0x2a, .. }
        ));
    }

    #[test]
    fn short_header_needs_the_fixed_bit() {
        assert!(looks_like_quic_short(0x40));
        assert!(looks_like_quic_short(0x7f));
        assert!(!looks_like_quic_short(0x3f));
        assert!(!looks_like_quic_short(0xc0));
    }

    #[test]
    fn connection_ids_hold_at_most_twenty_bytes() {
        assert_eq!(ConnectionId::new(&[]).map(|c| c.as_bytes().len()), Some(0));
        assert_eq!(
            ConnectionId::new(&[5; 20]).map(|c| c.as_bytes().to_vec()),
            Some(vec![5; 20])
        );
        assert_eq!(ConnectionId::new(&[5; 21]), None);
        assert_eq!(
            format!("{:?}", ConnectionId::new(&[0xab, 1]).unwrap()),
            "ConnectionId(ab01)"
        );
    }

    #[test]
    fn parse_long_cuts_a_packet_at_its_length_field() {
        // v1 Initial, empty CIDs, empty token, Length 3, then 3 bytes and one extra.
        let buf = [0xc0, 0, 0, 0, 1, 0, 0, 0, 3, 1, 2, 3, 0xff];
        let (packet, used) = parse_long(&buf).unwrap();
        assert_eq!(used, 12);
        let Packet::Initial(initial) = packet else {
            panic!("expected an Initial, got {packet:?}");
        };
        assert_eq!(initial.pn_offset, 9);
        assert_eq!(initial.bytes, &buf[..12]);
        assert!(matches!(
            parse_long(&buf[..11]),
            Err(QuicError::Truncated(_))
        ));
        // Token length running past the datagram.
        let token = [0xc0, 0, 0, 0, 1, 0, 0, 0x44, 0x00, 1];
        assert!(matches!(parse_long(&token), Err(QuicError::Truncated(_))));
        // A Length of 2^62 - 1.
        let huge = [
            0xc0, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(matches!(parse_long(&huge), Err(QuicError::Truncated(_))));
        assert_eq!(
            parse_long(&[0xc0, 0, 0, 0, 2, 0, 0, 0, 0]).err(),
            Some(QuicError::UnsupportedVersion(2))
        );
        assert_eq!(parse_long(&[0x40]).err(), Some(QuicError::NotLongHeader));
        let retry = [0xf0, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(matches!(parse_long(&retry), Err(QuicError::Malformed(_))));
        let handshake = [0xe0, 0, 0, 0, 1, 1, 9, 0, 1, 0];
        assert!(matches!(
            parse_long(&handshake),
            Ok((Packet::OtherLong { .. }, 10))
        ));
    }
}
