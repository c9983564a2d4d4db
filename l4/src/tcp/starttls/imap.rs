//! IMAP STARTTLS (RFC 3501 §6.2.1, RFC 2595).
//!
//! [`Front`]: the router greets with `* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED]`,
//! answers CAPABILITY, NOOP and LOGOUT, refuses LOGIN and AUTHENTICATE until TLS, and
//! hands off on `<tag> STARTTLS` (`<tag> OK`). Commands pipelined after STARTTLS close
//! the connection.
//!
//! [`Back`]: toward the backend the router requires an `* OK` greeting (not `PREAUTH`
//! or `BYE`); in passthrough mode it then sends STARTTLS with the client's tag and
//! requires the tagged `OK`. In termination mode the greeting is all: after TLS the
//! client asks for the capabilities again (RFC 3501 §6.2.1) and the backend answers.

use bytes::BytesMut;

use super::{BackError, BackStep, FrontError, FrontStep, Handoff, Mode, line};

/// Commands before TLS are short (no literals are accepted there); RFC 7162 §4 asks
/// servers to accept lines of 8192 octets, which matters only after login.
const MAX_COMMAND_LINE: usize = 1024;
/// Greetings carry a capability list, which can be long on feature-rich servers.
const MAX_REPLY_LINE: usize = 4096;

const CAPABILITIES: &str = "IMAP4rev1 STARTTLS LOGINDISABLED";

/// The router as an IMAP server before TLS.
#[derive(Debug, Default)]
pub struct Front {
    commands: usize,
}

impl Front {
    pub fn new() -> Front {
        Front::default()
    }

    pub fn greeting(&self) -> Vec<u8> {
        format!("* OK [CAPABILITY {CAPABILITIES}] Sallyport ready\r\n").into_bytes()
    }

    pub fn receive(&mut self, buf: &mut BytesMut) -> FrontStep {
        let refusals = line::Refusals {
            too_long: b"* BYE Line too long\r\n",
            too_many: b"* BYE Too many commands without STARTTLS\r\n",
        };
        let line = match line::next_command(buf, MAX_COMMAND_LINE, &mut self.commands, &refusals) {
            Ok(line) => line,
            Err(step) => return step,
        };
        let (tag, rest) = line::split_word(&line);
        if !valid_tag(tag) {
            return FrontStep::Reply(b"* BAD Invalid tag\r\n".to_vec());
        }
        let tag = String::from_utf8_lossy(tag);
        let (command, args) = line::split_word(rest);
        match command.to_ascii_uppercase().as_slice() {
            b"CAPABILITY" => FrontStep::Reply(
                format!("* CAPABILITY {CAPABILITIES}\r\n{tag} OK CAPABILITY completed\r\n")
                    .into_bytes(),
            ),
            b"NOOP" => FrontStep::Reply(format!("{tag} OK NOOP completed\r\n").into_bytes()),
            b"LOGOUT" => close(
                format!("* BYE Logging out\r\n{tag} OK LOGOUT completed\r\n").into_bytes(),
                FrontError::Quit,
            ),
            b"STARTTLS" if !args.is_empty() => {
                FrontStep::Reply(format!("{tag} BAD STARTTLS takes no arguments\r\n").into_bytes())
            }
            b"STARTTLS" if !buf.is_empty() => close(
                b"* BYE Commands sent after STARTTLS\r\n".to_vec(),
                FrontError::Pipelined("STARTTLS"),
            ),
            b"STARTTLS" => FrontStep::StartTls {
                reply: format!("{tag} OK Begin TLS negotiation now\r\n").into_bytes(),
                handoff: Handoff::Imap {
                    tag: tag.into_owned(),
                },
            },
            b"LOGIN" | b"AUTHENTICATE" => FrontStep::Reply(
                format!("{tag} NO [PRIVACYREQUIRED] Use STARTTLS first\r\n").into_bytes(),
            ),
            _ => FrontStep::Reply(
                format!("{tag} BAD Command not permitted before STARTTLS\r\n").into_bytes(),
            ),
        }
    }
}

