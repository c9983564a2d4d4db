//! Feeds arbitrary bytes, split at arbitrary points, to the STARTTLS dialogues of
//! `l4::tcp::starttls`: the bounded command reader, the client-facing dialogues of SMTP,
//! IMAP, POP3 and MySQL, the backend dialogues, and the MySQL login rewriting.
//!
//! Input: a selector byte (what to drive), a split byte (seeds the chunk sizes; 0 feeds
//! everything at once), then the peer's bytes. Beyond "no panic" it checks that a command
//! line never reaches its bound; that a dialogue answers the same whether its bytes come
//! at once or in pieces; that a completed dialogue's ClientHello offset is within the input
//! and everything after it is left untouched; and that a backend dialogue is ready only
//! after it asked for TLS (passthrough) or without asking anything (termination).
#![no_main]

use bytes::BytesMut;
use l4::tcp::starttls::{
    Back, BackStep, Front, FrontError, FrontStep, Handoff, MAX_COMMANDS, Mode, Protocol, line,
    mysql,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [selector, split, input @ ..] = data else {
        return;
    };
    let chunks = Chunks::new(input, *split);
    match selector % 8 {
        0 => commands(input, chunks, *split),
        1 => front(Protocol::Smtp, input, chunks),
        2 => front(Protocol::Imap, input, chunks),
        3 => front(Protocol::Pop3, input, chunks),
        4 => front(Protocol::Mysql, input, chunks),
        5 | 6 => back(*selector, chunks),
        _ => mysql_login(input),
    }
});

/// Pieces of the input, sized from a small generator seeded by the split byte.
#[derive(Clone)]
struct Chunks<'a> {
    rest: &'a [u8],
    state: u8,
}

impl<'a> Chunks<'a> {
    fn new(input: &'a [u8], seed: u8) -> Chunks<'a> {
        Chunks {
            rest: input,
            state: seed,
        }
    }
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let len = if self.state == 0 {
            self.rest.len()
        } else {
            self.state = self.state.wrapping_mul(73).wrapping_add(41);
            1 + usize::from(self.state % 64)
        };
        let (chunk, rest) = self.rest.split_at(len.min(self.rest.len()));
        self.rest = rest;
        Some(chunk)
    }
}

/// `line::next_command` alone, with a bound between 16 and 1036 bytes.
fn commands(input: &[u8], chunks: Chunks<'_>, split: u8) {
    let max = 16 + usize::from(split) * 4;
    let refusals = line::Refusals {
        too_long: b"too long\r\n",
        too_many: b"too many\r\n",
    };
    let (mut buf, mut count, mut fed) = (BytesMut::new(), 0, 0);
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            match line::next_command(&mut buf, max, &mut count, &refusals) {
                Ok(line) => {
                    assert!(line.len() < max, "a {}-byte line under {max}", line.len());
                    assert!(!line.contains(&b'\n'));
                    assert!(count <= MAX_COMMANDS);
                }
                Err(FrontStep::NeedMore) => {
                    assert!(buf.len() < max, "{} bytes buffered under {max}", buf.len());
                    break;
                }
                Err(FrontStep::Close { .. }) => return,
                Err(other) => panic!("next_command returned {other:?}"),
            }
        }
        assert!(buf.len() <= fed && fed <= input.len());
    }
}

/// How a client-facing dialogue went.
#[derive(Debug, PartialEq)]
struct Transcript {
    replies: Vec<Vec<u8>>,
    end: End,
}

#[derive(Debug, PartialEq)]
enum End {
    /// The input ran out mid-dialogue.
    NeedMore,
    /// TLS begins at `offset` in the input.
    StartTls {
        reply: Vec<u8>,
        handoff: Handoff,
        offset: usize,
    },
    Close {
        reply: Vec<u8>,
        reason: FrontError,
    },
}

fn new_front(protocol: Protocol) -> Option<Front> {
    Front::new(protocol, [192, 0, 2, 7].into(), 7, *b"abcdefghijklmnopqrst")
}

