//! The order path under real concurrency: never oversell, limits hold.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{count, distinct_buyers, eventually, spawn_app, spawn_app_with, storm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ticket_two_hundred_buyers_one_wins() {
    let app = spawn_app().await;
    let event = app.create_event(1, 4).await;

    let answers = app.storm(event, distinct_buyers(200)).await;

    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 1);
    assert_eq!(count(&answers, StatusCode::CONFLICT, "sold_out"), 199);
    let stock = app.event(event).await;
    assert_eq!((stock.available_tickets, stock.pending_tickets), (0, 1));
    app.check_passes_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_tickets_thousand_buyers_exactly_hundred_sold() {
    let app = spawn_app().await;
    let event = app.create_event(100, 4).await;

    let answers = app.storm(event, distinct_buyers(1000)).await;

    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 100);
    assert_eq!(count(&answers, StatusCode::CONFLICT, "sold_out"), 900);
    assert_eq!(app.event(event).await.available_tickets, 0);
    assert_eq!(app.order_count().await, 100);
    app.check_passes_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_buyer_fifty_concurrent_orders_gets_the_limit() {
    let app = spawn_app().await;
    let event = app.create_event(1000, 2).await;
    let buys = (0..50)
        .map(|i| ("greedy".to_string(), format!("click-{i}"), 1))
        .collect();

    let answers = app.storm(event, buys).await;

    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 2);
    assert_eq!(count(&answers, StatusCode::CONFLICT, "limit_exceeded"), 48);
    assert_eq!(app.event(event).await.pending_tickets, 2);
    app.check_passes_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_order_reads_back_pending_with_server_price() {
    let app = spawn_app().await;
    let event = app.create_event(10, 4).await;

    let answer = app.order(event, "alice", "k1", 3).await;

    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.body["status"], "PENDING");
    assert_eq!(answer.body["amount_cents"], 3 * 2500);
    let order = app.order_of(&answer).await;
    assert_eq!(order["status"], "PENDING");
    assert_eq!(order["quantity"], 3);
    assert_eq!(order["user_id"], "alice");
    assert!(order["created_at"].is_string() && order["updated_at"].is_string());
    let stock = app.event(event).await;
    assert_eq!((stock.available_tickets, stock.pending_tickets), (7, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_bigger_than_the_stock_left_is_sold_out() {
    let app = spawn_app().await;
    let event = app.create_event(3, 4).await;

    assert_eq!(
        app.order(event, "a", "k", 2).await.status,
        StatusCode::ACCEPTED
    );
    let too_many = app.order(event, "b", "k", 2).await;
    assert_eq!(
        (too_many.status, too_many.code()),
        (StatusCode::CONFLICT, "sold_out")
    );
    assert_eq!(
        app.order(event, "c", "k", 1).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(app.event(event).await.available_tickets, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_one_without_redis_sell_each_ticket_once() {
    let app = spawn_app().await;
    // A second process on the same sale whose Redis is gone: it takes orders
    // straight to Postgres while the first goes through the gate.
    let blind = app
        .another_server(|settings| settings.connections.redis_url = "redis://127.0.0.1:1".into())
        .await;
    let event = app.create_event(100, 2).await;
    let buys = distinct_buyers(600);

    // The blind server alone first (it is the slower: each of its calls to
    // Redis fails before it turns to Postgres), then both at once.
    let mut answers = storm(&[&blind], event, buys[..50].to_vec()).await;
    answers.extend(storm(&[&app, &blind], event, buys[50..].to_vec()).await);

    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 100);
    assert_eq!(count(&answers, StatusCode::CONFLICT, "sold_out"), 500);
    assert_eq!(app.order_count().await, 100);
    assert_eq!(app.event(event).await.available_tickets, 0);

    // Once Redis has caught up with the sell-out (the reconciler corrects its
    // stock: the blind server's orders never took any there)...
    eventually(Duration::from_secs(10), || async {
        match app.gate.observe(event).await.unwrap() {
            seen if seen.stock == Some(0) && seen.is_quiet() => Ok(()),
            seen => Err(format!("Redis not yet sold out: {seen:?}")),
        }
    })
    .await;
    // ...every buyer clicks again, on both servers: an
    // order taken without Redis is still its key's order on the Redis side.
    let again: Vec<_> = buys
        .iter()
        .flat_map(|buy| [buy.clone(), buy.clone()])
        .collect();
    let second = storm(&[&app, &blind], event, again).await;
    for (i, first) in answers.iter().enumerate() {
        for answer in &second[2 * i..2 * i + 2] {
            if first.status == StatusCode::ACCEPTED {
                assert!(
                    answer.status == StatusCode::ACCEPTED && answer.replayed,
                    "buyer-{i} was sold an order, then told {:?}",
                    answer.body
                );
                assert_eq!(
                    answer.order_id(),
                    first.order_id(),
                    "a replay names the first order"
                );
            } else {
                assert_eq!(answer.code(), "sold_out", "buyer-{i}: {:?}", answer.body);
            }
        }
    }
    app.check_passes_within(Duration::from_secs(15)).await;
}

/// Each event has its own writer, under its own row lock: the same key sent
/// to two events at once races to the unique constraint, and one order is
/// made. The other request is refused as a reuse or, when its batch kept
/// losing such races, told to retry (503): never a second order, and a 409
/// only beside the order it refers to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_sent_to_two_events_at_once_makes_one_order() {
    let app = spawn_app().await;
    let (first, second) = (
        app.create_event(1000, 2).await,
        app.create_event(1000, 2).await,
    );
    let buys: Vec<(String, String, i64)> = (0..150)
        .map(|i| (format!("buyer-{i}"), format!("key-{i}"), 1))
        .collect();

    let (on_first, on_second) = tokio::join!(
        app.storm(first, buys.clone()),
        app.storm(second, buys.clone())
    );

    let mut unanswered = Vec::new();
    for (i, (a, b)) in on_first.iter().zip(&on_second).enumerate() {
        let mut answers = [(a.status, a.code()), (b.status, b.code())];
        answers.sort();
        let retry = (StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        match answers {
            [(StatusCode::ACCEPTED, ""), (StatusCode::CONFLICT, "idempotency_key_reused")]
            | [(StatusCode::ACCEPTED, ""), (StatusCode::SERVICE_UNAVAILABLE, "unavailable")] => {}
            [one, other] if one == retry && other == retry => unanswered.push(i),
            _ => panic!("buyer-{i}: one order, the other refused ({a:?}, {b:?})"),
        }
    }
    // Told to retry on both: a retry, one at a time, makes the one order.
    for i in unanswered {
        let retried = app
            .order(first, &format!("buyer-{i}"), &format!("key-{i}"), 1)
            .await;
        assert_eq!(
            retried.status,
            StatusCode::ACCEPTED,
            "buyer-{i}: {retried:?}"
        );
    }
    let buyers: i64 = sqlx::query_scalar("SELECT count(DISTINCT user_id) FROM orders")
        .fetch_one(&app.pool)
        .await
        .expect("count buyers");
    assert_eq!(
        (app.order_count().await, buyers),
        (150, 150),
        "one order per key"
    );
    app.check_passes_within(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_used_on_one_event_is_not_sold_out_on_another() {
    let app = spawn_app().await;
    let open = app.create_event(10, 2).await;
    let gone = app.create_event(1, 2).await;
    assert_eq!(
        app.order(gone, "taker", "k", 1).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.order(open, "olga", "k1", 1).await.status,
        StatusCode::ACCEPTED
    );

    let elsewhere = app.order(gone, "olga", "k1", 1).await;

    assert_eq!(
        (elsewhere.status, elsewhere.code()),
        (StatusCode::CONFLICT, "idempotency_key_reused")
    );
}

/// An event's order writer lane ends once it has waited its idle time for a
/// reservation, and the event's next order starts another: the lanes of
/// events that have ended selling do not stay for the life of the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_events_writer_lane_ends_and_its_next_order_starts_another() {
    let app = spawn_app_with(|settings| settings.lane_idle = Duration::from_secs(3)).await;
    let (first, second) = (app.create_event(10, 4).await, app.create_event(10, 4).await);
    assert_eq!(
        app.order(first, "alice", "a1", 1).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.order(second, "bob", "b1", 1).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(app.metric("flashtix_writer_lanes").await, 2, "a lane each");

    let lanes_left = || async {
        match app.metric("flashtix_writer_lanes").await {
            0 => Ok(()),
            left => Err(format!("{left} lanes still open")),
        }
    };
    eventually(Duration::from_secs(10), lanes_left).await;
    let again = app.order(first, "alice", "a2", 1).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{:?}", again.body);
    eventually(Duration::from_secs(10), lanes_left).await;
    assert_eq!(app.event(first).await.pending_tickets, 2);
    assert_eq!(app.metric("flashtix_writer_lanes_started_total").await, 3);
    app.check_passes_within(Duration::from_secs(10)).await;
}

/// Orders that reach their event's lane as it ends are all decided, end to
/// end: waves of buyers come a few milliseconds apart, about the lanes' idle
/// time, so lanes end and start again between and during waves. (The moment
/// a reservation meets a lane that has just closed is too short to hit on
/// purpose here; `orders::writer::lanes`'s unit tests make it happen.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_reaching_a_lane_as_it_ends_are_all_decided() {
    let app = spawn_app_with(|settings| settings.lane_idle = Duration::from_millis(3)).await;
    let event = app.create_event(10_000, 4).await;
    let mut answers = Vec::new();
    for wave in 0..60u64 {
        let buys = (0..8)
            .map(|i| (format!("w{wave}-{i}"), format!("k{wave}-{i}"), 1))
            .collect();
        answers.extend(app.storm(event, buys).await);
        // The load's shape, not a wait for anything: the gap between waves.
        tokio::time::sleep(Duration::from_millis(1 + wave % 5)).await;
    }
    let refused: Vec<_> = answers
        .iter()
        .filter(|a| a.status != StatusCode::ACCEPTED)
        .map(|a| &a.body)
        .collect();
    assert!(refused.is_empty(), "{} refused: {refused:?}", refused.len());
    assert_eq!(app.event(event).await.pending_tickets, 480);
    let started = app.metric("flashtix_writer_lanes_started_total").await;
    assert!(
        started > 1,
        "the event's lane left and came back: {started}"
    );
    app.check_passes_within(Duration::from_secs(10)).await;
}
