//! The lanes: one task per event with reservations to write. An event's first
//! reservation starts its lane; a lane that has waited its idle time with
//! nothing to do ends, so the lanes of ended events do not live as long as
//! the process. A reservation handed to a lane just as it ends comes back to
//! its sender and goes to the event's next lane: none is lost, none refused
//! for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::runtime::metrics::Metrics;

/// Reservations waiting per event. When full, request handlers wait: the
/// backpressure reaches the clients instead of growing memory.
const LANE_CAPACITY: usize = 8192;

/// How many lanes one reservation is offered to before it is given up:
/// each lane it missed had closed as it arrived.
const TRIES: usize = 3;

/// The open lanes, by event; each carries `T`s to its task.
pub(super) struct Lanes<T> {
    open: Mutex<HashMap<i64, mpsc::Sender<T>>>,
    /// How long a lane waits for a reservation before it ends.
    pub(super) idle: Duration,
    metrics: Arc<Metrics>,
}

impl<T: Send + 'static> Lanes<T> {
    pub(super) fn new(idle: Duration, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::default(),
            idle,
            metrics,
        })
    }

    /// Hands `item` to `event_id`'s lane; `start` starts a lane's task where
    /// the event has none. A lane that closed as `item` reached it hands it
    /// back, and the event's next lane takes it. `Err(item)`: no lane would.
    pub(super) async fn deliver(
        self: &Arc<Self>,
        event_id: i64,
        mut item: T,
        start: impl Fn(mpsc::Receiver<T>, Weak<Self>),
    ) -> Result<(), T> {
        for _ in 0..TRIES {
            let lane = self.lane(event_id, &start);
            match lane.send(item).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(back)) => {
                    self.forget(event_id, &lane);
                    item = back;
                }
            }
        }
        Err(item)
    }

    /// The lane of `event_id`, started if it has none.
    fn lane(
        self: &Arc<Self>,
        event_id: i64,
        start: &impl Fn(mpsc::Receiver<T>, Weak<Self>),
    ) -> mpsc::Sender<T> {
        let mut open = self.lock();
        let lane = open
            .entry(event_id)
            .or_insert_with(|| {
                let (sender, receiver) = mpsc::channel(LANE_CAPACITY);
                start(receiver, Arc::downgrade(self));
                sender
            })
            .clone();
        self.metrics.set_writer_lanes(open.len());
        lane
    }

    /// A quiet lane leaves: no reservation finds it any more. (Only the lane
    /// of `event_id` calls this, while it is the one open: a lane is replaced
    /// only once it has left or closed.)
    pub(super) fn leave(&self, event_id: i64) {
        let mut open = self.lock();
        open.remove(&event_id);
        self.metrics.set_writer_lanes(open.len());
    }

    /// Forgets `lane`, closed without leaving (its task ended), if it is
    /// still the one open for `event_id`.
    fn forget(&self, event_id: i64, lane: &mpsc::Sender<T>) {
        let mut open = self.lock();
        if open
            .get(&event_id)
            .is_some_and(|open| open.same_channel(lane))
        {
            open.remove(&event_id);
        }
        self.metrics.set_writer_lanes(open.len());
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i64, mpsc::Sender<T>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lanes whose first `ending` close at once (as a lane does when it
    /// closes the moment an item reaches it); later ones pass on what they
    /// receive, with their number, to `kept`.
    struct Fixture {
        lanes: Arc<Lanes<u32>>,
        started: Arc<Mutex<usize>>,
        ending: usize,
        kept: mpsc::UnboundedSender<(usize, u32)>,
    }

    impl Fixture {
        fn new(ending: usize) -> (Self, mpsc::UnboundedReceiver<(usize, u32)>) {
            let (kept, received) = mpsc::unbounded_channel();
            let lanes = Lanes::new(Duration::from_secs(60), Arc::new(Metrics::default()));
            let started = Arc::default();
            (
                Self {
                    lanes,
                    started,
                    ending,
                    kept,
                },
                received,
            )
        }

        async fn deliver(&self, item: u32) -> Result<(), u32> {
            self.lanes
                .deliver(1, item, |mut receiver, _| {
                    let mut started = self.started.lock().unwrap();
                    *started += 1;
                    let lane = *started;
                    if lane <= self.ending {
                        receiver.close();
                        return;
                    }
                    let kept = self.kept.clone();
                    tokio::spawn(async move {
                        while let Some(item) = receiver.recv().await {
                            let _ = kept.send((lane, item));
                        }
                    });
                })
                .await
        }

        fn started(&self) -> usize {
            *self.started.lock().unwrap()
        }
    }

    #[tokio::test]
    async fn an_item_a_closing_lane_hands_back_goes_to_the_next_lane() {
        let (lanes, mut kept) = Fixture::new(2);
        assert_eq!(lanes.deliver(7).await, Ok(()));
        assert_eq!(lanes.started(), 3, "two lanes closed, the third took it");
        assert_eq!(lanes.deliver(8).await, Ok(()));
        assert_eq!(lanes.started(), 3, "the open lane takes the next one");
        assert_eq!(kept.recv().await, Some((3, 7)));
        assert_eq!(kept.recv().await, Some((3, 8)));
        assert_eq!(lanes.lanes.lock().len(), 1);
    }

    #[tokio::test]
    async fn an_item_no_lane_takes_comes_back() {
        let (lanes, _kept) = Fixture::new(TRIES);
        assert_eq!(lanes.deliver(7).await, Err(7));
        assert_eq!(lanes.started(), TRIES);
        assert!(lanes.lanes.lock().is_empty(), "no closed lane stays open");
    }

    #[tokio::test]
    async fn a_lane_that_left_is_replaced_by_the_next_item() {
        let (lanes, mut kept) = Fixture::new(0);
        assert_eq!(lanes.deliver(1).await, Ok(()));
        lanes.lanes.leave(1);
        assert!(lanes.lanes.lock().is_empty());
        assert_eq!(lanes.deliver(2).await, Ok(()));
        assert_eq!(lanes.started(), 2, "a new lane for the event");
        assert_eq!(kept.recv().await, Some((1, 1)));
        assert_eq!(kept.recv().await, Some((2, 2)));
    }
}