/// A tag is one or more ASTRING-CHARs other than `+` (RFC 3501 §9).
fn valid_tag(tag: &[u8]) -> bool {
    !tag.is_empty()
        && tag.iter().all(|&b| {
            b.is_ascii_graphic()
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
        })
}

fn close(reply: Vec<u8>, reason: FrontError) -> FrontStep {
    FrontStep::Close { reply, reason }
}

/// The router as the IMAP client of the backend.
#[derive(Debug)]
pub struct Back {
    tag: String,
    mode: Mode,
    /// Whether STARTTLS was sent (passthrough only).
    asked: bool,
}

impl Back {
    pub fn new(tag: &str, mode: Mode) -> Back {
        Back {
            tag: tag.to_owned(),
            mode,
            asked: false,
        }
    }

    pub fn receive(&mut self, buf: &mut BytesMut) -> Result<BackStep, BackError> {
        loop {
            let Some(line) = line::take(buf, MAX_REPLY_LINE).map_err(|_| BackError::TooLong)?
            else {
                return Ok(BackStep::NeedMore);
            };
            let (first, rest) = line::split_word(&line);
            let (status, _) = line::split_word(rest);
            let status = status.to_ascii_uppercase();
            if !self.asked {
                if first != b"*" || status != b"OK" {
                    return Err(BackError::Unexpected {
                        expected: "an \"* OK\" greeting",
                        got: super::excerpt(&line),
                    });
                }
                if self.mode == Mode::Terminate {
                    return self.after_greeting(buf);
                }
                self.asked = true;
                return Ok(BackStep::Send(
                    format!("{} STARTTLS\r\n", self.tag).into_bytes(),
                ));
            }
            // Untagged data (a capability list) may come before the tagged answer.
            if first == b"*" {
                continue;
            }
            if first != self.tag.as_bytes() || status != b"OK" {
                return Err(BackError::Unexpected {
                    expected: "OK to STARTTLS",
                    got: super::excerpt(&line),
                });
            }
            return ready(buf);
        }
    }
}

impl Back {
    /// Termination: more untagged status lines may follow the greeting (Dovecot first
    /// says `* OK Waiting for authentication process to respond..` when its
    /// authentication is slow to start); those already here are dropped, later ones reach
    /// the client, which accepts untagged OK responses at any time (RFC 3501 §7.1).
    fn after_greeting(&self, buf: &mut BytesMut) -> Result<BackStep, BackError> {
        while buf.starts_with(b"* ") {
            if line::take(buf, MAX_REPLY_LINE)
                .map_err(|_| BackError::TooLong)?
                .is_none()
            {
                break;
            }
        }
        ready(buf)
    }
}

