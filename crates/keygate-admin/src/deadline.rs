//! A deadline on reading a request body: a body trickled a byte at a time cannot hold a
//! connection. The body is not read here (that would buffer bodies before authentication): it
//! is wrapped, and fails once the deadline has passed; the answer then becomes a 408.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::Frame;

use crate::ServeLimits;

/// A body that fails, and says so in `expired`, once `sleep` has completed.
struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(
                "the request body was not sent in time",
            ))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: the request's body must be read within [`ServeLimits::body_read_timeout`] of
/// its head; a request whose body ran out of time gets 408 whatever its handler answered.
pub(crate) async fn body_deadline(
    State(limits): State<ServeLimits>,
    req: Request,
    next: Next,
) -> Response {
    let expired = Arc::new(AtomicBool::new(false));
    let req = req.map(|inner| {
        Body::new(DeadlineBody {
            inner,
            sleep: Box::pin(tokio::time::sleep(limits.body_read_timeout)),
            expired: Arc::clone(&expired),
        })
    });
    let res = next.run(req).await;
    if expired.load(Ordering::Relaxed) {
        return (http::StatusCode::REQUEST_TIMEOUT, "the request body was not sent in time")
            .into_response();
    }
    res
}
