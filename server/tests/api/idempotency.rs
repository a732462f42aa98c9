//! Idempotency keys: a replay answers the first answer, a reuse is refused.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;

use flashtix_server::gate::clock_ms;
use flashtix_server::gate::{Admission, Hold};
use uuid::Uuid;

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::helpers::{buyer_token, count, eventually, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_a_hundred_times_at_once_makes_one_order() {
    let app = spawn_app().await;
    let event = app.create_event(50, 4).await;
    let buys = vec![("dave".to_string(), "double-click".to_string(), 1); 100];

    let answers = app.storm(event, buys).await;

    let accepted: Vec<_> = answers
        .iter()
        .filter(|a| a.status == StatusCode::ACCEPTED)
        .collect();
    let in_progress = count(&answers, StatusCode::CONFLICT, "request_in_progress");
    assert_eq!(accepted.len() + in_progress, 100, "{answers:?}");
    let ids: HashSet<&str> = accepted.iter().map(|a| a.order_id()).collect();
    assert_eq!(ids.len(), 1, "every answer names the same order");
    assert_eq!(
        accepted.iter().filter(|a| !a.replayed).count(),
        1,
        "one answer created it"
    );
    assert_eq!(app.order_count().await, 1);
    assert_eq!(app.event(event).await.available_tickets, 49);
    app.check_passes_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_returns_the_first_answer_and_reuse_is_refused() {
    let app = spawn_app().await;
    let event = app.create_event(10, 4).await;
    let other_event = app.create_event(10, 4).await;

    let first = app.order(event, "erin", "k", 2).await;
    let again = app.order(event, "erin", "k", 2).await;
    let other_quantity = app.order(event, "erin", "k", 1).await;
    let other_event_same_key = app.order(other_event, "erin", "k", 2).await;

    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert!(!first.replayed);
    assert_eq!((again.status, again.replayed), (StatusCode::ACCEPTED, true));
    assert_eq!(again.body, first.body);
    for reuse in [&other_quantity, &other_event_same_key] {
        assert_eq!(
            (reuse.status, reuse.code()),
            (StatusCode::CONFLICT, "idempotency_key_reused")
        );
    }
    assert_eq!(app.order_count().await, 1);
    assert_eq!(app.event(event).await.available_tickets, 8);
    assert_eq!(app.event(other_event).await.available_tickets, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_sell_out_still_gets_its_order() {
    let app = spawn_app().await;
    let event = app.create_event(1, 4).await;

    let first = app.order(event, "frank", "k", 1).await;
    let late = app.order(event, "gina", "k", 1).await;
    let replay = app.order(event, "frank", "k", 1).await;

    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(late.code(), "sold_out");
    assert_eq!(
        (replay.status, replay.replayed),
        (StatusCode::ACCEPTED, true)
    );
    assert_eq!(replay.order_id(), first.order_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_per_user() {
    let app = spawn_app().await;
    let event = app.create_event(10, 4).await;

    let a = app.order(event, "user-a", "same-key", 1).await;
    let b = app.order(event, "user-b", "same-key", 1).await;

    assert_eq!(
        (a.status, b.status),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED)
    );
    assert_ne!(a.order_id(), b.order_id());
    assert!(!b.replayed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_can_be_retried_with_its_key() {
    let app = spawn_app().await;
    let event = app.create_event(5, 1).await;

    assert_eq!(
        app.order(event, "hal", "k1", 1).await.status,
        StatusCode::ACCEPTED
    );
    let over = app.order(event, "hal", "k2", 1).await;
    assert_eq!(over.code(), "limit_exceeded");
    // Nothing was recorded for k2: the same request is judged afresh, and refused
    // again for the same reason rather than replayed or marked in progress.
    let again = app.order(event, "hal", "k2", 1).await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::CONFLICT, "limit_exceeded")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_are_answered_while_sold_out_comes_from_memory() {
    let app = spawn_app().await;
    let event = app.create_event(2, 4).await;
    let first = app.order(event, "ann", "k", 1).await;
    let second = app.order(event, "bob", "k", 1).await;

    // Sell-out answers soon come from memory, not Redis.
    let late_buyers = AtomicUsize::new(0);
    eventually(Duration::from_secs(10), || async {
        let late_buyer = late_buyers.fetch_add(1, Ordering::Relaxed);
        let late = app
            .order(event, &format!("late-{late_buyer}"), "k", 1)
            .await;
        assert_eq!(late.code(), "sold_out");
        match app.metric("flashtix_sold_out_from_memory_total").await {
            0 => Err("never answered from memory".to_string()),
            _ => Ok(()),
        }
    })
    .await;

    for original in [&first, &second] {
        let user = original.body["user_id"].as_str().unwrap();
        let replay = app.order(event, user, "k", 1).await;
        assert_eq!(
            (replay.status, replay.replayed),
            (StatusCode::ACCEPTED, true)
        );
        assert_eq!(replay.order_id(), original.order_id());
    }
    assert_eq!(
        app.order(event, "late-new", "k", 1).await.code(),
        "sold_out"
    );
    assert_eq!(app.order_count().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_still_being_processed_answers_request_in_progress() {
    let app = spawn_app().await;
    let event = app.create_event(5, 4).await;
    // The first request with this key was admitted by Redis a moment ago and has
    // not reached Postgres (another process, still working on it).
    let first = Hold {
        order_id: Uuid::now_v7(),
        event_id: event,
        user_id: "ivy".into(),
        idempotency_key: "k".into(),
        quantity: 1,
    };
    let fingerprint = format!("e{event}q1");
    let admission = app
        .gate
        .reserve(&first, 4, &fingerprint, clock_ms())
        .await
        .unwrap();
    assert_eq!(admission, Admission::Reserved);

    let response = app
        .client
        .post(format!("{}/orders", app.address))
        .bearer_auth(buyer_token("ivy"))
        .header("Idempotency-Key", "k")
        .json(&serde_json::json!({"event_id": event, "user_id": "ivy", "quantity": 1}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_in_progress");
    assert_eq!(app.order_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_any_printable_text_is_a_key() {
    let app = spawn_app().await;
    let event = app.create_event(10, 4).await;
    let send = |key: &'static [u8]| {
        app.client
            .post(format!("{}/orders", app.address))
            .bearer_auth(buyer_token("zoé"))
            .header(
                "Idempotency-Key",
                reqwest::header::HeaderValue::from_bytes(key).unwrap(),
            )
            .json(&serde_json::json!({"event_id": event, "user_id": "zoé", "quantity": 1}))
            .send()
    };

    let first = send("clé-été".as_bytes()).await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let again = send("clé-été".as_bytes()).await.unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert!(again.headers().contains_key("idempotent-replayed"));
    // Bytes that are not text are still refused, and change nothing.
    let garbled = send(b"cl\xe9").await.unwrap();
    assert_eq!(garbled.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.order_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_asked_about_many_times_at_once_is_found_every_time() {
    let app = spawn_app().await;
    let event = app.create_event(10, 4).await;
    let answer = app.order(event, "dora", "k", 1).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let lookup = flashtix_server::orders::lookup::KeyLookup::start(app.pool.clone());

    // Fifty lookups of one key, queued together: one query answers them all.
    let found = futures_util::future::join_all((0..50).map(|_| lookup.find("dora", "k"))).await;

    for order in found {
        let order = order.unwrap().expect("the key's order, every time");
        assert_eq!(order.order_id.to_string(), answer.order_id());
    }
}
