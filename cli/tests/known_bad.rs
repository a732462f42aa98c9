//! Detection power: a sale run on a server that makes one of the known
//! mistakes (a test-only build, switched by `FLASHTIX_KNOWN_BAD`) is judged
//! wrong, by `check` or by never settling, and the same sale on the real server
//! is judged right. `docs/DETECTION.md` is the table of these tests.
//!
//! Each sale has its own namespace on the test services; the bad and the good
//! sale of a test run side by side.

mod common;
#[path = "known_bad/notices.rs"]
mod notices;

use std::time::Duration;

use common::{buyer_token, Sale, Server};
use flashtix_server::invariants::{Finding, Invariant, Report, Verdict};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::BasicProperties;
use serde_json::{json, Value};
use tokio::time::Instant;

/// How long a quiesced sale may take to become judgeable (every message
/// processed, Redis quiet) before its `check` counts as final.
const JUDGEABLE_WITHIN: Duration = Duration::from_secs(30);

/// How a sale is seeded and served.
#[derive(Clone, Copy)]
struct Setup {
    reset: &'static [&'static str],
    serve: &'static [&'static str],
}

/// One sale, its server and what its storm recorded.
struct Run {
    /// Serves the sale while the run lives (and stops before the sale's
    /// queues are deleted: fields drop in order).
    _server: Server,
    sale: Sale,
    /// The storm's history, if a storm ran.
    history: Option<String>,
    storm: Value,
}

impl Setup {
    /// Seeds a sale, serves it with the mistakes `bugs` (comma separated, if
    /// any) and returns it before any buyer came.
    async fn open(self, bugs: Option<&str>) -> (Sale, i64, Server) {
        let sale = Sale::new().await;
        let (events, _) = sale.reset(self.reset);
        let event = events[0]["id"].as_i64().expect("an event id");
        let server = sale.serve_with("all", self.serve, bugs);
        (sale, event, server)
    }

    /// Seeds, serves and storms a sale (`storm`: the storm's flags, split at
    /// spaces), with the history kept.
    async fn storm(self, bugs: Option<&str>, storm: &str) -> Run {
        let (sale, event, server) = self.open(bugs).await;
        storm_sale(sale, event, server, storm).await
    }
}

async fn storm_sale(sale: Sale, event: i64, server: Server, storm: &str) -> Run {
    let history = sale.dir.join("history.jsonl").display().to_string();
    let (json_file, _) = sale.json("storm.json");
    let args = format!(
        "storm --target {} --event {event} --history {history} --json {json_file} {storm}",
        server.url
    );
    let args: Vec<&str> = args.split_whitespace().collect();
    let run = sale.run_in_background(&args).await;
    // 0: every invariant held; 1: one broke; 5: not everything could be
    // judged. Anything else is a usage error.
    assert!(
        matches!(run.status.code(), Some(0 | 1 | 5)),
        "{}{}",
        common::stdout(&run),
        common::stderr(&run)
    );
    let storm = sale.json("storm.json").1;
    Run {
        sale,
        _server: server,
        history: Some(history),
        storm,
    }
}

impl Run {
    /// A sale its test sent requests to by itself.
    fn unstormed(sale: Sale, server: Server) -> Self {
        Self {
            sale,
            _server: server,
            history: None,
            storm: json!({}),
        }
    }

