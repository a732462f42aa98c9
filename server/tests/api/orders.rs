//! The order path under real concurrency: never oversell, limits hold.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{count, distinct_buyers, spawn_app, storm};

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
    let order = app
        .get_json(&format!("/orders/{}", answer.order_id()))
        .await;
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
    let mut buys = distinct_buyers(600);
    // Every tenth buyer double-clicks: the same key again, on either server.
    for i in (0..600).step_by(10) {
        buys.push((format!("buyer-{i}"), format!("key-{i}"), 1));
    }

    let answers = storm(&[&app, &blind], event, buys).await;

    let replays = answers.iter().filter(|a| a.replayed).count();
    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 100 + replays);
    assert_eq!(app.order_count().await, 100);
    assert_eq!(app.event(event).await.available_tickets, 0);
    for (i, answer) in answers[600..].iter().enumerate() {
        let first = &answers[i * 10];
        if answer.replayed {
            assert_eq!(
                answer.order_id(),
                first.order_id(),
                "a replay names the first order"
            );
        }
    }
    app.check_passes_within(Duration::from_secs(15)).await;
}
