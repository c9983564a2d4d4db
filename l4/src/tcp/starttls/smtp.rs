//! SMTP STARTTLS (RFC 3207 over RFC 5321).
//!
//! [`Front`]: the router greets (`220`), answers EHLO/HELO advertising only STARTTLS,
//! NOOP, RSET and QUIT, refuses mail transactions with `530` until TLS, and hands off on
//! `STARTTLS` (`220 2.0.0 Ready`). Commands pipelined after STARTTLS are refused: bytes
//! that arrive before the `220` must never reach the TLS layer (CVE-2011-0411).
//!
//! [`Back`]: toward the backend the router reads its `220` greeting; in passthrough mode
//! it then replays `EHLO <client's name>`, requires STARTTLS in the answer, sends
//! `STARTTLS` and requires `220`. In termination mode the greeting is all: the client,
//! now in TLS, sends a fresh EHLO itself (RFC 3207 §4.2), which the backend answers.

use std::net::IpAddr;

use bytes::BytesMut;

use super::{BackError, BackStep, FrontError, FrontStep, Handoff, Mode, line};

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets, CRLF included.
const MAX_COMMAND_LINE: usize = 512;
/// RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets; allow some slack for
/// servers that exceed it in greetings.
const MAX_REPLY_LINE: usize = 1024;

/// The router as an SMTP server before TLS.
#[derive(Debug)]
pub struct Front {
    /// The address literal the router names itself by (RFC 5321 §4.1.3).
    domain: String,
    helo: Option<String>,
    commands: usize,
}

impl Front {
    pub fn new(local: IpAddr) -> Front {
        let domain = match local.to_canonical() {
            IpAddr::V4(a) => format!("[{a}]"),
            IpAddr::V6(a) => format!("[IPv6:{a}]"),
        };
        Front {
            domain,
            helo: None,
            commands: 0,
        }
    }

    pub fn greeting(&self) -> Vec<u8> {
        format!("220 {} ESMTP Sallyport\r\n", self.domain).into_bytes()
    }

    pub fn receive(&mut self, buf: &mut BytesMut) -> FrontStep {
        let refusals = line::Refusals {
            too_long: b"500 5.5.6 Line too long\r\n",
            too_many: b"421 4.7.0 Too many commands without STARTTLS\r\n",
        };
        let line = match line::next_command(buf, MAX_COMMAND_LINE, &mut self.commands, &refusals) {
            Ok(line) => line,
            Err(step) => return step,
        };
        let (verb, arg_bytes) = line::split_word(&line);
        let arg = String::from_utf8_lossy(arg_bytes);
        match verb.to_ascii_uppercase().as_slice() {
            b"EHLO" | b"HELO" if arg.is_empty() => reply(b"501 5.5.4 Syntax: EHLO hostname\r\n"),
            // The name is replayed to the backend: nothing but printable ASCII (a domain or
            // an address literal, RFC 5321 §4.1.1.1), so no control byte rides along.
            b"EHLO" | b"HELO" if !arg_bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') => {
                reply(b"501 5.5.4 Invalid domain name\r\n")
            }
            b"EHLO" => {
                self.helo = Some(arg.into_owned());
                FrontStep::Reply(format!("250-{}\r\n250 STARTTLS\r\n", self.domain).into_bytes())
            }
            b"HELO" => {
                self.helo = Some(arg.into_owned());
                FrontStep::Reply(format!("250 {}\r\n", self.domain).into_bytes())
            }
            b"STARTTLS" if !arg.is_empty() => {
                reply(b"501 5.5.4 Syntax error (no parameters allowed)\r\n")
            }
            b"STARTTLS" => match &self.helo {
                None => reply(b"503 5.5.1 Send EHLO first\r\n"),
                Some(_) if !buf.is_empty() => close(
                    b"554 5.5.0 Commands sent after STARTTLS\r\n",
                    FrontError::Pipelined("STARTTLS"),
                ),
                Some(helo) => FrontStep::StartTls {
                    reply: b"220 2.0.0 Ready to start TLS\r\n".to_vec(),
                    handoff: Handoff::Smtp { helo: helo.clone() },
                },
            },
            b"NOOP" | b"RSET" => reply(b"250 2.0.0 OK\r\n"),
            b"QUIT" => close(b"221 2.0.0 Bye\r\n", FrontError::Quit),
            b"MAIL" | b"RCPT" | b"DATA" | b"BDAT" | b"AUTH" | b"VRFY" | b"EXPN" | b"ETRN" => {
                reply(b"530 5.7.0 Must issue a STARTTLS command first\r\n")
            }
            _ => reply(b"500 5.5.2 Command not recognized\r\n"),
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

/// Where the backend dialogue stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting,
    Ehlo,
    StartTls,
    Done,
}

/// The router as the SMTP client of the backend, up to TLS (passthrough) or up to the
/// greeting (termination).
#[derive(Debug)]
pub struct Back {
    helo: String,
    mode: Mode,
    state: State,
    /// STARTTLS seen among the EHLO reply's lines so far.
    offers_starttls: bool,
}

impl Back {
    pub fn new(helo: &str, mode: Mode) -> Back {
        Back {
            helo: helo.to_owned(),
            mode,
            state: State::Greeting,
            offers_starttls: false,
        }
    }