    /// `flashtix check` (with the storm's history, if any), asked again while its verdict
    /// is UNKNOWN (messages still on their way, Redis returns maturing), for
    /// at most [`JUDGEABLE_WITHIN`]; returns its last report.
    async fn judged(&self) -> Value {
        let deadline = Instant::now() + JUDGEABLE_WITHIN;
        let (file, _) = self.sale.json("check.json");
        loop {
            let mut args = vec!["check", "--json", &file];
            if let Some(history) = &self.history {
                args.extend(["--history", history]);
            }
            let run = self.sale.run_in_background(&args).await;
            let report = self.sale.json("check.json").1;
            assert!(report.is_object(), "{}", common::stderr(&run));
            if report["verdict"] != "UNKNOWN" || Instant::now() > deadline {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Whether every order of the sale reached an end before the storm's
    /// settle limit.
    fn settled(&self) -> bool {
        self.storm["settle_seconds"].is_number()
    }

    fn outcome(&self, outcome: &str) -> u64 {
        self.storm["outcomes"][outcome].as_u64().unwrap_or(0)
    }
}

/// The finding on `invariant` of a report as `--json` prints it.
fn finding_of(report: &Value, invariant: Invariant) -> Finding {
    let parsed: Report = serde_json::from_value(report.clone())
        .unwrap_or_else(|error| panic!("not a report ({error}): {report:#}"));
    parsed
        .finding(invariant)
        .cloned()
        .unwrap_or_else(|| panic!("no {invariant} in {report:#}"))
}

fn assert_fails(report: &Value, invariant: Invariant) {
    assert_eq!(
        finding_of(report, invariant).verdict,
        Verdict::Fail,
        "{report:#}"
    );
    assert_eq!(report["verdict"], "FAIL");
}

fn assert_passes(report: &Value) {
    assert_eq!(report["verdict"], "PASS", "{report:#}");
}

/// The same storm on a server making `bug` and on the real one: `invariant`
/// FAILs on the bad sale, and the real sale passes every check. Returns the
/// real sale.
async fn caught_by(setup: Setup, bug: &str, storm: &str, invariant: Invariant) -> Run {
    let (bad, good) = tokio::join!(setup.storm(Some(bug), storm), setup.storm(None, storm));
    assert_fails(&bad.judged().await, invariant);
    assert_passes(&good.judged().await);
    good
}

/// Ignoring the script's answer and "giving back" what it never took makes
/// Redis stock grow on every refusal. Refusals for the per-buyer limit come
/// while tickets are left, so nothing wears the extra stock down again, and
/// with the drift repair off (as between two of its passes) Redis disagrees
/// with Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_the_lua_result_fails_redis_agrees() {
    let setup = Setup {
        reset: &["--tickets", "1000", "--max-per-user", "2"],
        serve: &["--reconcile-ms", "0"],
    };
    let (bad, good) = tokio::join!(
        three_buys_each(setup, Some("lua-result-ignored")),
        three_buys_each(setup, None)
    );
    let (bad, refused) = bad;
    assert_eq!(refused, 100, "the third buy of each buyer is refused");
    let report = bad.judged().await;
    assert_fails(&report, Invariant::RedisAgrees);
    let drift = finding_of(&report, Invariant::RedisAgrees)
        .examples
        .join("\n");
    assert!(drift.contains("(drift +100)"), "{report:#}");

    let (good, refused) = good;
    assert_eq!(refused, 100);
    assert_passes(&good.judged().await);
}

/// 100 buyers each buy one ticket three times (three keys, one after the
/// other); returns the sale and how many buys were refused `limit_exceeded`.
async fn three_buys_each(setup: Setup, bugs: Option<&str>) -> (Run, usize) {
    let (sale, event, server) = setup.open(bugs).await;
    let client = reqwest::Client::new();
    let buyers: Vec<_> = (0..100)
        .map(|buyer| {
            let (client, url) = (client.clone(), server.url.clone());
            tokio::spawn(async move {
                let mut refused = 0;
                for try_number in 0..3 {
                    let status = client
                        .post(format!("{url}/orders"))
                        .bearer_auth(buyer_token(&format!("buyer-{buyer}")))
                        .header("Idempotency-Key", format!("key-{buyer}-{try_number}"))
                        .json(&json!({"event_id": event, "user_id": format!("buyer-{buyer}"), "quantity": 1}))
                        .send()
                        .await
                        .expect("the server answers")
                        .status();
                    refused += usize::from(status == 409);
                }
                refused
            })
        })
        .collect();
    let mut refused = 0;
    for buyer in buyers {
        refused += buyer.await.unwrap();
    }
    (Run::unstormed(sale, server), refused)
}

/// A cancellation that gives its tickets back to Postgres only leaves Redis
/// short of them: Redis disagrees, and those tickets could never be sold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_skips_the_redis_compensation_fails_redis_agrees() {
    let setup = Setup {
        reset: &["--tickets", "400"],
        serve: &["--reconcile-ms", "0", "--payment-failure-rate", "0.3"],
    };
    let storm = "--rate 300 --buyers 300";
    caught_by(
        setup,
        "redis-compensation-skipped",
        storm,
        Invariant::RedisAgrees,
    )
    .await;
}

/// A sweeper that expires paid orders hands their tickets back while the
/// money stays taken: an EXPIRED order with a capture. Holds last a second,
/// so every paid order is due while the storm still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweeper_that_expires_paid_orders_fails_no_double_charge() {
    let setup = Setup {
        reset: &["--tickets", "400", "--hold-seconds", "1"],
        serve: &["--sweep-ms", "100"],
    };
    let storm = "--rate 200 --buyers 400";
    caught_by(
        setup,
        "expiry-gives-back-paid",
        storm,
        Invariant::NoDoubleCharge,
    )
    .await;
}

