//! A bound on the HTTP/3 frames h3 holds whole. h3 (0.0.8) reads every frame but DATA
//! completely into memory before looking at it: a HEADERS frame before its size is checked
//! against `maxHeaderBytes`, an unknown frame before it is skipped. A client announcing a
//! frame of gigabytes would be buffered without end. Every stream handed to h3 is wrapped
//! here: its bytes pass through unchanged while [`FrameBounds`] follows the frame headers,
//! and a frame other than DATA longer than the bound stops the stream (H3_EXCESSIVE_LOAD)
//! once the chunk announcing it has been handed over: no more of it is read. DATA payloads
//! stream through h3 and are not bounded here.

use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h3::error::Code;
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, StreamId, WriteBuf};

/// RFC 9114 §7.2.1.
const DATA: u64 = 0x00;
/// The frame opening a WebTransport stream has no length; h3 reads what follows itself.
const WEBTRANSPORT_STREAM: u64 = 0x41;
/// The only unidirectional stream type made of frames (RFC 9114 §6.2.1); QPACK and unknown
/// streams are passed through unread.
const CONTROL_STREAM: u64 = 0x00;

/// Which variable-length integer is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// The type of a unidirectional stream.
    StreamType,
    FrameType,
    Length {
        frame_type: u64,
    },
}

/// Where a stream's bytes are in its frame sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Header(Field),
    /// Inside a frame's payload, with this many bytes left.
    Payload {
        left: u64,
    },
    /// Not frames: passed through unread.
    Unframed,
}

/// A frame longer than the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong {
    pub frame_type: u64,
    pub length: u64,
}

/// Follows the frame headers in one stream's bytes, fed as they arrive (no I/O).
#[derive(Debug)]
pub struct FrameBounds {
    limit: u64,
    at: At,
    /// The bytes so far of the integer being read (RFC 9000 §16: at most 8).
    int: [u8; 8],
    have: usize,
}

impl FrameBounds {
    /// A request stream: frames from its first byte.
    pub fn request(limit: u64) -> FrameBounds {
        FrameBounds::at(limit, At::Header(Field::FrameType))
    }

    /// A unidirectional stream: its type, then frames if it is the control stream.
    pub fn unidirectional(limit: u64) -> FrameBounds {
        FrameBounds::at(limit, At::Header(Field::StreamType))
    }

    fn at(limit: u64, at: At) -> FrameBounds {
        FrameBounds {
            limit,
            at,
            int: [0; 8],
            have: 0,
        }
    }

    /// Reads the next bytes of the stream; `Err` once a frame other than DATA announces
    /// more than the bound (its payload is then not to be read).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), TooLong> {
        while !bytes.is_empty() {
            match self.at {
                At::Unframed => return Ok(()),
                At::Payload { left } => {
                    let taken = usize::try_from(left).map_or(bytes.len(), |l| l.min(bytes.len()));
                    bytes = &bytes[taken..];
                    // `taken <= left`, a u64: the conversion is lossless.
                    let left = left - taken as u64;
                    self.at = if left == 0 {
                        At::Header(Field::FrameType)
                    } else {
                        At::Payload { left }
                    };
                }
                At::Header(field) => {
                    let Some(value) = self.read_int(&mut bytes) else {
                        return Ok(());
                    };
                    self.at = match field {
                        Field::StreamType if value == CONTROL_STREAM => {
                            At::Header(Field::FrameType)
                        }
                        Field::StreamType => At::Unframed,
                        Field::FrameType if value == WEBTRANSPORT_STREAM => At::Unframed,
                        Field::FrameType => At::Header(Field::Length { frame_type: value }),
                        Field::Length { frame_type } => {
                            if frame_type != DATA && value > self.limit {
                                return Err(TooLong {
                                    frame_type,
                                    length: value,
                                });
                            }
                            if value == 0 {
                                At::Header(Field::FrameType)
                            } else {
                                At::Payload { left: value }
                            }
                        }
                    };
                }
            }
        }
        Ok(())
    }

    /// Takes the bytes of the integer in progress from `bytes`; its value once it is whole.
    fn read_int(&mut self, bytes: &mut &[u8]) -> Option<u64> {
        while let Some((&byte, rest)) = bytes.split_first() {
            *bytes = rest;
            self.int[self.have] = byte;
            self.have += 1;
            // The two high bits of the first byte give the length: 1, 2, 4 or 8 bytes.
            let len = 1usize << (self.int[0] >> 6);
            if self.have == len {
                self.have = 0;
                let value = self.int[1..len]
                    .iter()
                    .fold(u64::from(self.int[0] & 0x3f), |v, b| v << 8 | u64::from(*b));
                return Some(value);
            }
        }
        None
    }
}

