//! The payment saga end to end: every accepted order ends CONFIRMED, CANCELLED
//! or EXPIRED, with money and stock exactly right.

use std::time::Duration;

use flashtix_chaos::proxy::{Proxy, Toxic};
use flashtix_model::Role;
use flashtix_server::invariants::{Finding, Invariant, Verdict};
use flashtix_server::runtime::config::Namespace;
use flashtix_server::saga::broker::{self, Topology, DELIVERY_LIMIT};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use reqwest::StatusCode;

use crate::helpers::{
    count, distinct_buyers, eventually, read_metric, spawn_app_with, start_server_binary,
    test_amqp_url, test_database_url, TestApp,
};

async fn statuses(app: &TestApp) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'CONFIRMED'),
                count(*) FILTER (WHERE status = 'CANCELLED'),
                count(*) FILTER (WHERE status = 'EXPIRED')
         FROM orders",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

async fn ledger(app: &TestApp, kind: &str, outcome: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM provider_ledger WHERE kind = $1 AND outcome = $2")
        .bind(kind)
        .bind(outcome)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Publishes `body` on the sale's exchange as if the relay had, confirmed.
async fn publish(app: &TestApp, topic: &str, message_id: Option<&str>, body: &[u8]) {
    let connection = broker::connect(&test_amqp_url()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut properties = BasicProperties::default().with_delivery_mode(2);
    if let Some(id) = message_id {
        properties = properties.with_message_id(id.into());
    }
    let exchange = Topology::new(app.namespace.clone()).exchange();
    channel
        .basic_publish(
            exchange.as_str().into(),
            topic.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn until_metric(app: &TestApp, name: &str, at_least: u64, limit: Duration) {
    eventually(limit, || async {
        let value = app.metric(name).await;
        if value >= at_least {
            Ok(())
        } else {
            Err(format!("{name} is {value}, below {at_least}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_orders_all_settle_with_one_capture_each() {
    let app = spawn_app_with(|settings| {
        settings.roles = Role::ALL.to_vec();
        settings.provider.failure_rate = 0.2;
        settings.provider.seed = 42;
    })
    .await;
    let event = app.create_event(1000, 4).await;

    let answers = app.storm(event, distinct_buyers(1000)).await;
    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 1000);
    app.until_none_pending(Duration::from_secs(90)).await;

    let (confirmed, cancelled, expired) = statuses(&app).await;
    assert_eq!((confirmed + cancelled, expired), (1000, 0));
    assert!(
        (100..300).contains(&cancelled),
        "about 20% declined, got {cancelled}"
    );
    let stock = app.event(event).await;
    assert_eq!(
        (
            stock.sold_tickets,
            stock.available_tickets,
            stock.pending_tickets
        ),
        (confirmed, cancelled, 0)
    );
    assert_eq!(ledger(&app, "CAPTURE", "SUCCEEDED").await, confirmed);
    assert_eq!(ledger(&app, "CAPTURE", "FAILED").await, cancelled);
    assert_eq!(ledger(&app, "REFUND", "SUCCEEDED").await, 0);
    assert_eq!(
        app.metric("flashtix_payments_total{outcome=\"SUCCEEDED\"}")
            .await,
        confirmed as u64
    );
    assert_eq!(
        app.metric("flashtix_payments_total{outcome=\"FAILED\"}")
            .await,
        cancelled as u64
    );
    assert_eq!(
        app.metric("flashtix_order_settle_seconds_count").await,
        1000
    );
    app.check_passes_within(Duration::from_secs(20)).await;

    // The same sale judged on a broker without its queues (another sale's,
    // or one that lost them): no dead letters there proves nothing.
    let foreign = Topology::new(Namespace::parse(&format!("{}x", app.namespace)).unwrap());
    let connection = broker::connect(&test_amqp_url()).await.unwrap();
    let report = flashtix_server::invariants::check(
        &app.pool,
        &app.gate,
        Ok((&connection, &foreign)),
        None,
        None,
    )
    .await
    .unwrap();
    let queues = report.finding(Invariant::QueuesDrained).unwrap();
    assert_eq!(queues.verdict, Verdict::Unknown, "{queues:?}");
    assert!(
        queues
            .examples
            .iter()
            .any(|e| e.contains("x.order.created.dead does not exist, though the sale published")),
        "{queues:?}"
    );
    app.drop_queues().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_order_created_twice_charges_once() {
    let app = spawn_app_with(|settings| settings.roles = Role::ALL.to_vec()).await;
    let event = app.create_event(10, 4).await;
    let answer = app.order(event, "nia", "k", 2).await;
    app.until_none_pending(Duration::from_secs(20)).await;
    let (message_id, body): (uuid::Uuid, String) = sqlx::query_as(
        "SELECT message_id, payload::text FROM outbox WHERE topic = 'order.created'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();

    // The same message again (as a relay that crashed before marking it sent
    // would), and the same order under a new message id.
    publish(
        &app,
        "order.created",
        Some(&message_id.to_string()),
        body.as_bytes(),
    )
    .await;
    publish(
        &app,
        "order.created",
        Some(&uuid::Uuid::now_v7().to_string()),
        body.as_bytes(),
    )
    .await;
    // Both copies are duplicates: the order's payment is recorded already.
    until_metric(
        &app,
        "flashtix_messages_total{consumer=\"payments\",outcome=\"duplicate\"}",
        2,
        Duration::from_secs(20),
    )
    .await;
    let done = app
        .metric("flashtix_messages_total{consumer=\"payments\",outcome=\"done\"}")
        .await;
    assert_eq!(done, 1);
    let results: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE topic = 'payment.result'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(results, 1, "a duplicate announced its payment again");
    let order = app.order_of(&answer).await;
    assert_eq!(order["status"], "CONFIRMED");
    assert_eq!(ledger(&app, "CAPTURE", "SUCCEEDED").await, 1);
    let captures: i64 = sqlx::query_scalar("SELECT count(*) FROM payments WHERE kind = 'CAPTURE'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(captures, 1);
    assert_eq!(app.event(event).await.sold_tickets, 2);
    app.check_passes_within(Duration::from_secs(20)).await;
    app.drop_queues().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_too_late_for_its_hold_is_refunded() {
    let app = spawn_app_with(|settings| {
        settings.roles = Role::ALL.to_vec();
        settings.provider.latency = Duration::from_secs(3);
    })
    .await;
    let event = app.create_event_holding(5, 4, 1).await;
    let answers = app.storm(event, distinct_buyers(5)).await;
    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 5);

    app.until_none_pending(Duration::from_secs(20)).await;
    eventually(Duration::from_secs(30), || async {
        match ledger(&app, "REFUND", "SUCCEEDED").await {
            5 => Ok(()),
            refunds => Err(format!("{refunds} of 5 late payments refunded")),
        }
    })
    .await;

    assert_eq!(statuses(&app).await, (0, 0, 5));
    let stock = app.event(event).await;
    assert_eq!((stock.available_tickets, stock.sold_tickets), (5, 0));
    let report = app.check_passes_within(Duration::from_secs(30)).await;
    assert_eq!(
        report.finding(Invariant::NoDoubleCharge).unwrap().verdict,
        Verdict::Pass
    );
    app.drop_queues().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_and_the_rest_flow() {
    let app = spawn_app_with(|settings| settings.roles = Role::ALL.to_vec()).await;
    let event = app.create_event(10, 4).await;
    // Wait for the topology: the first order goes all the way through.
    app.order(event, "first", "k", 1).await;
    app.until_none_pending(Duration::from_secs(20)).await;

    publish(
        &app,
        "order.created",
        Some(&uuid::Uuid::now_v7().to_string()),
        b"not json",
    )
    .await;
    let answers = app.storm(event, distinct_buyers(3)).await;
    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 3);
    app.until_none_pending(Duration::from_secs(20)).await;
    assert_eq!(statuses(&app).await, (4, 0, 0));

    // check lists the dead letter, and finds nothing else wrong.
    let queues = check_fails_only_on_dead_letters(&app, 1).await;
    assert!(
        queues.examples[0].contains("order.created.dead: 1 dead letter"),
        "{queues:?}"
    );
    app.drop_queues().await;
}

async fn remote_metric(client: &reqwest::Client, address: &str, name: &str) -> u64 {
    let Ok(response) = client.get(format!("{address}/metrics")).send().await else {
        return 0;
    };
    read_metric(&response.text().await.unwrap_or_default(), name).unwrap_or(0)
}

const PAYMENTS_DONE: &str = "flashtix_messages_total{consumer=\"payments\",outcome=\"done\"}";
const PAYMENTS_DUPLICATE: &str =
    "flashtix_messages_total{consumer=\"payments\",outcome=\"duplicate\"}";

/// Sends `signal` to `process` and waits for it to end, without blocking the
/// runtime.
async fn signal(mut process: std::process::Child, signal: &str) -> std::process::ExitStatus {
    let sent = std::process::Command::new("kill")
        .args([signal, &process.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    tokio::task::spawn_blocking(move || process.wait().unwrap())
        .await
        .unwrap()
}

/// A sale of 2,000 whose payments run in a real `flashtix-server` process
/// (everything else in this one). The orders come in waves of 50 every 50 ms;
/// once that process has paid 300 of them it gets `stop_with`, while later
/// waves are still coming, so it stops mid-sale whatever its pace. Returns
/// its exit status.
async fn a_sale_whose_payments_process_is_stopped(
    app: &TestApp,
    stop_with: &str,
) -> std::process::ExitStatus {
    let event = app.create_event(2000, 4).await;
    let (payments, address) = start_server_binary(
        &app.namespace,
        &["--role", "payments", "--payment-latency-ms", "2"],
    );
    let storm = async {
        let mut answers = Vec::new();
        let mut pace = tokio::time::interval(Duration::from_millis(50));
        for wave in distinct_buyers(2000).chunks(50) {
            pace.tick().await;
            answers.extend(app.storm(event, wave.to_vec()).await);
        }
        answers
    };
    let stop = async {
        let client = reqwest::Client::new();
        eventually(Duration::from_secs(30), || async {
            match remote_metric(&client, &address, PAYMENTS_DONE).await {
                settled if settled >= 300 => Ok(()),
                settled => Err(format!("payments never got going: {settled} done")),
            }
        })
        .await;
        signal(payments, stop_with).await
    };
    let (answers, exit) = tokio::join!(storm, stop);
    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 2000);
    assert!(
        app.pending_count().await > 0,
        "the stop landed after the sale had settled"
    );
    exit
}

fn without_payments() -> impl FnOnce(&mut flashtix_server::runtime::config::Settings) {
    |settings| {
        settings.roles = vec![
            Role::Api,
            Role::Sweeper,
            Role::Relay,
            Role::Orders,
            Role::Notifications,
        ]
    }
}

/// A second payments process finishes the sale: every order paid once.
/// Returns how many entries it found already handled.
async fn a_second_payments_process_settles_the_rest(app: &TestApp) -> u64 {
    let (again, address) = start_server_binary(&app.namespace, &["--role", "payments"]);
    app.until_none_pending(Duration::from_secs(90)).await;
    let duplicates = remote_metric(&reqwest::Client::new(), &address, PAYMENTS_DUPLICATE).await;
    signal(again, "-TERM").await;

    assert_eq!(statuses(app).await, (2000, 0, 0));
    assert_eq!(ledger(app, "CAPTURE", "SUCCEEDED").await, 2000);
    let captures: i64 = sqlx::query_scalar("SELECT count(*) FROM payments WHERE kind = 'CAPTURE'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(captures, 2000, "one payment per order");
    app.check_passes_within(Duration::from_secs(30)).await;
    app.drop_queues().await;
    duplicates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_worker_killed_mid_sale_charges_nobody_twice() {
    let app = spawn_app_with(without_payments()).await;
    a_sale_whose_payments_process_is_stopped(&app, "-KILL").await;
    a_second_payments_process_settles_the_rest(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_worker_stopped_mid_sale_settles_what_it_began() {
    let app = spawn_app_with(without_payments()).await;
    let exit = a_sale_whose_payments_process_is_stopped(&app, "-TERM").await;
    assert!(exit.success(), "exit status {exit:?}");

    // Every batch the stopped worker began was paid and acknowledged before it
    // exited: nothing it did comes back to the next worker as a redelivery.
    let redelivered = a_second_payments_process_settles_the_rest(&app).await;
    assert_eq!(redelivered, 0, "messages handled but never acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_taken_while_rabbitmq_is_unreachable_all_settle_when_it_is_back() {
    let app = spawn_app_with(|settings| {
        settings.roles = Role::ALL.to_vec();
        // Nothing listens on port 1: relay and workers cannot connect.
        settings.connections.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
        settings.provider.failure_rate = 0.2;
    })
    .await;
    let event = app.create_event(200, 4).await;
    let answers = app.storm(event, distinct_buyers(200)).await;
    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 200);
    assert_eq!(statuses(&app).await, (0, 0, 0), "nothing can settle yet");

    // RabbitMQ reachable again, for the processes that can reach it.
    let _saga = app
        .another_server(|settings| {
            settings.roles = vec![
                Role::Relay,
                Role::Payments,
                Role::Orders,
                Role::Notifications,
            ];
            settings.provider.failure_rate = 0.2;
        })
        .await;
    app.until_none_pending(Duration::from_secs(60)).await;

    let (confirmed, cancelled, expired) = statuses(&app).await;
    assert_eq!((confirmed + cancelled, expired), (200, 0));
    assert_eq!(ledger(&app, "CAPTURE", "SUCCEEDED").await, confirmed);
    app.check_passes_within(Duration::from_secs(20)).await;
    app.drop_queues().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_cut_off_from_postgres_lose_nothing_and_settle_after() {
    let app = spawn_app_with(|settings| {
        settings.roles = vec![Role::Api, Role::Sweeper, Role::Relay];
    })
    .await;
    // The workers reach Postgres through a fault proxy: a reset drops their
    // connections and refuses new ones.
    let mut database = reqwest::Url::parse(&test_database_url()).unwrap();
    let link = Proxy::start(
        "127.0.0.1:0".parse().unwrap(),
        format!(
            "{}:{}",
            database.host_str().unwrap(),
            database.port().unwrap_or(5432)
        ),
    )
    .await
    .unwrap();
    database.set_port(Some(link.address().port())).unwrap();
    let workers = app
        .another_server(|settings| {
            settings.roles = vec![Role::Payments, Role::Orders, Role::Notifications];
            settings.connections.database_url = database.to_string();
        })
        .await;
    let event = app.create_event(100, 4).await;

    link.set(Some(Toxic::Reset));
    let answers = app.storm(event, distinct_buyers(100)).await;
    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 100);
    // Every message tried more often than the queue's delivery limit while
    // Postgres was away: an outage must not spend deliveries, or all of these
    // would be dead-lettered.
    let tries = 100 * (DELIVERY_LIMIT as u64 + 1);
    let retried = "flashtix_messages_total{consumer=\"payments\",outcome=\"retry\"}";
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(60), || async {
        match remote_metric(&client, &workers.address, retried).await {
            failed if failed >= tries => Ok(()),
            failed => Err(format!("{failed} of {tries} failed tries so far")),
        }
    })
    .await;
    assert_eq!(
        app.pending_count().await,
        100,
        "nothing settled without Postgres"
    );
    link.set(None);

    app.until_none_pending(Duration::from_secs(30)).await;
    assert_eq!(statuses(&app).await, (100, 0, 0));
    assert_eq!(ledger(&app, "CAPTURE", "SUCCEEDED").await, 100);
    app.check_passes_within(Duration::from_secs(15)).await;
    app.drop_queues().await;
}

/// A capture that lands after its order expired is refunded when the order
/// worker handles its `payment.result`. Until then `check` cannot tell a
/// refund on its way from one forgotten: UNKNOWN while the message waits,
/// FAIL once it was handled with no refund, PASS once refunded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_judges_a_late_capture_only_once_its_result_was_handled() {
    let app = spawn_app_with(|settings| settings.roles = vec![Role::Api]).await;
    let event = app.create_event(5, 4).await;
    let order_id: uuid::Uuid = app
        .order(event, "late", "k", 1)
        .await
        .order_id()
        .parse()
        .unwrap();
    // Statements about this order and its `payment.result` (both ids inlined).
    let result_id = uuid::Uuid::now_v7();
    let sql = |statements: &str| {
        let statements = statements
            .replace("{order}", &format!("'{order_id}'::uuid"))
            .replace("{result}", &format!("'{result_id}'::uuid"));
        let pool = app.pool.clone();
        async move {
            sqlx::raw_sql(&statements).execute(&pool).await.unwrap();
        }
    };
    let verdict = |report: flashtix_server::invariants::Report| {
        report.finding(Invariant::NoDoubleCharge).unwrap().verdict
    };
    // What the sweeper and a slow provider leave behind: the order expired,
    // the provider captured it anyway, the payment worker recorded the capture
    // and wrote its result, which the order worker has not handled yet.
    sql("UPDATE orders SET status = 'EXPIRED' WHERE id = {order};
         INSERT INTO provider_ledger (order_id, kind, outcome, amount_cents)
         SELECT id, 'CAPTURE', 'SUCCEEDED', amount_cents FROM orders WHERE id = {order};
         INSERT INTO payments (id, order_id, kind, outcome, amount_cents)
         SELECT gen_random_uuid(), id, 'CAPTURE', 'SUCCEEDED', amount_cents FROM orders
         WHERE id = {order};
         INSERT INTO processed_messages (consumer, message_id)
         SELECT 'payments', message_id FROM outbox
         WHERE topic = 'order.created'
           AND payload->'orders' @> jsonb_build_array(jsonb_build_object('order_id', {order}));
         INSERT INTO outbox (message_id, topic, payload)
         VALUES ({result}, 'payment.result',
                 jsonb_build_object('orders', jsonb_build_array(
                     jsonb_build_object('order_id', {order}, 'outcome', 'SUCCEEDED'))));")
    .await;
    assert_eq!(verdict(app.check().await), Verdict::Unknown);

    sql("INSERT INTO processed_messages (consumer, message_id) VALUES ('orders', {result});").await;
    assert_eq!(verdict(app.check().await), Verdict::Fail);

    sql(
        "INSERT INTO provider_ledger (order_id, kind, outcome, amount_cents)
         SELECT id, 'REFUND', 'SUCCEEDED', amount_cents FROM orders WHERE id = {order};
         INSERT INTO payments (id, order_id, kind, outcome, amount_cents)
         SELECT gen_random_uuid(), id, 'REFUND', 'SUCCEEDED', amount_cents FROM orders
         WHERE id = {order};",
    )
    .await;
    assert_eq!(verdict(app.check().await), Verdict::Pass);
}

async fn assert_provider_never_asked(app: &TestApp, order_id: uuid::Uuid) {
    let asked: i64 = sqlx::query_scalar("SELECT count(*) FROM provider_ledger WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        asked, 0,
        "the provider was asked to charge an unknown order"
    );
}

/// Waits for `dead` dead letters of `order.created`, then checks the sale:
/// `queues_drained` FAILs on them and no other invariant FAILs. Returns that
/// finding.
async fn check_fails_only_on_dead_letters(app: &TestApp, dead: u32) -> Finding {
    until_dead_letters(app, "order.created", dead).await;
    let report = app.check().await;
    let queues = report.finding(Invariant::QueuesDrained).unwrap().clone();
    assert_eq!(queues.verdict, Verdict::Fail, "{report:#?}");
    assert!(
        report
            .findings
            .iter()
            .filter(|f| f.invariant != Invariant::QueuesDrained)
            .all(|f| f.verdict != Verdict::Fail),
        "{report:#?}"
    );
    queues
}

/// Waits until the topic's dead-letter queue holds `expected` messages.
async fn until_dead_letters(app: &TestApp, topic: &str, expected: u32) {
    let dead = Topology::new(app.namespace.clone()).dead_letter_queue(topic);
    eventually(Duration::from_secs(10), || async {
        match queue_depth(&dead).await {
            depth if depth == expected => Ok(()),
            depth => Err(format!("dead-letter queue holds {depth}")),
        }
    })
    .await;
}

/// Depth of one of the sale's queues (ready messages).
async fn queue_depth(queue: &str) -> u32 {
    let connection = broker::connect(&test_amqp_url()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .unwrap()
        .message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_we_do_not_have_is_dead_lettered_and_charges_nobody() {
    let app = spawn_app_with(|settings| settings.roles = Role::ALL.to_vec()).await;
    let event = app.create_event(30, 4).await;
    app.order(event, "first", "k", 1).await;
    app.until_none_pending(Duration::from_secs(20)).await;

    // A message for an order this database never had (a queue kept across a
    // reset, a restored backup), then twenty real orders.
    let ghost = uuid::Uuid::now_v7();
    let body = serde_json::json!({"orders": [{"order_id": ghost, "event_id": event,
                                              "user_id": "ghost", "quantity": 1,
                                              "amount_cents": 2500}]});
    publish(
        &app,
        "order.created",
        Some(&uuid::Uuid::now_v7().to_string()),
        body.to_string().as_bytes(),
    )
    .await;
    let answers = app.storm(event, distinct_buyers(20)).await;
    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 20);

    app.until_none_pending(Duration::from_secs(30)).await;
    assert_eq!(statuses(&app).await, (21, 0, 0));
    assert_provider_never_asked(&app, ghost).await;
    let queues = check_fails_only_on_dead_letters(&app, 1).await;
    // The dead letter is named, and only looked at: it is still there.
    let named = format!("1 dead letter(s): order {ghost} (message ");
    assert!(queues.examples[0].contains(&named), "{queues:?}");
    until_dead_letters(&app, "order.created", 1).await;
    let again = app.check().await;
    assert_eq!(
        again.finding(Invariant::QueuesDrained).unwrap().examples,
        queues.examples
    );
    app.drop_queues().await;
}

/// One message holding twenty real orders, one for an order the sale never
/// had, and one that is no order at all: the two are dead-lettered alone,
/// each named, and the twenty settle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_entry_is_dead_lettered_alone_and_the_rest_of_its_message_settles() {
    let app = spawn_app_with(|settings| settings.roles = vec![Role::Api]).await;
    let event = app.create_event(30, 4).await;
    let answers = app.storm(event, distinct_buyers(20)).await;
    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 20);
    // No relay yet: the writers' messages are still in the outbox. They become
    // one, with the two poison entries in the middle.
    let ghost = uuid::Uuid::now_v7();
    let message_id: uuid::Uuid = sqlx::query_scalar(
        "WITH taken AS (
            DELETE FROM outbox WHERE topic = 'order.created' RETURNING payload
         ), entries AS (
            SELECT e.entry, row_number() OVER () AS n
            FROM taken, jsonb_array_elements(taken.payload->'orders') AS e(entry)
         )
         INSERT INTO outbox (message_id, topic, payload)
         SELECT gen_random_uuid(), 'order.created', jsonb_build_object('orders',
                (SELECT jsonb_agg(entry ORDER BY n) FROM entries WHERE n <= 10)
             || jsonb_build_array(
                    jsonb_build_object('order_id', $1::uuid, 'amount_cents', 2500),
                    jsonb_build_object('order_id', 'not-an-order'))
             || (SELECT jsonb_agg(entry ORDER BY n) FROM entries WHERE n > 10))
         RETURNING message_id",
    )
    .bind(ghost)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let _saga = app
        .another_server(|settings| {
            settings.roles = vec![
                Role::Relay,
                Role::Payments,
                Role::Orders,
                Role::Notifications,
            ];
        })
        .await;

    app.until_none_pending(Duration::from_secs(30)).await;
    assert_eq!(statuses(&app).await, (20, 0, 0));
    assert_provider_never_asked(&app, ghost).await;
    let queues = check_fails_only_on_dead_letters(&app, 2).await;
    let examples = queues.examples.join("\n");
    for named in [
        format!("order {ghost} (message {message_id})"),
        format!("order not-an-order (message {message_id})"),
    ] {
        assert!(examples.contains(&named), "{named} not in {examples}");
    }
    // The message itself was processed: the twenty settled from it.
    let processed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processed_messages WHERE message_id = $1")
            .bind(message_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(processed, 1);
    app.drop_queues().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_of_one_message_in_one_batch_are_handled_once() {
    // Every payment declined: a copy handled as new would show as a second
    // result (the payments table keeps one row per order and kind).
    let app = spawn_app_with(|settings| {
        settings.roles = vec![
            Role::Api,
            Role::Sweeper,
            Role::Relay,
            Role::Orders,
            Role::Notifications,
        ];
        settings.provider.failure_rate = 1.0;
    })
    .await;
    let event = app.create_event(50, 4).await;
    let answers = app.storm(event, distinct_buyers(50)).await;
    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 50);
    eventually(Duration::from_secs(20), || async {
        match flashtix_server::saga::outbox::depth(&app.pool)
            .await
            .unwrap()
        {
            0 => Ok(()),
            depth => Err(format!("{depth} messages not yet published")),
        }
    })
    .await;
    // Two more copies of every message, queued before any payment worker
    // runs: the worker takes them in batches holding several copies of one.
    let messages: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "SELECT message_id, payload::text FROM outbox WHERE topic = 'order.created'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    for _ in 0..2 {
        for (message_id, body) in &messages {
            publish(
                &app,
                "order.created",
                Some(&message_id.to_string()),
                body.as_bytes(),
            )
            .await;
        }
    }
    let _payments = app
        .another_server(|settings| {
            settings.roles = vec![Role::Payments];
            settings.provider.failure_rate = 1.0;
        })
        .await;

    app.until_none_pending(Duration::from_secs(30)).await;
    assert_eq!(statuses(&app).await, (0, 50, 0));
    let (captures, results): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM payments),
                (SELECT count(*) FROM outbox, jsonb_array_elements(payload->'orders')
                 WHERE topic = 'payment.result')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        (captures, results),
        (50, 50),
        "one capture and one result per order"
    );
    app.check_passes_within(Duration::from_secs(20)).await;
    app.drop_queues().await;
}