/// Payments take longer than the hold, so every order expires before its
/// capture arrives; the real order worker refunds each one, the bad one keeps
/// the money.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_payment_kept_fails_no_double_charge() {
    let setup = Setup {
        reset: &["--tickets", "400", "--hold-seconds", "1"],
        serve: &["--sweep-ms", "100", "--payment-latency-ms", "1500"],
    };
    let storm = "--rate 10 --buyers 10";
    caught_by(
        setup,
        "late-payment-not-refunded",
        storm,
        Invariant::NoDoubleCharge,
    )
    .await;
}

/// Buyers who come back a second after their answer (`--revisit`) find the
/// event sold out by then. A server that answers "sold out" before looking at
/// the key tells buyers who hold an order that they have none: the history
/// shows the lie. The real server replays their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_answered_sold_out_fails_no_lie_to_client() {
    let setup = Setup {
        reset: &["--tickets", "100"],
        serve: &[],
    };
    let storm = "--rate 300 --buyers 600 --revisit 0.5";
    let good = caught_by(
        setup,
        "replay-answered-sold-out",
        storm,
        Invariant::NoLieToClient,
    )
    .await;
    assert!(good.outcome("replayed") > 0, "{:#}", good.storm);
}

/// Release the stock of a cancelled order twice: with the events table's
/// CHECK in place Postgres refuses every such settlement (orders never
/// settle); without it, the minted tickets show in `no_oversell`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_releases_stock_twice_never_settles_or_fails_no_oversell() {
    let setup = Setup {
        reset: &["--tickets", "400"],
        serve: &["--payment-failure-rate", "0.3"],
    };
    let storm = "--rate 300 --buyers 300 --settle 10s";
    let (checked, unchecked, good) = tokio::join!(
        setup.storm(Some("release-stock-twice"), storm),
        setup.storm(Some("release-stock-twice,no-stock-check"), storm),
        setup.storm(None, storm)
    );
    assert!(!checked.settled(), "{:#}", checked.storm);
    assert_fails(&unchecked.judged().await, Invariant::NoOversell);
    assert!(good.settled(), "{:#}", good.storm);
    assert_passes(&good.judged().await);
}

/// One buyer sends one key to two events at once. The events' writers lock
/// different rows, so only a unique key in the schema keeps the second order
/// out; a server that reads, then inserts, sells that key twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_then_insert_idempotency_fails_no_duplicate_order() {
    let setup = Setup {
        reset: &["--events", "2", "--tickets", "1000"],
        serve: &[],
    };
    let (bad, good) = tokio::join!(
        twice_to_two_events(setup, Some("check-then-insert")),
        twice_to_two_events(setup, None)
    );
    let (bad, _) = bad;
    let report = bad.judged().await;
    assert_fails(&report, Invariant::NoDuplicateOrder);
    let examples = finding_of(&report, Invariant::NoDuplicateOrder)
        .examples
        .join("\n");
    assert!(examples.contains(": 2 orders ("), "{report:#}");

    let (good, accepted) = good;
    assert_eq!(
        accepted, KEYS_TO_TWO_EVENTS,
        "each key bought once: {:#}",
        good.storm
    );
    assert_passes(&good.judged().await);
}

