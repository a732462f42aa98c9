//! `GET /events/{id}/stream`: the stock as Server-Sent Events, the same truth
//! from every API process, resumed without a gap, and never a buffer without
//! bound.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use chrono::Utc;
use flashtix_server::runtime::config::StreamPace;
use flashtix_server::runtime::metrics::Metrics;
use flashtix_server::stream::{
    messages, Frame, Kind, Stock, Subscription, Told, BEHIND, HEARTBEAT,
};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

/// One Server-Sent Events message.
#[derive(Debug, Clone)]
struct Message {
    id: Option<i64>,
    event: String,
    data: Value,
}

/// A client reading one stream, message by message.
struct Watcher {
    response: reqwest::Response,
    buffer: String,
    /// Comment and `retry:` lines seen so far.
    others: Vec<String>,
}

/// How long a test waits for a message it expects: many ticks.
const WITHIN: Duration = Duration::from_secs(10);

impl Watcher {
    async fn open(app: &TestApp, event: i64, last_event_id: Option<i64>) -> Watcher {
        // A client of its own: no overall timeout on a body that never ends.
        let client = reqwest::Client::new();
        let mut request = client.get(format!("{}/events/{event}/stream", app.address));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("GET the stream");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{response:?}"
        );
        Watcher {
            response,
            buffer: String::new(),
            others: Vec::new(),
        }
    }

    /// The next message, or `None` when the stream ended.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut message = Message {
                    id: None,
                    event: String::new(),
                    data: Value::Null,
                };
                let mut data = false;
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id: ") {
                        message.id = Some(id.parse().expect("a numeric id"));
                    } else if let Some(event) = line.strip_prefix("event: ") {
                        message.event = event.to_owned();
                    } else if let Some(json) = line.strip_prefix("data: ") {
                        message.data = serde_json::from_str(json).expect("JSON data");
                        data = true;
                    } else if !line.is_empty() {
                        self.others.push(line.to_owned());
                    }
                }
                if data {
                    return Some(message);
                }
                continue;
            }
            let chunk = tokio::time::timeout(WITHIN, self.response.chunk())
                .await
                .expect("a message within the wait")
                .expect("reading the stream")?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// Reads messages until one satisfies `wanted`; returns it.
    async fn until(&mut self, mut wanted: impl FnMut(&Message) -> bool) -> Message {
        loop {
            let message = self.next().await.expect("the stream ended first");
            if wanted(&message) {
                return message;
            }
        }
    }
}

async fn buy(app: &TestApp, event: i64, user: &str, quantity: i64) {
    let answer = app
        .order(event, user, &format!("{user}-key"), quantity)
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
}

#[tokio::test]
async fn a_watcher_is_told_the_stock_then_each_change_then_the_sell_out() {
    let app = spawn_app().await;
    let event = app.create_event(5, 5).await;
    let mut watcher = Watcher::open(&app, event, None).await;

    let snapshot = watcher.next().await.unwrap();
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.data["event_id"], event);
    assert_eq!(
        (
            &snapshot.data["total"],
            &snapshot.data["available"],
            &snapshot.data["held"],
            &snapshot.data["sold"]
        ),
        (&json!(5), &json!(5), &json!(0), &json!(0))
    );
    assert!(snapshot.data["sold_out_at"].is_null());
    assert_eq!(
        watcher.others.first().map(String::as_str),
        Some("retry: 2000")
    );

    buy(&app, event, "ann", 2).await;
    let change = watcher.until(|m| m.data["available"] == 3).await;
    assert_eq!(change.event, "stock");
    assert_eq!(change.data["held"], 2);
    assert!(change.id > snapshot.id, "{change:?} after {snapshot:?}");

    buy(&app, event, "bob", 3).await;
    let gone = watcher.until(|m| m.data["available"] == 0).await;
    assert_eq!(gone.event, "sold_out", "{gone:?}");
    let at: chrono::DateTime<Utc> = gone.data["sold_out_at"]
        .as_str()
        .expect("the moment it sold out")
        .parse()
        .unwrap();
    assert!(at <= Utc::now());
    assert_eq!(gone.data["held"], 5);
}

