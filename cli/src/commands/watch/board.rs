//! What `flashtix watch` knows of the sale: each process's last scrapes,
//! each event's stock as its stream told it, the broker's queues and a
//! drill's fault windows; and the figures the screen shows, worked out
//! from them.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use flashtix_chaos::windows::Window;
use flashtix_model::seating::ZoneMap;
use serde::Deserialize;

use super::scrape::{buckets_since, increase, quantile, Buckets, Quantile, Scrape};

/// How far back the rates and the order path's latency look.
pub const RATE_WINDOW: Duration = Duration::from_secs(5);
/// A process not heard from for this many scrape intervals is down.
const SILENT_SCRAPES: u32 = 3;

/// The order path's histogram and the labels of its route.
const REQUESTS: &str = "flashtix_http_request_duration_seconds";
const ORDER_PATH: [(&str, &str); 2] = [("route", "/orders"), ("method", "POST")];

#[derive(Debug, Default)]
pub struct Board {
    /// Every process watched, in the order given.
    pub processes: Vec<Process>,
    /// The sale's events, by id.
    pub events: BTreeMap<i64, EventWatch>,
    /// Why the list of events could not be read, when it could not.
    pub events_error: Option<String>,
    /// The broker's queues by name (without the namespace), with their ready messages (`None`: the
    /// queue does not exist); `Err`: the broker could not be asked.
    pub queues: Option<Result<Vec<QueueDepth>, String>>,
    /// A drill's fault windows, when watching one.
    pub faults: Option<Result<Vec<Window>, String>>,
}

/// A queue's name and its ready messages; `None`: it does not exist.
pub type QueueDepth = (String, Option<u32>);

/// One process of the sale, as its `/health`, `/ready` and `/metrics` said.
#[derive(Debug)]
pub struct Process {
    pub url: String,
    /// The roles it runs, once its `/health` said.
    pub roles: Vec<String>,
    /// Its scrapes of the last [`RATE_WINDOW`] and one before, oldest first.
    pub scrapes: VecDeque<(Instant, Scrape)>,
    /// When it last answered, and why it did not since.
    pub answered: Option<Instant>,
    pub error: Option<String>,
    /// `/ready`: `Ok` or what is not.
    pub ready: Option<Result<(), String>>,
}

impl Process {
    pub fn new(url: String) -> Self {
        Self {
            url,
            roles: Vec::new(),
            scrapes: VecDeque::new(),
            answered: None,
            error: None,
            ready: None,
        }
    }

    /// Keeps `scrape`, and what the rates need before it.
    pub fn scraped(&mut self, at: Instant, scrape: Scrape) {
        self.scrapes.push_back((at, scrape));
        while self
            .scrapes
            .get(1)
            .is_some_and(|(second, _)| at.duration_since(*second) >= RATE_WINDOW)
        {
            self.scrapes.pop_front();
        }
        self.answered = Some(at);
        self.error = None;
    }

    pub fn serves_api(&self) -> bool {
        self.roles.iter().any(|role| role == "api")
    }

    /// Whether it answered lately, given how often it is asked.
    /// It did not answer: what it said before no longer counts toward the
    /// rates (it may never answer again), though its health remembers when
    /// it last did.
    pub fn failed(&mut self, error: String) {
        self.scrapes.clear();
        self.error = Some(error);
    }

    pub fn health(&self, now: Instant, every: Duration) -> Health {
        let silent = every * SILENT_SCRAPES;
        match (self.answered, &self.error) {
            (Some(at), _) if now.duration_since(at) <= silent => match &self.ready {
                Some(Err(why)) => Health::NotReady(why.clone()),
                _ => Health::Up,
            },
            (_, Some(error)) => Health::Down(error.clone()),
            (Some(_), None) => Health::Down("no answer".into()),
            (None, None) => Health::Unknown,
        }
    }

    fn latest(&self) -> Option<&Scrape> {
        self.scrapes.back().map(|(_, scrape)| scrape)
    }

    /// The first and the last scrape of the window, and the time between.
    fn span(&self) -> Option<(&Scrape, &Scrape, f64)> {
        let (first_at, first) = self.scrapes.front()?;
        let (last_at, last) = self.scrapes.back()?;
        let seconds = last_at.duration_since(*first_at).as_secs_f64();
        (seconds > 0.0).then_some((first, last, seconds))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    Up,
    NotReady(String),
    Down(String),
    Unknown,
}

/// An event, and its stock as its stream last told it.
#[derive(Debug, Default)]
pub struct EventWatch {
    pub name: String,
    pub stock: Option<StockNow>,
    /// Whether its stream is open now.
    pub streaming: bool,
}

/// A stream message's `data:` (the fields the screen shows).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct StockNow {
    pub version: i64,
    pub total: i64,
    pub available: i64,
    pub held: i64,
    pub sold: i64,
    pub sold_out_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub returning: Option<i64>,
    /// A seated event's zones (their counts; the rows only in a snapshot).
    #[serde(default)]
    pub zones: Option<Vec<ZoneMap>>,
}

/// The saga's backlog: what waits, and where.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Backlog {
    pub outbox: Option<f64>,
    pub pending: Option<f64>,
    pub oldest_seconds: Option<f64>,
}