/// Buyers who each send one key to both events at once. Each is one chance
/// for the two events' writers to overlap; 200 were once too few to catch the
/// check-then-insert server every time on a busy machine, and 400 once too
/// few with a seventh role (notifications) in the server process.
const KEYS_TO_TWO_EVENTS: usize = 800;

/// [`KEYS_TO_TWO_EVENTS`] buyers each send one key to both events at the same
/// moment; returns the sale and how many 202s came back.
async fn twice_to_two_events(setup: Setup, bugs: Option<&str>) -> (Run, usize) {
    let (sale, _, server) = setup.open(bugs).await;
    let events = sale.json("events.json").1;
    let ids: Vec<i64> = (0..2).map(|i| events[i]["id"].as_i64().unwrap()).collect();
    let client = reqwest::Client::new();
    let sends: Vec<_> = (0..KEYS_TO_TWO_EVENTS)
        .flat_map(|buyer| ids.iter().map(move |&event| (buyer, event)))
        .map(|(buyer, event)| {
            let request = client
                .post(format!("{}/orders", server.url))
                .bearer_auth(buyer_token(&format!("buyer-{buyer}")))
                .header("Idempotency-Key", format!("key-{buyer}"))
                .json(
                    &json!({"event_id": event, "user_id": format!("buyer-{buyer}"), "quantity": 1}),
                );
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let mut accepted = 0;
    for send in sends {
        if send.await.unwrap().expect("the server answers") == 202 {
            accepted += 1;
        }
    }
    (Run::unstormed(sale, server), accepted)
}

/// A worker that never acknowledges holds every message it took: the broker
/// cannot tell them from lost ones, and once its window of unacknowledged
/// messages fills (a long sale) the worker stops. Its effects may commit
/// meanwhile (a message carries many orders, so a short sale may even
/// settle), but nothing records a message as processed: `check` says
/// UNKNOWN, never PASS. The real sale passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_acks_is_never_proven() {
    let setup = Setup {
        reset: &["--tickets", "1000"],
        serve: &[],
    };
    let storm = "--rate 300 --buyers 600 --settle 10s";
    let (bad, good) = tokio::join!(
        setup.storm(Some("never-ack"), storm),
        setup.storm(None, storm)
    );
    let unproven = finding_of(&bad.storm["check"], Invariant::QueuesDrained);
    assert_eq!(unproven.verdict, Verdict::Unknown, "{:#}", bad.storm);
    assert!(
        unproven.examples.join("\n").contains("not processed by"),
        "{:#}",
        bad.storm
    );
    assert_ne!(bad.storm["check"]["verdict"], "PASS", "{:#}", bad.storm);
    assert!(good.settled(), "{:#}", good.storm);
    assert_passes(&good.judged().await);
}

/// The provider loses a third of its answers. A worker that acknowledges the
/// messages it failed on loses them: their orders never settle. The real one
/// holds them and asks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_acks_on_failure_never_settles() {
    let setup = Setup {
        reset: &["--tickets", "1000"],
        serve: &["--payment-timeout-rate", "0.3"],
    };
    assert_never_settles(
        setup,
        "ack-on-failure",
        "--rate 300 --buyers 300 --settle 20s",
    )
    .await;
}

/// The same storm on a server making `bug` and on the real one: the bad
/// sale is still unsettled at the storm's settle limit, and `check` says
/// UNKNOWN (published messages never processed), never PASS; the real sale
/// settles and passes.
async fn assert_never_settles(setup: Setup, bug: &str, storm: &str) {
    let (bad, good) = tokio::join!(setup.storm(Some(bug), storm), setup.storm(None, storm));
    assert!(!bad.settled(), "{:#}", bad.storm);
    assert_eq!(bad.storm["check"]["verdict"], "UNKNOWN", "{:#}", bad.storm);
    assert!(good.settled(), "{:#}", good.storm);
    assert_passes(&good.judged().await);
}

