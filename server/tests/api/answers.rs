//! "Answers match orders": each 202 names its order as the database holds it,
//! and no key is refused once its order exists. Each check is seen failing on
//! a forged history or a forged database, and passing on the real answers.

use chrono::{Duration, Utc};
use flashtix_model::history::{Attempt, Outcome};
use flashtix_server::invariants::{Finding, Invariant, Verdict};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{spawn_app, Answer, TestApp};
use crate::history::{assert_history_fails, attempt, history_finding};

/// The attempt a storm would write for `answer` to a request for `what`.
fn told(event: i64, user: &str, what: &serde_json::Value, answer: &Answer) -> Attempt {
    let strings = |value: &serde_json::Value| serde_json::from_value(value.clone()).ok();
    Attempt {
        quantity: what["quantity"]
            .as_i64()
            .unwrap_or_else(|| what["seats"].as_array().map_or(1, |s| s.len() as i64)),
        status: Some(answer.status.as_u16()),
        seats: strings(&answer.body["seats"]),
        asked_seats: strings(&what["seats"]),
        asked_zone: what["zone"].as_str().map(str::to_owned),
        amount_cents: answer.body["amount_cents"].as_i64(),
        ..attempt(
            event,
            0,
            user,
            "k",
            Outcome::Accepted,
            answer.order_id().parse().ok(),
        )
    }
}

async fn judged(app: &TestApp, history: &[Attempt]) -> Finding {
    history_finding(app, history, Invariant::AnswersMatchOrders).await
}

async fn assert_fails(app: &TestApp, history: &[Attempt], says: &str) {
    assert_history_fails(app, history, Invariant::AnswersMatchOrders, says).await;
}

/// Seats named, a zone asked for: the real answers PASS; an answer with the
/// wrong amount, seats other than the order's or than those asked for, a
/// quantity other than asked, or an answer that came before its order was
/// made, each FAILs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_202_that_misstates_its_order_fails() {
    let app = spawn_app().await;
    let event = app.create_seated_event(json!("A:1x6@100"), 4).await;
    let mut history = Vec::new();
    for (user, what) in [
        ("ann", json!({"seats": ["A-1-2", "A-1-1"]})),
        ("bob", json!({"zone": "A", "quantity": 2})),
    ] {
        let sent_at = Utc::now();
        let answer = app.buy(event, user, "k", what.clone()).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
        history.push(Attempt {
            sent_at,
            finished_at: Utc::now(),
            ..told(event, user, &what, &answer)
        });
    }
    let real = judged(&app, &history).await;
    assert_eq!((real.verdict, real.checked), (Verdict::Pass, 2), "{real:?}");

    let forged = |change: &dyn Fn(&mut Attempt)| {
        let mut forged = history.clone();
        change(&mut forged[1]);
        forged
    };
    assert_fails(
        &app,
        &forged(&|bob| bob.amount_cents = Some(201)),
        "the answer said 201 cents, the order costs 200",
    )
    .await;
    assert_fails(
        &app,
        &forged(&|bob| bob.quantity = 3),
        "asked for 3 tickets, the order has 2",
    )
    .await;
    assert_fails(
        &app,
        &forged(&|bob| bob.asked_zone = Some("B".into())),
        "asked for zone B",
    )
    .await;
    assert_fails(
        &app,
        &forged(&|bob| {
            bob.asked_zone = None;
            bob.asked_seats = Some(vec!["A-1-5".into(), "A-1-6".into()]);
        }),
        "asked for seats A-1-5 A-1-6",
    )
    .await;
    assert_fails(
        &app,
        &forged(&|bob| {
            bob.sent_at -= Duration::seconds(5);
            bob.finished_at = bob.sent_at + Duration::milliseconds(10);
        }),
        "before the order was made",
    )
    .await;

    let bob = history[1].order_id.unwrap();
    sqlx::query("UPDATE orders SET seats = ARRAY['A-1-5', 'A-1-6'] WHERE id = $1")
        .bind(bob)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_fails(
        &app,
        &history,
        &format!("order {bob}: the answer named seats A-1-3 A-1-4, the order holds A-1-5 A-1-6"),
    )
    .await;
}