    pub fn receive(&mut self, buf: &mut BytesMut) -> Result<BackStep, BackError> {
        loop {
            if self.state == State::Done {
                return Ok(BackStep::Ready);
            }
            let Some(line) = line::take(buf, MAX_REPLY_LINE).map_err(|_| BackError::TooLong)?
            else {
                return Ok(BackStep::NeedMore);
            };
            let (code, last, text) = parse_reply_line(&line)?;
            if self.state == State::Ehlo && text.trim_ascii().eq_ignore_ascii_case(b"STARTTLS") {
                self.offers_starttls = true;
            }
            if !last {
                continue;
            }
            let step = self.on_reply(code, &line)?;
            if self.state == State::Done && !buf.is_empty() {
                return Err(BackError::Unsolicited);
            }
            return Ok(step);
        }
    }

    fn on_reply(&mut self, code: u16, line: &[u8]) -> Result<BackStep, BackError> {
        let got = || super::excerpt(line);
        match self.state {
            State::Greeting if code != 220 => Err(BackError::Unexpected {
                expected: "a 220 greeting",
                got: got(),
            }),
            State::Greeting if self.mode == Mode::Terminate => {
                self.state = State::Done;
                Ok(BackStep::Ready)
            }
            State::Greeting => {
                self.state = State::Ehlo;
                Ok(BackStep::Send(
                    format!("EHLO {}\r\n", self.helo).into_bytes(),
                ))
            }
            State::Ehlo if code != 250 => Err(BackError::Unexpected {
                expected: "250 to EHLO",
                got: got(),
            }),
            State::Ehlo if !self.offers_starttls => Err(BackError::NoStarttls),
            State::Ehlo => {
                self.state = State::StartTls;
                Ok(BackStep::Send(b"STARTTLS\r\n".to_vec()))
            }
            State::StartTls if code != 220 => Err(BackError::Unexpected {
                expected: "220 to STARTTLS",
                got: got(),
            }),
            State::StartTls | State::Done => {
                self.state = State::Done;
                Ok(BackStep::Ready)
            }
        }
    }
}

/// `250-text` → (250, false, "text"); `250 text` or `250` → (250, true, "text").
fn parse_reply_line(line: &[u8]) -> Result<(u16, bool, &[u8]), BackError> {
    let malformed = || BackError::Unexpected {
        expected: "an SMTP reply",
        got: super::excerpt(line),
    };
    let (digits, rest) = line.split_at_checked(3).ok_or_else(malformed)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(malformed());
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match rest.split_first() {
        None => Ok((code, true, rest)),
        Some((b' ', text)) => Ok((code, true, text)),
        Some((b'-', text)) => Ok((code, false, text)),
        Some(_) => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::MAX_COMMANDS;
    use super::*;

    fn front() -> Front {
        Front::new([192, 0, 2, 7].into())
    }

    /// Feeds `input` and collects every answer until the dialogue hands off, closes or
    /// needs more.
    fn run(front: &mut Front, input: &[u8]) -> (String, FrontStep) {
        super::super::replies_to(input, |buf| front.receive(buf))
    }

    #[test]
    fn a_client_gets_the_greeting_ehlo_and_starttls_answers() {
        let mut f = front();
        assert_eq!(f.greeting(), b"220 [192.0.2.7] ESMTP Sallyport\r\n");
        // As Python's smtplib and `openssl s_client -starttls smtp` talk.
        let (said, step) = run(&mut f, b"ehlo client.example\r\nSTARTTLS\r\n");
        assert_eq!(said, "250-[192.0.2.7]\r\n250 STARTTLS\r\n");
        assert_eq!(
            step,
            FrontStep::StartTls {
                reply: b"220 2.0.0 Ready to start TLS\r\n".to_vec(),
                handoff: Handoff::Smtp {
                    helo: "client.example".into()
                },
            }
        );
    }

    #[test]
    fn ipv6_addresses_are_named_as_ipv6_literals() {
        let f = Front::new("2001:db8::1".parse().unwrap());
        assert_eq!(f.greeting(), b"220 [IPv6:2001:db8::1] ESMTP Sallyport\r\n");
    }

    #[test]
    fn mail_before_starttls_is_refused_and_the_dialogue_goes_on() {
        let mut f = front();
        let (said, step) = run(
            &mut f,
            b"EHLO c\r\nMAIL FROM:<a@b>\r\nNOOP\r\nHELP\r\nSTARTTLS now\r\nSTARTTLS\r\n",
        );
        assert_eq!(
            said,
            "250-[192.0.2.7]\r\n250 STARTTLS\r\n\
             530 5.7.0 Must issue a STARTTLS command first\r\n\
             250 2.0.0 OK\r\n\
             500 5.5.2 Command not recognized\r\n\
             501 5.5.4 Syntax error (no parameters allowed)\r\n"
        );
        assert!(matches!(step, FrontStep::StartTls { .. }));
    }

    #[test]
    fn starttls_needs_a_greeting_from_the_client_first() {
        let mut f = front();
        let (said, step) = run(&mut f, b"STARTTLS\r\nHELO old.client\r\nSTARTTLS\r\n");
        assert_eq!(said, "503 5.5.1 Send EHLO first\r\n250 [192.0.2.7]\r\n");
        assert!(matches!(
            step,
            FrontStep::StartTls { handoff: Handoff::Smtp { helo }, .. } if helo == "old.client"
        ));
    }

    #[test]
    fn ehlo_names_with_control_bytes_are_refused() {
        let mut f = front();
        let (said, step) = run(&mut f, b"EHLO a\rMAIL FROM:<x@y>\r\nSTARTTLS\r\n");
        assert_eq!(
            said,
            "501 5.5.4 Invalid domain name\r\n503 5.5.1 Send EHLO first\r\n"
        );
        assert_eq!(step, FrontStep::NeedMore);
    }

    #[test]
    fn commands_pipelined_after_starttls_close_the_connection() {
        let mut f = front();
        let (_, step) = run(&mut f, b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<x@y>\r\n");
        assert_eq!(
            step,
            FrontStep::Close {
                reply: b"554 5.5.0 Commands sent after STARTTLS\r\n".to_vec(),
                reason: FrontError::Pipelined("STARTTLS"),
            }
        );
    }

    #[test]
    fn an_oversized_line_is_refused_without_waiting_for_its_end() {
        let mut f = front();
        let (_, step) = run(&mut f, &[b'A'; MAX_COMMAND_LINE]);
        assert_eq!(
            step,
            FrontStep::Close {
                reply: b"500 5.5.6 Line too long\r\n".to_vec(),
                reason: FrontError::LineTooLong(MAX_COMMAND_LINE),
            }
        );
    }

    #[test]
    fn garbage_ends_the_dialogue_after_too_many_commands() {
        let mut f = front();
        let garbage = b"\x01\x02\xff\r\n".repeat(MAX_COMMANDS + 1);
        let (said, step) = run(&mut f, &garbage);
        assert_eq!(said.matches("500 5.5.2").count(), MAX_COMMANDS);
        assert!(matches!(
            step,
            FrontStep::Close {
                reason: FrontError::TooManyCommands,
                ..
            }
        ));
    }

    #[test]
    fn quit_and_implicit_tls_close() {
        let (_, step) = run(&mut front(), b"QUIT\r\n");
        assert!(matches!(
            step,
            FrontStep::Close {
                reason: FrontError::Quit,
                ..
            }
        ));
        let (_, step) = run(&mut front(), &[0x16, 3, 1, 2, 0, 1]);
        assert!(matches!(
            step,
            FrontStep::Close {
                reason: FrontError::TlsBeforeStarttls,
                ..
            }
        ));
        let (_, step) = run(&mut front(), b"EHLO half-a-line");
        assert_eq!(step, FrontStep::NeedMore);
    }

    /// Feeds the backend's bytes in one piece per reply, collecting what the router sends.
    fn talk(back: &mut Back, replies: &[&[u8]]) -> Result<Vec<String>, BackError> {
        let mut sent = Vec::new();
        let mut buf = BytesMut::new();
        for reply in replies {
            buf.extend_from_slice(reply);
            match back.receive(&mut buf)? {
                BackStep::Send(bytes) => sent.push(String::from_utf8_lossy(&bytes).into_owned()),
                BackStep::Ready => {
                    sent.push("ready".into());
                    break;
                }
                BackStep::NeedMore => sent.push("more".into()),
            }
        }
        Ok(sent)
    }

    /// Postfix 3.7's answers in Debian's default configuration.
    const POSTFIX_GREETING: &[u8] = b"220 mail.example.test ESMTP Postfix (Debian/GNU)\r\n";
    const POSTFIX_EHLO: &[u8] = b"250-mail.example.test\r\n250-PIPELINING\r\n\
        250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n250-STARTTLS\r\n\
        250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";

    #[test]
    fn passthrough_replays_ehlo_and_starttls_to_the_backend() {
        let mut back = Back::new("client.example", Mode::Passthrough);
        let sent = talk(
            &mut back,
            &[
                POSTFIX_GREETING,
                POSTFIX_EHLO,
                b"220 2.0.0 Ready to start TLS\r\n",
            ],
        )
        .unwrap();
        assert_eq!(sent, ["EHLO client.example\r\n", "STARTTLS\r\n", "ready"]);
    }

    #[test]
    fn replies_split_across_reads_are_reassembled() {
        let mut back = Back::new("c", Mode::Passthrough);
        let sent = talk(
            &mut back,
            &[
                b"220-first line\r\n220 sec",
                b"ond\r\n",
                b"250-x\r\n250-STARTTLS\r\n",
                b"250 OK\r\n",
            ],
        )
        .unwrap();
        assert_eq!(sent, ["more", "EHLO c\r\n", "more", "STARTTLS\r\n"]);
    }

    #[test]
    fn termination_only_reads_the_greeting() {
        let mut back = Back::new("c", Mode::Terminate);
        assert_eq!(talk(&mut back, &[POSTFIX_GREETING]).unwrap(), ["ready"]);
    }

    #[test]
    fn backends_that_do_not_cooperate_are_reported() {
        let mut back = Back::new("c", Mode::Passthrough);
        let err = talk(&mut back, &[b"554 5.3.2 Service unavailable\r\n"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected a 220 greeting, got \"554 5.3.2 Service unavailable\""
        );
        let mut back = Back::new("c", Mode::Passthrough);
        let err = talk(&mut back, &[POSTFIX_GREETING, b"250-x\r\n250 8BITMIME\r\n"]);
        assert_eq!(err, Err(BackError::NoStarttls));
        let mut back = Back::new("c", Mode::Passthrough);
        let err = talk(
            &mut back,
            &[
                POSTFIX_GREETING,
                POSTFIX_EHLO,
                b"454 4.7.0 TLS not available\r\n",
            ],
        );
        assert!(matches!(
            err,
            Err(BackError::Unexpected {
                expected: "220 to STARTTLS",
                ..
            })
        ));
        let mut back = Back::new("c", Mode::Passthrough);
        let err = talk(&mut back, &[b"SSH-2.0-OpenSSH_9.2\r\n"]);
        assert!(matches!(
            err,
            Err(BackError::Unexpected {
                expected: "an SMTP reply",
                ..
            })
        ));
        let mut back = Back::new("c", Mode::Terminate);
        let err = talk(&mut back, &[b"220 hi\r\n250 extra\r\n"]);
        assert_eq!(err, Err(BackError::Unsolicited));
        let mut back = Back::new("c", Mode::Terminate);
        let err = talk(&mut back, &[&[b'2'; MAX_REPLY_LINE]]);
        assert_eq!(err, Err(BackError::TooLong));
    }
}