/// One `order.created` for an order the sale does not have, published before
/// the buyers come. A worker that charges it like any other fails its batch
/// on every try, and every later message joins the held batch: nothing
/// settles. The real worker dead-letters it (and `check` lists it) and settles
/// every order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_that_wedges_the_worker_never_settles() {
    let setup = Setup {
        reset: &["--tickets", "1000"],
        serve: &[],
    };
    let storm = "--rate 200 --buyers 200 --settle 10s";
    let ghost = uuid::Uuid::now_v7();
    let poisoned = |bugs: Option<&'static str>| async move {
        let (sale, event, server) = setup.open(bugs).await;
        publish_order_created(&sale, ghost).await;
        storm_sale(sale, event, server, storm).await
    };
    let (bad, good) = tokio::join!(poisoned(Some("poison-wedge")), poisoned(None));
    assert!(!bad.settled(), "{:#}", bad.storm);

    assert!(good.settled(), "{:#}", good.storm);
    let report = good.judged().await;
    let parsed: Report = serde_json::from_value(report.clone()).unwrap();
    let failed: Vec<&Finding> = parsed
        .findings
        .iter()
        .filter(|f| f.verdict != Verdict::Pass)
        .collect();
    assert_eq!(failed.len(), 1, "{report:#}");
    assert_eq!(failed[0].invariant, Invariant::QueuesDrained);
    assert_eq!(failed[0].verdict, Verdict::Fail);
    assert!(
        failed[0]
            .examples
            .iter()
            .any(|e| e.contains(".dead: 1 dead letter")),
        "{report:#}"
    );
}