/// A key told `sold_out` after its order was made (a retry of an attempt
/// that timed out, say) was lied to; told before the order existed, it was
/// not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_once_the_keys_order_existed_fails() {
    let app = spawn_app().await;
    let event = app.create_event(5, 2).await;
    let sent_at = Utc::now();
    let answer = app.order(event, "cat", "k", 1).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let what = json!({"quantity": 1});
    let accepted = Attempt {
        sent_at,
        finished_at: Utc::now(),
        ..told(event, "cat", &what, &answer)
    };
    let refusal = |sent_at| Attempt {
        sent_at,
        finished_at: sent_at + Duration::milliseconds(5),
        status: Some(409),
        ..attempt(event, 1, "cat", "k", Outcome::SoldOut, None)
    };
    let before = refusal(sent_at - Duration::seconds(2));
    let real = judged(&app, &[before, accepted.clone()]).await;
    assert_eq!((real.verdict, real.checked), (Verdict::Pass, 2), "{real:?}");

    let after = refusal(accepted.finished_at + Duration::seconds(1));
    assert_fails(&app, &[accepted, after], "told sold_out at").await;
}

/// Inserts an order holding `seat`, made `made` ago and, if `back`, with its
/// seats back on sale that long ago.
async fn insert_seat_holder(
    app: &TestApp,
    event: i64,
    seat: &str,
    made: Duration,
    back: Option<Duration>,
) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO orders (id, event_id, user_id, idempotency_key, fingerprint, quantity,
                             amount_cents, expires_at, created_at, seats, status,
                             seats_back_at)
         VALUES ($1, $2, 'zed', $1::text, 'x', 1, 100, now() + interval '1 hour',
                 now() - $4, ARRAY[$3], CASE WHEN $5::interval IS NULL THEN 'PENDING'
                 ELSE 'EXPIRED' END, now() - $5)",
    )
    .bind(id)
    .bind(event)
    .bind(seat)
    .bind(made)
    .bind(back)
    .execute(&app.pool)
    .await
    .unwrap();
    id
}

/// A seat sold while another order held it FAILs, even when today's seat
/// table shows one owner; a seat sold after the earlier order's seats were
/// back on sale PASSes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_sold_while_another_order_held_it_fails() {
    let app = spawn_app().await;
    let event = app.create_seated_event(json!("A:1x6@100"), 4).await;
    let back_in_time = insert_seat_holder(
        &app,
        event,
        "A-1-1",
        Duration::minutes(10),
        Some(Duration::minutes(5)),
    )
    .await;
    let what = json!({"seats": ["A-1-1"]});
    let sent_at = Utc::now();
    let answer = app.buy(event, "ann", "k", what.clone()).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    let history = [Attempt {
        sent_at,
        finished_at: Utc::now(),
        ..told(event, "ann", &what, &answer)
    }];
    let real = judged(&app, &history).await;
    assert_eq!(real.verdict, Verdict::Pass, "{real:?} ({back_in_time})");

    let holder = insert_seat_holder(&app, event, "A-1-1", Duration::minutes(1), None).await;
    assert_fails(
        &app,
        &history,
        &format!("seat A-1-1 was also held by order {holder}"),
    )
    .await;
}

/// Every order a 202 named belongs to the buyer whose token asked: the real
/// answers PASS; the same answers over a database whose order was put under
/// another buyer (as a sale that took the buyer from anywhere but the token
/// would write it) FAIL, naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_under_another_buyer_than_asked_fails() {
    let app = spawn_app().await;
    let event = app.create_event(10, 4).await;
    let what = json!({"quantity": 2});
    let answer = app.buy(event, "ann", "k", what.clone()).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let history = vec![told(event, "ann", &what, &answer)];
    let owned = |finding: Finding| (finding.verdict, finding.checked);
    let finding = history_finding(&app, &history, Invariant::OrdersOwnedByAskers).await;
    assert_eq!(owned(finding), (Verdict::Pass, 1));

    sqlx::query("UPDATE orders SET user_id = 'mallory'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_history_fails(
        &app,
        &history,
        Invariant::OrdersOwnedByAskers,
        r#"asked for by "ann" (key "k") and belongs to "mallory""#,
    )
    .await;
}
