//! The live stock stream, `GET /events/{id}/stream` (Server-Sent Events): a
//! buyer sees the stock move instead of asking again.
//!
//! One producer per process feeds every client: each tick (`--stream-rate`
//! a second, 10 by default) it reads, in one query, the stock of every event
//! sold by count that somebody is watching (a seated event's seat map too,
//! once for all its clients, while it moves), and broadcasts each change as
//! one message formatted once. So a hundred thousand orders a second are at
//! most ten messages a second to a client, and ten thousand clients cost no
//! more queries than one. Sending costs a write per client, so a process
//! sends at most `--stream-budget` messages a second in all: past that,
//! every event is told less often.
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
mod producer;
mod seated;
mod stock;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use anyhow::bail;
use axum::body::Bytes;
use flashtix_model::seating::ZoneMap;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio::time::Instant;

pub use client::messages;
pub use seated::SeatChange;
pub use stock::{Frame, Kind, Stock, RETRY_MS};

use crate::runtime::config::StreamPace;
use crate::runtime::metrics::Metrics;

/// Messages a client may be behind before it is dropped (at 10 a second,
/// three seconds of not reading).
pub const BEHIND: usize = 32;
/// How long a stream stays quiet before it says it is alive, so proxies
/// keep it open.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Every event being watched in this process, and its clients.
pub struct Streams {
    pool: PgPool,
    pace: StreamPace,
    metrics: Arc<Metrics>,
    channels: Mutex<Channels>,
    /// Per event being opened, held while its first client reads it: the
    /// clients that come at the same moment wait for that read, not read it
    /// again, and other events' clients wait for nothing.
    opening: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
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
    /// When it last told a change.
    told_at: Instant,
}

/// An event's stock as last told.
pub struct Told {
    /// As buyers can act on it (see [`as_sold`]).
    pub stock: Stock,
    /// A seated event's map (each seat's state); `None`: sold by count.
    pub zones: Option<Vec<ZoneMap>>,
    /// The last message's [`Frame::order`].
    pub order: u64,
    /// The message a client joining now is sent first, formatted once the
    /// first such client comes (most states are replaced before one does,
    /// and a seated event's draws every seat).
    snapshot: OnceLock<Bytes>,
}

impl Told {
    /// The state `stock` (with a seated event's `zones`), told by the
    /// message numbered `order`.
    pub fn new(stock: Stock, zones: Option<Vec<ZoneMap>>, order: u64) -> Told {
        Told {
            stock,
            zones,
            order,
            snapshot: OnceLock::new(),
        }
    }

    /// The message a client joining now is sent first.
    pub fn snapshot(&self) -> Bytes {
        self.snapshot
            .get_or_init(|| {
                let zones = self.zones.as_deref();
                Frame::of(self.order, Kind::Snapshot, &self.stock, zones, None).bytes
            })
            .clone()
    }
}

/// The stock as buyers can act on it. On a seated event `available` is what
/// its zones have for sale: a seat an unpaid order freed is back in the
/// event's counters at once but on sale only seconds later, so until then
/// it is not available. An event with nothing for sale is sold out since
/// its counters last reached zero (the same moment on every process), or,
/// if they never did (a seat on its way back kept them above), since this
/// state.
pub fn as_sold(mut stock: Stock, zones: Option<&[ZoneMap]>) -> Stock {
    if let Some(zones) = zones {
        stock.available = zones.iter().map(|zone| zone.available).sum();
    }
    stock.sold_out_at = if stock.available > 0 {
        None
    } else {
        stock.sold_out_at.or(Some(stock.changed_at))
    };
    stock
}

/// A client's place on an event's stream.
pub struct Subscription {
    /// The stock as it stood when the client joined.
    pub told: Arc<Told>,
    /// Every message after it.
    pub frames: broadcast::Receiver<Frame>,
}

impl Streams {
    /// Streams read from `pool` at `pace`.
    pub fn new(pool: PgPool, pace: StreamPace, metrics: Arc<Metrics>) -> Self {
        Self {
            pool,
            pace,
            metrics,
            channels: Mutex::new(Channels {
                open: true,
                by_event: HashMap::new(),
            }),
            opening: Mutex::new(HashMap::new()),
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
    /// client of an event in this process reads Postgres; those that come
    /// while it reads wait for it.
    pub async fn subscribe(&self, event_id: i64) -> anyhow::Result<Option<Subscription>> {
        if let Some(joined) = self.join(event_id, None)? {
            return Ok(Some(joined));
        }
        let gate = {
            let mut opening = self.opening.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(opening.entry(event_id).or_default())
        };
        let opened = async {
            let _opening = gate.lock().await;
            if let Some(joined) = self.join(event_id, None)? {
                return Ok(Some(joined));
            }
            let Some((stock, zones)) = seated::read(&self.pool, event_id).await? else {
                return Ok(None);
            };
            let stock = as_sold(stock, zones.as_deref());
            self.join(event_id, Some(Told::new(stock, zones, 0)))
        }
        .await;
        // The last one out forgets the gate (the map holds one reference).
        let mut opening = self.opening.lock().unwrap_or_else(|e| e.into_inner());
        if Arc::strong_count(&gate) == 2 {
            opening.remove(&event_id);
        }
        opened
    }

    /// The version of `event_id`'s stock Postgres holds now (`None`: no
    /// such event): for a client claiming to have seen a later one than
    /// this process has told.
    pub async fn version(&self, event_id: i64) -> sqlx::Result<Option<i64>> {
        Ok(Stock::read(&self.pool, &[event_id])
            .await?
            .pop()
            .map(|stock| stock.version))
    }

    /// Joins the event's channel, opening it with `opening` if it has none.
    /// Under the lock, so the producer never closes a channel between a
    /// client finding it and joining it.
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
                    told_at: Instant::now(),
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
}