/// Publishes `order.created` for `order_id`, an order the sale never took.
async fn publish_order_created(sale: &Sale, order_id: uuid::Uuid) {
    let namespace = flashtix_server::runtime::config::Namespace::parse(&sale.namespace).unwrap();
    let topology = flashtix_server::saga::broker::Topology::new(namespace);
    let connection = flashtix_server::saga::broker::connect(&common::test_amqp_url())
        .await
        .unwrap();
    topology.declare(&connection).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let body = json!({"orders": [{"order_id": order_id, "event_id": 1, "user_id": "nobody",
                                  "quantity": 1, "amount_cents": 5000}]});
    channel
        .basic_publish(
            topology.exchange().as_str().into(),
            "order.created".into(),
            BasicPublishOptions::default(),
            body.to_string().as_bytes(),
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(uuid::Uuid::now_v7().to_string().into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// A seat check made when the request comes in, outside the lock the
/// writer takes, lets every request that looked while another's order for
/// the seat was on its way buy it too: two live orders name one seat. The
/// real writer decides under the event's row lock, and each seat sells once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_check_outside_the_lock_fails_one_owner_per_seat() {
    let (bad, good) = tokio::join!(
        four_seats_for_four_hundred(Some("seat-check-outside-lock")),
        four_seats_for_four_hundred(None)
    );
    let (bad, sold) = bad;
    assert!(sold > 4, "more orders than seats: {sold}");
    let report = bad.judged().await;
    assert_fails(&report, Invariant::OneOwnerPerSeat);
    let examples = finding_of(&report, Invariant::OneOwnerPerSeat)
        .examples
        .join("\n");
    assert!(examples.contains("live orders"), "{report:#}");

    let (good, sold) = good;
    assert_eq!(sold, 4, "each seat once");
    assert_passes(&good.judged().await);
}

/// On the bad server a seat an unpaid order frees is on sale again at once,
/// while the taken-seat board still answers "taken" for it from memory (for
/// 5 s, the real return delay): buyers are told a seat is taken while it is
/// for sale. The real server keeps a freed seat off sale for 5 s, longer than
/// its board trusts what it saw (1 s). Every payment is declined, and the
/// relay passes every 20 ms, so seats come free all through the storm; no
/// buyer falls back to the zone's best seat, which would buy a freed seat
/// again at once and make "taken" true again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seats_back_on_sale_at_once_fail_seat_taken_was_true() {
    let setup = Setup {
        reset: &["--seating", "A:2x10@5000"],
        serve: &["--payment-failure-rate", "1", "--relay-ms", "20"],
    };
    let storm = "--rate 300 --buyers 1800 --seat-retry 0";
    let good = caught_by(
        setup,
        "seats-back-at-once",
        storm,
        Invariant::SeatTakenWasTrue,
    )
    .await;
    let judged = finding_of(&good.judged().await, Invariant::SeatTakenWasTrue).checked;
    assert!(
        judged > 0,
        "the real sale had seat_taken answers to judge: {judged}"
    );
}

/// 400 buyers, a hundred for each of the first four seats of forty, all at
/// once; returns the sale and how many 202s came back. (Forty: with only the
/// four, the event's own count of tickets would stop a fifth order.)
async fn four_seats_for_four_hundred(bugs: Option<&str>) -> (Run, usize) {
    let setup = Setup {
        reset: &["--seating", "A:1x40@5000"],
        serve: &[],
    };
    let (sale, event, server) = setup.open(bugs).await;
    let client = reqwest::Client::new();
    let sends: Vec<_> = (0..400)
        .map(|buyer| {
            let seat = format!("A-1-{}", buyer % 4 + 1);
            let request = client
                .post(format!("{}/orders", server.url))
                .bearer_auth(buyer_token(&format!("buyer-{buyer}")))
                .header("Idempotency-Key", format!("key-{buyer}"))
                .json(&json!({"event_id": event, "user_id": format!("buyer-{buyer}"), "seats": [seat]}));
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let mut sold = 0;
    for send in sends {
        if send.await.unwrap().expect("the server answers") == 202 {
            sold += 1;
        }
    }
    (Run::unstormed(sale, server), sold)
}

/// Every order a cent dearer than its price, by count and by seat: the
/// answers agree with the orders, so only the price itself can tell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amount_off_by_one_fails_charges_match_orders() {
    let setup = Setup {
        reset: &["--seating", "A:10x20@5000,GA:400@2000"],
        serve: &[],
    };
    let storm = "--rate 200 --buyers 300 --quantity 1:70,2:30";
    caught_by(
        setup,
        "amount-off-by-one",
        storm,
        Invariant::ChargesMatchOrders,
    )
    .await;
}

/// Each 202 names a seat beside the one its order holds: the database is
/// right, and only the history shows what buyers were told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_seat_in_the_answer_fails_answers_match_orders() {
    let setup = Setup {
        reset: &["--seating", "A:10x20@5000"],
        serve: &[],
    };
    let storm = "--rate 200 --buyers 300";
    caught_by(
        setup,
        "wrong-seat-in-answer",
        storm,
        Invariant::AnswersMatchOrders,
    )
    .await;
}

/// Buyers whose first order was declined buy again once its tickets are
/// back. The real server sells to them; one that counts cancelled orders
/// toward the limit refuses them while they hold nothing, and the history
/// the test keeps (as a client would) shows it. The reconciler runs at its
/// default pace: the lie stays in what the buyers were told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_counting_cancelled_orders_fails_refusals_were_true() {
    let setup = Setup {
        reset: &["--tickets", "100", "--max-per-user", "2"],
        serve: &["--payment-failure-rate", "1"],
    };
    let (bad, good) = tokio::join!(
        buy_again_after_a_decline(setup, Some("limit-counts-cancelled")),
        buy_again_after_a_decline(setup, None)
    );
    assert_fails(&bad.judged().await, Invariant::RefusalsWereTrue);
    assert_passes(&good.judged().await);
}

/// A client that keeps a history as a storm would: each buy it sends, what
/// it asked for, when, and what it was told.
struct Client {
    http: reqwest::Client,
    url: String,
    lines: Vec<String>,
}

