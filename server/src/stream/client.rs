//! One client's stream: the reconnection hint and the stock as it stands,
//! then every change, each message at most once, and a heartbeat whenever
//! it has been quiet for [`HEARTBEAT`].

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;

use super::{Frame, Subscription, HEARTBEAT};
use crate::runtime::metrics::Metrics;

/// The messages for a client that joined with `subscription` and, if it is
/// reconnecting, had last seen `last_seen` (its `Last-Event-ID`, no later
/// than the database's version). It is sent the stock first unless it had
/// already seen this version or a later one (from another process, say) of
/// an event sold by count; then each message after the one it joined at,
/// and none older than what it had seen.
pub fn messages(
    subscription: Subscription,
    last_seen: Option<i64>,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let Subscription { told, frames } = subscription;
    let up_to_date = told.zones.is_none() && last_seen.is_some_and(|v| v >= told.stock.version);
    let (first, oldest) = match last_seen {
        Some(seen) if up_to_date => (vec![Frame::retry()], seen + 1),
        _ => (vec![Frame::retry(), told.snapshot()], 0),
    };
    metrics.stream_client_joined();
    let client = Client {
        frames,
        after: told.order,
        oldest,
        dropped: false,
        metrics,
    };
    stream::iter(first.into_iter().map(Ok)).chain(stream::unfold(client, |mut client| async move {
        let next = client.next().await?;
        Some((Ok(next), client))
    }))
}

struct Client {
    frames: Receiver<Frame>,
    /// The order of the last message it has (or joined after).
    after: u64,
    /// The oldest version it still needs.
    oldest: i64,
    dropped: bool,
    metrics: Arc<Metrics>,
}

impl Client {
    /// The next bytes to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Bytes> {
        if self.dropped {
            return None;
        }
        loop {
            let Ok(received) = tokio::time::timeout(HEARTBEAT, self.frames.recv()).await else {
                return Some(Frame::heartbeat());
            };
            match received {
                Ok(frame) if frame.order > self.after && frame.version >= self.oldest => {
                    self.after = frame.order;
                    return Some(frame.bytes);
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => {
                    self.dropped = true;
                    self.metrics.stream_client_dropped();
                    return Some(Frame::dropped());
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.metrics.stream_client_left();
    }
}
