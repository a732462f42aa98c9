//! Redis is only the gate: when it is wrong, flushed, leaks a hold or is gone,
//! Postgres still decides and Redis is brought back in line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flashtix_server::gate::clock_ms;
use flashtix_server::gate::reconcile::{reconcile_once, repair_drift, Repair, Reseed};
use flashtix_server::gate::{Admission, Hold};
use flashtix_server::invariants::{Invariant, Verdict};
use redis::AsyncCommands;
use reqwest::StatusCode;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::helpers::{
    buyer_token, count, distinct_buyers, eventually, spawn_app, spawn_app_with, Answer,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushed_mid_storm_never_oversells() {
    let app = spawn_app().await;
    let event = app.create_event(300, 4).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let first_answers = Arc::new(Notify::new());

    let mut storm = JoinSet::new();
    for (user, key, quantity) in distinct_buyers(1000) {
        let (answered, first_answers) = (Arc::clone(&answered), Arc::clone(&first_answers));
        let client = app.client.clone();
        let url = format!("{}/orders", app.address);
        storm.spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(buyer_token(&user))
                .header("Idempotency-Key", key)
                .json(
                    &serde_json::json!({"event_id": event, "user_id": user, "quantity": quantity}),
                )
                .send()
                .await
                .expect("POST /orders");
            if answered.fetch_add(1, Ordering::SeqCst) + 1 == 20 {
                first_answers.notify_one();
            }
            let status = response.status();
            Answer {
                status,
                replayed: false,
                body: response.json().await.expect("JSON"),
            }
        });
    }
    first_answers.notified().await;
    let deleted = app.gate.wipe().await.expect("flush the namespace");
    let answers = storm.join_all().await;

    assert!(deleted > 0, "the flush hit the event's keys");
    let accepted = count(&answers, StatusCode::ACCEPTED, "");
    let mut answered: Vec<_> = answers
        .iter()
        .map(|a| format!("{} {}", a.status, a.code()))
        .collect();
    answered.sort();
    answered.dedup();
    assert_eq!(accepted, 300, "every ticket sold, none twice: {answered:?}");
    assert_eq!(
        accepted + count(&answers, StatusCode::CONFLICT, "sold_out"),
        1000
    );
    assert_eq!(app.event(event).await.available_tickets, 0);
    assert_eq!(app.order_count().await, 300);
    app.check_passes_within(Duration::from_secs(15)).await;
    assert!(
        app.gate.observe(event).await.unwrap().stock.is_some(),
        "stock reseeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_right_after_a_flush_is_sold_a_ticket() {
    let app = spawn_app().await;
    let event = app.create_event(5, 4).await;
    app.gate.wipe().await.expect("flush the namespace");

    // The reseed puts the five tickets on their way back to stock; the buyer
    // waits for them instead of being told the event is sold out.
    let answer = app.order(event, "first", "k", 1).await;

    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    assert_eq!(app.event(event).await.available_tickets, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_on_its_way_back_is_waited_for_then_sold_once() {
    let app = spawn_app().await;
    let event = app.create_event(1, 4).await;
    let released = Hold {
        order_id: Uuid::now_v7(),
        event_id: event,
        user_id: "gone".into(),
        idempotency_key: "refused".into(),
        quantity: 1,
    };
    let admission = app.gate.reserve(&released, 4, "e1q1", clock_ms()).await;
    assert_eq!(admission.unwrap(), Admission::Reserved);
    assert!(app
        .gate
        .release(&released, released.quantity)
        .await
        .unwrap());
    let seen = app.gate.observe(event).await.unwrap();
    assert_eq!((seen.stock, seen.returning), (Some(0), 1));

    let answers = app.storm(event, distinct_buyers(20)).await;

    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 1);
    assert_eq!(count(&answers, StatusCode::CONFLICT, "sold_out"), 19);
    assert_eq!(app.event(event).await.available_tickets, 0);
}

/// Tickets trickle back (declined payments after a sell-out) while a crowd
/// waits for them: a buyer who keeps losing the race is told `sold_out` — not
/// `request_in_progress`, which would send them to retry a request nobody is
/// working on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_who_keeps_losing_the_returning_tickets_hears_sold_out() {
    let app = spawn_app().await;
    let tickets = 12;
    let event = app.create_event(tickets, 4).await;
    let mut holds = Vec::new();
    for i in 0..tickets {
        let hold = Hold {
            order_id: Uuid::now_v7(),
            event_id: event,
            user_id: format!("gone-{i}"),
            idempotency_key: "refused".into(),
            quantity: 1,
        };
        let admission = app.gate.reserve(&hold, 4, "e1q1", clock_ms()).await;
        assert_eq!(admission.unwrap(), Admission::Reserved);
        holds.push(hold);
    }
    // One back before the crowd comes, the rest one every 150 ms.
    assert!(app
        .gate
        .release(&holds[0], holds[0].quantity)
        .await
        .unwrap());
    let gate = app.gate.clone();
    let trickle = tokio::spawn(async move {
        for hold in &holds[1..] {
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert!(gate.release(hold, hold.quantity).await.unwrap());
        }
    });

    let answers = app.storm(event, distinct_buyers(80)).await;
    trickle.await.unwrap();

    let accepted = count(&answers, StatusCode::ACCEPTED, "");
    let sold_out = count(&answers, StatusCode::CONFLICT, "sold_out");
    let in_progress = count(&answers, StatusCode::CONFLICT, "request_in_progress");
    assert_eq!(
        (accepted + sold_out, in_progress),
        (80, 0),
        "{accepted} accepted, {sold_out} sold out"
    );
    assert!(accepted >= 1 && accepted <= tickets as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_what_an_inflated_redis_admits() {
    let app = spawn_app_with(|settings| settings.reconcile_every = None).await;
    let event = app.create_event(100, 4).await;
    app.gate.force_stock(event, 150).await.unwrap();

    let answers = app.storm(event, distinct_buyers(120)).await;

    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 100);
    assert_eq!(count(&answers, StatusCode::CONFLICT, "sold_out"), 20);
    assert_eq!(app.event(event).await.available_tickets, 0);
    // Redis admitted all 120: its stock is 30 where Postgres has 0.
    let report = app.check().await;
    let drift = report.finding(Invariant::RedisAgrees).unwrap();
    assert_eq!(drift.verdict, Verdict::Fail, "{report:#?}");
    assert!(drift.examples[0].contains("Redis stock 30"), "{drift:?}");
    assert_eq!(
        report
            .findings
            .iter()
            .filter(|f| f.verdict == Verdict::Fail)
            .count(),
        1
    );

    let repaired = repair_drift(&app.pool, &app.gate, event).await.unwrap();
    assert_eq!(repaired, Repair::Repaired { from: 30, to: 0 });
    assert_eq!(app.check().await.verdict, Verdict::Pass);
}

/// A server that cannot reach Redis sells a ticket Redis never hears of, so
/// Redis is one too high; then a request for more than Postgres has left is
/// admitted by Redis and refused by Postgres. Redis may keep the one it was
/// too high by, not the whole request: the next buyer gets one of the
/// tickets left, not `sold_out` (a lie, and lost revenue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_for_want_of_stock_never_leaves_redis_below_postgres() {
    // No reconciler: it would repair Redis in a quiet moment and hide it.
    let app = spawn_app_with(|settings| settings.reconcile_every = None).await;
    let blind = app
        .another_server(|settings| {
            settings.connections.redis_url = "redis://127.0.0.1:1".into();
            settings.reconcile_every = None;
        })
        .await;
    let event = app.create_event(10, 10).await;
    let first = app.order(event, "ann", "k-ann", 1).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let unheard = blind.order(event, "bob", "k-bob", 1).await;
    assert_eq!(unheard.status, StatusCode::ACCEPTED);
    assert_eq!(app.event(event).await.available_tickets, 8);
    assert_eq!(app.gate.observe(event).await.unwrap().stock, Some(9));

    let too_many = app.order(event, "cy", "k-cy", 9).await;
    assert_eq!(
        (too_many.status, too_many.code()),
        (StatusCode::CONFLICT, "sold_out")
    );

    let next = app.order(event, "dee", "k-dee", 1).await;
    assert_eq!(
        next.status,
        StatusCode::ACCEPTED,
        "told {:?} with 8 tickets left",
        next.code()
    );
    let rest = app.storm(event, distinct_buyers(7)).await;
    assert_eq!(count(&rest, StatusCode::ACCEPTED, ""), 7);
    assert_eq!(app.event(event).await.available_tickets, 0);
    assert_eq!(app.order_count().await, 10);
    // Redis sold what Postgres had, and ends where Postgres does. (Bob's
    // count and key it never heard of: the reconciler's to rebuild.)
    let seen = app.gate.observe(event).await.unwrap();
    assert_eq!((seen.stock, seen.returning), (Some(0), 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_repairs_drift_by_itself() {
    let app = spawn_app().await;
    let event = app.create_event(10, 4).await;
    app.order(event, "a", "k", 2).await;
    app.gate.force_stock(event, 3).await.unwrap();

    app.check_passes_within(Duration::from_secs(10)).await;
    assert_eq!(app.gate.observe(event).await.unwrap().stock, Some(8));
}

/// A request that reserved `quantity` tickets in Redis and died before
/// Postgres: buyer "ghost", key "lost", admitted ten seconds ago, no order
/// anywhere.
async fn leak_hold(app: &crate::helpers::TestApp, event: i64, quantity: i32) {
    let leaked = Hold {
        order_id: Uuid::now_v7(),
        event_id: event,
        user_id: "ghost".into(),
        idempotency_key: "lost".into(),
        quantity,
    };
    let fingerprint = format!("e{event}q{quantity}");
    let admission = app
        .gate
        .reserve(&leaked, 4, &fingerprint, clock_ms() - 10_000)
        .await
        .unwrap();
    assert_eq!(admission, Admission::Reserved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_leaked_by_a_crash_is_released() {
    let app = spawn_app().await;
    let event = app.create_event(5, 4).await;
    leak_hold(&app, event, 3).await;
    assert_eq!(app.gate.observe(event).await.unwrap().stock, Some(2));

    app.check_passes_within(Duration::from_secs(10)).await;
    let seen = app.gate.observe(event).await.unwrap();
    assert_eq!((seen.stock, seen.holds), (Some(5), 0));
    // The key was given back too: the buyer's retry buys.
    let retry = app.order(event, "ghost", "lost", 3).await;
    assert_eq!(
        (retry.status, retry.replayed),
        (StatusCode::ACCEPTED, false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_gone_postgres_alone_sells_exactly_the_stock() {
    let app = spawn_app_with(|settings| {
        // Nothing listens on port 1: every Redis call fails at once.
        settings.connections.redis_url = "redis://127.0.0.1:1".into();
    })
    .await;
    let event = app.create_event(5, 4).await;
    let mut buys = distinct_buyers(40);
    buys.push(("buyer-0".into(), "key-0".into(), 1));

    let answers = app.storm(event, buys).await;

    // Exactly five orders; any other 202 is buyer-0's double click replayed.
    let replays = answers.iter().filter(|a| a.replayed).count();
    assert!(replays <= 1);
    assert_eq!(count(&answers, StatusCode::ACCEPTED, ""), 5 + replays);
    assert_eq!(app.event(event).await.available_tickets, 0);
    assert_eq!(app.order_count().await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reseed_overlapping_a_cancellation_leaves_the_buyer_free_to_buy_again() {
    // No reconciler or sweeper: the test plays their steps in the bad order.
    let app = spawn_app_with(|settings| {
        settings.roles = vec![flashtix_model::Role::Api];
        settings.reconcile_every = None;
    })
    .await;
    let event = app.create_event(10, 1).await;
    let first = app.order(event, "una", "first", 1).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);

    // A reseed reads Postgres while the order is still live...
    let snapshot = flashtix_server::gate::reconcile::snapshot(&app.pool, event)
        .await
        .unwrap()
        .unwrap();
    // ...then the order is cancelled (its tickets back in Postgres, a stock
    // return written), Redis loses its keys, and the stock return is applied
    // before the reseed has written anything.
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query(
        "WITH cancelled AS (
            UPDATE orders SET status = 'CANCELLED' WHERE id = $1::uuid
            RETURNING id, event_id, user_id, quantity
         ), restocked AS (
            UPDATE events SET available_tickets = available_tickets + 1,
                              pending_tickets = pending_tickets - 1 WHERE id = $2
         )
         INSERT INTO stock_returns (order_id, event_id, user_id, quantity)
         SELECT id, event_id, user_id, quantity FROM cancelled",
    )
    .bind(first.order_id())
    .bind(event)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    app.gate.wipe().await.unwrap();
    flashtix_server::gate::reconcile::restock_pending(&app.pool, &app.gate)
        .await
        .unwrap();
    let lock = app.gate.lock_seeding(event).await.unwrap().unwrap();
    app.gate.seed(lock, &snapshot).await.unwrap();
    flashtix_server::gate::reconcile::restock_pending(&app.pool, &app.gate)
        .await
        .unwrap();

    // The timeline has when her tickets were back in Redis.
    let returned: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT returned_at FROM orders WHERE id = $1::uuid")
            .bind(first.order_id())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(returned.is_some(), "a stock return applied leaves its time");

    // Her ticket was given back, so her limit of one is free again.
    let again = app.order(event, "una", "second", 1).await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::ACCEPTED, ""),
        "{:?}",
        again.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_slower_than_the_hold_grace_never_commits_behind_a_released_hold() {
    let app = spawn_app().await;
    let event = app.create_event(1, 1).await;
    // Stall the order writer: the test holds the event's row lock, as a slow
    // batch of another process (or a stalled Postgres) would.
    let mut stall = app.pool.begin().await.unwrap();
    let staller: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *stall)
        .await
        .unwrap();
    sqlx::query("SELECT 1 FROM events WHERE id = $1 FOR UPDATE")
        .bind(event)
        .execute(&mut *stall)
        .await
        .unwrap();
    let (client, address) = (app.client.clone(), app.address.clone());
    let buying = tokio::spawn(async move {
        client
            .post(format!("{address}/orders"))
            .bearer_auth(buyer_token("a"))
            .header("Idempotency-Key", "ka")
            .json(&serde_json::json!({"event_id": event, "user_id": "a", "quantity": 1}))
            .send()
            .await
            .unwrap()
    });

    // Keep the batch waiting past the hold's grace, until the reconciler has
    // acted on the hold: released it, or queued behind the batch for the lock.
    eventually(Duration::from_secs(30), || async {
        let queued: i64 = sqlx::query_scalar(
            // Behind the stall, or behind one queued behind it (a second
            // waiter for a row queues on the first one's tuple lock).
            "WITH first AS (
                SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))
             )
             SELECT count(*) FROM pg_stat_activity a
             WHERE $1 = ANY(pg_blocking_pids(a.pid))
                OR EXISTS (SELECT 1 FROM first f WHERE f.pid = ANY(pg_blocking_pids(a.pid)))",
        )
        .bind(staller)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        let seen = app.gate.observe(event).await.unwrap();
        let released = seen.holds == 0 && seen.stock.is_some();
        match (queued, released) {
            (2.., _) | (1, true) => Ok(()),
            _ => Err(format!("{queued} waiting behind the stall; Redis {seen:?}")),
        }
    })
    .await;
    stall.commit().await.unwrap();
    let answer = buying.await.unwrap();

    let order: Option<Uuid> = sqlx::query_scalar("SELECT id FROM orders WHERE user_id = 'a'")
        .fetch_optional(&app.pool)
        .await
        .unwrap();
    let in_redis = app.gate.key_entry(event, "a", "ka").await.unwrap();
    match answer.status() {
        // The order won the lock: its hold was confirmed, Redis still knows it.
        StatusCode::ACCEPTED => assert_eq!(
            (in_redis, order.is_some()),
            (order, true),
            "an order committed after Redis gave its hold back"
        ),
        // The reconciler won: nothing written, the buyer may send it again.
        status => {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(order, None);
        }
    }
    app.check_passes_within(Duration::from_secs(10)).await;
}

/// A reseed that finds the event already seeded once it holds the lock
/// writes nothing: its snapshot of Postgres may be older than what Redis has
/// learnt since (here, a stock return that lowered the buyer's count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reseed_of_an_event_seeded_meanwhile_writes_nothing() {
    let app = spawn_app_with(|settings| {
        settings.roles = vec![flashtix_model::Role::Api];
        settings.reconcile_every = None;
    })
    .await;
    let event = app.create_event(10, 2).await;
    assert_eq!(
        app.order(event, "una", "first", 1).await.status,
        StatusCode::ACCEPTED
    );
    let mut redis = app.redis().await;
    let buyers = app.redis_key(event, "buyers");
    let () = redis.hset(&buyers, "una", 0).await.unwrap();

    let reseeded = flashtix_server::gate::reconcile::reseed(&app.pool, &app.gate, event)
        .await
        .unwrap();

    assert_eq!(reseeded, Reseed::Done { available: 9 });
    let held: i64 = redis.hget(&buyers, "una").await.unwrap();
    assert_eq!(held, 0, "the older snapshot (1 ticket) was not written");
}

/// One event whose row lock the reconciler cannot get (a long transaction
/// holds it while a leaked hold waits to be decided) is skipped: the other
/// events are still repaired in the same pass, and the pass reports the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_reconciler_cannot_lock_does_not_stop_the_others() {
    let app = spawn_app_with(|settings| settings.reconcile_every = None).await;
    let stuck = app.create_event(5, 4).await;
    let drifted = app.create_event(10, 4).await;
    leak_hold(&app, stuck, 1).await;
    app.gate.force_stock(drifted, 3).await.unwrap();
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM events WHERE id = $1 FOR UPDATE")
        .bind(stuck)
        .execute(&mut *lock)
        .await
        .unwrap();

    let metrics = flashtix_server::runtime::metrics::Metrics::default();
    let pass = reconcile_once(&app.pool, &app.gate, &metrics).await;

    assert!(pass.is_err(), "the stuck event's error is reported");
    eventually(Duration::from_secs(5), || async {
        match app.gate.observe(drifted).await.unwrap().stock {
            Some(10) => Ok(()),
            other => Err(format!("drifted event's stock {other:?}")),
        }
    })
    .await;
    lock.rollback().await.unwrap();
}

/// A hold given back without an order is on the sale's timeline, with whose
/// it was and how many tickets it held, dated after it was given back:
/// whether the reconciler found it lost or Postgres refused it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_given_back_without_an_order_are_recorded() {
    let app = spawn_app_with(|settings| settings.reconcile_every = None).await;
    let event = app.create_event(10, 4).await;
    let released = |id: Uuid| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_as::<
                _,
                (
                    Option<String>,
                    Option<String>,
                    Option<i32>,
                    chrono::DateTime<chrono::Utc>,
                ),
            >(
                "SELECT user_id, idempotency_key, quantity, released_at FROM released_holds
                 WHERE order_id = $1",
            )
            .bind(id)
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    };

    // A hold an hour old whose order never reached Postgres.
    let lost = Hold {
        order_id: Uuid::now_v7(),
        event_id: event,
        user_id: "lou".into(),
        idempotency_key: "lost".into(),
        quantity: 2,
    };
    let admitted = app
        .gate
        .reserve(&lost, 4, "fingerprint", clock_ms() - 3_600_000)
        .await
        .unwrap();
    assert!(matches!(admitted, Admission::Reserved), "{admitted:?}");
    let before = chrono::Utc::now();
    let reclaimed =
        flashtix_server::gate::reconcile::reclaim_stale_holds(&app.pool, &app.gate, event)
            .await
            .unwrap();
    assert_eq!(reclaimed, 1);
    let (user, key, quantity, at) = released(lost.order_id).await.expect("recorded");
    assert_eq!(
        (user.as_deref(), key.as_deref(), quantity),
        (Some("lou"), Some("lost"), Some(2))
    );
    assert!(
        at >= before,
        "dated after the release began: {at} < {before}"
    );

    // Redis one too high: Postgres refuses a request for all it shows.
    let other = app.create_event(5, 10).await;
    app.gate.force_stock(other, 6).await.unwrap();
    let refused = app.order(other, "cy", "all", 6).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::CONFLICT, "sold_out")
    );
    let recorded: (String, String, i32) = eventually(Duration::from_secs(10), || async {
        sqlx::query_as(
            "SELECT user_id, idempotency_key, quantity FROM released_holds
             WHERE event_id = $1 AND quantity IS NOT NULL",
        )
        .bind(other)
        .fetch_optional(&app.pool)
        .await
        .unwrap()
        .ok_or_else(|| "not recorded yet".to_owned())
    })
    .await;
    assert_eq!(recorded, ("cy".into(), "all".into(), 6));
}
