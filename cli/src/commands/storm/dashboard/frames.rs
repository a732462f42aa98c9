//! The dashboard's messages: every one kept, in order, so that a page that
//! opens (or reconnects) mid-storm is sent them all and draws the whole run
//! so far, then each new one as it comes.

use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast;

/// How many new messages a page may fall behind before it is cut off (it
/// reconnects, and is sent everything again).
const BEHIND: usize = 256;

pub struct Frames {
    sent: Mutex<Vec<Bytes>>,
    new: broadcast::Sender<Bytes>,
}

impl Default for Frames {
    fn default() -> Self {
        Self {
            sent: Mutex::new(Vec::new()),
            new: broadcast::channel(BEHIND).0,
        }
    }
}

impl Frames {
    /// Sends `data` (one line of JSON) as an event named `kind` to every
    /// page, now and to come.
    pub fn push(&self, kind: &str, data: &str) {
        let frame = Bytes::from(format!("event: {kind}\ndata: {data}\n\n"));
        let mut sent = self.sent.lock().expect("not poisoned");
        sent.push(frame.clone());
        // Under the lock: a page joining now gets it once, in its place.
        let _ = self.new.send(frame);
    }

    /// Everything sent so far, a `caught_up` event (the page draws once,
    /// there, not at every message of the run told again), then each new
    /// message as it comes; ends when the page falls [`BEHIND`].
    pub fn follow(&self) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> {
        let (so_far, new) = {
            let sent = self.sent.lock().expect("not poisoned");
            (sent.clone(), self.new.subscribe())
        };
        let retry = Bytes::from_static(b"retry: 1000\n\n");
        let caught_up = Bytes::from_static(b"event: caught_up\ndata: {}\n\n");
        let later = stream::unfold(new, |mut new| async move {
            let frame = new.recv().await.ok()?;
            Some((frame, new))
        });
        let first = std::iter::once(retry).chain(so_far).chain([caught_up]);
        stream::iter(first).chain(later).map(Ok)
    }

    /// Waits, up to `limit`, until every page following has taken every
    /// message (then a moment for the last to be written): a storm about to
    /// exit lets its final figures reach the pages first.
    pub async fn delivered(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.new.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50).min(limit)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_page_that_joins_late_is_sent_everything_then_what_comes() {
        let frames = Frames::default();
        frames.push("tick", "{\"t\":1}");
        let mut page = Box::pin(frames.follow());
        frames.push("tick", "{\"t\":2}");
        let mut got = Vec::new();
        for _ in 0..4 {
            let Some(Ok(frame)) = page.next().await else {
                panic!("a frame");
            };
            got.push(String::from_utf8(frame.to_vec()).unwrap());
        }
        assert_eq!(
            got,
            [
                "retry: 1000\n\n",
                "event: tick\ndata: {\"t\":1}\n\n",
                "event: caught_up\ndata: {}\n\n",
                "event: tick\ndata: {\"t\":2}\n\n"
            ]
        );
    }
}
