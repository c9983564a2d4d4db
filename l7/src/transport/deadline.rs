//! The start of `responseHeaderTimeout`: like Go's transport, the clock starts once the
//! request, body included, has been written, so a slow upload is not cut short by it.
//!
//! [`RequestBody`] wraps the body sent upstream and lets go of a oneshot sender when the
//! last frame has been taken (or the body is dropped); [`BodySent`] resolves then. It also
//! notes a client body that could not be read, so that the failed exchange is blamed on the
//! client (400 or 499) rather than on the server (502).

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::oneshot;

use crate::error::ProxyErrorKind;
use crate::handler::{Body, BoxError};

/// A request body that reports when it has been sent in full, and whether reading it from
/// the client failed (then the exchange failed because of the client, not the server).
pub(super) struct RequestBody {
    inner: Body,
    /// Dropped when the body is done; the receiver then resolves.
    sent: Option<oneshot::Sender<()>>,
    client_failed: Arc<OnceLock<ProxyErrorKind>>,
}

/// Resolves once the request body has been sent (or abandoned).
pub(super) struct BodySent {
    done: oneshot::Receiver<()>,
    client_failed: Arc<OnceLock<ProxyErrorKind>>,
}

impl BodySent {
    pub(super) async fn wait(&mut self) {
        // Either outcome means the sender is gone: nothing more will be written.
        let _ = (&mut self.done).await;
    }

    /// Why the client's body could not be read, if it could not: 400 for a malformed body
    /// (an invalid chunk size...), 499 for a client that went away mid-body.
    pub(super) fn client_failure(&self) -> Option<ProxyErrorKind> {
        self.client_failed.get().copied()
    }
}

impl RequestBody {
    pub(super) fn new(inner: Body) -> (Self, BodySent) {
        let (tx, rx) = oneshot::channel();
        // hyper never polls a body that is already at its end (GET...).
        let sent = (!inner.is_end_stream()).then_some(tx);
        let client_failed = Arc::new(OnceLock::new());
        (
            Self {
                inner,
                sent,
                client_failed: client_failed.clone(),
            },
            BodySent {
                done: rx,
                client_failed,
            },
        )
    }
}

/// A client body error: the client closed its connection, or sent a malformed body.
fn client_body_failure(error: &BoxError) -> ProxyErrorKind {
    match error.downcast_ref::<hyper::Error>() {
        Some(e) if e.is_incomplete_message() || e.is_closed() || e.is_canceled() => {
            ProxyErrorKind::ClientGone
        }
        _ => ProxyErrorKind::BadRequest,
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
            Poll::Ready(Some(Err(error))) => {
                let _ = this.client_failed.set(client_body_failure(error));
                true
            }
            Poll::Ready(None) => true,
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

    async fn resolved(mut sent: BodySent) -> bool {
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
