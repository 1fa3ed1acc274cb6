//! Waiting on behalf of a client (a place in a route's queue, an app's start) while
//! watching whether the client is still there.

use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

/// A wait (the queue's, an app's start), given up when the client leaves meanwhile (its
/// place goes to the next waiter, and no app works for nobody): an HTTP/2 stream reset,
/// or an HTTP/1.1 connection closed by a request without a body (one with a body cannot
/// be watched without reading the body).
pub async fn wait_for_client<T>(
    session: &mut Session,
    wait: impl std::future::Future<Output = T>,
) -> Result<T> {
    let downstream = session.as_downstream_mut();
    if downstream.is_http2() {
        if let Some(closed) = downstream.watch_h2_stream_close() {
            return tokio::select! {
                placed = wait => Ok(placed),
                _ = closed => Error::e_explain(ErrorType::ConnectionClosed, "client left while waiting")
                    .map_err(|e| e.into_down()),
            };
        }
    } else if downstream.is_body_empty() {
        return tokio::select! {
            placed = wait => Ok(placed),
            left = downstream.read_body_or_idle(true) => match left {
                Err(e) => Err(e.into_down()),
                Ok(_) => Error::e_explain(ErrorType::ConnectionClosed, "client left while waiting")
                    .map_err(|e| e.into_down()),
            },
        };
    }
    Ok(wait.await)
}
