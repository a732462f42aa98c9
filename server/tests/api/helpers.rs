//! Shared setup: spawn the app in its own namespace, drive it over HTTP.
//!
//! Services come from `FLASHTIX_TEST_DATABASE_URL` (default: database
//! `flashtix_test` on the local Postgres, created if missing) and
//! `FLASHTIX_TEST_REDIS_URL`. Logs only with `TEST_LOG=1`.

use std::io::Write;
use std::process::{Child, Command};
use std::time::Duration;

use flashtix_model::Role;
use flashtix_server::catalogue::events::Event;
use flashtix_server::gate::Gate;
use flashtix_server::identity::config::Identity;
use flashtix_server::identity::Access;
use flashtix_server::invariants::{self, Invariant, Report, Verdict};
use flashtix_server::orders::settled;
use flashtix_server::runtime::config::{Connections, Namespace, Settings};
use flashtix_server::startup::Application;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::task::JoinSet;

/// The organizer the tests create events as.
pub const ORGANIZER: &str = "test-organizer";

/// A buyer's token for `subject`.
pub fn buyer_token(subject: &str) -> String {
    flashtix_testkit::token(subject, Access::Buyer)
}

/// The token of the organizer the tests create events as.
pub fn organizer_token() -> String {
    flashtix_testkit::token(ORGANIZER, Access::Organizer)
}

/// Invariants documented as only eventually true: Redis may drift from
/// Postgres (by design it is never the truth) until the reconciler repairs it.
const EVENTUALLY_TRUE: &[Invariant] = &[Invariant::RedisAgrees];

pub struct TestApp {
    pub namespace: Namespace,
    pub address: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    pub gate: Gate,
    _watchdog: Watchdog,
}

/// The longest a test may keep its app. Every test finishes in seconds; one
/// that is still running after this is stuck on something unbounded, and
/// failing the run at once, naming it, beats waiting for CI's own limit.
const STUCK_AFTER: Duration = Duration::from_secs(240);

/// Ends the test process if dropped no sooner than [`STUCK_AFTER`] after it
/// was made.
struct Watchdog {
    _running: std::sync::mpsc::Sender<()>,
}

impl Watchdog {
    fn start() -> Self {
        let test = std::thread::current().name().unwrap_or("a test").to_owned();
        let (running, finished) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                finished.recv_timeout(STUCK_AFTER)
            {
                // Straight to stderr: the test harness captures `eprintln!`,
                // and its capture dies with the process.
                let _ = writeln!(
                    std::io::stderr(),
                    "{test} is stuck: still running after {STUCK_AFTER:?}; ending the run"
                );
                std::process::exit(101);
            }
        });
        Self { _running: running }
    }
}

/// One answer to `POST /orders`.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub replayed: bool,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn order_id(&self) -> &str {
        self.body["order_id"].as_str().unwrap_or("")
    }
}

pub use flashtix_testkit::{amqp_url as test_amqp_url, database_url as test_database_url};
pub use flashtix_testkit::{eventually, redis_url as test_redis_url};

pub fn new_namespace() -> Namespace {
    flashtix_testkit::namespace('t')
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        flashtix_server::runtime::telemetry::init("info");
    }
    let watchdog = Watchdog::start();
    let database_url = test_database_url();
    flashtix_testkit::ensure_database().await;
    let mut settings = Settings {
        connections: Connections {
            database_url,
            redis_url: test_redis_url(),
            amqp_url: test_amqp_url(),
            namespace: new_namespace(),
        },
        bind: "127.0.0.1:0".parse().expect("address"),
        // Tests that publish to RabbitMQ add the relay.
        roles: vec![Role::Api, Role::Sweeper],
        // Tokens on, as in a sale; no rate limit (tests that want one set it).
        identity: Identity {
            tokens: Some(flashtix_testkit::token_verifier()),
            buyer_rate: None,
        },
        reconcile_every: Some(Duration::from_millis(200)),
        db_pool: 8,
        sweep_every: Duration::from_millis(100),
        relay_every: Duration::from_millis(20),
        lane_idle: flashtix_server::runtime::config::LANE_IDLE,
        stream: flashtix_server::runtime::config::StreamPace {
            every: Duration::from_millis(100),
            budget: None,
        },
        provider: Default::default(),
        notices: Default::default(),
    };
    configure(&mut settings);
    let namespace = settings.connections.namespace.clone();
    let app = Application::build(settings).await.expect("the app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let pool = app.state().pool.clone();
    // The test's own view of Redis always points at the real one, even when the
    // app was given a broken URL.
    let gate = Gate::connect(&test_redis_url(), namespace.clone()).expect("redis url");
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(2000)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    TestApp {
        namespace,
        address,
        client,
        pool,
        gate,
        _watchdog: watchdog,
    }
}