impl Client {
    fn of(server: &Server) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: server.url.clone(),
            lines: Vec::new(),
        }
    }

    /// Buys `quantity` and returns the outcome's name in the history.
    async fn buy(&mut self, event: i64, user: &str, key: &str, quantity: i64) -> &'static str {
        let sent_at = chrono::Utc::now();
        let response = self
            .http
            .post(format!("{}/orders", self.url))
            .bearer_auth(buyer_token(user))
            .header("Idempotency-Key", key)
            .json(&json!({"event_id": event, "user_id": user, "quantity": quantity}))
            .send()
            .await
            .expect("the server answers");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or_default();
        let outcome = match (status, body["error"]["code"].as_str()) {
            (202, _) => "accepted",
            (_, Some("limit_exceeded")) => "limit_exceeded",
            (_, Some("sold_out")) => "sold_out",
            _ => panic!("unexpected answer {status}: {body}"),
        };
        let mut line = json!({
            "attempt": self.lines.len(), "event_id": event, "user_id": user,
            "idempotency_key": key, "quantity": quantity, "sent_at": sent_at,
            "finished_at": chrono::Utc::now(), "outcome": outcome, "status": status,
        });
        if let Some(id) = body["order_id"].as_str() {
            line["order_id"] = id.into();
        }
        self.lines.push(line.to_string());
        outcome
    }

    /// The run of `sale`, with this client's history.
    fn run(self, sale: Sale, server: Server) -> Run {
        let history = sale.dir.join("history.jsonl");
        std::fs::write(&history, self.lines.join("\n") + "\n").unwrap();
        Run {
            sale,
            _server: server,
            history: Some(history.display().to_string()),
            storm: json!({}),
        }
    }
}

/// Ten buyers take two tickets each; every payment is declined. Once each
/// order's tickets are back for sale, each buyer asks for two more under a
/// new key. Returns the run, with the buyers' history.
async fn buy_again_after_a_decline(setup: Setup, bugs: Option<&str>) -> Run {
    let (sale, event, server) = setup.open(bugs).await;
    let mut client = Client::of(&server);
    let buyers: Vec<String> = (0..10).map(|n| format!("buyer-{n}")).collect();
    for user in &buyers {
        client.buy(event, user, "first", 2).await;
    }
    // Declined, cancelled, and the tickets back in Redis.
    let pool = sale.pool().await;
    flashtix_testkit::until_none(
        &pool,
        JUDGEABLE_WITHIN,
        "SELECT count(*) FROM orders
         WHERE returned_at IS NULL OR now() < returned_at + interval '700 milliseconds'",
        "orders whose tickets never came back",
    )
    .await;
    for user in &buyers {
        client.buy(event, user, "again", 2).await;
    }
    client.run(sale, server)
}

/// Redis one ticket too high (as after a sale by a server that could not
/// reach it), then a request for every ticket Redis shows: Postgres refuses
/// it. A server that gives Redis nothing back leaves it nine too low, and
/// the buyers who come next are told `sold_out` while nine tickets remain,
/// until the reconciler (at its default pace) puts Redis right. The real
/// server gives back the nine and sells them. Sixteen events, one after the
/// other: a lie is seen only when the reconciler's next tick (once a second)
/// comes more than the return delay after the refusal, as on about four
/// events in ten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_keeps_refused_stock_fails_refusals_were_true() {
    let setup = Setup {
        reset: &["--events", "16", "--tickets", "10", "--max-per-user", "10"],
        serve: &[],
    };
    let (bad, good) = tokio::join!(
        buy_after_a_refusal(setup, Some("redis-keeps-refused-stock")),
        buy_after_a_refusal(setup, None)
    );
    assert_fails(&bad.judged().await, Invariant::RefusalsWereTrue);
    assert_passes(&good.judged().await);
}

async fn buy_after_a_refusal(setup: Setup, bugs: Option<&str>) -> Run {
    let (sale, _, server) = setup.open(bugs).await;
    let events = sale.json("events.json").1;
    let namespace = flashtix_server::runtime::config::Namespace::parse(&sale.namespace).unwrap();
    let gate = flashtix_server::gate::Gate::connect(&common::test_redis_url(), namespace).unwrap();
    let mut client = Client::of(&server);
    for event in events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
    {
        // Keys are a buyer's across events: each event gets its own.
        let key = |name: &str| format!("{name}-{event}");
        assert_eq!(client.buy(event, "ann", &key("first"), 1).await, "accepted");
        // A ticket sold where Redis never heard of it: Redis 10, Postgres 9.
        gate.force_stock(event, 10).await.unwrap();
        assert_eq!(client.buy(event, "cy", &key("all"), 10).await, "sold_out");
        let deadline = Instant::now() + Duration::from_millis(1200);
        for buyer in 0.. {
            if Instant::now() > deadline {
                break;
            }
            client
                .buy(event, &format!("next-{buyer}"), &key("one"), 1)
                .await;
        }
    }
    client.run(sale, server)
}
