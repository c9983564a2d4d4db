//! The two body translations of gRPC-Web, both streaming: a request body in text mode is
//! base64 decoded as it arrives ([`TextRequestBody`]), and a gRPC response body becomes a
//! gRPC-Web one ([`WebResponseBody`]): its messages pass as they are, its trailers become a
//! last length-prefixed frame flagged `0x80`, and in text mode each frame is base64 encoded.
//!
//! Text bodies may be several padded base64 chunks one after the other (a client encoding
//! each message on its own), so each 4-character quantum is decoded on its own and padding
//! may end any of them. Line breaks are ignored, as Go's decoder Traefik uses ignores them.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::{DecodeError, DecodeSliceError};
use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Frame, SizeHint};

use crate::handler::{Body, BoxError};

/// The flag byte of a gRPC-Web frame carrying trailers instead of a message.
const TRAILER_FLAG: u8 = 0x80;

/// The largest trailer block written in a trailer frame: the `grpc-*` fields always go in,
/// other trailers only while the block stays under it, so one frame stays a bounded size.
pub(super) const MAX_TRAILER_BLOCK: usize = 16 * 1024;

/// Trailers that always go into the trailer frame, whatever its size.
const STATUS_FIELDS: [&str; 2] = ["grpc-status", "grpc-message"];

/// Why a text-mode request body cannot be decoded. The proxy answers 400 when it happens
/// before the server answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TextBodyError {
    #[error("the gRPC-Web text body is not valid base64 (in the 4 characters at offset {at})")]
    InvalidBase64 { at: u64 },
    #[error("the gRPC-Web text body ends inside a base64 quantum ({left} characters left over)")]
    Truncated { left: usize },
}

/// Go's standard encoding as Traefik decodes it: padding required at the end of a chunk,
/// non-zero bits after the last byte tolerated.
const DECODER: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// A base64 decoder fed piece by piece, keeping the characters of an unfinished quantum.
#[derive(Debug, Default)]
pub(super) struct TextDecoder {
    held: [u8; 4],
    held_len: usize,
    /// Characters (line breaks aside) decoded so far, for error offsets.
    consumed: u64,
}

impl TextDecoder {
    /// Decodes what `input` completes, appending the bytes to `out`.
    pub(super) fn push(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), TextBodyError> {
        let filtered;
        let mut input = if input.iter().any(|b| matches!(b, b'\r' | b'\n')) {
            filtered = input
                .iter()
                .copied()
                .filter(|b| !matches!(b, b'\r' | b'\n'))
                .collect::<Vec<u8>>();
            &filtered[..]
        } else {
            input
        };
        if self.held_len > 0 {
            let take = (4 - self.held_len).min(input.len());
            self.held[self.held_len..self.held_len + take].copy_from_slice(&input[..take]);
            self.held_len += take;
            input = &input[take..];
            if self.held_len < 4 {
                return Ok(());
            }
            let quantum = self.held;
            self.held_len = 0;
            self.decode(&quantum, out)?;
        }
        let whole = input.len() - input.len() % 4;
        let (mut quanta, rest) = input.split_at(whole);
        while !quanta.is_empty() {
            // A padded quantum ends a chunk: decode up to it, then go on from the next one.
            let end = match quanta.iter().position(|&b| b == b'=') {
                Some(pad) => (pad / 4 + 1) * 4,
                None => quanta.len(),
            };
            self.decode(&quanta[..end], out)?;
            quanta = &quanta[end..];
        }
        self.held[..rest.len()].copy_from_slice(rest);
        self.held_len = rest.len();
        Ok(())
    }

    /// Checks that the body did not end inside a quantum.
    pub(super) fn finish(&self) -> Result<(), TextBodyError> {
        match self.held_len {
            0 => Ok(()),
            left => Err(TextBodyError::Truncated { left }),
        }
    }

