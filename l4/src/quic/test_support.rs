//! Builders for protected client Initials, so tests can say exactly which frames a packet
//! carries. Sealing uses rustls' client-side Initial keys, the mirror of what the reader opens.

use rustls::Side;
use rustls::quic::Keys;

use super::packet::Version;

pub(crate) fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|digit| {
            char::from(digit)
                .to_digit(16)
                .map_or(0, |value| value as u8)
        })
        .collect();
    digits
        .chunks(2)
        .map(|pair| pair[0] << 4 | pair[1])
        .collect()
}

fn client_keys(version: Version, dcid: &[u8]) -> Keys {
    rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .and_then(|suite| suite.quic_suite())
        .expect("aws-lc-rs has QUIC support for AES-128-GCM")
        .keys(dcid, Side::Client, version.rustls())
}

/// Protects a packet whose unprotected `header` ends with a packet number of the length its
/// first byte gives (RFC 9001 §5.3, §5.4).
pub(crate) fn seal(
    version: Version,
    dcid: &[u8],
    header: &[u8],
    pn: u64,
    payload: &[u8],
) -> Vec<u8> {
    let keys = client_keys(version, dcid);
    let pn_len = usize::from(header[0] & 0x03) + 1;
    let pn_offset = header.len() - pn_len;
    let mut packet = header.to_vec();
    let mut body = payload.to_vec();
    let tag = keys
        .local
        .packet
        .encrypt_in_place(pn, header, &mut body)
        .expect("payload fits the AEAD");
    packet.extend_from_slice(&body);
    packet.extend_from_slice(tag.as_ref());
    let sample_at = pn_offset + 4;
    let sample = packet[sample_at..sample_at + 16].to_vec();
    let (first, rest) = packet.split_at_mut(1);
    keys.local
        .header
        .encrypt_in_place(
            &sample,
            &mut first[0],
            &mut rest[pn_offset - 1..pn_offset - 1 + pn_len],
        )
        .expect("sample is 16 bytes");
    packet
}

/// A client Initial with the given frames, a 2-byte packet number and PADDING up to
/// `datagram_len` bytes in all.
pub(crate) fn initial(
    version: Version,
    dcid: &[u8],
    scid: &[u8],
    pn: u64,
    frames: &[u8],
    datagram_len: usize,
) -> Vec<u8> {
    let type_bits = match version {
        Version::V1 => 0x00,
        Version::V2 => 0x10,
    };
    let mut header = vec![0xc0 | type_bits | 0x01];
    header.extend_from_slice(&version.wire().to_be_bytes());
    header.push(dcid.len() as u8);
    header.extend_from_slice(dcid);
    header.push(scid.len() as u8);
    header.extend_from_slice(scid);
    header.push(0); // no token
    const PN_LEN: usize = 2;
    const TAG_LEN: usize = 16;
    // The Length field is 2 bytes; the sample needs 20 bytes after the packet number start.
    let fixed = header.len() + 2 + PN_LEN + TAG_LEN;
    let payload_len = frames.len().max(datagram_len.saturating_sub(fixed)).max(4);
    let length = (PN_LEN + payload_len + TAG_LEN) as u16 | 0x4000;
    header.extend_from_slice(&length.to_be_bytes());
    header.extend_from_slice(&(pn as u16).to_be_bytes());
    let mut payload = frames.to_vec();
    payload.resize(payload_len, 0);
    seal(version, dcid, &header, pn, &payload)
}

/// A CRYPTO frame with 2-byte varints for offset and length.
pub(crate) fn crypto_frame(offset: u64, data: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x06];
    frame.extend_from_slice(&(offset as u16 | 0x4000).to_be_bytes());
    frame.extend_from_slice(&(data.len() as u16 | 0x4000).to_be_bytes());
    frame.extend_from_slice(data);
    frame
}
