//! Each invariant `check` proves, seen FAIL on a state broken on purpose (and
//! PASS on the real one first): a checker never seen failing proves nothing.

use flashtix_model::Role;
use flashtix_server::gate::reconcile::{rebuild_drifted_entries, repair_drift, Repair};
use flashtix_server::invariants::{self, Finding, Invariant, Verdict};
use redis::AsyncCommands;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::helpers::{eventually, spawn_app, spawn_app_with, TestApp};

/// One finding of `check` for one event, with the queues "not used" unless
/// the test reaches them.
async fn finding(app: &TestApp, invariant: Invariant, event: Option<i64>) -> Finding {
    let report = invariants::check(&app.pool, &app.gate, Err("not asked".into()), None, event)
        .await
        .unwrap();
    report.finding(invariant).unwrap().clone()
}

/// The same, once it can be judged (Redis quiet, messages processed).
async fn judged(app: &TestApp, invariant: Invariant, event: Option<i64>) -> Finding {
    eventually(std::time::Duration::from_secs(10), || async {
        let found = finding(app, invariant, event).await;
        match found.verdict {
            Verdict::Unknown => Err(format!("{found:?}")),
            _ => Ok(found),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_duplicate_order_fails_without_its_constraint_and_on_a_second_order() {
    let app = spawn_app().await;
    let event = app.create_event(10, 4).await;
    assert_eq!(
        app.order(event, "ann", "k", 1).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        finding(&app, Invariant::NoDuplicateOrder, None)
            .await
            .verdict,
        Verdict::Pass
    );

    sqlx::query("ALTER TABLE orders DROP CONSTRAINT orders_one_per_idempotency_key")
        .execute(&app.pool)
        .await
        .unwrap();
    let unguarded = finding(&app, Invariant::NoDuplicateOrder, None).await;
    assert_eq!(unguarded.verdict, Verdict::Fail);
    assert!(unguarded.examples[0].contains("missing"), "{unguarded:?}");

    sqlx::query(
        "INSERT INTO orders (id, event_id, user_id, idempotency_key, fingerprint, quantity,
                             amount_cents, expires_at)
         VALUES ($1, $2, 'ann', 'k', 'x', 1, 0, now() + interval '1 hour')",
    )
    .bind(Uuid::now_v7())
    .bind(event)
    .execute(&app.pool)
    .await
    .unwrap();
    let doubled = finding(&app, Invariant::NoDuplicateOrder, None).await;
    assert_eq!(doubled.offending, 2, "{doubled:?}");
    assert!(doubled.examples[1].contains("user \"ann\" key \"k\": 2 orders"));
}

/// An order's `order.created` row, published `age_seconds` ago.
async fn published(app: &TestApp, order_id: &str, age_seconds: i64) -> Uuid {
    let message_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO outbox (message_id, topic, payload, created_at, published_at)
         VALUES ($1, 'order.created',
                 jsonb_build_object('orders', jsonb_build_array(
                     jsonb_build_object('order_id', $2::text))),
                 now() - make_interval(secs => $3), now() - make_interval(secs => $3))",
    )
    .bind(message_id)
    .bind(order_id)
    .bind(age_seconds as f64)
    .execute(&app.pool)
    .await
    .unwrap();
    message_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_drained_passes_only_on_proof_from_the_database() {
    let app = spawn_app().await;
    let event = app.create_event(10, 4).await;
    let order = app.order(event, "bea", "k", 1).await;
    // No relay runs in this app: the outbox row of the order is unpublished.
    let broker_down = finding(&app, Invariant::QueuesDrained, None).await;
    assert_eq!(broker_down.verdict, Verdict::Unknown, "{broker_down:?}");
    assert!(broker_down.examples[0].contains("not reachable"));

    let processed = published(&app, order.order_id(), 60).await;
    sqlx::query("INSERT INTO processed_messages (consumer, message_id) VALUES ('payments', $1)")
        .bind(processed)
        .execute(&app.pool)
        .await
        .unwrap();
    let young = published(&app, order.order_id(), 1).await;
    let in_flight = finding(&app, Invariant::QueuesDrained, None).await;
    assert_eq!(in_flight.verdict, Verdict::Unknown);
    assert!(in_flight
        .examples
        .iter()
        .any(|e| e.contains(&young.to_string())));

    // Processed or not is all the database can tell: an old unprocessed
    // message may be held through an outage, so it keeps the verdict from
    // PASS, named, but is not FAIL (dead letters are: see the saga tests).
    let old = published(&app, order.order_id(), 60).await;
    let unproven = finding(&app, Invariant::QueuesDrained, Some(event)).await;
    assert_eq!(unproven.verdict, Verdict::Unknown, "{unproven:?}");
    assert!(unproven
        .examples
        .iter()
        .any(|e| e.contains(&format!("message {old} (order.created)"))
            && e.contains("not processed by payments")));
    // Another event's check does not see them: only the broker is unknown.
    let other = app.create_event(10, 4).await;
    let elsewhere = finding(&app, Invariant::QueuesDrained, Some(other)).await;
    assert_eq!(elsewhere.offending, 1, "{elsewhere:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_stuck_for_one_event_sees_its_payment_results() {
    let app = spawn_app().await;
    let event = app.create_event(10, 4).await;
    let order = app.order(event, "cal", "k", 1).await;
    // The order's own order.created row is young; nothing is stuck yet.
    assert_eq!(
        finding(&app, Invariant::NothingStuck, Some(event))
            .await
            .verdict,
        Verdict::Pass
    );

    // A payment.result (its entries name orders, not the event) left
    // unpublished for a minute.
    sqlx::query(
        "INSERT INTO outbox (message_id, topic, payload, created_at)
         VALUES ($1, 'payment.result',
                 jsonb_build_object('orders', jsonb_build_array(
                     jsonb_build_object('order_id', $2::text, 'outcome', 'SUCCEEDED',
                                        'amount_cents', 2500))),
                 now() - interval '1 minute')",
    )
    .bind(Uuid::now_v7())
    .bind(order.order_id())
    .execute(&app.pool)
    .await
    .unwrap();
    let stuck = finding(&app, Invariant::NothingStuck, Some(event)).await;
    assert_eq!(stuck.verdict, Verdict::Fail, "{stuck:?}");
    assert!(stuck.examples[0].contains("(payment.result): unpublished"));
}

/// Redis's buyers and keys are compared with Postgres, entry by entry; the
/// drift repair rebuilds an event whose totals do not add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_agrees_fails_on_a_buyer_or_key_redis_got_wrong_and_the_repair_rebuilds_them() {
    let app = spawn_app_with(|settings| settings.reconcile_every = None).await;
    let event = app.create_event(10, 4).await;
    for (user, key, quantity) in [("ann", "k1", 2), ("bob", "k2", 1)] {
        let placed = app.order(event, user, key, quantity).await;
        assert_eq!(placed.status, StatusCode::ACCEPTED);
    }
    assert_eq!(
        judged(&app, Invariant::RedisAgrees, Some(event))
            .await
            .verdict,
        Verdict::Pass
    );

    let mut redis = app.redis().await;
    let key = |name: &str| app.redis_key(event, name);
    let () = redis.hset(key("buyers"), "ann", 1).await.unwrap();
    let () = redis.hdel(key("keys"), "bob\nk2").await.unwrap();
    let () = redis
        .hset(key("keys"), "eve\nk9", format!("{}\nfp", Uuid::now_v7()))
        .await
        .unwrap();

    let drift = judged(&app, Invariant::RedisAgrees, Some(event)).await;
    assert_eq!(drift.verdict, Verdict::Fail, "{drift:?}");
    let examples = drift.examples.join("\n");
    for expected in [
        "buyer \"ann\" holds 2 ticket(s) in Postgres, 1 in Redis",
        "key (\"bob\", \"k2\") has order",
        "no entry in Redis",
        "key (\"eve\", \"k9\") has an entry in Redis and no order in Postgres",
    ] {
        assert!(examples.contains(expected), "{expected}: {examples}");
    }

    // The reconciler's pass sees the buyers' total differ and rebuilds.
    let repaired = repair_drift(&app.pool, &app.gate, event).await.unwrap();
    assert_eq!(
        repaired,
        Repair::Rebuilt {
            reason: "buyers hold 2 ticket(s) in Redis, 3 in Postgres".into()
        }
    );
    assert_eq!(
        judged(&app, Invariant::RedisAgrees, Some(event))
            .await
            .verdict,
        Verdict::Pass
    );
    // Rebuilt, the keys answer as before: bob's retry is his order again.
    let retry = app.order(event, "bob", "k2", 1).await;
    assert_eq!((retry.status, retry.replayed), (StatusCode::ACCEPTED, true));
}

/// An idempotency entry missing while every buyer's tickets add up (an
/// order written while Redis was reseeded after losing its keys, then
/// cancelled) is seen by the reconciler's pass by the number of entries,
/// and the event rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_with_the_tickets_in_balance_is_rebuilt_by_the_reconciler() {
    let app = spawn_app_with(|settings| settings.reconcile_every = None).await;
    let event = app.create_event(10, 4).await;
    for (user, key) in [("ann", "k1"), ("bob", "k2")] {
        let placed = app.order(event, user, key, 1).await;
        assert_eq!(placed.status, StatusCode::ACCEPTED);
    }
    let mut redis = app.redis().await;
    let () = redis
        .hdel(app.redis_key(event, "keys"), "bob\nk2")
        .await
        .unwrap();
    let drift = judged(&app, Invariant::RedisAgrees, Some(event)).await;
    assert_eq!(drift.verdict, Verdict::Fail, "{drift:?}");

    let repaired = repair_drift(&app.pool, &app.gate, event).await.unwrap();
    assert_eq!(
        repaired,
        Repair::Rebuilt {
            reason: "1 idempotency entries in Redis, 2 orders in Postgres".into()
        }
    );
    assert_eq!(
        judged(&app, Invariant::RedisAgrees, Some(event))
            .await
            .verdict,
        Verdict::Pass
    );
}

/// Keys that differ while every buyer's count adds up escape the
/// reconciler's pass (it compares totals); `check` sees them entry by entry,
/// and `check --repair` rebuilds the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_drift_the_totals_miss_is_seen_by_check_and_rebuilt_on_demand() {
    let app = spawn_app_with(|settings| settings.reconcile_every = None).await;
    let event = app.create_event(10, 4).await;
    let placed = app.order(event, "bob", "k2", 1).await;
    assert_eq!(placed.status, StatusCode::ACCEPTED);
    assert_eq!(
        judged(&app, Invariant::RedisAgrees, Some(event))
            .await
            .verdict,
        Verdict::Pass
    );
    let mut redis = app.redis().await;
    let keys = app.redis_key(event, "keys");
    let () = redis.hdel(&keys, "bob\nk2").await.unwrap();
    let () = redis
        .hset(&keys, "eve\nk9", format!("{}\nfp", Uuid::now_v7()))
        .await
        .unwrap();

    let pass = repair_drift(&app.pool, &app.gate, event).await.unwrap();
    assert_eq!(pass, Repair::InSync, "the totals agree");
    let drift = judged(&app, Invariant::RedisAgrees, Some(event)).await;
    assert_eq!(drift.verdict, Verdict::Fail, "{drift:?}");
    assert_eq!(drift.offending, 2, "{drift:?}");

    let rebuilt = rebuild_drifted_entries(&app.pool, &app.gate, event)
        .await
        .unwrap();
    assert!(
        matches!(&rebuilt, Repair::Rebuilt { reason } if reason.starts_with("2 entries differ")),
        "{rebuilt:?}"
    );
    assert_eq!(
        judged(&app, Invariant::RedisAgrees, Some(event))
            .await
            .verdict,
        Verdict::Pass
    );
}

/// Puts a broken seating state right with `sql` (binding `value`): the
/// finding passes again.
async fn repaired(app: &TestApp, sql: &str, value: &str) {
    sqlx::query(sql)
        .bind(value)
        .execute(&app.pool)
        .await
        .unwrap();
    let again = finding(app, Invariant::OneOwnerPerSeat, None).await;
    assert_eq!(again.verdict, Verdict::Pass, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_owner_per_seat_fails_on_a_seat_sold_twice_and_on_seat_rows_that_disagree() {
    let app = spawn_app().await;
    let event = app
        .create_seated_event(serde_json::json!("A:1x4@100,GA:2@50"), 4)
        .await;
    let ann = app
        .buy(
            event,
            "ann",
            "k",
            serde_json::json!({"seats": ["A-1-1", "A-1-2"]}),
        )
        .await;
    assert_eq!(ann.status, StatusCode::ACCEPTED);
    let ann = ann.order_id().to_owned();
    let bob = app
        .buy(
            event,
            "bob",
            "k",
            serde_json::json!({"zone": "GA", "quantity": 2}),
        )
        .await;
    assert_eq!(bob.status, StatusCode::ACCEPTED);
    let sound = finding(&app, Invariant::OneOwnerPerSeat, None).await;
    assert_eq!(sound.verdict, Verdict::Pass, "{sound:?}");
    assert_eq!(sound.checked, 4, "every seat row looked at");

    let broken = |sql: &'static str| {
        let pool = app.pool.clone();
        async move { sqlx::query(sql).execute(&pool).await.unwrap() }
    };
    let insert_order = |seats: Option<Vec<&'static str>>, zone: Option<&'static str>| {
        let pool = app.pool.clone();
        async move {
            let id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO orders (id, event_id, user_id, idempotency_key, fingerprint, quantity,
                                     amount_cents, expires_at, seats, zone)
                 VALUES ($1, $2, 'eve', $1::text, 'x', $3, 0, now() + interval '1 hour', $4, $5)",
            )
            .bind(id)
            .bind(event)
            .bind(seats.as_ref().map_or(1, |s| s.len() as i32))
            .bind(seats)
            .bind(zone)
            .execute(&pool)
            .await
            .unwrap();
            id
        }
    };

    // A writer that skipped the seat rows: a second live order on A-1-2.
    let twice = insert_order(Some(vec!["A-1-2"]), None).await;
    let sold_twice = finding(&app, Invariant::OneOwnerPerSeat, None).await;
    assert_eq!(sold_twice.verdict, Verdict::Fail);
    let said = sold_twice.examples.join("\n");
    assert!(
        said.contains("seat A-1-2: named by 2 live orders"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "order {twice}: names seat A-1-2, which the seat rows give to order {ann}"
        )),
        "{said}"
    );
    repaired(
        &app,
        "DELETE FROM orders WHERE id = $1::text::uuid",
        &twice.to_string(),
    )
    .await;

    // A seat row freed while its order still holds it.
    broken("UPDATE seats SET order_id = NULL WHERE seat_id = 'A-1-1'").await;
    let freed = finding(&app, Invariant::OneOwnerPerSeat, None).await;
    assert!(
        freed
            .examples
            .join("\n")
            .contains("which the seat rows show free"),
        "{freed:?}"
    );
    repaired(
        &app,
        "UPDATE seats SET order_id = $1::uuid WHERE seat_id = 'A-1-1'",
        &ann,
    )
    .await;

    // An order cancelled without freeing its seats.
    broken("ALTER TABLE orders DISABLE TRIGGER orders_free_seats").await;
    sqlx::query("UPDATE orders SET status = 'CANCELLED' WHERE id = $1::uuid")
        .bind(&ann)
        .execute(&app.pool)
        .await
        .unwrap();
    let kept = finding(&app, Invariant::OneOwnerPerSeat, None).await;
    assert_eq!(kept.offending, 2, "both its seats: {kept:?}");
    assert!(kept.examples[0].contains("a CANCELLED order"), "{kept:?}");
    broken("UPDATE seats SET order_id = NULL").await;

    // Standing sold past the zone's capacity.
    insert_order(None, Some("GA")).await;
    let over = finding(&app, Invariant::OneOwnerPerSeat, None).await;
    assert_eq!(over.verdict, Verdict::Fail);
    assert!(
        over.examples[0].contains("zone GA: 3 live tickets over its capacity of 2"),
        "{over:?}"
    );
}

