//! Initial packet protection (RFC 9001 §5): derives the client's Initial keys from the
//! Destination Connection ID, removes header protection and opens the AEAD.
//!
//! The cryptography is rustls' (`rustls::quic::Keys::initial` with the aws-lc-rs provider's
//! TLS_AES_128_GCM_SHA256, which RFC 9001 §5.2 fixes for Initials); this module only finds
//! the sample, the packet number and the associated data in the packet.

use rustls::Side;
use rustls::quic::{DirectionalKeys, Keys};

use super::QuicError;
use super::packet::{InitialPacket, Version};

/// The packet number is sampled as if it were 4 bytes long (RFC 9001 §5.4.2).
const MAX_PN_LEN: usize = 4;
/// The AES-based header protection samples 16 bytes of ciphertext (RFC 9001 §5.4.3).
const SAMPLE_LEN: usize = 16;
/// Bits of a long header's first byte that are reserved and must be zero once header
/// protection is off (RFC 9000 §17.2).
const RESERVED_BITS: u8 = 0x0c;

/// The keys that open a client's Initial packets for one Destination Connection ID.
pub(crate) struct ClientInitialKeys {
    keys: DirectionalKeys,
}

impl ClientInitialKeys {
    /// Derives the client Initial keys for `dcid` (RFC 9001 §5.2, RFC 9369 §3.3).
    pub(crate) fn new(version: Version, dcid: &[u8]) -> Result<Self, QuicError> {
        let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
            .tls13()
            .and_then(|suite| suite.quic_suite())
            .ok_or(QuicError::CryptoUnavailable)?;
        // As the server side, the "remote" keys are the ones the client sealed with.
        let Keys { remote, .. } = suite.keys(dcid, Side::Server, version.rustls());
        Ok(Self { keys: remote })
    }

    /// Removes header protection from `packet`, then decrypts and authenticates its payload.
    /// `largest_pn` is the largest packet number opened so far in this flow, used to expand
    /// the truncated packet number (RFC 9000 §17.1).
    pub(crate) fn open(
        &self,
        packet: &InitialPacket<'_>,
        largest_pn: Option<u64>,
    ) -> Result<Opened, QuicError> {
        let mut bytes = packet.bytes.to_vec();
        let pn_offset = packet.pn_offset;
        let sample_at = pn_offset + MAX_PN_LEN;
        let Some(sample) = bytes
            .get(sample_at..sample_at + SAMPLE_LEN)
            .and_then(|sample| <[u8; SAMPLE_LEN]>::try_from(sample).ok())
        else {
            return Err(QuicError::Truncated(
                "Initial too short for its header protection sample",
            ));
        };
        let (header, rest) = bytes.split_at_mut(pn_offset);
        let (Some(first), Some(pn_field)) = (header.first_mut(), rest.get_mut(..MAX_PN_LEN)) else {
            return Err(QuicError::Truncated("packet number"));
        };
        self.keys
            .header
            .decrypt_in_place(&sample, first, pn_field)
            .map_err(|_| QuicError::Decrypt)?;
        let pn_len = usize::from(bytes[0] & 0x03) + 1;
        let header_len = pn_offset + pn_len;
        let truncated = bytes[pn_offset..header_len]
            .iter()
            .fold(0u64, |pn, &byte| pn << 8 | u64::from(byte));
        let packet_number = decode_packet_number(largest_pn, truncated, pn_len);
        let (header, payload) = bytes.split_at_mut(header_len);
        let plain_len = self
            .keys
            .packet
            .decrypt_in_place(packet_number, header, payload)
            .map_err(|_| QuicError::Decrypt)?
            .len();
        // Checked only now: before authentication the bits could be anyone's.
        if bytes[0] & RESERVED_BITS != 0 {
            return Err(QuicError::Malformed("reserved header bits are set"));
        }
        bytes.drain(..header_len);
        bytes.truncate(plain_len);
        Ok(Opened {
            packet_number,
            payload: bytes,
        })
    }
}

/// A decrypted Initial packet.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) packet_number: u64,
    /// The frames.
    pub(crate) payload: Vec<u8>,
}

