//! The start of `responseHeaderTimeout`: like Go's transport, the clock starts once the
//! request, body included, has been written, so a slow upload is not cut short by it.
//!
//! [`RequestBody`] wraps the body sent upstream and lets go of a oneshot sender when the
//! last frame has been taken (or the body is dropped); [`BodySent`] resolves then.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::oneshot;

use crate::handler::{Body, BoxError};

/// A request body that reports when it has been sent in full.
pub(super) struct RequestBody {
    inner: Body,
    /// Dropped when the body is done; the receiver then resolves.
    sent: Option<oneshot::Sender<()>>,
}

/// Resolves once the request body has been sent (or abandoned).
pub(super) struct BodySent(oneshot::Receiver<()>);

impl BodySent {
    pub(super) async fn wait(self) {
        // Either outcome means the sender is gone: nothing more will be written.
        let _ = self.0.await;
    }
}

impl RequestBody {
    pub(super) fn new(inner: Body) -> (Self, BodySent) {
        let (tx, rx) = oneshot::channel();
        // hyper never polls a body that is already at its end (GET...).
        let sent = (!inner.is_end_stream()).then_some(tx);
        (Self { inner, sent }, BodySent(rx))
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let done = match &polled {
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Ready(_) => true,
            Poll::Pending => false,
        };
        if done {
            this.sent = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{empty_body, full_body};
    use http_body_util::BodyExt;
    use std::time::Duration;

    async fn resolved(sent: BodySent) -> bool {
        tokio::time::timeout(Duration::from_millis(50), sent.wait())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn an_empty_body_counts_as_sent_at_once() {
        let (_body, sent) = RequestBody::new(empty_body());
        assert!(resolved(sent).await);
    }

    #[tokio::test]
    async fn a_body_counts_as_sent_after_its_last_frame() {
        let (mut body, sent) = RequestBody::new(full_body("payload"));
        assert!(body.sent.is_some());
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "payload");
        assert!(body.sent.is_none());
        assert!(resolved(sent).await);
    }

    #[tokio::test]
    async fn a_dropped_body_counts_as_sent() {
        let (body, sent) = RequestBody::new(full_body("payload"));
        drop(body);
        assert!(resolved(sent).await);
    }
}