/// Orders bought by count, by zone and by seat cost their price; an amount
/// off by a cent, a provider charge for an order we do not have, and a
/// refund without a capture each FAIL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_match_orders_fails_on_a_wrong_amount_a_stray_charge_and_a_refund_without_a_capture(
) {
    // No payment worker: no capture races the forged refund.
    let app = spawn_app_with(|settings| {
        settings.roles = vec![
            Role::Api,
            Role::Sweeper,
            Role::Relay,
            Role::Orders,
            Role::Notifications,
        ]
    })
    .await;
    let counted = app.create_event(10, 4).await;
    let seated = app
        .create_seated_event(serde_json::json!("A:1x6@700,GA:10@300"), 4)
        .await;
    let mut orders = Vec::new();
    for (event, user, what) in [
        (counted, "ann", serde_json::json!({"quantity": 2})),
        (
            seated,
            "bob",
            serde_json::json!({"seats": ["A-1-1", "A-1-2"]}),
        ),
        (
            seated,
            "cat",
            serde_json::json!({"zone": "GA", "quantity": 3}),
        ),
    ] {
        let answer = app.buy(event, user, "k", what).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
        orders.push(answer.order_id().parse::<Uuid>().unwrap());
    }
    let real = finding(&app, Invariant::ChargesMatchOrders, None).await;
    assert_eq!((real.verdict, real.checked), (Verdict::Pass, 3), "{real:?}");

    let run = |sql: &'static str, id: Uuid| {
        let pool = app.pool.clone();
        async move {
            sqlx::query(sql).bind(id).execute(&pool).await.unwrap();
        }
    };
    run(
        "UPDATE orders SET amount_cents = amount_cents + 1 WHERE id = $1",
        orders[1],
    )
    .await;
    let stray = Uuid::now_v7();
    run(
        "INSERT INTO provider_ledger (order_id, kind, outcome, amount_cents)
         VALUES ($1, 'CAPTURE', 'SUCCEEDED', 500)",
        stray,
    )
    .await;
    run(
        "INSERT INTO payments (id, order_id, kind, outcome, amount_cents)
         VALUES (gen_random_uuid(), $1, 'REFUND', 'SUCCEEDED', 900)",
        orders[2],
    )
    .await;
    let broken = finding(&app, Invariant::ChargesMatchOrders, None).await;
    assert_eq!(broken.verdict, Verdict::Fail, "{broken:?}");
    let examples = broken.examples.join("\n");
    for says in [
        format!(
            "order {}: 1401 cents for 2 ticket(s) priced 1400 cents",
            orders[1]
        ),
        format!(
            "provider capture of 500 cents (succeeded) for order {stray}, which we do not have"
        ),
        format!(
            "order {}: we refunded 900 cents without a capture",
            orders[2]
        ),
    ] {
        assert!(examples.contains(&says), "expected {says:?} in {broken:?}");
    }
    // The counted event's order is fine; the stray charge names no event.
    let counted_only = finding(&app, Invariant::ChargesMatchOrders, Some(counted)).await;
    assert_eq!(counted_only.offending, 1, "{counted_only:?}");
}
