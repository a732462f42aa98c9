//! Unpaid orders expire and their tickets sell again, once.

use std::time::Duration;

use flashtix_model::Role;
use flashtix_server::gate::reconcile::restock_pending;
use flashtix_server::gate::{Restock, StockReturn};
use flashtix_server::invariants::{Invariant, Verdict};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{count, distinct_buyers, eventually, spawn_app, spawn_app_with, storm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_orders_expire_and_their_tickets_sell_again() {
    let app = spawn_app().await;
    let event = app.create_event_holding(3, 1, 1).await;
    let first_wave = app.storm(event, distinct_buyers(5)).await;
    assert_eq!(count(&first_wave, StatusCode::ACCEPTED, ""), 3);
    let expiring = first_wave
        .iter()
        .find(|a| a.status == StatusCode::ACCEPTED)
        .unwrap();

    app.until_none_pending(Duration::from_secs(10)).await;

    let order = app.order_of(expiring).await;
    assert_eq!(order["status"], "EXPIRED");
    let stock = app.event(event).await;
    assert_eq!((stock.available_tickets, stock.pending_tickets), (3, 0));
    // Redis gets the tickets back too; then they sell again, to new buyers and
    // to the first ones (whose limit of one is free again).
    app.check_passes_within(Duration::from_secs(10)).await;
    let mut second_wave: Vec<_> = (0..3)
        .map(|i| (format!("second-{i}"), format!("key-{i}"), 1))
        .collect();
    second_wave.push((
        expiring.body["user_id"].as_str().unwrap().into(),
        "again".into(),
        1,
    ));
    let answers = app.storm(event, second_wave).await;
    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 3);
    assert_eq!(count(&answers, StatusCode::CONFLICT, "sold_out"), 1);
    app.check_passes_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sweepers_expire_each_order_once() {
    let app = spawn_app().await;
    let second = app.another_server(|_| {}).await;
    let third = app.another_server(|_| {}).await;
    let event = app.create_event_holding(300, 4, 1).await;

    let answers = storm(&[&app, &second, &third], event, distinct_buyers(300)).await;
    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 300);
    app.until_none_pending(Duration::from_secs(15)).await;

    let expired: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'EXPIRED'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(expired, 300);
    let stock = app.event(event).await;
    assert_eq!((stock.available_tickets, stock.pending_tickets), (300, 0));
    app.check_passes_within(Duration::from_secs(10)).await;
    assert_eq!(app.gate.observe(event).await.unwrap().stock, Some(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_return_reaches_redis_once_however_often_it_is_applied() {
    // No reconciler: Postgres knows nothing of this return, and a drift repair
    // would hide what Redis did.
    let app = spawn_app_with(|settings| settings.reconcile_every = None).await;
    let event = app.create_event(10, 4).await;
    let answer = app.order(event, "kim", "k", 2).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let stock_return = StockReturn {
        order_id: answer.order_id().parse().unwrap(),
        event_id: event,
        user_id: "kim".into(),
        quantity: 2,
    };

    // As if a process gave the tickets back and crashed before forgetting the
    // row, and another process and a retry gave them back again.
    let mut applied = Vec::new();
    for _ in 0..3 {
        applied.push(app.gate.restock(&stock_return).await.unwrap());
    }
    assert_eq!(
        applied,
        [
            Restock::Applied,
            Restock::AlreadyApplied,
            Restock::AlreadyApplied
        ]
    );

    eventually(Duration::from_secs(5), || async {
        let seen = app.gate.observe(event).await.unwrap();
        if seen.is_quiet() {
            Ok(())
        } else {
            Err(format!("the return never matured: {seen:?}"))
        }
    })
    .await;
    assert_eq!(app.gate.observe(event).await.unwrap().stock, Some(10));
    assert_eq!(restock_pending(&app.pool, &app.gate).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_orders_held_past_their_hold_until_a_sweeper_runs() {
    let app = spawn_app_with(|settings| settings.roles = vec![Role::Api]).await;
    let event = app.create_event(10, 4).await;
    let answer = app.order(event, "lee", "k", 1).await;
    app.check_passes_within(Duration::from_secs(10)).await;

    // A hold that ran out a minute ago, and no sweeper anywhere.
    sqlx::query("UPDATE orders SET expires_at = now() - interval '1 minute' WHERE id = $1::uuid")
        .bind(answer.order_id())
        .execute(&app.pool)
        .await
        .unwrap();
    let report = app.check().await;
    let stuck = report.finding(Invariant::NothingStuck).unwrap();
    assert_eq!(stuck.verdict, Verdict::Fail, "{report:#?}");
    assert!(stuck.examples[0].contains(answer.order_id()), "{stuck:?}");

    // Every process reports the sale's backlog, read from Postgres at the
    // scrape: the one order left PENDING.
    assert_eq!(app.metric("flashtix_orders_pending").await, 1);

    let sweeper = app
        .another_server(|settings| settings.roles = vec![Role::Sweeper])
        .await;
    let health = sweeper.get_json("/health").await;
    assert_eq!(health, json!({"status": "ok", "roles": ["sweeper"]}));
    assert_eq!(
        sweeper.get(&format!("/events/{event}")).await.status(),
        StatusCode::NOT_FOUND,
        "a sweeper does not serve the sale's API"
    );
    app.until_none_pending(Duration::from_secs(10)).await;
    assert_eq!(sweeper.metric("flashtix_orders_pending").await, 0);
    app.check_passes_within(Duration::from_secs(10)).await;
    assert_eq!(app.event(event).await.available_tickets, 10);
}