/// H3_EXCESSIVE_LOAD (RFC 9114 §8.1), the code a stream stopped for a too long frame ends with.
fn excessive_load() -> u64 {
    Code::H3_EXCESSIVE_LOAD.value()
}

/// A receiving stream whose frames are bounded.
pub struct BoundedRecv<S> {
    inner: S,
    frames: FrameBounds,
    refused: bool,
}

impl<S: quic::RecvStream<Buf = Bytes>> BoundedRecv<S> {
    fn new(inner: S, frames: FrameBounds) -> Self {
        BoundedRecv {
            inner,
            frames,
            refused: false,
        }
    }

    /// The next data, checked. On a too long frame the peer is told to stop at once (the
    /// caller resets its sending side too, if it has one); the chunk that announced it is
    /// still handed over and the next poll fails, so h3 has seen the stream's type and ends
    /// it as an error of that stream (or of the connection, for the control stream), holding
    /// no more than that chunk.
    fn poll_checked(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        if self.refused {
            return Poll::Ready(Err(refused()));
        }
        let data = ready!(self.inner.poll_data(cx))?;
        if let Some(bytes) = &data
            && let Err(too_long) = self.frames.feed(bytes.chunk())
        {
            tracing::debug!(
                stream = %self.inner.recv_id(),
                frame_type = too_long.frame_type,
                length = too_long.length,
                limit = self.frames.limit,
                "HTTP/3 frame too long: stream stopped"
            );
            self.refused = true;
            self.inner.stop_sending(excessive_load());
        }
        Poll::Ready(Ok(data))
    }
}

fn refused() -> StreamErrorIncoming {
    StreamErrorIncoming::StreamTerminated {
        error_code: excessive_load(),
    }
}

impl<S: quic::RecvStream<Buf = Bytes>> quic::RecvStream for BoundedRecv<S> {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        self.poll_checked(cx)
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.inner.stop_sending(error_code);
    }

    fn recv_id(&self) -> StreamId {
        self.inner.recv_id()
    }
}

/// A request stream whose received frames are bounded; a too long frame resets its
/// sending side as well.
pub struct BoundedBidi<B: Buf> {
    recv: BoundedRecv<h3_quinn::BidiStream<B>>,
}

impl<B: Buf> quic::RecvStream for BoundedBidi<B> {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        let was_refused = self.recv.refused;
        let polled = self.recv.poll_checked(cx);
        if self.recv.refused && !was_refused {
            quic::SendStream::reset(&mut self.recv.inner, excessive_load());
        }
        polled
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.recv.stop_sending(error_code);
    }

    fn recv_id(&self) -> StreamId {
        self.recv.recv_id()
    }
}

impl<B: Buf> quic::SendStream<B> for BoundedBidi<B> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.recv.inner.poll_ready(cx)
    }

    fn send_data<T: Into<WriteBuf<B>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.recv.inner.send_data(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.recv.inner.poll_finish(cx)
    }

    fn reset(&mut self, reset_code: u64) {
        self.recv.inner.reset(reset_code);
    }

    fn send_id(&self) -> StreamId {
        self.recv.inner.send_id()
    }
}

impl<B: Buf> quic::BidiStream<B> for BoundedBidi<B> {
    type SendStream = h3_quinn::SendStream<B>;
    type RecvStream = BoundedRecv<h3_quinn::RecvStream>;

    fn split(self) -> (Self::SendStream, Self::RecvStream) {
        let BoundedRecv {
            inner,
            frames,
            refused,
        } = self.recv;
        let (send, recv) = inner.split();
        let recv = BoundedRecv {
            inner: recv,
            frames,
            refused,
        };
        (send, recv)
    }
}

/// h3-quinn's connection (or its stream opener), handing h3 only bounded streams.
pub struct Bounded<T> {
    inner: T,
    limit: u64,
}

/// The connection h3 is given.
pub type BoundedConnection = Bounded<h3_quinn::Connection>;

impl BoundedConnection {
    /// Frames other than DATA longer than `limit` bytes are refused.
    pub fn new(inner: h3_quinn::Connection, limit: u64) -> Self {
        Bounded { inner, limit }
    }
}

impl<B: Buf> quic::Connection<B> for BoundedConnection {
    type RecvStream = BoundedRecv<h3_quinn::RecvStream>;
    type OpenStreams = Bounded<h3_quinn::OpenStreams>;

