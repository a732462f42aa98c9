//! "Refusals were true": every sold_out and limit_exceeded was true at some
//! moment of its flight, on the sale's timeline. Real refusals PASS; forged
//! ones (a sold_out while stock was ample, a limit_exceeded to a buyer who
//! owns nothing) FAIL; what the timeline counts as spoken for (a hold given
//! back without an order, an order's tickets until they were back in Redis)
//! is seen to count.

use chrono::{Duration, Utc};
use flashtix_model::history::{Attempt, Outcome};
use flashtix_server::invariants::{Finding, Invariant, Verdict};
use reqwest::StatusCode;
use uuid::Uuid;

use crate::helpers::{spawn_app, TestApp};
use crate::history::{assert_history_fails, attempt, history_finding};

/// Sends one order of `quantity` and writes its attempt as a storm would.
async fn asked(app: &TestApp, event: i64, user: &str, key: &str, quantity: i64) -> Attempt {
    let sent_at = Utc::now();
    let answer = app.order(event, user, key, quantity).await;
    let outcome = match (answer.status, answer.code()) {
        (StatusCode::ACCEPTED, _) => Outcome::Accepted,
        (_, "sold_out") => Outcome::SoldOut,
        (_, "limit_exceeded") => Outcome::LimitExceeded,
        (status, code) => panic!("unexpected answer {status} {code}"),
    };
    Attempt {
        quantity,
        sent_at,
        finished_at: Utc::now(),
        status: Some(answer.status.as_u16()),
        ..attempt(event, 0, user, key, outcome, answer.order_id().parse().ok())
    }
}

/// A refusal of `quantity` whose flight was `[at, at + 5 ms]`.
fn forged(
    event: i64,
    user: &str,
    outcome: Outcome,
    quantity: i64,
    at: chrono::DateTime<Utc>,
) -> Attempt {
    Attempt {
        quantity,
        sent_at: at,
        finished_at: at + Duration::milliseconds(5),
        status: Some(409),
        ..attempt(event, 9, user, "forged", outcome, None)
    }
}

async fn judged(app: &TestApp, history: &[Attempt]) -> Finding {
    history_finding(app, history, Invariant::RefusalsWereTrue).await
}

async fn assert_fails(app: &TestApp, history: &[Attempt], says: &str) {
    assert_history_fails(app, history, Invariant::RefusalsWereTrue, says).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_held_to_the_timeline() {
    let app = spawn_app().await;
    let event = app.create_event(4, 2).await;
    let before = Utc::now() - Duration::seconds(2);
    let mut history = vec![
        asked(&app, event, "ann", "a", 2).await,
        asked(&app, event, "bob", "b", 2).await,
        // Real refusals: nothing left; ann already holds her two.
        asked(&app, event, "cat", "c", 1).await,
        asked(&app, event, "ann", "a2", 1).await,
    ];
    let outcomes: Vec<Outcome> = history.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Accepted,
            Outcome::Accepted,
            Outcome::SoldOut,
            Outcome::SoldOut
        ],
        "the fourth is sold out before the limit is looked at"
    );
    let real = judged(&app, &history).await;
    assert_eq!((real.verdict, real.checked), (Verdict::Pass, 2), "{real:?}");

    // Before anyone bought, all four were for sale, and dan held nothing.
    history.push(forged(event, "eve", Outcome::SoldOut, 2, before));
    history.push(forged(event, "dan", Outcome::LimitExceeded, 1, Utc::now()));
    let lies = judged(&app, &history).await;
    assert_eq!(lies.offending, 2, "{lies:?}");
    assert!(lies.examples[0].contains("user \"dan\" key \"forged\": told limit_exceeded for 1"));
    assert!(lies.examples[0].contains("holding at most 0 of the 2 allowed"));
    assert!(lies.examples[1].contains("user \"eve\" key \"forged\": told sold_out for 2"));
    assert!(lies.examples[1].contains("at least 4 were for sale the whole time"));
    assert!(lies.detail.contains("within 100 ms"), "{lies:?}");
}