    /// Decodes whole quanta, only the last of which may be padded.
    fn decode(&mut self, quanta: &[u8], out: &mut BytesMut) -> Result<(), TextBodyError> {
        let start = out.len();
        out.resize(start + quanta.len() / 4 * 3, 0);
        let decoded = DECODER
            .decode_slice(quanta, &mut out[start..])
            .map_err(|error| {
                // Padding and length errors are about the last quantum.
                let within = match error {
                    DecodeSliceError::DecodeError(
                        DecodeError::InvalidByte(at, _) | DecodeError::InvalidLastSymbol(at, _),
                    ) => at,
                    _ => quanta.len() - 4,
                };
                TextBodyError::InvalidBase64 {
                    at: self.consumed + (within - within % 4) as u64,
                }
            })?;
        out.truncate(start + decoded);
        self.consumed += quanta.len() as u64;
        Ok(())
    }
}

/// A text-mode request body, decoded from base64 as it streams in.
pub(super) struct TextRequestBody {
    inner: Body,
    decoder: TextDecoder,
    done: bool,
}

impl TextRequestBody {
    pub(super) fn new(inner: Body) -> Self {
        Self {
            inner,
            decoder: TextDecoder::default(),
            done: false,
        }
    }

    fn fail(&mut self, error: TextBodyError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        Poll::Ready(Some(Err(Box::new(error))))
    }
}

impl http_body::Body for TextRequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        while !this.done {
            let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
                None => {
                    if let Err(error) = this.decoder.finish() {
                        return this.fail(error);
                    }
                    this.done = true;
                    return Poll::Ready(None);
                }
            };
            match frame.into_data() {
                Ok(text) => {
                    let mut out = BytesMut::with_capacity(text.len() / 4 * 3 + 3);
                    if let Err(error) = this.decoder.push(&text, &mut out) {
                        return this.fail(error);
                    }
                    // A piece shorter than a quantum decodes to nothing yet.
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                    }
                }
                // Trailers end the body: the text must be complete by then.
                Err(trailers) => {
                    if let Err(error) = this.decoder.finish() {
                        return this.fail(error);
                    }
                    return Poll::Ready(Some(Ok(trailers)));
                }
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// A gRPC response body turned into a gRPC-Web one, base64 encoded frame by frame when
/// `text`.
pub(super) struct WebResponseBody {
    inner: Body,
    text: bool,
    /// The trailer frame has been written: nothing follows it.
    done: bool,
}

impl WebResponseBody {
    pub(super) fn new(inner: Body, text: bool) -> Self {
        Self {
            inner,
            text,
            done: false,
        }
    }

    fn data(&self, bytes: Bytes) -> Frame<Bytes> {
        if self.text && !bytes.is_empty() {
            // Padded per frame, so that each frame is sent (and decodable) as it comes.
            Frame::data(Bytes::from(STANDARD.encode(&bytes)))
        } else {
            Frame::data(bytes)
        }
    }
}