fn talk(protocol: Protocol, input: &[u8], chunks: Chunks<'_>) -> Transcript {
    let Some(mut front) = new_front(protocol) else {
        unreachable!("every protocol here is server-first");
    };
    let (mut buf, mut fed, mut replies) = (BytesMut::new(), 0, Vec::new());
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            match front.receive(&mut buf) {
                FrontStep::NeedMore => break,
                FrontStep::Reply(reply) => {
                    assert!(!reply.is_empty(), "an empty reply");
                    replies.push(reply);
                    assert!(replies.len() <= MAX_COMMANDS, "more replies than commands");
                }
                FrontStep::StartTls { reply, handoff } => {
                    let offset = fed - buf.len();
                    assert!(offset <= input.len());
                    assert_eq!(&buf[..], &input[offset..fed], "bytes after the hand-off");
                    let end = End::StartTls {
                        reply,
                        handoff,
                        offset,
                    };
                    return Transcript { replies, end };
                }
                FrontStep::Close { reply, reason } => {
                    let end = End::Close { reply, reason };
                    return Transcript { replies, end };
                }
            }
        }
    }
    Transcript {
        replies,
        end: End::NeedMore,
    }
}

/// A client-facing dialogue, fed at once and in pieces.
fn front(protocol: Protocol, input: &[u8], chunks: Chunks<'_>) {
    let whole = talk(protocol, input, Chunks::new(input, 0));
    let pieces = talk(protocol, input, chunks);
    if let End::StartTls { offset, .. } = &whole.end {
        if protocol == Protocol::Mysql {
            // The SSLRequest is one 32-byte packet; the ClientHello follows it directly.
            assert_eq!(*offset, 4 + 32);
        } else {
            // Text protocols refuse bytes pipelined after their request for TLS.
            assert_eq!(*offset, input.len());
        }
    }
    match (&whole.end, &pieces.end) {
        // Fed at once, what follows STARTTLS is seen as pipelined; in pieces it may only
        // arrive after the hand-off, where it is the TLS layer's business.
        (
            End::Close {
                reason: FrontError::Pipelined(_),
                ..
            },
            End::StartTls { .. },
        ) => assert_eq!(whole.replies, pieces.replies),
        _ => assert_eq!(whole, pieces),
    }
}

/// A backend dialogue in either mode.
fn back(selector: u8, chunks: Chunks<'_>) {
    let mode = if selector & 0x08 == 0 {
        Mode::Passthrough
    } else {
        Mode::Terminate
    };
    let handoff = match (selector >> 4) % 4 {
        0 => Handoff::Smtp {
            helo: "client.example".into(),
        },
        1 => Handoff::Imap { tag: "a1".into() },
        2 => Handoff::Pop3,
        _ => mysql_handoff(),
    };
    let mut back = Back::new(&handoff, mode);
    let (mut buf, mut sent) = (BytesMut::new(), 0usize);
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match back.receive(&mut buf) {
                Ok(BackStep::NeedMore) => break,
                Ok(BackStep::Send(bytes)) => {
                    assert!(mode == Mode::Passthrough, "termination sends nothing");
                    assert!(!bytes.is_empty());
                    sent += 1;
                }
                Ok(BackStep::Ready) => {
                    let asked_for_tls = sent > 0;
                    assert_eq!(asked_for_tls, mode == Mode::Passthrough);
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

/// The hand-off of the `mariadb` client's captured SSLRequest.
fn mysql_handoff() -> Handoff {
    let mut request = Vec::new();
    request.extend_from_slice(&0x00bf_aa85u32.to_le_bytes());
    request.extend_from_slice(&0x0010_0000u32.to_le_bytes());
    request.push(33);
    request.extend_from_slice(&[0; 23]);
    let mut buf = BytesMut::from(&mysql::packet(1, &request)[..]);
    match new_front(Protocol::Mysql).map(|mut f| f.receive(&mut buf)) {
        Some(FrontStep::StartTls { handoff, .. }) => handoff,
        other => panic!("the captured SSLRequest does not hand off: {other:?}"),
    }
}

/// Termination mode's rewriting of a login read from the client, and the judging of
/// backend packets. The input is one payload: the first byte is its sequence number.
fn mysql_login(input: &[u8]) {
    let Some((&seq, payload)) = input.split_first() else {
        return;
    };
    mysql::login_exchange_step(payload);
    let Ok(login) = mysql::backend_login(seq, payload) else {
        return;
    };
    let mut buf = BytesMut::from(&login[..]);
    match mysql::take_packet(&mut buf, usize::MAX) {
        Ok(Some((1, rewritten))) => {
            assert!(buf.is_empty(), "one packet");
            let caps = u32::from_le_bytes([rewritten[0], rewritten[1], rewritten[2], rewritten[3]]);
            assert_eq!(caps & mysql::CLIENT_SSL, 0, "the backend is told no TLS");
            assert!(
                rewritten.len() <= payload.len() + 32,
                "the rewrite stays small"
            );
        }
        other => panic!("the rewritten login is not one packet numbered 1: {other:?}"),
    }
}
