//! The lanes: a task per event with reservations to write. An event's first
//! reservation starts its lane; a lane that has waited its idle time with
//! nothing to do leaves, so the lanes of ended events do not live as long as
//! the process. A reservation handed to a lane just as it leaves comes back
//! to its sender and goes to the event's next lane: none is lost, none
//! refused for it. (A lane that has left still settles what it had been
//! handed, so for a moment an event may have two; the event's row lock
//! orders their batches.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The open lanes, by event, each with its number; each carries `T`s to its
/// task.
pub(super) struct Lanes<T> {
    open: Mutex<HashMap<i64, (u64, mpsc::Sender<T>)>>,
    /// The number the next lane gets.
    next: AtomicU64,
    /// How long a lane waits for a reservation before it leaves.
    pub(super) idle: Duration,
    metrics: Arc<Metrics>,
}

/// What a lane's task needs to leave: its place among the lanes.
pub(super) struct Leave<T> {
    lanes: Weak<Lanes<T>>,
    event_id: i64,
    lane: u64,
}

impl<T: Send + 'static> Leave<T> {
    /// The lane leaves: no reservation finds it any more. The event's entry
    /// goes only if it is still this lane's.
    pub(super) fn leave(&self) {
        if let Some(lanes) = self.lanes.upgrade() {
            lanes.remove_if(self.event_id, |(lane, _)| *lane == self.lane);
        }
    }
}

impl<T: Send + 'static> Lanes<T> {
    pub(super) fn new(idle: Duration, metrics: Arc<Metrics>) -> Arc<Self> {
        assert!(!idle.is_zero(), "a lane waits some time before it leaves");
        Arc::new(Self {
            open: Mutex::default(),
            next: AtomicU64::new(0),
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
        start: impl Fn(mpsc::Receiver<T>, Leave<T>),
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
        start: &impl Fn(mpsc::Receiver<T>, Leave<T>),
    ) -> mpsc::Sender<T> {
        let mut open = self.lock();
        let mut lane_started = false;
        let (_, lane) = open.entry(event_id).or_insert_with(|| {
            lane_started = true;
            let (sender, receiver) = mpsc::channel(LANE_CAPACITY);
            let lane = self.next.fetch_add(1, Ordering::Relaxed);
            let leave = Leave {
                lanes: Arc::downgrade(self),
                event_id,
                lane,
            };
            start(receiver, leave);
            self.metrics.writer_lane_started();
            (lane, sender)
        });
        let lane = lane.clone();
        // Counted again only when a lane started, not on every reservation.
        if lane_started {
            self.metrics.set_writer_lanes(open.len());
        }
        lane
    }

    /// Forgets `lane`, closed without leaving (its task ended), if it is
    /// still the one open for `event_id`.
    fn forget(&self, event_id: i64, lane: &mpsc::Sender<T>) {
        self.remove_if(event_id, |(_, open)| open.same_channel(lane));
    }

    /// Removes `event_id`'s lane if `is_it` says the entry is the one meant.
    fn remove_if(&self, event_id: i64, is_it: impl FnOnce(&(u64, mpsc::Sender<T>)) -> bool) {
        let mut open = self.lock();
        if open.get(&event_id).is_some_and(is_it) {
            open.remove(&event_id);
            self.metrics.set_writer_lanes(open.len());
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i64, (u64, mpsc::Sender<T>)>> {
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
                .deliver(1, item, |mut receiver, _leave| {
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
    async fn a_lane_that_left_is_replaced_by_the_next_item_and_leaves_it_be() {
        let (lanes, mut kept) = Fixture::new(0);
        let first = Leave {
            lanes: Arc::downgrade(&lanes.lanes),
            event_id: 1,
            lane: 0,
        };
        assert_eq!(lanes.deliver(1).await, Ok(()));
        first.leave();
        assert!(lanes.lanes.lock().is_empty());
        assert_eq!(lanes.deliver(2).await, Ok(()));
        assert_eq!(lanes.started(), 2, "a new lane for the event");
        assert_eq!(kept.recv().await, Some((1, 1)));
        assert_eq!(kept.recv().await, Some((2, 2)));
        // The first lane leaving again (a second quiet spell) takes nothing
        // from the lane that replaced it.
        first.leave();
        assert_eq!(lanes.lanes.lock().len(), 1);
    }
}