impl TestApp {
    /// Creates an event through the admin API (holds of 300 s); returns its id.
    pub async fn create_event(&self, total_tickets: i64, max_per_user: i64) -> i64 {
        self.create_event_holding(total_tickets, max_per_user, 300)
            .await
    }

    /// Creates an event whose unpaid orders expire after `hold_seconds`.
    pub async fn create_event_holding(
        &self,
        total_tickets: i64,
        max_per_user: i64,
        hold_seconds: i64,
    ) -> i64 {
        self.create_event_from(json!({
            "name": "Test sale",
            "total_tickets": total_tickets,
            "price_cents": 2500,
            "max_per_user": max_per_user,
            "hold_seconds": hold_seconds,
        }))
        .await
    }

    /// Creates an event with this seating plan (and the default hold);
    /// returns its id.
    pub async fn create_seated_event(&self, seating: Value, max_per_user: i64) -> i64 {
        self.create_event_from(
            json!({"name": "Seated sale", "max_per_user": max_per_user, "seating": seating}),
        )
        .await
    }

    /// `POST /events` with this body, which must create it; returns its id.
    pub async fn create_event_from(&self, body: Value) -> i64 {
        self.create_event_as(&organizer_token(), body).await
    }

    /// `POST /events` with this body and organizer `token`, which must
    /// create it; returns its id.
    pub async fn create_event_as(&self, token: &str, body: Value) -> i64 {
        let response = self
            .client
            .post(format!("{}/events", self.address))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("POST /events");
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("event JSON");
        body["id"].as_i64().expect("event id")
    }

    /// `POST /orders` with `what` (seats, zone, quantity) added to the
    /// event and the user.
    pub async fn buy(&self, event_id: i64, user: &str, key: &str, what: Value) -> Answer {
        send_order(
            &self.client,
            &self.address,
            key,
            &order_body(event_id, user, what),
        )
        .await
    }

    /// Fires every (user, key, what) at once; answers in the same order.
    pub async fn buy_all(&self, event_id: i64, buys: Vec<(String, String, Value)>) -> Vec<Answer> {
        let mut tasks = JoinSet::new();
        for (index, (user, key, what)) in buys.into_iter().enumerate() {
            let (client, address) = (self.client.clone(), self.address.clone());
            tasks.spawn(async move {
                let body = order_body(event_id, &user, what);
                (index, send_order(&client, &address, &key, &body).await)
            });
        }
        let mut answers = tasks.join_all().await;
        answers.sort_by_key(|(index, _)| *index);
        answers.into_iter().map(|(_, answer)| answer).collect()
    }

    pub async fn order(&self, event_id: i64, user: &str, key: &str, quantity: i64) -> Answer {
        place(&self.client, &self.address, event_id, user, key, quantity).await
    }

    /// Fires all `buys` (user, key, quantity) at once; answers in the same order.
    pub async fn storm(&self, event_id: i64, buys: Vec<(String, String, i64)>) -> Vec<Answer> {
        storm(&[self], event_id, buys).await
    }

    /// A second server on the same sale (same database schema, same Redis
    /// namespace), as behind a load balancer.
    pub async fn another_server(&self, configure: impl FnOnce(&mut Settings)) -> TestApp {
        let namespace = self.namespace.clone();
        spawn_app_with(|settings| {
            settings.connections.namespace = namespace;
            configure(settings);
        })
        .await
    }

    /// Orders of the sale still PENDING.
    pub async fn pending_count(&self) -> i64 {
        settled::pending(&self.pool, None)
            .await
            .expect("count pending orders")
    }

    /// Waits until no order of the sale is PENDING; fails the test if some
    /// still are after `limit`.
    pub async fn until_none_pending(&self, limit: Duration) {
        match settled::wait_settled(&self.pool, None, limit, |_, _| {}).await {
            Ok(settled::Settled::After(_)) => {}
            Ok(settled::Settled::Pending(pending)) => {
                panic!("not within {limit:?}: {pending} orders still pending")
            }
            Err(error) => panic!("counting pending orders: {error}"),
        }
    }

    /// A Redis connection of the test's own, to look at or break what the
    /// gate keeps.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(test_redis_url())
            .expect("a Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("Redis")
    }

    /// The full name of event `event`'s Redis key `name` (`stock`, `buyers`,
    /// `keys`…) in this app's namespace.
    pub fn redis_key(&self, event: i64, name: &str) -> String {
        format!("{}:{{ev:{event}}}:{name}", self.namespace)
    }

    /// Deletes the namespace's queues (the broker is shared by every test).
    pub async fn drop_queues(&self) {
        let _ = flashtix_testkit::delete_queues(self.namespace.as_str()).await;
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.expect("a JSON answer")
    }