/// A hold given back without an order counts from its admission until it
/// was given back (and matured); an order's tickets until they were back in
/// Redis (and matured). Past those, a sold_out is a lie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_spoken_for_counts_until_it_was_for_sale_again() {
    let app = spawn_app().await;
    let event = app.create_event(3, 4).await;
    // A hold for all three admitted 10 s ago, given back 5 s ago.
    let hold = Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        (Utc::now() - Duration::seconds(10)).timestamp() as u64,
        0,
    ));
    sqlx::query(
        "INSERT INTO released_holds (order_id, event_id, user_id, idempotency_key, quantity,
                                     released_at)
         VALUES ($1, $2, 'zed', 'z', 3, now() - interval '5 seconds')",
    )
    .bind(hold)
    .bind(event)
    .execute(&app.pool)
    .await
    .unwrap();
    let at = |seconds_ago: i64| Utc::now() - Duration::seconds(seconds_ago);
    let during = forged(event, "amy", Outcome::SoldOut, 1, at(7));
    let real = judged(&app, std::slice::from_ref(&during)).await;
    assert_eq!(real.verdict, Verdict::Pass, "{real:?}");
    // Its own hold does not make a refusal true.
    let own = Attempt {
        user_id: "zed".into(),
        idempotency_key: "z".into(),
        ..during.clone()
    };
    assert_fails(&app, &[own], "user \"zed\" key \"z\": told sold_out").await;
    assert_fails(
        &app,
        &[forged(event, "amy", Outcome::SoldOut, 1, at(3))],
        "at least 3 were for sale",
    )
    .await;

    // An order for two that ended unpaid, its tickets back in Redis 3 s
    // after it was made: spoken for until then (and the return's delay).
    let order = asked(&app, event, "ben", "b", 2).await;
    sqlx::query(
        "UPDATE orders SET status = 'EXPIRED', updated_at = now(),
                           returned_at = created_at + interval '3 seconds' WHERE id = $1",
    )
    .bind(order.order_id.unwrap())
    .execute(&app.pool)
    .await
    .unwrap();
    let made = order.finished_at;
    let not_back_yet = forged(
        event,
        "cy",
        Outcome::SoldOut,
        2,
        made + Duration::seconds(1),
    );
    let held = judged(&app, &[not_back_yet]).await;
    assert_eq!(held.verdict, Verdict::Pass, "{held:?}");
    assert_fails(
        &app,
        &[forged(
            event,
            "cy",
            Outcome::SoldOut,
            2,
            made + Duration::seconds(5),
        )],
        "user \"cy\" key \"forged\": told sold_out for 2",
    )
    .await;
}

/// A zone's refusal is held to the zone: sold out when its places were
/// gone (PASS), a lie while they were all free (FAIL), on standing and on
/// reserved zones alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_refusal_is_held_to_the_zone() {
    let app = spawn_app().await;
    let event = app
        .create_seated_event(serde_json::json!("A:1x6@100,GA:4@50"), 10)
        .await;
    let zone_request = |user: &'static str, zone: &'static str, quantity: i64| {
        let app = &app;
        async move {
            let sent_at = Utc::now();
            let answer = app
                .buy(
                    event,
                    user,
                    "k",
                    serde_json::json!({"zone": zone, "quantity": quantity}),
                )
                .await;
            let outcome = match (answer.status, answer.code()) {
                (StatusCode::ACCEPTED, _) => Outcome::Accepted,
                (_, "zone_sold_out" | "sold_out") => Outcome::SoldOut,
                (status, code) => panic!("unexpected answer {status} {code}"),
            };
            Attempt {
                quantity,
                sent_at,
                finished_at: Utc::now(),
                asked_zone: Some(zone.into()),
                ..attempt(event, 0, user, "k", outcome, answer.order_id().parse().ok())
            }
        }
    };
    let before = Utc::now() - Duration::seconds(2);
    let history = vec![
        zone_request("ann", "GA", 4).await,
        zone_request("bob", "GA", 1).await,
    ];
    assert_eq!(history[1].outcome, Outcome::SoldOut, "{history:?}");
    let real = judged(&app, &history).await;
    assert_eq!((real.verdict, real.checked), (Verdict::Pass, 1), "{real:?}");

    for (zone, quantity) in [("GA", 1), ("A", 2)] {
        let lie = Attempt {
            asked_zone: Some(zone.into()),
            ..forged(event, "cat", Outcome::SoldOut, quantity, before)
        };
        assert_fails(&app, &[lie], "user \"cat\" key \"forged\": told sold_out").await;
    }
}
