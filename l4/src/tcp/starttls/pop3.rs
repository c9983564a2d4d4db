//! POP3 STARTTLS: the STLS command (RFC 2595 §4, over RFC 1939 and RFC 2449).
//!
//! [`Front`]: the router greets with `+OK` (without an APOP timestamp, so that no client
//! computes a digest over a greeting the backend never sent), answers CAPA (listing
//! STLS), NOOP and QUIT, refuses USER, PASS, APOP and AUTH until TLS, and hands off on
//! `STLS`. Commands pipelined after STLS close the connection.
//!
//! [`Back`]: toward the backend the router requires a `+OK` greeting; in passthrough
//! mode it then sends `STLS` and requires `+OK`. In termination mode the greeting is
//! all: after TLS the client starts afresh with CAPA or USER, which the backend answers.

use bytes::BytesMut;

use super::{BackError, BackStep, FrontError, FrontStep, Handoff, Mode, line};

/// RFC 2449 §4: a command line is at most 255 octets, CRLF included.
const MAX_COMMAND_LINE: usize = 255;
/// RFC 2449 §4: a response line is at most 512 octets, CRLF included.
const MAX_REPLY_LINE: usize = 512;

/// The router as a POP3 server before TLS.
#[derive(Debug, Default)]
pub struct Front {
    commands: usize,
}

impl Front {
    pub fn new() -> Front {
        Front::default()
    }

    pub fn greeting(&self) -> Vec<u8> {
        b"+OK Sallyport ready\r\n".to_vec()
    }

    pub fn receive(&mut self, buf: &mut BytesMut) -> FrontStep {
        let refusals = line::Refusals {
            too_long: b"-ERR Line too long\r\n",
            too_many: b"-ERR Too many commands without STLS\r\n",
        };
        let line = match line::next_command(buf, MAX_COMMAND_LINE, &mut self.commands, &refusals) {
            Ok(line) => line,
            Err(step) => return step,
        };
        let (command, args) = line::split_word(&line);
        match command.to_ascii_uppercase().as_slice() {
            b"CAPA" => reply(b"+OK Capability list follows\r\nSTLS\r\n.\r\n"),
            b"NOOP" => reply(b"+OK\r\n"),
            b"QUIT" => close(b"+OK Bye\r\n", FrontError::Quit),
            b"STLS" if !args.is_empty() => reply(b"-ERR STLS takes no arguments\r\n"),
            b"STLS" if !buf.is_empty() => close(
                b"-ERR Commands sent after STLS\r\n",
                FrontError::Pipelined("STLS"),
            ),
            b"STLS" => FrontStep::StartTls {
                reply: b"+OK Begin TLS negotiation\r\n".to_vec(),
                handoff: Handoff::Pop3,
            },
            b"USER" | b"PASS" | b"APOP" | b"AUTH" => reply(b"-ERR [AUTH] Use STLS first\r\n"),
            _ => reply(b"-ERR Unknown command\r\n"),
        }
    }
}

fn reply(text: &[u8]) -> FrontStep {
    FrontStep::Reply(text.to_vec())
}

fn close(text: &[u8], reason: FrontError) -> FrontStep {
    FrontStep::Close {
        reply: text.to_vec(),
        reason,
    }
}

/// The router as the POP3 client of the backend.
#[derive(Debug)]
pub struct Back {
    mode: Mode,
    asked: bool,
}

impl Back {
    pub fn new(mode: Mode) -> Back {
        Back { mode, asked: false }
    }