#[tokio::test]
async fn every_api_process_streams_the_same_truth() {
    let selling = spawn_app().await;
    let watched = selling.another_server(|_| {}).await;
    let event = selling.create_event(10, 10).await;
    let mut here = Watcher::open(&watched, event, None).await;
    let mut there = Watcher::open(&selling, event, None).await;
    assert_eq!(here.next().await.unwrap().data["available"], 10);
    assert_eq!(there.next().await.unwrap().data["available"], 10);

    // Sold by one process, told by both, under the same version.
    buy(&selling, event, "cat", 4).await;
    let told_here = here.until(|m| m.data["available"] == 6).await;
    let told_there = there.until(|m| m.data["available"] == 6).await;
    assert_eq!(told_here.id, told_there.id);
    assert_eq!(told_here.data, told_there.data);
}

/// The value of `metric` on `app`'s `/metrics`.
async fn metric(app: &TestApp, metric: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{metric} ")))
        .unwrap_or_else(|| panic!("no {metric} in {text}"))
        .parse()
        .unwrap()
}

/// Two hundred watchers of one event, forty orders one after another (each
/// its own commit, its own version): each watcher is told the stock no more
/// than once a tick (here twice a second), so fewer messages than versions,
/// and every message is made once for all of them (one broadcast, not one
/// per client).
#[tokio::test]
async fn one_producer_tells_every_watcher_at_most_the_streams_rate() {
    let app = crate::helpers::spawn_app_with(|settings| {
        settings.stream.every = Duration::from_millis(500);
    })
    .await;
    let event = app.create_event(1000, 1).await;
    let mut watchers = Vec::new();
    for _ in 0..200 {
        let mut watcher = Watcher::open(&app, event, None).await;
        assert_eq!(watcher.next().await.unwrap().event, "snapshot");
        watchers.push(watcher);
    }
    assert_eq!(metric(&app, "flashtix_stream_clients").await, 200.0);

    let started = std::time::Instant::now();
    for i in 0..40 {
        buy(&app, event, &format!("buyer-{i}"), 1).await;
    }
    let mut told = Vec::new();
    for watcher in &mut watchers {
        let mut count = 0;
        let last = watcher
            .until(|m| {
                count += 1;
                m.data["available"] == 960
            })
            .await;
        assert_eq!(last.data["version"], 40, "one version a commit: {last:?}");
        told.push(count);
    }
    let ticks = started.elapsed().as_secs_f64() / 0.5;
    let most = *told.iter().max().unwrap();
    assert!(
        (most as f64) <= ticks + 1.0,
        "{most} messages in {ticks:.1} ticks"
    );
    assert!(
        most < 40,
        "40 versions told in {most} messages: not coalesced"
    );
    assert!(told.iter().all(|&n| n == most), "{told:?}");
    assert_eq!(
        metric(&app, "flashtix_stream_messages_total").await,
        most as f64,
        "each message made once for 200 watchers"
    );
}

/// With more clients than the budget allows at the stream's rate, every
/// event is told less often: twenty watchers and a budget of ten messages a
/// second make one message every two seconds for each, however fast the
/// stock moves.
#[tokio::test]
async fn a_budget_spaces_the_messages_when_clients_are_many() {
    let app = crate::helpers::spawn_app_with(|settings| {
        settings.stream = StreamPace {
            every: Duration::from_millis(100),
            budget: Some(10),
        };
    })
    .await;
    let event = app.create_event(1000, 1).await;
    let mut watchers = Vec::new();
    for _ in 0..20 {
        let mut watcher = Watcher::open(&app, event, None).await;
        watcher.next().await.unwrap();
        watchers.push(watcher);
    }
    crate::helpers::eventually(WITHIN, || async {
        match metric(&app, "flashtix_stream_interval_seconds").await {
            2.0 => Ok(()),
            other => Err(format!("interval {other} s")),
        }
    })
    .await;

    let started = std::time::Instant::now();
    for i in 0..30 {
        buy(&app, event, &format!("buyer-{i}"), 1).await;
    }
    let mut most = 0;
    for watcher in &mut watchers {
        let mut count = 0;
        watcher
            .until(|m| {
                count += 1;
                m.data["available"] == 970
            })
            .await;
        most = most.max(count);
    }
    // Two seconds apart, give or take half a tick.
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        most as f64 <= seconds / 1.9 + 1.0,
        "{most} messages in {seconds:.2} s with one every 2 s allowed"
    );
}

