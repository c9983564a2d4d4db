//! The frames of a decrypted Initial packet (RFC 9000 §19): walks them, hands CRYPTO data
//! to the caller and rejects any frame type an Initial may not carry (RFC 9000 §12.4,
//! Table 3), which a QUIC endpoint would treat as a connection error.

use super::QuicError;
use super::packet::Reader;

const PADDING: u64 = 0x00;
const PING: u64 = 0x01;
const ACK: u64 = 0x02;
const ACK_ECN: u64 = 0x03;
const CRYPTO: u64 = 0x06;
/// CONNECTION_CLOSE of the transport kind; the application kind (0x1d) needs 1-RTT keys.
const CONNECTION_CLOSE: u64 = 0x1c;

/// Calls `on_crypto(offset, data)` for each CRYPTO frame in `payload`, in packet order.
///
/// Fails on the first frame that is truncated or not allowed in an Initial, on an empty
/// payload (RFC 9000 §12.4: a packet must carry a frame), and on CONNECTION_CLOSE: the
/// client has given up on the connection.
pub(crate) fn for_each_crypto_frame(
    payload: &[u8],
    mut on_crypto: impl FnMut(u64, &[u8]) -> Result<(), QuicError>,
) -> Result<(), QuicError> {
    if payload.is_empty() {
        return Err(QuicError::Malformed("Initial packet without frames"));
    }
    let mut reader = Reader::new(payload);
    while !reader.is_empty() {
        match reader.varint("frame type")? {
            PADDING | PING => {}
            kind @ (ACK | ACK_ECN) => skip_ack(&mut reader, kind == ACK_ECN)?,
            CRYPTO => {
                let offset = reader.varint("CRYPTO offset")?;
                let data = reader.length_prefixed_varint("CRYPTO data")?;
                on_crypto(offset, data)?;
            }
            CONNECTION_CLOSE => {
                let code = reader.varint("CONNECTION_CLOSE error code")?;
                reader.varint("CONNECTION_CLOSE frame type")?;
                reader.length_prefixed_varint("CONNECTION_CLOSE reason")?;
                return Err(QuicError::ConnectionClosed(code));
            }
            other => return Err(QuicError::ForbiddenFrame(other)),
        }
    }
    Ok(())
}

/// Skips an ACK frame (RFC 9000 §19.3). Every range costs at least two bytes, so a huge
/// range count ends in `Truncated` after at most the payload's length in steps.
fn skip_ack(reader: &mut Reader<'_>, ecn: bool) -> Result<(), QuicError> {
    reader.varint("ACK largest acknowledged")?;
    reader.varint("ACK delay")?;
    let ranges = reader.varint("ACK range count")?;
    reader.varint("ACK first range")?;
    for _ in 0..ranges {
        reader.varint("ACK gap")?;
        reader.varint("ACK range length")?;
    }
    if ecn {
        for _ in 0..3 {
            reader.varint("ACK ECN count")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crypto_frames(payload: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, QuicError> {
        let mut frames = Vec::new();
        for_each_crypto_frame(payload, |offset, data| {
            frames.push((offset, data.to_vec()));
            Ok(())
        })?;
        Ok(frames)
    }

    #[test]
    fn crypto_frames_come_out_between_ping_ack_and_padding() {
        let payload = [
            0x01, // PING
            0x06, 0x05, 0x02, 0xaa, 0xbb, // CRYPTO offset 5, 2 bytes
            0x02, 0x00, 0x00, 0x01, 0x00, 0x03, 0x01, // ACK with one extra range
            0x03, 0x00, 0x00, 0x00, 0x00, 0x07, 0x08, 0x09, // ACK_ECN, three counts
            0x06, 0x40, 0x00, 0x01, 0xcc, // CRYPTO offset 0 (2-byte varint), 1 byte
            0x00, 0x00, 0x00, // PADDING
        ];
        assert_eq!(
            crypto_frames(&payload),
            Ok(vec![(5, vec![0xaa, 0xbb]), (0, vec![0xcc])])
        );
    }

    #[test]
    fn frames_an_initial_may_not_carry_are_errors() {
        // STREAM, NEW_TOKEN, HANDSHAKE_DONE, application CONNECTION_CLOSE.
        for kind in [0x08, 0x07, 0x1e, 0x1d] {
            assert_eq!(
                crypto_frames(&[0x01, kind, 0, 0, 0]),
                Err(QuicError::ForbiddenFrame(u64::from(kind)))
            );
        }
        assert_eq!(
            crypto_frames(&[]),
            Err(QuicError::Malformed("Initial packet without frames"))
        );
    }

    #[test]
    fn connection_close_ends_the_read() {
        assert_eq!(
            crypto_frames(&[0x1c, 0x0a, 0x06, 0x02, b'n', b'o']),
            Err(QuicError::ConnectionClosed(0x0a))
        );
    }

    #[test]
    fn truncated_frames_are_errors() {
        for payload in [
            &[0x06][..],
            &[0x06, 0x00],
            &[0x06, 0x00, 0x05, 1, 2],
            &[0x02, 0x00, 0x00, 0x3f, 0x00, 0x00],
            &[0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
            &[0x1c, 0x00, 0x00, 0x04],
            &[0x40],
        ] {
            assert!(
                matches!(crypto_frames(payload), Err(QuicError::Truncated(_))),
                "{payload:02x?}"
            );
        }
    }
}
