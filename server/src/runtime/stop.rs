//! Asking the background loops to stop. A loop checks between units of work
//! and waits for its next unit (a tick, a delivery, a backoff) through [`Stop`],
//! so a stop never cuts a transaction or a batch in half: work already begun
//! is finished (and acknowledged), work not yet begun is left for the next
//! process.

use std::time::Duration;

use tokio::sync::watch;

/// The requesting side, held by whoever decides the process is ending.
pub struct StopRequest(watch::Sender<bool>);

/// The loops' side: cheap to clone, one per loop.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

pub fn channel() -> (StopRequest, Stop) {
    let (request, stop) = watch::channel(false);
    (StopRequest(request), Stop(stop))
}

impl StopRequest {
    pub fn request(&self) {
        self.0.send_replace(true);
    }
}

impl Stop {
    pub fn requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once a stop is requested (at once if it already was).
    pub async fn until_requested(&mut self) {
        if self.0.wait_for(|stop| *stop).await.is_err() {
            // Nobody can request a stop any more.
            std::future::pending::<()>().await;
        }
    }

    /// Waits `pause`, cut short by a stop. Returns whether to go on.
    pub async fn pause(&mut self, pause: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(pause) => !self.requested(),
            () = self.until_requested() => false,
        }
    }
}