#[tokio::test]
async fn a_client_that_reconnects_is_sent_only_what_it_missed() {
    let app = spawn_app().await;
    let event = app.create_event(10, 10).await;
    let mut first = Watcher::open(&app, event, None).await;
    let seen = first.next().await.unwrap().id.unwrap();
    drop(first);

    // Back with the id it saw, nothing having changed: no snapshot again,
    // and the next change is the first message.
    let mut back = Watcher::open(&app, event, Some(seen)).await;
    buy(&app, event, "dan", 1).await;
    let next = back.next().await.unwrap();
    assert_eq!(next.event, "stock", "{next:?}");
    assert_eq!(next.data["available"], 9);
    assert!(next.id.unwrap() > seen);

    // Back with an id no process has reached (a client's mistake): sent the
    // stock, not left waiting for a version that may never come.
    let mut ahead = Watcher::open(&app, event, Some(seen + 1000)).await;
    let told = ahead.next().await.unwrap();
    assert_eq!(told.event, "snapshot", "{told:?}");

    // Back with an older id: it missed a change, so it is sent the stock.
    let mut behind = Watcher::open(&app, event, Some(seen)).await;
    let caught_up = behind.next().await.unwrap();
    assert_eq!(caught_up.event, "snapshot", "{caught_up:?}");
    assert_eq!(caught_up.data["available"], 9);
}

/// Cut off mid-sale while buyers keep buying, and back with the last id it
/// saw, a watcher is told the stock as it is (it missed changes), never an
/// older version than it had, and ends on the same stock as a watcher never
/// cut off and as the database: nothing missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_cut_off_mid_sale_and_back_misses_nothing() {
    let app = spawn_app().await;
    let event = app.create_event(60, 10).await;
    let buyers = |from: usize| {
        let app = &app;
        futures_util::future::join_all(
            (from..from + 20)
                .map(move |n| async move { buy(app, event, &format!("b{n}"), 1).await }),
        )
    };
    let mut steady = Watcher::open(&app, event, None).await;
    let mut cut = Watcher::open(&app, event, None).await;
    buyers(0).await;
    let seen = cut.until(|m| m.data["available"] == 40).await.id.unwrap();
    drop(cut);

    buyers(20).await;
    let mut back = Watcher::open(&app, event, Some(seen)).await;
    let first = back.next().await.unwrap();
    // The stock as it is now: a snapshot, or (if this process had not yet
    // told the newest change when it came back) that change.
    assert!(
        ["snapshot", "stock"].contains(&first.event.as_str()),
        "{first:?}"
    );
    assert!(first.id.unwrap() > seen, "{first:?} after {seen}");
    // Newer than it had: this process may not have told the last of the
    // twenty yet, but never what the client saw before.
    let available = first.data["available"].as_i64().unwrap();
    assert!((20..40).contains(&available), "{first:?}");
    buyers(40).await;

    let sold_out = |m: &Message| m.event == "sold_out";
    let (told_back, told_steady) = (back.until(sold_out).await, steady.until(sold_out).await);
    assert_eq!(told_back.id, told_steady.id);
    assert_eq!(told_back.data, told_steady.data);
    let truth = app.event(event).await;
    let told = [
        &told_back.data["available"],
        &told_back.data["held"],
        &told_back.data["sold"],
    ];
    let held = [
        truth.available_tickets,
        truth.pending_tickets,
        truth.sold_tickets,
    ];
    assert_eq!(told, held.map(|count| json!(count)).each_ref(), "{truth:?}");
    assert_eq!(held, [0, 60, 0], "nobody pays here: every ticket held");
}

