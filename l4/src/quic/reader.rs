//! The per-flow state machine that turns a client's first datagrams into its ClientHello.
//!
//! One [`InitialReader`] per flow: the caller feeds it every datagram of that flow, in
//! arrival order, until it answers [`Outcome::ClientHello`] or [`Outcome::Error`]; after
//! that it keeps giving the same answer. It holds at most [`MAX_CRYPTO_STREAM`] bytes of
//! CRYPTO data and gives up after [`MAX_FLOW_DATAGRAMS`] datagrams or [`MAX_FLOW_BYTES`]
//! bytes. It has no clock: the caller drops flows that stay at [`Outcome::NeedMore`] past
//! its own deadline.

use std::fmt;

use super::QuicError;
use super::frames::for_each_crypto_frame;
use super::packet::{ConnectionId, InitialPacket, Packet, Version, parse_long};
use super::protection::ClientInitialKeys;
use super::reassembly::{CryptoStream, MAX_CRYPTO_STREAM};
use crate::sniff::client_hello_message;

/// Most datagrams a flow may send before its ClientHello is complete. A 16 KiB hello in
/// 1200-byte Initials takes 14; real ones take one or two, plus retransmissions.
pub const MAX_FLOW_DATAGRAMS: usize = 16;
/// Most datagram bytes a flow may send before its ClientHello is complete: what the caller
/// buffers for replay is bounded by this too.
pub const MAX_FLOW_BYTES: usize = 64 * 1024;
/// A client's Initial rides in a datagram of at least 1200 bytes, so that the server's reply
/// cannot amplify a spoofed one much (RFC 9000 §14.1); smaller ones are dropped.
pub const MIN_INITIAL_DATAGRAM: usize = 1200;

const HANDSHAKE_HEADER_LEN: usize = 4;
const HANDSHAKE_TYPE_CLIENT_HELLO: u8 = 1;

/// What a client's Initials say about where it wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialHello {
    /// The server name, lower-cased and without a trailing dot (as [`crate::sniff`] gives it).
    pub sni: Option<String>,
    /// The ALPN protocol names offered, in the client's order of preference.
    pub alpn: Vec<Vec<u8>>,
    pub version: Version,
    /// The Destination Connection ID the client chose (the Initial keys derive from it).
    pub dcid: ConnectionId,
    /// The client's Source Connection ID.
    pub scid: ConnectionId,
}

/// The reader's answer after a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every byte so far is a consistent start of a ClientHello: feed the next datagram.
    NeedMore,
    /// The ClientHello is complete.
    ClientHello(InitialHello),
    /// The flow cannot yield a ClientHello; drop its datagrams.
    Error(QuicError),
}

/// Reads the ClientHello out of one flow's Initial packets. See the module docs.
#[derive(Default)]
pub struct InitialReader {
    /// Learned from the first Initial; later Initials must match it.
    flow: Option<Flow>,
    crypto: CryptoStream,
    datagrams: usize,
    bytes: usize,
    /// Set once the answer is final.
    done: Option<Outcome>,
}

struct Flow {
    version: Version,
    dcid: ConnectionId,
    scid: ConnectionId,
    keys: ClientInitialKeys,
    largest_pn: Option<u64>,
}

impl fmt::Debug for InitialReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitialReader")
            .field("version", &self.flow.as_ref().map(|flow| flow.version))
            .field("dcid", &self.flow.as_ref().map(|flow| flow.dcid))
            .field("contiguous_crypto", &self.crypto.contiguous().len())
            .field("datagrams", &self.datagrams)
            .field("bytes", &self.bytes)
            .field("done", &self.done)
            .finish()
    }
}

