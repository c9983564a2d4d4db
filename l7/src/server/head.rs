//! The wait for a connection's first request head, before the connection gets hyper's
//! buffers.
//!
//! hyper gives every HTTP/1 connection an 8 KiB read buffer and an 8 KiB write buffer the
//! moment it starts serving it. A client that opens a connection and trickles its headers
//! in (slowloris) would hold those for the whole `readTimeout`; thousands of them add up.
//! Until the first request's head is in, the connection is instead held with only what it
//! sent, in a buffer that grows with it; hyper then gets the connection with those bytes
//! replayed. An HTTP/2 client's preface ends with an empty line too, so it goes to hyper at
//! once. Owns only this first wait: later requests on a keep-alive connection are hyper's.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The first read's room, and the least room before each further read: a request head of
/// a typical browser fits in one.
const HEAD_CHUNK: usize = 1024;

/// Whether `bytes` (the start of a connection) hold a complete request head: a line that is
/// empty, with or without its CR. Earlier is harmless (hyper then reads on itself), later
/// would hold a request hyper could already serve, so any empty line counts.
pub(super) fn head_is_complete(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|pair| pair == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
}

/// How the wait ended.
#[derive(Debug)]
pub(super) enum Head {
    /// The head is in (or the buffer reached `limit`, which hyper will refuse): the bytes
    /// read so far, to replay.
    Ready(Bytes),
    /// The client closed, or sent nothing more within the read timeout.
    Gone,
}

/// Reads from `io` after `prefix` (bytes already read from it) until the first request head
/// is complete, `limit` bytes are buffered, the client closes, or `timeout` passes. The
/// prefix's storage (the dispatch's sniffing buffer) is let go of before any wait.
pub(super) async fn wait_for_head<I>(
    io: &mut I,
    prefix: Bytes,
    limit: usize,
    timeout: Option<Duration>,
) -> io::Result<Head>
where
    I: AsyncRead + Unpin,
{
    if head_is_complete(&prefix) || prefix.len() >= limit {
        return Ok(Head::Ready(prefix));
    }
    let mut buf = BytesMut::with_capacity((prefix.len() + HEAD_CHUNK).min(limit));
    buf.extend_from_slice(&prefix);
    drop(prefix);
    let read = async {
        loop {
            if buf.capacity() - buf.len() < HEAD_CHUNK / 4 {
                buf.reserve(HEAD_CHUNK.min(limit.saturating_sub(buf.len())).max(1));
            }
            let searched = buf.len().saturating_sub(2);
            if io.read_buf(&mut buf).await? == 0 {
                return Ok(Head::Gone);
            }
            if head_is_complete(&buf[searched..]) || buf.len() >= limit {
                return Ok(Head::Ready(buf.split().freeze()));
            }
        }
    };
    match timeout {
        Some(limit) => tokio::time::timeout(limit, read)
            .await
            .unwrap_or(Ok(Head::Gone)),
        None => read.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_complete_at_its_first_empty_line() {
        assert!(head_is_complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(head_is_complete(b"GET / HTTP/1.1\nHost: a\n\n"));
        assert!(head_is_complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"));
        assert!(head_is_complete(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(!head_is_complete(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        assert!(!head_is_complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r"));
        assert!(!head_is_complete(b""));
    }

    #[tokio::test]
    async fn a_head_trickled_in_is_returned_whole_once_it_ends() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let wait = tokio::spawn(async move {
            wait_for_head(&mut server, Bytes::from_static(b"GET / HT"), 1 << 20, None).await
        });
        for piece in [&b"TP/1.1\r\nHost: a\r"[..], b"\n", b"X: 1\r\n\r", b"\n"] {
            tokio::io::AsyncWriteExt::write_all(&mut client, piece)
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
        match wait.await.unwrap().unwrap() {
            Head::Ready(bytes) => {
                assert_eq!(&bytes[..], b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n")
            }
            Head::Gone => panic!("the head was complete"),
        }
    }

    #[tokio::test]
    async fn a_head_over_the_limit_is_handed_on_at_the_limit() {
        let (mut client, mut server) = tokio::io::duplex(8192);
        tokio::io::AsyncWriteExt::write_all(&mut client, &[b'a'; 5000])
            .await
            .unwrap();
        match wait_for_head(
            &mut server,
            Bytes::from_static(b"GET / HTTP/1.1\r\nX: "),
            4096,
            None,
        )
        .await
        .unwrap()
        {
            Head::Ready(bytes) => assert!(bytes.len() >= 4096 && bytes.len() < 4096 + HEAD_CHUNK),
            Head::Gone => panic!("the client is still there"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_mid_head_is_gone_at_the_read_timeout() {
        let (_client, mut server) = tokio::io::duplex(64);
        let head = wait_for_head(
            &mut server,
            Bytes::from_static(b"GET / HTTP/1.1\r\n"),
            1 << 20,
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
        assert!(matches!(head, Head::Gone));
    }

    #[tokio::test]
    async fn a_client_that_closes_mid_head_is_gone() {
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        let head = wait_for_head(&mut server, Bytes::from_static(b"GET"), 1 << 20, None)
            .await
            .unwrap();
        assert!(matches!(head, Head::Gone));
    }
}