/// A seated event: the snapshot draws every seat, then each message names
/// the seats that moved (not the map again) with the zones' counts. A seat
/// an unpaid order freed comes back on sale by the clock alone, and the
/// stream says so then, with no change of the event's counters.
#[tokio::test]
async fn a_seated_event_streams_the_seats_that_moved() {
    let app = spawn_app().await;
    let plan = json!({"zones": [{"name": "A", "price_cents": 100, "rows": 1, "seats_per_row": 2}]});
    let event = app
        .create_event_from(json!({"name": "Seated stream", "seating": plan, "hold_seconds": 3}))
        .await;
    let mut watcher = Watcher::open(&app, event, None).await;
    let snapshot = watcher.next().await.unwrap();
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.data["zones"][0]["rows"], json!([".."]));

    let bought = app
        .buy(event, "ann", "k", json!({"seats": ["A-1-1", "A-1-2"]}))
        .await;
    assert_eq!(bought.status, StatusCode::ACCEPTED, "{:?}", bought.body);
    let held = watcher.next().await.unwrap();
    assert_eq!(held.event, "sold_out", "{held:?}");
    assert_eq!(
        held.data["seats"],
        json!([{"seat": "A-1-1", "state": "h"}, {"seat": "A-1-2", "state": "h"}])
    );
    assert_eq!(held.data["zones"][0]["held"], 2);
    assert_eq!(held.data["zones"][0]["available"], 0);
    assert!(held.data["zones"][0].get("rows").is_none(), "{held:?}");

    // Unpaid (no payment role runs): the hold runs out, the seats are on
    // their way back, then on sale again.
    let returning = watcher
        .until(|m| m.data["seats"].to_string().contains("\"r\""))
        .await;
    // Back in the event's counters, not yet on sale: still sold out.
    assert_eq!(returning.event, "stock", "{returning:?}");
    assert_eq!(returning.data["zones"][0]["returning"], 2, "{returning:?}");
    assert_eq!(returning.data["returning"], 2, "{returning:?}");
    assert_eq!(returning.data["available"], 0, "{returning:?}");
    assert_eq!(returning.data["sold_out_at"], held.data["sold_out_at"]);
    let back = watcher
        .until(|m| m.data["zones"][0]["available"] == 2)
        .await;
    assert_eq!(back.event, "back_on_sale", "{back:?}");
    assert_eq!(
        back.data["seats"],
        json!([{"seat": "A-1-1", "state": "."}, {"seat": "A-1-2", "state": "."}])
    );
    assert_eq!(
        back.id, returning.id,
        "the clock moved the seats, not an order"
    );
    assert_eq!(back.data["available"], 2);
    assert!(back.data["sold_out_at"].is_null(), "{back:?}");
}

/// A client that saw a version on a process whose producer is ahead comes
/// back to one that has not told it yet: the database has reached it, so
/// the client is sent no snapshot of the older state, only what comes next.
#[tokio::test]
async fn a_client_back_from_a_process_ahead_is_sent_only_what_comes_next() {
    let quick = spawn_app().await;
    let slow = quick
        .another_server(|settings| settings.stream.every = Duration::from_secs(3))
        .await;
    let event = quick.create_event(10, 10).await;
    let mut on_slow = Watcher::open(&slow, event, None).await;
    assert_eq!(on_slow.next().await.unwrap().data["version"], 0);
    let mut on_quick = Watcher::open(&quick, event, None).await;
    on_quick.next().await.unwrap();

    buy(&quick, event, "eve", 1).await;
    let seen = on_quick
        .until(|m| m.data["available"] == 9)
        .await
        .id
        .unwrap();
    // The slow process has not told version `seen` yet (its tick is 3 s).
    let mut back = Watcher::open(&slow, event, Some(seen)).await;
    buy(&quick, event, "fay", 1).await;
    let next = back.next().await.unwrap();
    assert_eq!(next.event, "stock", "{next:?}");
    assert_eq!(next.data["available"], 8, "{next:?}");
    assert!(next.id.unwrap() > seen);
}

