//! The CRYPTO stream of the Initial packet number space, rebuilt from frames that may
//! arrive out of order, repeated, or re-split differently on retransmission.
//!
//! The buffer is bounded ([`MAX_CRYPTO_STREAM`]); it owns only the bytes, not their meaning:
//! the reader decides when the contiguous prefix holds a whole ClientHello.

use super::QuicError;

/// Most bytes of the Initial CRYPTO stream kept per flow. A post-quantum ClientHello is
/// about 2 KB; 16 KiB admits the largest a TLS record could carry (RFC 8446 §5.1) while
/// bounding what one unauthenticated client can make us hold.
pub const MAX_CRYPTO_STREAM: usize = 16 * 1024;

/// Received CRYPTO bytes and which offsets are filled.
#[derive(Debug, Default)]
pub(crate) struct CryptoStream {
    /// Grows to the highest end offset seen, at most [`MAX_CRYPTO_STREAM`].
    bytes: Vec<u8>,
    /// One bit per byte of `bytes`: set once that offset has been received.
    filled: Vec<u64>,
    /// Length of the gap-free prefix starting at offset 0.
    contiguous: usize,
}

impl CryptoStream {
    /// Adds the CRYPTO frame data `data` at `offset`. Bytes already received must be the
    /// same as before: two versions of one offset mean a broken or malicious sender.
    pub(crate) fn insert(&mut self, offset: u64, data: &[u8]) -> Result<(), QuicError> {
        let start = usize::try_from(offset).map_err(|_| QuicError::CryptoOutOfRange)?;
        let end = start
            .checked_add(data.len())
            .filter(|&end| end <= MAX_CRYPTO_STREAM)
            .ok_or(QuicError::CryptoOutOfRange)?;
        if end > self.bytes.len() {
            self.bytes.resize(end, 0);
            self.filled.resize(end.div_ceil(64), 0);
        }
        for (index, &byte) in (start..end).zip(data) {
            let (word, bit) = (index / 64, 1u64 << (index % 64));
            if self.filled[word] & bit != 0 {
                if self.bytes[index] != byte {
                    return Err(QuicError::CryptoMismatch(index as u64));
                }
            } else {
                self.bytes[index] = byte;
                self.filled[word] |= bit;
            }
        }
        while self.contiguous < self.bytes.len()
            && self.filled[self.contiguous / 64] & (1 << (self.contiguous % 64)) != 0
        {
            self.contiguous += 1;
        }
        Ok(())
    }

    /// The received bytes from offset 0 up to the first gap.
    pub(crate) fn contiguous(&self) -> &[u8] {
        &self.bytes[..self.contiguous]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_frames_fill_the_prefix() {
        let mut stream = CryptoStream::default();
        stream.insert(3, b"def").unwrap();
        assert_eq!(stream.contiguous(), b"");
        stream.insert(0, b"ab").unwrap();
        assert_eq!(stream.contiguous(), b"ab");
        stream.insert(2, b"c").unwrap();
        assert_eq!(stream.contiguous(), b"abcdef");
    }

    #[test]
    fn duplicates_and_consistent_overlaps_are_accepted() {
        let mut stream = CryptoStream::default();
        stream.insert(0, b"hello").unwrap();
        stream.insert(0, b"hello").unwrap();
        stream.insert(3, b"lo wor").unwrap();
        stream.insert(1, b"ell").unwrap();
        stream.insert(9, b"").unwrap();
        assert_eq!(stream.contiguous(), b"hello wor");
    }

    #[test]
    fn overlaps_with_different_bytes_are_errors() {
        let mut stream = CryptoStream::default();
        stream.insert(0, b"hello").unwrap();
        assert_eq!(stream.insert(3, b"LO"), Err(QuicError::CryptoMismatch(3)));
    }

    #[test]
    fn data_past_the_bound_is_an_error() {
        let mut stream = CryptoStream::default();
        stream.insert(MAX_CRYPTO_STREAM as u64 - 1, b"x").unwrap();
        assert_eq!(
            stream.insert(MAX_CRYPTO_STREAM as u64, b"x"),
            Err(QuicError::CryptoOutOfRange)
        );
        assert_eq!(
            stream.insert(MAX_CRYPTO_STREAM as u64, b""),
            Ok(()),
            "an empty frame at the bound adds nothing"
        );
        assert_eq!(
            stream.insert((1 << 62) - 1, b"x"),
            Err(QuicError::CryptoOutOfRange)
        );
        assert_eq!(
            stream.insert(u64::MAX, b""),
            Err(QuicError::CryptoOutOfRange)
        );
    }
}
