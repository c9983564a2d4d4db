//! Request bodies read whole so a request can be sent more than once (mirroring, failover on
//! a status), within a size limit; and the body that replays what was read before giving up.

use bytes::{Bytes, BytesMut};
use http::Request;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::request::Parts;
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;

use crate::handler::prefixed_body;
use crate::handler::{Body, BoxError, empty_body, full_body};

/// A request body read as far as the limit allows.
pub(crate) enum Buffered {
    /// The whole body (trailers dropped, as Traefik drops them).
    Complete(Bytes),
    /// Longer than the limit: what was read, followed by the rest, still streaming.
    TooLarge(Body),
}

/// Reads `body` whole when it has at most `limit` bytes (`None`: no limit).
pub(crate) async fn buffer(mut body: Body, limit: Option<u64>) -> Result<Buffered, BoxError> {
    if limit.is_some_and(|limit| body.size_hint().lower() > limit) {
        return Ok(Buffered::TooLarge(body));
    }
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        read.extend_from_slice(&data);
        if limit.is_some_and(|limit| read.len() as u64 > limit) {
            return Ok(Buffered::TooLarge(prefixed_body(
                Ok(Frame::data(read.freeze())),
                body,
            )));
        }
    }
    Ok(Buffered::Complete(read.freeze()))
}

/// A copy of a buffered request.
pub(crate) fn replay(parts: &Parts, body: &Bytes) -> Request<Body> {
    Request::from_parts(parts.clone(), full_body(body.clone()))
}

/// A copy of a request without its body, its framing headers removed so that the empty
/// body is consistent.
pub(crate) fn without_body(parts: &Parts) -> Request<Body> {
    let mut parts = parts.clone();
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.remove(TRANSFER_ENCODING);
    Request::from_parts(parts, empty_body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::boxed;
    use http_body_util::channel::Channel;

    async fn text(body: Body) -> String {
        let bytes = body.collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// A body of unknown length sent in `chunks`.
    fn streamed(chunks: &'static [&'static str]) -> Body {
        let (mut tx, body) = Channel::<Bytes, BoxError>::new(4);
        tokio::spawn(async move {
            for chunk in chunks {
                if tx
                    .send_data(Bytes::from_static(chunk.as_bytes()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        boxed(body)
    }

    #[tokio::test]
    async fn bodies_within_the_limit_are_read_whole() {
        let Ok(Buffered::Complete(bytes)) = buffer(streamed(&["ab", "cd"]), Some(4)).await else {
            panic!("expected a complete body");
        };
        assert_eq!(bytes, "abcd");
        let Ok(Buffered::Complete(bytes)) = buffer(streamed(&["ab", "cd"]), None).await else {
            panic!("expected a complete body");
        };
        assert_eq!(bytes, "abcd");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_still_reaches_its_destination_whole() {
        let Ok(Buffered::TooLarge(body)) = buffer(streamed(&["ab", "cd", "ef"]), Some(3)).await
        else {
            panic!("expected too large");
        };
        assert_eq!(text(body).await, "abcdef");
        // A known length over the limit is not read at all.
        let Ok(Buffered::TooLarge(body)) = buffer(full_body("abcdef"), Some(5)).await else {
            panic!("expected too large");
        };
        assert_eq!(text(body).await, "abcdef");
    }

    #[tokio::test]
    async fn copies_keep_the_head_and_bodiless_copies_drop_the_framing() {
        let (parts, _) = Request::builder()
            .method("POST")
            .uri("/x")
            .header(CONTENT_LENGTH, "4")
            .header("x-a", "1")
            .body(())
            .unwrap()
            .into_parts();
        let copy = replay(&parts, &Bytes::from_static(b"abcd"));
        assert_eq!(copy.method(), "POST");
        assert_eq!(copy.headers()[CONTENT_LENGTH], "4");
        assert_eq!(text(copy.into_body()).await, "abcd");
        let bare = without_body(&parts);
        assert!(bare.headers().get(CONTENT_LENGTH).is_none());
        assert_eq!(bare.headers()["x-a"], "1");
        assert_eq!(text(bare.into_body()).await, "");
    }
}
