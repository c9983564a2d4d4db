//! Feeds the QUIC Initial reader two ways: the input as raw datagrams, and the input as the
//! plaintext frames of Initials that this target seals with the real client keys (random bytes
//! never pass the AEAD, so only sealing reaches frame parsing, CRYPTO reassembly and the
//! ClientHello). Neither may panic, and `classify` must agree with the reader.
#![no_main]

use l4::quic::{Classification, InitialReader, Outcome, Version, classify};
use libfuzzer_sys::fuzz_target;
use rustls::Side;

const DCID: &[u8] = &[0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];

fuzz_target!(|data: &[u8]| {
    raw(data);
    sealed(data);
});

/// The whole input as one datagram, then split in two at a point the first byte picks.
fn raw(data: &[u8]) {
    let outcome = InitialReader::new().feed(data);
    match (classify(data), &outcome) {
        // A datagram that does not start with a long header can never start a flow.
        (Classification::NotQuic | Classification::MaybeShort, outcome) => {
            assert!(matches!(outcome, Outcome::Error(_)), "{outcome:?}");
        }
        (
            Classification::Initial {
                version,
                dcid,
                scid,
            },
            Outcome::ClientHello(hello),
        ) => {
            assert_eq!((hello.version, hello.dcid.as_bytes()), (version, dcid));
            assert_eq!(hello.scid.as_bytes(), scid);
        }
        _ => {}
    }
    if let Some(&cut) = data.first() {
        let cut = usize::from(cut).min(data.len());
        let mut reader = InitialReader::new();
        let first = reader.feed(&data[..cut]);
        let second = reader.feed(&data[cut..]);
        // A final answer stays final.
        if first != Outcome::NeedMore {
            assert_eq!(first, second);
        }
    }
}

/// The first byte picks the version (bit 0) and splits the rest into one to four Initials.
fn sealed(data: &[u8]) {
    let Some((&control, frames)) = data.split_first() else {
        return;
    };
    let version = if control & 1 == 0 {
        Version::V1
    } else {
        Version::V2
    };
    let packets = 1 + usize::from(control >> 1) % 4;
    let chunk = frames.len().div_ceil(packets).max(1);
    let mut reader = InitialReader::new();
    for (pn, payload) in frames.chunks(chunk).enumerate() {
        // A payload too big for a 2-byte Length field is not a datagram a client sends.
        if payload.len() > 16_000 {
            return;
        }
        let outcome = reader.feed(&seal_initial(version, pn as u16, payload));
        if let Outcome::ClientHello(hello) = outcome {
            assert_eq!(hello.version, version);
            assert_eq!(hello.dcid.as_bytes(), DCID);
        }
    }
}

/// A client Initial carrying `payload`, padded with PADDING frames to 1200 bytes, protected
/// as RFC 9001 §5 (and RFC 9369 §3.3 for version 2) says.
fn seal_initial(version: Version, pn: u16, payload: &[u8]) -> Vec<u8> {
    let rustls_version = match version {
        Version::V1 => rustls::quic::Version::V1,
        Version::V2 => rustls::quic::Version::V2,
    };
    let keys = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .and_then(|suite| suite.quic_suite())
        .expect("ring supports QUIC with AES-128-GCM")
        .keys(DCID, Side::Client, rustls_version);
    let type_bits = if version == Version::V1 { 0x00 } else { 0x10 };
    let mut packet = vec![0xc0 | type_bits | 0x01];
    packet.extend_from_slice(&version.wire().to_be_bytes());
    packet.push(DCID.len() as u8);
    packet.extend_from_slice(DCID);
    packet.extend_from_slice(&[0, 0]); // no SCID, no token
    const TAG_LEN: usize = 16;
    let mut body = payload.to_vec();
    body.resize(body.len().max(1200 - packet.len() - 4 - TAG_LEN), 0);
    packet.extend_from_slice(&((2 + body.len() + TAG_LEN) as u16 | 0x4000).to_be_bytes());
    let pn_offset = packet.len();
    packet.extend_from_slice(&pn.to_be_bytes());
    let tag = keys
        .local
        .packet
        .encrypt_in_place(u64::from(pn), &packet, &mut body)
        .expect("payload fits the AEAD");
    packet.extend_from_slice(&body);
    packet.extend_from_slice(tag.as_ref());
    let sample = packet[pn_offset + 4..pn_offset + 20].to_vec();
    let (first, rest) = packet.split_at_mut(1);
    keys.local
        .header
        .encrypt_in_place(
            &sample,
            &mut first[0],
            &mut rest[pn_offset - 1..pn_offset + 1],
        )
        .expect("sample is 16 bytes");
    packet
}
