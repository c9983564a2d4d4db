//! The two messages of the gRPC health protocol (`grpc.health.v1.Health/Check`) that health
//! checks need, encoded and decoded by hand: they are one optional field each, so a protobuf
//! library would be all cost.
//!
//! A gRPC message travels in a length-prefixed frame: one flag byte (1 = compressed), a 4-byte
//! big-endian length, then the protobuf bytes. `HealthCheckRequest{service=""}` is the empty
//! message; `HealthCheckResponse` is `status = 1` (an enum, varint encoded).

/// The method path of the health check.
pub(crate) const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// `HealthCheckRequest{}` in its frame: uncompressed, zero bytes long.
pub(crate) const CHECK_REQUEST: [u8; 5] = [0, 0, 0, 0, 0];

/// `ServingStatus.SERVING`.
pub(crate) const SERVING: u64 = 1;

const FRAME_HEADER: usize = 5;

/// Why a health response could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("the response has no complete gRPC message")]
    Truncated,
    #[error("the response message is compressed, which was not asked for")]
    Compressed,
    #[error("the response message is not valid protobuf")]
    Malformed,
}

/// The `status` of the first `HealthCheckResponse` in `body` (0, UNKNOWN, when absent).
pub(crate) fn serving_status(body: &[u8]) -> Result<u64, DecodeError> {
    let header = body.get(..FRAME_HEADER).ok_or(DecodeError::Truncated)?;
    if header[0] != 0 {
        return Err(DecodeError::Compressed);
    }
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let message = body
        .get(FRAME_HEADER..FRAME_HEADER.saturating_add(length))
        .ok_or(DecodeError::Truncated)?;
    status_field(message)
}

/// Reads field 1 of a message, skipping unknown fields; the last occurrence wins, as protobuf
/// parsers do.
fn status_field(mut message: &[u8]) -> Result<u64, DecodeError> {
    let mut status = 0;
    while !message.is_empty() {
        let key = varint(&mut message)?;
        let (field, wire_type) = (key >> 3, key & 7);
        match wire_type {
            0 => {
                let value = varint(&mut message)?;
                if field == 1 {
                    status = value;
                }
            }
            1 => message = message.get(8..).ok_or(DecodeError::Malformed)?,
            2 => {
                let length =
                    usize::try_from(varint(&mut message)?).map_err(|_| DecodeError::Malformed)?;
                message = message.get(length..).ok_or(DecodeError::Malformed)?;
            }
            5 => message = message.get(4..).ok_or(DecodeError::Malformed)?,
            _ => return Err(DecodeError::Malformed),
        }
    }
    Ok(status)
}

/// A base-128 varint of at most 10 bytes, advancing `bytes` past it.
fn varint(bytes: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Ok(value);
        }
    }
    Err(DecodeError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(message: &[u8]) -> Vec<u8> {
        let mut framed = vec![0];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(message);
        framed
    }

    #[test]
    fn reads_serving_and_not_serving() {
        assert_eq!(serving_status(&frame(&[0x08, 0x01])), Ok(SERVING));
        assert_eq!(serving_status(&frame(&[0x08, 0x02])), Ok(2));
    }

    #[test]
    fn an_empty_message_is_unknown() {
        assert_eq!(serving_status(&frame(&[])), Ok(0));
    }

    #[test]
    fn unknown_fields_are_skipped_and_the_last_status_wins() {
        // field 2 string "ab", field 3 fixed32, field 4 fixed64, status 2 then status 1.
        let message = [
            0x12, 0x02, b'a', b'b', 0x1d, 1, 2, 3, 4, 0x21, 1, 2, 3, 4, 5, 6, 7, 8, 0x08, 0x02,
            0x08, 0x01,
        ];
        assert_eq!(serving_status(&frame(&message)), Ok(SERVING));
    }

    #[test]
    fn multi_byte_varints_decode() {
        assert_eq!(serving_status(&frame(&[0x08, 0x96, 0x01])), Ok(150));
    }

    #[test]
    fn broken_frames_are_errors_not_panics() {
        assert_eq!(serving_status(&[]), Err(DecodeError::Truncated));
        assert_eq!(serving_status(&[0, 0, 0]), Err(DecodeError::Truncated));
        assert_eq!(
            serving_status(&[0, 0, 0, 0, 9, 8]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            serving_status(&[1, 0, 0, 0, 0]),
            Err(DecodeError::Compressed)
        );
        assert_eq!(serving_status(&frame(&[0x08])), Err(DecodeError::Malformed));
        assert_eq!(serving_status(&frame(&[0x0b])), Err(DecodeError::Malformed));
        assert_eq!(
            serving_status(&frame(&[0x12, 0x05, 1])),
            Err(DecodeError::Malformed)
        );
        assert_eq!(
            serving_status(&frame(&[0xff; 11])),
            Err(DecodeError::Malformed)
        );
        assert_eq!(
            serving_status(&[0, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn the_request_is_an_empty_uncompressed_message() {
        assert_eq!(serving_status(&CHECK_REQUEST), Ok(0));
    }
}