impl http_body::Body for WebResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        while !this.done {
            let trailers = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => return Poll::Ready(Some(Ok(this.data(data)))),
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => trailers,
                        // No other kind of frame exists today; none has a gRPC-Web form.
                        Err(_) => continue,
                    },
                },
                Some(Err(error)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
                // No trailers (a Trailers-Only response has its status in the headers, which
                // are passed on as they are): the frame is empty, as Traefik sends it.
                None => HeaderMap::new(),
            };
            this.done = true;
            return Poll::Ready(Some(Ok(this.data(trailer_frame(&trailers)))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The gRPC-Web frame carrying `trailers`: flag `0x80`, the block's length (4 bytes, big
/// endian), then one `name: value\r\n` line per field, names lower case and sorted as Traefik
/// writes them. Fields other than `grpc-status` and `grpc-message` are left out once the
/// block would pass [`MAX_TRAILER_BLOCK`].
pub(super) fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let mut fields: Vec<(&str, &[u8])> = trailers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    // Stable: the values of one name keep their order.
    fields.sort_by_key(|(name, _)| *name);
    let line_len = |(name, value): &(&str, &[u8])| name.len() + 2 + value.len() + 2;
    let mut budget = MAX_TRAILER_BLOCK.saturating_sub(
        fields
            .iter()
            .filter(|field| STATUS_FIELDS.contains(&field.0))
            .map(line_len)
            .sum(),
    );
    fields.retain(|field| {
        if STATUS_FIELDS.contains(&field.0) {
            return true;
        }
        let len = line_len(field);
        let fits = len <= budget;
        if fits {
            budget -= len;
        }
        fits
    });
    let block_len: usize = fields.iter().map(line_len).sum();
    let mut frame = BytesMut::with_capacity(5 + block_len);
    frame.put_u8(TRAILER_FLAG);
    // The status fields are bounded by the header size limits, so this always fits.
    frame.put_u32(u32::try_from(block_len).unwrap_or(u32::MAX));
    for (name, value) in fields {
        frame.put_slice(name.as_bytes());
        frame.put_slice(b": ");
        frame.put_slice(value);
        frame.put_slice(b"\r\n");
    }
    frame.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{boxed, full_body};
    use http::HeaderValue;
    use http_body_util::BodyExt;

    fn decode_in_pieces(text: &[u8], cuts: &[usize]) -> Result<Vec<u8>, TextBodyError> {
        let mut decoder = TextDecoder::default();
        let mut out = BytesMut::new();
        let mut from = 0;
        for &cut in cuts.iter().chain(std::iter::once(&text.len())) {
            decoder.push(&text[from..cut], &mut out)?;
            from = cut;
        }
        decoder.finish()?;
        Ok(out.to_vec())
    }

    /// A gRPC frame holding `message`.
    fn message_frame(message: &[u8]) -> Vec<u8> {
        let mut frame = vec![0];
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(message);
        frame
    }

    #[test]
    fn text_decodes_whatever_the_chunk_boundaries() {
        let frame = message_frame(b"hello, gRPC-Web");
        let text = STANDARD.encode(&frame);
        for cut in 0..=text.len() {
            assert_eq!(
                decode_in_pieces(text.as_bytes(), &[cut]).unwrap(),
                frame,
                "cut at {cut}"
            );
        }
        for (a, b) in [(1, 2), (3, 5), (4, 8), (5, 6), (2, 11)] {
            assert_eq!(decode_in_pieces(text.as_bytes(), &[a, b]).unwrap(), frame);
        }
    }

    #[test]
    fn text_may_be_several_padded_chunks() {
        let (one, two) = (message_frame(b"a"), message_frame(b"bc"));
        let text = format!("{}{}", STANDARD.encode(&one), STANDARD.encode(&two));
        assert!(text[..text.len() - 1].contains('='), "{text}");
        let both = [one, two].concat();
        for cut in 0..=text.len() {
            assert_eq!(decode_in_pieces(text.as_bytes(), &[cut]).unwrap(), both);
        }
    }

    #[test]
    fn text_ignores_line_breaks() {
        let frame = message_frame(b"wrapped");
        let text = STANDARD.encode(&frame);
        let wrapped = format!("{}\r\n{}\n", &text[..6], &text[6..]);
        assert_eq!(decode_in_pieces(wrapped.as_bytes(), &[7]).unwrap(), frame);
    }

    #[test]
    fn bad_text_is_an_error_with_its_offset() {
        assert_eq!(
            decode_in_pieces(b"AAAAAA*A", &[]),
            Err(TextBodyError::InvalidBase64 { at: 4 })
        );
        assert_eq!(
            decode_in_pieces(b"AAAAA=AA", &[3]),
            Err(TextBodyError::InvalidBase64 { at: 4 })
        );
        assert_eq!(
            decode_in_pieces(b"A===", &[]),
            Err(TextBodyError::InvalidBase64 { at: 0 })
        );
        assert_eq!(
            decode_in_pieces(b"AAAAAA", &[2]),
            Err(TextBodyError::Truncated { left: 2 })
        );
        // Bits after the last byte are tolerated, as Go's standard decoding does.
        assert_eq!(decode_in_pieces(b"AB==", &[]).unwrap(), vec![0]);
    }

    /// A body made of `frames`, each read on its own.
    struct Frames(std::collections::VecDeque<Frame<Bytes>>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn body_of(frames: Vec<Frame<Bytes>>) -> Body {
        boxed(Frames(frames.into()))
    }

    async fn frames(
        mut body: impl http_body::Body<Data = Bytes, Error = BoxError> + Unpin,
    ) -> Vec<Result<Frame<Bytes>, String>> {
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            out.push(frame.map_err(|e| e.to_string()));
        }
        out
    }

    #[tokio::test]
    async fn text_request_body_fails_on_bad_base64() {
        let body = TextRequestBody::new(full_body("AAAA!AAA"));
        let frames = frames(body).await;
        assert_eq!(frames.len(), 1);
        assert_eq!(
            frames[0].as_ref().unwrap_err(),
            &TextBodyError::InvalidBase64 { at: 4 }.to_string()
        );
    }

    fn status_trailers(status: &str, message: &str) -> HeaderMap {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_str(status).unwrap());
        trailers.insert("grpc-message", HeaderValue::from_str(message).unwrap());
        trailers
    }

    #[test]
    fn trailers_become_a_frame_flagged_0x80() {
        let frame = trailer_frame(&status_trailers("5", "not found"));
        let block = b"grpc-message: not found\r\ngrpc-status: 5\r\n";
        assert_eq!(frame[0], 0x80);
        assert_eq!(&frame[1..5], &(block.len() as u32).to_be_bytes());
        assert_eq!(&frame[5..], block);
        assert_eq!(&trailer_frame(&HeaderMap::new())[..], &[0x80, 0, 0, 0, 0]);
    }

    #[test]
    fn an_oversized_trailer_block_keeps_the_status_and_stays_bounded() {
        let mut trailers = status_trailers("0", "");
        let big = HeaderValue::from_str(&"x".repeat(MAX_TRAILER_BLOCK / 3)).unwrap();
        for name in ["a-1", "a-2", "a-3", "a-4"] {
            trailers.insert(name, big.clone());
        }
        let frame = trailer_frame(&trailers);
        let block = std::str::from_utf8(&frame[5..]).unwrap();
        assert!(block.len() <= MAX_TRAILER_BLOCK, "{}", block.len());
        assert_eq!(
            u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize,
            block.len()
        );
        assert!(block.contains("grpc-status: 0\r\n"));
        assert!(block.contains("grpc-message: \r\n"));
        assert!(block.contains("a-1: ") && block.contains("a-2: "));
        assert!(!block.contains("a-3: ") && !block.contains("a-4: "));
    }

    #[tokio::test]
    async fn response_messages_pass_and_trailers_come_last_in_binary_mode() {
        let message = message_frame(b"reply");
        let body = body_of(vec![
            Frame::data(Bytes::copy_from_slice(&message[..3])),
            Frame::data(Bytes::copy_from_slice(&message[3..])),
            Frame::trailers(status_trailers("0", "")),
        ]);
        let out = WebResponseBody::new(body, false).collect().await.unwrap();
        assert!(out.trailers().is_none());
        let bytes = out.to_bytes();
        let expected = [
            message.clone(),
            trailer_frame(&status_trailers("0", "")).to_vec(),
        ]
        .concat();
        assert_eq!(&bytes[..], &expected[..]);
    }

    #[tokio::test]
    async fn text_mode_encodes_each_frame_with_its_padding() {
        let message = message_frame(b"reply");
        let body = body_of(vec![
            Frame::data(Bytes::copy_from_slice(&message)),
            Frame::trailers(status_trailers("0", "")),
        ]);
        let frames = frames(WebResponseBody::new(body, true)).await;
        let texts: Vec<Bytes> = frames
            .into_iter()
            .map(|f| f.unwrap().into_data().unwrap())
            .collect();
        assert_eq!(texts.len(), 2);
        assert_eq!(texts[0], STANDARD.encode(&message));
        assert_eq!(
            texts[1],
            STANDARD.encode(trailer_frame(&status_trailers("0", "")))
        );
        // What a client receives decodes back whole, padding inside and all.
        let all = [texts[0].clone(), texts[1].clone()].concat();
        let decoded = decode_in_pieces(&all, &[5]).unwrap();
        assert_eq!(&decoded[..message.len()], &message[..]);
    }

    #[tokio::test]
    async fn a_body_without_trailers_ends_with_an_empty_trailer_frame() {
        let body = full_body(Bytes::new());
        let bytes = WebResponseBody::new(body, false)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&bytes[..], &[0x80, 0, 0, 0, 0]);
    }
}