    fn poll_accept_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::RecvStream, ConnectionErrorIncoming>> {
        let stream = ready!(quic::Connection::<B>::poll_accept_recv(&mut self.inner, cx))?;
        Poll::Ready(Ok(BoundedRecv::new(
            stream,
            FrameBounds::unidirectional(self.limit),
        )))
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, ConnectionErrorIncoming>> {
        let stream = ready!(quic::Connection::<B>::poll_accept_bidi(&mut self.inner, cx))?;
        Poll::Ready(Ok(BoundedBidi {
            recv: BoundedRecv::new(stream, FrameBounds::request(self.limit)),
        }))
    }

    fn opener(&self) -> Self::OpenStreams {
        Bounded {
            inner: quic::Connection::<B>::opener(&self.inner),
            limit: self.limit,
        }
    }
}

/// Streams opened by h3 (its control and QPACK streams) through the connection or its
/// opener: bidirectional ones are bounded as requests.
impl<B, T> quic::OpenStreams<B> for Bounded<T>
where
    B: Buf,
    T: quic::OpenStreams<
            B,
            BidiStream = h3_quinn::BidiStream<B>,
            SendStream = h3_quinn::SendStream<B>,
        >,
{
    type BidiStream = BoundedBidi<B>;
    type SendStream = h3_quinn::SendStream<B>;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        let stream = ready!(self.inner.poll_open_bidi(cx))?;
        Poll::Ready(Ok(BoundedBidi {
            recv: BoundedRecv::new(stream, FrameBounds::request(self.limit)),
        }))
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        self.inner.poll_open_send(cx)
    }

    fn close(&mut self, code: Code, reason: &[u8]) {
        self.inner.close(code, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame header: type and length as QUIC variable-length integers.
    fn header(frame_type: u64, length: u64) -> Vec<u8> {
        let mut out = int(frame_type);
        out.extend(int(length));
        out
    }

    fn int(value: u64) -> Vec<u8> {
        match value {
            0..=0x3f => vec![value as u8],
            0x40..=0x3fff => ((value as u16) | 0x4000).to_be_bytes().to_vec(),
            0x4000..=0x3fff_ffff => ((value as u32) | 0x8000_0000).to_be_bytes().to_vec(),
            _ => (value | 0xc000_0000_0000_0000).to_be_bytes().to_vec(),
        }
    }

    const HEADERS: u64 = 0x01;

    #[test]
    fn frames_within_the_limit_and_any_data_pass() {
        let mut bounds = FrameBounds::request(100);
        let mut stream = header(HEADERS, 100);
        stream.extend([7; 100]);
        stream.extend(header(DATA, 1 << 40));
        stream.extend([1; 5000]);
        assert_eq!(bounds.feed(&stream), Ok(()));
    }

    #[test]
    fn a_headers_frame_over_the_limit_is_refused_from_its_header() {
        let mut bounds = FrameBounds::request(100);
        assert_eq!(
            bounds.feed(&header(HEADERS, 101)),
            Err(TooLong {
                frame_type: HEADERS,
                length: 101
            })
        );
    }

    #[test]
    fn an_unknown_frame_after_data_is_bounded_too() {
        let mut bounds = FrameBounds::request(1000);
        let mut stream = header(DATA, 3);
        stream.extend(b"abc");
        stream.extend(header(0x21, 1 << 30));
        assert_eq!(
            bounds.feed(&stream),
            Err(TooLong {
                frame_type: 0x21,
                length: 1 << 30
            })
        );
    }

    #[test]
    fn headers_split_across_reads_are_followed() {
        let mut stream = header(DATA, 70_000);
        stream.extend(vec![0; 70_000]);
        stream.extend(header(HEADERS, 1 << 20));
        for split in [1, 2, 3, 4, 70_003, 70_004, 70_005] {
            let mut bounds = FrameBounds::request(1000);
            let (a, b) = stream.split_at(split);
            assert_eq!(bounds.feed(a), Ok(()), "split at {split}");
            assert!(bounds.feed(b).is_err(), "split at {split}");
        }
        // Byte by byte.
        let mut bounds = FrameBounds::request(1000);
        let refused = stream
            .chunks(1)
            .map(|b| bounds.feed(b))
            .find(Result::is_err);
        assert!(refused.is_some());
    }

    #[test]
    fn only_the_control_stream_of_the_unidirectional_ones_is_read_as_frames() {
        let mut control = int(CONTROL_STREAM);
        control.extend(header(0x04, 6));
        control.extend([0; 6]);
        control.extend(header(0x1f * 7 + 0x21, 1 << 20));
        assert!(FrameBounds::unidirectional(1000).feed(&control).is_err());
        // A QPACK encoder stream (0x02) carries instructions, not frames.
        let mut qpack = int(0x02);
        qpack.extend(header(HEADERS, 1 << 20));
        assert_eq!(FrameBounds::unidirectional(1000).feed(&qpack), Ok(()));
    }

    #[test]
    fn an_eight_byte_length_is_read_whole() {
        let mut bounds = FrameBounds::request(u64::from(u32::MAX));
        assert_eq!(
            bounds.feed(&header(HEADERS, 1 << 40)).map_err(|e| e.length),
            Err(1 << 40)
        );
    }
}