#[tokio::test]
async fn an_event_that_does_not_exist_has_no_stream() {
    let app = spawn_app().await;
    for path in ["/events/999999999/stream", "/events/nope/stream"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
}

fn stock(version: i64, available: i64) -> Stock {
    Stock {
        event_id: 1,
        version,
        total: 100,
        available,
        held: 100 - available,
        sold: 0,
        changed_at: Utc::now(),
        sold_out_at: None,
    }
}

/// What a client is sent, message by message.
type Sent = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send>,
>;

/// A client's stream, joined at the stock of `version` (its message
/// numbered by it), and the sender of the messages after it.
fn joined_at(
    version: i64,
    metrics: &Arc<Metrics>,
) -> (tokio::sync::broadcast::Sender<Frame>, Sent) {
    let (sender, frames) = tokio::sync::broadcast::channel(BEHIND);
    let subscription = Subscription {
        told: Arc::new(Told::new(
            stock(version, 100 - version),
            None,
            version as u64,
        )),
        frames,
    };
    let client = messages(subscription, None, Arc::clone(metrics));
    (sender, Box::pin(client))
}

/// The message of `version`, numbered by it.
fn frame(version: i64) -> Frame {
    let stock = stock(version, 100 - version);
    Frame::of(version as u64, Kind::Stock, &stock, None, None)
}

/// A client that does not read while more than [`BEHIND`] messages are
/// told is dropped, not buffered: it is told why, its stream ends, and the
/// messages it did not read are not kept for it.
#[tokio::test]
async fn a_client_that_falls_behind_is_dropped() {
    let metrics = Arc::new(Metrics::default());
    let (sender, mut client) = joined_at(1, &metrics);
    let text = |bytes: Bytes| String::from_utf8(bytes.to_vec()).unwrap();
    assert_eq!(
        text(client.next().await.unwrap().unwrap()),
        "retry: 2000\n\n"
    );
    let first = text(client.next().await.unwrap().unwrap());
    assert!(first.contains("event: snapshot"), "{first}");
    assert!(metrics.render().contains("flashtix_stream_clients 1"));

    for version in 2..(BEHIND as i64 + 3) {
        sender.send(frame(version)).unwrap();
    }
    let last = text(client.next().await.unwrap().unwrap());
    assert!(
        last.contains("dropped: this client read too slowly"),
        "{last}"
    );
    assert!(client.next().await.is_none(), "the stream ends");
    assert!(metrics
        .render()
        .contains("flashtix_stream_clients_dropped_total 1"));
    drop(client);
    assert!(metrics.render().contains("flashtix_stream_clients 0"));
}

/// A client that keeps up is sent each version once, in order, whatever
/// arrives twice or late.
#[tokio::test]
async fn a_client_is_sent_each_version_once_in_order() {
    let (sender, mut client) = joined_at(5, &Arc::new(Metrics::default()));
    let _retry = client.next().await;
    let _snapshot = client.next().await;
    // Told before it joined (version 4, 5), then new.
    for version in [4, 5, 6, 6, 7] {
        sender.send(frame(version)).unwrap();
    }
    drop(sender);
    let mut told = Vec::new();
    while let Some(bytes) = client.next().await {
        told.push(String::from_utf8(bytes.unwrap().to_vec()).unwrap());
    }
    let ids: Vec<&str> = told
        .iter()
        .filter_map(|m| m.lines().next()?.strip_prefix("id: "))
        .collect();
    assert_eq!(ids, ["6", "7"], "{told:?}");
}

/// A stream with nothing to tell says it is alive every [`HEARTBEAT`], so a
/// proxy never takes it for dead; and still tells the next change.
#[tokio::test(start_paused = true)]
async fn a_quiet_stream_says_it_is_alive() {
    let (sender, mut client) = joined_at(1, &Arc::new(Metrics::default()));
    let text = |bytes: Option<Result<Bytes, std::convert::Infallible>>| {
        String::from_utf8(bytes.unwrap().unwrap().to_vec()).unwrap()
    };
    assert_eq!(text(client.next().await), "retry: 2000\n\n");
    assert!(text(client.next().await).contains("event: snapshot"));
    let quiet = tokio::time::Instant::now();
    assert_eq!(text(client.next().await), ": heartbeat\n\n");
    let waited = quiet.elapsed();
    assert!(
        waited >= HEARTBEAT && waited < HEARTBEAT + Duration::from_millis(5),
        "{waited:?}"
    );
    sender.send(frame(2)).unwrap();
    assert!(text(client.next().await).starts_with("id: 2\nevent: stock\n"));
}
