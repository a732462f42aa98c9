//! The live stock stream, `GET /events/{id}/stream` (Server-Sent Events): a
//! buyer sees the stock move instead of asking again.
//!
//! One producer per process feeds every client: each tick (`--stream-rate`
//! a second, 10 by default) it reads, in one query, the stock of every event
//! somebody is watching, and broadcasts each change as one message formatted
//! once. So a hundred thousand orders a second are at most ten messages a
//! second to a client, and ten thousand clients cost no more queries than one.
//!
//! Why read Postgres rather than be told: the truth is the events row, and
//! every API process reads the same committed row, whoever changed it (an
//! order batch, a settlement, an expiry, a reconciler). A `NOTIFY` would
//! serialize every commit that sends one behind a database-wide lock held
//! through its flush; Redis pub/sub would need every role to publish after
//! its commit, and a crash between the two would leave streams wrong. Since
//! messages are coalesced to the tick anyway, reading at the tick costs the
//! order path nothing and can miss no change.
//!
//! Each state carries its `stock_version` (a trigger counts changes in
//! commit order), the message's `id:`: a client reconnecting with
//! `Last-Event-ID`, to this process or another, is sent the stock only if it
//! changed since (on a seated event, whose seats also move by the clock, it
//! is always sent the map). A client that falls [`BEHIND`] messages behind
//! is dropped rather than buffered; it reconnects and is sent the stock as
//! it stands.

mod client;
mod seated;
mod stock;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::bail;
use axum::body::Bytes;
use flashtix_model::seating::ZoneMap;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio::time::{interval, MissedTickBehavior};

pub use client::messages;
pub use seated::SeatChange;
pub use stock::{Frame, Kind, Stock, RETRY_MS};

use crate::runtime::metrics::Metrics;
use crate::runtime::stop::Stop;

/// Messages a client may be behind before it is dropped (at 10 a second,
/// three seconds of not reading).
pub const BEHIND: usize = 32;
/// How often a quiet stream says it is alive, so proxies keep it open.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Every event being watched in this process, and its clients.
pub struct Streams {
    pool: PgPool,
    every: Duration,
    metrics: Arc<Metrics>,
    channels: Mutex<Channels>,
    /// The last read failed (logged once an outage, not once a tick).
    failing: AtomicBool,
}

struct Channels {
    /// False once the process stops: streams end, and none begin.
    open: bool,
    by_event: HashMap<i64, Channel>,
}

/// One event's broadcast: what it last told, and its clients.
struct Channel {
    latest: Arc<Told>,
    frames: broadcast::Sender<Frame>,
}

/// An event's stock as last told.
pub struct Told {
    pub stock: Stock,
    /// A seated event's map (each seat's state); `None`: sold by count.
    pub zones: Option<Vec<ZoneMap>>,
    /// The last message's [`Frame::order`].
    pub order: u64,
    /// The message a client joining now is sent first.
    pub snapshot: Bytes,
}

impl Told {
    fn for_sale(&self) -> i64 {
        for_sale(&self.stock, self.zones.as_deref())
    }

    /// The state `stock` (with a seated event's `zones`), told by the
    /// message numbered `order`.
    pub fn new(stock: Stock, zones: Option<Vec<ZoneMap>>, order: u64) -> Told {
        let snapshot = Frame::of(order, Kind::Snapshot, &stock, zones.as_deref(), None).bytes;
        Told {
            stock,
            zones,
            order,
            snapshot,
        }
    }
}

/// Tickets for sale: on a seated event the zones' (a seat on its way back
/// is not yet), else the event's.
fn for_sale(stock: &Stock, zones: Option<&[ZoneMap]>) -> i64 {
    match zones {
        Some(zones) => zones.iter().map(|zone| zone.available).sum(),
        None => stock.available,
    }
}

/// A client's place on an event's stream.
pub struct Subscription {
    /// The stock as it stood when the client joined.
    pub told: Arc<Told>,
    /// Every message after it.
    pub frames: broadcast::Receiver<Frame>,
}

