//! Stream adapters shared by the layer-4 handlers.
//!
//! [`PrefixedIo`] replays bytes already read from a connection (while sniffing a ClientHello
//! or a PROXY header) before reading on from the socket, so that whoever handles the
//! connection next sees it from its first byte. Reading and replaying, rather than peeking,
//! avoids the readiness spin that `MSG_PEEK` causes.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pin_project! {
    /// A stream whose reads return `prefix` first, then the inner stream's bytes.
    /// Writes, flushes and shutdowns go straight to the inner stream.
    #[derive(Debug)]
    pub struct PrefixedIo<T> {
        prefix: Bytes,
        #[pin]
        io: T,
    }
}

impl<T> PrefixedIo<T> {
    pub fn new(prefix: Bytes, io: T) -> Self {
        PrefixedIo { prefix, io }
    }

    /// The part of the prefix not read yet.
    pub fn prefix(&self) -> &Bytes {
        &self.prefix
    }

    /// The inner stream, e.g. to read its socket addresses.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The inner stream. Any prefix bytes not read yet are dropped: call this only once
    /// [`prefix`](Self::prefix) is empty, or when those bytes are no longer wanted.
    pub fn into_inner(self) -> T {
        self.io
    }
}

impl<T: AsyncRead> AsyncRead for PrefixedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.prefix.is_empty() {
            return this.io.poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        if this.prefix.is_empty() {
            // An emptied `Bytes` still holds its storage (the sniffing buffer, 4 KiB or
            // more); a connection that lives for hours should not.
            *this.prefix = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite> AsyncWrite for PrefixedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    #[tokio::test]
    async fn prefix_is_read_before_the_stream() {
        let (mut client, server) = duplex(64);
        let mut server = PrefixedIo::new(Bytes::from_static(b"hello "), server);
        client.write_all(b"world").await.unwrap();
        client.shutdown().await.unwrap();
        let mut read = Vec::new();
        server.read_to_end(&mut read).await.unwrap();
        assert_eq!(read, b"hello world");
    }

    #[tokio::test]
    async fn prefix_longer_than_the_read_buffer_is_replayed_in_pieces() {
        let (client, server) = duplex(64);
        drop(client);
        let mut server = PrefixedIo::new(Bytes::from_static(b"abcdefg"), server);
        let mut piece = [0; 3];
        assert_eq!(server.read(&mut piece).await.unwrap(), 3);
        assert_eq!(&piece, b"abc");
        assert_eq!(server.prefix().as_ref(), b"defg");
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"defg");
    }

    #[tokio::test]
    async fn writes_and_shutdown_reach_the_inner_stream() {
        let (mut client, server) = duplex(64);
        let mut server = PrefixedIo::new(Bytes::from_static(b"unread"), server);
        server.write_all(b"pong").await.unwrap();
        server.flush().await.unwrap();
        server.shutdown().await.unwrap();
        let mut read = Vec::new();
        client.read_to_end(&mut read).await.unwrap();
        assert_eq!(read, b"pong");
        assert_eq!(server.prefix().as_ref(), b"unread");
    }

    #[tokio::test]
    async fn into_inner_continues_after_the_prefix() {
        let (mut client, server) = duplex(64);
        let mut server = PrefixedIo::new(Bytes::from_static(b"ab"), server);
        let mut prefix = [0; 2];
        server.read_exact(&mut prefix).await.unwrap();
        client.write_all(b"cd").await.unwrap();
        drop(client);
        let mut inner = server.into_inner();
        let mut rest = Vec::new();
        inner.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"cd");
    }
}