    /// `GET path` with `token`.
    pub async fn get_as(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// The order an accepted answer names, read back by its buyer.
    pub async fn order_of(&self, answer: &Answer) -> Value {
        let buyer = answer.body["user_id"]
            .as_str()
            .expect("a receipt names its buyer");
        self.get_as(
            &format!("/orders/{}", answer.order_id()),
            &buyer_token(buyer),
        )
        .await
        .json()
        .await
        .expect("a JSON answer")
    }

    /// One counter from `GET /metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = self
            .get("/metrics")
            .await
            .text()
            .await
            .expect("metrics text");
        read_metric(&text, name).unwrap_or_else(|| panic!("{name} is not exported: {text}"))
    }

    pub async fn event(&self, event_id: i64) -> Event {
        let response = self
            .client
            .get(format!("{}/events/{event_id}", self.address))
            .send()
            .await
            .expect("GET /events");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("event JSON")
    }

    pub async fn order_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(&self.pool)
            .await
            .expect("count orders")
    }

    pub async fn check(&self) -> Report {
        let topology = flashtix_server::saga::broker::Topology::new(self.namespace.clone());
        let connection = flashtix_server::saga::broker::connect(&test_amqp_url()).await;
        let queues = match &connection {
            Ok(connection) => Ok((connection, &topology)),
            Err(error) => Err(error.to_string()),
        };
        invariants::check(&self.pool, &self.gate, queues, None, None)
            .await
            .expect("check runs")
    }

    /// Polls `check` until every invariant passes, or panics with the last
    /// report. UNKNOWN (in flight) is waited out; a FAIL at any poll fails
    /// the test at once, but for the invariants that are only eventually
    /// true ([`EVENTUALLY_TRUE`]).
    pub async fn check_passes_within(&self, limit: Duration) -> Report {
        eventually(limit, || async {
            let report = self.check().await;
            let failed: Vec<_> = report
                .findings
                .iter()
                .filter(|f| f.verdict == Verdict::Fail)
                .filter(|f| !EVENTUALLY_TRUE.contains(&f.invariant))
                .collect();
            assert!(failed.is_empty(), "check failed: {failed:#?}");
            match report.verdict {
                Verdict::Pass => Ok(report),
                _ => Err(format!("check did not pass: {report:#?}")),
            }
        })
        .await
    }
}

/// Fires all `buys` at once, spread over `servers` in turn; answers in order.
pub async fn storm(
    servers: &[&TestApp],
    event_id: i64,
    buys: Vec<(String, String, i64)>,
) -> Vec<Answer> {
    let mut tasks = JoinSet::new();
    for (index, (user, key, quantity)) in buys.into_iter().enumerate() {
        let server = servers[index % servers.len()];
        let (client, address) = (server.client.clone(), server.address.clone());
        tasks.spawn(async move {
            let answer = place(&client, &address, event_id, &user, &key, quantity).await;
            (index, answer)
        });
    }
    let mut answers = tasks.join_all().await;
    answers.sort_by_key(|(index, _)| *index);
    answers.into_iter().map(|(_, answer)| answer).collect()
}

async fn place(
    client: &reqwest::Client,
    address: &str,
    event_id: i64,
    user: &str,
    key: &str,
    quantity: i64,
) -> Answer {
    let body = json!({"event_id": event_id, "user_id": user, "quantity": quantity});
    send_order(client, address, key, &body).await
}

/// `POST /orders` with this key and body, as sent, with a token of the
/// body's `user_id` (of "anonymous" when it has none that is text).
pub async fn send_order(
    client: &reqwest::Client,
    address: &str,
    key: &str,
    body: &Value,
) -> Answer {
    let subject = body["user_id"].as_str().unwrap_or("anonymous");
    let response = client
        .post(format!("{address}/orders"))
        .bearer_auth(buyer_token(subject))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("POST /orders");
    let status = response.status();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let body = response.json().await.expect("a JSON answer");
    Answer {
        status,
        replayed,
        body,
    }
}

fn order_body(event_id: i64, user: &str, what: Value) -> Value {
    let mut body = json!({"event_id": event_id, "user_id": user});
    for (field, value) in what.as_object().expect("seats, zone or quantity").clone() {
        body[field] = value;
    }
    body
}

/// `n` buyers, each with their own user id and key, one ticket each.
pub fn distinct_buyers(n: usize) -> Vec<(String, String, i64)> {
    (0..n)
        .map(|i| (format!("buyer-{i}"), format!("key-{i}"), 1))
        .collect()
}

pub fn count(answers: &[Answer], status: StatusCode, code: &str) -> usize {
    answers
        .iter()
        .filter(|a| a.status == status && (code.is_empty() || a.code() == code))
        .count()
}

/// One sample from Prometheus text: the value of the line named exactly `name`.
pub fn read_metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

/// Starts the real `flashtix-server` binary on `namespace` against the test
/// services, with `args`; returns the process and the address it printed.
pub fn start_server_binary(namespace: &Namespace, args: &[&str]) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flashtix-server"));
    command.args(["--bind", "127.0.0.1:0"]).args(args);
    flashtix_testkit::on_test_services(&mut command, namespace.as_str());
    flashtix_testkit::start_server(&mut command)
}