impl Streams {
    /// Streams read from `pool`, every `every` (one tick a message at most).
    pub fn new(pool: PgPool, every: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            pool,
            every,
            metrics,
            channels: Mutex::new(Channels {
                open: true,
                by_event: HashMap::new(),
            }),
            failing: AtomicBool::new(false),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn channels(&self) -> MutexGuard<'_, Channels> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the stream of `event_id`; `None`: no such event. Only the first
    /// client of an event in this process reads Postgres.
    pub async fn subscribe(&self, event_id: i64) -> anyhow::Result<Option<Subscription>> {
        if let Some(joined) = self.join(event_id, None)? {
            return Ok(Some(joined));
        }
        let Some(stock) = Stock::read(&self.pool, &[event_id]).await?.pop() else {
            return Ok(None);
        };
        let zones = seated::read(&self.pool, event_id).await?;
        self.join(event_id, Some(Told::new(stock, zones, 0)))
    }

    /// Joins the event's channel, opening it with `opening` if it has none
    /// (and none was opened meanwhile). Under the lock, so the producer
    /// never closes a channel between a client finding it and joining it.
    fn join(&self, event_id: i64, opening: Option<Told>) -> anyhow::Result<Option<Subscription>> {
        let mut channels = self.channels();
        if !channels.open {
            bail!("this process is stopping");
        }
        let channel = match channels.by_event.entry(event_id) {
            Entry::Occupied(open) => open.into_mut(),
            Entry::Vacant(none) => match opening {
                Some(told) => none.insert(Channel {
                    latest: Arc::new(told),
                    frames: broadcast::channel(BEHIND).0,
                }),
                None => return Ok(None),
            },
        };
        Ok(Some(Subscription {
            told: Arc::clone(&channel.latest),
            frames: channel.frames.subscribe(),
        }))
    }

    /// Ends every stream (their clients see the connection close and come
    /// back to another process) and refuses new ones.
    pub fn close(&self) {
        let mut channels = self.channels();
        channels.open = false;
        channels.by_event.clear();
    }

    /// The producer: a tick every `every` until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: Stop) {
        let mut ticks = interval(self.every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let per_heartbeat = (HEARTBEAT.as_millis() / self.every.as_millis().max(1)).max(1);
        let mut count: u128 = 0;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.until_requested() => return,
            }
            count += 1;
            if let Err(error) = self.tick(count.is_multiple_of(per_heartbeat)).await {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "the stock stream cannot read Postgres; streams wait");
                }
            } else if self.failing.swap(false, Ordering::Relaxed) {
                tracing::info!("the stock stream reads Postgres again");
            }
        }
    }

    /// Tells every watched event's change since the last tick; drops the
    /// channels nobody watches any more.
    async fn tick(&self, heartbeat: bool) -> sqlx::Result<()> {
        let watched: Vec<(i64, Arc<Told>)> = {
            let mut channels = self.channels();
            channels
                .by_event
                .retain(|_, channel| channel.frames.receiver_count() > 0);
            channels
                .by_event
                .iter()
                .map(|(event, channel)| (*event, Arc::clone(&channel.latest)))
                .collect()
        };
        if watched.is_empty() {
            return Ok(());
        }
        let events: Vec<i64> = watched.iter().map(|(event, _)| *event).collect();
        let mut stocks: HashMap<i64, Stock> = Stock::read(&self.pool, &events)
            .await?
            .into_iter()
            .map(|stock| (stock.event_id, stock))
            .collect();
        let mut news = Vec::new();
        for (event, before) in watched {
            let Some(stock) = stocks.remove(&event) else {
                continue;
            };
            if let Some(told) = self.news(&before, stock).await? {
                news.push((event, told));
            }
        }
        let mut channels = self.channels();
        for (event, (told, frame)) in news {
            let Some(channel) = channels.by_event.get_mut(&event) else {
                continue;
            };
            channel.latest = Arc::new(told);
            if channel.frames.send(frame).is_ok() {
                self.metrics.stream_message();
            }
        }
        if heartbeat {
            for channel in channels.by_event.values() {
                let _ = channel.frames.send(Frame::heartbeat(channel.latest.order));
            }
        }
        Ok(())
    }

    /// What there is to tell of an event after `before`, now that its stock
    /// is `stock`: its new state and the message saying so, or nothing.
    async fn news(&self, before: &Told, stock: Stock) -> sqlx::Result<Option<(Told, Frame)>> {
        let moved = stock.version > before.stock.version;
        let Some(old_zones) = &before.zones else {
            if !moved {
                return Ok(None);
            }
            return Ok(Some(self.told(before, stock, None, None)));
        };
        if !moved && !seated::moves_by_itself(old_zones) {
            return Ok(None);
        }
        let Some(zones) = seated::read(&self.pool, stock.event_id).await? else {
            return Ok(None);
        };
        let seats = seated::changes(old_zones, &zones);
        if !moved && seats.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.told(before, stock, Some(zones), Some(seats))))
    }

    /// The state after `before` and its message: the stock, and on a seated
    /// event the zones' counts and the seats that moved.
    fn told(
        &self,
        before: &Told,
        stock: Stock,
        zones: Option<Vec<ZoneMap>>,
        seats: Option<Vec<SeatChange>>,
    ) -> (Told, Frame) {
        let order = before.order + 1;
        let kind = Kind::between(before.for_sale(), for_sale(&stock, zones.as_deref()));
        let counts = zones.as_deref().map(seated::counts);
        let frame = Frame::of(order, kind, &stock, counts.as_deref(), seats.as_deref());
        (Told::new(stock, zones, order), frame)
    }
}
