//! The producer: one a process, ticking. Each tick it reads what the events
//! due a message hold now, and broadcasts each change once for all their
//! clients.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use flashtix_model::seating::ZoneMap;
use tokio::time::{interval, Instant, MissedTickBehavior};

use super::{as_sold, seated, Frame, Kind, SeatChange, Stock, Streams, Told};
use crate::runtime::stop::Stop;

/// The longest an event waits between messages however many clients the
/// budget is shared by.
pub const LONGEST_SPACING: Duration = Duration::from_secs(10);

impl Streams {
    /// The producer: a tick every `pace.every` until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: Stop) {
        let mut ticks = interval(self.pace.every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.until_requested() => return,
            }
            match self.tick().await {
                Err(error) => {
                    if !self.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(%error, "the stock stream could not read the sale; its clients wait");
                    }
                }
                Ok(()) => {
                    if self.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("the stock stream reads the sale again");
                    }
                }
            }
        }
    }

    /// How long apart an event's messages must be with `clients` in all:
    /// the tick, or longer if the budget says so (at most
    /// [`LONGEST_SPACING`]).
    fn spacing(&self, clients: usize) -> Duration {
        spacing(self.pace.every, self.pace.budget, clients)
    }

    /// The events due a message, with what each last told; drops the
    /// channels nobody watches any more.
    fn due(&self, now: Instant) -> Vec<(i64, Arc<Told>)> {
        let mut channels = self.channels();
        channels
            .by_event
            .retain(|_, channel| channel.frames.receiver_count() > 0);
        let clients = channels
            .by_event
            .values()
            .map(|channel| channel.frames.receiver_count())
            .sum();
        let spacing = self.spacing(clients);
        self.metrics.set_stream_spacing(spacing);
        // Half a tick early is on time: ticks jitter.
        let half_tick = self.pace.every / 2;
        channels
            .by_event
            .iter()
            .filter(|(_, channel)| {
                now.saturating_duration_since(channel.told_at) + half_tick >= spacing
            })
            .map(|(event, channel)| (*event, Arc::clone(&channel.latest)))
            .collect()
    }

    /// Tells every due event's change since it was last told. An event
    /// gone from Postgres (a sale reset) ends its streams: their clients
    /// come back to a 404.
    async fn tick(&self) -> sqlx::Result<()> {
        let now = Instant::now();
        let due = self.due(now);
        if due.is_empty() {
            return Ok(());
        }
        let events: Vec<i64> = due.iter().map(|(event, _)| *event).collect();
        let mut stocks: HashMap<i64, Stock> = Stock::read(&self.pool, &events)
            .await?
            .into_iter()
            .map(|stock| (stock.event_id, stock))
            .collect();
        let mut news = Vec::new();
        let mut gone = Vec::new();
        let mut failed = None;
        for (event, before) in due {
            let Some(stock) = stocks.remove(&event) else {
                gone.push(event);
                continue;
            };
            // One event's seat map that cannot be read holds up only its own
            // message.
            match self.news(&before, stock).await {
                Ok(Some(told)) => news.push((event, told)),
                Ok(None) => {}
                Err(error) => failed = Some(error),
            }
        }
        let mut channels = self.channels();
        for event in gone {
            channels.by_event.remove(&event);
        }
        for (event, (told, frame)) in news {
            let Some(channel) = channels.by_event.get_mut(&event) else {
                continue;
            };
            channel.latest = Arc::new(told);
            channel.told_at = now;
            if channel.frames.send(frame).is_ok() {
                self.metrics.stream_message();
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// What there is to tell of an event after `before`, now that its
    /// counters are `stock`: its new state and the message saying so, or
    /// nothing.
    async fn news(&self, before: &Told, stock: Stock) -> sqlx::Result<Option<(Told, Frame)>> {
        let moved = stock.version > before.stock.version;
        let Some(old_zones) = &before.zones else {
            if !moved {
                return Ok(None);
            }
            return Ok(Some(told(before, stock, None, None)));
        };
        if !moved && !seated::moves_by_itself(old_zones) {
            return Ok(None);
        }
        // Counters and seats of one moment, not the batch read's counters.
        let Some((stock, Some(zones))) = seated::read(&self.pool, stock.event_id).await? else {
            return Ok(None);
        };
        let moved = stock.version > before.stock.version;
        let seats = seated::changes(old_zones, &zones);
        if !moved && seats.is_empty() {
            return Ok(None);
        }
        Ok(Some(told(before, stock, Some(zones), Some(seats))))
    }
}

/// How long apart an event's messages must be, ticking every `every`, with
/// `clients` in all sharing `budget` messages a second: a whole number of
/// ticks (an event is told on a tick), enough that the clients together
/// take no more than the budget, at most [`LONGEST_SPACING`].
fn spacing(every: Duration, budget: Option<u32>, clients: usize) -> Duration {
    let Some(budget) = budget else {
        return every;
    };
    let shared = clients as f64 / f64::from(budget);
    let ticks = (shared / every.as_secs_f64()).ceil().max(1.0);
    (every.mul_f64(ticks)).min(LONGEST_SPACING.max(every))
}

/// The state after `before` and its message: the stock as buyers can act on
/// it, and on a seated event the zones' counts and the seats that moved.
fn told(
    before: &Told,
    stock: Stock,
    zones: Option<Vec<ZoneMap>>,
    seats: Option<Vec<SeatChange>>,
) -> (Told, Frame) {
    let order = before.order + 1;
    let stock = as_sold(stock, zones.as_deref());
    let kind = Kind::between(before.stock.available, stock.available);
    let counts = zones.as_deref().map(seated::counts);
    let frame = Frame::of(order, kind, &stock, counts.as_deref(), seats.as_deref());
    (Told::new(stock, zones, order), frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_spaces_an_event_by_whole_ticks() {
        let tick = Duration::from_millis(100);
        let spacing = |clients| spacing(tick, Some(10_000), clients);
        assert_eq!(spacing(0), tick);
        assert_eq!(spacing(1_000), tick);
        // 1,400 clients at 10 a second would be 14,000: every other tick.
        assert_eq!(spacing(1_400), tick * 2);
        assert_eq!(spacing(2_500), tick * 3);
        assert_eq!(spacing(10_000), Duration::from_secs(1));
        assert_eq!(spacing(10_000_000), LONGEST_SPACING);
        assert_eq!(super::spacing(tick, None, 10_000_000), tick);
    }
}