impl InitialReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads one datagram of the flow. Coalesced packets are all read, up to trailing zero
    /// padding; packets other than Initials (0-RTT) are skipped.
    #[must_use = "the outcome says whether to route, wait or drop the flow"]
    pub fn feed(&mut self, datagram: &[u8]) -> Outcome {
        if let Some(done) = &self.done {
            return done.clone();
        }
        let outcome = match self.read(datagram) {
            Ok(None) => return Outcome::NeedMore,
            Ok(Some(hello)) => Outcome::ClientHello(hello),
            Err(error) => Outcome::Error(error),
        };
        self.done = Some(outcome.clone());
        outcome
    }

    fn read(&mut self, datagram: &[u8]) -> Result<Option<InitialHello>, QuicError> {
        self.datagrams += 1;
        self.bytes = self.bytes.saturating_add(datagram.len());
        if self.datagrams > MAX_FLOW_DATAGRAMS {
            return Err(QuicError::TooManyDatagrams);
        }
        if self.bytes > MAX_FLOW_BYTES {
            return Err(QuicError::TooManyBytes);
        }
        let mut rest = datagram;
        let mut first_dcid = None;
        // A zero byte cannot start a long header: from there on it is padding after the last
        // packet (RFC 9000 §12.2, §14.1), or bytes that would not parse anyway.
        while rest.first().is_some_and(|&byte| byte != 0) {
            let (packet, used) = match parse_long(rest) {
                Ok(parsed) => parsed,
                Err(error) if first_dcid.is_none() => return Err(error),
                // A later packet that does not parse (a short header, say) is dropped
                // without affecting the ones before it (RFC 9000 §12.2).
                Err(_) => break,
            };
            rest = &rest[used..];
            let dcid = match packet {
                Packet::Initial(initial) => initial.dcid,
                Packet::OtherLong { dcid } => dcid,
            };
            // Coalesced packets for another connection ID are ignored (RFC 9000 §12.2).
            if *first_dcid.get_or_insert(dcid) != dcid {
                continue;
            }
            if let Packet::Initial(initial) = packet {
                if datagram.len() < MIN_INITIAL_DATAGRAM {
                    return Err(QuicError::ShortDatagram(datagram.len()));
                }
                self.read_initial(&initial)?;
            }
        }
        if first_dcid.is_none() {
            return Err(QuicError::Malformed("datagram holds no QUIC packet"));
        }
        self.client_hello()
    }

    fn read_initial(&mut self, packet: &InitialPacket<'_>) -> Result<(), QuicError> {
        let flow = match &mut self.flow {
            Some(flow) if flow.version != packet.version || flow.dcid != packet.dcid => {
                return Err(QuicError::FlowMismatch);
            }
            Some(flow) => flow,
            None => self.flow.insert(Flow {
                version: packet.version,
                dcid: packet.dcid,
                scid: packet.scid,
                keys: ClientInitialKeys::new(packet.version, packet.dcid.as_bytes())?,
                largest_pn: None,
            }),
        };
        let opened = flow.keys.open(packet, flow.largest_pn)?;
        flow.largest_pn = flow.largest_pn.max(Some(opened.packet_number));
        let crypto = &mut self.crypto;
        for_each_crypto_frame(&opened.payload, |offset, data| crypto.insert(offset, data))
    }

    /// The ClientHello, once the CRYPTO stream's contiguous prefix holds all of it
    /// (RFC 9001 §4.1.3: CRYPTO frames carry handshake messages without TLS records).
    fn client_hello(&self) -> Result<Option<InitialHello>, QuicError> {
        let (Some(flow), [kind, a, b, c, ..]) = (&self.flow, self.crypto.contiguous()) else {
            return Ok(None);
        };
        if *kind != HANDSHAKE_TYPE_CLIENT_HELLO {
            return Err(QuicError::NotClientHello(*kind));
        }
        let total = HANDSHAKE_HEADER_LEN + u32::from_be_bytes([0, *a, *b, *c]) as usize;
        if total > MAX_CRYPTO_STREAM {
            return Err(QuicError::CryptoOutOfRange);
        }
        let Some(message) = self.crypto.contiguous().get(..total) else {
            return Ok(None);
        };
        let hello = client_hello_message(message)?;
        Ok(Some(InitialHello {
            sni: hello.sni,
            alpn: hello.alpn,
            version: flow.version,
            dcid: flow.dcid,
            scid: flow.scid,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quic::test_support::{crypto_frame, hex, initial, seal};

    macro_rules! vector {
        ($name:literal) => {
            include_bytes!(concat!("../../testdata/quic/", $name, ".bin")).as_slice()
        };
    }

    const CHROMIUM_V1: [&[u8]; 2] = [
        vector!("chromium-156-quic-v1-initial-1"),
        vector!("chromium-156-quic-v1-initial-2"),
    ];
    const CHROMIUM_V2: [&[u8]; 2] = [
        vector!("chromium-156-quic-v2-initial-1"),
        vector!("chromium-156-quic-v2-initial-2"),
    ];
    const FIREFOX_V1: [&[u8]; 2] = [
        vector!("firefox-esr-153-quic-v1-initial-1"),
        vector!("firefox-esr-153-quic-v1-initial-2"),
    ];
    const AIOQUIC_V1: &[u8] = vector!("aioquic-1.7.2-quic-v1-initial-1");
    const AIOQUIC_V2: &[u8] = vector!("aioquic-1.7.2-quic-v2-initial-1");

    /// A 325-byte ClientHello handshake message (SNI `a.test`, ALPN h2 and http/1.1), cut
    /// from the s_client capture's TLS record.
    fn hello_message() -> &'static [u8] {
        &include_bytes!("../../testdata/tls/openssl-3.0.22-s_client-tcp-clienthello.bin")[5..]
    }

    const DCID: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8];
    const SCID: &[u8] = &[9, 9];

    fn expect_hello(outcome: Outcome) -> InitialHello {
        match outcome {
            Outcome::ClientHello(hello) => hello,
            other => panic!("expected a ClientHello, got {other:?}"),
        }
    }

    fn read_all(datagrams: &[&[u8]]) -> Vec<Outcome> {
        let mut reader = InitialReader::new();
        datagrams
            .iter()
            .map(|datagram| reader.feed(datagram))
            .collect()
    }

    fn assert_captured(
        name: &str,
        datagrams: &[&[u8]],
        version: Version,
        dcid: &str,
        scid_len: usize,
    ) {
        let outcomes = read_all(datagrams);
        let (last, earlier) = outcomes.split_last().unwrap();
        for outcome in earlier {
            assert_eq!(outcome, &Outcome::NeedMore, "{name}: a partial hello");
        }
        let hello = expect_hello(last.clone());
        assert_eq!(hello.sni.as_deref(), Some("a.test"), "{name}");
        assert_eq!(hello.alpn, vec![b"h3".to_vec()], "{name}");
        assert_eq!(hello.version, version, "{name}");
        assert_eq!(hello.dcid.as_bytes(), hex(dcid), "{name}");
        assert_eq!(hello.scid.as_bytes().len(), scid_len, "{name}");
    }

    #[test]
    fn captured_initials_yield_sni_and_alpn() {
        assert_captured(
            "chromium v1",
            &CHROMIUM_V1,
            Version::V1,
            "bfaa53b82e6e15aa",
            0,
        );
        assert_captured(
            "chromium v2",
            &CHROMIUM_V2,
            Version::V2,
            "387996bed764a316",
            0,
        );
        assert_captured(
            "firefox v1",
            &FIREFOX_V1,
            Version::V1,
            "29b0a737b18563cb",
            3,
        );
        assert_captured(
            "aioquic v1",
            &[AIOQUIC_V1],
            Version::V1,
            "72cb6864fcdcdc02",
            8,
        );
        assert_captured(
            "aioquic v2",
            &[AIOQUIC_V2],
            Version::V2,
            "5b87dfa30fb57be0",
            8,
        );
    }

    #[test]
    fn first_of_two_datagrams_alone_needs_more() {
        for datagrams in [CHROMIUM_V1, CHROMIUM_V2, FIREFOX_V1] {
            assert_eq!(InitialReader::new().feed(datagrams[0]), Outcome::NeedMore);
        }
    }

    #[test]
    fn datagrams_in_reverse_order_still_complete_the_hello() {
        for datagrams in [CHROMIUM_V1, CHROMIUM_V2, FIREFOX_V1] {
            let outcomes = read_all(&[datagrams[1], datagrams[0]]);
            assert_eq!(outcomes[0], Outcome::NeedMore);
            assert_eq!(
                expect_hello(outcomes[1].clone()).sni.as_deref(),
                Some("a.test")
            );
        }
    }

    #[test]
    fn retransmitted_datagrams_are_consistent_overlaps() {
        let [first, second] = CHROMIUM_V1;
        let outcomes = read_all(&[first, first, second]);
        assert_eq!(outcomes[1], Outcome::NeedMore);
        expect_hello(outcomes[2].clone());
    }

    #[test]
    fn zeros_after_the_packet_are_ignored() {
        // aioquic padded its 515-byte packet to 1200 with zeros. Junk after the packet is
        // dropped without affecting it, whether it follows the zeros or replaces them.
        let mut with_junk = AIOQUIC_V1.to_vec();
        with_junk[600] = 0xff;
        expect_hello(InitialReader::new().feed(&with_junk));
        with_junk[515] = 0xff;
        expect_hello(InitialReader::new().feed(&with_junk));
    }

    #[test]
    fn the_answer_is_final() {
        let mut reader = InitialReader::new();
        let hello = reader.feed(AIOQUIC_V1);
        expect_hello(hello.clone());
        assert_eq!(reader.feed(b"garbage"), hello);
        let mut failed = InitialReader::new();
        let error = failed.feed(b"garbage");
        assert!(matches!(error, Outcome::Error(_)));
        assert_eq!(failed.feed(AIOQUIC_V1), error);
    }

    #[test]
    fn crypto_frames_out_of_order_within_and_across_packets() {
        let hello = hello_message();
        let mut frames = crypto_frame(200, &hello[200..]);
        frames.extend_from_slice(&[0x01]); // PING between them, as Chromium does
        frames.extend(crypto_frame(0, &hello[..100]));
        let first = initial(Version::V1, DCID, SCID, 7, &frames, 1200);
        let second = initial(
            Version::V1,
            DCID,
            SCID,
            8,
            &crypto_frame(100, &hello[100..200]),
            1200,
        );
        let outcomes = read_all(&[&first, &second]);
        assert_eq!(outcomes[0], Outcome::NeedMore);
        let hello = expect_hello(outcomes[1].clone());
        assert_eq!(hello.sni.as_deref(), Some("a.test"));
        assert_eq!(hello.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(hello.scid.as_bytes(), SCID);
    }

    #[test]
    fn a_hello_split_at_any_offset_completes_with_both_halves_in_either_order() {
        let hello = hello_message();
        for cut in 1..hello.len() {
            let head = initial(
                Version::V1,
                DCID,
                SCID,
                0,
                &crypto_frame(0, &hello[..cut]),
                1200,
            );
            let tail_frame = crypto_frame(cut as u64, &hello[cut..]);
            let tail = initial(Version::V1, DCID, SCID, 1, &tail_frame, 1200);
            for order in [[&head, &tail], [&tail, &head]] {
                let outcomes = read_all(&[order[0], order[1]]);
                assert_eq!(outcomes[0], Outcome::NeedMore, "cut at {cut}");
                let read = expect_hello(outcomes[1].clone());
                assert_eq!(read.sni.as_deref(), Some("a.test"), "cut at {cut}");
            }
        }
    }

    #[test]
    fn coalesced_initials_are_read_until_trailing_padding() {
        let hello = hello_message();
        let mut datagram = initial(
            Version::V2,
            DCID,
            SCID,
            0,
            &crypto_frame(0, &hello[..150]),
            0,
        );
        datagram.extend(initial(
            Version::V2,
            DCID,
            SCID,
            1,
            &crypto_frame(150, &hello[150..]),
            0,
        ));
        datagram.resize(1200, 0);
        let hello = expect_hello(InitialReader::new().feed(&datagram));
        assert_eq!(hello.version, Version::V2);
    }

    #[test]
    fn coalesced_packets_for_another_connection_or_unparsable_are_skipped() {
        let hello = hello_message();
        let mut datagram = initial(
            Version::V1,
            DCID,
            SCID,
            0,
            &crypto_frame(0, &hello[..150]),
            0,
        );
        // An Initial for another DCID, which would fail the flow if it were read.
        datagram.extend(initial(
            Version::V1,
            &[7; 8],
            SCID,
            1,
            &crypto_frame(0, b"xx"),
            0,
        ));
        // A 0-RTT packet of this connection, then bytes that are not a packet.
        datagram.extend_from_slice(&[
            0xd0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 2, 0xaa, 0xbb,
        ]);
        datagram.extend_from_slice(&[0x40, 1, 2, 3]);
        datagram.resize(1200, 0);
        let mut reader = InitialReader::new();
        assert_eq!(reader.feed(&datagram), Outcome::NeedMore);
        let rest = initial(
            Version::V1,
            DCID,
            SCID,
            1,
            &crypto_frame(150, &hello[150..]),
            1200,
        );
        expect_hello(reader.feed(&rest));
    }

    #[test]
    fn conflicting_crypto_bytes_are_an_error() {
        let hello = hello_message();
        let mut changed = hello[..50].to_vec();
        changed[40] ^= 1;
        let outcomes = read_all(&[
            &initial(
                Version::V1,
                DCID,
                SCID,
                0,
                &crypto_frame(0, &hello[..50]),
                1200,
            ),
            &initial(Version::V1, DCID, SCID, 1, &crypto_frame(0, &changed), 1200),
        ]);
        assert_eq!(outcomes[1], Outcome::Error(QuicError::CryptoMismatch(40)));
    }

    #[test]
    fn crypto_beyond_the_bound_is_an_error() {
        let frames = crypto_frame(MAX_CRYPTO_STREAM as u64 - 1, b"ab");
        assert_eq!(
            InitialReader::new().feed(&initial(Version::V1, DCID, SCID, 0, &frames, 1200)),
            Outcome::Error(QuicError::CryptoOutOfRange)
        );
        // A hello whose length field says 16 KiB is refused before waiting for it.
        let frames = crypto_frame(0, &[1, 0, 0x40, 0]);
        assert_eq!(
            InitialReader::new().feed(&initial(Version::V1, DCID, SCID, 0, &frames, 1200)),
            Outcome::Error(QuicError::CryptoOutOfRange)
        );
    }

    #[test]
    fn a_stream_not_starting_with_a_client_hello_is_an_error() {
        let frames = crypto_frame(0, &[2, 0, 0, 1, 0]);
        assert_eq!(
            InitialReader::new().feed(&initial(Version::V1, DCID, SCID, 0, &frames, 1200)),
            Outcome::Error(QuicError::NotClientHello(2))
        );
    }

    #[test]
    fn a_hello_that_does_not_parse_is_an_error() {
        let frames = crypto_frame(0, &[1, 0, 0, 3, 0xff, 0xff, 0xff]);
        assert!(matches!(
            InitialReader::new().feed(&initial(Version::V1, DCID, SCID, 0, &frames, 1200)),
            Outcome::Error(QuicError::ClientHello(_))
        ));
    }

    #[test]
    fn frames_not_allowed_in_initials_are_errors() {
        let mut frames = crypto_frame(0, &hello_message()[..10]);
        frames.extend_from_slice(&[0x08, 0x00, 0x01, 0xaa]); // STREAM
        assert_eq!(
            InitialReader::new().feed(&initial(Version::V1, DCID, SCID, 0, &frames, 1200)),
            Outcome::Error(QuicError::ForbiddenFrame(0x08))
        );
        let close = [0x1c, 0x01, 0x00, 0x00];
        assert_eq!(
            InitialReader::new().feed(&initial(Version::V2, DCID, SCID, 0, &close, 1200)),
            Outcome::Error(QuicError::ConnectionClosed(1))
        );
    }

    #[test]
    fn initials_in_small_datagrams_are_dropped() {
        let frames = crypto_frame(0, hello_message());
        assert_eq!(
            InitialReader::new().feed(&initial(Version::V1, DCID, SCID, 0, &frames, 1199)),
            Outcome::Error(QuicError::ShortDatagram(1199))
        );
    }

    #[test]
    fn reserved_header_bits_are_an_error_once_authenticated() {
        let mut header = vec![0xc0 | 0x0c | 0x01, 0, 0, 0, 1, DCID.len() as u8];
        header.extend_from_slice(DCID);
        header.extend_from_slice(&[0, 0]); // no SCID, no token
        let payload_len = 1200 - header.len() - 2 - 2 - 16;
        header.extend_from_slice(&((2 + payload_len + 16) as u16 | 0x4000).to_be_bytes());
        header.extend_from_slice(&[0, 0]);
        let mut payload = crypto_frame(0, hello_message());
        payload.resize(payload_len, 0);
        let packet = seal(Version::V1, DCID, &header, 0, &payload);
        assert_eq!(
            InitialReader::new().feed(&packet),
            Outcome::Error(QuicError::Malformed("reserved header bits are set"))
        );
    }

    #[test]
    fn a_second_connection_in_the_flow_is_an_error() {
        let hello = hello_message();
        let outcomes = read_all(&[
            &initial(
                Version::V1,
                DCID,
                SCID,
                0,
                &crypto_frame(0, &hello[..10]),
                1200,
            ),
            &initial(
                Version::V1,
                &[8; 8],
                SCID,
                1,
                &crypto_frame(10, &hello[10..]),
                1200,
            ),
        ]);
        assert_eq!(outcomes[1], Outcome::Error(QuicError::FlowMismatch));
        let outcomes = read_all(&[
            &initial(
                Version::V1,
                DCID,
                SCID,
                0,
                &crypto_frame(0, &hello[..10]),
                1200,
            ),
            &initial(
                Version::V2,
                DCID,
                SCID,
                1,
                &crypto_frame(10, &hello[10..]),
                1200,
            ),
        ]);
        assert_eq!(outcomes[1], Outcome::Error(QuicError::FlowMismatch));
    }

    #[test]
    fn flows_are_bounded_in_datagrams_and_bytes() {
        let partial = initial(
            Version::V1,
            DCID,
            SCID,
            0,
            &crypto_frame(0, &hello_message()[..10]),
            1200,
        );
        let mut reader = InitialReader::new();
        for _ in 0..MAX_FLOW_DATAGRAMS {
            assert_eq!(reader.feed(&partial), Outcome::NeedMore);
        }
        assert_eq!(
            reader.feed(&partial),
            Outcome::Error(QuicError::TooManyDatagrams)
        );

        let mut jumbo = partial.clone();
        jumbo.resize(MAX_FLOW_BYTES / 2 + 1, 0);
        let outcomes = read_all(&[&jumbo, &jumbo]);
        assert_eq!(outcomes[0], Outcome::NeedMore);
        assert_eq!(outcomes[1], Outcome::Error(QuicError::TooManyBytes));
    }

    #[test]
    fn tampered_ciphertext_is_an_error() {
        // Bytes in the protected payload and tag of aioquic's 515-byte packet.
        for index in [30, 300, 514] {
            let mut tampered = AIOQUIC_V1.to_vec();
            tampered[index] ^= 0x80;
            assert_eq!(
                InitialReader::new().feed(&tampered),
                Outcome::Error(QuicError::Decrypt),
                "byte {index}"
            );
        }
    }

    #[test]
    fn every_truncation_of_a_captured_initial_is_an_error() {
        // aioquic's packet ends at byte 515; everything after is padding.
        for len in 0..515 {
            assert!(
                matches!(
                    InitialReader::new().feed(&AIOQUIC_V1[..len]),
                    Outcome::Error(_)
                ),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn unknown_versions_and_garbage_are_errors() {
        let mut other_version = CHROMIUM_V1[0].to_vec();
        other_version[1..5].copy_from_slice(&0xff00_001du32.to_be_bytes());
        assert_eq!(
            InitialReader::new().feed(&other_version),
            Outcome::Error(QuicError::UnsupportedVersion(0xff00_001d))
        );
        for garbage in [&b""[..], &[0; 1200], b"GET / HTTP/1.1\r\n", &[0xff; 1300]] {
            assert!(
                matches!(InitialReader::new().feed(garbage), Outcome::Error(_)),
                "{garbage:02x?}"
            );
        }
        // A short header first is not the start of a connection.
        assert_eq!(
            InitialReader::new().feed(&[0x40; 1200]),
            Outcome::Error(QuicError::NotLongHeader)
        );
    }
}