    pub fn receive(&mut self, buf: &mut BytesMut) -> Result<BackStep, BackError> {
        let Some(line) = line::take(buf, MAX_REPLY_LINE).map_err(|_| BackError::TooLong)? else {
            return Ok(BackStep::NeedMore);
        };
        let ok = line.starts_with(b"+OK");
        match (self.asked, self.mode) {
            (false, _) if !ok => Err(BackError::Unexpected {
                expected: "a \"+OK\" greeting",
                got: super::excerpt(&line),
            }),
            (false, Mode::Passthrough) => {
                self.asked = true;
                Ok(BackStep::Send(b"STLS\r\n".to_vec()))
            }
            (true, _) if !ok => Err(BackError::Unexpected {
                expected: "+OK to STLS",
                got: super::excerpt(&line),
            }),
            (false, Mode::Terminate) | (true, _) if !buf.is_empty() => Err(BackError::Unsolicited),
            (false, Mode::Terminate) | (true, _) => Ok(BackStep::Ready),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::MAX_COMMANDS;
    use super::*;

    fn run(front: &mut Front, input: &[u8]) -> (String, FrontStep) {
        super::super::replies_to(input, |buf| front.receive(buf))
    }

    #[test]
    fn a_client_lists_capabilities_then_asks_for_stls() {
        let mut f = Front::new();
        let (said, step) = run(&mut f, b"CAPA\r\nUSER bob\r\nnoop\r\nSTLS\r\n");
        assert_eq!(
            said,
            "+OK Capability list follows\r\nSTLS\r\n.\r\n-ERR [AUTH] Use STLS first\r\n+OK\r\n"
        );
        assert_eq!(
            step,
            FrontStep::StartTls {
                reply: b"+OK Begin TLS negotiation\r\n".to_vec(),
                handoff: Handoff::Pop3
            }
        );
    }

    #[test]
    fn bad_clients_are_closed() {
        let (_, step) = run(&mut Front::new(), b"STLS\r\nUSER x\r\n");
        assert!(matches!(
            step,
            FrontStep::Close {
                reason: FrontError::Pipelined("STLS"),
                ..
            }
        ));
        let (_, step) = run(&mut Front::new(), &[b'x'; MAX_COMMAND_LINE]);
        assert!(matches!(
            step,
            FrontStep::Close {
                reason: FrontError::LineTooLong(_),
                ..
            }
        ));
        let (said, step) = run(&mut Front::new(), &b"WHAT\r\n".repeat(MAX_COMMANDS + 1));
        assert_eq!(said.matches("-ERR Unknown command").count(), MAX_COMMANDS);
        assert!(matches!(
            step,
            FrontStep::Close {
                reason: FrontError::TooManyCommands,
                ..
            }
        ));
        let (_, step) = run(&mut Front::new(), b"QUIT\r\n");
        assert!(matches!(
            step,
            FrontStep::Close {
                reason: FrontError::Quit,
                ..
            }
        ));
    }

    #[test]
    fn passthrough_sends_stls_to_the_backend() {
        let mut back = Back::new(Mode::Passthrough);
        let mut buf = BytesMut::from(&b"+OK Dovecot (Debian) ready.\r\n"[..]);
        assert_eq!(
            back.receive(&mut buf),
            Ok(BackStep::Send(b"STLS\r\n".to_vec()))
        );
        assert_eq!(back.receive(&mut buf), Ok(BackStep::NeedMore));
        buf.extend_from_slice(b"+OK Begin TLS negotiation now.\r\n");
        assert_eq!(back.receive(&mut buf), Ok(BackStep::Ready));
    }

    #[test]
    fn termination_reads_the_greeting_only_and_refusals_are_reported() {
        let mut back = Back::new(Mode::Terminate);
        let mut buf = BytesMut::from(&b"+OK ready\r\n"[..]);
        assert_eq!(back.receive(&mut buf), Ok(BackStep::Ready));
        let mut back = Back::new(Mode::Terminate);
        let mut buf = BytesMut::from(&b"-ERR go away\r\n"[..]);
        assert!(matches!(
            back.receive(&mut buf),
            Err(BackError::Unexpected { .. })
        ));
        let mut back = Back::new(Mode::Passthrough);
        let mut buf = BytesMut::from(&b"+OK hi\r\n-ERR TLS not available\r\n"[..]);
        back.receive(&mut buf).unwrap();
        assert!(matches!(
            back.receive(&mut buf),
            Err(BackError::Unexpected {
                expected: "+OK to STLS",
                ..
            })
        ));
    }
}