fn ready(buf: &BytesMut) -> Result<BackStep, BackError> {
    if buf.is_empty() {
        Ok(BackStep::Ready)
    } else {
        Err(BackError::Unsolicited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(front: &mut Front, input: &[u8]) -> (String, FrontStep) {
        super::super::replies_to(input, |buf| front.receive(buf))
    }

    #[test]
    fn a_client_asks_for_capabilities_then_starttls() {
        let mut f = Front::new();
        assert_eq!(
            f.greeting(),
            b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] Sallyport ready\r\n"
        );
        // As `openssl s_client -starttls imap` talks.
        let (said, step) = run(&mut f, b". CAPABILITY\r\n. STARTTLS\r\n");
        assert_eq!(
            said,
            "* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n. OK CAPABILITY completed\r\n"
        );
        assert_eq!(
            step,
            FrontStep::StartTls {
                reply: b". OK Begin TLS negotiation now\r\n".to_vec(),
                handoff: Handoff::Imap { tag: ".".into() },
            }
        );
    }

    #[test]
    fn login_is_refused_and_bad_tags_get_untagged_bad() {
        let mut f = Front::new();
        let (said, step) = run(
            &mut f,
            b"a1 LOGIN user pass\r\n+x NOOP\r\n\r\na2 SELECT INBOX\r\na3 noop\r\na4 starttls\r\n",
        );
        assert_eq!(
            said,
            "a1 NO [PRIVACYREQUIRED] Use STARTTLS first\r\n\
             * BAD Invalid tag\r\n* BAD Invalid tag\r\n\
             a2 BAD Command not permitted before STARTTLS\r\n\
             a3 OK NOOP completed\r\n"
        );
        assert!(
            matches!(step, FrontStep::StartTls { handoff: Handoff::Imap { tag }, .. } if tag == "a4")
        );
    }

    #[test]
    fn pipelining_oversized_lines_and_logout_close() {
        let (_, step) = run(&mut Front::new(), b"a STARTTLS\r\na LOGIN x y\r\n");
        assert!(matches!(
            step,
            FrontStep::Close {
                reason: FrontError::Pipelined(_),
                ..
            }
        ));
        let (_, step) = run(&mut Front::new(), &[b'a'; MAX_COMMAND_LINE]);
        assert!(matches!(
            step,
            FrontStep::Close {
                reason: FrontError::LineTooLong(_),
                ..
            }
        ));
        let (_, step) = run(&mut Front::new(), b"z LOGOUT\r\n");
        assert_eq!(
            step,
            FrontStep::Close {
                reply: b"* BYE Logging out\r\nz OK LOGOUT completed\r\n".to_vec(),
                reason: FrontError::Quit
            }
        );
    }

    /// Dovecot 2.3's greeting and STARTTLS answer in Debian's default configuration.
    const DOVECOT_GREETING: &[u8] = b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS LOGINDISABLED] Dovecot (Debian) ready.\r\n";

    #[test]
    fn passthrough_sends_starttls_with_the_clients_tag() {
        let mut back = Back::new("a4", Mode::Passthrough);
        let mut buf = BytesMut::from(DOVECOT_GREETING);
        assert_eq!(
            back.receive(&mut buf),
            Ok(BackStep::Send(b"a4 STARTTLS\r\n".to_vec()))
        );
        buf.extend_from_slice(
            b"* CAPABILITY IMAP4rev1 STARTTLS\r\na4 OK Begin TLS negotiation now.\r\n",
        );
        assert_eq!(back.receive(&mut buf), Ok(BackStep::Ready));
    }

    #[test]
    fn termination_reads_the_greeting_only() {
        let mut back = Back::new("a", Mode::Terminate);
        let mut buf = BytesMut::from(&b"* OK [CAPA"[..]);
        assert_eq!(back.receive(&mut buf), Ok(BackStep::NeedMore));
        buf.extend_from_slice(b"BILITY IMAP4rev1] ready\r\n");
        assert_eq!(back.receive(&mut buf), Ok(BackStep::Ready));
    }

    #[test]
    fn termination_drops_extra_untagged_lines_after_the_greeting() {
        let mut back = Back::new("a", Mode::Terminate);
        let mut buf = BytesMut::from(
            &b"* OK Waiting for authentication process to respond..\r\n\
               * OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot (Debian) ready.\r\n"[..],
        );
        assert_eq!(back.receive(&mut buf), Ok(BackStep::Ready));
        let mut back = Back::new("a", Mode::Terminate);
        let mut buf = BytesMut::from(&b"* OK ready\r\n+ go ahead\r\n"[..]);
        assert_eq!(back.receive(&mut buf), Err(BackError::Unsolicited));
    }

    #[test]
    fn unexpected_backend_answers_are_reported() {
        for greeting in [
            &b"* PREAUTH logged in\r\n"[..],
            b"* BYE busy\r\n",
            b"+OK pop3\r\n",
        ] {
            let mut back = Back::new("a", Mode::Terminate);
            let err = back.receive(&mut BytesMut::from(greeting));
            assert!(matches!(err, Err(BackError::Unexpected { .. })), "{err:?}");
        }
        let mut back = Back::new("a", Mode::Passthrough);
        let mut buf = BytesMut::from(DOVECOT_GREETING);
        back.receive(&mut buf).unwrap();
        buf.extend_from_slice(b"a BAD TLS support isn't enabled.\r\n");
        assert!(matches!(
            back.receive(&mut buf),
            Err(BackError::Unexpected {
                expected: "OK to STARTTLS",
                ..
            })
        ));
    }
}