/// Expands a truncated packet number to the one closest to the next expected
/// (RFC 9000 §17.1 and Appendix A.3).
fn decode_packet_number(largest_pn: Option<u64>, truncated: u64, pn_len: usize) -> u64 {
    let expected = largest_pn.map_or(0, |pn| pn.saturating_add(1));
    let window = 1u64 << (pn_len * 8);
    let half = window / 2;
    let candidate = (expected & !(window - 1)) | truncated;
    if candidate.saturating_add(half) <= expected && candidate < (1 << 62) - window {
        candidate + window
    } else if candidate > expected.saturating_add(half) && candidate >= window {
        candidate - window
    } else {
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quic::packet::{Packet, parse_long};
    use crate::quic::test_support::{hex, seal};

    /// RFC 9001 Appendix A and RFC 9369 Appendix A use this client-chosen DCID.
    const DCID: &str = "8394c8f03e515708";

    /// The CRYPTO frame of RFC 9001 A.2 (the same in RFC 9369 A.2): a ClientHello for
    /// `example.com`. PADDING makes the payload 1162 bytes.
    const RFC_CRYPTO_FRAME: &str = "
        060040f1010000ed0303ebf8fa56f129 39b9584a3896472ec40bb863cfd3e868
        04fe3a47f06a2b69484c000004130113 02010000c000000010000e00000b6578
        616d706c652e636f6dff01000100000a 00080006001d00170018001000070005
        04616c706e0005000501000000000033 00260024001d00209370b2c9caa47fba
        baf4559fedba753de171fa71f50f1ce1 5d43e994ec74d748002b000302030400
        0d0010000e0403050306030203080408 050806002d00020101001c0002400100
        3900320408ffffffffffffffff050480 00ffff07048000ffff08011001048000
        75300901100f088394c8f03e51570806 048000ffff";
    const RFC_PAYLOAD_LEN: usize = 1162;

    /// RFC 9001 A.2: unprotected header (packet number 2 on 4 bytes), then the protected packet.
    const V1_HEADER: &str = "c300000001088394c8f03e5157080000449e00000002";
    const V1_PROTECTED: &str = "
        c000000001088394c8f03e5157080000 449e7b9aec34d1b1c98dd7689fb8ec11
        d242b123dc9bd8bab936b47d92ec356c 0bab7df5976d27cd449f63300099f399
        1c260ec4c60d17b31f8429157bb35a12 82a643a8d2262cad67500cadb8e7378c
        8eb7539ec4d4905fed1bee1fc8aafba1 7c750e2c7ace01e6005f80fcb7df6212
        30c83711b39343fa028cea7f7fb5ff89 eac2308249a02252155e2347b63d58c5
        457afd84d05dfffdb20392844ae81215 4682e9cf012f9021a6f0be17ddd0c208
        4dce25ff9b06cde535d0f920a2db1bf3 62c23e596d11a4f5a6cf3948838a3aec
        4e15daf8500a6ef69ec4e3feb6b1d98e 610ac8b7ec3faf6ad760b7bad1db4ba3
        485e8a94dc250ae3fdb41ed15fb6a8e5 eba0fc3dd60bc8e30c5c4287e53805db
        059ae0648db2f64264ed5e39be2e20d8 2df566da8dd5998ccabdae053060ae6c
        7b4378e846d29f37ed7b4ea9ec5d82e7 961b7f25a9323851f681d582363aa5f8
        9937f5a67258bf63ad6f1a0b1d96dbd4 faddfcefc5266ba6611722395c906556
        be52afe3f565636ad1b17d508b73d874 3eeb524be22b3dcbc2c7468d54119c74
        68449a13d8e3b95811a198f3491de3e7 fe942b330407abf82a4ed7c1b311663a
        c69890f4157015853d91e923037c227a 33cdd5ec281ca3f79c44546b9d90ca00
        f064c99e3dd97911d39fe9c5d0b23a22 9a234cb36186c4819e8b9c5927726632
        291d6a418211cc2962e20fe47feb3edf 330f2c603a9d48c0fcb5699dbfe58964
        25c5bac4aee82e57a85aaf4e2513e4f0 5796b07ba2ee47d80506f8d2c25e50fd
        14de71e6c418559302f939b0e1abd576 f279c4b2e0feb85c1f28ff18f58891ff
        ef132eef2fa09346aee33c28eb130ff2 8f5b766953334113211996d20011a198
        e3fc433f9f2541010ae17c1bf202580f 6047472fb36857fe843b19f5984009dd
        c324044e847a4f4a0ab34f719595de37 252d6235365e9b84392b061085349d73
        203a4a13e96f5432ec0fd4a1ee65accd d5e3904df54c1da510b0ff20dcc0c77f
        cb2c0e0eb605cb0504db87632cf3d8b4 dae6e705769d1de354270123cb11450e
        fc60ac47683d7b8d0f811365565fd98c 4c8eb936bcab8d069fc33bd801b03ade
        a2e1fbc5aa463d08ca19896d2bf59a07 1b851e6c239052172f296bfb5e724047
        90a2181014f3b94a4e97d117b4381303 68cc39dbb2d198065ae3986547926cd2
        162f40a29f0c3c8745c0f50fba3852e5 66d44575c29d39a03f0cda721984b6f4
        40591f355e12d439ff150aab7613499d bd49adabc8676eef023b15b65bfc5ca0
        6948109f23f350db82123535eb8a7433 bdabcb909271a6ecbcb58b936a88cd4e
        8f2e6ff5800175f113253d8fa9ca8885 c2f552e657dc603f252e1a8e308f76f0
        be79e2fb8f5d5fbbe2e30ecadd220723 c8c0aea8078cdfcb3868263ff8f09400
        54da48781893a7e49ad5aff4af300cd8 04a6b6279ab3ff3afb64491c85194aab
        760d58a606654f9f4400e8b38591356f bf6425aca26dc85244259ff2b19c41b9
        f96f3ca9ec1dde434da7d2d392b905dd f3d1f9af93d1af5950bd493f5aa731b4
        056df31bd267b6b90a079831aaf579be 0a39013137aac6d404f518cfd4684064
        7e78bfe706ca4cf5e9c5453e9f7cfd2b 8b4c8d169a44e55c88d4a9a7f9474241
        e221af44860018ab0856972e194cd934";

    /// RFC 9369 A.2: the same payload under version 2 (Initial type bits 01).
    const V2_HEADER: &str = "d36b3343cf088394c8f03e5157080000449e00000002";
    const V2_PROTECTED: &str = "
        d76b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485
        dd04de806071bf03dceebfa162e75d6c96058bdbfb127cdfcbf903388e99ad04
        9f9a3dd4425ae4d0992cfff18ecf0fdb5a842d09747052f17ac2053d21f57c5d
        250f2c4f0e0202b70785b7946e992e58a59ac52dea6774d4f03b55545243cf1a
        12834e3f249a78d395e0d18f4d766004f1a2674802a747eaa901c3f10cda5500
        cb9122faa9f1df66c392079a1b40f0de1c6054196a11cbea40afb6ef5253cd68
        18f6625efce3b6def6ba7e4b37a40f7732e093daa7d52190935b8da58976ff33
        12ae50b187c1433c0f028edcc4c2838b6a9bfc226ca4b4530e7a4ccee1bfa2a3
        d396ae5a3fb512384b2fdd851f784a65e03f2c4fbe11a53c7777c023462239dd
        6f7521a3f6c7d5dd3ec9b3f233773d4b46d23cc375eb198c63301c21801f6520
        bcfb7966fc49b393f0061d974a2706df8c4a9449f11d7f3d2dcbb90c6b877045
        636e7c0c0fe4eb0f697545460c806910d2c355f1d253bc9d2452aaa549e27a1f
        ac7cf4ed77f322e8fa894b6a83810a34b361901751a6f5eb65a0326e07de7c12
        16ccce2d0193f958bb3850a833f7ae432b65bc5a53975c155aa4bcb4f7b2c4e5
        4df16efaf6ddea94e2c50b4cd1dfe06017e0e9d02900cffe1935e0491d77ffb4
        fdf85290fdd893d577b1131a610ef6a5c32b2ee0293617a37cbb08b847741c3b
        8017c25ca9052ca1079d8b78aebd47876d330a30f6a8c6d61dd1ab5589329de7
        14d19d61370f8149748c72f132f0fc99f34d766c6938597040d8f9e2bb522ff9
        9c63a344d6a2ae8aa8e51b7b90a4a806105fcbca31506c446151adfeceb51b91
        abfe43960977c87471cf9ad4074d30e10d6a7f03c63bd5d4317f68ff325ba3bd
        80bf4dc8b52a0ba031758022eb025cdd770b44d6d6cf0670f4e990b22347a7db
        848265e3e5eb72dfe8299ad7481a408322cac55786e52f633b2fb6b614eaed18
        d703dd84045a274ae8bfa73379661388d6991fe39b0d93debb41700b41f90a15
        c4d526250235ddcd6776fc77bc97e7a417ebcb31600d01e57f32162a8560cacc
        7e27a096d37a1a86952ec71bd89a3e9a30a2a26162984d7740f81193e8238e61
        f6b5b984d4d3dfa033c1bb7e4f0037febf406d91c0dccf32acf423cfa1e70710
        10d3f270121b493ce85054ef58bada42310138fe081adb04e2bd901f2f13458b
        3d6758158197107c14ebb193230cd1157380aa79cae1374a7c1e5bbcb80ee23e
        06ebfde206bfb0fcbc0edc4ebec309661bdd908d532eb0c6adc38b7ca7331dce
        8dfce39ab71e7c32d318d136b6100671a1ae6a6600e3899f31f0eed19e3417d1
        34b90c9058f8632c798d4490da4987307cba922d61c39805d072b589bd52fdf1
        e86215c2d54e6670e07383a27bbffb5addf47d66aa85a0c6f9f32e59d85a44dd
        5d3b22dc2be80919b490437ae4f36a0ae55edf1d0b5cb4e9a3ecabee93dfc6e3
        8d209d0fa6536d27a5d6fbb17641cde27525d61093f1b28072d111b2b4ae5f89
        d5974ee12e5cf7d5da4d6a31123041f33e61407e76cffcdcfd7e19ba58cf4b53
        6f4c4938ae79324dc402894b44faf8afbab35282ab659d13c93f70412e85cb19
        9a37ddec600545473cfb5a05e08d0b209973b2172b4d21fb69745a262ccde96b
        a18b2faa745b6fe189cf772a9f84cbfc";

    fn rfc_payload() -> Vec<u8> {
        let mut payload = hex(RFC_CRYPTO_FRAME);
        payload.resize(RFC_PAYLOAD_LEN, 0);
        payload
    }

    fn open_rfc_packet(protected: &[u8], version: Version) -> Result<Opened, QuicError> {
        let (Packet::Initial(packet), used) = parse_long(protected)? else {
            panic!("the RFC packet is an Initial");
        };
        assert_eq!(used, protected.len());
        assert_eq!(packet.version, version);
        ClientInitialKeys::new(version, packet.dcid.as_bytes())?.open(&packet, None)
    }

    /// Sealing the RFC's plaintext with the derived client keys must give the RFC's packet
    /// byte for byte: this checks the key, IV and header protection key of Appendix A.1
    /// (rustls does not expose the key bytes) as well as the protected packet of A.2.
    #[test]
    fn rfc_9001_client_initial_seals_to_the_published_packet() {
        let sealed = seal(Version::V1, &hex(DCID), &hex(V1_HEADER), 2, &rfc_payload());
        assert_eq!(sealed, hex(V1_PROTECTED));
    }

    #[test]
    fn rfc_9369_client_initial_seals_to_the_published_packet() {
        let sealed = seal(Version::V2, &hex(DCID), &hex(V2_HEADER), 2, &rfc_payload());
        assert_eq!(sealed, hex(V2_PROTECTED));
    }

    #[test]
    fn rfc_9001_client_initial_opens_to_its_crypto_frame() {
        let opened = open_rfc_packet(&hex(V1_PROTECTED), Version::V1).unwrap();
        assert_eq!(opened.packet_number, 2);
        assert_eq!(opened.payload, rfc_payload());
    }

    #[test]
    fn rfc_9369_client_initial_opens_to_its_crypto_frame() {
        let opened = open_rfc_packet(&hex(V2_PROTECTED), Version::V2).unwrap();
        assert_eq!(opened.packet_number, 2);
        assert_eq!(opened.payload, rfc_payload());
    }

    #[test]
    fn version_one_keys_do_not_open_a_version_two_packet() {
        let mut protected = hex(V2_PROTECTED);
        // Relabel as version 1 (type bits 01 are 0-RTT there, so make them 00 too).
        protected[0] &= !0x30;
        protected[1..5].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(
            open_rfc_packet(&protected, Version::V1).err(),
            Some(QuicError::Decrypt)
        );
    }

    #[test]
    fn any_flipped_bit_fails_to_open() {
        let original = hex(V1_PROTECTED);
        // Every byte after the version and connection IDs: token and Length fields change the
        // parse, the packet number and payload change the AEAD input.
        for index in [
            0,
            18,
            19,
            21,
            22,
            100,
            original.len() - 17,
            original.len() - 1,
        ] {
            let mut tampered = original.clone();
            tampered[index] ^= 0x04;
            let result = open_rfc_packet(&tampered, Version::V1);
            assert!(
                matches!(result, Err(QuicError::Decrypt | QuicError::Malformed(_))),
                "byte {index}: {result:?}"
            );
        }
    }

    #[test]
    fn packets_too_short_to_sample_are_errors() {
        // Header, then fewer than 4 + 16 bytes after the packet number offset.
        let mut packet = hex("c000000001088394c8f03e5157080000");
        packet.push(19);
        packet.extend_from_slice(&[0; 19]);
        let (Packet::Initial(initial), _) = parse_long(&packet).unwrap() else {
            panic!("an Initial");
        };
        let keys = ClientInitialKeys::new(Version::V1, &hex(DCID)).unwrap();
        assert!(matches!(
            keys.open(&initial, None),
            Err(QuicError::Truncated(_))
        ));
    }

    #[test]
    fn packet_numbers_expand_as_in_rfc_9000_appendix_a3() {
        // The RFC's example: largest 0xa82f30ea, 2-byte truncated 0x9b32.
        assert_eq!(
            decode_packet_number(Some(0xa82f_30ea), 0x9b32, 2),
            0xa82f_9b32
        );
        assert_eq!(decode_packet_number(None, 0, 1), 0);
        assert_eq!(decode_packet_number(None, 20, 4), 20);
        assert_eq!(decode_packet_number(Some(20), 21, 1), 21);
        // Wrapping forwards past a one-byte window.
        assert_eq!(decode_packet_number(Some(254), 1, 1), 257);
        // A late packet from just before the window.
        assert_eq!(decode_packet_number(Some(300), 0xff, 1), 255);
    }
}
