//! Line framing for the text protocols (SMTP, IMAP, POP3): one CRLF- (or bare LF-)
//! terminated line at a time off the front of a buffer, bounded in length.

use bytes::{Bytes, BytesMut};

use super::FrontError;

/// The first byte of a TLS handshake record (RFC 8446 §5.1).
const TLS_HANDSHAKE: u8 = 0x16;

/// Why no line could be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TooLong;

/// Takes the first complete line off `buf`, without its line ending. `Ok(None)`: no
/// complete line yet. A line longer than `max` bytes (ending included) is an error as
/// soon as that many bytes are buffered without an end.
pub(super) fn take(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, TooLong> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= max {
            Err(TooLong)
        } else {
            Ok(None)
        };
    };
    if end + 1 > max {
        return Err(TooLong);
    }
    let mut line = buf.split_to(end + 1);
    line.truncate(end);
    if line.last() == Some(&b'\r') {
        line.truncate(end - 1);
    }
    Ok(Some(line.freeze()))
}

/// [`take`] for a client command: also recognises a client that starts TLS without
/// asking (its first byte is a handshake record, never the start of a command).
pub(super) fn command(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrontError> {
    if buf.first() == Some(&TLS_HANDSHAKE) {
        return Err(FrontError::TlsBeforeStarttls);
    }
    take(buf, max).map_err(|TooLong| FrontError::LineTooLong(max))
}

/// What a text protocol answers before it closes a dialogue that broke its bounds.
pub struct Refusals {
    /// To a line over its length limit.
    pub too_long: &'static [u8],
    /// To the command beyond [`MAX_COMMANDS`](super::MAX_COMMANDS) that still is not STARTTLS.
    pub too_many: &'static [u8],
}

/// The client's next command line, counted in `commands`. `Err` is the step to take instead:
/// read more, or close (a line too long, TLS without asking, one command too many).
/// A returned line is shorter than `max` (its line ending, at least one byte, counts).
/// Public for the fuzz target (`fuzz/fuzz_targets/starttls.rs`), which checks that bound.
pub fn next_command(
    buf: &mut BytesMut,
    max: usize,
    commands: &mut usize,
    refusals: &Refusals,
) -> Result<Bytes, super::FrontStep> {
    let line = match command(buf, max) {
        Ok(Some(line)) => line,
        Ok(None) => return Err(super::FrontStep::NeedMore),
        Err(reason) => {
            let reply = match reason {
                FrontError::LineTooLong(_) => refusals.too_long.to_vec(),
                _ => Vec::new(),
            };
            return Err(super::FrontStep::Close { reply, reason });
        }
    };
    *commands += 1;
    if *commands > super::MAX_COMMANDS {
        return Err(super::FrontStep::Close {
            reply: refusals.too_many.to_vec(),
            reason: FrontError::TooManyCommands,
        });
    }
    Ok(line)
}

/// Splits a command line into its first word and the rest (leading spaces trimmed).
pub(super) fn split_word(line: &[u8]) -> (&[u8], &[u8]) {
    let line = line.trim_ascii_start();
    match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], line[i + 1..].trim_ascii()),
        None => (line.trim_ascii_end(), &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_with_crlf_or_lf_and_wait_for_their_end() {
        let mut buf = BytesMut::from(&b"EHLO a\r\nNOOP\nQU"[..]);
        assert_eq!(
            take(&mut buf, 512).unwrap().as_deref(),
            Some(&b"EHLO a"[..])
        );
        assert_eq!(take(&mut buf, 512).unwrap().as_deref(), Some(&b"NOOP"[..]));
        assert_eq!(take(&mut buf, 512).unwrap(), None);
        assert_eq!(&buf[..], b"QU");
    }

    #[test]
    fn long_lines_are_refused_before_their_end_arrives() {
        let mut buf = BytesMut::from(&[b'a'; 10][..]);
        assert_eq!(take(&mut buf, 10), Err(TooLong));
        // The limit counts the line ending: 9 bytes + CRLF is one too many.
        let mut buf = BytesMut::from(&b"123456789\r\n"[..]);
        assert_eq!(take(&mut buf, 10), Err(TooLong));
        let mut buf = BytesMut::from(&b"12345678\r\n"[..]);
        assert!(take(&mut buf, 10).unwrap().is_some());
    }

    #[test]
    fn a_client_hello_is_not_a_command() {
        let mut buf = BytesMut::from(&[0x16, 3, 1, 0, 200][..]);
        assert_eq!(command(&mut buf, 512), Err(FrontError::TlsBeforeStarttls));
    }

    #[test]
    fn words_split_on_the_first_space() {
        assert_eq!(
            split_word(b"EHLO  client.test "),
            (&b"EHLO"[..], &b"client.test"[..])
        );
        assert_eq!(split_word(b"STARTTLS"), (&b"STARTTLS"[..], &b""[..]));
        assert_eq!(split_word(b""), (&b""[..], &b""[..]));
    }
}
