//! One client's stream: the reconnection hint and the stock as it stands,
//! then every change, each message at most once.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;

use super::{Frame, Subscription};
use crate::runtime::metrics::Metrics;

/// The messages for a client that joined with `subscription` and, if it is
/// reconnecting, had last seen `last_seen` (its `Last-Event-ID`). It is sent
/// the stock first unless it had already seen this version or a later one
/// (from another process, say) of an event sold by count; then each message
/// after the one it joined at, and none older than what it had seen.
pub fn messages(
    subscription: Subscription,
    last_seen: Option<i64>,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let Subscription { told, frames } = subscription;
    let mut first = Frame::retry().to_vec();
    let up_to_date = told.zones.is_none() && last_seen.is_some_and(|v| v >= told.stock.version);
    let oldest = match last_seen {
        Some(seen) if up_to_date => seen + 1,
        _ => {
            first.extend_from_slice(&told.snapshot);
            0
        }
    };
    metrics.stream_client_joined();
    let client = Client {
        frames,
        after: told.order,
        oldest,
        dropped: false,
        metrics,
    };
    stream::once(async move { Ok(Bytes::from(first)) }).chain(stream::unfold(
        client,
        |mut client| async move {
            let next = client.next().await?;
            Some((Ok(next), client))
        },
    ))
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
            match self.frames.recv().await {
                Ok(frame) => match frame.version {
                    // A heartbeat: always.
                    None => return Some(frame.bytes),
                    Some(version) if frame.order > self.after && version >= self.oldest => {
                        self.after = frame.order;
                        return Some(frame.bytes);
                    }
                    Some(_) => continue,
                },
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