impl Board {
    /// Buy requests a second over the last [`RATE_WINDOW`], by answer, over
    /// every API process; the busiest first.
    pub fn order_rates(&self) -> Vec<(String, f64)> {
        let mut rates: BTreeMap<String, f64> = BTreeMap::new();
        for (first, last, seconds) in self.processes.iter().filter_map(Process::span) {
            let before = first.by_label("flashtix_orders_total", "outcome");
            for (outcome, count) in last.by_label("flashtix_orders_total", "outcome") {
                let was = before
                    .iter()
                    .find(|(seen, _)| *seen == outcome)
                    .map_or(0.0, |(_, was)| *was);
                *rates.entry(outcome).or_default() += increase(was, count) / seconds;
            }
        }
        let mut rates: Vec<(String, f64)> = rates.into_iter().collect();
        rates.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rates
    }

    /// The order path's latency (`POST /orders`, routing to answer) at `q`,
    /// over the last [`RATE_WINDOW`] of every API process.
    pub fn order_latency(&self, q: f64) -> Option<Quantile> {
        let mut total: Buckets = Vec::new();
        for (first, last, _) in self.processes.iter().filter_map(Process::span) {
            let window = buckets_since(
                &first.buckets(REQUESTS, &ORDER_PATH),
                &last.buckets(REQUESTS, &ORDER_PATH),
            );
            for (le, count) in window {
                match total.iter_mut().find(|(bound, _)| *bound == le) {
                    Some((_, sum)) => *sum += count,
                    None => total.push((le, count)),
                }
            }
        }
        total.sort_by(|a, b| a.0.total_cmp(&b.0));
        quantile(&total, q)
    }

    /// The backlog as the process heard from last reads it from Postgres
    /// (every process reports the same figures).
    pub fn backlog(&self) -> Backlog {
        let latest = self
            .processes
            .iter()
            .filter_map(|process| Some((process.answered?, process.latest()?)))
            .max_by_key(|(at, _)| *at)
            .map(|(_, scrape)| scrape);
        let read = |name: &str| latest.and_then(|scrape| scrape.sum(name, &[]));
        Backlog {
            outbox: read("flashtix_outbox_depth"),
            pending: read("flashtix_orders_pending"),
            oldest_seconds: read("flashtix_orders_pending_oldest_seconds"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(accepted: u32, sold_out: u32, fast: u32, slow: u32) -> Scrape {
        let bucket = |le: &str, count: u32| {
            format!(
                "flashtix_http_request_duration_seconds_bucket{{le=\"{le}\",route=\"/orders\",method=\"POST\",status=\"201\"}} {count}\n"
            )
        };
        Scrape::parse(&format!(
            "flashtix_orders_total{{outcome=\"accepted\"}} {accepted}\n\
             flashtix_orders_total{{outcome=\"sold_out\"}} {sold_out}\n\
             flashtix_outbox_depth 4\n\
             {}{}{}",
            bucket("0.001", fast),
            bucket("0.01", fast + slow),
            bucket("+Inf", fast + slow),
        ))
    }

    fn process(scrapes: &[(u64, Scrape)], start: Instant) -> Process {
        let mut process = Process::new("http://a".into());
        process.roles = vec!["api".into()];
        for (ms, scrape) in scrapes {
            process.scraped(start + Duration::from_millis(*ms), scrape.clone());
        }
        process
    }

    #[test]
    fn rates_and_latency_are_what_the_window_added_over_every_process() {
        let start = Instant::now();
        let one = process(
            &[(0, scrape(100, 0, 10, 0)), (2000, scrape(300, 50, 110, 0))],
            start,
        );
        // A process that started again: its counters fell to what it has
        // counted since.
        let two = process(
            &[(0, scrape(500, 0, 0, 0)), (1000, scrape(40, 10, 0, 100))],
            start,
        );
        let board = Board {
            processes: vec![one, two],
            ..Board::default()
        };
        assert_eq!(
            board.order_rates(),
            [
                ("accepted".into(), 100.0 + 40.0),
                ("sold_out".into(), 25.0 + 10.0)
            ]
        );
        // 100 fast (≤1 ms) and 100 slow (1–10 ms) in the window.
        let Some(Quantile::At(p99)) = board.order_latency(0.99) else {
            panic!("a p99");
        };
        assert!((p99 - (0.001 + 0.009 * 0.98)).abs() < 1e-9, "{p99}");
        assert_eq!(board.order_latency(0.5), Some(Quantile::At(0.001)));
        assert_eq!(board.backlog().outbox, Some(4.0));
    }

    #[test]
    fn only_the_last_window_counts_and_a_silent_process_is_down() {
        let start = Instant::now();
        let scrapes: Vec<(u64, Scrape)> = (0..10)
            .map(|second| (second * 1000, scrape(second as u32 * 10, 0, 0, 0)))
            .collect();
        let mut process = process(&scrapes, start);
        assert_eq!(process.scrapes.len(), 6, "5 s and the scrape before");
        let board = Board {
            processes: vec![],
            ..Board::default()
        };
        assert!(board.order_rates().is_empty());
        let every = Duration::from_secs(1);
        let last = start + Duration::from_secs(9);
        assert_eq!(process.health(last, every), Health::Up);
        process.error = Some("connection refused".into());
        let later = last + every * SILENT_SCRAPES;
        assert_eq!(process.health(later, every), Health::Up, "not yet");
        assert_eq!(
            process.health(later + every, every),
            Health::Down("connection refused".into())
        );
        process.ready = Some(Err("postgres".into()));
        assert_eq!(
            process.health(last, every),
            Health::NotReady("postgres".into())
        );
    }
}
